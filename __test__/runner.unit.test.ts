// Unit (no VM): the driver protocol's parser against hostile input, and the
// Node driver run on the host's node under the same Interpreter the sandboxes
// use, for what a VM would only make slow to check.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, describe, test } from "node:test";

import type { ExecEvent } from "../ts/exec";
import { Interpreter, InterpreterLost, type DriverProcess, type RunSink } from "../ts/runner/interpreter";
import { NODE_DRIVER, NODE_LAUNCH } from "../ts/runner/node-driver";
import { DriverProtocolViolation, FrameReader, MAX_FRAME_BYTES } from "../ts/runner/protocol";

const line = (frame: unknown) => Buffer.from(JSON.stringify(frame) + "\n");

describe("FrameReader", () => {
  test("joins a frame split across chunks and splits frames sharing one", () => {
    const reader = new FrameReader();
    const bytes = Buffer.concat([
      line({ t: "out", id: 1, s: 1, d: Buffer.from("hé").toString("base64") }),
      line({ t: "done", id: 1, exception: null }),
    ]);
    const frames = [...reader.push(bytes.subarray(0, 7)), ...reader.push(bytes.subarray(7, 30)), ...reader.push(bytes.subarray(30))];
    assert.deepEqual(frames, [
      { t: "out", id: 1, stream: "stdout", data: Buffer.from("hé") },
      { t: "done", id: 1, exception: null },
    ]);
  });

  const hostile: [string, unknown][] = [
    ["an unknown kind", { t: "exec", id: 1 }],
    ["a negative id", { t: "done", id: -1, exception: null }],
    ["a fractional id", { t: "done", id: 1.5, exception: null }],
    ["a stream other than 1 or 2", { t: "out", id: 1, s: 3, d: "" }],
    ["data that is not base64", { t: "out", id: 1, s: 1, d: "a*b=" }],
    ["an output chunk over 1 MiB", { t: "out", id: 1, s: 1, d: "A".repeat(1_400_000) }],
    ["a result kind", { t: "result", id: 1, kind: "other", mime: "text/plain", data: "" }],
    ["a MIME type that is a path", { t: "result", id: 1, kind: "value", mime: "../../etc/passwd", data: "" }],
    ["result data that is not a string", { t: "result", id: 1, kind: "value", mime: "text/plain", data: 5 }],
    ["an exception that is a string", { t: "done", id: 1, exception: "boom" }],
    ["an exception name of 2 KiB", { t: "done", id: 1, exception: { name: "E".repeat(2048), message: "", traceback: "" } }],
    ["a ready frame without a pid", { t: "ready", language: "python", version: "3" }],
    ["an array", [1, 2]],
  ];
  for (const [what, frame] of hostile) {
    test(`refuses ${what}`, () => {
      assert.throws(() => new FrameReader().push(line(frame)), DriverProtocolViolation);
    });
  }

  test("refuses a line that is not JSON", () => {
    assert.throws(() => new FrameReader().push(Buffer.from("garbage\n")), DriverProtocolViolation);
  });

  test("holds no more than MAX_FRAME_BYTES of an unfinished line", () => {
    const reader = new FrameReader();
    const chunk = Buffer.alloc(1024 * 1024, 0x41);
    assert.throws(() => {
      for (let sent = 0; sent <= MAX_FRAME_BYTES; sent += chunk.length) reader.push(chunk);
    }, DriverProtocolViolation);
  });
});

