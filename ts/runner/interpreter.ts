// One language driver process and the runs it serves, one at a time. The
// driver's output is read by one loop for the driver's whole life (so that the
// guest is never held back by an unread stream), checked frame by frame, and
// handed to the run in flight; the caller (ts/runner/sandboxes.ts) queues runs,
// times them, caps them and decides when to interrupt or kill.
import type { ExecEvent, ExecHandle } from "../exec";
import { DriverProtocolViolation, FrameReader, type DriverFrame, type ExecutionException, type ExecutionResult } from "./protocol";

/**
 * The process a driver runs in: an exec in the guest, or a host child process
 * in the unit tests.
 *
 * @internal
 */
export interface DriverProcess {
  /** Writes request bytes to the driver's stdin; resolves once taken. */
  write(data: Buffer): Promise<void>;
  /** The next output or exit event; null after the exit. */
  recv(): Promise<ExecEvent | null>;
  /** Sends SIGINT to the driver's process group. */
  interrupt(): Promise<void>;
  /** Kills the driver and everything it started. */
  kill(): Promise<void>;
  /** Ends the driver's stdin: an idle driver exits. */
  close(): Promise<void>;
}

/** A {@link DriverProcess} over a streamed exec started with `stdin: "pipe"`. @internal */
export function execDriverProcess(handle: ExecHandle): DriverProcess {
  const stdin = handle.stdin;
  if (!stdin) throw new Error("the driver's exec has no stdin pipe");
  return {
    write: (data) => stdin.write(data),
    recv: () => handle.recv(),
    interrupt: () => handle.signal("SIGINT"),
    kill: () => handle.kill(),
    close: () => stdin.close(),
  };
}

/** Why an interpreter is gone. @internal */
export class InterpreterLost extends Error {
  /** The error the exec stream rejected with (SandboxNotRunningError, ...), when that ended it. */
  readonly streamError: unknown;

  constructor(message: string, streamError?: unknown) {
    super(message);
    this.streamError = streamError;
  }
}

/** Where a run's output and results go. @internal */
export interface RunSink {
  /** Bytes the run wrote to fd 1 or 2. */
  output(stream: "stdout" | "stderr", data: Buffer): void;
  /** A rich result. */
  result(result: ExecutionResult): void;
}

interface InFlight {
  id: number;
  sink: RunSink;
  resolve(exception: ExecutionException | null): void;
  reject(error: InterpreterLost): void;
}

/** Most bytes of the driver's own stderr kept for error messages. */
const STDERR_TAIL = 4096;

/** A started driver. @internal */
export class Interpreter {
  /** "python" or "node", as the driver said. */
  readonly language: string;
  /** The interpreter's version, as the driver said. */
  readonly version: string;
  readonly #process: DriverProcess;
  readonly #reader: FrameReader;
  #stderrTail: Buffer;
  #lost: InterpreterLost | null = null;
  #inFlight: InFlight | null = null;
  #lastId = 0;

  private constructor(process: DriverProcess, reader: FrameReader, ready: { language: string; version: string }, stderrTail: Buffer) {
    this.#process = process;
    this.#reader = reader;
    this.language = ready.language;
    this.version = ready.version;
    this.#stderrTail = stderrTail;
    void this.#readLoop();
  }

