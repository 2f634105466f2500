// The guest filesystem. Paths are guest paths: absolute, or relative to the
// sandbox's workdir. The guest resolves them as its own processes would, inside
// the sandbox root: `..` and symlinks never lead out of it.
import { Readable, Writable } from "node:stream";

import { check, unwrap } from "./errors";
import { native as addon, type Native } from "./native";
import {
  checkCopyToHostOptions,
  checkListOptions,
  checkPath,
  checkWriteOptions,
  type CopyToHostOptions,
  type ListOptions,
  type WriteOptions,
} from "./options";

/** What the guest reports about a file: its kind, size, mode, owner and modification time. */
export interface FsStat {
  /** A regular file, a directory, a symlink, or anything else (device, FIFO, socket). */
  kind: "file" | "dir" | "symlink" | "other";
  /** Size in bytes. */
  size: number;
  /** Permission bits, e.g. 0o644. */
  mode: number;
  /** Owner's user id in the guest. */
  uid: number;
  /** Owner's group id in the guest. */
  gid: number;
  /** Last modification time. */
  mtime: Date;
}

/** A directory entry: its name and what {@link SandboxFs.stat} would report without following symlinks. */
export interface FsEntry extends FsStat {
  /** The entry's name: a single path component. */
  name: string;
}

function toStat(raw: Native.NativeFileStat): FsStat {
  return {
    kind: raw.kind as FsStat["kind"],
    size: raw.size,
    mode: raw.mode,
    uid: raw.uid,
    gid: raw.gid,
    mtime: new Date(raw.mtimeMs),
  };
}

