// Flag values as the SDK's option types: `K=V` pairs, `HOST:GUEST` ports,
// `NAME=VALUE@DOMAIN` secrets, integers. Each parser is a commander argument
// parser: a malformed value is a usage error (exit 2) before anything runs.
import { InvalidArgumentError, Option } from "commander";

import * as path from "node:path";

import type { SecretEnv, VolumeMount } from "../index";

/** A whole number of at least `min`. */
export function integer(min: number): (value: string) => number {
  return (value) => {
    if (!/^\d+$/.test(value) || Number(value) < min) {
      throw new InvalidArgumentError(`expected a whole number of at least ${min}`);
    }
    return Number(value);
  };
}

/**
 * `KEY=VALUE`, or `KEY` alone for the CLI's own value of that variable (as
 * docker's `-e` does), added to `previous`.
 */
export function envPair(environment: NodeJS.ProcessEnv) {
  return (value: string, previous: Record<string, string> = {}): Record<string, string> => {
    const eq = value.indexOf("=");
    if (eq === 0) throw new InvalidArgumentError("expected KEY=VALUE");
    if (eq < 0) {
      const own = environment[value];
      if (own === undefined) throw new InvalidArgumentError(`expected KEY=VALUE (${value} is not set here)`);
      return { ...previous, [value]: own };
    }
    return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
  };
}

/** `HOST:GUEST` TCP ports (`0:GUEST` picks a free host port), added to `previous`. */
export function portPair(value: string, previous: Record<number, number> = {}): Record<number, number> {
  const match = /^(\d{1,5}):(\d{1,5})$/.exec(value);
  if (!match) throw new InvalidArgumentError("expected HOST_PORT:GUEST_PORT");
  return { ...previous, [Number(match[1])]: Number(match[2]) };
}

/**
 * `NAME=VALUE@DOMAIN`, or `NAME@DOMAIN` for the value of the CLI's own
 * variable NAME (which keeps the value off the command line), added to
 * `previous`. The domain is after the last `@`.
 */
export function secretPair(environment: NodeJS.ProcessEnv) {
  return (value: string, previous: Record<string, SecretEnv> = {}): Record<string, SecretEnv> => {
    const at = value.lastIndexOf("@");
    if (at <= 0 || at === value.length - 1) throw new InvalidArgumentError("expected NAME=VALUE@DOMAIN or NAME@DOMAIN");
    const domain = value.slice(at + 1);
    const head = value.slice(0, at);
    const eq = head.indexOf("=");
    let name: string;
    let secret: string | undefined;
    if (eq < 0) {
      name = head;
      secret = environment[name];
      if (secret === undefined) throw new InvalidArgumentError(`${name} is not set here (or give NAME=VALUE@DOMAIN)`);
    } else {
      name = head.slice(0, eq);
      secret = head.slice(eq + 1);
    }
    if (name.length === 0) throw new InvalidArgumentError("expected NAME=VALUE@DOMAIN");
    return { ...previous, [name]: { value: secret, domain } };
  };
}

/** Collects a repeatable flag's values. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** A network policy name. */
export function networkPolicy(value: string): "public-only" | "allow-all" | "none" {
  if (value === "public-only" || value === "allow-all" || value === "none") return value;
  throw new InvalidArgumentError("expected public-only, allow-all or none");
}

/** `--format table|json`, table by default. */
export function formatOption(): Option {
  return new Option("--format <format>", "table or json").choices(["table", "json"]).default("table");
}

/** `SOURCE:GUEST[:ro]` split; the guest path is absolute. */
function mountParts(value: string, what: string): { source: string; guest: string; readonly: boolean } {
  const parts = value.split(":");
  const readonly = parts.length === 3 && parts[2] === "ro";
  if (parts.length === 3 && !readonly && parts[2] !== "rw") throw new InvalidArgumentError(`expected ${what}:GUEST[:ro]`);
  if (parts.length < 2 || parts.length > 3 || parts[0] === "" || !parts[1].startsWith("/")) {
    throw new InvalidArgumentError(`expected ${what}:GUEST[:ro] with an absolute GUEST path`);
  }
  return { source: parts[0], guest: parts[1], readonly };
}

/** `-v HOST:GUEST[:ro]`: a bind mount of a host directory (relative to `cwd`), added to `previous`. */
export function bindMount(cwd: string) {
  return (value: string, previous: Record<string, VolumeMount> = {}): Record<string, VolumeMount> => {
    const { source, guest, readonly } = mountParts(value, "HOST");
    return { ...previous, [guest]: { bind: path.resolve(cwd, source), readonly } };
  };
}

/** `--volume NAME:GUEST[:ro]`: a named volume, added to `previous`. */
export function namedMount(value: string, previous: Record<string, VolumeMount> = {}): Record<string, VolumeMount> {
  const { source, guest, readonly } = mountParts(value, "NAME");
  return { ...previous, [guest]: { named: source, readonly } };
}

/** `--tmpfs GUEST[:SIZE_MIB]`: a tmpfs mount, added to `previous`. */
export function tmpfsMount(value: string, previous: Record<string, VolumeMount> = {}): Record<string, VolumeMount> {
  const [guest, size, ...extra] = value.split(":");
  if (!guest.startsWith("/") || extra.length > 0 || (size !== undefined && !/^\d+$/.test(size))) {
    throw new InvalidArgumentError("expected GUEST[:SIZE_MIB] with an absolute GUEST path");
  }
  return { ...previous, [guest]: { tmpfs: size === undefined ? {} : { sizeMib: Number(size) } } };
}
