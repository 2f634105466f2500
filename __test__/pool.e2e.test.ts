// Warm pools, end to end: Sandbox.prewarm boots sandboxes ahead of create,
// and a create whose options equal a pool's (apart from onProgress) takes one
// of them. Pooled sandboxes are told apart from listed ones by their
// directories under MSB_HOME/sandboxes (a pooled sandbox has one, and a live
// VM whose command line names it, but no entry in Sandbox.list()), and checked
// from inside the guests: a claimed sandbox must be an ordinary one of its
// own, a dead pooled VM must never be handed out, and a closed pool, or one
// whose owner died, must leave no VM behind.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";

import {
  BootFailedError,
  InvalidOptionError,
  Sandbox,
  SandboxNotFoundError,
  type SandboxOptions,
  type WarmPool,
} from "../ts/index";
import { alive, busyboxRoot, commandOf, eventually, isolatedHome, leftovers, parentOf, processesOf } from "./helpers";

const home = isolatedHome("pool");
const sandboxesDir = path.join(home, "sandboxes");
let root: string;

/** Every pool and sandbox a test made, closed and stopped in `after` whatever failed. */
const pools: WarmPool[] = [];
const sandboxes: Sandbox[] = [];

before(() => {
  delete process.env.MSB_SNAPSHOT;
  root = busyboxRoot();
});

after(async () => {
  await Promise.allSettled(pools.map((pool) => pool.close()));
  await Promise.allSettled(sandboxes.map((sb) => sb.stopAndWait()));
  fs.rmSync(home, { recursive: true, force: true });
});

/**
 * The options of one test's pool: the SDK's default machine spelled out, and
 * an env value of the test's own, so that no test's create can match another
 * test's pool. A fresh object each call: a claim must go by value, not identity.
 */
function options(label: string): SandboxOptions {
  return { image: root, cpus: 1, memoryMib: 512, env: { POOL_TEST: label } };
}

async function prewarm(label: string, count: number): Promise<WarmPool> {
  const pool = await Sandbox.prewarm({ ...options(label), count });
  pools.push(pool);
  return pool;
}

async function create(opts: SandboxOptions): Promise<Sandbox> {
  const sb = await Sandbox.create(opts);
  sandboxes.push(sb);
  return sb;
}

function sandboxDirs(): string[] {
  return fs.existsSync(sandboxesDir) ? fs.readdirSync(sandboxesDir).sort() : [];
}

/** The sandbox directories that appeared since `before` was taken. */
function newDirs(before: string[]): string[] {
  return sandboxDirs().filter((name) => !before.includes(name));
}

async function listedNames(): Promise<Set<string>> {
  return new Set((await Sandbox.list()).map((s) => s.name));
}

/**
 * Live processes that mention sandbox `name`'s directory: in their command
 * line (QEMU exports `<dir>/transfer` to the guest), working directory or open
 * files (the runtime holds `<dir>/lock` and its logs).
 */
function processesMentioning(name: string): number[] {
  const dir = path.join(sandboxesDir, name);
  const inDir = (p: string) => p === dir || p.startsWith(dir + "/");
  const pids: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid || !alive(Number(entry))) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      let mentions = cmdline.some((arg) => arg.includes(dir + "/") || arg.endsWith(dir));
      if (!mentions) {
        const links = [`/proc/${entry}/cwd`, ...fs.readdirSync(`/proc/${entry}/fd`).map((fd) => `/proc/${entry}/fd/${fd}`)];
        mentions = links.some((link) => {
          try {
            return inDir(fs.readlinkSync(link));
          } catch {
            return false;
          }
        });
      }
      if (mentions) pids.push(Number(entry));
    } catch {
      // The process exited while we looked.
    }
  }
  return pids;
}

/** The QEMU process of sandbox `name`: the live process whose command line names its directory. */
function qemuOf(name: string): number | undefined {
  const dir = path.join(sandboxesDir, name);
  return processesMentioning(name).find((pid) => {
    const cmd = commandOf(pid);
    return /(^|\/)qemu-system-\S+ /.test(cmd) && cmd.includes(dir + "/");
  });
}

/** Pooled sandboxes now: directories not in Sandbox.list() whose VM runs. */
async function livePooled(): Promise<string[]> {
  const listed = await listedNames();
  return sandboxDirs().filter((name) => !listed.has(name) && qemuOf(name) !== undefined);
}

