// `Sandbox.builder(name)`: the options object of `Sandbox.create`, built as a
// chain (the upstream SDK's fluent form). One code path underneath: `create()`
// passes the options it gathered to `Sandbox.create`.
import { InvalidOptionError } from "./errors";
import type { RegistryOptions } from "./image";
import type { NetworkOptions, SandboxOptions, SecretEnv, VolumeMount } from "./options";
import type { Patch } from "./patch";

/** Builds the options of {@link Sandbox.create} step by step; `create()` boots the sandbox. */
export class SandboxBuilder<T> {
  readonly #options: Partial<SandboxOptions> & { name: string };
  readonly #create: (options: SandboxOptions) => Promise<T>;

  /**
   * `Sandbox.builder(name)` makes these.
   *
   * @internal
   */
  constructor(name: string, create: (options: SandboxOptions) => Promise<T>) {
    if (typeof name !== "string") throw new InvalidOptionError("name: must be a string", "name");
    this.#options = { name };
    this.#create = create;
  }

  /** {@link SandboxOptions.image}. */
  image(image: string): this {
    this.#options.image = image;
    return this;
  }

  /** {@link SandboxOptions.registry}: how to reach the image's registry. */
  registry(registry: RegistryOptions): this {
    this.#options.registry = registry;
    return this;
  }

  /** {@link SandboxOptions.cpus}. */
  cpus(cpus: number): this {
    this.#options.cpus = cpus;
    return this;
  }

  /** {@link SandboxOptions.memoryMib}. */
  memory(mib: number): this {
    this.#options.memoryMib = mib;
    return this;
  }

  /** One variable of {@link SandboxOptions.env}, or several as an object. */
  env(name: string | Record<string, string>, value?: string): this {
    const added = typeof name === "string" ? { [name]: value as string } : name;
    this.#options.env = { ...this.#options.env, ...added };
    return this;
  }

  /** {@link SandboxOptions.workdir}. */
  workdir(path: string): this {
    this.#options.workdir = path;
    return this;
  }

  /** One entry of {@link SandboxOptions.ports}: host port (0: any free one) to guest port. */
  port(hostPort: number, guestPort: number): this {
    this.#options.ports = { ...this.#options.ports, [hostPort]: guestPort };
    return this;
  }

  /** One of {@link SandboxOptions.patches}. */
  patch(patch: Patch): this {
    this.#options.patches = [...(this.#options.patches ?? []), patch];
    return this;
  }

  /** One of {@link SandboxOptions.scripts}. */
  script(name: string, content: string): this {
    this.#options.scripts = { ...this.#options.scripts, [name]: content };
    return this;
  }

  /** {@link SandboxOptions.network}. */
  network(network: NetworkOptions): this {
    this.#options.network = network;
    return this;
  }

  /** One variable of {@link SandboxOptions.secretEnv}. */
  secretEnv(name: string, secret: SecretEnv): this {
    this.#options.secretEnv = { ...this.#options.secretEnv, [name]: secret };
    return this;
  }

  /** {@link SandboxOptions.detached} (default true when called). */
  detached(detached = true): this {
    this.#options.detached = detached;
    return this;
  }

  /** {@link SandboxOptions.replace} (default true when called). */
  replace(replace = true): this {
    this.#options.replace = replace;
    return this;
  }

  /**
   * One entry of {@link SandboxOptions.volumes}:
   * `.volume("/data", (m) => m.named("data").readonly())`, `m.bind("./src")`, `m.tmpfs(64)`.
   */
  volume(guestPath: string, build: (mount: MountBuilder) => MountBuilder): this {
    this.#options.volumes = { ...this.#options.volumes, [guestPath]: build(new MountBuilder()).mount() };
    return this;
  }

  /** {@link SandboxOptions.persistent} (default true when called), with an optional root size in MiB. */
  persistent(persistent = true, rootfsSizeMib?: number): this {
    this.#options.persistent = persistent;
    if (rootfsSizeMib !== undefined) this.#options.rootfsSizeMib = rootfsSizeMib;
    return this;
  }

  /** The options gathered so far, as `Sandbox.create` takes them. */
  options(): Partial<SandboxOptions> {
    return { ...this.#options };
  }

  /**
   * `Sandbox.create` with the gathered options; its errors are `create`'s
   * (an image never given is an `InvalidOptionError` for `image`).
   */
  async create(): Promise<T> {
    return this.#create(this.#options as SandboxOptions);
  }
}

/** Builds one {@link VolumeMount} for {@link SandboxBuilder.volume}. */
export class MountBuilder {
  #source: { named: string } | { bind: string } | { tmpfs: { sizeMib?: number } } | undefined;
  #readonly = false;

  /** A named volume ({@link Volume.create}). */
  named(name: string): this {
    this.#source = { named: name };
    return this;
  }

  /** A host directory, absolute or starting with `./` or `../`. */
  bind(hostPath: string): this {
    this.#source = { bind: hostPath };
    return this;
  }

  /** A tmpfs in guest memory of at most `sizeMib` MiB (default 64). */
  tmpfs(sizeMib?: number): this {
    this.#source = { tmpfs: { sizeMib } };
    return this;
  }

  /** Mount read-only (the host enforces it). */
  readonly(readonly = true): this {
    this.#readonly = readonly;
    return this;
  }

  /**
   * The mount as `volumes` takes it; with no source given, an empty object,
   * which `Sandbox.create` rejects naming the mount.
   */
  mount(): VolumeMount {
    if (this.#source === undefined) return {} as VolumeMount;
    if ("tmpfs" in this.#source) return this.#source;
    return { ...this.#source, readonly: this.#readonly };
  }
}
