// PythonSandbox and NodeSandbox: a Sandbox with one long-lived interpreter,
// driven over a private channel (./protocol.ts), and `run(code)` on it. Runs
// are queued in order; each is timed, capped and interruptible here, on the
// host, whatever the guest does.
import { StringDecoder } from "node:string_decoder";

import {
  InterpreterFailedError,
  InvalidOptionError,
  LimitExceededError,
  MicrosandboxError,
  SandboxNotRunningError,
} from "../errors";
import { DEFAULT_MAX_OUTPUT_BYTES, type ExecHandle } from "../exec";
import { SandboxBuilder } from "../builder";
import { createSession, type CreateSession } from "../progress";
import type { SandboxOptions } from "../options";
import type { PrewarmOptions, WarmPool } from "../pool";
import { Sandbox, type StartOptions } from "../sandbox";
import { Execution } from "./execution";
import { execDriverProcess, Interpreter, InterpreterLost } from "./interpreter";
import { NODE_DRIVER, NODE_LAUNCH } from "./node-driver";
import type { ExecutionException, ExecutionResult } from "./protocol";
import { PYTHON_DRIVER } from "./python-driver";

/**
 * Options of {@link PythonSandbox.create} and {@link NodeSandbox.create}: those
 * of {@link Sandbox.create}, with `image` optional.
 */
export type CodeSandboxOptions = Omit<SandboxOptions, "image"> & {
  /**
   * As {@link SandboxOptions.image}. Default: `python:3.11-slim` for
   * PythonSandbox, `node:20-slim` for NodeSandbox (from the default registry, pulled
   * on first use). Any root with `python3` (3.8 or later) or `node` (18 or
   * later) and `/bin/sh`, `mktemp` will do.
   */
  image?: string;
};

/**
 * Options of {@link PythonSandbox.prewarm} and {@link NodeSandbox.prewarm}:
 * those of {@link Sandbox.prewarm}, with `image` optional (the default as for
 * create).
 */
export type CodeSandboxPrewarmOptions = Omit<PrewarmOptions, "image"> & {
  /** As {@link CodeSandboxOptions.image}. */
  image?: string;
};

/** Options of {@link CodeSandbox.run}. */
export interface RunOptions {
  /**
   * Milliseconds from the run's start (time queued behind other runs not
   * counted); when they pass the run is interrupted (SIGINT: Python's
   * KeyboardInterrupt, Node's breakOnSigint) and resolves with status
   * "timeout". The interpreter and its state live on, unless the snippet
   * ignores the interrupt for 5 s: then it is killed
   * ({@link Execution.interpreterKilled}).
   */
  timeout?: number;
  /** Interrupts the run as `timeout` does; it resolves with status "aborted". */
  signal?: AbortSignal;
  /** Called with the run's stdout as it arrives, decoded as UTF-8 (a character is never split). */
  onStdout?: (text: string) => void;
  /** Called with the run's stderr as it arrives, decoded as UTF-8. */
  onStderr?: (text: string) => void;
  /**
   * Most bytes of stdout, stderr and result data kept for the run (default
   * 64 MiB); beyond it the run is interrupted and rejects with
   * LimitExceededError.
   */
  maxOutputBytes?: number;
}

/** How one language's driver is started in a sandbox. */
interface Language {
  name: "python" | "node";
  defaultImage: string;
  launch(sandbox: Sandbox): Promise<ExecHandle>;
}

const PYTHON: Language = {
  name: "python",
  defaultImage: "python:3.11-slim",
  launch: (sandbox) => sandbox.execStream("python3", ["-c", PYTHON_DRIVER], { stdin: "pipe" }),
};

const NODE: Language = {
  name: "node",
  defaultImage: "node:20-slim",
  launch: (sandbox) => sandbox.execStream("/bin/sh", ["-c", NODE_LAUNCH, "sh", NODE_DRIVER], { stdin: "pipe" }),
};

/** How long a driver may take to start (an interpreter's cold start under emulation takes seconds). */
const READY_TIMEOUT_MS = 60_000;
/** How long an interrupted run may take to stop before its interpreter is killed. */
const INTERRUPT_GRACE_MS = 5_000;
/**
 * What a result costs against `maxOutputBytes` besides its data: enough that
 * a guest sending empty results cannot make the host keep millions of objects.
 */
const RESULT_OVERHEAD = 1024;

const runOptionKinds: Record<keyof RunOptions, string> = {
  timeout: "number",
  signal: "object",
  onStdout: "function",
  onStderr: "function",
  maxOutputBytes: "number",
};