function describeProcesses(pids: number[]): string {
  return pids.map((pid) => `${pid} ${commandOf(pid)}`).join("; ");
}

test("prewarm boots count sandboxes outside list() and get(); an equal create claims one, which is then ordinary; the pool refills", { timeout: 120_000 }, async () => {
  const before = sandboxDirs();
  const runningBefore = (await Sandbox.list()).filter((s) => s.status === "running").length;
  const pool = await prewarm("claim", 2);
  try {
    await claimAndRefill(pool, before, runningBefore);
  } finally {
    await pool.close();
  }
});

async function claimAndRefill(pool: WarmPool, before: string[], runningBefore: number): Promise<void> {
  assert.equal(pool.size, 2);
  assert.equal(pool.available, 2);
  assert.equal(pool.lastError, undefined);

  const pooled = newDirs(before);
  assert.equal(pooled.length, 2, `sandbox directories made by prewarm: ${pooled.join(", ")}`);
  for (const name of pooled) assert.ok(qemuOf(name), `no VM runs for pooled ${name}`);
  const listed = await Sandbox.list();
  assert.deepEqual(listed.filter((s) => pooled.includes(s.name)).map((s) => s.name), [], "pooled sandboxes are listed");
  assert.equal(listed.filter((s) => s.status === "running").length, runningBefore);
  for (const name of pooled) {
    await assert.rejects(Sandbox.get(name), (err: unknown) => {
      assert.ok(err instanceof SandboxNotFoundError, `get(${name}): ${String(err)}`);
      return true;
    });
  }

  const sb = await create(options("claim"));
  assert.ok(pooled.includes(sb.name), `${sb.name} is none of the pooled ${pooled.join(", ")}`);
  assert.equal(pool.available, 1, "available right after the claim");
  const info = (await Sandbox.list()).find((s) => s.name === sb.name);
  assert.equal(info?.status, "running", JSON.stringify(info));
  assert.equal(info?.detached, false);
  assert.equal(info?.memoryMib, 512);
  const out = await sb.shell('echo ok; echo "$POOL_TEST"');
  assert.equal(out.stdout(), "ok\nclaim\n", out.stderr());
  // Once claimed, other handles reach it by name.
  const viaGet = await Sandbox.get(sb.name);
  assert.equal((await viaGet.exec("echo", ["via-get"])).stdout(), "via-get\n");

  await pool.filled();
  assert.equal(pool.available, 2, `not refilled: ${String(pool.lastError)}`);
  assert.equal(pool.lastError, undefined);
  const now = await livePooled();
  const refills = now.filter((name) => !pooled.includes(name));
  assert.equal(now.length, 2, `pooled after the refill: ${now.join(", ")}`);
  assert.ok(!now.includes(sb.name), "the claimed sandbox is still pooled");
  assert.equal(refills.length, 1, `refill names: ${refills.join(", ")} (first pooled: ${pooled.join(", ")})`);
  assert.deepEqual((await Sandbox.list()).filter((s) => now.includes(s.name)), []);

  // The claimed sandbox ends as any unnamed one: stop() ends it and its directory goes.
  await sb.stopAndWait();
  assert.equal(fs.existsSync(path.join(sandboxesDir, sb.name)), false);
  assert.equal(pool.available, 2);
}

test("a create whose options differ from the pool's boots its own sandbox; onProgress alone does not differ", { timeout: 120_000 }, async () => {
  const before = sandboxDirs();
  const pool = await prewarm("other", 1);
  const pooled = newDirs(before);
  assert.equal(pooled.length, 1);
  try {
    for (const [what, opts, label] of [
      ["another env value", options("different"), "different"],
      ["an extra option", { ...options("other"), workdir: "/tmp" }, "other"],
    ] as const) {
      const sb = await create(opts);
      try {
        assert.ok(!pooled.includes(sb.name), `${what}: claimed the pooled ${sb.name}`);
        assert.equal(pool.available, 1, what);
        assert.equal((await sb.shell('echo "$POOL_TEST"')).stdout(), `${label}\n`, what);
      } finally {
        await sb.stopAndWait();
      }
      assert.deepEqual(await livePooled(), pooled, `${what}: the pooled sandbox changed`);
    }

    const claimed = await create({ ...options("other"), onProgress: () => {} });
    assert.equal(claimed.name, pooled[0], "a create differing only by onProgress did not claim");
    assert.equal((await claimed.shell('echo "$POOL_TEST"')).stdout(), "other\n");
    await claimed.stopAndWait();
    await pool.filled();
    assert.equal(pool.available, 1, String(pool.lastError));
  } finally {
    await pool.close();
  }
});

