// Patches: changes made to a sandbox's root before `Sandbox.create` resolves.
// They land in the sandbox's own writable layer: the image is never modified
// and other sandboxes of the same image do not see them.

/**
 * A change to a sandbox's root, made before `Sandbox.create` resolves (its
 * `patches` option). Make them with the {@link Patch} functions.
 */
export type Patch =
  | {
      /** Creates or replaces a file. */
      readonly kind: "text";
      /** Absolute guest path of the file. */
      readonly path: string;
      /** The file's content. */
      readonly content: Buffer;
      /** Permission bits. Default 0o644. */
      readonly mode?: number;
    }
  | {
      /** Creates a directory and its parents. */
      readonly kind: "mkdir";
      /** Absolute guest path of the directory. */
      readonly path: string;
      /** Permission bits. Default 0o755. */
      readonly mode?: number;
    }
  | {
      /** Appends to a file, creating it if missing. */
      readonly kind: "append";
      /** Absolute guest path of the file. */
      readonly path: string;
      /** The bytes appended. */
      readonly content: Buffer;
    }
  | {
      /** Copies a host file or directory tree. */
      readonly kind: "copy";
      /** Absolute guest path of the copy. */
      readonly path: string;
      /** The host file or directory copied. */
      readonly hostPath: string;
    };

function bytes(content: string | Uint8Array): Buffer {
  return typeof content === "string" ? Buffer.from(content, "utf8") : Buffer.from(content);
}

/**
 * Makes {@link Patch} values. They are checked when `Sandbox.create` runs:
 * a relative path, a missing host path or a parent that is a file rejects with
 * InvalidOptionError naming `patches[i]`.
 */
export const Patch = {
  /** Creates or replaces the file at `path` (parents created), mode 0o644 unless given. */
  text(path: string, content: string | Uint8Array, options: { mode?: number } = {}): Patch {
    return Object.freeze({ kind: "text", path, content: bytes(content), mode: options.mode });
  },

  /** Creates the directory and its parents, mode 0o755 unless given. */
  mkdir(path: string, options: { mode?: number } = {}): Patch {
    return Object.freeze({ kind: "mkdir", path, mode: options.mode });
  },

  /** Appends to the file at `path`, creating it if missing. */
  append(path: string, content: string | Uint8Array): Patch {
    return Object.freeze({ kind: "append", path, content: bytes(content) });
  },

  /** Copies a host file or directory tree (modes and symlinks kept) to `guestPath`. */
  copy(hostPath: string, guestPath: string): Patch {
    return Object.freeze({ kind: "copy", path: guestPath, hostPath });
  },
};
