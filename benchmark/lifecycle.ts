// Sandboxes by name benchmark, one run:
//  - Sandbox.get(name) + the first exec("/bin/true") on a running sandbox, over
//    N runs, beside exec("/bin/true") on a handle already held (the baseline,
//    same sandbox, same run): the difference is what reaching a sandbox by name
//    costs (bar p50 <= 5 ms);
//  - Sandbox.list() with 1 and with 20 running sandboxes (bar <= 20 ms with 20).
// Results are appended to benchmark/RESULTS.md.
//   node dist/benchmark/lifecycle.js [RUNS]
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

import { Sandbox } from "../ts/index";
import { accelOf } from "./baseline";
import { accelLine, appendResults, latencyRow, timed } from "./report";

const repoRoot = path.resolve(__dirname, "..", "..");
const runs = Number(process.argv[2] ?? "100");
const LISTED = 20;

const row = latencyRow;

async function getThenExec(held: Sandbox): Promise<string[]> {
  const heldMs: number[] = [];
  const byNameMs: number[] = [];
  for (let i = 0; i < 10; i++) await held.exec("/bin/true"); // warm the guest's caches
  for (let i = 0; i < runs; i++) {
    // Alternated, so that both see the same guest and host conditions.
    const [ms, out] = await timed(() => held.exec("/bin/true"));
    if (out.code !== 0) throw new Error("true failed");
    heldMs.push(ms);
    const [byName, result] = await timed(async () => (await Sandbox.get(held.name)).exec("/bin/true"));
    if (result.code !== 0) throw new Error("true failed");
    byNameMs.push(byName);
  }
  const cost = byNameMs.map((ms, i) => ms - heldMs[i]);
  return [
    `### Sandbox.get(name) + first exec("/bin/true"), ${runs} runs`,
    "",
    "| measure | p50 | p99 |",
    "|---|---|---|",
    row("baseline: exec on a handle already held", heldMs),
    row("Sandbox.get + exec on the new handle", byNameMs),
    row("**cost of reaching it by name** (difference, per run; bar p50 <= 5 ms)", cost),
  ];
}

async function listing(sandboxes: Sandbox[]): Promise<number[]> {
  for (let i = 0; i < 5; i++) await Sandbox.list();
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const [took, list] = await timed(() => Sandbox.list());
    if (list.filter((s) => s.status === "running").length !== sandboxes.length) {
      throw new Error(`list showed ${list.length} sandboxes, expected ${sandboxes.length} running`);
    }
    ms.push(took);
  }
  return ms;
}

async function main(): Promise<void> {
  process.env.MSB_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-"));
  const image = execFileSync(path.join(repoRoot, "scripts", "rootfs-busybox.sh"), { encoding: "utf8" }).trim();
  const sandboxes: Sandbox[] = [];
  try {
    sandboxes.push(await Sandbox.create({ image, name: "bench-0", memoryMib: 256 }));
    const lines = [
      "Guests 1 vCPU, 256 MiB; root: busybox-static over 9p.",
      "",
      ...(await getThenExec(sandboxes[0])),
      "",
    ];
    const one = await listing(sandboxes);
    while (sandboxes.length < LISTED) {
      sandboxes.push(await Sandbox.create({ image, name: `bench-${sandboxes.length}`, memoryMib: 128 }));
    }
    const twenty = await listing(sandboxes);
    lines.push(
      `### Sandbox.list(), ${runs} runs each`,
      "",
      "| running sandboxes | p50 | p99 |",
      "|---|---|---|",
      row("1 (baseline)", one),
      row(`**${LISTED}** (bar <= 20 ms)`, twenty),
    );
    const accel = accelLine(accelOf(sandboxes[0]), "no baseline VM");
    appendResults("Sandboxes by name", `node dist/benchmark/lifecycle.js ${runs}`, accel, lines);
    console.log(lines.join("\n"));
  } finally {
    await Promise.all(sandboxes.map((sb) => sb.stopAndWait()));
    fs.rmSync(process.env.MSB_HOME, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
