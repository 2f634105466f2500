// Processes in a sandbox: collected output, and the streaming handle.
import * as os from "node:os";

import { check, ExecAbortedError, InvalidOptionError, LimitExceededError, unwrap } from "./errors";

/** Default cap of `exec()`/`shell()` on collected output, as in the engine. */
export const DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024;
import type { Native } from "./native";
import type { ExecOptions } from "./options";

/** How a finished process ended and what it wrote. */
export class ExecOutput {
  /** Exit code, or null when a signal ended the process. */
  readonly code: number | null;
  /** Signal number that ended the process, or null. */
  readonly signal: number | null;
  /**
   * Milliseconds the guest measured from starting the process to reaping it;
   * null for output collected from a stream ({@link ExecHandle.collect}).
   */
  readonly durationMs: number | null;
  readonly #stdout: Buffer;
  readonly #stderr: Buffer;

  /** An output from its parts; the SDK makes these, a test may too. */
  constructor(code: number | null, signal: number | null, stdout: Buffer, stderr: Buffer, durationMs: number | null) {
    this.code = code;
    this.signal = signal;
    this.#stdout = stdout;
    this.#stderr = stderr;
    this.durationMs = durationMs;
  }

  /**
   * Converts the addon's output.
   *
   * @internal
   */
  static fromNative(raw: Native.NativeExecOutput): ExecOutput {
    return new ExecOutput(raw.code ?? null, raw.signal ?? null, raw.stdout, raw.stderr, raw.guestMicros / 1000);
  }

  /** True when the process exited with code 0. */
  get success(): boolean {
    return this.code === 0;
  }

  /** Stdout decoded as `encoding` (default UTF-8). */
  stdout(encoding: BufferEncoding = "utf8"): string {
    return this.#stdout.toString(encoding);
  }

  /** Stderr decoded as `encoding` (default UTF-8); empty under a `tty`, which sends it to stdout. */
  stderr(encoding: BufferEncoding = "utf8"): string {
    return this.#stderr.toString(encoding);
  }

  /** Stdout as bytes (not a copy). */
  stdoutBytes(): Buffer {
    return this.#stdout;
  }

  /** Stderr as bytes (not a copy). */
  stderrBytes(): Buffer {
    return this.#stderr;
  }
}

/**
 * An event of a streamed process: output chunks in the order written, then
 * one `exited` once the process has exited and its output is drained.
 */
export type ExecEvent =
  | {
      /** A chunk the process wrote to stdout. */
      eventType: "stdout";
      /** The bytes, as written (a UTF-8 character may be split across chunks). */
      data: Buffer;
    }
  | {
      /** A chunk the process wrote to stderr (never under a `tty`). */
      eventType: "stderr";
      /** The bytes, as written (a UTF-8 character may be split across chunks). */
      data: Buffer;
    }
  | {
      /** The process exited: always the last event. */
      eventType: "exited";
      /** Exit code, or null when a signal ended the process. */
      code: number | null;
      /** Signal number that ended the process, when one did. */
      signal?: number;
    };

/** The last event of a streamed process: how it ended. */
export type ExitEvent = Extract<
  ExecEvent,
  {
    /** The `exited` member of {@link ExecEvent}. */
    eventType: "exited";
  }
