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

export interface FsStat {
  kind: "file" | "dir" | "symlink" | "other";
  size: number;
  /** Permission bits, e.g. 0o644. */
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
}

export interface FsEntry extends FsStat {
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

export class SandboxFs {
  readonly #native: Native.NativeFs;

  constructor(handle: Native.NativeFs) {
    this.#native = handle;
  }

  async read(path: string): Promise<Buffer> {
    checkPath("path", path);
    return unwrap(await this.#native.read(path));
  }

  async readString(path: string, encoding: BufferEncoding = "utf8"): Promise<string> {
    return (await this.read(path)).toString(encoding);
  }

  /** Writes a whole file; resolves to the bytes written. */
  async write(path: string, data: string | Uint8Array, options: WriteOptions = {}): Promise<number> {
    checkPath("path", path);
    checkWriteOptions(options);
    return unwrap(await this.#native.write(path, toBuffer(data), options));
  }

  /**
   * Entries of a directory, sorted by name; symlinks are described, not
   * followed. At most `maxEntries` (default 100 000): a larger directory
   * rejects with LimitExceededError.
   */
  async list(path: string, options: ListOptions = {}): Promise<FsEntry[]> {
    checkPath("path", path);
    checkListOptions(options);
    return unwrap(await this.#native.list(path, options.maxEntries)).map((e) => ({ name: e.name, ...toStat(e.stat) }));
  }

  async stat(path: string, options: { followSymlinks?: boolean } = {}): Promise<FsStat> {
    checkPath("path", path);
    return toStat(unwrap(await this.#native.stat(path, options.followSymlinks ?? true)));
  }

  /** Whether anything (a dangling symlink included) exists at `path`. */
  async exists(path: string): Promise<boolean> {
    checkPath("path", path);
    return unwrap(await this.#native.exists(path));
  }

  async mkdir(path: string, options: { recursive?: boolean; mode?: number } = {}): Promise<void> {
    checkPath("path", path);
    checkWriteOptions({ mode: options.mode });
    check(await this.#native.mkdir(path, options.mode ?? 0o755, options.recursive ?? false));
  }

  /** Removes a file, a symlink, an empty directory, or (recursive) a whole tree. */
  async remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    checkPath("path", path);
    check(await this.#native.remove(path, options.recursive ?? false));
  }

  async rename(from: string, to: string): Promise<void> {
    checkPath("from", from);
    checkPath("to", to);
    check(await this.#native.rename(from, to));
  }

  /** Copies a host file or directory tree into the guest; resolves to the bytes copied. */
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

  /** A guest file as a Node Readable, read as the consumer pulls: it may be larger than memory. */
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
   * finished ('finish' event, or `await finished(stream)`).
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
