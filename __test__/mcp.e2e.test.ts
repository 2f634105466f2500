// `msb mcp` end to end: a client of the MCP SDK spawns the server over stdio,
// lists its tools and drives one sandbox through its life: create, exec,
// shell, files, metrics, stop, remove; and pulls an image from a registry in
// this process. The sandbox outlives a reconnect.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

import { Sandbox } from "../ts/index";
import { startTinyRegistry } from "./fixtures/tiny-registry";
import { busyboxRoot, commandOf, eventually, isolatedHome, processesOf, repoRoot } from "./helpers";

const home = isolatedHome("mcp");
let root: string;

before(() => {
  root = busyboxRoot();
});

after(() => {
  fs.rmSync(home, { recursive: true, force: true });
});

async function connect(): Promise<Client> {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [path.join(repoRoot, "dist", "ts", "cli", "main.js"), "mcp"],
    env: { ...(process.env as Record<string, string>), MSB_HOME: home },
    stderr: "inherit",
  });
  const client = new Client({ name: "msb-test", version: "0.0.0" });
  await client.connect(transport);
  return client;
}

interface ToolResult {
  isError?: boolean;
  structuredContent?: Record<string, unknown>;
  content: { type: string; text?: string }[];
}

async function call(client: Client, name: string, args: Record<string, unknown>): Promise<ToolResult> {
  return (await client.callTool({ name, arguments: args })) as ToolResult;
}

async function ok(client: Client, name: string, args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const result = await call(client, name, args);
  assert.ok(!result.isError, `${name} failed: ${result.content[0]?.text}`);
  return result.structuredContent!;
}

function errorCode(result: ToolResult): unknown {
  assert.equal(result.isError, true, JSON.stringify(result));
  return (result.structuredContent?.error as { code: string }).code;
}