/** The Node driver as a host process in its own process group (for SIGINT). */
function hostDriver(): DriverProcess {
  const child = spawn("/bin/sh", ["-c", NODE_LAUNCH, "sh", NODE_DRIVER], { stdio: ["pipe", "pipe", "pipe"], detached: true });
  const queue: ExecEvent[] = [];
  const waiters: ((event: ExecEvent | null) => void)[] = [];
  let ended = false;
  const push = (event: ExecEvent) => {
    const waiter = waiters.shift();
    if (waiter) waiter(event);
    else queue.push(event);
  };
  child.stdout.on("data", (data: Buffer) => push({ eventType: "stdout", data }));
  child.stderr.on("data", (data: Buffer) => push({ eventType: "stderr", data }));
  child.on("close", (code) => {
    push({ eventType: "exited", code });
    ended = true;
  });
  const group = (signal: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      // Already gone.
    }
  };
  return {
    write: (data) => new Promise((resolve, reject) => child.stdin.write(data, (err) => (err ? reject(err) : resolve()))),
    recv: async () => queue.shift() ?? (ended ? null : new Promise((resolve) => waiters.push(resolve))),
    interrupt: async () => group("SIGINT"),
    kill: async () => group("SIGKILL"),
    close: async () => void child.stdin.end(),
  };
}

function collector(): RunSink & { stdout: () => string; results: string[] } {
  const out: Buffer[] = [];
  const results: string[] = [];
  return {
    output: (stream, data) => {
      if (stream === "stdout") out.push(data);
    },
    result: (r) => results.push(`${r.kind} ${r.mime} ${r.data}`),
    stdout: () => Buffer.concat(out).toString(),
    results,
  };
}

describe("the Node driver on the host", () => {
  const started: Interpreter[] = [];
  const start = async () => {
    const interpreter = await Interpreter.start(hostDriver(), 20_000);
    started.push(interpreter);
    return interpreter;
  };
  after(async () => {
    for (const interpreter of started) await interpreter.kill("test over");
  });

  test("output a timer writes after its run ended belongs to no run", async () => {
    const node = await start();
    const first = collector();
    assert.equal(await node.run("setTimeout(() => console.log('late'), 20); 1", first), null);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const second = collector();
    assert.equal(await node.run("console.log('mine')", second), null);
    assert.equal(second.stdout(), "mine\n");
    assert.deepEqual(first.results, ["value text/plain 1"]);
  });

  test("the driver's own names do not leak into the user's scope", async () => {
    const node = await start();
    const sink = collector();
    await node.run("typeof send + ' ' + typeof channel + ' ' + typeof shared", sink);
    assert.deepEqual(sink.results, ["value text/plain 'undefined undefined undefined'"]);
  });

  test("an exit during a run loses the interpreter with its exit code", async () => {
    const node = await start();
    await assert.rejects(node.run("process.exit(3)", collector()), (err) => {
      assert.ok(err instanceof InterpreterLost);
      assert.match(err.message, /exited with code 3/);
      return true;
    });
    assert.ok(node.lost);
  });

  test("a frame for a run not yet asked for is a violation", async () => {
    const node = await start();
    const forged = JSON.stringify({ t: "done", id: 99, exception: null });
    await assert.rejects(node.run(`require('fs').writeSync(3, ${JSON.stringify(forged + "\n")})`, collector()), (err) => {
      assert.ok(err instanceof InterpreterLost);
      assert.match(err.message, /broke the protocol \(a frame for a run not yet asked for\)/);
      return true;
    });
  });

  test("an interrupt breaks a busy loop and a late one is dropped", async () => {
    const node = await start();
    await node.run("var kept = 7", collector());
    const busy = node.run("while (true) {}", collector());
    setTimeout(() => void node.interrupt(), 200);
    const exception = await busy;
    assert.match(exception?.message ?? "", /interrupted/);
    // A SIGINT between runs (the host's interrupt arriving late) must not kill the driver.
    process.kill(-(await pidOf(node)), "SIGINT");
    await new Promise((resolve) => setTimeout(resolve, 200));
    const sink = collector();
    assert.equal(await node.run("kept", sink), null);
    assert.deepEqual(sink.results, ["value text/plain 7"]);
  });
});

/** The driver's process group id: the shell that exec'd node kept its pid. */
async function pidOf(node: Interpreter): Promise<number> {
  const sink = collector();
  await node.run("process.pid", sink);
  return Number(sink.results[0].split(" ").pop());
}
