// Option types and their shape check. The engine validates values (ranges,
// names, paths); this layer rejects what cannot even cross into it: unknown
// keys (a typo would otherwise be ignored silently) and wrong types.
import { InvalidOptionError } from "./errors";
import type { PullEvent, PullPolicy, RegistryOptions } from "./image";
import type { Patch } from "./patch";

/** Options of `Sandbox.create`; only `image` is required. */
export interface SandboxOptions {
  /**
   * Unique among running sandboxes: 1 to 63 letters, digits, '-', '_' or '.',
   * starting with a letter or digit; other processes reach the sandbox by it
   * ({@link Sandbox.get}). Default: generated (and its logs are not kept).
   */
  name?: string;
  /**
   * Root filesystem: an OCI image reference (`python:3.12`,
   * `127.0.0.1:5000/team/app@sha256:...`), a host directory, or an ext4
   * filesystem image file (paths are absolute or start with `./`).
   */
  image: string;
  /** When to contact the registry for an image reference. Default "if-missing". */
  pullPolicy?: PullPolicy;
  /** How to reach registries. Default: HTTPS, the system's roots, credentials from `~/.docker/config.json`. */
  registry?: RegistryOptions;
  /** Image pull progress, for progress bars. Default: none. */
  onProgress?: (event: PullEvent) => void;
  /** Virtual CPUs, 1 to 64. Default 1. */
  cpus?: number;
  /** Guest memory in MiB, 128 to 65536. Default 512. */
  memoryMib?: number;
  /**
   * Environment of every process in the sandbox, over the image's. `PATH` and
   * `HOME` have defaults; `/.msb/scripts` is always appended to `PATH`.
   */
  env?: Record<string, string>;
  /** Absolute guest directory processes start in and relative fs paths resolve from. Default: the image's, else `/`. */
  workdir?: string;
  /**
   * Scripts, name to content, placed executable in `/.msb/scripts` (on `PATH`)
   * before `create` returns. Default: none.
   */
  scripts?: Record<string, string>;
  /** Changes to the sandbox's root made before `create` returns; see {@link Patch}. Default: none. */
  patches?: Patch[];
  /** What the guest may reach. Default: public destinations only. */
  network?: NetworkOptions;
  /**
   * TCP ports to publish: host port (on 127.0.0.1; 0 picks a free one) to
   * guest port, e.g. `{ 8080: 80 }`. Default: none.
   */
  ports?: Record<number, number>;
  /**
   * Secret environment variables: each variable in the guest holds a
   * placeholder, never the value; the host swaps the placeholder for the value
   * only in HTTPS requests to the secret's domains (see docs/secrets.md), e.g.
   * `{ OPENAI_API_KEY: { value: "sk-...", domain: "api.openai.com" } }`. Default: none.
   */
  secretEnv?: Record<string, SecretEnv>;
  /**
   * Outlive this process: the sandbox runs on after the process that created
   * it exits, until a handle from any process (see {@link Sandbox.get}) stops
   * it, or its idle timeout or maximum lifetime ends it. Its record (status,
   * why it stopped) and logs stay until {@link Sandbox.remove}. Default: false
   * (the sandbox ends with its creator).
   */
  detached?: boolean;
  /**
   * Stop the sandbox after this many milliseconds with no request from any
   * handle and none running (at least 1000; checked once a second). Default: never.
   */
  idleTimeoutMs?: number;
  /** Stop the sandbox this many milliseconds after it booted (at least 1000). Default: never. */
  maxLifetimeMs?: number;
  /**
   * If a sandbox of this `name` exists (running or stopped), kill and remove
   * it first, instead of failing with `SandboxExistsError`. Default: false.
   */
  replace?: boolean;
  /**
   * Storage mounted into the sandbox, by absolute guest path: a named
   * {@link Volume} (`{ named: "data" }`), a host directory
   * (`{ bind: "./src", readonly: true }`) or a tmpfs in guest memory
   * (`{ tmpfs: { sizeMib: 64 } }`). Read-only is enforced by the host. At most
   * 16 mounts. See docs/storage.md. Default: none.
   */
  volumes?: Record<string, VolumeMount>;
  /**
   * Keep the root's writable layer on the host (an ext4 disk of
   * `rootfsSizeMib` in the sandbox's directory), so that a later sandbox of
   * the same `name` with `persistent: true` sees the files this one wrote.
   * Needs a `name`; {@link Sandbox.remove} deletes it. Default: false (the
   * writable layer lives in guest memory and goes with the VM).
   */
  persistent?: boolean;
  /** Size of a persistent root's disk in MiB (64 to 1048576), set when it is first made. Default 4096. */
  rootfsSizeMib?: number;
  /**
   * Where a persistent root's disk is kept: a host file (absolute or starting
   * with `./` or `../`) in an existing directory, made on first use, e.g. a
   * project's `./menv/app/root.ext4`. It is the caller's: `Sandbox.remove`
   * leaves it. Default: `root.ext4` in the sandbox's directory under `MSB_HOME`.
   */
  rootfsPath?: string;
}

