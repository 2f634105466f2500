// Code written against the upstream microsandbox SDK, in its shapes: create
// with replace, list/get/remove, metrics under its field names, takeStdin and
// the config form of exec, stopAndWait's status, pull-progress sessions, the
// builder and the upstream error names. Real VMs, images from a loopback
// registry.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { after, before, describe, test } from "node:test";

import {
  ImageNotFoundError,
  InvalidConfigError,
  InvalidOptionError,
  isInstalled,
  install,
  Sandbox,
  SandboxRunningError,
  SandboxStillRunningError,
  type PullProgress,
} from "../ts/index";
import { busyboxRoot, isolatedHome } from "./helpers";
import { push, registries } from "./registry";

const home = isolatedHome("compat");
let image: string;
let registry: { insecure: string[] };

before(() => {
  const reg = registries();
  registry = { insecure: [reg.http] };
  image = `${reg.http}/compat/busybox:1`;
  push(image, { layers: [busyboxRoot()], insecure: true });
});

after(() => {
  fs.rmSync(home, { recursive: true, force: true });
});

/** Drains an exec handle the way the upstream SDK's users do, with recv(). */
async function drain(handle: Awaited<ReturnType<Sandbox["execStream"]>>) {
  let stdout = "";
  let code: number | null = null;
  for (let event = await handle.recv(); event !== null; event = await handle.recv()) {
    if (event.eventType === "stdout") stdout += event.data.toString("utf8");
    else if (event.eventType === "exited") code = event.code;
  }
  return { stdout, code };
}

test("isInstalled() is synchronous and true here; install() resolves", async () => {
  assert.equal(isInstalled(), true);
  await install();
});

describe("one sandbox, used as the upstream SDK's users do", () => {
  let sb: Sandbox;

  before(async () => {
    // A stopped detached sandbox of the name exists: replace takes its place.
    const old = await Sandbox.create({ image, registry, name: "compat", detached: true });
    await old.stopAndWait();
    sb = await Sandbox.create({ image, registry, name: "compat", cpus: 1, memoryMib: 512, replace: true });
  });

  after(async () => {
    await sb.stopAndWait();
    await Sandbox.remove("compat").catch(() => {});
  });

  test("replace: true took the name; without it the name is refused", async () => {
    assert.equal(sb.name, "compat");
    await assert.rejects(Sandbox.create({ image, registry, name: "compat" }));
  });

  test("metrics carry the upstream field names", async () => {
    const m = await sb.metrics();
    assert.ok(m.cpuPercent >= 0);
    assert.ok(m.memoryBytes > 0);
    assert.equal(m.memoryLimitBytes, 512 * 1024 * 1024);
    for (const field of ["diskReadBytes", "diskWriteBytes", "netRxBytes", "netTxBytes"] as const) {
      assert.ok(m[field] >= 0, field);
    }
    assert.ok(m.uptimeMs > 0);
    assert.ok(Math.abs(m.timestampMs - Date.now()) < 60_000);
  });

  test("list shows it running; get reaches it", async () => {
    const found = (await Sandbox.list()).find((s) => s.name === "compat");
    assert.equal(found?.status, "running");
    assert.equal((await (await Sandbox.get("compat")).shell("echo via get")).stdout(), "via get\n");
  });

  test("takeStdin is null without a pipe, the writer once with one; JSON lines round-trip", async () => {
    const plain = await sb.execStream("echo", ["no-stdin"]);
    assert.equal(await plain.takeStdin(), null);
    assert.deepEqual(await drain(plain), { stdout: "no-stdin\n", code: 0 });

    const piped = await sb.execStreamWithConfig({
      cmd: "sh",
      args: ["-c", 'while IFS= read -r line; do printf \'{"received":%s,"echo":true}\\n\' "$line"; done'],
      stdin: "pipe",
    });
    const stdin = await piped.takeStdin();
    assert.ok(stdin);
    assert.equal(await piped.takeStdin(), null);
    const commands = [{ id: 1, type: "prompt", message: "hi" }, { id: 2, type: "get_state" }];
    for (const command of commands) await stdin.write(Buffer.from(`${JSON.stringify(command)}\n`));
    await stdin.close();
    const { stdout, code } = await drain(piped);
    assert.equal(code, 0);
    assert.deepEqual(
      stdout.trim().split("\n").map((line) => JSON.parse(line)),
      commands.map((received) => ({ received, echo: true })),
    );
  });

  test("the config form passes env, cwd and the command", async () => {
    const streamed = await sb.execStreamWithConfig({ cmd: "sh", args: ["-c", "echo $MY_VAR; pwd"], env: { MY_VAR: "from-config" }, cwd: "/tmp" });
    assert.deepEqual(await drain(streamed), { stdout: "from-config\n/tmp\n", code: 0 });
    const out = await sb.execWithConfig({ cmd: "sh", args: ["-c", "exit 3"] });
    assert.equal(out.code, 3);
    await assert.rejects(sb.execWithConfig({} as never), InvalidOptionError);
  });
});

