// Typed errors. Every error the SDK throws is a MicrosandboxError with a stable
// `code`; catch the subclass (or switch on `code`) to handle one kind.
import type { Native } from "./native";

/**
 * Every stable error code. Generated: the engine lists the codes once, the
 * addon exports them as the `ErrorCode` enum of index.d.ts, and this union is
 * that enum's values.
 */
export type ErrorCode = `${Native.ErrorCode}`;

/** The codes of guest filesystem failures (`FS_*`). */
export type FsErrorCode = Extract<ErrorCode, `FS_${string}`>;

/**
 * The base of every error the SDK throws. Catch a subclass, or switch on
 * `code`, to handle one kind; the message is for people.
 */
export class MicrosandboxError extends Error {
  /** Stable code of this kind of failure, e.g. `"INVALID_OPTION"`; never parse the message instead. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** An option is missing, of the wrong type or out of range. `field` names it. */
export class InvalidOptionError extends MicrosandboxError {
  /** The option at fault as callers spell it, e.g. `"memoryMib"` or `"network.rules[0].cidr"`. */
  readonly field: string | undefined;

  constructor(message: string, field?: string, options?: { cause?: unknown }) {
    super("INVALID_OPTION", message, options);
    this.field = field;
  }
}

/** The upstream SDK's name for {@link InvalidOptionError}. */
export const InvalidConfigError = InvalidOptionError;
/** The upstream SDK's name for {@link InvalidOptionError}. */
export type InvalidConfigError = InvalidOptionError;

/** The image does not exist: a missing root directory or disk file, or a reference that is not cached under `pullPolicy: "never"`. */
export class ImageNotFoundError extends MicrosandboxError {
  constructor(message: string) {
    super("IMAGE_NOT_FOUND", message);
  }
}

/** A running sandbox already has this name. */
export class SandboxExistsError extends MicrosandboxError {
  constructor(message: string) {
    super("SANDBOX_EXISTS", message);
  }
}

/** No sandbox has this name: none was created with it, or it was removed. */
export class SandboxNotFoundError extends MicrosandboxError {
  constructor(message: string) {
    super("SANDBOX_NOT_FOUND", message);
  }
}

/** The sandbox is running and the operation needs it stopped (`remove` without `force`). */
export class SandboxRunningError extends MicrosandboxError {
  constructor(message: string) {
    super("SANDBOX_RUNNING", message);
  }
}

/** No volume has this name. `field` names the option that named it, when a sandbox did. */
export class VolumeNotFoundError extends MicrosandboxError {
  constructor(
    message: string,
    /** The option that named the volume (`name`, or `volumes["/data"]`). */
    readonly field?: string,
  ) {
    super("VOLUME_NOT_FOUND", message);
  }
}

/** A volume with this name exists already. */
export class VolumeAlreadyExistsError extends MicrosandboxError {
  constructor(message: string) {
    super("VOLUME_EXISTS", message);
  }
}

/** The volume is mounted by a running sandbox, so it cannot be removed. */
export class VolumeInUseError extends MicrosandboxError {
  constructor(message: string) {
    super("VOLUME_IN_USE", message);
  }
}

/** A disk volume is mounted by another running sandbox: one sandbox at a time. */
export class VolumeBusyError extends MicrosandboxError {
  constructor(
    message: string,
    /** The mount that asked for it (`volumes["/data"]`). */
    readonly field?: string,
  ) {
    super("VOLUME_BUSY", message);
  }
}

/** The upstream SDK's name for {@link SandboxRunningError}. */
export const SandboxStillRunningError = SandboxRunningError;
/** The upstream SDK's name for {@link SandboxRunningError}. */
export type SandboxStillRunningError = SandboxRunningError;

/** A published port's host address is taken by another process. */
export class PortInUseError extends MicrosandboxError {
  constructor(message: string) {
    super("PORT_IN_USE", message);
  }
}

/**
 * Something the SDK runs is missing: the guest kernel, agent or runtime binary
 * (the message says which command or package provides it), or QEMU on the host
 * (the message names the program and the package to install).
 */
export class MissingAssetError extends MicrosandboxError {
  constructor(message: string) {
    super("MISSING_ASSET", message);
  }
}

/** The VM did not come up. `consoleTail` holds the end of the guest's kernel console. */
export class BootFailedError extends MicrosandboxError {
  /** The last lines of the guest's kernel console, for diagnosis. */
  readonly consoleTail: string;

