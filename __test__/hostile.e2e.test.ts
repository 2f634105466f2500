// End to end: a guest whose root takes over the agent channel and lies to the
// host. The impostor (crates/hostile-agent, installed as assets/msb-hostile-agent
// by scripts/build.sh) freezes the real agent with ptrace, takes its virtio port
// with pidfd_getfd and answers the host itself; each scenario is one lie. The
// host must survive every one: the sandbox stops with GuestProtocolError, Node's
// memory stays bounded, copies out of the guest stay inside their destination.
// A few cases need no impostor: a halted guest, a FIFO, a process that writes
// without end. Each case boots its own sandbox, since most of them end it.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";

import {
  ExecTimeoutError,
  FsError,
  GuestProtocolError,
  LimitExceededError,
  Sandbox,
  SandboxNotRunningError,
} from "../ts/index";
import { busyboxRoot, eventually, isolatedHome, processesOf, repoRoot } from "./helpers";

const home = isolatedHome("hostile");
const impostorBinary = path.join(repoRoot, "assets", "msb-hostile-agent");
/** Names this run's impostor gives the files it tries to plant on the host. */
const tag = `${process.pid}-${randomBytes(4).toString("hex")}`;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "msb-hostile-"));
const absoluteEscape = `/tmp/escape-abs-${tag}`;
let root: string;

/** The impostor freezes the agent this long after the exec that starts it ends. */
const SETTLE_MS = 300;
/** Time given to the takeover before the next call, which must reach the impostor. */
const TAKEOVER_MS = 1000;
/** The runtime stops a guest that answered no ping for 4 s; the contract allows 5. */
const SILENCE_LIMIT_MS = 5000;
const MiB = 1 << 20;

before(() => {
  root = busyboxRoot();
  assert.ok(fs.existsSync(impostorBinary), `${impostorBinary} is missing: run scripts/build.sh`);
});

after(() => {
  fs.rmSync(home, { recursive: true, force: true });
  fs.rmSync(scratch, { recursive: true, force: true });
  fs.rmSync(absoluteEscape, { force: true });
});

/** Runs `body` with a fresh sandbox, which is killed afterwards whatever happened to it. */
async function withSandbox(name: string, body: (sb: Sandbox) => Promise<void>): Promise<void> {
  const sb = await Sandbox.create({ name: `hostile-${name}`, image: root, memoryMib: 256 });
  try {
    await body(sb);
  } finally {
    await sb.kill().catch(() => {});
  }
}

/**
 * Starts the impostor in `sb`; resolves once it has taken over the agent's
 * channel, to the time (Date.now()) of the takeover.
 */
