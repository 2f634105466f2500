// microsandbox: run untrusted code inside microVMs from Node.
export { Sandbox, ExecOutput, type BootInfo } from "./sandbox";
export type { SandboxOptions, ExecOptions } from "./options";
export {
  MicrosandboxError,
  InvalidOptionError,
  ImageNotFoundError,
  SandboxExistsError,
  MissingAssetError,
  BootFailedError,
  SandboxNotRunningError,
  CommandNotFoundError,
  ExecFailedError,
  InternalError,
  type ErrorCode,
} from "./errors";
