// The Node driver: the program the host starts in the guest with `node -e` to
// keep one JavaScript context alive across runs. Its protocol is in
// ./protocol.ts. Kept as a string (String.raw: no escapes are processed, so
// the source holds no backtick and no dollar sign before a brace); the unit
// tests run it on the host.

/**
 * The shell command that starts the Node driver, its source given as `$1`.
 * The interpreter's fd 1 and 2 are two files opened for appending (a writer
 * never blocks on them, whatever the driver is doing), the reply channel (the
 * exec's stdout) is fd 3 and the requests (the exec's stdin) fd 4; the user's
 * code gets /dev/null as stdin.
 */
export const NODE_LAUNCH =
  'd=$(mktemp -d) && exec node -e "$1" "$d" 3>&1 4<&0 0</dev/null 1>>"$d/1" 2>>"$d/2"';

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
const { createRequire } = require("node:module");

const CHUNK = 256 * 1024;
const MAX_TEXT = 1024 * 1024;
const REQUESTS = 4;
// Bytes the output files may hold before a run's end empties them.
const ROTATE = 8 * 1024 * 1024;
// How often a run that awaits a promise forwards what reached fd 1 and 2 (a
// synchronous run's output is forwarded when it ends).
const POLL_MS = 20;

// What reaches fd 1 and 2 by other ways than process.stdout (a child process,
// fs.writeSync(1)) lands in two files that only grow; the driver reads each
// from where it stopped. A file never blocks its writers, so a synchronous
// child writing any amount cannot deadlock against a busy driver, and at a
// run's end everything written before it is in the files: read to their end,
// then "done", attributes it exactly. No second thread: under emulation a
// Worker's mere presence cost about 6 ms a run.
const dir = process.argv[1];
const files = [1, 2].map((n) => fs.openSync(dir + "/" + n, "r+"));
fs.rmSync(dir, { recursive: true, force: true });
const offsets = [0, 0];
const buffer = Buffer.alloc(CHUNK);
let currentId = 0;

function write(frame) {
  const line = Buffer.from(JSON.stringify(frame) + "\n");
  for (let off = 0; off < line.length; ) off += fs.writeSync(3, line, off);
}
function send(frame) {
  write(frame);
}
function sendOutput(stream, data) {
  for (let off = 0; off < data.length; off += CHUNK) {
    send({ t: "out", id: currentId, s: stream, d: data.subarray(off, off + CHUNK).toString("base64") });
  }
}
// Sends what file i gained since the last call, at most limit bytes.
function forward(i, limit) {
  let total = 0;
  while (total < limit) {
    const n = fs.readSync(files[i], buffer, 0, Math.min(CHUNK, limit - total), offsets[i]);
    if (n === 0) break;
    offsets[i] += n;
    total += n;
    send({ t: "out", id: currentId, s: i + 1, d: buffer.toString("base64", 0, n) });
  }
  return total;
}

// Sends what reached the files before this call, then the frames given: up to
// each file's size now, so a writer that never stops cannot hold the run open.
// A file read to its end and grown large is emptied (what a background process
// writes in the instant between the size check and the truncation is lost).
function finish(frames) {
  for (let i = 0; i < 2; i++) {
    const size = fs.fstatSync(files[i]).size;
    forward(i, size - offsets[i]);
    if (offsets[i] > ROTATE && offsets[i] === size) {
      fs.ftruncateSync(files[i], 0);
      offsets[i] = 0;
    }
  }
  for (const frame of frames) write(frame);
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
  currentId = id;
  let poll;
  const filename = "<cell " + id + ">";
  let exception = null;
  let value;
  try {
    const script = compile(code, filename);
    // breakOnSigint starts and joins node's SIGINT watchdog thread around the call: a few ms
    // under emulation, spent only when the host may interrupt (a timeout or a signal).
    value = script.runInThisContext({ breakOnSigint: interruptible, displayErrors: false });
    if (value !== null && (typeof value === "object" || typeof value === "function") && typeof value.then === "function") {
      // While the run awaits, the event loop is free to forward output as it comes.
      poll = setInterval(() => {
        forward(0, CHUNK);
        forward(1, CHUNK);
      }, POLL_MS);
      poll.unref();
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
    clearInterval(poll);
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
