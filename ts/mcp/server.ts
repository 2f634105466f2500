// `msb mcp`: the SDK as Model Context Protocol tools, served over stdio.
//
// Lifetime: every sandbox this server creates is `detached` and named (a
// generated `mcp-…` name when the client gives none), so it outlives the
// server process and a client that reconnects finds it by name. The server
// holds no VM of its own, only `Sandbox.get` handles (one per name, kept
// while its sandbox runs, so calls share a connection), and dropping those
// stops nothing: its exit (stdin closed, or killed) ends no sandbox. What ends them: `sandbox_stop` /
// `sandbox_remove`, or their idle timeout (30 minutes with no request unless
// `idleTimeoutMs` says otherwise). Tool calls run one at a time per request
// as the client sends them; output of a process is capped per stream
// (`maxOutputBytes`), beyond which it is drained and dropped.
import { randomBytes } from "node:crypto";

import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";

import { stop } from "../cli/sandboxes";
import {
  ExecTimeoutError,
  Image,
  InvalidOptionError,
  MicrosandboxError,
  Sandbox,
  SandboxNotFoundError,
  type NetworkOptions,
  type SandboxOptions,
  type SecretEnv,
  Volume,
} from "../index";

declare global {
  /** The fetch API's header input, which the MCP SDK's typings name from the DOM library. */
  type HeadersInit = import("undici-types").HeadersInit;
}

/** Idle time after which an MCP-created sandbox stops, unless `idleTimeoutMs` says otherwise. */
export const DEFAULT_IDLE_TIMEOUT_MS = 30 * 60 * 1000;
/** Default cap, per stream, on the output a tool returns. */
const DEFAULT_OUTPUT_CAP = 64 * 1024;
/** Default limit on how long a process may run, in ms. */
const DEFAULT_EXEC_TIMEOUT_MS = 120_000;
/** Default cap on the bytes `sandbox_fs_read` returns. */
const DEFAULT_READ_CAP = 1024 * 1024;

const INSTRUCTIONS = `Tools to run untrusted code in microVM sandboxes. Create one with sandbox_create \
(it is detached and named: it survives this server and a reconnect; reach it by name), run processes \
with sandbox_exec or sandbox_shell, move files with sandbox_fs_*, and end it with sandbox_stop and \
sandbox_remove. An idle sandbox stops after 30 minutes unless idleTimeoutMs says otherwise. Errors carry \
a stable code (SANDBOX_NOT_FOUND, EXEC_TIMEOUT, ...).`;

/** A tool's JSON result: both as text (for any client) and as structured content. */
function ok(result: object): CallToolResult {
  const plain = JSON.parse(JSON.stringify(result)) as Record<string, unknown>;
  return { content: [{ type: "text", text: JSON.stringify(plain, null, 2) }], structuredContent: plain };
}

/** A failure as a tool error carrying the SDK's code (and `extra` details, such as output so far). */
function failure(err: unknown, extra: Record<string, unknown> = {}): CallToolResult {
  const code = err instanceof MicrosandboxError ? err.code : "INTERNAL";
  const message = err instanceof Error ? err.message : String(err);
  const field = err instanceof InvalidOptionError && err.field !== undefined ? { field: err.field } : {};
  return {
    isError: true,
    content: [{ type: "text", text: `${code}: ${message}` }],
    structuredContent: { error: { code, message, ...field }, ...extra },
  };
}

async function guarded(body: () => Promise<object>): Promise<CallToolResult> {
  try {
    return ok(await body());
  } catch (err) {
    return failure(err);
  }
}

/** Keeps the first `cap` bytes of a stream and counts the rest. */
class Capture {
  readonly #cap: number;
  readonly #chunks: Buffer[] = [];
  #kept = 0;
  truncated = false;

  constructor(cap: number) {
    this.#cap = cap;
  }