function toBuffer(data: string | Uint8Array): Buffer {
  return typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** Runs `accept` on the resolved value and reports to a stream callback. */
function settle<T>(promise: Promise<T>, accept: (value: T) => unknown, callback: (err?: Error | null) => void): void {
  promise.then(
    (value) => {
      try {
        accept(value);
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
    (err: Error) => callback(err),
  );
}

/**
 * The guest filesystem of a sandbox (`sandbox.fs()`). Paths are guest paths,
 * absolute or relative to the sandbox's `workdir`, resolved inside the sandbox
 * root. Guest failures reject with FsError subclasses carrying `errno` and `path`.
 */
export class SandboxFs {
  readonly #native: Native.NativeFs;

  /**
   * Wraps the addon's handle; `Sandbox.fs()` makes this.
   *
   * @internal
   */
  constructor(handle: Native.NativeFs) {
    this.#native = handle;
  }

  /**
   * A whole regular file, read into memory.
   *
   * @throws {InvalidOptionError} `path` is empty or holds a NUL byte; `field` names it.
   * @throws {FsNotFoundError} Nothing exists at `path`.
   * @throws {FsPermissionError} The guest denied access.
   * @throws {FsIsADirectoryError} `path` is a directory.
   * @throws {FsError} Any other guest failure (not a regular file, ...), or no answer within 120 s.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   */
  async read(path: string): Promise<Buffer> {
    checkPath("path", path);
    return unwrap(await this.#native.read(path));
  }

  /**
   * A whole regular file, decoded as `encoding` (default UTF-8).
   *
   * @throws {InvalidOptionError} `path` is empty or holds a NUL byte; `field` names it.
   * @throws {FsNotFoundError} Nothing exists at `path`.
   * @throws {FsPermissionError} The guest denied access.
   * @throws {FsIsADirectoryError} `path` is a directory.
   * @throws {FsError} Any other guest failure (not a regular file, ...), or no answer within 120 s.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   */
  async readString(path: string, encoding: BufferEncoding = "utf8"): Promise<string> {
    return (await this.read(path)).toString(encoding);
  }

  /**
   * Writes a whole file (a string as UTF-8); resolves to the bytes written.
   *
   * @throws {InvalidOptionError} `path` is empty or holds a NUL byte, or an option is invalid; `field` names it.
   * @throws {FsNotFoundError} The parent directory is missing (see `createParents`).
   * @throws {FsPermissionError} The guest denied access.
   * @throws {FsIsADirectoryError} `path` is a directory.
   * @throws {FsNotADirectoryError} A parent of `path` is not a directory.
   * @throws {FsError} Any other guest failure (`errno`, `path`), or no answer within 120 s.
   * @throws {HostIoError} Content over 1 MiB could not be staged in a host file.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   */
  async write(path: string, data: string | Uint8Array, options: WriteOptions = {}): Promise<number> {
    checkPath("path", path);
    checkWriteOptions(options);
    return unwrap(await this.#native.write(path, toBuffer(data), options));
  }

  /**
   * Entries of a directory, sorted by name; symlinks are described, not
   * followed. At most `maxEntries` (default 100 000): a larger directory
   * rejects with LimitExceededError.
   *
   * @throws {InvalidOptionError} `path` is empty or holds a NUL byte, or `maxEntries` is invalid; `field` names it.
   * @throws {LimitExceededError} The directory has more than `maxEntries` entries (`field` is "maxEntries").
   * @throws {FsNotFoundError} Nothing exists at `path`.
   * @throws {FsNotADirectoryError} `path` is not a directory.
   * @throws {FsPermissionError} The guest denied access.
   * @throws {FsError} Any other guest failure (`errno`, `path`), or no answer within 120 s.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   */
  async list(path: string, options: ListOptions = {}): Promise<FsEntry[]> {
    checkPath("path", path);
    checkListOptions(options);
    return unwrap(await this.#native.list(path, options.maxEntries)).map((e) => ({ name: e.name, ...toStat(e.stat) }));
  }

  /**
   * What the guest reports about `path`.
   *
   * @throws {InvalidOptionError} `path` is empty or holds a NUL byte; `field` names it.
   * @throws {FsNotFoundError} Nothing exists at `path`.
   * @throws {FsNotADirectoryError} A parent of `path` is not a directory.
   * @throws {FsPermissionError} The guest denied access.
   * @throws {FsError} Any other guest failure (`errno`, `path`), or no answer within 120 s.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   */
  async stat(
    path: string,
    options: {
      /** Describe what a symlink points to, not the link itself. Default true. */
      followSymlinks?: boolean;
    } = {},
  ): Promise<FsStat> {
    checkPath("path", path);
    return toStat(unwrap(await this.#native.stat(path, options.followSymlinks ?? true)));
  }

  /**
   * Whether anything (a dangling symlink included) exists at `path`.
   *
   * @throws {InvalidOptionError} `path` is empty or holds a NUL byte; `field` names it.
   * @throws {FsPermissionError} The guest denied access.
   * @throws {FsError} Any other guest failure (`errno`, `path`), or no answer within 120 s.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   */
  async exists(path: string): Promise<boolean> {
    checkPath("path", path);
    return unwrap(await this.#native.exists(path));
  }

  /**
   * Creates a directory.
   *
   * @throws {InvalidOptionError} `path` is empty or holds a NUL byte, or `mode` is not from 0 to
   *   0o7777; `field` names it.
   * @throws {FsExistsError} Something exists at `path` (without `recursive`).
   * @throws {FsNotFoundError} The parent directory is missing (without `recursive`).
   * @throws {FsNotADirectoryError} A parent of `path` is not a directory.
   * @throws {FsPermissionError} The guest denied access.
   * @throws {FsError} Any other guest failure (`errno`, `path`), or no answer within 120 s.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   */
  async mkdir(
    path: string,
    options: {
      /** Create missing parents too, and accept an existing directory. Default false. */
      recursive?: boolean;
      /** Permission bits the directory gets, e.g. 0o700. Default 0o755. */
      mode?: number;
    } = {},
  ): Promise<void> {
    checkPath("path", path);
    checkWriteOptions({ mode: options.mode });
    check(await this.#native.mkdir(path, options.mode ?? 0o755, options.recursive ?? false));
  }

  /**
   * Removes a file, a symlink, an empty directory, or (recursive) a whole tree.
   *
   * @throws {InvalidOptionError} `path` is empty, holds a NUL byte or is the root directory; `field` names it.
   * @throws {FsNotFoundError} Nothing exists at `path`.
   * @throws {FsNotEmptyError} `path` is a directory with entries (without `recursive`).
   * @throws {FsPermissionError} The guest denied access.
   * @throws {FsError} Any other guest failure (`errno`, `path`), or no answer within 120 s.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   */
  async remove(
    path: string,
    options: {
      /** Remove a directory with everything in it. Default false. */
      recursive?: boolean;
    } = {},
  ): Promise<void> {
    checkPath("path", path);
    check(await this.#native.remove(path, options.recursive ?? false));
  }

  /**
   * Renames or moves `from` to `to`, replacing what `to` names as rename(2) does.
   *
   * @throws {InvalidOptionError} `from` or `to` is empty or holds a NUL byte; `field` names it.
   * @throws {FsNotFoundError} `from`, or the parent of `to`, does not exist.
   * @throws {FsNotEmptyError} `to` is a directory with entries.
   * @throws {FsIsADirectoryError} `to` is a directory and `from` is not.
   * @throws {FsNotADirectoryError} `from` is a directory and `to` is not, or a parent is not a directory.
   * @throws {FsPermissionError} The guest denied access.
   * @throws {FsError} Any other guest failure (`errno`, `path`), or no answer within 120 s.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   */
  async rename(from: string, to: string): Promise<void> {
    checkPath("from", from);
    checkPath("to", to);
    check(await this.#native.rename(from, to));
  }

  /**
   * Copies a host file or directory tree into the guest, modes and symlinks
   * kept; resolves to the bytes of file content copied.
   *
   * @throws {InvalidOptionError} `hostPath` or `guestPath` is empty or holds a NUL byte; `field` names it.
   * @throws {HostIoError} A host file or directory could not be read (`errno`, `path`).
   * @throws {FsNotFoundError} The guest parent directory is missing.
   * @throws {FsPermissionError} The guest denied access.
   * @throws {FsError} Any other guest failure (`errno`, `path`), or no answer within 120 s.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   * @throws {GuestProtocolError} The guest broke the agent protocol; the sandbox was stopped.
   */
  async copyFromHost(hostPath: string, guestPath: string): Promise<number> {
    checkPath("hostPath", hostPath);
    checkPath("guestPath", guestPath);
    return unwrap(await this.#native.copyFromHost(hostPath, guestPath));
  }

  /**
   * Copies a guest file or directory tree to the host; resolves to the bytes
   * copied. Each file appears under its name only once complete. Nothing is
   * created outside `hostPath` (guest names are single path components and
   * host symlinks are not followed); modes lose setuid/setgid/sticky and get
   * the umask; a directory that already existed keeps its mode; symlinks and
   * special files are not copied. Limits (`maxBytes`, `maxEntries`,
   * `maxDepth`) reject with LimitExceededError, `signal` with AbortedError.
   *
   * @throws {InvalidOptionError} `guestPath` or `hostPath` is empty or holds a NUL byte, or an option
   *   is invalid; `field` names it.
   * @throws {LimitExceededError} `maxBytes`, `maxEntries` or `maxDepth` was reached; `field` names it.
   * @throws {AbortedError} `signal` fired; no temporary file is left.
   * @throws {HostIoError} A host file or directory could not be created or written (`errno`, `path`).
   * @throws {FsNotFoundError} Nothing exists at `guestPath`.
   * @throws {FsPermissionError} The guest denied access.
   * @throws {FsError} Any other guest failure (`errno`, `path`), or no answer within 120 s.
   * @throws {GuestProtocolError} The guest sent what no honest guest sends (a path-like name, ...);
   *   the sandbox was stopped.
   * @throws {SandboxNotRunningError} The sandbox was stopped or its VM exited.
   */
  async copyToHost(guestPath: string, hostPath: string, options: CopyToHostOptions = {}): Promise<number> {
    checkPath("guestPath", guestPath);
    checkPath("hostPath", hostPath);
    checkCopyToHostOptions(options);
    const { signal, ...limits } = options;
    const cancel = new addon.NativeCancel();
    if (signal?.aborted) cancel.cancel();
    const onAbort = () => cancel.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return unwrap(await this.#native.copyToHost(guestPath, hostPath, limits, cancel));
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * A guest file as a Node Readable, read as the consumer pulls: it may be
   * larger than memory. Failures are emitted as the stream's `error`: the
   * FsError subclasses of {@link SandboxFs.read}, SandboxNotRunningError,
   * GuestProtocolError.
   *
   * @throws {InvalidOptionError} `path` is empty or holds a NUL byte; `field` names it.
   */
  readStream(path: string): Readable {
    checkPath("path", path);
    const native = this.#native;
    async function* chunks(): AsyncGenerator<Buffer> {
      const reader = unwrap(await native.readStream(path));
      for (let chunk = unwrap(await reader.next()); chunk; chunk = unwrap(await reader.next())) {
        yield chunk;
      }
    }
    return Readable.from(chunks(), { objectMode: false });
  }

  /**
   * A guest file as a Node Writable. The file is complete once the stream has
   * finished ('finish' event, or `await finished(stream)`). Failures are
   * emitted as the stream's `error`: those of {@link SandboxFs.write}.
   *
   * @throws {InvalidOptionError} `path` is empty or holds a NUL byte, or an option is invalid; `field` names it.
   */
  writeStream(path: string, options: WriteOptions = {}): Writable {
    checkPath("path", path);
    checkWriteOptions(options);
    const native = this.#native;
    let writer: Native.NativeFileWriter;
    return new Writable({
      construct(callback) {
        settle(native.writeStream(path, options), (result) => (writer = unwrap(result)), callback);
      },
      write(chunk: Buffer, _encoding, callback) {
        settle(writer.write(chunk), check, callback);
      },
      final(callback) {
        settle(writer.finish(), unwrap, callback);
      },
    });
  }
}