function checkRunOptions(options: unknown): asserts options is RunOptions {
  if (typeof options !== "object" || options === null) {
    throw new InvalidOptionError("options: must be an object", "options");
  }
  for (const [key, value] of Object.entries(options)) {
    const kind = runOptionKinds[key as keyof RunOptions];
    if (kind === undefined) {
      throw new InvalidOptionError(`${key}: unknown option (known: ${Object.keys(runOptionKinds).join(", ")})`, key);
    }
    if (value !== undefined && typeof value !== kind) throw new InvalidOptionError(`${key}: must be a ${kind}`, key);
  }
  const { timeout, maxOutputBytes, signal } = options as RunOptions;
  if (timeout !== undefined && !(Number.isFinite(timeout) && timeout > 0)) {
    throw new InvalidOptionError("timeout: must be a positive number of milliseconds", "timeout");
  }
  if (maxOutputBytes !== undefined && !(Number.isSafeInteger(maxOutputBytes) && maxOutputBytes >= 0)) {
    throw new InvalidOptionError("maxOutputBytes: must be a non-negative integer", "maxOutputBytes");
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidOptionError("signal: must be an AbortSignal", "signal");
  }
}

/**
 * A sandbox with one long-lived interpreter: {@link PythonSandbox} or
 * {@link NodeSandbox}. Every {@link Sandbox} method works on it as well.
 */
export class CodeSandbox extends Sandbox {
  readonly #language: Language;
  #interpreter: Interpreter | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #stopped = false;

  /**
   * Adopts a booted sandbox; the subclasses' statics make these.
   *
   * @internal
   */
  protected constructor(base: Sandbox, language: Language) {
    super(base);
    this.#language = language;
  }

  /**
   * Starts the interpreter of a sandbox just adopted; stops the sandbox when
   * that fails and it was created for this.
   *
   * @internal
   */
  protected static async ready<T extends CodeSandbox>(sandbox: T, stopOnFailure: boolean): Promise<T> {
    try {
      await sandbox.#interpreterReady();
    } catch (err) {
      if (stopOnFailure) await sandbox.stopAndWait().catch(() => {});
      throw err;
    }
    return sandbox;
  }

  /**
   * Runs `code` in the interpreter, after the runs asked for before it, and
   * resolves with what it printed, its results and how it ended. A snippet
   * that raises, does not compile, times out or is aborted resolves (see
   * {@link Execution.status}); the interpreter's state (variables, imports,
   * functions) carries over to the next run.
   *
   * @throws {InvalidOptionError} `code` is not a string, or an option is invalid.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {LimitExceededError} The run's output and results outgrew `maxOutputBytes`; it was
   *   interrupted, and `stdout`/`stderr` hold the output so far.
   * @throws {InterpreterFailedError} The interpreter died or broke the driver protocol; the next
   *   run starts a fresh one.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   */
  async run(code: string, options: RunOptions = {}): Promise<Execution> {
    if (typeof code !== "string") throw new InvalidOptionError("code: must be a string", "code");
    checkRunOptions(options);
    const turn = this.#queue.then(() => this.#runNow(code, options));
    this.#queue = turn.catch(() => {});
    return turn;
  }