  add(data: Buffer): void {
    const room = this.#cap - this.#kept;
    if (data.length > room) this.truncated = true;
    const taken = data.length > room ? data.subarray(0, room) : data;
    if (taken.length > 0) {
      this.#chunks.push(taken);
      this.#kept += taken.length;
    }
  }

  text(): string {
    return Buffer.concat(this.#chunks).toString("utf8");
  }
}

const name = z.string().describe("the sandbox's name");
const processShape = {
  name,
  cwd: z.string().optional().describe("working directory (absolute guest path)"),
  env: z.record(z.string(), z.string()).optional().describe("environment added to the sandbox's"),
  user: z.string().optional().describe("a user name or uid of the guest"),
  stdin: z.string().optional().describe("text given to the process as stdin, then end-of-file"),
  timeoutMs: z.number().int().min(1).optional().describe(`kill the process tree after this long (default ${DEFAULT_EXEC_TIMEOUT_MS})`),
  maxOutputBytes: z
    .number()
    .int()
    .min(0)
    .max(16 * 1024 * 1024)
    .optional()
    .describe(`bytes of stdout and of stderr returned (default ${DEFAULT_OUTPUT_CAP}); the rest is dropped and flagged truncated`),
};

interface ProcessArgs {
  name: string;
  cwd?: string;
  env?: Record<string, string>;
  user?: string;
  stdin?: string;
  timeoutMs?: number;
  maxOutputBytes?: number;
}

/** Handles by sandbox name, reused while their sandbox runs. */
class Handles {
  readonly #open = new Map<string, Sandbox>();

  /** A handle to the running sandbox `name` (the SDK's errors when there is none). */
  async get(name: string): Promise<Sandbox> {
    const known = this.#open.get(name);
    if (known?.running) return known;
    this.#open.delete(name);
    const fresh = await Sandbox.get(name);
    this.#open.set(name, fresh);
    return fresh;
  }