  constructor(message: string, consoleTail: string) {
    super("BOOT_FAILED", message);
    this.consoleTail = consoleTail;
  }
}

/** The sandbox was stopped, or its VM exited, before or during the call. */
export class SandboxNotRunningError extends MicrosandboxError {
  constructor(message: string) {
    super("SANDBOX_NOT_RUNNING", message);
  }
}

/** The program to run does not exist in the guest. */
export class CommandNotFoundError extends MicrosandboxError {
  constructor(message: string) {
    super("COMMAND_NOT_FOUND", message);
  }
}

/** The guest could not start the process. `errno` is the guest's error number. */
export class ExecFailedError extends MicrosandboxError {
  /** The guest's error number, when a system call failed. */
  readonly errno: number | undefined;

  constructor(message: string, errno?: number, code: "EXEC_FAILED" | "INTERPRETER_FAILED" = "EXEC_FAILED") {
    super(code, message);
    this.errno = errno;
  }
}

/**
 * The interpreter of a `PythonSandbox` or `NodeSandbox` could not
 * be started (the image lacks a working `python3` or `node`), or it died or
 * broke the driver protocol during a run (the user's code called `os._exit`,
 * wrote to the driver's private channel, ...). It was killed; the sandbox runs
 * on, and the next run starts a fresh interpreter, without the old state.
 * Code `INTERPRETER_FAILED`; an {@link ExecFailedError}, as a process that failed.
 */
export class InterpreterFailedError extends ExecFailedError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, undefined, "INTERPRETER_FAILED");
    if (options && "cause" in options) this.cause = options.cause;
  }
}

/** A script or patch could not be applied in the guest; `field` names it. The sandbox was stopped. */
export class PatchFailedError extends MicrosandboxError {
  /** The script or patch at fault, e.g. `"patches[2]"`. */
  readonly field: string | undefined;
  /** The guest's error number, when a system call failed. */
  readonly errno: number | undefined;

  constructor(message: string, field?: string, errno?: number) {
    super("PATCH_FAILED", message);
    this.field = field;
    this.errno = errno;
  }
}

/** The image is used by a running sandbox and cannot be removed. */
export class ImageInUseError extends MicrosandboxError {
  constructor(message: string) {
    super("IMAGE_IN_USE", message);
  }
}

/** The registry could not be reached (after retries). */
export class RegistryUnreachableError extends MicrosandboxError {
  constructor(message: string) {
    super("REGISTRY_UNREACHABLE", message);
  }
}

/** The registry refused the credentials, or their absence. */
export class RegistryUnauthorizedError extends MicrosandboxError {
  constructor(message: string) {
    super("REGISTRY_UNAUTHORIZED", message);
  }
}

/** Downloaded content did not match its digest or size; nothing was kept. */
export class ImageIntegrityError extends MicrosandboxError {
  constructor(message: string) {
    super("IMAGE_INTEGRITY", message);
  }
}

/** A layer was refused by the unpacker (a path escape, a size limit, a malformed archive). */
export class LayerRejectedError extends MicrosandboxError {
  constructor(message: string) {
    super("LAYER_REJECTED", message);
  }
}

/** Any other failure of an image pull. */
export class PullFailedError extends MicrosandboxError {
  constructor(message: string) {
    super("PULL_FAILED", message);
  }
}

/** The `user` to run as is not in the guest's /etc/passwd. */
export class UserNotFoundError extends MicrosandboxError {
  constructor(message: string) {
    super("USER_NOT_FOUND", message);
  }
}

/** The process outlived its `timeout`; it and everything it started were killed. */
export class ExecTimeoutError extends MicrosandboxError {
  constructor(message: string) {
    super("EXEC_TIMEOUT", message);
  }
}

/** The caller's AbortSignal fired; the process and everything it started were killed. */
export class ExecAbortedError extends MicrosandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("EXEC_ABORTED", message, options);
  }
}

/**
 * A guest filesystem operation failed. `errno` is the guest's error number and
 * `path` the guest path; subclasses name the common cases.
 */