test("stopAndWait resolves to the VM's exit status; again, without error", async () => {
  const sb = await Sandbox.create({ image, registry });
  const status = await sb.stopAndWait();
  assert.deepEqual(status, { code: 0, success: true });
  assert.equal((await sb.stopAndWait()).success, true);
});

describe("pull-progress sessions", () => {
  test("events come in order, resolving first and complete last, with their fields", async () => {
    const session = Sandbox.createWithProgress({ name: "progress", image, registry, replace: true, pullPolicy: "always" });
    const events: PullProgress[] = [];
    for await (const event of session) events.push(event);
    const types = events.map((e) => e.type);
    assert.equal(types[0], "resolving");
    assert.equal(types[types.length - 1], "complete");
    const resolved = events.find((e) => e.type === "resolved");
    assert.ok(resolved?.type === "resolved");
    assert.equal(resolved.reference, image);
    assert.match(resolved.manifestDigest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(resolved.layerCount, 1);
    const last = events[events.length - 1];
    assert.ok(last.type === "complete" && last.layerCount === 1 && last.reference === image);
    assert.ok(types.indexOf("resolved") < types.indexOf("complete"));
    const sb = await session.result();
    assert.equal(sb.name, "progress");
    await assert.rejects(session.result(), /already consumed/);
    await sb.stopAndWait();
  });

  test("recv() on a cached image still reports resolving, resolved and complete; the detached form detaches", async () => {
    const session = Sandbox.createDetachedWithProgress({ name: "progress-detached", image, registry, replace: true });
    const types: string[] = [];
    for (let event = await session.recv(); event !== null; event = await session.recv()) types.push(event.type);
    assert.deepEqual(types, ["resolving", "resolved", "complete"]);
    const sb = await session.result();
    assert.equal((await Sandbox.list()).find((s) => s.name === "progress-detached")?.detached, true);
    await sb.stopAndWait();
    await Sandbox.remove("progress-detached");
  });

  test("result() rejects with the create error when the image is not cached under pullPolicy never", async () => {
    const session = Sandbox.createWithProgress({ image: "compat-not-cached-anywhere:never", pullPolicy: "never" });
    const types: string[] = [];
    for await (const event of session) types.push(event.type);
    assert.deepEqual(types, ["resolving"]);
    await assert.rejects(session.result(), (err: unknown) => {
      assert.ok(err instanceof ImageNotFoundError);
      assert.match(err.message, /not in the local cache/);
      return true;
    });
  });
});

test("the builder chain maps onto the same options", async () => {
  const builder = Sandbox.builder("built")
    .image(image)
    .registry(registry)
    .cpus(1)
    .memory(256)
    .env("A", "1")
    .env({ B: "2" })
    .workdir("/tmp")
    .script("hi", "#!/bin/sh\necho hi from script\n")
    .replace();
  assert.deepEqual(builder.options(), {
    name: "built",
    image,
    registry,
    cpus: 1,
    memoryMib: 256,
    env: { A: "1", B: "2" },
    workdir: "/tmp",
    scripts: { hi: "#!/bin/sh\necho hi from script\n" },
    replace: true,
  });
  const created = await builder.create();
  try {
    assert.equal((await created.shell('echo "$A$B $(pwd)"; hi')).stdout(), "12 /tmp\nhi from script\n");
  } finally {
    await created.stopAndWait();
  }
  await assert.rejects(Sandbox.builder("no-image").create(), InvalidOptionError);
});

test("the upstream error names are the same classes", () => {
  assert.equal(InvalidConfigError, InvalidOptionError);
  assert.equal(SandboxStillRunningError, SandboxRunningError);
});
