// End to end: every test here boots real microVMs (QEMU) with the project's
// kernel and agent, and checks behaviour from inside the guest.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as v8 from "node:v8";
import * as vm from "node:vm";
import { after, before, describe, test } from "node:test";

import {
  BootFailedError,
  CommandNotFoundError,
  ExecFailedError,
  ImageNotFoundError,
  InvalidOptionError,
  MicrosandboxError,
  MissingAssetError,
  Sandbox,
  SandboxExistsError,
  SandboxNotRunningError,
} from "../ts/index";
import {
  busyboxRoot,
  commandOf,
  eventually,
  isolatedHome,
  leftovers,
  processesOf,
  pythonRoot,
} from "./helpers";

const home = isolatedHome("sandbox");
let root: string;

before(() => {
  root = busyboxRoot();
});

after(() => {
  fs.rmSync(home, { recursive: true, force: true });
});

describe("a sandbox runs commands in its own VM", () => {
  let sb: Sandbox;

  before(async () => {
    sb = await Sandbox.create({ name: "basics", image: root, env: { GREETING: "hi there" } });
  });

  after(async () => {
    await sb.stopAndWait();
  });

  test("stdout, stderr and exit codes come back separately", async () => {
    const out = await sb.shell("echo to-out; echo to-err >&2; exit 0");
    assert.equal(out.stdout(), "to-out\n");
    assert.equal(out.stderr(), "to-err\n");
    assert.equal(out.code, 0);
    assert.equal(out.success, true);

    const r = await sb.exec("sh", ["-c", "exit 3"]);
    assert.equal(r.code, 3);
    assert.equal(r.success, false);
    assert.equal(r.signal, null);
  });

  test("a signal that ends the process is reported as the signal", async () => {
    const r = await sb.shell("kill -KILL $$");
    assert.equal(r.code, null);
    assert.equal(r.signal, 9);
    assert.equal(r.success, false);
  });

  test("binary output arrives byte for byte", async () => {
    const r = await sb.shell("printf '\\000\\001\\377\\n\\200'");
    assert.deepEqual([...r.stdoutBytes()], [0, 1, 255, 10, 128]);
  });

  test("sandbox env and per-exec env and cwd reach the process", async () => {
    const out = await sb.shell('echo "$GREETING|$EXTRA|$(pwd)|$PATH"', {
      env: { EXTRA: "x=y" },
      cwd: "/tmp",
    });
    assert.equal(
      out.stdout(),
      "hi there|x=y|/tmp|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/.msb/scripts\n",
    );
  });

  test("the guest runs its own kernel, not the host's", async () => {
    const out = await sb.exec("uname", ["-r"]);
    const release = out.stdout().trim();
    assert.match(release, /-microsandbox$/);
    assert.notEqual(release, os.release());
  });

  test("PID 1 is the agent and the guest has its own hostname and process table", async () => {
    const cmdline = await sb.exec("cat", ["/proc/1/cmdline"]);
    assert.equal(cmdline.stdout(), "/init\0");
    const hostname = await sb.exec("hostname");
    assert.equal(hostname.stdout().trim(), "basics");
    assert.notEqual(hostname.stdout().trim(), os.hostname());
    // None of the host's processes (this Node process, QEMU) exist in the guest.
    const cmdlines = await sb.shell("cat /proc/[0-9]*/cmdline | tr '\\0' ' '");
    assert.doesNotMatch(cmdlines.stdout(), /node|qemu|msb-runtime/);
    const pids = await sb.shell("ls /proc | grep -c '^[0-9]'");
    assert.ok(Number(pids.stdout()) < 100, `guest sees ${pids.stdout().trim()} processes`);
  });

  test("a missing command is a typed error for exec and exit 127 for a shell", async () => {
    await assert.rejects(sb.exec("no-such-command"), (err: unknown) => {
      assert.ok(err instanceof CommandNotFoundError);
      assert.equal(err.code, "COMMAND_NOT_FOUND");
      assert.match(err.message, /no-such-command/);
      return true;
    });
    const r = await sb.shell("no-such-command");
    assert.equal(r.code, 127);
  });

  test("a NUL byte in a command or argument is refused on the host", async () => {
    for (const [command, args, field] of [
      ["ec\0ho", [], "command"],
      ["echo", ["a\0b"], "args"],
    ] as const) {
      await assert.rejects(sb.exec(command, [...args]), (err: unknown) => {
        assert.ok(err instanceof InvalidOptionError, String(err));
        assert.equal(err.field, field);
        return true;
      });
    }
    assert.equal((await sb.exec("echo", ["still", "serving"])).stdout(), "still serving\n");
  });

  test("a missing working directory is a typed exec failure", async () => {
    await assert.rejects(sb.exec("true", [], { cwd: "/does/not/exist" }), ExecFailedError);
  });

  test("writes land in the sandbox, never in the image directory", async () => {
    await sb.shell("echo data > /etc/written-by-guest && mkdir -p /opt/new");
    const back = await sb.exec("cat", ["/etc/written-by-guest"]);
    assert.equal(back.stdout(), "data\n");
    assert.equal(fs.existsSync(path.join(root, "etc", "written-by-guest")), false);
    assert.equal(fs.existsSync(path.join(root, "opt")), false);
  });
});