  /**
   * Replaces the interpreter with a fresh one, once the runs asked for before
   * have ended: every variable, import and definition is gone.
   *
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {InterpreterFailedError} The new interpreter did not start.
   */
  async restart(): Promise<void> {
    const turn = this.#queue.then(async () => {
      const old = this.#interpreter;
      this.#interpreter = undefined;
      await old?.close();
      await this.#interpreterReady();
    });
    this.#queue = turn.catch(() => {});
    return turn;
  }

  /** Asks the guest to shut down and returns without waiting; runs in flight or queued reject with SandboxNotRunningError. */
  override async stop(): Promise<void> {
    this.#stopped = true;
    await super.stop();
  }

  /**
   * {@link Sandbox.stopAndWait}; runs in flight or queued reject with SandboxNotRunningError.
   *
   * @throws {InternalError} Waiting for the runtime process failed.
   */
  override async stopAndWait(): ReturnType<Sandbox["stopAndWait"]> {
    this.#stopped = true;
    return super.stopAndWait();
  }

  /**
   * {@link Sandbox.kill}; runs in flight or queued reject with SandboxNotRunningError.
   *
   * @throws {InternalError} Waiting for the runtime process failed.
   */
  override async kill(): Promise<void> {
    this.#stopped = true;
    await super.kill();
  }

  #notRunning(): SandboxNotRunningError {
    return new SandboxNotRunningError(`the sandbox ${JSON.stringify(this.name)} is not running`);
  }

  async #interpreterReady(): Promise<Interpreter> {
    if (this.#interpreter && !this.#interpreter.lost) return this.#interpreter;
    if (this.#stopped || !this.running) throw this.#notRunning();
    this.#interpreter = undefined;
    const handle = await this.#language.launch(this);
    try {
      this.#interpreter = await Interpreter.start(execDriverProcess(handle), READY_TIMEOUT_MS);
    } catch (err) {
      throw this.#failure(err, "could not be started");
    }
    return this.#interpreter;
  }

  /** The error a lost interpreter becomes: the sandbox's own when it is gone, else InterpreterFailedError. */
  #failure(err: unknown, what: string): Error {
    // The exec's own error says best why the sandbox is gone (GuestProtocolError, ...).
    if (err instanceof InterpreterLost && err.streamError instanceof MicrosandboxError) return err.streamError;
    if (this.#stopped || !this.running) return this.#notRunning();
    if (err instanceof InterpreterLost) {
      return new InterpreterFailedError(`the ${this.#language.name} interpreter ${what}: ${err.message}`, { cause: err });
    }
    return err as Error;
  }

  async #runNow(code: string, options: RunOptions): Promise<Execution> {
    const { timeout, signal, onStdout, onStderr } = options;
    const maxOutputBytes = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
    if (this.#stopped || !this.running) throw this.#notRunning();
    if (signal?.aborted) {
      const empty = Buffer.alloc(0);
      return new Execution({
        status: "aborted",
        exception: null,
        results: [],
        stdout: empty,
        stderr: empty,
        interpreterKilled: false,
        durationMs: 0,
      });
    }
    const interpreter = await this.#interpreterReady();

    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    const results: ExecutionResult[] = [];
    const decoders = { stdout: new StringDecoder("utf8"), stderr: new StringDecoder("utf8") };
    const callbacks = { stdout: onStdout, stderr: onStderr };
    const deliver = (stream: "stdout" | "stderr", text: string) => {
      try {
        if (text) callbacks[stream]?.(text);
      } catch {
        // The caller's callback failing must not lose the run.
      }
    };
    let kept = 0;
    let reason: "timeout" | "aborted" | "limit" | undefined;
    let killed = false;
    let graceTimer: NodeJS.Timeout | undefined;
    const interrupt = (why: "timeout" | "aborted" | "limit") => {
      if (reason) return;
      reason = why;
      void interpreter.interrupt();
      graceTimer = setTimeout(() => {
        killed = true;
        void interpreter.kill(`the interpreter did not stop within ${INTERRUPT_GRACE_MS} ms of an interrupt and was killed`);
      }, INTERRUPT_GRACE_MS);
    };
    const sink = {
      output(stream: "stdout" | "stderr", data: Buffer) {
        if (reason === "limit") return;
        const room = maxOutputBytes - kept;
        const part = data.length > room ? data.subarray(0, room) : data;
        kept += part.length;
        (stream === "stdout" ? stdout : stderr).push(part);
        if (callbacks[stream]) deliver(stream, decoders[stream].write(part));
        if (part !== data) interrupt("limit");
      },
      result(result: ExecutionResult) {
        if (reason === "limit") return;
        const cost = result.data.length + RESULT_OVERHEAD;
        if (cost > maxOutputBytes - kept) return interrupt("limit");
        kept += cost;
        results.push(result);
      },
    };
    const timer = timeout !== undefined ? setTimeout(() => interrupt("timeout"), timeout) : undefined;
    const onAbort = () => interrupt("aborted");
    signal?.addEventListener("abort", onAbort, { once: true });
    const started = performance.now();
    let exception: ExecutionException | null = null;
    try {
      // Only a timeout or a signal asks for an interrupt a snippet cannot ignore by spinning;
      // one over maxOutputBytes that never yields ends with the interpreter's kill.
      exception = await interpreter.run(code, sink, timeout !== undefined || signal !== undefined);
    } catch (err) {
      // Killed after our own interrupt went unheeded: the run ends as the interrupt said.
      if (!(killed && err instanceof InterpreterLost && this.running && !this.#stopped)) {
        throw this.#failure(err, "failed during the run; the next run starts a fresh one");
      }
    } finally {
      clearTimeout(timer);
      clearTimeout(graceTimer);
      signal?.removeEventListener("abort", onAbort);
    }
    const durationMs = performance.now() - started;
    deliver("stdout", decoders.stdout.end());
    deliver("stderr", decoders.stderr.end());
    if (reason === "limit") {
      throw new LimitExceededError(
        `maxOutputBytes: the run wrote more than ${maxOutputBytes} bytes of output and results and was interrupted` +
          (killed ? "; its interpreter did not stop and was killed, and the next run starts a fresh one" : ""),
        { field: "maxOutputBytes", stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr) },
      );
    }
    return new Execution({
      status: reason ?? (exception ? "error" : "ok"),
      exception,
      results,
      stdout: Buffer.concat(stdout),
      stderr: Buffer.concat(stderr),
      interpreterKilled: killed,
      durationMs,
    });
  }
}

