// microsandbox: run untrusted code inside microVMs from Node.
export {
  Sandbox,
  type BootInfo,
  type SandboxInfo,
  type SandboxStatus,
  type RemoveOptions,
  type SandboxMetrics,
  type MetricsStreamOptions,
  type LogLine,
  type LogOptions,
  type StartOptions,
  type StopStatus,
  type ExecConfig,
} from "./sandbox";
export {
  CodeSandbox,
  PythonSandbox,
  NodeSandbox,
  type CodeSandboxOptions,
  type CodeSandboxPrewarmOptions,
  type RunOptions,
} from "./runner/sandboxes";
export { Execution, type ExecutionStatus } from "./runner/execution";
export type { ExecutionException, ExecutionResult } from "./runner/protocol";
export { CreateSession, type PullProgress } from "./progress";
export { WarmPool, type PrewarmOptions } from "./pool";
export { SandboxBuilder, MountBuilder } from "./builder";
export { isInstalled, install } from "./install";
export { ExecOutput, ExecHandle, ExecStdin, type ExecEvent, type ExitEvent } from "./exec";
export { SandboxFs, type FsStat, type FsEntry } from "./fs";
export { Patch } from "./patch";
export { Volume, VolumeFs, type VolumeOptions, type VolumeUsage } from "./volume";
export {
  Image,
  type ImageInfo,
  type ImageConfig,
  type PullEvent,
  type PullPolicy,
  type PullOptions,
  type RegistryOptions,
} from "./image";
export type {
  SandboxOptions,
  ExecOptions,
  WriteOptions,
  ListOptions,
  CopyToHostOptions,
  TtySize,
  NetworkOptions,
  NetworkRule,
  SecretEnv,
  TlsOptions,
  VolumeMount,
} from "./options";
export {
  MicrosandboxError,
  InvalidOptionError,
  InvalidConfigError,
  ImageNotFoundError,
  SandboxExistsError,
  SandboxNotFoundError,
  SandboxRunningError,
  SandboxStillRunningError,
  VolumeNotFoundError,
  VolumeAlreadyExistsError,
  VolumeInUseError,
  VolumeBusyError,
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
  InterpreterFailedError,
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
  GuestProtocolError,
  SecretViolationError,
  LimitExceededError,
  AbortedError,
  InternalError,
  type ErrorCode,
  type FsErrorCode,
} from "./errors";
