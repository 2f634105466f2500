// Processes in a sandbox: collected output, and the streaming handle.
import * as os from "node:os";

import { check, ExecAbortedError, InvalidOptionError, unwrap } from "./errors";
import type { Native } from "./native";
import type { ExecOptions } from "./options";

/** How a finished process ended and what it wrote. */
export class ExecOutput {
  /** Exit code, or null when a signal ended the process. */
  readonly code: number | null;
  /** Signal number that ended the process, or null. */
  readonly signal: number | null;
  /** Milliseconds the guest measured from starting the process to reaping it. */
  readonly durationMs: number | null;
  readonly #stdout: Buffer;
  readonly #stderr: Buffer;

  constructor(code: number | null, signal: number | null, stdout: Buffer, stderr: Buffer, durationMs: number | null) {
    this.code = code;
    this.signal = signal;
    this.#stdout = stdout;
    this.#stderr = stderr;
    this.durationMs = durationMs;
  }

  static fromNative(raw: Native.NativeExecOutput): ExecOutput {
    return new ExecOutput(raw.code ?? null, raw.signal ?? null, raw.stdout, raw.stderr, raw.guestMicros / 1000);
  }

  /** True when the process exited with code 0. */
  get success(): boolean {
    return this.code === 0;
  }

  stdout(encoding: BufferEncoding = "utf8"): string {
    return this.#stdout.toString(encoding);
  }

  stderr(encoding: BufferEncoding = "utf8"): string {
    return this.#stderr.toString(encoding);
  }

  stdoutBytes(): Buffer {
    return this.#stdout;
  }

  stderrBytes(): Buffer {
    return this.#stderr;
  }
}

export type ExecEvent =
  | { eventType: "stdout"; data: Buffer }
  | { eventType: "stderr"; data: Buffer }
  | { eventType: "exited"; code: number | null; signal?: number };

export type ExitEvent = Extract<ExecEvent, { eventType: "exited" }>;

/** Converts SDK exec options to the addon's. `stdin: "pipe"` only where allowed. */
export function toNativeExecOptions(options: ExecOptions, allowPipe: boolean): Native.NativeExecOptions {
  const { stdin, tty } = options;
  if (stdin === "pipe" && !allowPipe) {
    throw new InvalidOptionError('stdin: "pipe" needs execStream() or shellStream()', "stdin");
  }
  return {
    cwd: options.cwd,
    env: options.env,
    user: options.user,
    timeoutMs: options.timeout,
    stdinData: stdin === undefined || stdin === "pipe" ? undefined : Buffer.from(stdin),
    stdinPipe: stdin === "pipe",
    tty: tty === true ? { cols: 80, rows: 24 } : tty === false ? undefined : tty,
    maxOutputBytes: options.maxOutputBytes,
  };
}

/** Signal number for a name ("SIGTERM", "TERM") or number. Guest and host are both Linux. */
export function signalNumber(signal: string | number): number {
  if (typeof signal === "number" && Number.isInteger(signal)) return signal;
  if (typeof signal === "string") {
    const name = (signal.startsWith("SIG") ? signal : `SIG${signal}`).toUpperCase();
    const number = (os.constants.signals as Record<string, number>)[name];
    if (number !== undefined) return number;
  }
  throw new InvalidOptionError(`signal: ${String(signal)} is not a signal name or number`, "signal");
}

/** The writable stdin of a process started with `stdin: "pipe"`. */
export class ExecStdin {
  readonly #native: Native.NativeExecHandle;

  constructor(handle: Native.NativeExecHandle) {
    this.#native = handle;
  }

  /** Resolves once the guest has room for the data: awaiting it is backpressure. */
  async write(data: string | Uint8Array): Promise<void> {
    check(await this.#native.writeStdin(typeof data === "string" ? Buffer.from(data) : Buffer.from(data)));
  }

  /** Ends the input: the process reads end-of-file after what was written. */
  async close(): Promise<void> {
    check(await this.#native.closeStdin());
  }
}

/**
 * A running process. Iterate it (`for await (const event of handle)`) or call
 * `recv()` for stdout/stderr chunks in order and a final `exited` event.
 * Output the consumer has not taken holds the process back (at most 1 MiB is
 * buffered on the host), so nothing is lost and memory stays bounded.
 */
export class ExecHandle implements AsyncIterable<ExecEvent> {
  /** Process id inside the guest. */
  readonly pid: number;
  /** Present when started with `stdin: "pipe"`. */
  readonly stdin: ExecStdin | null;
  readonly #native: Native.NativeExecHandle;
  readonly #abort: AbortSignal | undefined;
  readonly #onAbort: () => void;
  #exit: ExitEvent | null = null;

  constructor(handle: Native.NativeExecHandle, options: ExecOptions) {
    this.#native = handle;
    this.pid = handle.pid;
    this.stdin = options.stdin === "pipe" ? new ExecStdin(handle) : null;
    this.#abort = options.signal;
    this.#onAbort = () => handle.kill();
    this.#abort?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** The next event, or null once `exited` has been returned. */
  async recv(): Promise<ExecEvent | null> {
    if (this.#exit) return null;
    let event: Native.NativeExecEvent | null;
    try {
      event = unwrap(await this.#native.recv()) ?? null;
    } catch (err) {
      this.#release();
      throw err;
    }
    if (event === null || event.eventType === "exited") {
      this.#release();
      if (this.#abort?.aborted) {
        throw new ExecAbortedError("the process was killed: its AbortSignal fired", { cause: this.#abort.reason });
      }
      if (event === null) return null;
      this.#exit = { eventType: "exited", code: event.code ?? null, ...(event.signal != null ? { signal: event.signal } : {}) };
      return this.#exit;
    }
    return { eventType: event.eventType as "stdout" | "stderr", data: event.data! };
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ExecEvent> {
    for (let event = await this.recv(); event !== null; event = await this.recv()) {
      yield event;
    }
  }

  /** Waits for the process to exit, discarding its remaining output. */
  async wait(): Promise<ExitEvent> {
    while ((await this.recv()) !== null);
    return this.#exit!;
  }

  /** Reads the remaining output and the exit. */
  async collect(): Promise<ExecOutput> {
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    for await (const event of this) {
      if (event.eventType === "stdout") stdout.push(event.data);
      else if (event.eventType === "stderr") stderr.push(event.data);
    }
    const exit = this.#exit!;
    return new ExecOutput(exit.code, exit.signal ?? null, Buffer.concat(stdout), Buffer.concat(stderr), null);
  }

  /** Sends a signal ("SIGTERM", "INT", 15, ...) to the process's group. */
  async signal(signal: string | number): Promise<void> {
    check(this.#native.signal(signalNumber(signal)));
  }

  /** Kills the process and everything it started. */
  async kill(): Promise<void> {
    this.#native.kill();
  }

  /** Sets the terminal size of a process started with `tty`. */
  async resize(cols: number, rows: number): Promise<void> {
    if (!Number.isInteger(cols) || !Number.isInteger(rows) || cols < 1 || rows < 1) {
      throw new InvalidOptionError(`tty: ${cols}x${rows} is not a terminal size`, "tty");
    }
    check(this.#native.resize(cols, rows));
  }

  #release(): void {
    this.#abort?.removeEventListener("abort", this.#onAbort);
  }
}
