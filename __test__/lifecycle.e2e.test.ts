// Sandboxes by name across processes: detached sandboxes outlive their
// creator, any process of the same user reaches them with get, list shows
// where each stands (crashed when its runtime died), remove forgets them, and
// the runtime ends idle or too-old sandboxes itself. Real VMs throughout.
import assert from "node:assert/strict";
import { execFile, execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";

import {
  InternalError,
  InvalidOptionError,
  Sandbox,
  SandboxExistsError,
  SandboxNotFoundError,
  SandboxNotRunningError,
  SandboxRunningError,
  type LogLine,
  type SandboxInfo,
} from "../ts/index";
import { alive, busyboxRoot, commandOf, eventually, isolatedHome, processesOf } from "./helpers";

const home = isolatedHome("lifecycle");
const client = path.join(__dirname, "fixtures", "lifecycle-client.js");
let root: string;

before(() => {
  root = busyboxRoot();
});

after(() => {
  fs.rmSync(home, { recursive: true, force: true });
});

/** Runs the client fixture in a process of its own and returns its stdout. */
async function inOtherProcess(...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [client, ...args], { env: process.env });
  return stdout;
}

async function statusOf(name: string): Promise<SandboxInfo | undefined> {
  return (await Sandbox.list()).find((s) => s.name === name);
}

test("a detached sandbox outlives its creator's SIGKILL; other processes get, list and stop it", async () => {
  const creator = spawn(process.execPath, [client, "create", root, "worker"], {
    stdio: ["ignore", "pipe", "inherit"],
    env: process.env,
  });
  try {
    const vmPid = await new Promise<number>((resolve, reject) => {
      let out = "";
      creator.stdout.on("data", (chunk) => {
        out += chunk;
        const match = /ready (\d+)\n/.exec(out);
        if (match) resolve(Number(match[1]));
      });
      creator.on("exit", (code) => reject(new Error(`creator exited early with ${code}`)));
    });
    creator.kill("SIGKILL");
    await new Promise((resolve) => creator.once("exit", resolve));
    // Past the 2 s in which an attached sandbox would be gone.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.ok(alive(vmPid), "the VM died with its creator");

    // A second process reaches it by name and runs a command in it.
    assert.equal(await inOtherProcess("exec", "worker", "echo hello from $(hostname)"), "hello from worker\n");
    // A third lists it.
    const listed = JSON.parse(await inOtherProcess("list")) as SandboxInfo[];
    const worker = listed.find((s) => s.name === "worker");
    assert.equal(worker?.status, "running");
    assert.equal(worker?.detached, true);
    assert.equal(worker?.image, root);
    assert.equal(typeof worker?.pid, "number");

    // This process stops it; the record keeps why until it is removed.
    const sb = await Sandbox.get("worker");
    assert.equal(sb.bootInfo.vmPid, vmPid);
    await sb.stopAndWait();
    assert.equal(alive(vmPid), false);
    const stopped = await statusOf("worker");
    assert.equal(stopped?.status, "stopped");
    assert.match(stopped?.reason ?? "", /it was stopped/);
    assert.ok(stopped?.stoppedAt instanceof Date);
    await assert.rejects(Sandbox.get("worker"), (err: unknown) => {
      assert.ok(err instanceof SandboxNotRunningError);
      assert.match(err.message, /stopped/);
      return true;
    });
    await Sandbox.remove("worker");
    assert.equal(await statusOf("worker"), undefined);
    assert.equal(fs.existsSync(path.join(home, "sandboxes", "worker")), false);
    assert.deepEqual(processesOf(home).map(commandOf), []);
  } finally {
    creator.kill("SIGKILL");
  }
});

test("a runtime killed outright shows as crashed within 2 s, and get says so", async () => {
  const sb = await Sandbox.create({ image: root, name: "doomed", detached: true });
  const pid = (await statusOf("doomed"))?.pid;
  assert.equal(typeof pid, "number");
  process.kill(pid!, "SIGKILL");
  const crashed = await eventually(() => {
    const out = execFileSync(process.execPath, [client, "list"], { env: process.env, encoding: "utf8" });
    return (JSON.parse(out) as SandboxInfo[]).find((s) => s.name === "doomed")?.status === "crashed";
  }, 2000);
  assert.ok(crashed, `status after 2 s: ${JSON.stringify(await statusOf("doomed"))}`);
  await assert.rejects(Sandbox.get("doomed"), (err: unknown) => {
    assert.ok(err instanceof SandboxNotRunningError);
    assert.match(err.message, /crashed/);
    return true;
  });
  // The VM went with its runtime (its parent-death signal).
  assert.ok(await eventually(() => processesOf(home).length === 0, 2000), processesOf(home).map(commandOf).join("; "));
  assert.equal(sb.running, false);
  await Sandbox.remove("doomed");
});