async function startImpostor(sb: Sandbox, scenario: string, ...args: string[]): Promise<number> {
  await sb.fs().copyFromHost(impostorBinary, "/msb-hostile-agent");
  await sb.exec("chmod", ["755", "/msb-hostile-agent"]);
  const started = await sb.exec("/msb-hostile-agent", [scenario, ...args]);
  // It checks in the foreground that it can take over, then daemonizes.
  assert.equal(started.code, 0, `the impostor did not start: ${started.stderr()}`);
  const takeover = Date.now() + SETTLE_MS;
  await sleep(TAKEOVER_MS);
  return takeover;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `promise`, or a rejection naming `what` once `ms` passed: a broken host must fail, not hang. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function isProtocolError(err: unknown): true {
  assert.ok(err instanceof GuestProtocolError, `expected GuestProtocolError, got ${String(err)}`);
  assert.equal(err.code, "GUEST_PROTOCOL");
  return true;
}

function isStoppedError(err: unknown): true {
  assert.ok(
    err instanceof SandboxNotRunningError || err instanceof GuestProtocolError,
    `expected SandboxNotRunningError or GuestProtocolError, got ${String(err)}`,
  );
  return true;
}

/** After a violation: the sandbox is stopped, its VM gone, and every later call rejects. */
async function assertStoppedForViolation(sb: Sandbox): Promise<void> {
  assert.ok(await eventually(() => !sb.running, 5000), "the sandbox still runs after the violation");
  await assert.rejects(within(5000, "stat after the violation", sb.fs().stat("/")), isProtocolError);
  await assert.rejects(within(5000, "exec after the violation", sb.exec("true")), isProtocolError);
  assert.ok(await eventually(() => processesOf(home).length === 0, 10_000), "the VM outlived the violation");
}

/**
 * A guest silent since `silentSince` (Date.now()): `pending` rejects and the
 * sandbox stops within SILENCE_LIMIT_MS of it (plus polling slack).
 */
async function assertStoppedInTime(sb: Sandbox, silentSince: number, pending: Promise<unknown>): Promise<void> {
  const slack = 250;
  const left = () => Math.max(0, silentSince + SILENCE_LIMIT_MS - Date.now()) + slack;
  await assert.rejects(within(left(), "the pending call", pending), isStoppedError);
  assert.ok(await eventually(() => !sb.running, left()), `still running ${Date.now() - silentSince} ms after the guest went silent`);
}

/**
 * Awaits `promise` while watching this process's RSS: fails as soon as it has
 * grown by `limit` bytes (a host buffering a flood would otherwise take the
 * machine down before any timeout), and reports the peak growth.
 */
async function boundedRss<T>(limit: number, promise: Promise<T>): Promise<{ settled: Promise<T>; peakGrowth: number }> {
  const start = process.memoryUsage().rss;
  let peakGrowth = 0;
  let done = false;
  const settled = promise.finally(() => {
    done = true;
  });
  settled.catch(() => {});
  while (!done) {
    peakGrowth = Math.max(peakGrowth, process.memoryUsage().rss - start);
    if (peakGrowth >= limit) break;
    await Promise.race([settled.catch(() => {}), sleep(20)]);
  }
  peakGrowth = Math.max(peakGrowth, process.memoryUsage().rss - start);
  return { settled, peakGrowth };
}

/** Every path under `dir`, relative to it. */
function tree(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).sort();
}

/** Permission bits a file or directory that copyToHost creates may have at most. */
function allowedMode(): number {
  const umask = process.umask();
  return 0o777 & ~umask;
}

describe("a guest that lies about its files", () => {
  test("traversal: path-like names stop the copy and nothing lands outside the destination", { timeout: 120_000 }, async () => {
    const area = path.join(scratch, "traversal");
    const dest = path.join(area, "a", "dest");
    fs.mkdirSync(dest, { recursive: true, mode: 0o700 });
    fs.chmodSync(dest, 0o700);
    const dotdotEscape = path.join(dest, "..", "..", `escape-dotdot-${tag}`);

    await withSandbox("traversal", async (sb) => {
      await startImpostor(sb, "traversal", tag);
      await assert.rejects(within(30_000, "copyToHost", sb.fs().copyToHost("/data", dest)), isProtocolError);

      assert.equal(fs.existsSync(dotdotEscape), false, `${dotdotEscape} was written`);
      assert.equal(fs.existsSync(absoluteEscape), false, `${absoluteEscape} was written`);
      // Nothing but the destination itself (and what it holds) in the area.
      assert.deepEqual(
        tree(area).filter((p) => p !== "a" && p !== path.join("a", "dest") && !p.startsWith(path.join("a", "dest") + path.sep)),
        [],
      );
      assert.equal(fs.statSync(dest).mode & 0o7777, 0o700, "the destination's mode changed");
      assert.deepEqual(tree(area).filter((p) => path.basename(p).startsWith(".msb-copy-")), [], "a temp file was left");
      for (const entry of tree(dest)) {
        assert.equal(fs.statSync(path.join(dest, entry)).mode & ~allowedMode() & 0o7777, 0, `${entry} has too many mode bits`);
      }
      await assertStoppedForViolation(sb);
    });
  });

  test("modes: setuid, setgid, sticky and 0o777 are not carried to the host", { timeout: 120_000 }, async () => {
    const dest = path.join(scratch, "modes", "dest");
    fs.mkdirSync(dest, { recursive: true, mode: 0o700 });
    fs.chmodSync(dest, 0o700);

    await withSandbox("modes", async (sb) => {
      await startImpostor(sb, "modes");
      await within(30_000, "copyToHost", sb.fs().copyToHost("/data", dest));

      assert.equal(fs.statSync(dest).mode & 0o7777, 0o700, "the destination's mode changed");
      assert.deepEqual(tree(dest), ["f.txt", "sub", path.join("sub", "g.txt")]);
      assert.equal(fs.readFileSync(path.join(dest, "f.txt"), "utf8"), "modes scenario\n");
      assert.equal(fs.readFileSync(path.join(dest, "sub", "g.txt"), "utf8"), "modes scenario\n");
      for (const entry of ["sub", "f.txt", path.join("sub", "g.txt")]) {
        const mode = fs.statSync(path.join(dest, entry)).mode & 0o7777;
        assert.equal(mode & 0o7000, 0, `${entry} kept setuid/setgid/sticky: ${mode.toString(8)}`);
        assert.equal(mode & ~allowedMode(), 0, `${entry} ignores the umask: ${mode.toString(8)}`);
      }
      assert.deepEqual(tree(path.dirname(dest)).filter((p) => path.basename(p).startsWith(".msb-copy-")), []);
    });
  });

  test("flood-entries: an endless listing is refused with bounded memory", { timeout: 120_000 }, async () => {
    await withSandbox("flood-entries", async (sb) => {
      await startImpostor(sb, "flood-entries");
      const { settled, peakGrowth } = await boundedRss(64 * MiB, within(60_000, "list", sb.fs().list("/")));
      assert.ok(peakGrowth < 64 * MiB, `Node grew by ${peakGrowth} bytes during the listing`);
      await assert.rejects(settled, isProtocolError);
      await assertStoppedForViolation(sb);
    });
  });
});