/**
 * One mount of {@link SandboxOptions.volumes}: exactly one of `named`, `bind`
 * or `tmpfs`.
 */
export type VolumeMount =
  | {
      /** A volume made with {@link Volume.create}. A disk volume is mounted by one running sandbox at a time. */
      named: string;
      /** Mount read-only (the host refuses writes; remounting in the guest does not help). Default false. */
      readonly?: boolean;
    }
  | {
      /**
       * A host directory, absolute or starting with `./` or `../`. The guest's
       * owners, modes, device nodes and symlinks are kept as extended
       * attributes of plain files on the host (see docs/storage.md).
       */
      bind: string;
      /** Mount read-only. Default false. */
      readonly?: boolean;
    }
  | {
      /** A tmpfs in guest memory. */
      tmpfs: {
        /** Its size cap in MiB (1 to 1048576). Default 64. */
        sizeMib?: number;
      };
    };

/** One secret environment variable; see {@link SandboxOptions.secretEnv}. */
export interface SecretEnv {
  /** The real value. It never enters the VM, a file or a log. */
  value: string;
  /** A host the value may be sent to (shorthand for a one-element `domains`). */
  domain?: string;
  /** Hosts the value may be sent to: exact names, or `*.example.com` for any name under example.com. */
  domains?: string[];
  /** What the guest sees instead of the value: 8 to 128 of `A-Za-z0-9_-.~$`. Default: generated (`msb_secret_<NAME>_<random>`). */
  placeholder?: string;
  /** Where in a request the placeholder is replaced. Default `["headers", "basic-auth"]`. */
  locations?: ("headers" | "basic-auth" | "path" | "query" | "body")[];
  /**
   * What happens when the placeholder goes anywhere else (another host, an
   * encoded form, a location not enabled): the request is never forwarded; "block-and-log" (default) also
   * writes a line to network.log; "block-and-kill" also stops the sandbox (calls then reject with {@link SecretViolationError}).
   */
  onViolation?: "block" | "block-and-log" | "block-and-kill";
  /** Substitute only over TLS the host intercepted. Default true. */
  requireTls?: boolean;
}

/** TLS interception for secrets; see docs/secrets.md. */
export interface TlsOptions {
  /**
   * "secrets-only" (default): intercept TLS only to hosts some secret names.
   * "all": intercept every TLS connection with a server name, so a placeholder
   * sent to any other host is caught as a violation (values are still only sent
   * to their domains). "off": intercept nothing (placeholders are never replaced).
   */
  intercept?: "secrets-only" | "all" | "off";
  /** Names never intercepted: exact names or `*.suffix`. Default: none. */
  bypassDomains?: string[];
  /** PEM CA certificates the host trusts for the real servers, besides its own trust store. Default: none. */
  caCertificates?: string[];
}

/**
 * The guest's network goes through a stack on the host that enforces this.
 * `public-only` denies loopback, private, link-local (the 169.254.169.254
 * metadata address included), CGNAT, multicast and their IPv6 and IPv4-mapped
 * forms; `none` lets nothing out. Rules are tried in order, the first match
 * decides, then the policy. Denied flows and blocked names are logged to the
 * sandbox's network.log.
 */