test("several handles serve one sandbox at once, each seeing only its own output", async () => {
  const owner = await Sandbox.create({ image: root, name: "shared" });
  try {
    const [first, second] = await Promise.all([Sandbox.get("shared"), Sandbox.get("shared")]);
    const runs = await Promise.all([
      first.shell("for i in 1 2 3 4 5; do echo first-$i; sleep 0.1; done"),
      second.shell("for i in 1 2 3 4 5; do echo second-$i; sleep 0.1; done"),
      owner.shell("for i in 1 2 3 4 5; do echo owner-$i; sleep 0.1; done"),
    ]);
    for (const [run, label] of [
      [runs[0], "first"],
      [runs[1], "second"],
      [runs[2], "owner"],
    ] as const) {
      assert.equal(run.stdout(), [1, 2, 3, 4, 5].map((i) => `${label}-${i}\n`).join(""));
    }
    // Files are one filesystem whichever handle writes.
    await first.fs().write("/tmp/from-first", "shared state");
    assert.equal(await second.fs().readString("/tmp/from-first"), "shared state");
    // Stopping through any handle stops it for all.
    await second.stopAndWait();
    assert.equal(owner.running, false);
    await assert.rejects(first.shell("true"), SandboxNotRunningError);
  } finally {
    await owner.stopAndWait();
  }
  // A sandbox that is not detached leaves no record once stopped.
  assert.equal(await statusOf("shared"), undefined);
});

test("remove refuses a running sandbox unless forced; unknown names are SandboxNotFoundError", async () => {
  const sb = await Sandbox.create({ image: root, name: "busy", detached: true });
  await assert.rejects(Sandbox.remove("busy"), SandboxRunningError);
  assert.equal(sb.running, true);
  await Sandbox.remove("busy", { force: true });
  assert.equal(sb.running, false);
  await assert.rejects(Sandbox.get("busy"), SandboxNotFoundError);
  await assert.rejects(Sandbox.remove("busy"), SandboxNotFoundError);
  await assert.rejects(Sandbox.get("../etc"), InvalidOptionError);
  assert.deepEqual(processesOf(home).map(commandOf), []);
});

test("two creates of one name at once: exactly one wins", async () => {
  const results = await Promise.allSettled([
    Sandbox.create({ image: root, name: "contested" }),
    Sandbox.create({ image: root, name: "contested" }),
  ]);
  const won = results.filter((r) => r.status === "fulfilled");
  const lost = results.filter((r) => r.status === "rejected");
  assert.equal(won.length, 1);
  assert.ok((lost[0] as PromiseRejectedResult).reason instanceof SandboxExistsError);
  await (won[0] as PromiseFulfilledResult<Sandbox>).value.stopAndWait();
});

test("the idle timeout stops an idle sandbox and spares a busy one; the lifetime ends it regardless", async () => {
  const idle = await Sandbox.create({ image: root, name: "idle", detached: true, idleTimeoutMs: 2000 });
  const busy = await Sandbox.create({ image: root, name: "busy-one", detached: true, idleTimeoutMs: 2000 });
  const aged = await Sandbox.create({ image: root, name: "aged", detached: true, maxLifetimeMs: 3000 });
  const working = busy.shell("sleep 5; echo done");
  const agedWork = aged.shell("sleep 30");
  assert.ok(await eventually(() => !idle.running, 6000), "the idle sandbox still runs");
  assert.equal(busy.running, true, "the busy sandbox was stopped while a command ran");
  assert.match((await statusOf("idle"))?.reason ?? "", /idle for 2000 ms/);
  await assert.rejects(agedWork, SandboxNotRunningError);
  assert.match((await statusOf("aged"))?.reason ?? "", /maximum lifetime of 3000 ms/);
  assert.equal((await working).stdout(), "done\n");
  // Idle again once its command ended.
  assert.ok(await eventually(() => !busy.running, 6000), "the busy sandbox outlived its idle timeout");
  for (const name of ["idle", "busy-one", "aged"]) await Sandbox.remove(name);
});