test("two claimed sandboxes are separate machines: own root, own boot id", { timeout: 120_000 }, async () => {
  const before = sandboxDirs();
  const pool = await prewarm("iso", 2);
  const pooled = newDirs(before);
  try {
    const a = await create(options("iso"));
    const b = await create(options("iso"));
    try {
      assert.notEqual(a.name, b.name);
      assert.ok(pooled.includes(a.name) && pooled.includes(b.name), `${a.name}, ${b.name} not both of ${pooled.join(", ")}`);
      assert.notEqual(a.bootInfo.vmPid, b.bootInfo.vmPid);
      await a.shell("echo secret-a > /root/pool-mark && sync");
      assert.equal((await a.shell("cat /root/pool-mark")).stdout(), "secret-a\n");
      const inB = await b.shell("cat /root/pool-mark 2>/dev/null || echo absent");
      assert.equal(inB.stdout(), "absent\n", "a file written in one claimed sandbox shows in the other");
      assert.equal(fs.existsSync(path.join(root, "root", "pool-mark")), false);
      const bootIdA = (await a.exec("cat", ["/proc/sys/kernel/random/boot_id"])).stdout().trim();
      const bootIdB = (await b.exec("cat", ["/proc/sys/kernel/random/boot_id"])).stdout().trim();
      assert.match(bootIdA, /^[0-9a-f-]{36}$/);
      assert.notEqual(bootIdA, bootIdB, "both claimed guests have the same boot_id");
    } finally {
      await Promise.all([a.stopAndWait(), b.stopAndWait()]);
    }
  } finally {
    await pool.close();
  }
});

test("prewarm refuses options a pool cannot honour, naming the option, and starts no VM", { timeout: 120_000 }, async () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ["a name", { count: 1, name: "pooled" }, "name"],
    ["published ports", { count: 1, ports: { 0: 80 } }, "ports"],
    ["volumes", { count: 1, volumes: { "/scratch": { tmpfs: { sizeMib: 16 } } } }, "volumes"],
    ["detached", { count: 1, detached: true }, "detached"],
    ["replace", { count: 1, replace: true }, "replace"],
    ["an idle timeout", { count: 1, idleTimeoutMs: 60_000 }, "idleTimeoutMs"],
    ["a maximum lifetime", { count: 1, maxLifetimeMs: 60_000 }, "maxLifetimeMs"],
    ["a persistent root", { count: 1, persistent: true }, "persistent"],
    ["count: 0", { count: 0 }, "count"],
    ["count: 1.5", { count: 1.5 }, "count"],
    ["count: 33", { count: 33 }, "count"],
    ["count as a string", { count: "2" }, "count"],
    ["no count", {}, "count"],
    ["a bad option of create's", { count: 1, memoryMib: -1 }, "memoryMib"],
  ];
  const dirsBefore = sandboxDirs();
  const processesBefore = processesOf(home);
  for (const [label, extra, field] of cases) {
    await assert.rejects(Sandbox.prewarm({ ...options("refused"), ...extra } as never), (err: unknown) => {
      assert.ok(err instanceof InvalidOptionError, `${label}: ${String(err)}`);
      assert.equal(err.code, "INVALID_OPTION");
      assert.equal(err.field, field, `${label}: ${err.message}`);
      return true;
    });
    const started = processesOf(home).filter((pid) => !processesBefore.includes(pid));
    assert.deepEqual(started, [], `${label}: started ${describeProcesses(started)}`);
    assert.deepEqual(sandboxDirs(), dirsBefore, `${label}: made a sandbox directory`);
  }
});

