// The Sandbox handle: create, run processes, reach the filesystem, stop.
import { check, ExecAbortedError, InvalidOptionError, unwrap } from "./errors";
import { ExecHandle, ExecOutput, toNativeExecOptions } from "./exec";
import { SandboxFs } from "./fs";
import { checkRegistryOptions, toNativePullEvent } from "./image";
import { assetsDir, native, type Native } from "./native";
import {
  checkArgs,
  checkExecOptions,
  checkSandboxOptions,
  toNativeNetwork,
  type ExecOptions,
  type SandboxOptions,
} from "./options";

export interface BootInfo {
  /** "kvm" or "tcg". */
  accel: string;
  /** Host process id of the VM. */
  vmPid: number;
  /** Milliseconds from VM launch to the guest agent being ready. */
  bootMs: number;
  agentVersion: string;
  /** Published ports as bound: `host` is `127.0.0.1:<port>` (the real port when 0 was asked). */
  publishedPorts: { host: string; hostPort: number; guestPort: number }[];
}

function abortedBeforeStart(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw new ExecAbortedError("the AbortSignal fired before the process started", { cause: signal.reason });
  }
}

function checkScript(script: unknown): asserts script is string {
  if (typeof script !== "string") {
    throw new InvalidOptionError("script: must be a string", "script");
  }
}

/**
 * A running microVM. It lives as long as the Node process that created it:
 * if that process exits or is killed, the VM goes too.
 */
export class Sandbox implements AsyncDisposable {
  readonly #native: Native.NativeSandbox;
  #fs: SandboxFs | undefined;

  private constructor(handle: Native.NativeSandbox) {
    this.#native = handle;
  }

  /**
   * Boots a sandbox, writes its scripts and patches, and resolves once its
   * guest is ready for commands.
   */
  static async create(options: SandboxOptions): Promise<Sandbox> {
    checkSandboxOptions(options);
    checkRegistryOptions(options.registry);
    const { onProgress, network, ...rest } = options;
    const nativeOptions = { ...rest, network: toNativeNetwork(network) };
    const handle = unwrap(await native.createSandbox(nativeOptions, { assetsDir }, toNativePullEvent(onProgress)));
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
    abortedBeforeStart(options.signal);
    if (options.signal) {
      // Abortable: stream, so that the signal can kill the process mid-way.
      return (await this.execStream(command, args, options)).collect();
    }
    const nativeOptions = toNativeExecOptions(options, false);
    return ExecOutput.fromNative(unwrap(await this.#native.exec(command, args, nativeOptions)));
  }

  /** Runs a script with `/bin/sh -c` and collects its output. */
  async shell(script: string, options: ExecOptions = {}): Promise<ExecOutput> {
    checkScript(script);
    return this.exec("/bin/sh", ["-c", script], options);
  }

  /** Starts `command` and returns a handle that streams its events as they come. */
  async execStream(command: string, args: string[] = [], options: ExecOptions = {}): Promise<ExecHandle> {
    checkArgs(command, args);
    checkExecOptions(options);
    abortedBeforeStart(options.signal);
    const nativeOptions = toNativeExecOptions(options, true);
    const handle = new ExecHandle(unwrap(await this.#native.execStream(command, args, nativeOptions)), options);
    // It may have fired while the process was starting.
    if (options.signal?.aborted) await handle.kill();
    return handle;
  }

  /** `execStream("/bin/sh", ["-c", script], options)`. */
  async shellStream(script: string, options: ExecOptions = {}): Promise<ExecHandle> {
    checkScript(script);
    return this.execStream("/bin/sh", ["-c", script], options);
  }

  /** The guest filesystem. */
  fs(): SandboxFs {
    this.#fs ??= new SandboxFs(this.#native.fs());
    return this.#fs;
  }

  /** Asks the guest to shut down and returns without waiting for it. */
  async stop(): Promise<void> {
    await this.#native.stop();
  }

  /** Stops the sandbox and resolves once its VM and runtime processes are gone. */
  async stopAndWait(): Promise<void> {
    check(await this.#native.stopAndWait());
  }

  /** Kills the VM at once and resolves once it is gone. */
  async kill(): Promise<void> {
    check(await this.#native.kill());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stopAndWait();
  }
}
