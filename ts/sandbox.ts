// The Sandbox handle: create, run processes, reach the filesystem, stop.
import * as fs from "node:fs/promises";

import { check, ExecAbortedError, InvalidOptionError, SandboxNotFoundError, unwrap } from "./errors";
import { DEFAULT_MAX_OUTPUT_BYTES, ExecHandle, ExecOutput, toNativeExecOptions } from "./exec";
import { SandboxBuilder } from "./builder";
import { SandboxFs } from "./fs";
import { createSession, type CreateSession } from "./progress";
import { checkRegistryOptions, toNativePullEvent } from "./image";
import { assetsDir, native, type Native } from "./native";
import { splitPrewarmOptions, takePooled, WarmPool, type PrewarmOptions } from "./pool";
import {
  checkArgs,
  checkExecOptions,
  checkSandboxOptions,
  toNativeSandboxOptions,
  type ExecOptions,
  type SandboxOptions,
} from "./options";

/** How a sandbox's VM came up: accelerator, process, timing and published ports. */
export interface BootInfo {
  /** The accelerator the guest runs under: "kvm", or "tcg" (emulation). */
  accel: string;
  /** Host process id of the VM. */
  vmPid: number;
  /** Milliseconds from VM launch to the guest agent being ready. */
  bootMs: number;
  /** Version of the guest agent (PID 1 in the guest). */
  agentVersion: string;
  /** Published ports as bound, one entry per host port of `SandboxOptions.ports`. */
  publishedPorts: {
    /** The bound host address, `127.0.0.1:<port>`. */
    host: string;
    /** The bound host port: the real one where 0 was asked. */
    hostPort: number;
    /** The guest port that TCP connections to `host` reach. */
    guestPort: number;
  }[];
}

/** Where a sandbox's life stands. */
export type SandboxStatus = "starting" | "running" | "stopping" | "stopped" | "crashed";

/** A sandbox as {@link Sandbox.list} reports it. */
export interface SandboxInfo {
  /** The sandbox's name, as {@link Sandbox.get} takes it. */
  name: string;
  /**
   * "crashed" also covers a runtime that died without recording an end: a
   * sandbox is never shown "running" without a live runtime.
   */
  status: SandboxStatus;
  /** Why it stopped or crashed. */
  reason?: string;
  /** The image as its creator named it. */
  image: string;
  /** Whether it was created `detached` (outliving its creator). */
  detached: boolean;
  /** Virtual CPUs it was created with. */
  cpus: number;
  /** Guest memory it was created with, in MiB. */
  memoryMib: number;
  /** When it was created. */
  createdAt: Date;
  /** When it stopped or crashed, as far as its runtime recorded it. */
  stoppedAt?: Date;
  /** Host process id of the sandbox's runtime, while it runs. */
  pid?: number;
}

/** A running sandbox's resource use, from {@link Sandbox.metrics}. */
export interface SandboxMetrics {
  /**
   * CPU time of the VM process per wall time since this handle's previous
   * sample (since boot for the first), in percent of one host CPU.
   */
  cpuPercent: number;
  /**
   * Memory in use in the guest (`MemTotal - MemAvailable`), in MiB: the one
   * figure, with `memoryTotalMib`, that comes from the guest; absent when it
   * did not answer within 2 s or sensibly.
   */
  memoryUsedMib?: number;
  /** The guest's `MemTotal`, in MiB. */
  memoryTotalMib?: number;
  /** `memoryUsedMib` in bytes (0 when the guest gave no figure); the upstream SDK's name. */
  memoryBytes: number;
  /** The memory the VM was given (`memoryMib`), in bytes: the host's figure. */
  memoryLimitBytes: number;
  /** Bytes the guest received and sent on its network, Ethernet frames counted by the host. */
  netRxBytes: number;
  /** See {@link SandboxMetrics.netRxBytes}. */
  netTxBytes: number;
  /** Bytes the VM process read from storage on the host. */
  diskReadBytes: number;
  /** Bytes the VM process wrote to storage on the host. */
  diskWriteBytes: number;
  /** Milliseconds since the VM booted. */
  uptimeMs: number;
  /** When the sample was taken (milliseconds since the Unix epoch). */
  timestampMs: number;
}

