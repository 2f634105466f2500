// The Sandbox handle: create, run processes, stop.
import { InvalidOptionError, unwrap } from "./errors";
import { assetsDir, native, type Native } from "./native";
import {
  checkArgs,
  checkExecOptions,
  checkSandboxOptions,
  type ExecOptions,
  type SandboxOptions,
} from "./options";

/** How a finished process ended and what it wrote. */
export class ExecOutput {
  /** Exit code, or null when a signal ended the process. */
  readonly code: number | null;
  /** Signal number that ended the process, or null. */
  readonly signal: number | null;
  readonly #stdout: Buffer;
  readonly #stderr: Buffer;

  constructor(raw: Native.NativeExecOutput) {
    this.code = raw.code ?? null;
    this.signal = raw.signal ?? null;
    this.#stdout = raw.stdout;
    this.#stderr = raw.stderr;
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

export interface BootInfo {
  /** "kvm" or "tcg". */
  accel: string;
  /** Host process id of the VM. */
  vmPid: number;
  /** Milliseconds from VM launch to the guest agent being ready. */
  bootMs: number;
  agentVersion: string;
}

/**
 * A running microVM. It lives as long as the Node process that created it:
 * if that process exits or is killed, the VM goes too.
 */
export class Sandbox implements AsyncDisposable {
  readonly #native: Native.NativeSandbox;

  private constructor(handle: Native.NativeSandbox) {
    this.#native = handle;
  }

  /** Boots a sandbox and resolves once its guest is ready for commands. */
  static async create(options: SandboxOptions): Promise<Sandbox> {
    checkSandboxOptions(options);
    const handle = unwrap(await native.createSandbox(options, { assetsDir }));
    return new Sandbox(handle);
  }

  get name(): string {
    return this.#native.name;
  }

  /** False once the sandbox was stopped or its VM exited. */
  get running(): boolean {
    return this.#native.running;
  }

  get bootInfo(): BootInfo {
    return this.#native.bootInfo;
  }

  /** Runs `command` with `args` (no shell) and collects its output. */
  async exec(command: string, args: string[] = [], options: ExecOptions = {}): Promise<ExecOutput> {
    checkArgs(command, args);
    checkExecOptions(options);
    return new ExecOutput(unwrap(await this.#native.exec(command, args, options)));
  }

  /** Runs a script with `/bin/sh -c` and collects its output. */
  async shell(script: string, options: ExecOptions = {}): Promise<ExecOutput> {
    if (typeof script !== "string") {
      throw new InvalidOptionError("script: must be a string", "script");
    }
    return this.exec("/bin/sh", ["-c", script], options);
  }

  /** Asks the guest to shut down and returns without waiting for it. */
  async stop(): Promise<void> {
    await this.#native.stop();
  }

  /** Stops the sandbox and resolves once its VM and runtime processes are gone. */
  async stopAndWait(): Promise<void> {
    const failure = await this.#native.stopAndWait();
    if (failure) unwrap(failure);
  }

  /** Kills the VM at once and resolves once it is gone. */
  async kill(): Promise<void> {
    const failure = await this.#native.kill();
    if (failure) unwrap(failure);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stopAndWait();
  }
}
