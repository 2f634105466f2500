// Named volumes: storage that outlives sandboxes, mounted with
// `volumes: { "/data": { named: "data" } }`. Records and rules are the
// engine's; `Volume.fs()` reads and writes a dir volume's files on the host.
import * as fs from "node:fs/promises";
import * as path from "node:path";

import {
  FsNotFoundError,
  InvalidOptionError,
  LimitExceededError,
  VolumeNotFoundError,
  check,
  fsErrorFromHost,
  unwrap,
} from "./errors";
import type { FsEntry, FsStat } from "./fs";
import { assetsDir, native, type Native } from "./native";

/** Options of {@link Volume.create}. */
export interface VolumeOptions {
  /** 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit. */
  name: string;
  /**
   * Cap in MiB (16 to 1048576). A capped volume is a `disk` volume: an ext4
   * image of exactly this size, where a write past the cap fails in the guest
   * with ENOSPC and `df` shows the cap. Default: no cap (a `dir` volume).
   */
  quotaMib?: number;
  /**
   * `dir`: a host directory, shared with any number of running sandboxes at
   * once, readable and writable from the host with {@link Volume.fs}.
   * `disk`: an ext4 image of `quotaMib`, mounted by one running sandbox at a
   * time. Default: `disk` when `quotaMib` is given, else `dir`.
   */
  kind?: "dir" | "disk";
}

/** Host disk space a volume takes. */
export interface VolumeUsage {
  /** Bytes its contents occupy on the host (a disk image counts only what was written). */
  usedBytes: number;
  /** The quota in bytes, for a disk volume. */
  capacityBytes?: number;
}

const shape: Record<keyof VolumeOptions, string> = { name: "string", quotaMib: "number", kind: "string" };

/**
 * A named volume. Sandboxes mount it with
 * `volumes: { "/data": { named: volume.name, readonly?: boolean } }`; it
 * lives on (under `MSB_HOME/volumes/`) until {@link Volume.remove}.
 */
export class Volume {
  /** The volume's name. */
  readonly name: string;
  /** `dir` (a shared host directory) or `disk` (an ext4 image of the quota). */
  readonly kind: "dir" | "disk";
  /** The cap in MiB, for a disk volume. */
  readonly quotaMib: number | undefined;
  /** When it was created. */
  readonly createdAt: Date;
  /** The host directory (`dir`) or image file (`disk`) holding its contents. */
  readonly path: string;

  private constructor(info: Native.NativeVolumeInfo) {
    this.name = info.name;
    this.kind = info.kind as "dir" | "disk";
    this.quotaMib = info.quotaMib ?? undefined;
    this.createdAt = new Date(info.createdAtMs);
    this.path = info.path;
  }

  /**
   * Creates a volume.
   *
   * @throws {InvalidOptionError} An option is unknown, mistyped or out of range, or `quotaMib`
   *   was given with `kind: "dir"`; `field` names it.
   * @throws {VolumeAlreadyExistsError} A volume of this name exists.
   * @throws {MissingAssetError} A disk volume needs `mkfs.ext4` (e2fsprogs), which is not installed.
   * @throws {InternalError} A host-side failure (state home, disk full).
   */
  static async create(options: VolumeOptions): Promise<Volume> {
    if (typeof options !== "object" || options === null) throw new InvalidOptionError("options: must be an object", "options");
    for (const [key, value] of Object.entries(options)) {
      if (!(key in shape)) throw new InvalidOptionError(`${key}: unknown option (known: ${Object.keys(shape).join(", ")})`, key);
      if (value !== undefined && typeof value !== shape[key as keyof VolumeOptions]) {
        throw new InvalidOptionError(`${key}: must be a ${shape[key as keyof VolumeOptions]}`, key);
      }
    }
    if (options.name === undefined) throw new InvalidOptionError("name: is required", "name");
    return new Volume(unwrap(await native.createVolume(options, { assetsDir })));
  }

  /**
   * The volume named `name`.
   *
   * @throws {VolumeNotFoundError} There is no such volume.
   */
  static async get(name: string): Promise<Volume> {
    return new Volume(unwrap(await native.getVolume(name, { assetsDir })));
  }

