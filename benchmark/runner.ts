// Code runner benchmark (PythonSandbox, NodeSandbox), one run:
//  - run("x = 1") round trip on a warm interpreter over N runs, beside
//    exec("/bin/true") on the same sandbox in the same run (the baseline: one
//    process per call through the agent); bar p50 <= 10 ms under TCG;
//  - create -> first run result: PythonSandbox.create/NodeSandbox.create and
//    the first run("x = 1"), beside Sandbox.create and the first
//    exec("/bin/true") on the same image (the baseline), a few times each;
//    then the same creates served by a warm pool (PythonSandbox.prewarm /
//    NodeSandbox.prewarm, count 1, refilled before each create and checked
//    to have been taken from).
// Results are appended to benchmark/RESULTS.md.
//   node dist/benchmark/runner.js [RUNS] [CREATES]
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

import { NodeSandbox, PythonSandbox, Sandbox, type CodeSandbox } from "../ts/index";
import { AccelRecord } from "./baseline";
import { accelLine, appendResults, latencyRow, median, timed } from "./report";

const repoRoot = path.resolve(__dirname, "..", "..");
const runs = Number(process.argv[2] ?? "200");
const creates = Number(process.argv[3] ?? "3");
const accel = new AccelRecord();
const resources = { memoryMib: 512, cpus: 1 };

const row = latencyRow;

async function roundTrips(label: string, sb: CodeSandbox): Promise<string[]> {
  const run: number[] = [];
  const exec: number[] = [];
  for (let i = 0; i < 10; i++) {
    await sb.run("x = 1");
    await sb.exec("/bin/true");
  }
  // Interleaved, so that both see the same machine load.
  for (let i = 0; i < runs; i++) {
    const [runMs, execution] = await timed(() => sb.run("x = 1"));
    if (execution.status !== "ok") throw new Error(`run failed: ${execution.exception?.traceback}`);
    const [execMs, out] = await timed(() => sb.exec("/bin/true"));
    if (out.code !== 0) throw new Error("true failed");
    run.push(runMs);
    exec.push(execMs);
  }
  return [
    `### ${label}: run("x = 1") on a warm interpreter, ${runs} runs`,
    "",
    "| measure | p50 | p99 |",
    "|---|---|---|",
    row('baseline: exec("/bin/true") on the same sandbox', exec),
    row('**run("x = 1")**, SDK call to resolved Execution (bar p50 <= 10 ms)', run),
  ];
}

async function firstResults(image: string): Promise<string[]> {
  const lines = [
    `### create -> first result, ${creates} times each`,
    "",
    "| measure | p50 | max |",
    "|---|---|---|",
  ];
  const measure = async (label: string, f: () => Promise<Sandbox>, before?: () => Promise<void>) => {
    const times: number[] = [];
    for (let i = 0; i < creates; i++) {
      await before?.();
      const [ms, sb] = await timed(f);
      accel.note(sb);
      times.push(ms);
      await sb.stopAndWait();
    }
    lines.push(`| ${label} | ${median(times).toFixed(0)} ms | ${Math.max(...times).toFixed(0)} ms |`);
  };
  await measure('baseline: Sandbox.create + first exec("/bin/true")', async () => {
    const sb = await Sandbox.create({ image, ...resources });
    await sb.exec("/bin/true");
    return sb;
  });
  await measure('**PythonSandbox.create + first run("x = 1")**', async () => {
    const sb = await PythonSandbox.create({ image, ...resources });
    await sb.run("x = 1");
    return sb;
  });
  await measure('**NodeSandbox.create + first run("x = 1")**', async () => {
    const sb = await NodeSandbox.create({ image, ...resources });
    await sb.run("x = 1");
    return sb;
  });
  for (const [label, runner] of [
    ["PythonSandbox", PythonSandbox],
    ["NodeSandbox", NodeSandbox],
  ] as const) {
    const pool = await runner.prewarm({ image, ...resources, count: 1 });
    try {
      await measure(
        `**${label}.create from a warm pool (\`${label}.prewarm\`, count 1) + first run("x = 1")**`,
        async () => {
          const sb = await runner.create({ image, ...resources });
          if (pool.available !== 0) throw new Error(`${label}.create did not take from the pool`);
          await sb.run("x = 1");
          return sb;
        },
        () => pool.filled(),
      );
    } finally {
      await pool.close();
    }
  }
  return lines;
}

async function main(): Promise<void> {
  process.env.MSB_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-"));
  const image = execFileSync(path.join(repoRoot, "scripts", "rootfs-debian-runner.sh"), { encoding: "utf8" }).trim();
  try {
    const lines = [
      `Guests 1 vCPU, 512 MiB; root: scripts/rootfs-debian-runner.sh (Debian 12: python3 3.11, nodejs 18) over 9p.`,
      "",
    ];
    for (const [label, create] of [
      ["PythonSandbox", () => PythonSandbox.create({ image, ...resources })],
      ["NodeSandbox", () => NodeSandbox.create({ image, ...resources })],
    ] as const) {
      const sb: CodeSandbox = await create();
      accel.note(sb);
      try {
        lines.push(...(await roundTrips(label, sb)), "");
      } finally {
        await sb.stopAndWait();
      }
    }
    lines.push(...(await firstResults(image)));
    appendResults("Code runner", `node dist/benchmark/runner.js ${runs} ${creates}`, accelLine(accel.value, "no baseline VM"), lines);
    console.log(lines.join("\n"));
  } finally {
    fs.rmSync(process.env.MSB_HOME, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
