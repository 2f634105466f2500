// Warm pools: sandboxes booted ahead of `Sandbox.create`, each with the whole
// of its options (image, root, network, secrets, scripts), so that a create
// asking for exactly those options only has to take one. A VM cannot be given
// its root after QEMU has started (docs/design.md, "Warm pool"), so a pool is
// per options rather than per machine shape. The pool lives in this process:
// its sandboxes are attached to it like any it created, and die with it.
import { isDeepStrictEqual } from "node:util";

import { InvalidOptionError } from "./errors";
import type { Native } from "./native";
import type { SandboxOptions } from "./options";

/** The most sandboxes one pool holds. */
export const MAX_POOL_SIZE = 32;

/**
 * How long after a take its replacement starts booting. A boot under TCG
 * keeps a core busy for about a second; started at once, it competes with the
 * taken sandbox's first commands, which are what a pool is for.
 */
const REPLACE_AFTER_MS = 1000;

/**
 * The options of {@link Sandbox.prewarm}: those of {@link Sandbox.create}
 * without the ones a pooled sandbox cannot have (the engine refuses them,
 * saying why), plus `count`.
 */
export type PrewarmOptions = Omit<
  SandboxOptions,
  | "name"
  | "detached"
  | "replace"
  | "ports"
  | "volumes"
  | "persistent"
  | "rootfsSizeMib"
  | "rootfsPath"
  | "idleTimeoutMs"
  | "maxLifetimeMs"
  | "onProgress"
> & {
  /** How many sandboxes the pool keeps ready, 1 to 32. */
  count: number;
};

/**
 * One pooled sandbox: what a take hands out (a Sandbox, or a PythonSandbox
 * with its interpreter running) and the addon's handle behind it.
 */
export interface Pooled {
  value: unknown;
  handle: Native.NativeSandbox;
}

/** Boots one pooled sandbox (warmed up, unclaimed); rejects with the typed error of `create`. */
type Boot = () => Promise<Pooled>;

/** The pools of this process that are not closed. */
const pools = new Set<WarmPool>();

/**
 * What a create must equal to be served by a pool: its options without the
 * caller's progress callback and without fields left undefined, cloned so
 * that a caller changing its object afterwards changes no pool (and Buffers
 * compare as the bytes they hold).
 */
function poolKey(options: object): unknown {
  const fields = Object.entries(options).filter(([key, value]) => key !== "onProgress" && value !== undefined);
  return structuredClone(Object.fromEntries(fields));
}

/** Checks `count` and splits it from the sandbox options. */
export function splitPrewarmOptions(options: PrewarmOptions): { count: number; sandbox: SandboxOptions } {
  if (typeof options !== "object" || options === null) {
    throw new InvalidOptionError("options: must be an object", "options");
  }
  const { count, ...sandbox } = options as PrewarmOptions & Pick<SandboxOptions, "replace" | "onProgress">;
  // The SDK's own options, which the engine never sees; it refuses the others left out of PrewarmOptions.
  for (const field of ["replace", "onProgress"] as const) {
    if (sandbox[field] !== undefined) {
      throw new InvalidOptionError(`${field}: not an option of prewarm (a pooled sandbox has no name to replace and reports no pull)`, field);
    }
  }
  if (!Number.isInteger(count) || count < 1 || count > MAX_POOL_SIZE) {
    throw new InvalidOptionError(`count: must be an integer from 1 to ${MAX_POOL_SIZE}`, "count");
  }
  return { count, sandbox: sandbox as SandboxOptions };
}

/**
 * A sandbox of `kind` ("sandbox", or a code runner's language) from one of
 * this process's pools whose options equal `options`, claimed (listed from
 * now on); undefined when no such pool has one ready.
 */
export async function takePooled(kind: string, options: SandboxOptions): Promise<unknown> {
  if (pools.size === 0) return undefined;
  const wanted = poolKey(options);
  for (const pool of pools) {
    if (!pool.serves(kind, wanted)) continue;
    const value = await pool.take();
    if (value !== undefined) return value;
  }
  return undefined;
}

/**
 * Sandboxes booted ahead of {@link Sandbox.create}, made by {@link Sandbox.prewarm}.
 * A create whose options equal the pool's (apart from `onProgress`) takes one
 * instead of booting; the pool then boots a replacement in the background, so
 * it never holds more than `size`. Before it is taken, a pooled sandbox is not
 * in {@link Sandbox.list} and {@link Sandbox.get} does not find it.
 */