describe("a guest that lies about its memory", () => {
  test("meminfo: figures beyond the VM's memory are dropped, and the sandbox serves on", { timeout: 120_000 }, async () => {
    await withSandbox("meminfo", async (sb) => {
      const honest = await within(30_000, "metrics", sb.metrics());
      assert.ok(
        honest.memoryTotalMib !== undefined && honest.memoryTotalMib > 0 && honest.memoryTotalMib <= 256,
        `the real agent's MemTotal: ${honest.memoryTotalMib}`,
      );
      await startImpostor(sb, "meminfo");
      // 64 GiB total and 128 GiB available, in a 256 MiB VM.
      const lied = await within(30_000, "metrics", sb.metrics());
      assert.equal(lied.memoryTotalMib, undefined);
      assert.equal(lied.memoryUsedMib, undefined);
      assert.equal(lied.memoryBytes, 0);
      assert.equal(lied.memoryLimitBytes, 256 * MiB);
      // A lie about itself is not a protocol violation: the sandbox serves on.
      const out = await within(30_000, "exec", sb.exec("true"));
      assert.equal(out.code, 0);
      assert.equal(sb.running, true);
    });
  });
});

describe("a guest that breaks the protocol", () => {
  test("flood-output: output beyond the window stops the sandbox", { timeout: 120_000 }, async () => {
    await withSandbox("flood-output", async (sb) => {
      await startImpostor(sb, "flood-output");
      // Nothing reads the stream, so the host grants no credit past the first
      // window and the flood is beyond it at once. (A collecting exec() grants
      // credit as it collects, up to maxOutputBytes: that would test the cap.)
      const handle = await within(10_000, "execStream", sb.execStream("true"));
      const { peakGrowth } = await boundedRss(
        64 * MiB,
        eventually(() => !sb.running, 10_000),
      );
      assert.ok(peakGrowth < 64 * MiB, `Node grew by ${peakGrowth} bytes during the flood`);
      assert.equal(sb.running, false, "the sandbox still runs after the flood");
      // What arrived within the window may still be read; then the stream fails.
      const drain = async () => {
        for await (const event of handle) assert.notEqual(event.eventType, "exited");
      };
      await assert.rejects(within(10_000, "the flooded stream", drain()), isProtocolError);
      await assertStoppedForViolation(sb);
    });
  });

  test("unsolicited: replies for a request never made stop the sandbox", { timeout: 120_000 }, async () => {
    await withSandbox("unsolicited", async (sb) => {
      await startImpostor(sb, "unsolicited");
      await assertStoppedForViolation(sb);
    });
  });

  test("garbage: an undecodable frame fails the pending call and stops the sandbox", { timeout: 120_000 }, async () => {
    await withSandbox("garbage", async (sb) => {
      await startImpostor(sb, "garbage");
      await assert.rejects(within(10_000, "stat", sb.fs().stat("/")), isProtocolError);
      await assertStoppedForViolation(sb);
    });
  });

  test("huge-frame: a length over the limit fails the pending call and stops the sandbox", { timeout: 120_000 }, async () => {
    await withSandbox("huge-frame", async (sb) => {
      await startImpostor(sb, "huge-frame");
      await assert.rejects(within(10_000, "exec", sb.exec("true")), isProtocolError);
      await assertStoppedForViolation(sb);
    });
  });
});

