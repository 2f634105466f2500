// Patches: changes made to a sandbox's root before `Sandbox.create` resolves.
// They land in the sandbox's own writable layer: the image is never modified
// and other sandboxes of the same image do not see them.

export type Patch =
  | { readonly kind: "text"; readonly path: string; readonly content: Buffer; readonly mode?: number }
  | { readonly kind: "mkdir"; readonly path: string; readonly mode?: number }
  | { readonly kind: "append"; readonly path: string; readonly content: Buffer }
  | { readonly kind: "copy"; readonly path: string; readonly hostPath: string };

function bytes(content: string | Uint8Array): Buffer {
  return typeof content === "string" ? Buffer.from(content, "utf8") : Buffer.from(content);
}

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
