// The process that creates a sandbox owns it: when that process dies, however
// it dies, its runtime and VM processes must be gone within 2 seconds.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";

import { busyboxRoot, commandOf, eventually, isolatedHome, parentOf, processesOf } from "./helpers";

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
    // Whatever fails below, the fixture must not outlive the test: it would hold
    // the test runner's output open and every sandbox it owns alive.
    try {
      await checkOwnershipThenKill(child, await ready, signal);
    } finally {
      child.kill("SIGKILL");
    }
  });
}

async function checkOwnershipThenKill(child: ChildProcess, vmPids: number[], signal: NodeJS.Signals) {
  // Besides the fixture's own Node process, exactly two runtimes and their two
  // VMs carry this test's MSB_HOME: each VM the fixture reported, each a child
  // of a runtime of its own.
  const fixture = child.pid!;
  const sandboxProcesses = processesOf(home).filter((pid) => pid !== fixture);
  const shown = sandboxProcesses.map((pid) => `${pid} ${commandOf(pid)}`).join("; ");
  const vms = sandboxProcesses.filter((pid) => vmPids.includes(pid));
  const runtimes = sandboxProcesses.filter((pid) => !vmPids.includes(pid));
  assert.equal(vmPids.length, 2);
  const sorted = (pids: number[]) => [...pids].sort((a, b) => a - b);
  assert.deepEqual(sorted(vms), sorted(vmPids), `VM processes: ${shown}`);
  assert.equal(runtimes.length, 2, `expected two runtimes: ${shown}`);
  assert.deepEqual(sorted(vmPids.map(parentOf)), sorted(runtimes), `each VM a child of one runtime: ${shown}`);
  for (const pid of runtimes) assert.equal(parentOf(pid), fixture, `runtime ${pid} is the fixture's child`);

  child.kill(signal);
  const gone = await eventually(() => processesOf(home).length === 0, 2000);
  assert.ok(gone, `still running after 2 s: ${processesOf(home).map(commandOf).join("; ")}`);
}
