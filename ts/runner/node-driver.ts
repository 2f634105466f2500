// The Node driver: the program the host starts in the guest with `node -e` to
// keep one JavaScript context alive across runs. Its protocol is in
// ./protocol.ts. Kept as a string (String.raw: no escapes are processed, so
// the source holds no backtick and no dollar sign before a brace); the unit
// tests run it on the host.

/**
 * The shell command that starts the Node driver, its source given as `$1`.
 * The shell makes two FIFOs that become the interpreter's fd 1 and 2, keeps
 * the reply channel (the exec's stdout) as fd 3 and the requests (the exec's
 * stdin) as fd 4, and gives the user's code /dev/null as stdin.
 */
export const NODE_LAUNCH =
  'd=$(mktemp -d) && mkfifo "$d/1" "$d/2" && ' +
  'exec node -e "$1" "$d" 3>&1 4<&0 0</dev/null 1<>"$d/1" 2<>"$d/2"';

/** Source of the Node driver (Node 18 or later, no packages). */
export const NODE_DRIVER = String.raw`
// One function scope: the user's scripts share the global scope with this
// one (runInThisContext), so nothing of the driver's may be declared there.
(function driver() {
"use strict";
const fs = require("node:fs");
const net = require("node:net");
const util = require("node:util");
const vm = require("node:vm");
const { Writable } = require("node:stream");
const { Worker } = require("node:worker_threads");
const { createRequire } = require("node:module");

const CHUNK = 256 * 1024;
const MAX_TEXT = 1024 * 1024;
const REQUESTS = 4;

// The reply channel, fd 3, as both threads use it. Stringified for the pump
// thread, so it closes over nothing but its arguments.
function channel(fs, shared, readers, CHUNK) {
  // shared[0]: the reply lock, held to write a frame and by a reader from
  // reading a chunk to sending it; shared[1]: the current run's id.
  const buffer = Buffer.alloc(CHUNK);
  function locked(f) {
    while (Atomics.compareExchange(shared, 0, 0, 1) !== 0) Atomics.wait(shared, 0, 1, 50);
    try {
      return f();
    } finally {
      Atomics.store(shared, 0, 0);
      Atomics.notify(shared, 0, 1);
    }
  }
  // With the lock held.
  function write(frame) {
    const line = Buffer.from(JSON.stringify(frame) + "\n");
    for (let off = 0; off < line.length; ) off += fs.writeSync(3, line, off);
  }
  // With the lock held: sends what FIFO i holds, at most limit bytes. An
  // empty FIFO answers with EAGAIN, an exception, cheap without a stack.
  function forward(i, limit) {
    const traceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    let total = 0;
    try {
      while (total < limit) {
        let n;
        try {
          n = fs.readSync(readers[i], buffer, 0, Math.min(CHUNK, limit - total), null);
        } catch (error) {
          if (error.code === "EAGAIN") break;
          throw error;
        }
        if (n === 0) break;
        total += n;
        write({ t: "out", id: Atomics.load(shared, 1), s: i + 1, d: buffer.toString("base64", 0, n) });
      }
    } finally {
      Error.stackTraceLimit = traceLimit;
    }
    return total;
  }
  return { locked, write, forward };
}

// The pump thread forwards what reaches fd 1 and 2 by other ways than
// process.stdout (a child process, fs.writeSync(1)): it polls the FIFOs, at
// once while output flows, backing off to every 100 ms when idle. At the end
// of a run the main thread drains them itself (finish()).
function pumpMain(channel) {
  const fs = require("node:fs");
  const { workerData } = require("node:worker_threads");
  const { readers, CHUNK } = workerData;
  const ch = channel(fs, new Int32Array(workerData.shared), readers, CHUNK);
  const nap = new Int32Array(new SharedArrayBuffer(4));
  let idle = 1;
  for (;;) {
    if (ch.locked(() => ch.forward(0, CHUNK) + ch.forward(1, CHUNK)) > 0) {
      idle = 1;
    } else {
      Atomics.wait(nap, 0, 0, idle);
      idle = Math.min(idle * 2, 100);
    }
  }
}

const shared = new Int32Array(new SharedArrayBuffer(8));
const dir = process.argv[1];
const readers = [1, 2].map((n) => fs.openSync(dir + "/" + n, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK));
fs.rmSync(dir, { recursive: true, force: true });
const ch = channel(fs, shared, readers, CHUNK);
const pump = new Worker("(" + pumpMain.toString() + ")(" + channel.toString() + ")", {
  eval: true,
  workerData: { shared: shared.buffer, readers, CHUNK },
});
pump.unref();

function send(frame) {
  ch.locked(() => ch.write(frame));
}
function sendOutput(stream, data) {
  for (let off = 0; off < data.length; off += CHUNK) {
    const d = data.subarray(off, off + CHUNK).toString("base64");
    send({ t: "out", id: Atomics.load(shared, 1), s: stream, d });
  }
}

// Sends the rest of what reached the FIFOs, then the frames given. With the lock held
// the pump holds nothing it has read and not sent: the FIFOs hold the rest.
// The bound keeps a writer that never stops from holding the run open.
function finish(frames) {
  ch.locked(() => {
    for (let i = 0; i < 2; i++) ch.forward(i, 4 * 1024 * 1024);
    for (const frame of frames) ch.write(frame);
  });
}

// What the user's code writes through process.stdout, process.stderr and
// console is sent at once, in order, by the thread that wrote it.
function stream(n) {
  return new Writable({
    write(chunk, encoding, callback) {
      sendOutput(n, Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk, encoding));
      callback();
    },
  });
}
const stdout = stream(1);
const stderr = stream(2);
for (const [name, s] of [["stdout", stdout], ["stderr", stderr]]) {
  try {
    Object.defineProperty(process, name, { configurable: true, enumerable: true, get: () => s });
  } catch {}
}
globalThis.console = new console.Console({ stdout, stderr });
globalThis.require = createRequire(process.cwd() + "/");

let current = null;

process.on("SIGINT", () => {
  // Synchronous code is broken off by vm's breakOnSigint; this ends a run
  // that waits on a promise. A late interrupt outside a run is dropped.
  if (current && current.waiting) current.interrupt();
});

function text(value) {
  const s = typeof value === "string" ? value : util.inspect(value);
  return s.length > MAX_TEXT ? s.slice(0, MAX_TEXT) : s;
}

function describe(error) {
  if (error instanceof Error || (error && typeof error === "object" && "stack" in error)) {
    // The driver's frames and node's internals below the cell are not the user's.
    const driver = /^\s+at .*(\[eval\]|\[worker eval\]|node:vm|node:events|node:internal\/process)/;
    const lines = String(error.stack || "").split("\n").filter((l) => !driver.test(l));
    return {
      name: text(error.name || "Error"),
      message: text(error.message || ""),
      traceback: text(lines.join("\n")),
    };
  }
  return { name: "Uncaught", message: text(error), traceback: "Uncaught " + text(error) };
}

function compile(code, filename) {
  // As the REPL: a lone object literal is an expression, not a block.
  if (/^\s*\{/.test(code) && /\}\s*$/.test(code)) {
    try {
      return new vm.Script("(" + code + "\n)", { filename });
    } catch {}
  }
  return new vm.Script(code, { filename });
}

async function run(id, code, interruptible) {
  Atomics.store(shared, 1, id);
  const filename = "<cell " + id + ">";
  let exception = null;
  let value;
  try {
    const script = compile(code, filename);
    // breakOnSigint starts and joins node's SIGINT watchdog thread around the call: a few ms
    // under emulation, spent only when the host may interrupt (a timeout or a signal).
    value = script.runInThisContext({ breakOnSigint: interruptible, displayErrors: false });
    if (value !== null && (typeof value === "object" || typeof value === "function") && typeof value.then === "function") {
      value = await new Promise((resolve, reject) => {
        current = {
          waiting: true,
          interrupt: () => reject(Object.assign(new Error("the run was interrupted while it waited on a promise"), { name: "Interrupted" })),
        };
        value.then(resolve, reject);
      });
    }
  } catch (error) {
    exception = describe(error);
  } finally {
    current = null;
  }
  const results = [];
  if (exception === null && value !== undefined) {
    try {
      results.push({ kind: "value", mime: "text/plain", data: text(util.inspect(value)) });
    } catch (error) {
      exception = describe(error);
    }
  }
  finish([...results.map((r) => ({ t: "result", id, ...r })), { t: "done", id, exception }]);
}

let queue = Promise.resolve();
let buffered = "";
const requests = new net.Socket({ fd: REQUESTS, readable: true, writable: false });
requests.setEncoding("utf8");
requests.on("data", (chunk) => {
  buffered += chunk;
  for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
    const request = JSON.parse(buffered.slice(0, nl));
    buffered = buffered.slice(nl + 1);
    queue = queue.then(() => run(request.id, request.code, request.interruptible !== false));
  }
});
requests.on("end", () => process.exit(0));

// What the process wrote before the first run (a warning of node's own) is
// drained, and dropped by the host, before the first run can claim it.
finish([{ t: "ready", language: "node", version: process.versions.node, pid: process.pid }]);
})();
`;
