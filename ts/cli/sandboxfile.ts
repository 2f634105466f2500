// The Sandboxfile: a project's sandboxes, in YAML, next to its code.
//
//   sandboxes:
//     app:
//       image: python:3.12
//       cpus: 2
//       memory: 1024          # MiB
//       env: { DEBUG: "1" }
//       workdir: /app
//       ports: ["8080:80"]    # HOST:GUEST
//       network: public-only  # or allow-all, none
//       scripts:
//         start: python3 -m http.server 80
//         test: pytest
//
// Parsing is strict: an unknown key or a value of the wrong kind is an error
// naming the file and line. Edits (`msb add`, `msb remove`) go through the
// YAML document, so the user's comments and ordering survive them.
import * as fs from "node:fs";
import * as path from "node:path";
import { Document, isMap, isScalar, LineCounter, parseDocument, type Node, type Pair, YAMLMap } from "yaml";

import { CliError } from "./errors";

/** The file name looked up in the working directory and its parents. */
export const SANDBOXFILE = "Sandboxfile";

/** Error code of a Sandboxfile that cannot be read as one. */
export const SANDBOXFILE_INVALID = "SANDBOXFILE_INVALID";

/** A sandbox of a project, as the Sandboxfile describes it. */
export interface ProjectSandbox {
  /** What `Sandbox.create` takes as `image`. */
  image: string;
  /** Virtual CPUs. */
  cpus?: number;
  /** Guest memory in MiB (`memoryMib`). */
  memory?: number;
  /** Environment of every process. */
  env?: Record<string, string>;
  /** Where processes start. */
  workdir?: string;
  /** Published ports, host port to guest port. */
  ports?: Record<number, number>;
  /** Network policy. */
  network?: "public-only" | "allow-all" | "none";
  /** Script name to shell command; `start` is what a run without `~SCRIPT` runs. */
  scripts: Record<string, string>;
}

/** A parsed Sandboxfile. */
export interface Project {
  /** Where it was read from. */
  file: string;
  /** Its sandboxes by name. */
  sandboxes: Record<string, ProjectSandbox>;
}

const SANDBOX_KEYS = ["image", "cpus", "memory", "env", "workdir", "ports", "network", "scripts"];
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** The template `msb init` writes. */
export const TEMPLATE = `# microsandbox project file. Each entry under \`sandboxes\` runs with
# \`msb run --sandbox NAME[~SCRIPT]\` (or \`msr NAME[~SCRIPT]\`); add one with
# \`msb add NAME --image IMAGE --start COMMAND\`. Keys of a sandbox: image, cpus,
# memory (MiB), env, workdir, ports (["HOST:GUEST"]), network (public-only,
# allow-all, none) and scripts (name: shell command; \`start\` is the default).
sandboxes: {}
`;

class Reader {
  readonly #file: string;
  readonly #lines: LineCounter;

  constructor(file: string, lines: LineCounter) {
    this.#file = file;
    this.#lines = lines;
  }

  fail(node: Node | null | undefined, message: string): never {
    const offset = node?.range?.[0];
    const where = offset === undefined ? "" : `:${this.#lines.linePos(offset).line}`;
    throw new CliError(SANDBOXFILE_INVALID, `${this.#file}${where}: ${message}`);
  }

  map(node: unknown, what: string, at: Node | null | undefined): Pair<Node, Node>[] {
    if (!isMap(node)) this.fail((node as Node) ?? at, `${what} must be a mapping`);
    return node.items as Pair<Node, Node>[];
  }

  key(pair: Pair<Node, Node>): string {
    if (!isScalar(pair.key) || typeof pair.key.value !== "string") this.fail(pair.key, "keys must be strings");
    return pair.key.value;
  }

  string(node: Node | null, what: string, at: Node): string {
    if (!isScalar(node) || typeof node.value !== "string" || node.value.length === 0) {
      this.fail(node ?? at, `${what} must be a non-empty string`);
    }
    return node.value;
  }

  scalarText(node: Node | null, what: string, at: Node): string {
    if (!isScalar(node) || !["string", "number", "boolean"].includes(typeof node.value)) {
      this.fail(node ?? at, `${what} must be a string, number or boolean`);
    }
    return String(node.value);
  }

  integer(node: Node | null, what: string, at: Node, min: number, max: number): number {
    if (!isScalar(node) || typeof node.value !== "number" || !Number.isInteger(node.value) || node.value < min || node.value > max) {
      this.fail(node ?? at, `${what} must be a whole number from ${min} to ${max}`);
    }
    return node.value;
  }
}