export interface NetworkOptions {
  /**
   * What happens to destinations no rule decided: "public-only" allows public
   * addresses only, "allow-all" allows everything, "none" lets nothing out (rules
   * ignored). Default "public-only".
   */
  policy?: "public-only" | "allow-all" | "none";
  /** Allow and deny rules, tried in order before the policy. Default: none. */
  rules?: NetworkRule[];
  /** Names answered NXDOMAIN, exactly. Default: none. */
  blockDomains?: string[];
  /** Names answered NXDOMAIN by suffix: ".evil.test" blocks evil.test and any name under it. Default: none. */
  blockDomainSuffixes?: string[];
  /** Destinations resolved (through the sandbox's DNS) from these names are allowed, after the rules. Default: none. */
  allowDomains?: string[];
  /** Names the sandbox's DNS answers itself (an address or a list), e.g. `{ "api.internal": "198.51.100.7" }`. */
  hosts?: Record<string, string | string[]>;
  /** Upstream DNS servers (`ip` or `ip:port`). Default: the host's resolv.conf. */
  dnsServers?: string[];
  /** Concurrent flows (connections, UDP peers) the guest may hold, 1 to 65536. Default 256. */
  maxFlows?: number;
  /** TLS interception for `secretEnv`. Default: intercept only hosts a secret names. */
  tls?: TlsOptions;
}

/**
 * Matchers combine with AND; a rule with none matches everything. A `domain`
 * or `domainSuffix` matches only addresses this sandbox resolved from such a
 * name through its own DNS: hard-coding the IP does not match.
 */
export interface NetworkRule {
  /** What a matching flow gets. */
  action: "allow" | "deny";
  /** An address or a CIDR range. Default: any address. */
  cidr?: string;
  /** A port, or an inclusive range "8000-8100". Default: any port. */
  ports?: number | string;
  /** The transport protocol matched. Default "any". */
  protocol?: "tcp" | "udp" | "any";
  /** Addresses this sandbox resolved from exactly this name. */
  domain?: string;
  /** Addresses this sandbox resolved from names under this suffix (".example.com"). */
  domainSuffix?: string;
}

/** A terminal size in character cells. */
export interface TtySize {
  /** Columns, at least 1. */
  cols: number;
  /** Rows, at least 1. */
  rows: number;
}

/** Options of `Sandbox.exec`, `shell`, `execStream` and `shellStream`; all optional. */
export interface ExecOptions {
  /** Working directory for this process (absolute guest path). Default: the sandbox's `workdir`. */
  cwd?: string;
  /** Added to the sandbox's environment for this process. */
  env?: Record<string, string>;
  /**
   * Run as this user: a name from the guest's /etc/passwd, or a uid; `HOME`,
   * `USER` and `LOGNAME` follow unless `env` sets them. Default: the image's user, else root.
   */
  user?: string | number;
  /**
   * Milliseconds. When it passes, the process and everything it started are
   * killed and the call rejects with ExecTimeoutError. Default: no limit.
   */
  timeout?: number;
  /**
   * Bytes for stdin (a string is sent as UTF-8), then end-of-file; or "pipe"
   * (execStream only) for a writable `handle.stdin`. Default: no input.
   */
  stdin?: string | Uint8Array | "pipe";
  /** Run under a pseudo-terminal (`true` is 80x24). Stderr then arrives on stdout. Default false. */
  tty?: boolean | TtySize;
  /** Aborting kills the process and everything it started; the call rejects with ExecAbortedError. Default: none. */
  signal?: AbortSignal;
  /**
   * Most bytes of stdout and stderr together that `exec()`/`shell()` keep
   * (streams are not capped: their consumer holds the output). Beyond it the
   * process and everything it started are killed and the call rejects with
   * LimitExceededError carrying the output so far. Default 64 MiB.
   */
  maxOutputBytes?: number;
}

/** Options of `SandboxFs.list`. */
export interface ListOptions {
  /** Most entries returned; a larger directory rejects with LimitExceededError. Default 100 000. */
  maxEntries?: number;
}

/** Options of `SandboxFs.copyToHost`: limits against a hostile guest, and cancellation. */
export interface CopyToHostOptions {
  /** Most bytes of file content copied in all. Default 1 GiB. */
  maxBytes?: number;
  /** Most directory entries looked at in all. Default 100 000. */
  maxEntries?: number;
  /** Deepest directory level below the copied directory. Default 64. */
  maxDepth?: number;
  /** Aborting stops the copy; it rejects with AbortedError and leaves no temporary file. Default: none. */
  signal?: AbortSignal;
}

/** Options of `SandboxFs.write` and `SandboxFs.writeStream`. */
export interface WriteOptions {
  /** Permission bits, 0 to 0o7777. Default: kept for an existing file, 0o644 for a new one. */
  mode?: number;
  /** Append instead of replacing. Default false. */
  append?: boolean;
  /** Create missing parent directories. Default false. */
  createParents?: boolean;
}