test("a prewarm whose sandboxes cannot boot rejects with the boot's error and leaves no VM", { timeout: 120_000 }, async () => {
  // An /init that the kernel cannot execute: the guests panic.
  const fakeAgent = path.join(home, "not-an-agent");
  fs.writeFileSync(fakeAgent, "#!/nonexistent/interpreter\n", { mode: 0o755 });
  const processesBefore = processesOf(home);
  process.env.MSB_AGENT = fakeAgent;
  try {
    await assert.rejects(Sandbox.prewarm({ ...options("doomed"), count: 2 }).then((pool) => {
      pools.push(pool);
      return pool;
    }), (err: unknown) => {
      assert.ok(err instanceof BootFailedError, String(err));
      return true;
    });
  } finally {
    delete process.env.MSB_AGENT;
  }
  const left = () => processesOf(home).filter((pid) => !processesBefore.includes(pid));
  assert.ok(await eventually(() => left().length === 0, 5000), `left running: ${describeProcesses(left())}`);
  assert.deepEqual(await livePooled(), []);
  // No pool of those options exists: a create of them boots on its own (with the real agent).
  const sb = await create(options("doomed"));
  try {
    assert.equal((await sb.shell("echo ok")).stdout(), "ok\n");
  } finally {
    await sb.stopAndWait();
  }
});

test("pooled sandboxes whose VMs died before a claim are never handed out, and are replaced", { timeout: 120_000 }, async () => {
  const before = sandboxDirs();
  const pool = await prewarm("dead", 2);
  const victims = newDirs(before);
  assert.equal(victims.length, 2);
  try {
    // Both die, so that no order of taking can hand out a live one by luck.
    for (const victim of victims) {
      const qemu = qemuOf(victim);
      assert.ok(qemu, `no QEMU found for pooled ${victim}`);
      const runtime = parentOf(qemu);
      process.kill(qemu, "SIGKILL");
      assert.ok(
        await eventually(() => !alive(qemu) && !alive(runtime), 10_000),
        `${victim}'s runtime ${runtime} (${commandOf(runtime)}) outlived its VM by 10 s`,
      );
    }

    const sb = await create(options("dead"));
    try {
      assert.ok(!victims.includes(sb.name), `create handed out ${sb.name}, whose VM was killed`);
      const out = await sb.shell('echo ok; echo "$POOL_TEST"');
      assert.equal(out.stdout(), "ok\ndead\n", out.stderr());
      const listed = await Sandbox.list();
      assert.equal(listed.find((s) => s.name === sb.name)?.status, "running");
      for (const victim of victims) {
        assert.notEqual(listed.find((s) => s.name === victim)?.status, "running", `the dead ${victim} is listed running`);
      }
    } finally {
      await sb.stopAndWait();
    }

    await pool.filled();
    assert.equal(pool.available, 2, `not refilled after the dead VMs: ${String(pool.lastError)}`);
    const now = await livePooled();
    assert.equal(now.length, 2, `live pooled sandboxes: ${now.join(", ")}`);
    assert.deepEqual(now.filter((name) => victims.includes(name) || name === sb.name), []);
  } finally {
    await pool.close();
  }
  // Nothing is left of the dead ones either.
  for (const victim of victims) {
    assert.equal(fs.existsSync(path.join(sandboxesDir, victim)), false, `the dead ${victim}'s directory was left`);
  }
});