test("an MCP client lists the tools and drives a sandbox from create to remove", async () => {
  let client = await connect();
  try {
    const tools = (await client.listTools()).tools;
    assert.deepEqual(tools.map((t) => t.name).sort(), [
      "image_list",
      "image_pull",
      "sandbox_create",
      "sandbox_exec",
      "sandbox_fs_list",
      "sandbox_fs_read",
      "sandbox_fs_write",
      "sandbox_get",
      "sandbox_list",
      "sandbox_metrics",
      "sandbox_remove",
      "sandbox_shell",
      "sandbox_stop",
      "volume_create",
      "volume_list",
      "volume_remove",
    ]);
    const create = tools.find((t) => t.name === "sandbox_create")!;
    assert.deepEqual(create.inputSchema.required, ["image"]);
    assert.ok(create.inputSchema.properties && "memoryMib" in create.inputSchema.properties);

    // Bad arguments and SDK errors come back as tool errors with the code.
    assert.equal(errorCode(await call(client, "sandbox_create", { image: "/nonexistent/root" })), "IMAGE_NOT_FOUND");
    assert.equal(errorCode(await call(client, "sandbox_exec", { name: "nobody", command: "true" })), "SANDBOX_NOT_FOUND");
    assert.equal((await call(client, "sandbox_create", { image: root, cpus: "many" })).isError, true);

    const volume = await ok(client, "volume_create", { name: "agent-data" });
    assert.deepEqual([volume.name, volume.kind], ["agent-data", "dir"]);
    assert.equal(errorCode(await call(client, "volume_create", { name: "agent-data" })), "VOLUME_EXISTS");
    const created = await ok(client, "sandbox_create", {
      name: "agent",
      image: root,
      memoryMib: 256,
      env: { ROLE: "agent" },
      volumes: { "/data": { named: "agent-data" } },
    });
    assert.equal((await ok(client, "sandbox_shell", { name: "agent", script: "echo kept > /data/f && cat /data/f" })).stdout, "kept\n");
    assert.equal(errorCode(await call(client, "volume_remove", { name: "agent-data" })), "VOLUME_IN_USE");
    assert.equal(created.name, "agent");
    assert.equal(typeof (created.boot as { vmPid: number }).vmPid, "number");

    const exec = await ok(client, "sandbox_exec", {
      name: "agent",
      command: "sh",
      args: ["-c", 'cat; echo "$ROLE in $(pwd)"; echo oops >&2; exit 3'],
      cwd: "/tmp",
      stdin: "input\n",
    });
    assert.deepEqual(
      [exec.stdout, exec.stderr, exec.exitCode, exec.stdoutTruncated, exec.stderrTruncated],
      ["input\nagent in /tmp\n", "oops\n", 3, false, false],
    );
    const capped = await ok(client, "sandbox_shell", { name: "agent", script: "yes | head -c 100000", maxOutputBytes: 10 });
    assert.deepEqual([capped.stdout, capped.stdoutTruncated, capped.exitCode], ["y\ny\ny\ny\ny\n", true, 0]);
    assert.equal(errorCode(await call(client, "sandbox_shell", { name: "agent", script: "sleep 10", timeoutMs: 300 })), "EXEC_TIMEOUT");

    // A reconnecting client finds the sandbox by name: the server held nothing.
    await client.close();
    client = await connect();
    assert.equal((await ok(client, "sandbox_get", { name: "agent" })).status, "running");

    await ok(client, "sandbox_fs_write", { name: "agent", path: "/srv/note.txt", content: "hello mcp", createParents: true });
    assert.equal((await ok(client, "sandbox_fs_read", { name: "agent", path: "/srv/note.txt" })).content, "hello mcp");
    const partial = await ok(client, "sandbox_fs_read", { name: "agent", path: "/srv/note.txt", maxBytes: 5, encoding: "base64" });
    assert.deepEqual([Buffer.from(partial.content as string, "base64").toString(), partial.truncated], ["hello", true]);
    const listing = await ok(client, "sandbox_fs_list", { name: "agent", path: "/srv" });
    assert.deepEqual(
      (listing.entries as { name: string; kind: string; size: number }[]).map((e) => [e.name, e.kind, e.size]),
      [["note.txt", "file", 9]],
    );
    assert.equal(errorCode(await call(client, "sandbox_fs_read", { name: "agent", path: "/srv/none" })), "FS_NOT_FOUND");

    const metrics = await ok(client, "sandbox_metrics", { name: "agent" });
    assert.equal(typeof metrics.cpuPercent, "number");
    const listed = (await ok(client, "sandbox_list", {})).sandboxes as { name: string; detached: boolean }[];
    assert.deepEqual(listed.map((s) => [s.name, s.detached]), [["agent", true]]);
    assert.deepEqual((await ok(client, "image_list", {})).images, []);
    const registry = await startTinyRegistry();
    try {
      const pulled = await ok(client, "image_pull", { reference: registry.reference("1"), insecure: [registry.host] });
      assert.deepEqual(pulled.layers, [registry.layerDigest]);
      const images = (await ok(client, "image_list", {})).images as { reference: string }[];
      assert.deepEqual(images.map((i) => i.reference), [registry.reference("1")]);
    } finally {
      await registry.close();
    }

    assert.equal(errorCode(await call(client, "sandbox_remove", { name: "agent" })), "SANDBOX_RUNNING");
    assert.equal((await ok(client, "sandbox_stop", { name: "agent" })).status, "stopped");
    assert.equal(errorCode(await call(client, "sandbox_exec", { name: "agent", command: "true" })), "SANDBOX_NOT_RUNNING");
    assert.equal((await ok(client, "sandbox_remove", { name: "agent" })).removed, true);
    assert.deepEqual((await ok(client, "sandbox_list", {})).sandboxes, []);
    const volumes = (await ok(client, "volume_list", {})).volumes as { name: string; usage: { usedBytes: number } }[];
    assert.deepEqual(volumes.map((v) => v.name), ["agent-data"]);
    assert.equal((await ok(client, "volume_remove", { name: "agent-data" })).removed, "agent-data");
    assert.deepEqual((await ok(client, "volume_list", {})).volumes, []);
  } finally {
    await client.close();
    // A detached sandbox outlives the server: a failed step must not leave it running.
    await Sandbox.remove("agent", { force: true }).catch(() => {});
  }
  assert.ok(await eventually(() => processesOf(home).length === 0, 3000), processesOf(home).map(commandOf).join("; "));
});