type Kind =
  | "string"
  | "number"
  | "boolean"
  | "record"
  | "string[]"
  | "user"
  | "stdin"
  | "tty"
  | "abortSignal"
  | "patches"
  | "pullPolicy"
  | "object"
  | "function"
  | "ports";

const sandboxShape: Record<keyof SandboxOptions, Kind> = {
  name: "string",
  image: "string",
  cpus: "number",
  memoryMib: "number",
  env: "record",
  workdir: "string",
  scripts: "record",
  patches: "patches",
  pullPolicy: "pullPolicy",
  registry: "object",
  onProgress: "function",
  network: "object",
  ports: "ports",
  secretEnv: "object",
  detached: "boolean",
  idleTimeoutMs: "number",
  maxLifetimeMs: "number",
  replace: "boolean",
  volumes: "object",
  persistent: "boolean",
  rootfsSizeMib: "number",
  rootfsPath: "string",
};

const secretShape: Record<keyof SecretEnv, Kind> = {
  value: "string",
  domain: "string",
  domains: "string[]",
  placeholder: "string",
  locations: "string[]",
  onViolation: "string",
  requireTls: "boolean",
};

const tlsShape: Record<keyof TlsOptions, Kind> = {
  intercept: "string",
  bypassDomains: "string[]",
  caCertificates: "string[]",
};

const execShape: Record<keyof ExecOptions, Kind> = {
  cwd: "string",
  env: "record",
  user: "user",
  timeout: "number",
  stdin: "stdin",
  tty: "tty",
  signal: "abortSignal",
  maxOutputBytes: "number",
};

const listShape: Record<keyof ListOptions, Kind> = {
  maxEntries: "number",
};

const copyToHostShape: Record<keyof CopyToHostOptions, Kind> = {
  maxBytes: "number",
  maxEntries: "number",
  maxDepth: "number",
  signal: "abortSignal",
};

/** A count option: a positive safe integer (at most `max`), or absent. */
function checkCount(field: string, value: number | undefined, max = Number.MAX_SAFE_INTEGER): void {
  if (value !== undefined && !(Number.isSafeInteger(value) && value > 0 && value <= max)) {
    throw new InvalidOptionError(`${field}: must be a positive integer of at most ${max}, got ${value}`, field);
  }
}

const writeShape: Record<keyof WriteOptions, Kind> = {
  mode: "number",
  append: "boolean",
  createParents: "boolean",
};