  /** Forgets the handle of `name` (it was stopped or removed). */
  forget(name: string): void {
    this.#open.delete(name);
  }
}

async function runProcess(handles: Handles, args: ProcessArgs, command: string, argv: string[]): Promise<CallToolResult> {
  const stdout = new Capture(args.maxOutputBytes ?? DEFAULT_OUTPUT_CAP);
  const stderr = new Capture(args.maxOutputBytes ?? DEFAULT_OUTPUT_CAP);
  const output = () => ({
    stdout: stdout.text(),
    stderr: stderr.text(),
    stdoutTruncated: stdout.truncated,
    stderrTruncated: stderr.truncated,
  });
  try {
    const sandbox = await handles.get(args.name);
    const started = Date.now();
    const handle = await sandbox.execStream(command, argv, {
      ...(args.cwd !== undefined && { cwd: args.cwd }),
      ...(args.env && { env: args.env }),
      ...(args.user !== undefined && { user: args.user }),
      ...(args.stdin !== undefined && { stdin: args.stdin }),
      timeout: args.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS,
    });
    for await (const event of handle) {
      if (event.eventType === "stdout") stdout.add(event.data);
      else if (event.eventType === "stderr") stderr.add(event.data);
      else {
        return ok({
          exitCode: event.code,
          ...(event.signal !== undefined && { signal: event.signal }),
          ...output(),
          durationMs: Date.now() - started,
        });
      }
    }
    throw new Error("the process's events ended without an exit");
  } catch (err) {
    return failure(err, err instanceof ExecTimeoutError ? output() : {});
  }
}

/** The MCP server with every tool registered; connect it to a transport. */
export function createMcpServer(version: string): McpServer {
  const server = new McpServer({ name: "microsandbox", version }, { instructions: INSTRUCTIONS });
  const handles = new Handles();

  server.registerTool(
    "sandbox_create",
    {
      description:
        "Boot a sandbox (a microVM) from an image. It is detached and named: it runs until sandbox_stop or its idle timeout, whatever happens to this server. Option names are Sandbox.create's.",
      inputSchema: {
        name: z.string().optional().describe("unique name (default: generated mcp-…)"),
        image: z.string().describe("an OCI reference (python:3.12), or an absolute host path of a root directory"),
        cpus: z.number().int().min(1).max(64).optional(),
        memoryMib: z.number().int().min(128).max(65536).optional(),
        env: z.record(z.string(), z.string()).optional(),
        workdir: z.string().optional(),
        scripts: z.record(z.string(), z.string()).optional().describe("name to content: executables in /.msb/scripts, on PATH"),
        network: z
          .looseObject({ policy: z.enum(["public-only", "allow-all", "none"]).optional() })
          .optional()
          .describe("NetworkOptions: policy, rules, allowDomains, blockDomains, ..."),
        ports: z.record(z.string(), z.number().int()).optional().describe("host port (on 127.0.0.1) to guest port"),
        secretEnv: z
          .record(z.string(), z.looseObject({ value: z.string(), domain: z.string().optional(), domains: z.array(z.string()).optional() }))
          .optional()
          .describe("secret variables: the guest sees a placeholder; the value goes only to the domains"),
        pullPolicy: z.enum(["always", "if-missing", "never"]).optional(),
        idleTimeoutMs: z
          .number()
          .int()
          .min(1000)
          .nullable()
          .optional()
          .describe(`stop after this long idle (default ${DEFAULT_IDLE_TIMEOUT_MS}; null: never)`),
        maxLifetimeMs: z.number().int().min(1000).optional(),
        volumes: z
          .record(
            z.string(),
            z.union([
              z.strictObject({ named: z.string(), readonly: z.boolean().optional() }),
              z.strictObject({ bind: z.string(), readonly: z.boolean().optional() }),
              z.strictObject({ tmpfs: z.strictObject({ sizeMib: z.number().int().min(1).optional() }) }),
            ]),
          )
          .optional()
          .describe('by absolute guest path: { named: VOLUME, readonly? } (see volume_create), { bind: HOST_DIR, readonly? } or { tmpfs: { sizeMib? } }'),
        persistent: z.boolean().optional().describe("keep the root's changes for the next sandbox of this name"),
        rootfsSizeMib: z.number().int().min(64).optional().describe("size of a persistent root in MiB (default 4096)"),
      },
    },
    (args) =>
      guarded(async () => {
        const { idleTimeoutMs, network, ports, secretEnv, ...rest } = args;
        const options: SandboxOptions = {
          ...rest,
          name: args.name ?? `mcp-${randomBytes(4).toString("hex")}`,
          ...(network && { network: network as NetworkOptions }),
          ...(ports && { ports: ports as unknown as Record<number, number> }),
          ...(secretEnv && { secretEnv: secretEnv as Record<string, SecretEnv> }),
          ...(idleTimeoutMs !== null && { idleTimeoutMs: idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS }),
          detached: true,
        };
        const sandbox = await Sandbox.create(options);
        return { name: sandbox.name, boot: sandbox.bootInfo };
      }),
  );

  server.registerTool(
    "sandbox_list",
    {
      description: "List sandboxes: running ones, and stopped or crashed detached ones until removed.",
      inputSchema: { all: z.boolean().optional().describe("include stopped and crashed ones (default true)") },
    },
    (args) =>
      guarded(async () => {
        const sandboxes = await Sandbox.list();
        return { sandboxes: args.all === false ? sandboxes.filter((s) => s.status === "running") : sandboxes };
      }),
  );

  server.registerTool(
    "sandbox_get",
    { description: "A sandbox's record (status, why it ended, image, resources) and, while it runs, how it booted.", inputSchema: { name } },
    (args) =>
      guarded(async () => {
        const record = (await Sandbox.list()).find((s) => s.name === args.name);
        if (!record) throw new SandboxNotFoundError(`there is no sandbox named ${JSON.stringify(args.name)}`);
        const boot = record.status === "running" ? (await handles.get(args.name)).bootInfo : undefined;
        return { ...record, ...(boot && { boot }) };
      }),
  );

  server.registerTool(
    "sandbox_exec",
    {
      description: "Run a program (no shell) in a sandbox and return its output and exit code.",
      inputSchema: {
        ...processShape,
        command: z.string().describe("the program"),
        args: z.array(z.string()).optional().describe("its arguments"),
      },
    },
    (args) => runProcess(handles, args, args.command, args.args ?? []),
  );

  server.registerTool(
    "sandbox_shell",
    {
      description: "Run a shell script (/bin/sh -c) in a sandbox and return its output and exit code.",
      inputSchema: { ...processShape, script: z.string().describe("the script") },
    },
    (args) => runProcess(handles, args, "/bin/sh", ["-c", args.script]),
  );

  server.registerTool(
    "sandbox_fs_read",
    {
      description: "Read a file of a sandbox.",
      inputSchema: {
        name,
        path: z.string().describe("guest path, absolute or relative to the workdir"),
        encoding: z.enum(["utf8", "base64"]).optional().describe("how content is returned (default utf8)"),
        maxBytes: z.number().int().min(0).optional().describe(`bytes returned at most (default ${DEFAULT_READ_CAP})`),
      },
    },
    (args) =>
      guarded(async () => {
        const fs = (await handles.get(args.name)).fs();
        const cap = args.maxBytes ?? DEFAULT_READ_CAP;
        const { size } = await fs.stat(args.path);
        let data: Buffer;
        if (size <= cap) data = await fs.read(args.path);
        else {
          const chunks: Buffer[] = [];
          let kept = 0;
          const stream = fs.readStream(args.path);
          for await (const chunk of stream as AsyncIterable<Buffer>) {
            chunks.push(chunk.subarray(0, cap - kept));
            kept += Math.min(chunk.length, cap - kept);
            if (kept >= cap) break;
          }
          stream.destroy();
          data = Buffer.concat(chunks);
        }
        return { path: args.path, size, content: data.toString(args.encoding ?? "utf8"), truncated: data.length < size };
      }),
  );

  server.registerTool(
    "sandbox_fs_write",
    {
      description: "Write a whole file in a sandbox.",
      inputSchema: {
        name,
        path: z.string(),
        content: z.string(),
        encoding: z.enum(["utf8", "base64"]).optional().describe("how content is given (default utf8)"),
        mode: z.number().int().min(0).max(0o7777).optional().describe("permission bits of a new file"),
        append: z.boolean().optional(),
        createParents: z.boolean().optional(),
      },
    },
    (args) =>
      guarded(async () => {
        const fs = (await handles.get(args.name)).fs();
        const data = Buffer.from(args.content, args.encoding ?? "utf8");
        const written = await fs.write(args.path, data, {
          ...(args.mode !== undefined && { mode: args.mode }),
          ...(args.append !== undefined && { append: args.append }),
          ...(args.createParents !== undefined && { createParents: args.createParents }),
        });
        return { path: args.path, bytesWritten: written };
      }),
  );

  server.registerTool(
    "sandbox_fs_list",
    {
      description: "List a directory of a sandbox, sorted by name.",
      inputSchema: { name, path: z.string(), maxEntries: z.number().int().min(1).optional() },
    },
    (args) =>
      guarded(async () => {
        const fs = (await handles.get(args.name)).fs();
        const entries = await fs.list(args.path, args.maxEntries === undefined ? {} : { maxEntries: args.maxEntries });
        return { path: args.path, entries };
      }),
  );

  server.registerTool(
    "sandbox_stop",
    {
      description: "Stop a sandbox (killed if it has not stopped in time); its record and logs stay until sandbox_remove.",
      inputSchema: { name, timeoutSeconds: z.number().int().min(0).optional().describe("wait this long before killing (default 10)") },
    },
    (args) =>
      guarded(async () => {
        handles.forget(args.name);
        await stop(args.name, args.timeoutSeconds ?? 10);
        const record = (await Sandbox.list()).find((s) => s.name === args.name);
        return { name: args.name, status: record?.status ?? "removed" };
      }),
  );

  server.registerTool(
    "sandbox_remove",
    {
      description: "Forget a sandbox: its record and logs. Refuses a running one unless force.",
      inputSchema: { name, force: z.boolean().optional().describe("kill a running sandbox first") },
    },
    (args) =>
      guarded(async () => {
        handles.forget(args.name);
        await Sandbox.remove(args.name, { force: args.force ?? false });
        return { name: args.name, removed: true };
      }),
  );

  server.registerTool(
    "sandbox_metrics",
    { description: "CPU, memory, network and disk use of a running sandbox.", inputSchema: { name } },
    (args) => guarded(async () => ({ name: args.name, ...(await (await handles.get(args.name)).metrics()) })),
  );

  server.registerTool(
    "image_pull",
    {
      description: "Pull an OCI image into the local cache.",
      inputSchema: {
        reference: z.string().describe("e.g. python:3.12"),
        insecure: z.array(z.string()).optional().describe("registries (host[:port]) spoken to over plain HTTP"),
        mirror: z.string().optional().describe("a mirror (host[:port]) of the default registry"),
      },
    },
    (args) =>
      guarded(async () => {
        const registry = {
          ...(args.insecure && { insecure: args.insecure }),
          ...(args.mirror !== undefined && { mirror: args.mirror }),
        };
        return Image.pull(args.reference, Object.keys(registry).length > 0 ? { registry } : {});
      }),
  );

  server.registerTool("image_list", { description: "List the cached images.", inputSchema: {} }, () =>
    guarded(async () => ({ images: await Image.list() })),
  );

  const volumeInfo = async (volume: Volume) => ({
    name: volume.name,
    kind: volume.kind,
    quotaMib: volume.quotaMib ?? null,
    createdAt: volume.createdAt.toISOString(),
    usage: await volume.usage(),
  });

  server.registerTool(
    "volume_create",
    {
      description:
        "Create a named volume that sandboxes mount with volumes: { '/path': { named } }. Without quotaMib a directory any number of sandboxes share; with quotaMib a disk capped at that size, mounted by one sandbox at a time.",
      inputSchema: {
        name: z.string().describe("the volume's name"),
        quotaMib: z.number().int().min(16).optional().describe("cap in MiB (makes a disk volume)"),
        kind: z.enum(["dir", "disk"]).optional(),
      },
    },
    (args) => guarded(async () => volumeInfo(await Volume.create(args))),
  );

  server.registerTool("volume_list", { description: "List the named volumes, with their use of the host's disk.", inputSchema: {} }, () =>
    guarded(async () => ({ volumes: await Promise.all((await Volume.list()).map(volumeInfo)) })),
  );

  server.registerTool(
    "volume_remove",
    {
      description: "Delete a volume and its contents (refused with VOLUME_IN_USE while a running sandbox mounts it).",
      inputSchema: { name: z.string().describe("the volume's name") },
    },
    (args) =>
      guarded(async () => {
        await Volume.remove(args.name);
        return { removed: args.name };
      }),
  );

  return server;
}

/**
 * Serves the tools on `stdin`/`stdout` until the client closes stdin. Nothing
 * else may write to `stdout` meanwhile.
 */
export async function serveMcp(io: { stdin: NodeJS.ReadStream; stdout: NodeJS.WriteStream }, version: string): Promise<void> {
  const server = createMcpServer(version);
  const transport = new StdioServerTransport(io.stdin, io.stdout);
  const closed = new Promise<void>((resolve) => {
    io.stdin.once("end", resolve).once("close", resolve);
    server.server.onclose = resolve;
  });
  await server.connect(transport);
  await closed;
  await server.close();
}
