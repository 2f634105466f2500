// microsandbox: run untrusted code inside microVMs from Node.
export { Sandbox, type BootInfo } from "./sandbox";
export { ExecOutput, ExecHandle, ExecStdin, type ExecEvent, type ExitEvent } from "./exec";
export { SandboxFs, type FsStat, type FsEntry } from "./fs";
export { Patch } from "./patch";
export {
  Image,
  type ImageInfo,
  type ImageConfig,
  type PullEvent,
  type PullPolicy,
  type PullOptions,
  type RegistryOptions,
} from "./image";
export type { SandboxOptions, ExecOptions, WriteOptions, TtySize, NetworkOptions, NetworkRule } from "./options";
export {
  MicrosandboxError,
  InvalidOptionError,
  ImageNotFoundError,
  SandboxExistsError,
  PortInUseError,
  MissingAssetError,
  BootFailedError,
  PatchFailedError,
  ImageInUseError,
  RegistryUnreachableError,
  RegistryUnauthorizedError,
  ImageIntegrityError,
  LayerRejectedError,
  PullFailedError,
  SandboxNotRunningError,
  CommandNotFoundError,
  UserNotFoundError,
  ExecFailedError,
  ExecTimeoutError,
  ExecAbortedError,
  FsError,
  FsNotFoundError,
  FsPermissionError,
  FsExistsError,
  FsNotADirectoryError,
  FsIsADirectoryError,
  FsNotEmptyError,
  HostIoError,
  InternalError,
  type ErrorCode,
  type FsErrorCode,
} from "./errors";