export class FsError extends MicrosandboxError {
  /** The guest's error number (e.g. 2 for ENOENT), when a system call failed. */
  readonly errno: number | undefined;
  /** The guest path the operation was about. */
  readonly path: string | undefined;

  constructor(code: FsErrorCode, message: string, errno?: number, path?: string) {
    super(code, message);
    this.errno = errno;
    this.path = path;
  }
}

/** Nothing exists at the path (ENOENT). */
export class FsNotFoundError extends FsError {}
/** The guest refused access (EACCES, EPERM, or a read-only filesystem). */
export class FsPermissionError extends FsError {}
/** Something already exists at the path (EEXIST). */
export class FsExistsError extends FsError {}
/** A component of the path is not a directory (ENOTDIR). */
export class FsNotADirectoryError extends FsError {}
/** The path is a directory where a file was expected (EISDIR). */
export class FsIsADirectoryError extends FsError {}
/** The directory is not empty (ENOTEMPTY). */
export class FsNotEmptyError extends FsError {}

/** A host-side file of copyFromHost/copyToHost could not be read or written. */
export class HostIoError extends MicrosandboxError {
  /** The host's error number. */
  readonly errno: number | undefined;
  /** The host path that failed. */
  readonly path: string | undefined;

  constructor(message: string, errno?: number, path?: string) {
    super("HOST_IO", message);
    this.errno = errno;
    this.path = path;
  }
}

const fsClasses: Record<FsErrorCode, typeof FsError> = {
  FS_NOT_FOUND: FsNotFoundError,
  FS_PERMISSION_DENIED: FsPermissionError,
  FS_ALREADY_EXISTS: FsExistsError,
  FS_NOT_A_DIRECTORY: FsNotADirectoryError,
  FS_IS_A_DIRECTORY: FsIsADirectoryError,
  FS_NOT_EMPTY: FsNotEmptyError,
  FS_ERROR: FsError,
};

/**
 * The guest sent something no honest guest sends (a path-like name, output
 * beyond its credit, a reply to nothing, an undecodable frame). The sandbox was
 * stopped; this and every later call on it reject with this error.
 */
export class GuestProtocolError extends MicrosandboxError {
  constructor(message: string) {
    super("GUEST_PROTOCOL", message);
  }
}

/**
 * The guest sent a secret's placeholder where it may not go (another host, an
 * encoded form, a location not enabled) under `onViolation: "block-and-kill"`.
 * The request was not forwarded and the sandbox was stopped; this and every
 * later call on it reject with this error. The message names the secret (its
 * variable name, never its value), the host and why.
 */
export class SecretViolationError extends MicrosandboxError {
  constructor(message: string) {
    super("SECRET_VIOLATION", message);
  }
}

/**
 * A limit was reached: `field` names the option (`maxOutputBytes`,
 * `maxEntries`, `maxBytes`, `maxDepth`). For `maxOutputBytes`, `stdout` and
 * `stderr` hold the output collected before the process was killed.
 */
export class LimitExceededError extends MicrosandboxError {
  /** The limit's option: `maxOutputBytes`, `maxEntries`, `maxBytes` or `maxDepth`. */
  readonly field: string | undefined;
  /** The guest path being listed or copied, for filesystem limits. */
  readonly path: string | undefined;
  /** For `maxOutputBytes`: the stdout collected before the process was killed. */
  readonly stdout: Buffer | undefined;
  /** For `maxOutputBytes`: the stderr collected before the process was killed. */
  readonly stderr: Buffer | undefined;

  constructor(message: string, details: { field?: string; path?: string; stdout?: Buffer; stderr?: Buffer } = {}) {
    super("LIMIT_EXCEEDED", message);
    this.field = details.field;
    this.path = details.path;
    this.stdout = details.stdout;
    this.stderr = details.stderr;
  }
}

/** The caller's AbortSignal stopped the operation (e.g. copyToHost). */
export class AbortedError extends MicrosandboxError {
  constructor(message: string) {
    super("ABORTED", message);
  }
}

/** Something failed on the host that the caller cannot fix by changing options. */
export class InternalError extends MicrosandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("INTERNAL", message, options);
  }
}

