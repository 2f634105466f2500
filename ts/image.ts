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
  auth?: Record<
    string,
    | {
        /** User name for basic authentication. */
        username: string;
        /** Password for basic authentication. */
        password: string;
      }
    | {
        /** Bearer token for this registry. */
        token: string;
      }
  >;
  /** Docker config file to read credentials from (default `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`). */
  dockerConfig?: string;
}

/**
 * When to contact the registry for an image reference: "always" pulls (layers
 * already cached are not downloaded again), "if-missing" only when the image is
 * not cached, "never" uses the cache or fails with ImageNotFoundError.
 */
export type PullPolicy = "always" | "if-missing" | "never";

/** Progress of an image pull, in order: `resolved`, per-layer events, `done`. Sizes are in bytes. */
export type PullEvent =
  | {
      /** The manifest was fetched: what will be downloaded. */
      kind: "resolved";
      /** Digest of the image manifest (`sha256:...`). */
      manifestDigest: string;
      /** The image's layers with their compressed sizes, in bytes. */
      layers: {
        /** Digest of the layer (`sha256:...`). */
        digest: string;
        /** Compressed size in bytes. */
        size: number;
      }[];
      /** Compressed size of all layers, in bytes. */
      totalBytes: number;
    }
  | {
      /** A layer was already in the cache: nothing to download. */
      kind: "layer-cached";
      /** Digest of the layer. */
      digest: string;
      /** Compressed size in bytes. */
      size: number;
    }
  | {
      /** Bytes of a layer arrived. */
      kind: "layer-progress";
      /** Digest of the layer. */
      digest: string;
      /** Bytes of the layer downloaded so far. */
      downloaded: number;
      /** Compressed size in bytes. */
      size: number;
    }
  | {
      /** A layer was downloaded, verified and unpacked. */
      kind: "layer-done";
      /** Digest of the layer. */
      digest: string;
      /** Compressed size in bytes. */
      size: number;
    }
  | {
      /** The image is in the cache. */
      kind: "done";
      /** Digest of the image manifest. */
      manifestDigest: string;
    };

/** Runtime defaults from an image's configuration; `env`, `workingDir` and `user` are a sandbox's defaults. */
export interface ImageConfig {
  /** Environment, as `KEY=value` strings. */
  env: string[];
  /** Default command (the image's `Cmd`). */
  cmd?: string[];
  /** Entrypoint (the image's `Entrypoint`). */
  entrypoint?: string[];
  /** Working directory (the image's `WorkingDir`). */
  workingDir?: string;
  /** User to run as (the image's `User`). */
  user?: string;
}

/** A cached image. */
export interface ImageInfo {
  /** Canonical reference, e.g. `127.0.0.1:5000/team/app:1.0`. */
  reference: string;
  /** Digest of the image manifest (`sha256:...`). */
  manifestDigest: string;
  /** Digest of the image configuration. */
  configDigest: string;
  /** Runtime defaults from the image: environment, command, working directory, user. */
  config: ImageConfig;
  /** Layer digests, in the manifest's order (base layer first). */
  layers: string[];
  /** Compressed size of the layers, in bytes. */
  size: number;
  /** When the image was pulled into the cache. */
  pulledAt: Date;
}

/** Options of {@link Image.pull}. */
export interface PullOptions {
  /** How to reach registries. */
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

/** The local image cache, shared by every sandbox of this state home (`MSB_HOME`). */
export class Image {
  private constructor() {}

  /**
   * Pulls `reference` into the local cache; layers already cached are not
   * downloaded again. Every blob is checked against its digest.
   *
   * @throws {InvalidOptionError} `reference` or a registry option is invalid; `field` names it.
   * @throws {ImageNotFoundError} The registry has no such image, or none for this platform.
   * @throws {RegistryUnreachableError} The registry could not be reached (after retries).
   * @throws {RegistryUnauthorizedError} The registry refused the credentials, or their absence.
   * @throws {ImageIntegrityError} Downloaded content did not match its digest or size; nothing was kept.
   * @throws {LayerRejectedError} The unpacker refused a layer (a path escape, a size limit, a malformed archive).
   * @throws {PullFailedError} The pull failed otherwise.
   * @throws {InternalError} The cache or the state database failed.
   */
  static async pull(reference: string, options: PullOptions = {}): Promise<ImageInfo> {
    checkReference(reference);
    checkRegistryOptions(options.registry);
    const onProgress = toNativePullEvent(options.onProgress);
    return toInfo(unwrap(await native.pullImage(reference, options.registry, { assetsDir }, onProgress)));
  }

  /**
   * Every cached image.
   *
   * @throws {InternalError} The cache or the state database failed.
   */
  static async list(): Promise<ImageInfo[]> {
    return unwrap(await native.listImages({ assetsDir })).map(toInfo);
  }

  /**
   * The cached image for `reference`; it never contacts a registry.
   *
   * @throws {InvalidOptionError} `reference` or a registry option is invalid; `field` names it.
   * @throws {ImageNotFoundError} The image is not cached.
   * @throws {InternalError} The cache or the state database failed.
   */
  static async inspect(
    reference: string,
    options: {
      /** Checked as in {@link Image.pull}; the cache is looked up by canonical name alone. */
      registry?: RegistryOptions;
    } = {},
  ): Promise<ImageInfo> {
    checkReference(reference);
    checkRegistryOptions(options.registry);
    return toInfo(unwrap(await native.inspectImage(reference, options.registry, { assetsDir })));
  }

  /**
   * Forgets `reference`. Refuses with ImageInUseError while a running sandbox
   * uses the image. Its files go at the next `prune()` if nothing else uses them.
   *
   * @throws {InvalidOptionError} `reference` or a registry option is invalid; `field` names it.
   * @throws {ImageNotFoundError} The image is not cached.
   * @throws {ImageInUseError} A running sandbox uses the image.
   * @throws {InternalError} The cache or the state database failed.
   */
  static async remove(
    reference: string,
    options: {
      /** Checked as in {@link Image.pull}; the cache is looked up by canonical name alone. */
      registry?: RegistryOptions;
    } = {},
  ): Promise<void> {
    checkReference(reference);
    checkRegistryOptions(options.registry);
    check(await native.removeImage(reference, options.registry, { assetsDir }));
  }

  /**
   * Deletes cached root filesystems and layers that no known image uses.
   *
   * @throws {InternalError} The cache or the state database failed.
   */
  static async prune(): Promise<{
    /** Root filesystems deleted. */
    images: number;
    /** Layers deleted. */
    layers: number;
  }> {
    return unwrap(await native.pruneImages({ assetsDir }));
  }
}
