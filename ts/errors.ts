// Typed errors. Every error the SDK throws is a MicrosandboxError with a stable
// `code`; catch the subclass (or switch on `code`) to handle one kind.
import type { Native } from "./native";

export type ErrorCode =
  | "INVALID_OPTION"
  | "IMAGE_NOT_FOUND"
  | "SANDBOX_EXISTS"
  | "MISSING_ASSET"
  | "BOOT_FAILED"
  | "SANDBOX_NOT_RUNNING"
  | "COMMAND_NOT_FOUND"
  | "EXEC_FAILED"
  | "INTERNAL";

export class MicrosandboxError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** An option is missing, of the wrong type or out of range. `field` names it. */
export class InvalidOptionError extends MicrosandboxError {
  readonly field: string | undefined;

  constructor(message: string, field?: string, options?: { cause?: unknown }) {
    super("INVALID_OPTION", message, options);
    this.field = field;
  }
}

/** The image (a root directory for now) does not exist. */
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

/** The guest kernel, agent or runtime binary is not installed; run the setup script. */
export class MissingAssetError extends MicrosandboxError {
  constructor(message: string) {
    super("MISSING_ASSET", message);
  }
}

/** The VM did not come up. `consoleTail` holds the end of the guest's kernel console. */
export class BootFailedError extends MicrosandboxError {
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
  readonly errno: number | undefined;

  constructor(message: string, errno?: number) {
    super("EXEC_FAILED", message);
    this.errno = errno;
  }
}

/** Something failed on the host that the caller cannot fix by changing options. */
export class InternalError extends MicrosandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("INTERNAL", message, options);
  }
}

/** Maps an engine error (data from the addon) to its class. */
export function fromNative(error: Native.NativeError): MicrosandboxError {
  const { message } = error;
  switch (error.code as ErrorCode) {
    case "INVALID_OPTION":
      return new InvalidOptionError(message, error.field);
    case "IMAGE_NOT_FOUND":
      return new ImageNotFoundError(message);
    case "SANDBOX_EXISTS":
      return new SandboxExistsError(message);
    case "MISSING_ASSET":
      return new MissingAssetError(message);
    case "BOOT_FAILED":
      return new BootFailedError(message, error.consoleTail ?? "");
    case "SANDBOX_NOT_RUNNING":
      return new SandboxNotRunningError(message);
    case "COMMAND_NOT_FOUND":
      return new CommandNotFoundError(message);
    case "EXEC_FAILED":
      return new ExecFailedError(message, error.errno);
    default:
      return new InternalError(`${error.code}: ${message}`);
  }
}

/** Unwraps an addon result: a value, or a failure to throw as its typed error. */
export function unwrap<T extends object>(result: T | Native.NativeFailure): T {
  if ("failure" in result) {
    throw fromNative((result as Native.NativeFailure).failure);
  }
  return result;
}
