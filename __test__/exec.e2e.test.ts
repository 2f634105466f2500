// End to end: streaming exec, stdin, PTY, timeouts, signals, users,
// backpressure and concurrency, each checked by code running in a real VM.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { after, before, describe, test } from "node:test";

import {
  ExecAbortedError,
  ExecTimeoutError,
  InvalidOptionError,
  LimitExceededError,
  Sandbox,
  UserNotFoundError,
  type ExecEvent,
} from "../ts/index";
import { busyboxRoot, isolatedHome, parentOf } from "./helpers";

const home = isolatedHome("exec");
let sb: Sandbox;

before(async () => {
  sb = await Sandbox.create({ name: "exec", image: busyboxRoot(), memoryMib: 512, cpus: 2 });
});

after(async () => {
  await sb.stopAndWait();
  fs.rmSync(home, { recursive: true, force: true });
});

/** Pids of guest processes whose command line contains `marker`. */
async function guestProcesses(marker: string): Promise<string[]> {
  const ps = await sb.shell("ps -o pid,args");
  return ps
    .stdout()
    .split("\n")
    .filter((line) => line.includes(marker) && !line.includes("ps -o"));
}

function rssKib(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
}

describe("streaming", () => {
  test("events arrive in order, end with exited, and recv() is null afterwards", async () => {
    const handle = await sb.shellStream("echo one; echo two >&2; sleep 0.2; echo three; exit 5");
    assert.ok(handle.pid > 1);
    const events: ExecEvent[] = [];
    for await (const event of handle) events.push(event);
    const text = events.map((e) => (e.eventType === "exited" ? `exit:${e.code}` : `${e.eventType}:${e.data}`));
    assert.deepEqual(text, ["stdout:one\n", "stderr:two\n", "stdout:three\n", "exit:5"]);
    assert.equal(await handle.recv(), null);
  });

  test("wait() and collect() finish a stream", async () => {
    const waited = await (await sb.shellStream("echo ignored; exit 7")).wait();
    assert.deepEqual(waited, { eventType: "exited", code: 7 });
    const collected = await (await sb.execStream("sh", ["-c", "echo out; echo err >&2"])).collect();
    assert.equal(collected.stdout(), "out\n");
    assert.equal(collected.stderr(), "err\n");
    assert.equal(collected.success, true);
  });

  test("a signal that ends the process is the exited event's signal", async () => {
    const handle = await sb.execStream("sleep", ["100"]);
    await handle.signal("SIGTERM");
    assert.deepEqual(await handle.wait(), { eventType: "exited", code: null, signal: 15 });
    const other = await sb.execStream("sleep", ["100"]);
    await other.signal("INT");
    assert.equal((await other.wait()).signal, 2);
    await assert.rejects(other.signal("SIGNOPE"), InvalidOptionError);
  });

  test("kill() ends the process and everything it started", async () => {
    const handle = await sb.shellStream("sleep 301 & setsid sleep 302 & sleep 303");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal((await guestProcesses("sleep 30")).length, 3);
    await handle.kill();
    assert.equal((await handle.wait()).signal, 9);
    assert.deepEqual(await guestProcesses("sleep 30"), []);
  });

  test("exited comes when the process exits, even if a background child keeps stdout open", async () => {
    const started = Date.now();
    const out = await sb.shell("sleep 60 & echo main-done");
    assert.equal(out.stdout(), "main-done\n");
    assert.equal(out.code, 0);
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
    await sb.shell("pkill -f 'sleep 60' || true");
  });

  test("50 concurrent execs each get their own output", async () => {
    const runs = Array.from({ length: 50 }, (_, i) =>
      sb.shell(`i=0; while [ $i -lt 200 ]; do echo "exec-${i} line $i"; i=$((i+1)); done; echo "exec-${i} err" >&2; exit ${i % 7}`),
    );
    const outputs = await Promise.all(runs);
    outputs.forEach((out, i) => {
      const expected = Array.from({ length: 200 }, (_, line) => `exec-${i} line ${line}\n`).join("");
      assert.equal(out.stdout(), expected, `exec ${i}`);
      assert.equal(out.stderr(), `exec-${i} err\n`);
      assert.equal(out.code, i % 7);
    });
  });
});