  /** Every volume, by name. */
  static async list(): Promise<Volume[]> {
    return unwrap(await native.listVolumes({ assetsDir })).map((info) => new Volume(info));
  }

  /**
   * Deletes a volume and everything in it.
   *
   * @throws {VolumeNotFoundError} There is no such volume.
   * @throws {VolumeInUseError} A running sandbox mounts it.
   */
  static async remove(name: string): Promise<void> {
    check(await native.removeVolume(name, { assetsDir }));
  }

  /** {@link Volume.remove} of this volume. */
  async remove(): Promise<void> {
    await Volume.remove(this.name);
  }

  /** Host disk space the volume takes now. */
  async usage(): Promise<VolumeUsage> {
    const usage = unwrap(await native.volumeUsage(this.name, { assetsDir }));
    return { usedBytes: usage.usedBytes, capacityBytes: usage.capacityBytes ?? undefined };
  }

  /**
   * The volume's files, read and written on the host with no VM (a `dir`
   * volume; a disk volume's files are reached through a sandbox that mounts
   * it). Paths are relative to the volume's root (`/` is the root).
   *
   * @throws {InvalidOptionError} The volume is a disk volume; `field` is `kind`.
   */
  fs(): VolumeFs {
    if (this.kind !== "dir") {
      throw new InvalidOptionError(
        `volume ${this.name} is a disk volume: its ext4 image is read through a sandbox that mounts it, never parsed on the host`,
        "kind",
      );
    }
    return new VolumeFs(this.name, this.path);
  }
}

/**
 * A dir volume's files on the host, with the method names of
 * `sandbox.fs()`. Every path stays inside the volume: `..` is refused and no
 * symlink is followed. What guests wrote appears as the host stores it (see
 * docs/storage.md): plain files, their guest owners and modes kept aside as
 * extended attributes.
 */
export class VolumeFs {
  readonly #name: string;
  readonly #root: string;

  /** `Volume.fs()` makes this. */
  constructor(name: string, root: string) {
    this.#name = name;
    this.#root = root;
  }

  /** The host path of `p`, after checking each component exists as no symlink (the last may be missing). */
  async #resolve(p: string): Promise<string> {
    if (typeof p !== "string" || p.includes("\0")) throw new InvalidOptionError("path: must be a string without NUL", "path");
    const parts = p.split("/").filter((part) => part !== "" && part !== ".");
    if (parts.includes("..")) throw new InvalidOptionError(`path: ${p} may not contain '..'`, "path");
    let current = this.#root;
    try {
      await fs.access(this.#root);
    } catch {
      throw new VolumeNotFoundError(`volume ${this.#name} was removed`, "name");
    }
    for (const [i, part] of parts.entries()) {
      current = path.join(current, part);
      const last = i === parts.length - 1;
      try {
        const stat = await fs.lstat(current);
        if (stat.isSymbolicLink()) throw new InvalidOptionError(`path: ${p} passes through a symlink`, "path");
      } catch (err) {
        if (err instanceof InvalidOptionError) throw err;
        if (!last) throw fsErrorFromHost(err as NodeJS.ErrnoException, p);
      }
    }
    return current;
  }

