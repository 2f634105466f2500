// The result of one run of a PythonSandbox or NodeSandbox.
import type { ExecutionException, ExecutionResult } from "./protocol";

/**
 * How a run ended: "ok" (no exception), "error" (the snippet raised, or did
 * not compile), "timeout" (its `timeout` passed and it was interrupted),
 * "aborted" (its `signal` fired and it was interrupted, or fired before it
 * started).
 */
export type ExecutionStatus = "ok" | "error" | "timeout" | "aborted";

/** What one `run` did: its output, its rich results and how it ended. */
export class Execution {
  /** How the run ended. */
  readonly status: ExecutionStatus;
  /**
   * What the snippet raised, as the interpreter reported it: set for "error",
   * and for "timeout"/"aborted" when the interrupt surfaced as an exception
   * (Python's KeyboardInterrupt, Node's "Script execution interrupted").
   */
  readonly exception: ExecutionException | null;
  /** The value of the trailing expression and what the snippet displayed (figures), in order. */
  readonly results: readonly ExecutionResult[];
  /**
   * True when the interpreter did not stop within the grace period after an
   * interrupt and was killed: its state is gone, and the next run starts a
   * fresh interpreter.
   */
  readonly interpreterKilled: boolean;
  /** Milliseconds from the run being sent to the interpreter to its end (queueing not counted). */
  readonly durationMs: number;
  readonly #stdout: Buffer;
  readonly #stderr: Buffer;

  /** An execution from its parts; the SDK makes these, a test may too. */
  constructor(parts: {
    status: ExecutionStatus;
    exception: ExecutionException | null;
    results: ExecutionResult[];
    stdout: Buffer;
    stderr: Buffer;
    interpreterKilled: boolean;
    durationMs: number;
  }) {
    this.status = parts.status;
    this.exception = parts.exception;
    this.results = Object.freeze([...parts.results]);
    this.#stdout = parts.stdout;
    this.#stderr = parts.stderr;
    this.interpreterKilled = parts.interpreterKilled;
    this.durationMs = parts.durationMs;
  }

  /** What the run wrote to stdout, decoded as `encoding` (default UTF-8). `await` on it is harmless. */
  output(encoding: BufferEncoding = "utf8"): string {
    return this.#stdout.toString(encoding);
  }

  /** What the run wrote to stderr, decoded as `encoding` (default UTF-8). The exception is not in it: see {@link Execution.exception}. */
  error(encoding: BufferEncoding = "utf8"): string {
    return this.#stderr.toString(encoding);
  }

  /** Stdout as bytes (not a copy). */
  outputBytes(): Buffer {
    return this.#stdout;
  }

  /** Stderr as bytes (not a copy). */
  errorBytes(): Buffer {
    return this.#stderr;
  }

  /** True unless the run ended "ok" with nothing on stderr (as the upstream SDK counts it). */
  hasError(): boolean {
    return this.status !== "ok" || this.#stderr.length > 0;
  }

  /** The `text/plain` form of the trailing expression's value (Python's `repr`, Node's `util.inspect`), if it had one. */
  get value(): string | undefined {
    return this.results.find((r) => r.kind === "value" && r.mime === "text/plain")?.data;
  }
}