describe("stdin", () => {
  test("a string and a Buffer round-trip through cat", async () => {
    assert.equal((await sb.exec("cat", [], { stdin: "héllo\nworld" })).stdout(), "héllo\nworld");
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    assert.deepEqual((await sb.exec("cat", [], { stdin: bytes })).stdoutBytes(), bytes);
  });

  test('stdin: "pipe" takes writes until close, in order', async () => {
    const handle = await sb.execStream("cat", [], { stdin: "pipe" });
    assert.ok(handle.stdin);
    for (let i = 0; i < 5; i++) await handle.stdin.write(`line ${i}\n`);
    await handle.stdin.close();
    const out = await handle.collect();
    assert.equal(out.stdout(), "line 0\nline 1\nline 2\nline 3\nline 4\n");
  });

  test("16 MiB through stdin arrives complete (input flow control)", async () => {
    const data = Buffer.alloc(16 << 20);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
    const handle = await sb.execStream("sha256sum", [], { stdin: "pipe" });
    for (let off = 0; off < data.length; off += 1 << 20) await handle.stdin!.write(data.subarray(off, off + (1 << 20)));
    await handle.stdin!.close();
    const out = await handle.collect();
    assert.equal(out.stdout().split(" ")[0], createHash("sha256").update(data).digest("hex"));
  });

  test('"pipe" is for streams only', async () => {
    await assert.rejects(sb.exec("cat", [], { stdin: "pipe" }), (err: unknown) => {
      assert.ok(err instanceof InvalidOptionError);
      assert.equal(err.field, "stdin");
      return true;
    });
  });
});

describe("tty", () => {
  test("the process sees a terminal, and resize reaches stty", async () => {
    const isatty = await sb.exec("sh", ["-c", "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo tty"], { tty: true });
    assert.equal(isatty.stdout(), "tty\r\n");
    const sized = await sb.exec("stty", ["size"], { tty: { cols: 132, rows: 43 } });
    assert.equal(sized.stdout(), "43 132\r\n");

    const handle = await sb.execStream("sh", ["-c", "read line; stty size"], { tty: true, stdin: "pipe" });
    await handle.resize(100, 40);
    await handle.stdin!.write("go\n");
    const out = await handle.collect();
    assert.match(out.stdout(), /40 100\r\n$/);
  });
});

describe("timeouts and aborts", () => {
  test("a timeout kills the process tree and rejects with ExecTimeoutError", async () => {
    const started = Date.now();
    await assert.rejects(sb.shell("sleep 401 & setsid sleep 402 & sleep 403", { timeout: 800 }), ExecTimeoutError);
    assert.ok(Date.now() - started < 6000);
    assert.deepEqual(await guestProcesses("sleep 40"), []);
  });

  test("a stream's timeout rejects its recv()", async () => {
    const handle = await sb.shellStream("echo first; sleep 100", { timeout: 800 });
    assert.deepEqual(await handle.recv(), { eventType: "stdout", data: Buffer.from("first\n") });
    await assert.rejects(handle.recv(), ExecTimeoutError);
  });

  test("a process that finishes in time is not affected by its timeout", async () => {
    const out = await sb.shell("echo quick", { timeout: 30_000 });
    assert.equal(out.stdout(), "quick\n");
  });

  test("an AbortSignal kills the process and rejects with ExecAbortedError", async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error("caller gave up")), 500);
    await assert.rejects(sb.shell("sleep 501 & sleep 502", { signal: controller.signal }), (err: unknown) => {
      assert.ok(err instanceof ExecAbortedError);
      assert.equal((err.cause as Error).message, "caller gave up");
      return true;
    });
    assert.deepEqual(await guestProcesses("sleep 50"), []);
    await assert.rejects(sb.shell("echo never", { signal: AbortSignal.abort() }), ExecAbortedError);
  });

  test("an abortable exec keeps the same output cap and refuses stdin: pipe", async () => {
    const { signal } = new AbortController();
    await assert.rejects(sb.shell("head -c 3000000 /dev/zero", { signal, maxOutputBytes: 1 << 20 }), (err: unknown) => {
      assert.ok(err instanceof LimitExceededError, String(err));
      assert.equal(err.field, "maxOutputBytes");
      assert.equal(err.stdout?.length, 1 << 20);
      return true;
    });
    await assert.rejects(sb.exec("cat", [], { signal, stdin: "pipe" }), (err: unknown) => {
      assert.ok(err instanceof InvalidOptionError, String(err));
      assert.equal(err.field, "stdin");
      return true;
    });
    assert.equal((await sb.shell("echo ok", { signal })).stdout(), "ok\n");
  });
});