/**
 * A sandbox with a Python interpreter that keeps its state across runs:
 *
 * ```ts
 * const sb = await PythonSandbox.create({ name: "test" });
 * await sb.run("name = 'Python'");
 * const exec = await sb.run("print(f'Hello {name}!')");
 * exec.output(); // "Hello Python!\n"
 * ```
 *
 * A trailing expression's `repr` is a `text/plain` result; matplotlib figures
 * (shown, or open at the end of a run) are `image/png` results; `display(x)`
 * shows `x` through its `_repr_html_`, `_repr_png_`, ... methods.
 */
export class PythonSandbox extends CodeSandbox {
  private constructor(base: Sandbox) {
    super(base, PYTHON);
  }

  /**
   * Boots a sandbox as {@link Sandbox.create} does (its errors apply) and
   * starts its Python interpreter; resolves once the interpreter is ready.
   *
   * @throws {CommandNotFoundError} The image has no `python3`; the sandbox was stopped.
   * @throws {InterpreterFailedError} The interpreter did not start; the sandbox was stopped.
   */
  static override async create(options: CodeSandboxOptions = {}): Promise<PythonSandbox> {
    const full = withImage(options, PYTHON);
    const pooled = await CodeSandbox.fromPool<PythonSandbox>(PYTHON.name, full);
    if (pooled !== undefined) return pooled;
    return CodeSandbox.ready(new PythonSandbox(await Sandbox.create(full)), true);
  }

  /**
   * {@link Sandbox.prewarm} for Python: each pooled sandbox has its
   * interpreter started, so that a {@link PythonSandbox.create} with equal
   * options takes one ready to run code.
   *
   * @throws The errors of {@link Sandbox.prewarm} and of {@link PythonSandbox.create}.
   */
  static override async prewarm(options: CodeSandboxPrewarmOptions): Promise<WarmPool> {
    return CodeSandbox.prewarmAs(PYTHON.name, withImage(options, PYTHON), (base) =>
      CodeSandbox.ready(new PythonSandbox(base), true),
    );
  }

  /** {@link PythonSandbox.create}, reporting the image pull as {@link Sandbox.createWithProgress} does. */
  static override createWithProgress(options: CodeSandboxOptions = {}): CreateSession<PythonSandbox> {
    return withProgress(options, PYTHON, (o) => PythonSandbox.create(o));
  }

  /** {@link PythonSandbox.createWithProgress} with `detached: true`. */
  static override createDetachedWithProgress(options: CodeSandboxOptions = {}): CreateSession<PythonSandbox> {
    return PythonSandbox.createWithProgress({ ...options, detached: true });
  }

  /** The options of {@link PythonSandbox.create} as a chain, as {@link Sandbox.builder}. */
  static override builder(name: string): SandboxBuilder<PythonSandbox> {
    return new SandboxBuilder(name, (o) => PythonSandbox.create(o));
  }

  /**
   * A handle to the running sandbox `name`, as {@link Sandbox.get}, with a
   * Python interpreter of its own (other handles' state is not shared).
   *
   * @throws {SandboxNotFoundError} No sandbox has this name.
   * @throws {SandboxNotRunningError} The sandbox stopped or crashed.
   * @throws {InterpreterFailedError} The interpreter did not start.
   */
  static override async get(name: string): Promise<PythonSandbox> {
    return CodeSandbox.ready(new PythonSandbox(await Sandbox.get(name)), false);
  }

  /**
   * Boots a stopped sandbox again, as {@link Sandbox.start}, and starts its
   * Python interpreter.
   *
   * @throws {InterpreterFailedError} The interpreter did not start; the sandbox was stopped.
   */
  static override async start(name: string, options: StartOptions = {}): Promise<PythonSandbox> {
    return CodeSandbox.ready(new PythonSandbox(await Sandbox.start(name, options)), true);
  }
}

