// OCI images: pull into the local cache (shared by every sandbox of this state
// home), list, inspect, remove, prune.
import { check, InvalidOptionError, unwrap } from "./errors";
import { assetsDir, native, type Native } from "./native";

/** How to reach registries. */
export interface RegistryOptions {
  /** `host[:port]` of a mirror serving the default registry (short names like `python:3.12`). */
  mirror?: string;
  /** Registries (`host[:port]`) spoken to over plain HTTP, e.g. a local one. */
  insecure?: string[];
  /** PEM files of extra root certificates to trust. */
  caCertificates?: string[];
  /** Credentials per registry `host[:port]`; otherwise `~/.docker/config.json`, then anonymous. */
  auth?: Record<string, { username: string; password: string } | { token: string }>;
  /** Docker config file to read credentials from (default `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`). */
  dockerConfig?: string;
}

export type PullPolicy = "always" | "if-missing" | "never";

export type PullEvent =
  | { kind: "resolved"; manifestDigest: string; layers: { digest: string; size: number }[]; totalBytes: number }
  | { kind: "layer-cached"; digest: string; size: number }
  | { kind: "layer-progress"; digest: string; downloaded: number; size: number }
  | { kind: "layer-done"; digest: string; size: number }
  | { kind: "done"; manifestDigest: string };

export interface ImageConfig {
  env: string[];
  cmd?: string[];
  entrypoint?: string[];
  workingDir?: string;
  user?: string;
}

export interface ImageInfo {
  /** Canonical reference, e.g. `127.0.0.1:5000/team/app:1.0`. */
  reference: string;
  manifestDigest: string;
  configDigest: string;
  /** Runtime defaults from the image: environment, command, working directory, user. */
  config: ImageConfig;
  layers: string[];
  /** Compressed size of the layers, in bytes. */
  size: number;
  pulledAt: Date;
}

export interface PullOptions {
  registry?: RegistryOptions;
  /** Called as the pull progresses (per-layer bytes and the total), for progress bars. */
  onProgress?: (event: PullEvent) => void;
}

export function checkRegistryOptions(registry: unknown): asserts registry is RegistryOptions | undefined {
  if (registry === undefined) return;
  if (typeof registry !== "object" || registry === null) {
    throw new InvalidOptionError("registry: must be an object", "registry");
  }
  const known = ["mirror", "insecure", "caCertificates", "auth", "dockerConfig"];
  for (const key of Object.keys(registry)) {
    if (!known.includes(key)) {
      throw new InvalidOptionError(`registry.${key}: unknown option (known: ${known.join(", ")})`, `registry.${key}`);
    }
  }
  const { auth } = registry as RegistryOptions;
  for (const [host, credentials] of Object.entries(auth ?? {})) {
    const ok =
      typeof credentials === "object" &&
      credentials !== null &&
      ("token" in credentials
        ? typeof credentials.token === "string"
        : typeof credentials.username === "string" && typeof credentials.password === "string");
    if (!ok) {
      throw new InvalidOptionError(`registry.auth.${host}: needs { username, password } or { token }`, `registry.auth.${host}`);
    }
  }
}

export function toNativePullEvent(callback: ((event: PullEvent) => void) | undefined) {
  if (callback === undefined) return undefined;
  if (typeof callback !== "function") {
    throw new InvalidOptionError("onProgress: must be a function", "onProgress");
  }
  return (event: Native.NativePullEvent) => {
    switch (event.kind) {
      case "resolved":
        callback({
          kind: "resolved",
          manifestDigest: event.digest!,
          layers: event.layers ?? [],
          totalBytes: event.totalBytes ?? 0,
        });
        break;
      case "layer-progress":
        callback({ kind: "layer-progress", digest: event.digest!, downloaded: event.downloaded ?? 0, size: event.size ?? 0 });
        break;
      case "layer-cached":
      case "layer-done":
        callback({ kind: event.kind, digest: event.digest!, size: event.size ?? 0 });
        break;
      case "done":
        callback({ kind: "done", manifestDigest: event.digest! });
        break;
    }
  };
}

function toInfo(raw: Native.NativeImageInfo): ImageInfo {
  return { ...raw, pulledAt: new Date(raw.pulledAt * 1000) };
}

function checkReference(reference: unknown): asserts reference is string {
  if (typeof reference !== "string" || reference.length === 0) {
    throw new InvalidOptionError("reference: must be a non-empty string", "reference");
  }
}

export class Image {
  private constructor() {}

  /** Pulls `reference` into the local cache; layers already cached are not downloaded again. */
  static async pull(reference: string, options: PullOptions = {}): Promise<ImageInfo> {
    checkReference(reference);
    checkRegistryOptions(options.registry);
    const onProgress = toNativePullEvent(options.onProgress);
    return toInfo(unwrap(await native.pullImage(reference, options.registry, { assetsDir }, onProgress)));
  }

  /** Every cached image reference. */
  static async list(): Promise<ImageInfo[]> {
    return unwrap(await native.listImages({ assetsDir })).map(toInfo);
  }

  /** The cached image for `reference`; ImageNotFoundError when it is not cached. */
  static async inspect(reference: string, options: { registry?: RegistryOptions } = {}): Promise<ImageInfo> {
    checkReference(reference);
    checkRegistryOptions(options.registry);
    return toInfo(unwrap(await native.inspectImage(reference, options.registry, { assetsDir })));
  }

  /**
   * Forgets `reference`. Refuses with ImageInUseError while a running sandbox
   * uses the image. Its files go at the next `prune()` if nothing else uses them.
   */
  static async remove(reference: string, options: { registry?: RegistryOptions } = {}): Promise<void> {
    checkReference(reference);
    checkRegistryOptions(options.registry);
    check(await native.removeImage(reference, options.registry, { assetsDir }));
  }

  /** Deletes cached root filesystems and layers that no known image uses. */
  static async prune(): Promise<{ images: number; layers: number }> {
    return unwrap(await native.pruneImages({ assetsDir }));
  }
}