describe("users", () => {
  test("by name and by uid, with the user's home", async () => {
    const byName = await sb.shell('echo "$(id -u):$(id -g):$HOME:$USER"', { user: "nobody" });
    assert.equal(byName.stdout(), "65534:65534:/nonexistent:nobody\n");
    const byUid = await sb.exec("id", ["-u"], { user: 4321 });
    assert.equal(byUid.stdout(), "4321\n");
    await assert.rejects(sb.exec("id", [], { user: "ghost" }), UserNotFoundError);
  });

  test("the user's permissions apply", async () => {
    const denied = await sb.shell("echo x > /root/forbidden", { user: "nobody" });
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr(), /Permission denied/);
  });
});

describe("backpressure", () => {
  test("1 GiB of stdout to a slow reader: all bytes, in order, with bounded host memory", async () => {
    // 16 MiB of random data, emitted 64 times, each time behind its own header,
    // so any loss, duplication or reordering changes the checksum.
    const block = Buffer.from((await sb.shell("head -c 16777216 /dev/urandom > /dev/shm/block && cat /dev/shm/block", {})).stdoutBytes());
    assert.equal(block.length, 16 << 20);
    const expected = createHash("sha256");
    for (let i = 1; i <= 64; i++) expected.update(`block ${i}\n`).update(block);

    const handle = await sb.shellStream("for i in $(seq 64); do echo \"block $i\"; cat /dev/shm/block; done");
    const vmPid = sb.bootInfo.vmPid;
    const runtimePid = parentOf(vmPid);
    const actual = createHash("sha256");
    let received = 0;
    let paused = false;
    let rssBeforePause = 0;
    let rssGrowthDuringPause = 0;
    let runtimeRssDuringPause = 0;
    for await (const event of handle) {
      if (event.eventType === "stdout") {
        actual.update(event.data);
        received += event.data.length;
        if (!paused && received > 128 << 20) {
          // Stop reading for 2 s: the guest must stall, not the host buffer.
          paused = true;
          rssBeforePause = process.memoryUsage().rss;
          await new Promise((resolve) => setTimeout(resolve, 2000));
          rssGrowthDuringPause = process.memoryUsage().rss - rssBeforePause;
          runtimeRssDuringPause = rssKib(runtimePid);
        }
      } else if (event.eventType === "exited") {
        assert.equal(event.code, 0);
      }
    }
    assert.equal(received, 64 * ((16 << 20) + 0) + Array.from({ length: 64 }, (_, i) => `block ${i + 1}\n`.length).reduce((a, b) => a + b, 0));
    assert.equal(actual.digest("hex"), expected.digest("hex"));
    assert.ok(rssGrowthDuringPause < 32 << 20, `Node grew ${rssGrowthDuringPause} bytes while paused`);
    assert.ok(runtimeRssDuringPause < 64 * 1024, `runtime RSS ${runtimeRssDuringPause} KiB while paused`);
    await sb.shell("rm /dev/shm/block");
  });
});
