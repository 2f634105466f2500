// The msb bin end to end: every verb run as a child process, the way a user
// runs it, against real VMs in a fresh MSB_HOME. Sandboxes are reused across
// steps to keep the boots few.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";

import { startTinyRegistry } from "./fixtures/tiny-registry";
import { busyboxRoot, commandOf, eventually, isolatedHome, processesOf, repoRoot } from "./helpers";

const home = isolatedHome("cli");
const bin = (name: string) => path.join(repoRoot, "dist", "ts", "cli", `${name}.js`);
let root: string;

before(() => {
  root = busyboxRoot();
});

after(() => {
  fs.rmSync(home, { recursive: true, force: true });
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

const running = new Set<ChildProcess>();

/** Runs `program` (msb by default) with `args` to its end; `input` is its stdin. */
function run(args: string[], options: { input?: string; cwd?: string; program?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Result> {
  const program = options.program ?? bin("main");
  const child = spawn(program.endsWith(".js") ? process.execPath : program, program.endsWith(".js") ? [program, ...args] : args, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  running.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => (stdout += chunk));
  child.stderr.on("data", (chunk) => (stderr += chunk));
  child.stdin.end(options.input ?? "");
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => {
      running.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

const msb = (...args: string[]) => run(args);

/** msb with `args` on a pseudo-terminal (util-linux script), to its end: what a terminal shows. */
const onTerminal = (...args: string[]) =>
  run(["-qfec", ["exec", process.execPath, bin("main"), ...args].join(" "), "/dev/null"], { program: "script" });

function assertError(result: Result, code: string, status = 1): void {
  assert.equal(result.code, status, `exit status; stderr: ${result.stderr}`);
  const lines = result.stderr.split("\n").filter(Boolean);
  assert.equal(lines.length, 1, `one line: ${result.stderr}`);
  assert.match(lines[0], new RegExp(`^msb: .+ \\(${code}\\)$`));
}

after(() => {
  for (const child of running) child.kill("SIGKILL");
});

test("usage errors exit 2 with one line; --help and --tree describe every verb", async () => {
  assertError(await msb(), "USAGE", 2);
  assertError(await msb("nosuch"), "USAGE", 2);
  assertError(await msb("run"), "USAGE", 2);
  assertError(await msb("run", "--cpus", "two", root), "USAGE", 2);
  assertError(await msb("run", "--bogus", root), "USAGE", 2);
  assertError(await msb("exec"), "USAGE", 2);
  assertError(await msb("run", "-d", "--rm", root), "USAGE", 2);
  assertError(await run([], { program: bin("msr") }), "USAGE", 2);

  const help = await msb("run", "--help");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--detach/);
  const tree = await msb("--tree");
  assert.equal(tree.code, 0);
  for (const verb of ["run", "exec", "shell", "ls", "ps", "inspect", "logs", "metrics", "stop", "start", "rm", "pull", "image", "install", "uninstall", "init", "add", "remove", "mcp"]) {
    assert.match(tree.stdout, new RegExp(`^  ${verb}\\b`, "m"), `--tree lists ${verb}`);
  }
  assert.match(tree.stdout, /^ {6}--secret <name=value@domain>/m);
  assert.match(tree.stdout, /^msr NAME\[~SCRIPT\]/m);
});

test("run streams output, forwards stdin with -i and exits with the command's status; msx opens a shell and keeps nothing", async () => {
  const attached = await run(["run", "--name", "kept", "-i", "-e", "WHO=cli", root, "--", "sh", "-c", 'cat; echo "to $WHO" >&2; exit 3'], {
    input: "from stdin\n",
  });
  assert.equal(attached.stdout, "from stdin\n");
  assert.equal(attached.stderr, "to cli\n");
  assert.equal(attached.code, 3);
  // Kept, stopped, for its logs and `msb start`.
  const listed = JSON.parse((await msb("ls", "-a", "--format", "json")).stdout) as { name: string; status: string }[];
  assert.deepEqual(
    listed.map((s) => [s.name, s.status]),
    [["kept", "stopped"]],
  );
  assert.equal((await msb("rm", "kept")).code, 0);

  // No command, on a terminal: an interactive shell.
  const temporary = await onPty(bin("msx"), [root], async (pty) => {
    pty.type("echo $((2 + 3)) temporary; exit 4\n");
    await pty.waitFor(/\n5 temporary\r*\n/, "the shell's output");
    return pty.closed;
  });
  assert.equal(temporary, 4);
  assert.equal((await msb("ls", "-a", "--format", "json")).stdout, "[]\n");

  assertError(await msb("run", "--rm", "/nonexistent/root", "--", "true"), "IMAGE_NOT_FOUND");
  const debug = await msb("--debug", "run", "--rm", "/nonexistent/root", "--", "true");
  assert.equal(debug.code, 1);
  assert.match(debug.stderr, /^msb: .+ \(IMAGE_NOT_FOUND\)\n.*ImageNotFoundError/s);
});

/** The pseudo-terminal a process reads from. */
function ttyOf(pid: number): string {
  return fs.readlinkSync(`/proc/${pid}/fd/0`);
}

/** A CLI process on a real pseudo-terminal (util-linux script), and ways to drive it. */
interface OnPty {
  /** The CLI's process id (script's child). */
  pid: () => number;
  type: (text: string) => void;
  output: () => string;
  waitFor: (pattern: RegExp, what: string) => Promise<void>;
  /** Resolves to script's exit status: the CLI's. */
  closed: Promise<number | null>;
}

/** Runs `program args` on a pseudo-terminal, drives it with `body`, and always ends it. */
async function onPty<T>(program: string, args: string[], body: (pty: OnPty) => Promise<T>): Promise<T> {
  const child = spawn("script", ["-qfec", ["exec", process.execPath, program, ...args].join(" "), "/dev/null"], {
    env: process.env,
    stdio: ["pipe", "pipe", "pipe"],
  });
  running.add(child);
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  const closed = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const pty: OnPty = {
    pid: () => Number(fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, "utf8").trim().split(" ")[0]),
    type: (text) => child.stdin.write(text),
    output: () => output,
    waitFor: async (pattern, what) => {
      assert.ok(await eventually(() => pattern.test(output), 20000), `waiting for ${what}; output so far: ${JSON.stringify(output)}`);
    },
    closed,
  };
  try {
    // (busybox ash asks the terminal where its cursor is after the prompt)
    await pty.waitFor(/[#$] (\x1b\[6n)?$/, "the prompt");
    return await body(pty);
  } finally {
    child.kill("SIGKILL");
    await closed;
    running.delete(child);
  }
}

/** `msb shell NAME` on a pseudo-terminal: a command, a resize, Ctrl-C, then `exit 7`. */
function driveShell(name: string): Promise<{ output: string; code: number | null }> {
  return onPty(bin("main"), ["shell", name], async (pty) => {
    pty.type("echo $((6 * 7))\n");
    await pty.waitFor(/\n42\r*\n/, "a command's output");
    // A window size change on the CLI's terminal reaches the guest's.
    const tty = ttyOf(pty.pid());
    assert.match(tty, /^\/dev\/pts\/\d+$/);
    const resized = spawn("stty", ["-F", tty, "cols", "123", "rows", "45"], { stdio: "ignore" });
    await new Promise((resolve) => resized.on("close", resolve));
    // (Asked again until the resize, which is asynchronous, has landed.)
    for (let attempt = 0; attempt < 20 && !/45 123/.test(pty.output()); attempt++) {
      pty.type("stty size\n");
      await eventually(() => /45 123/.test(pty.output()), 500);
    }
    assert.match(pty.output(), /45 123/, "the guest's terminal size");
    // Ctrl-C goes to the guest's foreground process, not to the CLI.
    // (Again until it lands: a Ctrl-C typed before sleep started only clears the line.)
    pty.type("sleep 30\n");
    for (let attempt = 0; attempt < 10 && !/after 130/.test(pty.output()); attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      pty.type("\x03");
      await new Promise((resolve) => setTimeout(resolve, 200));
      pty.type("echo after $?\n");
      await eventually(() => /after \d+/.test(pty.output().split("sleep 30").pop()!), 2000);
    }
    await pty.waitFor(/after 130/, "the interrupted command's status");
    pty.type("exit 7\n");
    return { output: pty.output(), code: await pty.closed };
  });
}

test("a detached sandbox: exec, ls, ps, inspect, metrics, logs, shell on a pty, stop, start, rm", async () => {
  try {
    const started = await msb("run", "-d", "--name", "w1", "-e", "FOO=bar", root);
    assert.equal(started.code, 0, started.stderr);
    assert.equal(started.stdout, "w1\n");

    const exec = await msb("exec", "-w", "/tmp", "-e", "A=1", "w1", "--", "sh", "-c", 'echo "$FOO $A $(pwd)"; exit 5');
    assert.equal(exec.stdout, "bar 1 /tmp\n");
    assert.equal(exec.code, 5);
    const piped = await run(["exec", "-i", "w1", "tr", "a-z", "A-Z"], { input: "shout\n" });
    assert.equal(piped.stdout, "SHOUT\n");
    assert.equal((await msb("exec", "-u", "nobody", "w1", "--", "id", "-u")).stdout, "65534\n");
    assertError(await msb("exec", "-u", "nosuchuser", "w1", "--", "true"), "USER_NOT_FOUND");
    assertError(await msb("exec", "w1", "--", "/no/such/program"), "COMMAND_NOT_FOUND");

    const table = (await msb("ls")).stdout.split("\n");
    assert.match(table[0], /^NAME\s+STATUS\s+IMAGE/);
    assert.match(table[1], /^w1\s+running\s/);
    const json = JSON.parse((await msb("ls", "--format", "json")).stdout) as { name: string; status: string; detached: boolean }[];
    assert.deepEqual(json.map((s) => [s.name, s.status, s.detached]), [["w1", "running", true]]);

    const ps = await msb("ps", "w1");
    assert.equal(ps.code, 0, ps.stderr);
    assert.match(ps.stdout, /^PID\s+UID\s+COMMAND\n1\s+0\s+\S+/);

    const inspect = JSON.parse((await msb("inspect", "w1")).stdout) as { status: string; boot: { vmPid: number; accel: string } };
    assert.equal(inspect.status, "running");
    assert.equal(typeof inspect.boot.vmPid, "number");

    // Not a terminal: JSON lines.
    const metrics = (await msb("metrics", "w1")).stdout.trim().split("\n");
    assert.equal(metrics.length, 1);
    const sample = JSON.parse(metrics[0]) as { name: string; cpuPercent: number; uptimeMs: number };
    assert.equal(sample.name, "w1");
    assert.equal(typeof sample.cpuPercent, "number");
    assert.ok(sample.uptimeMs > 0);

    // On a terminal: a table.
    const onScreen = await onTerminal("metrics", "w1");
    assert.equal(onScreen.code, 0, onScreen.stdout);
    assert.match(onScreen.stdout, /^NAME\s+CPU\s+MEMORY\s+NET RX \/ TX\s+DISK R \/ W\s+UPTIME\r?\nw1\s+\d+\.\d%\s+\d+ \/ \d+ MiB/);

    const logs = await msb("logs", "w1");
    assert.match(logs.stdout, /^\[runtime\] booted in \d+ ms/m);

    const shell = await driveShell("w1");
    assert.equal(shell.code, 7, shell.output);

    // A follower ends by itself once the sandbox has, with the end in its output.
    const follower = msb("logs", "-f", "w1");
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal((await msb("stop", "w1")).stdout, "w1\n");
    const followed = await follower;
    assert.equal(followed.code, 0, followed.stderr);
    assert.match(followed.stdout, /\[runtime\] stop requested\n(.*\n)*\[runtime\] ended: /);
    assert.equal((await msb("ls")).stdout.split("\n").length, 2, "only the header: w1 is not running");
    assert.match((await msb("ls", "-a")).stdout, /^w1\s+stopped/m);
    assertError(await msb("exec", "w1", "true"), "SANDBOX_NOT_RUNNING");
    assert.match((await msb("logs", "w1")).stdout, /\[runtime\] stop requested/);

    assert.equal((await msb("start", "w1")).code, 0);
    assert.equal((await msb("exec", "w1", "echo", "again")).stdout, "again\n");

    assertError(await msb("rm", "w1"), "SANDBOX_RUNNING");
    assert.equal((await msb("rm", "-f", "w1")).code, 0);
    assertError(await msb("inspect", "w1"), "SANDBOX_NOT_FOUND");
    assert.ok(await eventually(() => processesOf(home).length === 0, 3000), processesOf(home).map(commandOf).join("; "));
  } finally {
    await msb("rm", "-f", "w1");
  }
});

test("install writes a launcher that opens the image in its own named sandbox; uninstall removes it", async () => {
  try {
    const installed = await msb("install", "--name", "bb", root);
    assert.equal(installed.code, 0, installed.stderr);
    const launcher = path.join(home, "bin", "bb");
    assert.match(installed.stdout, new RegExp(`export PATH="${path.join(home, "bin")}:\\$PATH"`));
    assert.equal(fs.statSync(launcher).mode & 0o111, 0o111);
    assertError(await msb("install", "--name", "bb", root), "ALREADY_INSTALLED");
    assert.equal((await run([root, "bbt"], { program: bin("msi") })).code, 0);
    assert.match(fs.readFileSync(path.join(home, "bin", "bbt"), "utf8"), / 'run' '--name' 'bbt' '--reuse' '--persistent' /);

    const list = (await msb("install", "--list")).stdout;
    assert.match(list, /^bb\s+\S+\s+sandbox bb$/m);
    assert.match(list, /^bbt\s/m);

    const ran = await run(["sh", "-c", 'echo "in $(hostname)" > /root/seen; cat /root/seen; exit 6'], { program: launcher });
    assert.equal(ran.stdout, "in bb\n", ran.stderr);
    assert.equal(ran.code, 6);
    // The command's sandbox stays, stopped, and the next run boots it again with its root's changes.
    assert.match((await msb("ls", "-a")).stdout, /^bb\s+stopped/m);
    const again = await run(["cat", "/root/seen"], { program: launcher });
    assert.equal(again.stdout, "in bb\n", again.stderr);

    assert.equal((await msb("uninstall", "bb")).code, 0);
    assert.equal((await msb("uninstall", "bbt")).code, 0);
    assert.equal(fs.existsSync(launcher), false);
    assertError(await msb("uninstall", "bb"), "NOT_INSTALLED");
  } finally {
    await msb("rm", "-f", "bb");
  }
});

test("Sandboxfile: init, add, run --sandbox NAME~SCRIPT (changes kept in ./menv), msr NAME, remove; bad files name their line", async () => {
  const project = fs.mkdtempSync(path.join(os.tmpdir(), "msb-project-"));
  try {
    const inProject = (...args: string[]) => run(args, { cwd: project });
    assert.equal((await inProject("init")).code, 0);
    assertError(await inProject("init"), "SANDBOXFILE_EXISTS");
    const added = await inProject("add", "app", "--image", root, "--memory", "256", "-e", "GREETING=hello", "--start", 'echo "started $*"', "--script", 'hello=echo "$GREETING from $(hostname)"');
    assert.equal(added.code, 0, added.stderr);
    const text = fs.readFileSync(path.join(project, "Sandboxfile"), "utf8");
    assert.match(text, /^# microsandbox project file/);
    assert.match(text, /^sandboxes:\n {2}app:\n {4}image: /m);
    assert.match(text, /^ {4}memory: 256$/m);

    const hello = await inProject("run", "--sandbox", "app~hello");
    assert.equal(hello.stdout, "hello from app\n", hello.stderr);
    assert.equal(hello.code, 0);
    // File changes persist under ./menv/NAME from run to run.
    assert.equal((await inProject("run", "--sandbox", "app~hello", "--", "x")).code, 0);
    const wrote = await inProject("add", "keep", "--image", root, "--start", "echo kept >> /root/runs; wc -l < /root/runs");
    assert.equal(wrote.code, 0, wrote.stderr);
    assert.equal((await inProject("run", "--sandbox", "keep")).stdout.trim(), "1");
    assert.equal((await inProject("run", "--sandbox", "keep")).stdout.trim(), "2");
    assert.ok(fs.statSync(path.join(project, "menv", "keep", "root.ext4")).isFile());
    const nested = path.join(project, "src");
    fs.mkdirSync(nested);
    const start = await run(["app", "one", "two"], { program: bin("msr"), cwd: nested });
    assert.equal(start.stdout, "started one two\n", start.stderr);
    // A project run keeps nothing.
    assert.equal((await msb("ls", "-a", "--format", "json")).stdout, "[]\n");
    assertError(await inProject("run", "--sandbox", "app~nosuch"), "SCRIPT_NOT_FOUND");

    assert.equal((await inProject("remove", "app")).code, 0);
    assertError(await inProject("run", "--sandbox", "app"), "SANDBOX_NOT_IN_PROJECT");

    fs.writeFileSync(path.join(project, "Sandboxfile"), "sandboxes:\n  app:\n    image: x\n    cpu: 2\n");
    const unknown = await inProject("run", "--sandbox", "app");
    assertError(unknown, "SANDBOXFILE_INVALID");
    assert.match(unknown.stderr, /Sandboxfile:4: sandboxes\.app: unknown key "cpu"/);
    fs.writeFileSync(path.join(project, "Sandboxfile"), "sandboxes:\n  app:\n    image: x\n    memory: lots\n");
    assert.match((await inProject("run", "--sandbox", "app")).stderr, /Sandboxfile:4: sandboxes\.app\.memory must be a whole number/);
  } finally {
    fs.rmSync(project, { recursive: true, force: true });
  }
});

test("volumes: create, ls, inspect, rm; run mounts a named volume, a host directory (read-only) and a tmpfs", async () => {
  const hostDir = fs.mkdtempSync(path.join(os.tmpdir(), "msb-cli-bind-"));
  try {
    fs.writeFileSync(path.join(hostDir, "in.txt"), "from the host\n");
    assert.equal((await msb("volume", "create", "notes")).stdout, "notes\n");
    assert.equal((await msb("volume", "create", "--quota", "16", "capped")).code, 0);
    assertError(await msb("volume", "create", "notes"), "VOLUME_EXISTS");
    assertError(await msb("volume", "create", "--quota", "x", "bad"), "USAGE", 2);
    const wrote = await msb("run", "--rm", "--volume", "notes:/notes", "-v", `${hostDir}:/host:ro`, "--tmpfs", "/t:8", root, "--",
      "sh", "-c", "cat /host/in.txt > /notes/copy && touch /host/x 2>/dev/null || echo read-only; df -k /t | tail -n 1");
    assert.equal(wrote.code, 0, wrote.stderr);
    assert.match(wrote.stdout, /^read-only\n\S+\s+8192\s/);
    const read = await msb("run", "--rm", "--volume", "notes:/n:ro", root, "--", "cat", "/n/copy");
    assert.equal(read.stdout, "from the host\n", read.stderr);
    const listed = JSON.parse((await msb("volume", "ls", "--format", "json")).stdout) as { name: string; kind: string }[];
    assert.deepEqual(listed.map((v) => `${v.name}:${v.kind}`), ["capped:disk", "notes:dir"]);
    assert.match((await msb("volume", "ls")).stdout, /^capped\s+disk\s+16\.0 MiB/m);
    const inspected = JSON.parse((await msb("volume", "inspect", "notes")).stdout) as { usage: { usedBytes: number } };
    assert.ok(inspected.usage.usedBytes > 0);
    assertError(await msb("run", "--rm", "--volume", "nope:/n", root, "--", "true"), "VOLUME_NOT_FOUND");
    assertError(await msb("run", "--rm", "-v", "relative:/x", root, "--", "true"), "INVALID_OPTION");
    assert.equal((await msb("volume", "rm", "notes", "capped")).code, 0);
    assertError(await msb("volume", "inspect", "notes"), "VOLUME_NOT_FOUND");
  } finally {
    fs.rmSync(hostDir, { recursive: true, force: true });
  }
});

test("pull shows each layer's progress; image ls, inspect, rm and prune; an unreachable registry is one line", async () => {
  const registry = await startTinyRegistry();
  try {
    const reference = registry.reference("1");
    const layer = registry.layerDigest.slice("sha256:".length, "sha256:".length + 12);
    // Not a terminal: plain lines on stderr, the result on stdout.
    const pulled = await msb("pull", "--insecure", registry.host, reference);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.match(pulled.stdout, new RegExp(`^${reference} sha256:[0-9a-f]{64}\\n$`));
    assert.match(pulled.stderr, /^resolved sha256:[0-9a-f]{64}: 1 layer, \d+ B\n/);
    assert.match(pulled.stderr, new RegExp(`^layer ${layer}: done \\(\\d+ B\\)$`, "m"));
    const again = await msb("pull", "--insecure", registry.host, registry.reference("2"));
    assert.match(again.stderr, new RegExp(`^layer ${layer}: cached$`, "m"));
    // On a terminal: a bar per layer.
    const bars = await onTerminal("pull", "--insecure", registry.host, registry.reference("2"));
    assert.equal(bars.code, 0, bars.stdout);
    assert.match(bars.stdout, new RegExp(` ${layer} \\[\\S+\\] 100% cached/\\d+ B`));

    const images = JSON.parse((await msb("image", "ls", "--format", "json")).stdout) as { reference: string }[];
    assert.deepEqual(images.map((i) => i.reference).sort(), [reference, registry.reference("2")]);
    assert.match((await msb("image", "ls")).stdout, new RegExp(`^REFERENCE\\s+DIGEST[^\\n]*\\n${reference.replace(/\./g, "\\.")}\\s`));
    const info = JSON.parse((await msb("image", "inspect", reference)).stdout) as { layers: string[]; config: { cmd: string[] } };
    assert.deepEqual([info.layers, info.config.cmd], [[registry.layerDigest], ["/bin/sh"]]);

    assert.equal((await msb("image", "rm", reference, registry.reference("2"))).code, 0);
    assert.equal((await msb("image", "ls", "--format", "json")).stdout, "[]\n");
    assertError(await msb("image", "inspect", reference), "IMAGE_NOT_FOUND");
    assert.match((await msb("image", "prune")).stdout, /^deleted [1-9]\d* root filesystems and 1 layers\n$/);
  } finally {
    await registry.close();
  }
  // Port 9 (discard) on loopback: nothing listens there.
  assertError(await msb("pull", "--insecure", "127.0.0.1:9", "127.0.0.1:9/nothing:1"), "REGISTRY_UNREACHABLE");
});

test("the CLI left no runtime or VM running", async () => {
  assert.ok(await eventually(() => processesOf(home).length === 0, 3000), processesOf(home).map(commandOf).join("; "));
});