function readSandbox(r: Reader, name: string, node: Node | null, at: Node): ProjectSandbox {
  const sandbox: Partial<ProjectSandbox> = { scripts: {} };
  for (const pair of r.map(node, `sandboxes.${name}`, at)) {
    const key = r.key(pair);
    const value = pair.value;
    const what = `sandboxes.${name}.${key}`;
    switch (key) {
      case "image":
        sandbox.image = r.string(value, what, pair.key);
        break;
      case "cpus":
        sandbox.cpus = r.integer(value, what, pair.key, 1, 64);
        break;
      case "memory":
        sandbox.memory = r.integer(value, what, pair.key, 128, 65536);
        break;
      case "workdir":
        sandbox.workdir = r.string(value, what, pair.key);
        break;
      case "network": {
        const policy = r.string(value, what, pair.key);
        if (policy !== "public-only" && policy !== "allow-all" && policy !== "none") {
          r.fail(value, `${what} must be public-only, allow-all or none`);
        }
        sandbox.network = policy;
        break;
      }
      case "env":
        sandbox.env = {};
        for (const item of r.map(value, what, pair.key)) {
          sandbox.env[r.key(item)] = r.scalarText(item.value, `${what}.${r.key(item)}`, item.key);
        }
        break;
      case "scripts":
        for (const item of r.map(value, what, pair.key)) {
          const script = r.key(item);
          if (!NAME.test(script)) r.fail(item.key, `${what}: ${JSON.stringify(script)} is not a script name (letters, digits, '-', '_', '.')`);
          sandbox.scripts![script] = r.string(item.value, `${what}.${script}`, item.key);
        }
        break;
      case "ports": {
        sandbox.ports = {};
        const items = value && "items" in value && Array.isArray(value.items) && !isMap(value) ? (value.items as Node[]) : null;
        if (!items) r.fail(value ?? pair.key, `${what} must be a list of "HOST:GUEST"`);
        for (const item of items) {
          const text = r.scalarText(item, what, pair.key);
          const match = /^(\d{1,5}):(\d{1,5})$/.exec(text);
          if (!match) r.fail(item, `${what}: ${JSON.stringify(text)} is not HOST:GUEST`);
          sandbox.ports[Number(match[1])] = Number(match[2]);
        }
        break;
      }
      default:
        r.fail(pair.key, `sandboxes.${name}: unknown key ${JSON.stringify(key)} (known: ${SANDBOX_KEYS.join(", ")})`);
    }
  }
  if (sandbox.image === undefined) r.fail(node, `sandboxes.${name}: image is required`);
  return sandbox as ProjectSandbox;
}

function parse(text: string, file: string): { doc: Document; project: Project } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const r = new Reader(file, lines);
  const [error] = doc.errors;
  if (error) {
    const line = lines.linePos(error.pos[0]).line;
    throw new CliError(SANDBOXFILE_INVALID, `${file}${line ? `:${line}` : ""}: ${error.message.split("\n")[0]}`);
  }
  const project: Project = { file, sandboxes: {} };
  if (doc.contents === null) return { doc, project };
  for (const pair of r.map(doc.contents, "the Sandboxfile", null)) {
    const key = r.key(pair);
    if (key !== "sandboxes") r.fail(pair.key, `unknown key ${JSON.stringify(key)} (known: sandboxes)`);
    if (isScalar(pair.value) && pair.value.value === null) continue;
    for (const item of r.map(pair.value, "sandboxes", pair.key)) {
      const name = r.key(item);
      if (!NAME.test(name)) r.fail(item.key, `${JSON.stringify(name)} is not a sandbox name (letters, digits, '-', '_', '.')`);
      project.sandboxes[name] = readSandbox(r, name, item.value, item.key);
    }
  }
  return { doc, project };
}

/** Parses a Sandboxfile's text; `file` names it in errors. */
export function parseSandboxfile(text: string, file: string): Project {
  return parse(text, file).project;
}

/** The Sandboxfile of the project `dir` is in: in `dir` or the nearest parent that has one. */
export function findSandboxfile(dir: string): string | undefined {
  for (let current = path.resolve(dir); ; current = path.dirname(current)) {
    const candidate = path.join(current, SANDBOXFILE);
    if (fs.existsSync(candidate)) return candidate;
    if (path.dirname(current) === current) return undefined;
  }
}

function required(dir: string): string {
  const file = findSandboxfile(dir);
  if (!file) throw new CliError("SANDBOXFILE_NOT_FOUND", `no ${SANDBOXFILE} in ${dir} or its parents (msb init writes one)`);
  return file;
}

/** Reads the project `dir` belongs to. */
export function loadProject(dir: string): Project {
  const file = required(dir);
  return parseSandboxfile(fs.readFileSync(file, "utf8"), file);
}

/**
 * Applies `change` to the project's YAML document and writes it back (after
 * checking that the result still parses), keeping comments and order.
 * Returns the file.
 */
export function editProject(dir: string, change: (doc: Document, project: Project) => void): string {
  const file = required(dir);
  const { doc, project } = parse(fs.readFileSync(file, "utf8"), file);
  change(doc, project);
  const text = doc.toString();
  parseSandboxfile(text, file);
  const temp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temp, text);
  fs.renameSync(temp, file);
  return file;
}

/** The YAML node `msb add` writes for a sandbox. */
export function sandboxNode(doc: Document, sandbox: ProjectSandbox): YAMLMap {
  const plain: Record<string, unknown> = { image: sandbox.image };
  if (sandbox.cpus !== undefined) plain.cpus = sandbox.cpus;
  if (sandbox.memory !== undefined) plain.memory = sandbox.memory;
  if (sandbox.env && Object.keys(sandbox.env).length > 0) plain.env = sandbox.env;
  if (sandbox.workdir !== undefined) plain.workdir = sandbox.workdir;
  if (sandbox.ports && Object.keys(sandbox.ports).length > 0) {
    plain.ports = Object.entries(sandbox.ports).map(([host, guest]) => `${host}:${guest}`);
  }
  if (sandbox.network !== undefined) plain.network = sandbox.network;
  if (Object.keys(sandbox.scripts).length > 0) plain.scripts = sandbox.scripts;
  return doc.createNode(plain) as YAMLMap;
}