  /**
   * Waits for the driver's ready frame, for at most `timeoutMs`; kills the
   * driver when it does not come.
   *
   * @throws {InterpreterLost} The driver exited, broke the protocol or was not ready in time.
   */
  static async start(process: DriverProcess, timeoutMs: number): Promise<Interpreter> {
    const reader = new FrameReader();
    let stderrTail: Buffer = Buffer.alloc(0);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new InterpreterLost(`the driver was not ready within ${timeoutMs} ms`)), timeoutMs);
    });
    const ready = (async () => {
      for (;;) {
        let event: ExecEvent | null;
        try {
          event = await process.recv();
        } catch (err) {
          throw new InterpreterLost("the driver's exec failed while it started", err);
        }
        if (event === null || event.eventType === "exited") {
          const how = event?.eventType === "exited" ? exitText(event.code, event.signal) : "ended";
          throw new InterpreterLost(`the interpreter ${how} before it was ready${tailText(stderrTail)}`);
        }
        if (event.eventType === "stderr") {
          stderrTail = keepTail(stderrTail, event.data);
          continue;
        }
        let frames: DriverFrame[];
        try {
          frames = reader.push(event.data);
        } catch (err) {
          throw new InterpreterLost(`the driver broke the protocol while it started: ${(err as Error).message}`);
        }
        for (const [i, frame] of frames.entries()) {
          // What the process wrote before it was ready belongs to no run (id 0).
          if (frame.t === "out" && frame.id === 0) continue;
          if (frame.t !== "ready" || i !== frames.length - 1) {
            throw new InterpreterLost("the driver sent something other than output and its ready frame first");
          }
          return frame;
        }
      }
    })();
    try {
      const first = await Promise.race([ready, deadline]);
      return new Interpreter(process, reader, first, stderrTail);
    } catch (err) {
      await process.kill().catch(() => {});
      throw err;
    } finally {
      clearTimeout(timer);
      ready.catch(() => {});
    }
  }

  /** Null while the driver lives; why it is gone afterwards. */
  get lost(): InterpreterLost | null {
    return this.#lost;
  }

  /**
   * Runs `code` as the next run; resolves with its exception (null when it
   * raised none) once the driver reports it done. Without `interruptible`
   * the caller promises no interrupt for a timeout or a signal.
   *
   * @throws {InterpreterLost} The driver died or broke the protocol during the run.
   */
  async run(code: string, sink: RunSink, interruptible = true): Promise<ExecutionException | null> {
    if (this.#lost) throw this.#lost;
    if (this.#inFlight) throw new Error("a run is already in flight");
    const id = ++this.#lastId;
    const done = new Promise<ExecutionException | null>((resolve, reject) => {
      this.#inFlight = { id, sink, resolve, reject };
    });
    try {
      // `interruptible: false` lets a driver skip what only an interrupt needs (Node's SIGINT
      // watchdog thread, started and joined around every run that can be broken off).
      await this.#process.write(Buffer.from(JSON.stringify({ id, code, ...(!interruptible && { interruptible }) }) + "\n"));
    } catch (err) {
      this.#lose(new InterpreterLost("the driver's stdin was closed", err));
    }
    return done;
  }

  /** Interrupts the run in flight (SIGINT); nothing when none is. */
  async interrupt(): Promise<void> {
    if (this.#inFlight && !this.#lost) await this.#process.interrupt().catch(() => {});
  }

  /** Kills the driver; the run in flight rejects with `reason`. */
  async kill(reason: string): Promise<void> {
    this.#lose(new InterpreterLost(reason));
    await this.#process.kill().catch(() => {});
  }

  /** Ends an idle driver by closing its stdin, then kills what is left. */
  async close(): Promise<void> {
    this.#lose(new InterpreterLost("the interpreter was closed"));
    await this.#process.close().catch(() => {});
    await this.#process.kill().catch(() => {});
  }

  async #readLoop(): Promise<void> {
    while (!this.#lost) {
      let event: ExecEvent | null;
      try {
        event = await this.#process.recv();
      } catch (err) {
        this.#lose(new InterpreterLost("the driver's exec failed", err));
        return;
      }
      if (event === null || event.eventType === "exited") {
        const how = event?.eventType === "exited" ? exitText(event.code, event.signal) : "ended";
        this.#lose(new InterpreterLost(`the interpreter ${how}${tailText(this.#stderrTail)}`));
        return;
      }
      if (event.eventType === "stderr") {
        this.#stderrTail = keepTail(this.#stderrTail, event.data);
        continue;
      }
      try {
        for (const frame of this.#reader.push(event.data)) this.#dispatch(frame);
      } catch (err) {
        const what = err instanceof DriverProtocolViolation ? err.message : String(err);
        await this.kill(`the driver broke the protocol (${what}) and was killed`);
        return;
      }
    }
  }

  #dispatch(frame: DriverFrame): void {
    if (frame.t === "ready") throw new DriverProtocolViolation("a second ready frame");
    if (frame.id > this.#lastId) throw new DriverProtocolViolation("a frame for a run not yet asked for");
    const run = this.#inFlight;
    // Frames of an earlier run (output of a background thread after its end) belong to no run.
    if (!run || frame.id !== run.id) return;
    switch (frame.t) {
      case "out":
        run.sink.output(frame.stream, frame.data);
        break;
      case "result":
        run.sink.result({ kind: frame.kind, mime: frame.mime, data: frame.data });
        break;
      case "done":
        this.#inFlight = null;
        run.resolve(frame.exception);
        break;
    }
  }

  #lose(lost: InterpreterLost): void {
    if (this.#lost) return;
    this.#lost = lost;
    const run = this.#inFlight;
    this.#inFlight = null;
    run?.reject(lost);
  }
}

function keepTail(tail: Buffer, data: Buffer): Buffer {
  const joined = Buffer.concat([tail, data]);
  return joined.length > STDERR_TAIL ? joined.subarray(joined.length - STDERR_TAIL) : joined;
}

function tailText(tail: Buffer): string {
  const text = tail.toString("utf8").trim();
  return text ? `: ${text}` : "";
}

function exitText(code: number | null, signal: number | undefined): string {
  return signal != null ? `was ended by signal ${signal}` : `exited with code ${code}`;
}