  async #host<T>(p: string, op: (host: string) => Promise<T>): Promise<T> {
    const host = await this.#resolve(p);
    try {
      return await op(host);
    } catch (err) {
      throw fsErrorFromHost(err as NodeJS.ErrnoException, p);
    }
  }

  /** The whole content of a file. @throws {FsNotFoundError} No such file. */
  async read(p: string): Promise<Buffer> {
    return this.#host(p, (host) => fs.readFile(host, { flag: fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW }));
  }

  /** A file's content as text. @throws {FsNotFoundError} No such file. */
  async readString(p: string, encoding: BufferEncoding = "utf8"): Promise<string> {
    return (await this.read(p)).toString(encoding);
  }

  /**
   * Writes a file (replacing it, or appending), creating missing parents when asked.
   * Returns the bytes written.
   */
  async write(p: string, data: string | Uint8Array, options: { append?: boolean; mode?: number; createParents?: boolean } = {}): Promise<number> {
    const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
    if (options.createParents) await this.mkdir(path.posix.dirname(`/${p}`), { recursive: true });
    const { O_WRONLY, O_CREAT, O_NOFOLLOW, O_APPEND, O_TRUNC } = fs.constants;
    const flags = O_WRONLY | O_CREAT | O_NOFOLLOW | (options.append ? O_APPEND : O_TRUNC);
    await this.#host(p, (host) => fs.writeFile(host, bytes, { flag: flags, mode: (options.mode ?? 0o644) & 0o777 }));
    return bytes.length;
  }

  /**
   * The entries of a directory sorted by name, as the host stores them.
   *
   * @throws {LimitExceededError} More than `maxEntries` (default 100 000) entries: a guest may
   *   have made any number.
   */
  async list(p: string, options: { maxEntries?: number } = {}): Promise<FsEntry[]> {
    const max = options.maxEntries ?? 100_000;
    if (!Number.isInteger(max) || max < 1) throw new InvalidOptionError("maxEntries: must be a positive integer", "maxEntries");
    const host = await this.#resolve(p);
    const names: string[] = [];
    try {
      const dir = await fs.opendir(host);
      for await (const entry of dir) {
        if (names.length === max) {
          throw new LimitExceededError(`${p}: more than ${max} entries`, { field: "maxEntries", path: p });
        }
        names.push(entry.name);
      }
    } catch (err) {
      if (err instanceof LimitExceededError) throw err;
      throw fsErrorFromHost(err as NodeJS.ErrnoException, p);
    }
    const entries: FsEntry[] = [];
    for (const name of names.sort()) {
      try {
        entries.push({ name, ...toStat(await fs.lstat(path.join(host, name))) });
      } catch (err) {
        // Removed (by a running guest) between the listing and the lstat.
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw fsErrorFromHost(err as NodeJS.ErrnoException, p);
      }
    }
    return entries;
  }

  /** What the host reports about a file (never following a symlink). */
  async stat(p: string): Promise<FsStat> {
    return this.#host(p, async (host) => toStat(await fs.lstat(host)));
  }

  /** Whether anything exists at `p`. */
  async exists(p: string): Promise<boolean> {
    try {
      await this.stat(p);
      return true;
    } catch (err) {
      if (err instanceof FsNotFoundError) return false;
      throw err;
    }
  }

  /** Creates a directory (and, `recursive`, its parents). */
  async mkdir(p: string, options: { recursive?: boolean; mode?: number } = {}): Promise<void> {
    const parts = p.split("/").filter((part) => part !== "" && part !== ".");
    if (!options.recursive) {
      await this.#host(p, (host) => fs.mkdir(host, { mode: (options.mode ?? 0o755) & 0o777 }));
      return;
    }
    // One level at a time, so that every component is checked as it appears.
    for (let i = 1; i <= parts.length; i++) {
      const sub = parts.slice(0, i).join("/");
      await this.#host(sub, async (host) => {
        try {
          await fs.mkdir(host, { mode: (options.mode ?? 0o755) & 0o777 });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EEXIST" || !(await fs.lstat(host)).isDirectory()) throw err;
        }
      });
    }
  }

  /** Removes a file, an empty directory, or (recursive) a whole tree. */
  async remove(p: string, options: { recursive?: boolean } = {}): Promise<void> {
    const host = await this.#resolve(p);
    if (host === this.#root) throw new InvalidOptionError("path: the volume's root cannot be removed", "path");
    try {
      const stat = await fs.lstat(host);
      if (stat.isDirectory()) await fs.rm(host, { recursive: options.recursive ?? false });
      else await fs.unlink(host);
    } catch (err) {
      throw fsErrorFromHost(err as NodeJS.ErrnoException, p);
    }
  }

  /** Renames `from` to `to` inside the volume, as rename(2) does. */
  async rename(from: string, to: string): Promise<void> {
    const source = await this.#resolve(from);
    const target = await this.#resolve(to);
    try {
      await fs.rename(source, target);
    } catch (err) {
      throw fsErrorFromHost(err as NodeJS.ErrnoException, from);
    }
  }
}

function toStat(stat: import("node:fs").Stats): FsStat {
  const kind = stat.isFile() ? "file" : stat.isDirectory() ? "dir" : stat.isSymbolicLink() ? "symlink" : "other";
  return { kind, size: stat.size, mode: stat.mode & 0o7777, uid: stat.uid, gid: stat.gid, mtime: stat.mtime };
}