/** Options of {@link Sandbox.metricsStream}. */
export interface MetricsStreamOptions {
  /** Time between samples, in ms (at least 100). Default: 1000. */
  intervalMs?: number;
  /** Ends the stream. */
  signal?: AbortSignal;
}

/** One line of a sandbox's log, from {@link Sandbox.logs}. */
export interface LogLine {
  /** When the host received or recorded it. */
  time: Date;
  /** "console": a line the guest's console printed; "runtime": boot, stop requests, the end and why. */
  source: "console" | "runtime";
  /** The line, made printable (the guest's control characters become U+FFFD). */
  text: string;
}

/** Options of {@link Sandbox.logs}. */
export interface LogOptions {
  /** After what is there, wait for new lines until the sandbox ends. Default: false. */
  follow?: boolean;
  /** Ends the iteration. */
  signal?: AbortSignal;
}

/** How often a followed log is checked for new lines. */
const LOG_POLL_MS = 100;

/** Resolves after `ms`, or at once when `signal` fires. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

function parseLogLine(line: string): LogLine | undefined {
  const match = /^(\d+) (console|runtime) (.*)$/.exec(line);
  if (!match) return undefined;
  return { time: new Date(Number(match[1])), source: match[2] as LogLine["source"], text: match[3] };
}

/** How a stopped sandbox's VM ended, from {@link Sandbox.stopAndWait}. */
export interface StopStatus {
  /** The VM's exit code: 0 after a clean shutdown; null when a signal ended it. */
  code: number | null;
  /** Whether it shut down cleanly (exit code 0). */
  success: boolean;
  /** The signal that ended it (a kill, or a guest that did not stop in time). */
  signal?: number;
}

/** {@link Sandbox.execWithConfig}'s one argument: the command and {@link ExecOptions} in one object. */
export interface ExecConfig extends ExecOptions {
  /** The program to run. */
  cmd: string;
  /** Its arguments. */
  args?: string[];
}

/** Options of {@link Sandbox.start}. */
export interface StartOptions {
  /**
   * The secret values of a sandbox created with `secretEnv`, given again
   * (values are never stored), with the same settings as at create.
   */
  secretEnv?: SandboxOptions["secretEnv"];
  /** Image pull progress, as for `create`. */
  onProgress?: SandboxOptions["onProgress"];
}

/** Options of {@link Sandbox.remove}. */
export interface RemoveOptions {
  /** Kill a running sandbox first instead of refusing. Default: false. */
  force?: boolean;
}

function splitConfig(config: ExecConfig): ExecOptions & { cmd: string; args: string[] } {
  if (typeof config !== "object" || config === null) {
    throw new InvalidOptionError("config: must be an object with cmd", "config");
  }
  const { cmd, args = [], ...options } = config;
  if (typeof cmd !== "string") throw new InvalidOptionError("cmd: must be a string", "cmd");
  return { cmd, args, ...options };
}