/**
 * A sandbox with a Node.js context that keeps its state across runs:
 *
 * ```ts
 * const sb = await NodeSandbox.create({ name: "test" });
 * await sb.run("var name = 'JavaScript'");
 * const exec = await sb.run("console.log(`Hello ${name}!`)");
 * exec.output(); // "Hello JavaScript!\n"
 * ```
 *
 * Each run is a script in one context (`vm.runInThisContext`): top-level
 * `var`, `let`, `const` and functions persist; `require` is available. A
 * trailing expression's `util.inspect` is a `text/plain` result; a promise
 * as the trailing value is awaited.
 */
export class NodeSandbox extends CodeSandbox {
  private constructor(base: Sandbox) {
    super(base, NODE);
  }

  /**
   * Boots a sandbox as {@link Sandbox.create} does (its errors apply) and
   * starts its Node interpreter; resolves once the interpreter is ready.
   *
   * @throws {InterpreterFailedError} The image has no `node` (or no `/bin/sh`, `mktemp`), or
   *   the interpreter did not start; the sandbox was stopped.
   */
  static override async create(options: CodeSandboxOptions = {}): Promise<NodeSandbox> {
    const full = withImage(options, NODE);
    const pooled = await CodeSandbox.fromPool<NodeSandbox>(NODE.name, full);
    if (pooled !== undefined) return pooled;
    return CodeSandbox.ready(new NodeSandbox(await Sandbox.create(full)), true);
  }

  /**
   * {@link Sandbox.prewarm} for Node: each pooled sandbox has its interpreter
   * started, so that a {@link NodeSandbox.create} with equal options takes one
   * ready to run code.
   *
   * @throws The errors of {@link Sandbox.prewarm} and of {@link NodeSandbox.create}.
   */
  static override async prewarm(options: CodeSandboxPrewarmOptions): Promise<WarmPool> {
    return CodeSandbox.prewarmAs(NODE.name, withImage(options, NODE), (base) =>
      CodeSandbox.ready(new NodeSandbox(base), true),
    );
  }

  /** {@link NodeSandbox.create}, reporting the image pull as {@link Sandbox.createWithProgress} does. */
  static override createWithProgress(options: CodeSandboxOptions = {}): CreateSession<NodeSandbox> {
    return withProgress(options, NODE, (o) => NodeSandbox.create(o));
  }

  /** {@link NodeSandbox.createWithProgress} with `detached: true`. */
  static override createDetachedWithProgress(options: CodeSandboxOptions = {}): CreateSession<NodeSandbox> {
    return NodeSandbox.createWithProgress({ ...options, detached: true });
  }

  /** The options of {@link NodeSandbox.create} as a chain, as {@link Sandbox.builder}. */
  static override builder(name: string): SandboxBuilder<NodeSandbox> {
    return new SandboxBuilder(name, (o) => NodeSandbox.create(o));
  }

  /**
   * A handle to the running sandbox `name`, as {@link Sandbox.get}, with a
   * Node interpreter of its own (other handles' state is not shared).
   *
   * @throws {SandboxNotFoundError} No sandbox has this name.
   * @throws {SandboxNotRunningError} The sandbox stopped or crashed.
   * @throws {InterpreterFailedError} The interpreter did not start.
   */
  static override async get(name: string): Promise<NodeSandbox> {
    return CodeSandbox.ready(new NodeSandbox(await Sandbox.get(name)), false);
  }

  /**
   * Boots a stopped sandbox again, as {@link Sandbox.start}, and starts its
   * Node interpreter.
   *
   * @throws {InterpreterFailedError} The interpreter did not start; the sandbox was stopped.
   */
  static override async start(name: string, options: StartOptions = {}): Promise<NodeSandbox> {
    return CodeSandbox.ready(new NodeSandbox(await Sandbox.start(name, options)), true);
  }
}

/** The options with the language's default image where they name none. */
function withImage<O extends { image?: string }>(options: O, language: Language): O & { image: string } {
  return { ...options, image: options.image ?? language.defaultImage };
}

/** `create` with the language's default image, as a {@link CreateSession}. */
function withProgress<T>(
  options: CodeSandboxOptions,
  language: Language,
  create: (options: CodeSandboxOptions) => Promise<T>,
): CreateSession<T> {
  return createSession(withImage(options, language), create);
}
