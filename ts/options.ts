// Option types and their shape check. The engine validates values (ranges,
// names, paths); this layer rejects what cannot even cross into it: unknown
// keys (a typo would otherwise be ignored silently) and wrong types.
import { InvalidOptionError } from "./errors";

export interface SandboxOptions {
  /** Unique among running sandboxes; letters, digits, '-', '_', '.'. Generated when absent. */
  name?: string;
  /** Root filesystem: a host directory (absolute, or starting with ./). */
  image: string;
  /** Virtual CPUs, 1 to 64. Default 1. */
  cpus?: number;
  /** Guest memory in MiB, 128 to 65536. Default 512. */
  memoryMib?: number;
  /** Environment of every process in the sandbox. */
  env?: Record<string, string>;
  /** Directory processes start in. Default `/`. */
  workdir?: string;
}

export interface ExecOptions {
  /** Working directory for this process (absolute guest path). */
  cwd?: string;
  /** Added to the sandbox's environment for this process. */
  env?: Record<string, string>;
}

type Kind = "string" | "number" | "record" | "string[]";

const sandboxShape: Record<keyof SandboxOptions, Kind> = {
  name: "string",
  image: "string",
  cpus: "number",
  memoryMib: "number",
  env: "record",
  workdir: "string",
};

const execShape: Record<keyof ExecOptions, Kind> = {
  cwd: "string",
  env: "record",
};

function matches(kind: Kind, value: unknown): boolean {
  switch (kind) {
    case "string":
      return typeof value === "string";
    case "number":
      return typeof value === "number";
    case "string[]":
      return Array.isArray(value) && value.every((v) => typeof v === "string");
    case "record":
      return (
        typeof value === "object" &&
        value !== null &&
        !Array.isArray(value) &&
        Object.values(value).every((v) => typeof v === "string")
      );
  }
}

function describe(kind: Kind): string {
  return kind === "record" ? "an object of strings" : kind === "string[]" ? "an array of strings" : `a ${kind}`;
}

function checkShape(
  what: string,
  options: unknown,
  shape: Record<string, Kind>,
  required: string[],
): void {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new InvalidOptionError(`${what}: must be an object`, what);
  }
  for (const [key, value] of Object.entries(options)) {
    const kind = shape[key];
    if (kind === undefined) {
      throw new InvalidOptionError(
        `${key}: unknown option (known: ${Object.keys(shape).join(", ")})`,
        key,
      );
    }
    if (value !== undefined && !matches(kind, value)) {
      throw new InvalidOptionError(`${key}: must be ${describe(kind)}`, key);
    }
  }
  for (const key of required) {
    if ((options as Record<string, unknown>)[key] === undefined) {
      throw new InvalidOptionError(`${key}: is required`, key);
    }
  }
}

export function checkSandboxOptions(options: unknown): asserts options is SandboxOptions {
  checkShape("options", options, sandboxShape, ["image"]);
}

export function checkExecOptions(options: unknown): asserts options is ExecOptions {
  checkShape("options", options, execShape, []);
}

export function checkArgs(command: unknown, args: unknown): void {
  if (typeof command !== "string") {
    throw new InvalidOptionError("command: must be a string", "command");
  }
  if (!matches("string[]", args)) {
    throw new InvalidOptionError("args: must be an array of strings", "args");
  }
}