>;

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

  /**
   * Wraps the addon's handle.
   *
   * @internal
   */
  constructor(handle: Native.NativeExecHandle) {
    this.#native = handle;
  }

  /**
   * Sends `data` (a string as UTF-8); resolves once the guest has room for it:
   * awaiting it is backpressure.
   *
   * @throws {ExecFailedError} Stdin is closed: the process has exited or its input was ended
   *   (`errno` is EPIPE).
   */
  async write(data: string | Uint8Array): Promise<void> {
    check(await this.#native.writeStdin(typeof data === "string" ? Buffer.from(data) : Buffer.from(data)));
  }

  /**
   * Ends the input: the process reads end-of-file after what was written.
   *
   * @throws {ExecFailedError} The process has exited (`errno` is EPIPE).
   */
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
  #stdinTaken = false;

  /**
   * Wraps the addon's handle; `Sandbox.execStream()` makes these.
   *
   * @internal
   */
  constructor(handle: Native.NativeExecHandle, options: ExecOptions) {
    this.#native = handle;
    this.pid = handle.pid;
    this.stdin = options.stdin === "pipe" ? new ExecStdin(handle) : null;
    this.#abort = options.signal;
    this.#onAbort = () => handle.kill();
    this.#abort?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /**
   * The stdin writer, once: the process's {@link ExecHandle.stdin} when it was
   * started with `stdin: "pipe"`, else null; every later call returns null.
   */
  async takeStdin(): Promise<ExecStdin | null> {
    if (this.#stdinTaken) return null;
    this.#stdinTaken = true;
    return this.stdin;
  }

  /**
   * The next event, or null once `exited` has been returned.
   *
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   * @throws {ExecFailedError} The guest reported a failure of the process.
   * @throws {ExecTimeoutError} `timeout` passed; the process and everything it started were killed.
   * @throws {ExecAbortedError} `signal` fired; the process and everything it started were killed.
   */
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

  /**
   * `for await (const event of handle)`: the events of {@link ExecHandle.recv} up to `exited`.
   *
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   * @throws {ExecFailedError} The guest reported a failure of the process.
   * @throws {ExecTimeoutError} `timeout` passed; the process and everything it started were killed.
   * @throws {ExecAbortedError} `signal` fired; the process and everything it started were killed.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<ExecEvent> {
    for (let event = await this.recv(); event !== null; event = await this.recv()) {
      yield event;
    }
  }

  /**
   * Waits for the process to exit, discarding its remaining output.
   *
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   * @throws {ExecFailedError} The guest reported a failure of the process.
   * @throws {ExecTimeoutError} `timeout` passed; the process and everything it started were killed.
   * @throws {ExecAbortedError} `signal` fired; the process and everything it started were killed.
   */
  async wait(): Promise<ExitEvent> {
    while ((await this.recv()) !== null);
    return this.#exit!;
  }

  /**
   * Reads the remaining output and the exit. Uncapped unless `maxOutputBytes`
   * is given (as `exec()` with a `signal` does): beyond it the process and
   * everything it started are killed and this rejects with LimitExceededError
   * carrying the output so far.
   *
   * @throws {LimitExceededError} The output outgrew `maxOutputBytes`.   *
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   * @throws {ExecFailedError} The guest reported a failure of the process.
   * @throws {ExecTimeoutError} `timeout` passed; the process and everything it started were killed.
   * @throws {ExecAbortedError} `signal` fired; the process and everything it started were killed.
   */
  async collect(options: { maxOutputBytes?: number } = {}): Promise<ExecOutput> {
    const limit = options.maxOutputBytes ?? Infinity;
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let kept = 0;
    for await (const event of this) {
      if (event.eventType === "exited") continue;
      const room = limit - kept;
      const target = event.eventType === "stdout" ? stdout : stderr;
      if (event.data.length > room) {
        target.push(event.data.subarray(0, room));
        await this.kill();
        throw new LimitExceededError(
          `maxOutputBytes: the process wrote more than ${limit} bytes of output and was killed with everything it started`,
          { field: "maxOutputBytes", stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr) },
        );
      }
      target.push(event.data);
      kept += event.data.length;
    }
    const exit = this.#exit!;
    return new ExecOutput(exit.code, exit.signal ?? null, Buffer.concat(stdout), Buffer.concat(stderr), null);
  }

  /**
   * Sends a signal ("SIGTERM", "INT", 15, ...) to the process's group.
   *
   * @throws {InvalidOptionError} `signal` is not a signal name or a number from 1 to 64.
   */
  async signal(signal: string | number): Promise<void> {
    check(this.#native.signal(signalNumber(signal)));
  }

  /** Kills the process and everything it started (its cgroup); never rejects. */
  async kill(): Promise<void> {
    this.#native.kill();
  }

  /**
   * Sets the terminal size, in columns and rows, of a process started with `tty`.
   *
   * @throws {InvalidOptionError} The size is not two positive integers, or the process has no TTY.
   */
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