describe("a Debian root with python3", () => {
  test("python runs inside the VM and sees the guest kernel and env", async () => {
    const sb = await Sandbox.create({ image: pythonRoot(), env: { GREETING: "hi" } });
    try {
      const out = await sb.shell(
        "echo $GREETING from $(uname -r); python3 -c 'import os, platform; print(6*7, platform.release(), os.environ[\"GREETING\"])'",
      );
      assert.equal(out.stderr(), "");
      const [shellLine, pythonLine] = out.stdout().trim().split("\n");
      assert.match(shellLine, /^hi from .*-microsandbox$/);
      assert.match(pythonLine, /^42 .*-microsandbox hi$/);
      // Debian's own userland, not the host's files: the guest reads its os-release.
      const osRelease = await sb.exec("python3", ["-c", "print(open('/etc/os-release').read())"]);
      assert.match(osRelease.stdout(), /bookworm/);
    } finally {
      await sb.stopAndWait();
    }
  });
});

describe("a rootfs without the requested program", () => {
  test("shell() on a root with no /bin/sh fails fast with a typed error", async () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), "msb-empty-root-"));
    const sb = await Sandbox.create({ image: empty });
    try {
      const started = Date.now();
      await assert.rejects(sb.shell("echo hi"), CommandNotFoundError);
      await assert.rejects(sb.exec("/bin/true"), CommandNotFoundError);
      assert.ok(Date.now() - started < 5000);
    } finally {
      await sb.stopAndWait();
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe("bad options are rejected before any process starts", () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ["cpus: 0", { cpus: 0 }, "cpus"],
    ["cpus: 1.5", { cpus: 1.5 }, "cpus"],
    ["memoryMib: -1", { memoryMib: -1 }, "memoryMib"],
    ["memoryMib as a string", { memoryMib: "512" }, "memoryMib"],
    ["an unknown option", { memoryMB: 512 }, "memoryMB"],
    ["a bad name", { name: "no spaces" }, "name"],
    ["a relative workdir", { workdir: "tmp" }, "workdir"],
    ["env with a non-string value", { env: { A: 1 } }, "env"],
    ["an unknown network policy", { network: { policy: "open" } }, "network.policy"],
    ["a blocked name that is no DNS name", { network: { blockDomainSuffixes: ["bad name!"] } }, "network.blockDomainSuffixes[0]"],
    ["a rule CIDR out of range", { network: { rules: [{ action: "deny", cidr: "10.0.0.0/33" }] } }, "network.rules[0].cidr"],
    ["a published host port out of range", { ports: { 70000: 80 } }, "ports"],
    ["a patch without a kind", { patches: [{ path: "/etc/x", content: "y" }] }, "patches"],
    // The guest can read every file of a directory image: the host's root and
    // a directory holding the state home are refused.
    ["the host's root as the image", { image: "/" }, "image"],
    ["a directory holding the state home as the image", { image: path.dirname(home) }, "image"],
  ];
  for (const [label, extra, field] of cases) {
    test(label, async () => {
      await assert.rejects(Sandbox.create({ image: root, ...extra } as never), (err: unknown) => {
        assert.ok(err instanceof InvalidOptionError, String(err));
        assert.ok(err instanceof MicrosandboxError);
        assert.equal(err.code, "INVALID_OPTION");
        assert.equal(err.field, field);
        assert.ok(err.message.startsWith(`${field}:`), err.message);
        return true;
      });
      assert.deepEqual(processesOf(home), []);
    });
  }

  test("a missing image directory", async () => {
    await assert.rejects(Sandbox.create({ image: "/no/such/rootfs" }), (err: unknown) => {
      assert.ok(err instanceof ImageNotFoundError, String(err));
      assert.equal(err.code, "IMAGE_NOT_FOUND");
      assert.match(err.message, /^image: \/no\/such\/rootfs/);
      return true;
    });
    assert.deepEqual(processesOf(home), []);
  });

  test("a host without QEMU gets a MissingAssetError naming the program and its package", async () => {
    const missing = "/nonexistent/qemu-system-x86_64";
    const saved = process.env.MSB_QEMU;
    process.env.MSB_QEMU = missing;
    try {
      await assert.rejects(Sandbox.create({ image: root }), (err: unknown) => {
        assert.ok(err instanceof MissingAssetError, String(err));
        assert.equal(err.code, "MISSING_ASSET");
        assert.ok(err.message.includes(missing), err.message);
        assert.match(err.message, /apt-get install qemu-system-x86/);
        return true;
      });
    } finally {
      if (saved === undefined) delete process.env.MSB_QEMU;
      else process.env.MSB_QEMU = saved;
    }
    assert.ok(await eventually(() => processesOf(home).length === 0, 5000), "a runtime outlived the failed create");
  });

  test("a missing guest kernel names the command that builds it", async () => {
    const saved = process.env.MSB_KERNEL;
    process.env.MSB_KERNEL = "/nonexistent/vmlinux";
    try {
      await assert.rejects(Sandbox.create({ image: root }), (err: unknown) => {
        assert.ok(err instanceof MissingAssetError, String(err));
        assert.match(err.message, /guest kernel not found at \/nonexistent\/vmlinux/);
        assert.match(err.message, /scripts\/build\.sh/);
        assert.match(err.message, /MSB_KERNEL/);
        return true;
      });
    } finally {
      if (saved === undefined) delete process.env.MSB_KERNEL;
      else process.env.MSB_KERNEL = saved;
    }
  });

  test("a missing image option", async () => {
    await assert.rejects(Sandbox.create({} as never), (err: unknown) => {
      assert.ok(err instanceof InvalidOptionError);
      assert.equal(err.field, "image");
      return true;
    });
  });
});