test("close() stops every unclaimed sandbox and any refill in flight; claimed ones run on; later creates boot normally", { timeout: 120_000 }, async () => {
  const before = sandboxDirs();
  const pool = await prewarm("close", 2);
  const pooled = newDirs(before);
  assert.equal(pooled.length, 2);
  const claimed = await create(options("close"));
  assert.ok(pooled.includes(claimed.name));
  const unclaimed = pooled.filter((name) => name !== claimed.name);
  const unclaimedVms = unclaimed.map((name) => qemuOf(name));
  assert.ok(unclaimedVms.every((pid) => pid !== undefined), "the unclaimed sandbox has no VM");

  // Closed while the claim's refill is in flight.
  await pool.close();
  assert.equal(pool.available, 0);
  // What is left the moment close() resolved, checked at the end (after the checks that follow).
  const rightAfterClose = unclaimed.flatMap((name) => {
    const dir = fs.existsSync(path.join(sandboxesDir, name)) ? [`${name}'s directory`] : [];
    return [...dir, ...processesMentioning(name).map((pid) => `${name}: ${pid} ${commandOf(pid)}`)];
  });
  const unclaimedRunning = () => [
    ...unclaimed.flatMap(processesMentioning),
    ...unclaimedVms.filter((pid) => alive(pid!)),
  ];
  assert.ok(
    await eventually(() => unclaimedRunning().length === 0, 5000),
    `the unclaimed ${unclaimed.join(", ")} run on 5 s after close(): ${describeProcesses(unclaimedRunning() as number[])}`,
  );
  await pool.close();
  await pool.filled();
  assert.equal(pool.available, 0);

  // Only the claimed sandbox's runtime and VM are left: the refill that was in flight was stopped too.
  const mine = [claimed.bootInfo.vmPid, parentOf(claimed.bootInfo.vmPid)];
  const others = () => processesOf(home).filter((pid) => !mine.includes(pid));
  assert.ok(await eventually(() => others().length === 0, 5000), `still running: ${describeProcesses(others())}`);
  const listed = await listedNames();
  const unlistedLeft = newDirs(before).filter((name) => !listed.has(name));
  assert.equal((await claimed.shell("echo still here")).stdout(), "still here\n");
  await claimed.stopAndWait();

  // Those options have no pool any more: create boots a sandbox, and nothing refills after it.
  const dirsNow = sandboxDirs();
  const fresh = await create(options("close"));
  try {
    assert.ok(!pooled.includes(fresh.name));
    assert.deepEqual(newDirs(dirsNow), [fresh.name]);
    assert.equal((await fresh.shell("echo ok")).stdout(), "ok\n");
    assert.equal((await Sandbox.list()).find((s) => s.name === fresh.name)?.status, "running");
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.deepEqual(newDirs(dirsNow), [fresh.name], "a closed pool refilled");
    assert.equal(pool.available, 0);
  } finally {
    await fresh.stopAndWait();
  }
  assert.deepEqual(unlistedLeft, [], "directories of pooled sandboxes left after close() (and its refill) ended");
  assert.deepEqual(rightAfterClose, [], "close() resolved while unclaimed sandboxes were still there");
});

test("every VM is gone once pools are closed and sandboxes stopped; no directory, socket or temp file is left", { timeout: 30_000 }, async () => {
  assert.ok(await eventually(() => processesOf(home).length === 0, 5000), `left running: ${describeProcesses(processesOf(home))}`);
  assert.deepEqual(sandboxDirs(), [], "sandbox directories left behind");
  assert.deepEqual(leftovers(sandboxesDir), []);
});

test("pooled sandboxes die with the process that prewarmed them", { timeout: 120_000 }, async () => {
  const before = sandboxDirs();
  const script = `
    const { Sandbox } = require(process.env.POOL_SDK);
    Sandbox.prewarm({ image: process.env.POOL_IMAGE, cpus: 1, memoryMib: 512, count: 1 }).then(
      (pool) => { process.stdout.write("ready " + pool.available + "\\n"); setInterval(() => {}, 1 << 30); },
      (err) => { process.stderr.write("prewarm: " + err + "\\n"); process.exit(1); },
    );`;
  const child = spawn(process.execPath, ["-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, POOL_SDK: path.join(__dirname, "..", "ts", "index.js"), POOL_IMAGE: root },
  });
  try {
    const available = await new Promise<number>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (chunk) => {
        out += chunk;
        const match = /ready (\d+)\n/.exec(out);
        if (match) resolve(Number(match[1]));
      });
      child.on("exit", (code) => reject(new Error(`the prewarming process exited early with ${code}`)));
    });
    assert.equal(available, 1);
    const pooled = newDirs(before);
    assert.equal(pooled.length, 1);
    const qemu = qemuOf(pooled[0]);
    assert.ok(qemu, `no VM for ${pooled[0]}`);
    const sandboxProcesses = processesOf(home).filter((pid) => pid !== child.pid);
    assert.ok(sandboxProcesses.includes(qemu), describeProcesses(sandboxProcesses));

    child.kill("SIGKILL");
    const gone = await eventually(() => processesOf(home).length === 0, 2000);
    assert.ok(gone, `still running 2 s after the owner died: ${describeProcesses(processesOf(home))}`);
  } finally {
    child.kill("SIGKILL");
  }
});
