// The process that creates a sandbox owns it: when that process dies, however
// it dies, its runtime and VM processes must be gone within 2 seconds.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";

import { busyboxRoot, commandOf, eventually, isolatedHome, processesOf } from "./helpers";

const home = isolatedHome("orphans");
let root: string;

before(() => {
  root = busyboxRoot();
});

after(() => {
  fs.rmSync(home, { recursive: true, force: true });
});

/** Starts the fixture and resolves with the VM pids once its sandboxes answer. */
function holdSandboxes(count: number) {
  const child = spawn(
    process.execPath,
    [path.join(__dirname, "fixtures", "hold-sandbox.js"), root, String(count)],
    { stdio: ["ignore", "pipe", "inherit"], env: process.env },
  );
  const ready = new Promise<number[]>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const match = /ready alive ([\d,]+)\n/.exec(out);
      if (match) resolve(match[1].split(",").map(Number));
    });
    child.on("exit", (code) => reject(new Error(`fixture exited early with ${code}`)));
  });
  return { child, ready };
}

for (const signal of ["SIGKILL", "SIGTERM"] as const) {
  test(`${signal} of the creating process leaves no runtime or VM process after 2 s`, async () => {
    const { child, ready } = holdSandboxes(2);
    const vmPids = await ready;
    const before = processesOf(home);
    // Two runtimes and two VMs, all carrying this test's MSB_HOME.
    assert.ok(before.length >= 4, `expected runtime and VM processes, found ${before.map(commandOf)}`);
    for (const pid of vmPids) assert.ok(fs.existsSync(`/proc/${pid}`));

    child.kill(signal);
    const gone = await eventually(() => processesOf(home).length === 0, 2000);
    assert.ok(gone, `still running after 2 s: ${processesOf(home).map(commandOf).join("; ")}`);
  });
}
