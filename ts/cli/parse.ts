// Flag values as the SDK's option types: `K=V` pairs, `HOST:GUEST` ports,
// `NAME=VALUE@DOMAIN` secrets, integers. Each parser is a commander argument
// parser: a malformed value is a usage error (exit 2) before anything runs.
import { InvalidArgumentError, Option } from "commander";

import type { SecretEnv } from "../index";

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