function checkName(name: unknown): asserts name is string {
  if (typeof name !== "string") {
    throw new InvalidOptionError("name: must be a string", "name");
  }
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

// Every sandbox not yet stopped through its handle. The native handle stops its
// VM when it is garbage-collected, so without this set a sandbox whose last
// reference the caller dropped (one serving a published port, say) would die
// at whatever moment the collector ran. Holding it here makes its lifetime the
// documented one: until stopped, or until this process ends. Entries whose VM
// ended on its own are dropped at the next create.
const unstopped = new Set<Sandbox>();

function forgetEnded(): void {
  for (const sandbox of unstopped) if (!sandbox.running) unstopped.delete(sandbox);
}

/**
 * A running microVM. It lives until it is stopped or until the Node process
 * that created it ends, however that process ends; dropping every reference
 * to the handle does not stop it. A `detached` sandbox outlives its creator;
 * any process of the same user reaches it with {@link Sandbox.get}.
 *
 * The guest is treated as hostile: a guest that breaks the agent protocol is
 * stopped and every later call rejects with GuestProtocolError; one that stops
 * answering is stopped within about 4 s and calls reject with
 * SandboxNotRunningError.
 */
export class Sandbox implements AsyncDisposable {
  readonly #native: Native.NativeSandbox;
  #fs: SandboxFs | undefined;

  /**
   * Wraps the addon's handle, or takes over another Sandbox object's (a
   * subclass's `create` boots a plain Sandbox, then adopts it).
   *
   * @internal
   */
  protected constructor(handle: Native.NativeSandbox | Sandbox) {
    if (handle instanceof Sandbox) {
      this.#native = handle.#native;
      // The adopting object is the one its owner holds and stops.
      if (unstopped.delete(handle)) unstopped.add(this);
    } else {
      this.#native = handle;
    }
  }

  /**
   * Boots a sandbox, writes its scripts and patches, and resolves once its
   * guest is ready for commands. An image reference is first pulled as
   * `pullPolicy` says.
   *
   * @throws {InvalidOptionError} An option is unknown, mistyped or out of range, or a patch does not
   *   fit the image; `field` names it.
   * @throws {ImageNotFoundError} The image directory or the registry's image does not exist, or the
   *   image is not cached and `pullPolicy` is "never".
   * @throws {SandboxExistsError} A running sandbox already has this `name`.
   * @throws {PortInUseError} A published port's host address is taken.
   * @throws {MissingAssetError} The guest kernel, agent or runtime is not installed.
   * @throws {BootFailedError} The VM did not come up; `consoleTail` holds the end of its console.
   * @throws {PatchFailedError} A script or patch could not be applied in the guest; the sandbox was stopped.
   * @throws {RegistryUnreachableError} The registry could not be reached.
   * @throws {RegistryUnauthorizedError} The registry refused the credentials, or their absence.
   * @throws {ImageIntegrityError} Downloaded content did not match its digest or size.
   * @throws {LayerRejectedError} The unpacker refused a layer.
   * @throws {PullFailedError} The pull failed otherwise.
   * @throws {VolumeNotFoundError} A `volumes` entry names a volume that does not exist.
   * @throws {VolumeBusyError} A disk volume is mounted by another running sandbox.
   * @throws {InternalError} A host-side failure (state home, image cache).
   */
  static async create(options: SandboxOptions): Promise<Sandbox> {
    checkSandboxOptions(options);
    checkRegistryOptions(options.registry);
    const pooled = await Sandbox.fromPool<Sandbox>("sandbox", options);
    if (pooled !== undefined) return pooled;
    // Converted before a `replace` removes anything: a malformed volume throws here.
    const nativeOptions = toNativeSandboxOptions(options);
    if (options.replace && options.name !== undefined) {
      await Sandbox.remove(options.name, { force: true }).catch((err: unknown) => {
        if (!(err instanceof SandboxNotFoundError)) throw err;
      });
    }
    const handle = unwrap(
      await native.createSandbox(nativeOptions, { assetsDir }, toNativePullEvent(options.onProgress)),
    );
    forgetEnded();
    const sandbox = new Sandbox(handle);
    // A detached sandbox does not depend on its handle; others do.
    if (!options.detached) unstopped.add(sandbox);
    return sandbox;
  }

  /**
   * Boots `count` sandboxes with these options ahead of time and keeps that
   * many ready: a later {@link Sandbox.create} whose options equal them (apart
   * from `onProgress`) takes one instead of booting, and the pool boots its
   * replacement in the background. Each pooled sandbox runs `/bin/sh -c true`
   * once, so that its first command finds the emulator's translation cache
   * warm. Resolves once all `count` are ready.
   *
   * @throws {InvalidOptionError} `count` is not an integer from 1 to 32, an option is invalid, or it
   *   is one a pooled sandbox cannot have (`name`, `detached`, `ports`, `volumes`, `persistent`,
   *   `rootfsSizeMib`, `rootfsPath`, `idleTimeoutMs`, `maxLifetimeMs`); `field` names it.
   * @throws The errors of {@link Sandbox.create}: the first boot that failed, after the others were stopped.
   */
  static async prewarm(options: PrewarmOptions): Promise<WarmPool> {
    return Sandbox.prewarmAs("sandbox", options, async (sandbox) => sandbox);
  }

  /**
   * A pool of `kind` whose sandboxes are `make` of a booted, warmed-up pooled
   * sandbox (a code runner starts its interpreter there).
   *
   * @internal
   */
  protected static async prewarmAs<T>(
    kind: string,
    options: PrewarmOptions,
    make: (sandbox: Sandbox) => Promise<T>,
  ): Promise<WarmPool> {
    const { count, sandbox } = splitPrewarmOptions(options);
    checkSandboxOptions(sandbox);
    checkRegistryOptions(sandbox.registry);
    // Volumes and the rest are passed on for the engine to refuse, with its reason.
    const nativeOptions = toNativeSandboxOptions(sandbox);
    const pool = new WarmPool(kind, count, sandbox, async () => {
      const handle = unwrap(await native.prewarmSandbox(nativeOptions, { assetsDir }));
      try {
        // Errors ignored: an image without a shell is poolable, only not warmed.
        await handle.exec("/bin/sh", ["-c", "true"], undefined);
        return { value: await make(new Sandbox(handle)), handle };
      } catch (err) {
        await handle.stopAndWait();
        throw err;
      }
    });
    await pool.fill();
    return pool;
  }

  /**
   * A sandbox of `kind` taken from one of this process's pools whose options
   * equal `options`, owned by the caller from now on; undefined when none is
   * ready.
   *
   * @internal
   */
  protected static async fromPool<T extends Sandbox>(kind: string, options: SandboxOptions): Promise<T | undefined> {
    checkSandboxOptions(options);
    const pooled = (await takePooled(kind, options)) as T | undefined;
    if (pooled !== undefined) {
      forgetEnded();
      unstopped.add(pooled);
    }
    return pooled;
  }

  /**
   * {@link Sandbox.create}, as a session that reports the image pull: iterate
   * it (or `recv()`) for {@link PullProgress} events, `resolving` first and
   * `complete` last, then `result()` for the sandbox (once). Also calls
   * `options.onProgress`, if given, with the engine's own events.
   *
   * @throws {InvalidOptionError} An option is unknown, mistyped or out of range (at once, not
   *   through `result()`).
   */
  static createWithProgress(options: SandboxOptions): CreateSession<Sandbox> {
    return createSession(options, (o) => Sandbox.create(o));
  }

  /** {@link Sandbox.createWithProgress} with `detached: true`. */
  static createDetachedWithProgress(options: SandboxOptions): CreateSession<Sandbox> {
    return Sandbox.createWithProgress({ ...options, detached: true });
  }

  /** The options of {@link Sandbox.create} as a chain: `Sandbox.builder("w").image("alpine").cpus(2).create()`. */
  static builder(name: string): SandboxBuilder<Sandbox> {
    return new SandboxBuilder(name, (options) => Sandbox.create(options));
  }

  /**
   * Boots a stopped sandbox again with the options it was created with. Its
   * root starts afresh unless it was created `persistent: true` (its scripts
   * and patches are applied again either way); its name, logs and record stay.
   *
   * @throws {SandboxNotFoundError} No sandbox has this name.
   * @throws {SandboxRunningError} It is running.
   * @throws {InvalidOptionError} A secret it was created with is not given again (`field`: "secretEnv").
   * @throws {BootFailedError} The VM did not come up; as for {@link Sandbox.create}, whose other errors apply too.
   */
  static async start(name: string, options: StartOptions = {}): Promise<Sandbox> {
    checkName(name);
    for (const key of Object.keys(options)) {
      if (key !== "secretEnv" && key !== "onProgress") {
        throw new InvalidOptionError(`${key}: start keeps the options the sandbox was created with`, key);
      }
    }
    checkSandboxOptions({ image: "unused", ...options });
    const { secretEnv, onProgress } = options;
    const handle = unwrap(
      await native.startSandbox(name, secretEnv, { assetsDir }, toNativePullEvent(onProgress)),
    );
    forgetEnded();
    const sandbox = new Sandbox(handle);
    // Only a detached sandbox can outlive a handle; others are held as at create.
    if (!(await Sandbox.list()).find((s) => s.name === name)?.detached) unstopped.add(sandbox);
    return sandbox;
  }

  /**
   * A handle to the running sandbox `name`, created by this or another process
   * of the same user. Several handles may serve one sandbox at once, each
   * seeing only its own processes' output; dropping this one leaves the
   * sandbox running, and its `stop` stops it for every handle.
   *
   * @throws {SandboxNotFoundError} No sandbox has this name.
   * @throws {SandboxNotRunningError} The sandbox stopped or crashed; the message says why.
   * @throws {InvalidOptionError} The name is not a valid sandbox name.
   */
  static async get(name: string): Promise<Sandbox> {
    checkName(name);
    return new Sandbox(unwrap(await native.getSandbox(name, { assetsDir })));
  }

  /**
   * Every sandbox with a record: running ones, and detached ones until removed
   * (with their status and why they ended). Sandboxes waiting in a
   * {@link WarmPool} are not listed until they are taken.
   *
   * @throws {InternalError} The state database could not be read.
   */
  static async list(): Promise<SandboxInfo[]> {
    return unwrap(await native.listSandboxes({ assetsDir })).map((s) => ({
      name: s.name,
      status: s.status as SandboxStatus,
      ...(s.reason != null && { reason: s.reason }),
      image: s.image,
      detached: s.detached,
      cpus: s.cpus,
      memoryMib: s.memoryMib,
      createdAt: new Date(s.createdAtMs),
      ...(s.stoppedAtMs != null && { stoppedAt: new Date(s.stoppedAtMs) }),
      ...(s.pid != null && { pid: s.pid }),
    }));
  }

  /**
   * The sandbox's log: its console's lines and its runtime's events (boot,
   * stop requests, the end and why), each with its time, oldest first. With
   * `follow`, waits for new lines until the sandbox ends. A detached
   * sandbox's log stays readable after it stopped, until it is removed.
   *
   * @throws {SandboxNotFoundError} No sandbox has this name.
   * @throws {InvalidOptionError} The name is not a valid sandbox name.
   */
  static async *logs(name: string, options: LogOptions = {}): AsyncGenerator<LogLine, void, undefined> {
    checkName(name);
    const file = unwrap(native.sandboxEventsLog(name, { assetsDir }));
    const { follow = false, signal } = options;
    const live = async () => {
      const status = (await Sandbox.list()).find((s) => s.name === name)?.status;
      return status === "starting" || status === "running" || status === "stopping";
    };
    let position = 0;
    let partial = "";
    const buffer = Buffer.alloc(64 << 10);
    for (;;) {
      const wasLive = follow && (await live());
      let handle: fs.FileHandle | undefined;
      try {
        handle = await fs.open(file, "r");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        if (!(await live()) && !(await Sandbox.list()).some((s) => s.name === name)) {
          throw new SandboxNotFoundError(`there is no sandbox named ${JSON.stringify(name)}`);
        }
      }
      if (handle) {
        try {
          for (;;) {
            const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
            if (bytesRead === 0) break;
            position += bytesRead;
            partial += buffer.toString("utf8", 0, bytesRead);
            const lines = partial.split("\n");
            partial = lines.pop() ?? "";
            for (const line of lines) {
              const parsed = parseLogLine(line);
              if (parsed) yield parsed;
              if (signal?.aborted) return;
            }
          }
        } finally {
          await handle.close();
        }
      }
      // Ends after a read that began once the sandbox was no longer live: its last lines are in.
      if (!follow || signal?.aborted || !wasLive) return;
      await sleep(LOG_POLL_MS, signal);
    }
  }

  /**
   * Forgets a sandbox and deletes its directory, logs included.
   *
   * @throws {SandboxNotFoundError} No sandbox has this name.
   * @throws {SandboxRunningError} It is running and `force` is not set.
   * @throws {InvalidOptionError} The name is not a valid sandbox name.
   */
  static async remove(name: string, options: RemoveOptions = {}): Promise<void> {
    checkName(name);
    if (options.force !== undefined && typeof options.force !== "boolean") {
      throw new InvalidOptionError("force: must be a boolean", "force");
    }
    check(await native.removeSandbox(name, options.force ?? false, { assetsDir }));
  }

  /** The sandbox's name: the one asked for, or the generated one. */
  get name(): string {
    return this.#native.name;
  }

  /** False once the sandbox was stopped or its VM exited. */
  get running(): boolean {
    return this.#native.running;
  }

  /** How the VM came up: accelerator, VM process id, boot time, published ports. */
  get bootInfo(): BootInfo {
    return this.#native.bootInfo;
  }

  /**
   * Runs `command` with `args` (no shell) and collects its output. A non-zero
   * exit is not an error: see {@link ExecOutput.code}.
   *
   * @throws {InvalidOptionError} The command, an argument or an option is invalid (a NUL byte,
   *   `stdin: "pipe"`, ...); `field` names it.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   * @throws {CommandNotFoundError} The program does not exist in the guest.
   * @throws {UserNotFoundError} `user` is not in the guest's /etc/passwd.
   * @throws {ExecFailedError} The guest could not start the process, or did not within 60 s.
   * @throws {ExecTimeoutError} `timeout` passed; the process and everything it started were killed.
   * @throws {ExecAbortedError} `signal` fired; the process and everything it started were killed.
   * @throws {LimitExceededError} The output outgrew `maxOutputBytes`; the process and everything it
   *   started were killed, and `stdout`/`stderr` hold the output so far.
   */
  async exec(command: string, args: string[] = [], options: ExecOptions = {}): Promise<ExecOutput> {
    checkArgs(command, args);
    checkExecOptions(options);
    // Also refuses stdin: "pipe", before any path is taken.
    const nativeOptions = toNativeExecOptions(options, false);
    abortedBeforeStart(options.signal);
    if (options.signal) {
      // Abortable: stream, so that the signal can kill the process mid-way;
      // the same output cap as the engine's own collection.
      const handle = await this.execStream(command, args, options);
      return handle.collect({ maxOutputBytes: options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES });
    }
    return ExecOutput.fromNative(unwrap(await this.#native.exec(command, args, nativeOptions)));
  }

  /**
   * Runs a script with `/bin/sh -c` and collects its output, as
   * `exec("/bin/sh", ["-c", script], options)` does.
   *
   * @throws {InvalidOptionError} The command, an argument or an option is invalid (a NUL byte,
   *   `stdin: "pipe"`, ...); `field` names it.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   * @throws {CommandNotFoundError} The program does not exist in the guest.
   * @throws {UserNotFoundError} `user` is not in the guest's /etc/passwd.
   * @throws {ExecFailedError} The guest could not start the process, or did not within 60 s.
   * @throws {ExecTimeoutError} `timeout` passed; the process and everything it started were killed.
   * @throws {ExecAbortedError} `signal` fired; the process and everything it started were killed.
   * @throws {LimitExceededError} The output outgrew `maxOutputBytes`; the process and everything it
   *   started were killed, and `stdout`/`stderr` hold the output so far.
   */
  async shell(script: string, options: ExecOptions = {}): Promise<ExecOutput> {
    checkScript(script);
    return this.exec("/bin/sh", ["-c", script], options);
  }

  /**
   * Starts `command` with `args` (no shell) and returns a handle that streams
   * its events as they come.
   *
   * Rejects only when the process cannot be started; what happens later
   * rejects {@link ExecHandle.recv} and the calls built on it.
   *
   * @throws {InvalidOptionError} The command, an argument or an option is invalid (a NUL byte, ...);
   *   `field` names it.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   * @throws {CommandNotFoundError} The program does not exist in the guest.
   * @throws {UserNotFoundError} `user` is not in the guest's /etc/passwd.
   * @throws {ExecFailedError} The guest could not start the process, or did not within 60 s.
   * @throws {ExecTimeoutError} The guest did not start the process within `timeout`.
   * @throws {ExecAbortedError} `signal` had fired before the process started.
   */
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

  /**
   * Starts a script with `/bin/sh -c` and returns its streaming handle, as
   * `execStream("/bin/sh", ["-c", script], options)` does.
   *
   * Rejects only when the process cannot be started; what happens later
   * rejects {@link ExecHandle.recv} and the calls built on it.
   *
   * @throws {InvalidOptionError} The command, an argument or an option is invalid (a NUL byte, ...);
   *   `field` names it.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   * @throws {CommandNotFoundError} The program does not exist in the guest.
   * @throws {UserNotFoundError} `user` is not in the guest's /etc/passwd.
   * @throws {ExecFailedError} The guest could not start the process, or did not within 60 s.
   * @throws {ExecTimeoutError} The guest did not start the process within `timeout`.
   * @throws {ExecAbortedError} `signal` had fired before the process started.
   */
  async shellStream(script: string, options: ExecOptions = {}): Promise<ExecHandle> {
    checkScript(script);
    return this.execStream("/bin/sh", ["-c", script], options);
  }

  /**
   * This sandbox's log, as the static `Sandbox.logs(name)` reads it.
   *
   * @throws {SandboxNotFoundError} The sandbox's log is gone (it was removed).
   */
  logs(options: LogOptions = {}): AsyncGenerator<LogLine, void, undefined> {
    return Sandbox.logs(this.name, options);
  }

  /**
   * CPU, memory, network and disk use. The counters are the host's; the
   * memory figures are the guest's own, read once per call.
   *
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   */
  async metrics(): Promise<SandboxMetrics> {
    const m = unwrap(await this.#native.metrics());
    const MiB = 1024 * 1024;
    return {
      cpuPercent: m.cpuPercent,
      ...(m.memoryUsedMib != null && { memoryUsedMib: m.memoryUsedMib }),
      ...(m.memoryTotalMib != null && { memoryTotalMib: m.memoryTotalMib }),
      memoryBytes: Math.round((m.memoryUsedMib ?? 0) * MiB),
      memoryLimitBytes: Math.round(m.memoryLimitMib * MiB),
      netRxBytes: m.netRxBytes,
      netTxBytes: m.netTxBytes,
      diskReadBytes: m.diskReadBytes,
      diskWriteBytes: m.diskWriteBytes,
      uptimeMs: m.uptimeMs,
      timestampMs: Date.now(),
    };
  }

  /**
   * {@link Sandbox.metrics} every `intervalMs`, until the sandbox stops or
   * `signal` fires (then the iteration ends without an error).
   *
   * @throws {InvalidOptionError} `intervalMs` is not a number of at least 100.
   */
  async *metricsStream(options: MetricsStreamOptions = {}): AsyncGenerator<SandboxMetrics, void, undefined> {
    const intervalMs = options.intervalMs ?? 1000;
    if (typeof intervalMs !== "number" || !Number.isFinite(intervalMs) || intervalMs < 100) {
      throw new InvalidOptionError("intervalMs: must be a number of at least 100", "intervalMs");
    }
    const { signal } = options;
    while (!signal?.aborted && this.running) {
      let sample: SandboxMetrics;
      try {
        sample = await this.metrics();
      } catch (err) {
        if (!this.running) return;
        throw err;
      }
      yield sample;
      await sleep(intervalMs, signal);
    }
  }

  /** The guest filesystem; the same object on every call. */
  fs(): SandboxFs {
    this.#fs ??= new SandboxFs(this.#native.fs());
    return this.#fs;
  }

  /** Asks the guest to shut down and returns without waiting for it. */
  async stop(): Promise<void> {
    unstopped.delete(this);
    await this.#native.stop();
  }

  /**
   * Stops the sandbox and resolves once its VM and runtime processes are
   * gone, with how the VM ended (for a sandbox already stopped, how it did).
   *
   * @throws {InternalError} Waiting for the runtime process failed.
   */
  async stopAndWait(): Promise<StopStatus> {
    unstopped.delete(this);
    const { code, signal } = unwrap(await this.#native.stopAndWait());
    return { code: code ?? null, success: code === 0, ...(signal != null && { signal }) };
  }

  /**
   * Kills the VM at once and resolves once it is gone.
   *
   * @throws {InternalError} Waiting for the runtime process failed.
   */
  async kill(): Promise<void> {
    unstopped.delete(this);
    check(await this.#native.kill());
  }

  /**
   * {@link Sandbox.stopAndWait}, for `await using sb = await Sandbox.create(...)`.
   *
   * @throws {InternalError} Waiting for the runtime process failed.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stopAndWait();
  }

  /**
   * {@link Sandbox.exec} with the command in the options object:
   * `execWithConfig({ cmd, args, env, cwd, user, stdin, tty, timeout })`.
   */
  async execWithConfig(config: ExecConfig): Promise<ExecOutput> {
    const { cmd, args, ...options } = splitConfig(config);
    return this.exec(cmd, args, options);
  }

  /** {@link Sandbox.execStream} with the command in the options object (see {@link Sandbox.execWithConfig}). */
  async execStreamWithConfig(config: ExecConfig): Promise<ExecHandle> {
    const { cmd, args, ...options } = splitConfig(config);
    return this.execStream(cmd, args, options);
  }
}