export class WarmPool implements AsyncDisposable {
  /** How many sandboxes the pool keeps ready. */
  readonly size: number;
  readonly #kind: string;
  readonly #key: unknown;
  readonly #boot: Boot;
  readonly #ready: Pooled[] = [];
  readonly #booting = new Set<Promise<void>>();
  /** Replacements waiting out REPLACE_AFTER_MS: their timers, and how to end the wait early. */
  readonly #waiting = new Map<NodeJS.Timeout, () => void>();
  #lastError: Error | undefined;
  #closed = false;

  /** @internal */
  constructor(kind: string, size: number, options: SandboxOptions, boot: Boot) {
    this.#kind = kind;
    this.size = size;
    this.#key = poolKey(options);
    this.#boot = boot;
  }

  /**
   * Boots the first `size` sandboxes at once; if one fails, stops the others
   * and rejects with its error.
   *
   * @internal
   */
  async fill(): Promise<void> {
    const results = await Promise.allSettled(Array.from({ length: this.size }, () => this.#boot()));
    const booted = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed !== undefined) {
      await Promise.all(booted.map((pooled) => pooled.handle.stopAndWait()));
      throw failed.reason;
    }
    this.#ready.push(...booted);
    pools.add(this);
  }

  /** Sandboxes ready to be taken now. */
  get available(): number {
    return this.#ready.filter((pooled) => pooled.handle.running).length;
  }

  /** Why the last replacement failed to boot, if one did; the next take tries again. */
  get lastError(): Error | undefined {
    return this.#lastError;
  }

  /** Resolves once no replacement is booting (see {@link WarmPool.lastError} for one that failed). */
  async filled(): Promise<void> {
    // A waiting replacement's timer does not keep the process alive, unless someone waits for it.
    for (const timer of this.#waiting.keys()) timer.ref();
    while (this.#booting.size > 0) await Promise.all(this.#booting);
  }

  /** Stops every sandbox not taken and boots no more. Taken ones are their takers'. */
  async close(): Promise<void> {
    this.#closed = true;
    pools.delete(this);
    for (const [timer, endWait] of this.#waiting) {
      clearTimeout(timer);
      endWait();
    }
    await this.filled();
    await Promise.all(this.#ready.splice(0).map((pooled) => pooled.handle.stopAndWait()));
  }

  /** {@link WarmPool.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** @internal */
  serves(kind: string, key: unknown): boolean {
    return !this.#closed && kind === this.#kind && isDeepStrictEqual(this.#key, key);
  }

  /**
   * The next live sandbox, claimed. One whose VM ended while it waited is
   * stopped (its records and directory go) and skipped. Then the pool starts
   * booting what it lacks, whether it lacks it from this take or from a
   * replacement that failed before.
   *
   * @internal
   */
  async take(): Promise<unknown> {
    try {
      for (let pooled = this.#ready.shift(); pooled !== undefined; pooled = this.#ready.shift()) {
        const { value, handle } = pooled;
        if (handle.running && (await handle.claim()) == null) return value;
        await handle.stopAndWait();
      }
      return undefined;
    } finally {
      while (!this.#closed && this.#ready.length + this.#booting.size < this.size) this.#replace();
    }
  }

  /** Starts one replacement, REPLACE_AFTER_MS from now. */
  #replace(): void {
    const booting: Promise<void> = this.#wait(REPLACE_AFTER_MS)
      .then(() => (this.#closed ? undefined : this.#boot()))
      .then(
        async (pooled) => {
          if (pooled === undefined) return;
          if (this.#closed) await pooled.handle.stopAndWait();
          else this.#ready.push(pooled);
        },
        (err: unknown) => {
          this.#lastError = err instanceof Error ? err : new Error(String(err));
        },
      );
    this.#booting.add(booting);
    void booting.finally(() => this.#booting.delete(booting));
  }

  /** Resolves after `ms`, or at close; the timer alone does not keep the process alive. */
  #wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(timer);
        resolve();
      }, ms).unref();
      this.#waiting.set(timer, () => {
        this.#waiting.delete(timer);
        resolve();
      });
    });
  }
}