describe("a guest that does not answer", () => {
  test("no-started: an exec timeout fires even if the process never starts", { timeout: 120_000 }, async () => {
    await withSandbox("no-started", async (sb) => {
      await startImpostor(sb, "no-started");
      const started = Date.now();
      await assert.rejects(within(15_000, "exec", sb.exec("true", [], { timeout: 2000 })), ExecTimeoutError);
      const took = Date.now() - started;
      assert.ok(took < 10_000, `the timeout took ${took} ms`);
    });
  });

  test("silent: a guest that stops answering pings is stopped", { timeout: 120_000 }, async () => {
    await withSandbox("silent", async (sb) => {
      const silentSince = await startImpostor(sb, "silent");
      await assertStoppedInTime(sb, silentSince, sb.fs().stat("/"));
    });
  });

  test("halt -f: a halted guest is stopped and its pending call rejects", { timeout: 120_000 }, async () => {
    await withSandbox("halt", async (sb) => {
      const silentSince = Date.now();
      await assertStoppedInTime(sb, silentSince, sb.shell("halt -f"));
    });
  });
});

describe("an honest guest with awkward files and output", () => {
  test("a FIFO is not read, and the agent keeps serving", { timeout: 120_000 }, async () => {
    await withSandbox("fifo", async (sb) => {
      await sb.exec("mkfifo", ["/tmp/fifo"]);
      await assert.rejects(within(5000, "read of a FIFO", sb.fs().read("/tmp/fifo")), FsError);
      assert.equal((await within(5000, "stat after the FIFO", sb.fs().stat("/"))).kind, "dir");
      assert.equal((await within(5000, "exec after the FIFO", sb.exec("true"))).code, 0);
    });
  });

  test("maxOutputBytes: a process over the cap rejects with its output so far", { timeout: 120_000 }, async () => {
    await withSandbox("output-cap", async (sb) => {
      const run = sb.exec("sh", ["-c", "head -c 100000000 /dev/zero"], { maxOutputBytes: MiB });
      await assert.rejects(within(60_000, "exec", run), (err: unknown) => {
        assert.ok(err instanceof LimitExceededError, `expected LimitExceededError, got ${String(err)}`);
        assert.equal(err.code, "LIMIT_EXCEEDED");
        const stdout = err.stdout;
        assert.ok(Buffer.isBuffer(stdout), "the error carries no stdout Buffer");
        assert.ok(stdout.length <= MiB, `stdout holds ${stdout.length} bytes`);
        assert.ok(stdout.every((byte) => byte === 0), "stdout is not the process's output");
        return true;
      });
      assert.equal((await within(10_000, "exec after the cap", sb.exec("true"))).code, 0);
    });
  });

  test("a fork bomb ends with its exec's timeout, and the guest serves on", { timeout: 180_000 }, async () => {
    await withSandbox("fork-bomb", async (sb) => {
      // User processes (kernel threads have an empty command line, and the
      // kernel may start more of them under load), compared with before.
      const processes = async () =>
        Number((await sb.shell("grep -l . /proc/[0-9]*/cmdline 2>/dev/null | wc -l")).stdout().trim());
      const before = await processes();
      const bomb = sb.exec("sh", ["-c", "bomb() { bomb | bomb; }; bomb"], { timeout: 3000 });
      await assert.rejects(within(30_000, "the fork bomb's exec", bomb), ExecTimeoutError);
      // The timeout killed the exec's cgroup: every process the bomb made is gone.
      let count = await processes();
      for (const deadline = Date.now() + 30_000; count > before && Date.now() < deadline; count = await processes()) {
        await sleep(500);
      }
      assert.ok(count <= before, `${count} processes run in the guest, ${before} before the bomb`);
      assert.ok(sb.running, "the sandbox was stopped");
    });
  });
});