describe("lifecycle", () => {
  test("stopAndWait leaves no process, socket or temp file; later calls are not running", async () => {
    const sb = await Sandbox.create({ name: "lifecycle", image: root });
    assert.notDeepEqual(processesOf(home), []);
    await sb.stopAndWait();
    assert.equal(sb.running, false);
    assert.deepEqual(processesOf(home).map(commandOf), []);
    assert.deepEqual(leftovers(home), []);
    // A named sandbox keeps its logs; the console log shows the guest shut down.
    const console = fs.readFileSync(path.join(home, "sandboxes", "lifecycle", "console.log"), "utf8");
    assert.match(console, /host asked for shutdown/);
    await assert.rejects(sb.shell("true"), (err: unknown) => {
      assert.ok(err instanceof SandboxNotRunningError);
      assert.match(err.message, /stopped/);
      return true;
    });
    // Stopping again is harmless.
    await sb.stopAndWait();
  });

  test("an unnamed sandbox leaves no directory behind", async () => {
    const sb = await Sandbox.create({ image: root });
    const dir = path.join(home, "sandboxes", sb.name);
    assert.ok(fs.existsSync(dir));
    await sb.stopAndWait();
    assert.equal(fs.existsSync(dir), false);
  });

  test("stopped without waiting, or ended by itself, an unnamed sandbox leaves no directory or record", async () => {
    // Nobody waits for either: the creating engine's own watch of the runtime cleans up.
    const stopped = await Sandbox.create({ image: root });
    const died = await Sandbox.create({ image: root });
    const dirs = [stopped, died].map((sb) => path.join(home, "sandboxes", sb.name));
    assert.ok(dirs.every((dir) => fs.existsSync(dir)));
    await stopped.stop();
    process.kill(died.bootInfo.vmPid, "SIGKILL");
    assert.ok(
      await eventually(() => dirs.every((dir) => !fs.existsSync(dir)), 15_000),
      `left: ${dirs.filter((dir) => fs.existsSync(dir)).join(", ")}`,
    );
    const listed = (await Sandbox.list()).map((s) => s.name);
    assert.deepEqual(
      listed.filter((name) => name === stopped.name || name === died.name),
      [],
    );
    assert.deepEqual(processesOf(home).map(commandOf), []);
    // Waiting afterwards still answers how each ended.
    assert.equal((await stopped.stopAndWait()).success, true);
    assert.equal(died.running, false);
  });

  test("kill stops the VM at once", async () => {
    const sb = await Sandbox.create({ image: root });
    const vmPid = sb.bootInfo.vmPid;
    assert.ok(fs.existsSync(`/proc/${vmPid}`));
    await sb.kill();
    assert.deepEqual(processesOf(home), []);
    await assert.rejects(sb.exec("true"), SandboxNotRunningError);
  });

  test("a sandbox whose every reference was dropped runs on until stopped", async () => {
    // A full collection while nothing but a WeakRef points at the handle: the
    // sandbox must survive it (the collector's timing must not decide when a
    // VM dies), and the handle must still be there to stop it.
    const started = async () => {
      const sb = await Sandbox.create({ image: root });
      return { ref: new WeakRef(sb), vmPid: sb.bootInfo.vmPid };
    };
    const { ref, vmPid } = await started();
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc") as () => void;
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const sb = ref.deref();
    assert.ok(sb, "the handle was collected");
    assert.ok(processesOf(home).includes(vmPid), "the VM process is gone");
    assert.equal((await sb.shell("echo still here")).stdout(), "still here\n");
    await sb.stopAndWait();
    assert.deepEqual(processesOf(home), []);
  });

  test("a running sandbox's name cannot be taken twice, and is free again after stop", async () => {
    const first = await Sandbox.create({ name: "unique", image: root });
    try {
      await assert.rejects(Sandbox.create({ name: "unique", image: root }), (err: unknown) => {
        assert.ok(err instanceof SandboxExistsError);
        return true;
      });
      assert.equal((await first.shell("echo still fine")).stdout(), "still fine\n");
    } finally {
      await first.stopAndWait();
    }
    const second = await Sandbox.create({ name: "unique", image: root });
    await second.stopAndWait();
  });

  test("await using stops the sandbox at the end of the scope", async () => {
    let name: string;
    {
      await using sb = await Sandbox.create({ image: root });
      name = sb.name;
      assert.equal((await sb.exec("echo", ["scoped"])).stdout(), "scoped\n");
    }
    assert.deepEqual(processesOf(home), []);
    assert.equal(fs.existsSync(path.join(home, "sandboxes", name)), false);
  });

  test("a guest that cannot boot is a BootFailedError carrying the console", async () => {
    // An /init that the kernel cannot execute: the guest panics and the VM exits.
    const fakeAgent = path.join(home, "not-an-agent");
    fs.writeFileSync(fakeAgent, "#!/nonexistent/interpreter\n", { mode: 0o755 });
    process.env.MSB_AGENT = fakeAgent;
    try {
      await assert.rejects(Sandbox.create({ name: "doomed", image: root }), (err: unknown) => {
        assert.ok(err instanceof BootFailedError, String(err));
        assert.equal(err.code, "BOOT_FAILED");
        assert.match(err.consoleTail, /Kernel panic|No working init/);
        assert.match(err.message, /doomed/);
        return true;
      });
    } finally {
      delete process.env.MSB_AGENT;
    }
    assert.deepEqual(processesOf(home), []);
  });
});

describe("isolation between sandboxes", () => {
  test("two sandboxes of one image see neither each other's files nor processes", async () => {
    const [a, b] = await Promise.all([
      Sandbox.create({ name: "iso-a", image: root }),
      Sandbox.create({ name: "iso-b", image: root }),
    ]);
    try {
      await a.shell("echo secret-a > /root/mine; sleep 600 >/dev/null 2>&1 &");
      await b.shell("echo secret-b > /root/mine");
      assert.equal((await a.exec("cat", ["/root/mine"])).stdout(), "secret-a\n");
      assert.equal((await b.exec("cat", ["/root/mine"])).stdout(), "secret-b\n");
      const psA = await a.shell("ps -o args");
      const psB = await b.shell("ps -o args");
      assert.match(psA.stdout(), /sleep 600/);
      assert.doesNotMatch(psB.stdout(), /sleep 600/);
      assert.equal(fs.existsSync(path.join(root, "root", "mine")), false);
    } finally {
      await Promise.all([a.stopAndWait(), b.stopAndWait()]);
    }
  });
});