const patchKinds = new Set(["text", "mkdir", "append", "copy"]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function matches(kind: Kind, value: unknown): boolean {
  switch (kind) {
    case "string":
    case "number":
    case "boolean":
      return typeof value === kind;
    case "string[]":
      return Array.isArray(value) && value.every((v) => typeof v === "string");
    case "record":
      return isRecord(value) && Object.values(value).every((v) => typeof v === "string");
    case "user":
      return typeof value === "string" || (typeof value === "number" && Number.isInteger(value) && value >= 0);
    case "stdin":
      return typeof value === "string" || value instanceof Uint8Array;
    case "tty":
      return (
        typeof value === "boolean" ||
        (isRecord(value) && Number.isInteger(value.cols) && Number.isInteger(value.rows))
      );
    case "abortSignal":
      return value instanceof AbortSignal;
    case "pullPolicy":
      return value === "always" || value === "if-missing" || value === "never";
    case "object":
      return isRecord(value);
    case "function":
      return typeof value === "function";
    case "ports":
      return isRecord(value) && Object.values(value).every((v) => typeof v === "number");
    case "patches":
      return (
        Array.isArray(value) &&
        value.every((p) => isRecord(p) && patchKinds.has(p.kind as string) && typeof p.path === "string")
      );
  }
}

const descriptions: Record<Kind, string> = {
  string: "a string",
  number: "a number",
  boolean: "a boolean",
  record: "an object of strings",
  "string[]": "an array of strings",
  user: "a user name or a non-negative integer uid",
  stdin: 'a string, a Buffer or "pipe"',
  tty: "a boolean or { cols, rows } with integers",
  abortSignal: "an AbortSignal",
  patches: "an array of Patch.text/mkdir/append/copy values",
  pullPolicy: '"always", "if-missing" or "never"',
  object: "an object",
  function: "a function",
  ports: "an object of host port to guest port numbers",
};

function checkShape(what: string, options: unknown, shape: Record<string, Kind>, required: string[]): void {
  if (!isRecord(options)) {
    throw new InvalidOptionError(`${what}: must be an object`, what);
  }
  for (const [key, value] of Object.entries(options)) {
    const kind = shape[key];
    if (kind === undefined) {
      throw new InvalidOptionError(`${key}: unknown option (known: ${Object.keys(shape).join(", ")})`, key);
    }
    if (value !== undefined && !matches(kind, value)) {
      throw new InvalidOptionError(`${key}: must be ${descriptions[kind]}`, key);
    }
  }
  for (const key of required) {
    if (options[key] === undefined) {
      throw new InvalidOptionError(`${key}: is required`, key);
    }
  }
}

const networkShape: Record<keyof NetworkOptions, Kind> = {
  policy: "string",
  rules: "object",
  blockDomains: "string[]",
  blockDomainSuffixes: "string[]",
  allowDomains: "string[]",
  hosts: "object",
  dnsServers: "string[]",
  maxFlows: "number",
  tls: "object",
};

/** Checks an object option's keys and value types; `prefix` is its field path. */
function checkNested(prefix: string, value: unknown, shape: Record<string, Kind>, required: string[] = []): void {
  if (!isRecord(value)) {
    throw new InvalidOptionError(`${prefix}: must be an object`, prefix);
  }
  for (const [key, v] of Object.entries(value)) {
    const kind = shape[key];
    if (kind === undefined) {
      throw new InvalidOptionError(
        `${prefix}.${key}: unknown option (known: ${Object.keys(shape).join(", ")})`,
        `${prefix}.${key}`,
      );
    }
    if (v !== undefined && !matches(kind, v)) {
      throw new InvalidOptionError(`${prefix}.${key}: must be ${descriptions[kind]}`, `${prefix}.${key}`);
    }
  }
  for (const key of required) {
    if (value[key] === undefined) {
      throw new InvalidOptionError(`${prefix}.${key}: is required`, `${prefix}.${key}`);
    }
  }
}

/** The addon's shape of one mount. */
export interface NativeMountOption {
  path: string;
  kind: "named" | "bind" | "tmpfs";
  source?: string;
  readonly?: boolean;
  sizeMib?: number;
}

/**
 * `volumes` in the addon's shape, after checking each entry has exactly one
 * source of the right type (the engine checks paths, names and sizes).
 */
export function toNativeMounts(volumes: Record<string, VolumeMount> | undefined): NativeMountOption[] | undefined {
  if (volumes === undefined) return undefined;
  return Object.entries(volumes).map(([path, mount]) => {
    const field = `volumes[${JSON.stringify(path)}]`;
    if (!isRecord(mount)) throw new InvalidOptionError(`${field}: must be an object`, field);
    const sources = ["named", "bind", "tmpfs"].filter((key) => mount[key as keyof typeof mount] !== undefined);
    if (sources.length !== 1) {
      throw new InvalidOptionError(`${field}: give exactly one of named, bind, tmpfs`, field);
    }
    const m = mount as Record<string, unknown>;
    for (const key of Object.keys(m)) {
      if (!["named", "bind", "tmpfs", "readonly"].includes(key)) {
        throw new InvalidOptionError(`${field}.${key}: unknown option (known: named, bind, tmpfs, readonly)`, field);
      }
    }
    if (m.readonly !== undefined && typeof m.readonly !== "boolean") {
      throw new InvalidOptionError(`${field}.readonly: must be a boolean`, field);
    }
    const readonly = m.readonly as boolean | undefined;
    if (sources[0] === "tmpfs") {
      const tmpfs = m.tmpfs;
      if (!isRecord(tmpfs) || Object.keys(tmpfs).some((k) => k !== "sizeMib")) {
        throw new InvalidOptionError(`${field}.tmpfs: must be { sizeMib?: number }`, field);
      }
      if (tmpfs.sizeMib !== undefined && typeof tmpfs.sizeMib !== "number") {
        throw new InvalidOptionError(`${field}.tmpfs.sizeMib: must be a number`, field);
      }
      return { path, kind: "tmpfs", readonly, sizeMib: tmpfs.sizeMib as number | undefined };
    }
    const kind = sources[0] as "named" | "bind";
    if (typeof m[kind] !== "string") throw new InvalidOptionError(`${field}.${kind}: must be a string`, field);
    return { path, kind, source: m[kind] as string, readonly };
  });
}

export function checkSandboxOptions(options: unknown): asserts options is SandboxOptions {
  checkShape("options", options, sandboxShape, ["image"]);
  const { network, secretEnv } = options as SandboxOptions;
  if (secretEnv !== undefined) {
    for (const [name, secret] of Object.entries(secretEnv)) {
      checkNested(`secretEnv.${name}`, secret, secretShape, ["value"]);
    }
  }
  if (network === undefined) return;
  if (network.tls !== undefined) checkNested("network.tls", network.tls, tlsShape);
  for (const [key, value] of Object.entries(network)) {
    const kind = networkShape[key as keyof NetworkOptions];
    if (kind === undefined) {
      throw new InvalidOptionError(
        `network.${key}: unknown option (known: ${Object.keys(networkShape).join(", ")})`,
        `network.${key}`,
      );
    }
    const ok = key === "rules" ? Array.isArray(value) && value.every(isRecord) : matches(kind, value);
    if (value !== undefined && !ok) {
      const what = key === "rules" ? "an array of rules" : descriptions[kind];
      throw new InvalidOptionError(`network.${key}: must be ${what}`, `network.${key}`);
    }
  }
}

/**
 * Sandbox options in the addon's shape: without the SDK's own `onProgress`
 * and `replace`, network and volumes converted.
 *
 * @throws {InvalidOptionError} A volume is malformed.
 */
export function toNativeSandboxOptions(options: SandboxOptions) {
  const { onProgress, replace, network, volumes, ...rest } = options;
  return { ...rest, network: toNativeNetwork(network), volumes: toNativeMounts(volumes) };
}

/** Network options in the addon's shape: rule ports as strings, hosts as lists. */
export function toNativeNetwork(network: NetworkOptions | undefined) {
  if (network === undefined) return undefined;
  return {
    ...network,
    rules: network.rules?.map((rule) => ({ ...rule, ports: rule.ports === undefined ? undefined : String(rule.ports) })),
    hosts:
      network.hosts &&
      Object.fromEntries(Object.entries(network.hosts).map(([name, a]) => [name, Array.isArray(a) ? a : [a]])),
  };
}

export function checkExecOptions(options: unknown): asserts options is ExecOptions {
  checkShape("options", options, execShape, []);
  const { timeout, maxOutputBytes } = options as ExecOptions;
  if (timeout !== undefined && !(Number.isFinite(timeout) && timeout > 0)) {
    throw new InvalidOptionError(`timeout: must be a positive number of milliseconds, got ${timeout}`, "timeout");
  }
  checkCount("maxOutputBytes", maxOutputBytes);
}

export function checkListOptions(options: unknown): asserts options is ListOptions {
  checkShape("options", options, listShape, []);
  checkCount("maxEntries", (options as ListOptions).maxEntries, 0xffff_ffff);
}

export function checkCopyToHostOptions(options: unknown): asserts options is CopyToHostOptions {
  checkShape("options", options, copyToHostShape, []);
  const { maxBytes, maxEntries, maxDepth } = options as CopyToHostOptions;
  checkCount("maxBytes", maxBytes);
  checkCount("maxEntries", maxEntries);
  checkCount("maxDepth", maxDepth, 0xffff_ffff);
}

export function checkWriteOptions(options: unknown): asserts options is WriteOptions {
  checkShape("options", options, writeShape, []);
  const { mode } = options as WriteOptions;
  if (mode !== undefined && !(Number.isInteger(mode) && mode >= 0 && mode <= 0o7777)) {
    throw new InvalidOptionError(`mode: must be a permission mode from 0 to 0o7777, got ${mode}`, "mode");
  }
}

export function checkArgs(command: unknown, args: unknown): void {
  if (typeof command !== "string") {
    throw new InvalidOptionError("command: must be a string", "command");
  }
  if (!matches("string[]", args)) {
    throw new InvalidOptionError("args: must be an array of strings", "args");
  }
}

export function checkPath(field: string, value: unknown): asserts value is string {
  if (typeof value !== "string" || value.length === 0) {
    throw new InvalidOptionError(`${field}: must be a non-empty string`, field);
  }
}
