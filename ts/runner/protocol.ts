// The driver protocol: what the host and a language driver in the guest say to
// each other over the driver's exec (docs/design.md, "Running code").
//
// Requests, host to driver, on the driver's stdin: JSON lines
//   {"id": N, "code": "..."}                 run `code` as run N (ids count up from 1)
//   {"id": N, "code": "...", "interruptible": false}   the same; no interrupt will come (no
//                                                       timeout or signal), so a driver may skip
//                                                       what breaking off a run costs
// Closing stdin ends the driver. Interrupts are not requests: the host sends
// SIGINT to the driver's process group while a run is in flight.
//
// Replies, driver to host, on the driver's stdout: JSON lines
//   {"t":"ready","language":L,"version":V,"pid":P}        once, first
//   {"t":"out","id":N,"s":1|2,"d":BASE64}                 bytes run N wrote to fd 1 or 2
//   {"t":"result","id":N,"kind":"value"|"display","mime":M,"data":S}
//   {"t":"done","id":N,"exception":null|{"name","message","traceback"}}
// `data` is text for text/* and JSON types, base64 for images. The user's code
// runs in the driver's process and can write anything to the reply channel, so
// every line is checked here as hostile input: its size, its kind, every
// field's type and size, before anything is kept.

/** How a snippet raised, as the interpreter reported it. */
export interface ExecutionException {
  /** The exception's class: `"ZeroDivisionError"`, `"ReferenceError"`, `"KeyboardInterrupt"`, ... */
  name: string;
  /** Its message (Python's `str(e)`, JavaScript's `error.message`). */
  message: string;
  /** The traceback as the language prints it, the driver's own frames left out. */
  traceback: string;
}

/** A rich result of a run: the value of its last expression, or something it displayed. */
export interface ExecutionResult {
  /** "value": the snippet's trailing expression; "display": a figure shown or `display(x)`. */
  kind: "value" | "display";
  /** MIME type: `text/plain`, `text/html`, `image/png`, `image/svg+xml`, `application/json`, ... */
  mime: string;
  /** The data: text for text and JSON types, base64 for binary ones (`image/png`, `image/jpeg`). */
  data: string;
}

/** A reply of a driver, validated. */
export type DriverFrame =
  | { t: "ready"; language: string; version: string; pid: number }
  | { t: "out"; id: number; stream: "stdout" | "stderr"; data: Buffer }
  | ({ t: "result"; id: number } & ExecutionResult)
  | { t: "done"; id: number; exception: ExecutionException | null };

/** Longest reply line: a 16 MiB image in base64 and its frame. */
export const MAX_FRAME_BYTES = 24 * 1024 * 1024;
/** Most bytes of output in one `out` frame (the drivers send at most 256 KiB). */
export const MAX_OUTPUT_CHUNK = 1024 * 1024;
/** Longest exception field, in UTF-16 units (the drivers cut them at 1 MiB). */
const MAX_TEXT = 2 * 1024 * 1024;
/** Longest `data` of a result, in UTF-16 units. */
const MAX_DATA = 23 * 1024 * 1024;

/** A driver sent something the protocol does not allow. */
export class DriverProtocolViolation extends Error {}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const MIME = /^[a-z]+\/[a-z0-9.+-]{1,100}$/;

function fail(what: string): never {
  throw new DriverProtocolViolation(what);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function runId(value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) fail("a frame's id is not a run number");
  return value;
}

function shortText(value: unknown, field: string, max = MAX_TEXT): string {
  if (typeof value !== "string") fail(`${field} is not a string`);
  if (value.length > max) fail(`${field} is longer than ${max}`);
  return value;
}

function exception(value: unknown): ExecutionException | null {
  if (value === null) return null;
  if (!isObject(value)) fail("a done frame's exception is neither null nor an object");
  return {
    name: shortText(value.name, "exception.name", 1024),
    message: shortText(value.message, "exception.message"),
    traceback: shortText(value.traceback, "exception.traceback"),
  };
}

/** Checks one parsed reply line and returns it typed. */
export function parseFrame(value: unknown): DriverFrame {
  if (!isObject(value)) fail("a frame is not a JSON object");
  switch (value.t) {
    case "ready": {
      const pid = value.pid;
      if (typeof pid !== "number" || !Number.isSafeInteger(pid) || pid < 1) fail("the ready frame's pid is not a pid");
      return {
        t: "ready",
        language: shortText(value.language, "language", 64),
        version: shortText(value.version, "version", 64),
        pid,
      };
    }
    case "out": {
      const id = runId(value.id);
      if (value.s !== 1 && value.s !== 2) fail("an out frame's stream is neither 1 nor 2");
      const d = shortText(value.d, "out.d", Math.ceil(MAX_OUTPUT_CHUNK / 3) * 4);
      if (d.length % 4 !== 0 || !BASE64.test(d)) fail("an out frame's data is not base64");
      return { t: "out", id, stream: value.s === 1 ? "stdout" : "stderr", data: Buffer.from(d, "base64") };
    }
    case "result": {
      const id = runId(value.id);
      if (value.kind !== "value" && value.kind !== "display") fail("a result's kind is neither value nor display");
      const mime = shortText(value.mime, "result.mime", 128);
      if (!MIME.test(mime)) fail("a result's mime is not a MIME type");
      return { t: "result", id, kind: value.kind, mime, data: shortText(value.data, "result.data", MAX_DATA) };
    }
    case "done":
      return { t: "done", id: runId(value.id), exception: exception(value.exception) };
    default:
      fail("a frame's kind is unknown");
  }
}

/**
 * Splits the driver's stdout into lines and parses each, holding at most
 * {@link MAX_FRAME_BYTES} of an unfinished line.
 */
export class FrameReader {
  #pending: Buffer[] = [];
  #pendingBytes = 0;

  /** The complete frames `chunk` finishes, in order. @throws {DriverProtocolViolation} */
  push(chunk: Buffer): DriverFrame[] {
    const frames: DriverFrame[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
      this.#take(chunk.subarray(start, nl));
      const line = this.#pending.length === 1 ? this.#pending[0] : Buffer.concat(this.#pending);
      this.#pending = [];
      this.#pendingBytes = 0;
      start = nl + 1;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line.toString("utf8"));
      } catch {
        fail("a line is not JSON");
      }
      frames.push(parseFrame(parsed));
    }
    if (start < chunk.length) this.#take(chunk.subarray(start));
    return frames;
  }

  #take(part: Buffer): void {
    this.#pendingBytes += part.length;
    if (this.#pendingBytes > MAX_FRAME_BYTES) fail(`a line is longer than ${MAX_FRAME_BYTES} bytes`);
    // A copy: the chunk's memory belongs to the exec stream.
    this.#pending.push(Buffer.from(part));
  }
}