test("a process of another user cannot reach a sandbox's control socket", async () => {
  const sb = await Sandbox.create({ image: root, name: "private" });
  try {
    const socket = path.join(home, "run", "private.sock");
    // Connects and sends a well-formed Attach request (a 4-byte big-endian length,
    // then the postcard envelope: request id 1, ToRuntime variant 4), then says
    // what came of it.
    const probe = (asNobody: boolean) => {
      const script = `const c = require("net").connect(${JSON.stringify(socket)});
        const say = (what) => { console.log(what); process.exit(0); };
        c.on("error", (e) => say(e.code === "EACCES" ? "EACCES" : "hung up"));
        c.on("connect", () => c.write(Buffer.from([0, 0, 0, 2, 1, 4])));
        c.on("data", () => say("answered"));
        c.on("close", () => say("hung up"));
        setTimeout(() => say("no answer"), 5000);`;
      const [program, args] = asNobody
        ? ["setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, "-e", script]]
        : [process.execPath, ["-e", script]];
      return execFileSync(program as string, args as string[], { encoding: "utf8" }).trim();
    };
    assert.equal(fs.statSync(path.join(home, "run")).mode & 0o777, 0o700);
    assert.equal(fs.statSync(socket).mode & 0o777, 0o600);
    assert.equal(probe(true), "EACCES");
    // With the modes opened up, the runtime itself checks who is calling: it
    // answers its own user (the probe is sound) and hangs up on another.
    fs.chmodSync(home, 0o755);
    fs.chmodSync(path.join(home, "run"), 0o755);
    fs.chmodSync(socket, 0o666);
    assert.equal(probe(false), "answered");
    assert.equal(probe(true), "hung up");
    assert.equal((await sb.shell("echo still fine")).stdout(), "still fine\n");
  } finally {
    await sb.stopAndWait();
  }
});

test("metrics: CPU rises under a busy loop, guest memory under an allocation, network counters with a transfer", async () => {
  const sb = await Sandbox.create({ image: root, name: "measured", ports: { 0: 80 } });
  try {
    const first = await sb.metrics();
    assert.ok(first.uptimeMs > 0);
    assert.ok(first.memoryTotalMib! > 400 && first.memoryTotalMib! <= 512, `total ${first.memoryTotalMib}`);
    const usedBefore = first.memoryUsedMib!;
    assert.ok(usedBefore > 0 && usedBefore < first.memoryTotalMib!);

    await new Promise((resolve) => setTimeout(resolve, 1500));
    const idle = await sb.metrics();
    await sb.shell("end=$(($(date +%s) + 2)); while [ $(date +%s) -lt $end ]; do :; done");
    const busy = await sb.metrics();
    assert.ok(busy.cpuPercent > 50, `busy ${busy.cpuPercent}%`);
    assert.ok(busy.cpuPercent > idle.cpuPercent, `busy ${busy.cpuPercent}% vs idle ${idle.cpuPercent}%`);

    await sb.shell("head -c 104857600 /dev/zero > /tmp/big");
    const allocated = await sb.metrics();
    assert.ok(allocated.memoryUsedMib! - usedBefore > 80, `${usedBefore} -> ${allocated.memoryUsedMib} MiB`);

    await sb.shell("mkdir -p /www && head -c 1048576 /dev/zero > /www/blob && httpd -p 80 -h /www");
    const [published] = sb.bootInfo.publishedPorts;
    const got = await new Promise<number>((resolve, reject) => {
      http
        .get(`http://${published.host}/blob`, (res) => {
          let bytes = 0;
          res.on("data", (d: Buffer) => (bytes += d.length));
          res.on("end", () => resolve(bytes));
        })
        .on("error", reject);
    });
    assert.equal(got, 1048576);
    const after = await sb.metrics();
    assert.ok(after.netTxBytes - allocated.netTxBytes >= 1048576, `tx ${allocated.netTxBytes} -> ${after.netTxBytes}`);
    assert.ok(after.netRxBytes > allocated.netRxBytes, `rx ${allocated.netRxBytes} -> ${after.netRxBytes}`);

    // A stream of samples, ended by its signal.
    const controller = new AbortController();
    const uptimes: number[] = [];
    for await (const sample of sb.metricsStream({ intervalMs: 200, signal: controller.signal })) {
      uptimes.push(sample.uptimeMs);
      if (uptimes.length === 3) controller.abort();
    }
    assert.equal(uptimes.length, 3);
    assert.ok(uptimes[0] < uptimes[1] && uptimes[1] < uptimes[2]);
    await assert.rejects(async () => {
      for await (const _ of sb.metricsStream({ intervalMs: 5 })) break;
    }, InvalidOptionError);
  } finally {
    await sb.stopAndWait();
  }
  await assert.rejects(sb.metrics(), SandboxNotRunningError);
});

test("logs: console lines and runtime events with times, followed live, readable after stop until removed", async () => {
  const sb = await Sandbox.create({ image: root, name: "chatty", detached: true });
  const started = Date.now();
  const seen: LogLine[] = [];
  const following = (async () => {
    for await (const line of sb.logs({ follow: true })) seen.push(line);
  })();
  await sb.shell("echo first-marker > /dev/console");
  assert.ok(
    await eventually(() => seen.some((l) => l.source === "console" && l.text.includes("first-marker")), 5000),
    JSON.stringify(seen.slice(-5)),
  );
  await sb.shell("printf 'second-marker \\033[31mred\\n' > /dev/console");
  assert.ok(await eventually(() => seen.some((l) => l.text.includes("second-marker")), 5000));
  await sb.stopAndWait();
  // The follower ends by itself once the sandbox has ended, with the end's line.
  await following;
  const last = seen[seen.length - 1];
  assert.equal(last.source, "runtime");
  assert.match(last.text, /^ended: it was stopped/);
  const red = seen.find((l) => l.text.includes("second-marker"))!;
  assert.equal(red.text, "second-marker \uFFFD[31mred");
  for (const line of seen) {
    assert.ok(line.time.getTime() >= started - 60_000 && line.time.getTime() <= Date.now(), String(line.time));
  }
  // Read again after the stop, without following: the same lines, in order.
  const again: LogLine[] = [];
  for await (const line of Sandbox.logs("chatty")) again.push(line);
  assert.deepEqual(again.map((l) => l.text), seen.map((l) => l.text));
  assert.ok(again.some((l) => l.source === "runtime" && /^booted in \d+ ms/.test(l.text)));
  assert.ok(again.some((l) => l.source === "runtime" && l.text === "stop requested"));
  await Sandbox.remove("chatty");
  await assert.rejects(async () => {
    for await (const _ of Sandbox.logs("chatty")) break;
  }, SandboxNotFoundError);
});

test("a stopped detached sandbox keeps its name; start boots it again with its options and secrets given again", async () => {
  const created = await Sandbox.create({
    image: root,
    name: "restartable",
    detached: true,
    env: { GREETING: "hi" },
    scripts: { hello: "#!/bin/sh\necho hello from a script\n" },
    secretEnv: { TOKEN: { value: "s3cret-value", domain: "api.example.com" } },
  });
  await created.shell("echo written > /tmp/file");
  await created.stopAndWait();
  await assert.rejects(Sandbox.create({ image: root, name: "restartable" }), (err: unknown) => {
    assert.ok(err instanceof SandboxExistsError);
    assert.match(err.message, /stopped detached sandbox .* start it .* or remove it/);
    return true;
  });
  await assert.rejects(Sandbox.start("restartable"), (err: unknown) => {
    assert.ok(err instanceof InvalidOptionError);
    assert.equal(err.field, "secretEnv");
    assert.match(err.message, /TOKEN/);
    return true;
  });
  await assert.rejects(Sandbox.start("restartable", { cpus: 2 } as never), InvalidOptionError);
  await assert.rejects(Sandbox.start("never-created"), SandboxNotFoundError);

  const started = await Sandbox.start("restartable", {
    secretEnv: { TOKEN: { value: "s3cret-value", domain: "api.example.com" } },
  });
  try {
    const out = await started.shell('echo "$GREETING"; hello; cat /tmp/file 2>/dev/null || echo fresh root; echo "$TOKEN"');
    const [greeting, script, file, token] = out.stdout().trim().split("\n");
    assert.deepEqual([greeting, script, file], ["hi", "hello from a script", "fresh root"]);
    assert.ok(token.length > 0 && !token.includes("s3cret-value"), token);
    assert.equal((await statusOf("restartable"))?.status, "running");
    await assert.rejects(Sandbox.start("restartable", { secretEnv: { TOKEN: { value: "x", domain: "a.example" } } }), SandboxRunningError);
    // The record and its options survive the handle: another process gets it.
    assert.equal(await inOtherProcess("exec", "restartable", "echo $GREETING"), "hi\n");
  } finally {
    await started.stopAndWait();
  }
  await Sandbox.remove("restartable");
});

test("a runtime that cannot be started leaves no record behind", async () => {
  // A runtime file that exists but cannot be executed passes the asset check
  // and fails at spawn: the "starting" record made before must not linger.
  const notExecutable = path.join(home, "not-executable-runtime");
  fs.writeFileSync(notExecutable, "not a program", { mode: 0o644 });
  const saved = process.env.MSB_RUNTIME;
  process.env.MSB_RUNTIME = notExecutable;
  try {
    await assert.rejects(Sandbox.create({ image: root, name: "unstartable" }), (err: unknown) => {
      assert.ok(err instanceof InternalError, String(err));
      assert.match(err.message, /start the sandbox runtime/);
      return true;
    });
  } finally {
    if (saved === undefined) delete process.env.MSB_RUNTIME;
    else process.env.MSB_RUNTIME = saved;
  }
  assert.equal(await statusOf("unstartable"), undefined);
  // The name is free: a create with a working runtime takes it.
  const sb = await Sandbox.create({ image: root, name: "unstartable" });
  await sb.stopAndWait();
});