/** Host errno names to the filesystem codes (for a volume's host-side files). */
const hostFsCodes: Record<string, FsErrorCode> = {
  ENOENT: "FS_NOT_FOUND",
  EACCES: "FS_PERMISSION_DENIED",
  EPERM: "FS_PERMISSION_DENIED",
  EEXIST: "FS_ALREADY_EXISTS",
  ENOTDIR: "FS_NOT_A_DIRECTORY",
  EISDIR: "FS_IS_A_DIRECTORY",
  ENOTEMPTY: "FS_NOT_EMPTY",
};

/** A Node filesystem error about `path` as the FsError subclass of its errno. */
export function fsErrorFromHost(err: NodeJS.ErrnoException, path: string): FsError {
  const code = hostFsCodes[err.code ?? ""] ?? "FS_ERROR";
  return new fsClasses[code](code, `${path}: ${err.message}`, err.errno === undefined ? undefined : -err.errno, path);
}

/** Maps an engine error (data from the addon) to its class. */
export function fromNative(error: Native.NativeError): MicrosandboxError {
  const { message } = error;
  if (error.code in fsClasses) {
    const code = error.code as FsErrorCode;
    return new fsClasses[code](code, message, error.errno, error.path);
  }
  switch (error.code as ErrorCode) {
    case "INVALID_OPTION":
      return new InvalidOptionError(message, error.field);
    case "IMAGE_NOT_FOUND":
      return new ImageNotFoundError(message);
    case "SANDBOX_EXISTS":
      return new SandboxExistsError(message);
    case "SANDBOX_NOT_FOUND":
      return new SandboxNotFoundError(message);
    case "SANDBOX_RUNNING":
      return new SandboxRunningError(message);
    case "VOLUME_NOT_FOUND":
      return new VolumeNotFoundError(message, error.field);
    case "VOLUME_EXISTS":
      return new VolumeAlreadyExistsError(message);
    case "VOLUME_IN_USE":
      return new VolumeInUseError(message);
    case "VOLUME_BUSY":
      return new VolumeBusyError(message, error.field);
    case "PORT_IN_USE":
      return new PortInUseError(message);
    case "MISSING_ASSET":
      return new MissingAssetError(message);
    case "BOOT_FAILED":
      return new BootFailedError(message, error.consoleTail ?? "");
    case "PATCH_FAILED":
      return new PatchFailedError(message, error.field, error.errno);
    case "IMAGE_IN_USE":
      return new ImageInUseError(message);
    case "REGISTRY_UNREACHABLE":
      return new RegistryUnreachableError(message);
    case "REGISTRY_UNAUTHORIZED":
      return new RegistryUnauthorizedError(message);
    case "IMAGE_INTEGRITY":
      return new ImageIntegrityError(message);
    case "LAYER_REJECTED":
      return new LayerRejectedError(message);
    case "PULL_FAILED":
      return new PullFailedError(message);
    case "SANDBOX_NOT_RUNNING":
      return new SandboxNotRunningError(message);
    case "COMMAND_NOT_FOUND":
      return new CommandNotFoundError(message);
    case "USER_NOT_FOUND":
      return new UserNotFoundError(message);
    case "EXEC_FAILED":
      return new ExecFailedError(message, error.errno);
    case "EXEC_TIMEOUT":
      return new ExecTimeoutError(message);
    case "HOST_IO":
      return new HostIoError(message, error.errno, error.path);
    case "GUEST_PROTOCOL":
      return new GuestProtocolError(message);
    case "SECRET_VIOLATION":
      return new SecretViolationError(message);
    case "LIMIT_EXCEEDED":
      return new LimitExceededError(message, {
        field: error.field,
        path: error.path,
        stdout: error.stdout,
        stderr: error.stderr,
      });
    case "ABORTED":
      return new AbortedError(message);
    default:
      return new InternalError(`${error.code}: ${message}`);
  }
}

function isFailure(result: unknown): result is Native.NativeFailure {
  return typeof result === "object" && result !== null && "failure" in result;
}

/** Unwraps an addon result: a value, or a failure to throw as its typed error. */
export function unwrap<T>(result: T | Native.NativeFailure): T {
  if (isFailure(result)) {
    throw fromNative(result.failure);
  }
  return result;
}

/** For addon calls that resolve to nothing, or to a failure. */
export function check(result: Native.NativeFailure | null | undefined): void {
  if (result) unwrap(result);
}
