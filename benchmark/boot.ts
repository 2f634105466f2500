// Boot benchmark. In one run, median of N interleaved rounds each:
//  (a) raw QEMU, launched here (benchmark/baseline.ts): the engine's machine,
//      the same kernel, the agent's initramfs with a tiny init appended that
//      reboots the moment it runs as PID 1 (`rdinit=`); wall time from spawn
//      to exit;
//  (b) Sandbox.create() until shell("echo ok") has returned its output, cold
//      (MSB_SNAPSHOT=off: the VM boots its kernel);
//  (c) the same, restored from the shape's template snapshot (the default),
//      which a warm-up create built;
//  (d) the same, taken from a warm pool: Sandbox.prewarm({ count: 1 }) of
//      (c)'s options plus one env variable (so that (c)'s creates do not take
//      from the pool), made once before the rounds; each round waits for the
//      pool to be full, then times a create with the pool's options, checks
//      that it took the pooled sandbox (its name, and `available` dropping to
//      0) and waits for the refill before the next path runs (the pooled
//      sandbox idles while (a) to (c) run; the pool is closed before the
//      memory measures);
//  and the memory of the runtime and QEMU processes of one idle sandbox of
//  each path (peak and current RSS, and Pss from smaps_rollup, which splits
//  pages shared with other processes among them), then the Pss per sandbox
//  with several restored sandboxes idle at once (the template's RAM file is
//  their shared page cache). Every sandbox's log is checked for the path it
//  was meant to take. All run on the accelerator the SDK's probe chose
//  (bootInfo.accel), which the section records. Results are appended to
//  benchmark/RESULTS.md.
//   node dist/benchmark/boot.js [ROUNDS]
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

import { Sandbox, type SandboxOptions, type WarmPool } from "../ts/index";
import { AccelRecord, baselineInitramfs, engineInitramfs, rebootInit, runRawQemu } from "./baseline";
import { accelLine, appendResults, machineDescription, median } from "./report";

const repoRoot = path.resolve(__dirname, "..", "..");
const rounds = Number(process.argv[2] ?? "7");
/** Restored sandboxes idle at once for the shared-memory measure. */
const sharing = 4;

function busyboxRoot(): string {
  return execFileSync(path.join(repoRoot, "scripts", "rootfs-busybox.sh"), { encoding: "utf8" }).trim();
}

const accel = new AccelRecord();

function rawQemuBoot(kernel: string, initramfs: string): Promise<number> {
  return runRawQemu({
    kernel,
    initramfs,
    accel: accel.value,
    cpus: 1,
    memoryMib: 512,
    append: "rdinit=/bench/reboot",
    timeoutMs: 60_000,
  });
}

/** How a sandbox came up, from its runtime's lines: the template paths, else "cold". */
type BootPath = "built" | "restored" | "unusable" | "cold";

async function bootPathOf(sandbox: Sandbox): Promise<BootPath> {
  const lines: string[] = [];
  for await (const line of sandbox.logs()) if (line.source === "runtime") lines.push(line.text);
  if (lines.some((l) => /^snapshot [0-9a-f]+ unusable /.test(l))) return "unusable";
  if (lines.some((l) => /^snapshot [0-9a-f]+ built in /.test(l))) return "built";
  if (lines.some((l) => /^restored from snapshot [0-9a-f]+ in /.test(l))) return "restored";
  return "cold";
}

/**
 * Sandbox.create() to the output of shell("echo ok"), with template snapshots
 * on or off (MSB_SNAPSHOT, which the engine reads at each create); fails
 * unless the sandbox's log shows the path `expect`.
 */
async function sandboxToFirstOutput(
  image: string,
  snapshots: "on" | "off",
  expect: BootPath,
): Promise<{ ms: number; sandbox: Sandbox }> {
  if (snapshots === "off") process.env.MSB_SNAPSHOT = "off";
  else delete process.env.MSB_SNAPSHOT;
  const started = process.hrtime.bigint();
  const sandbox = await Sandbox.create({ image, cpus: 1, memoryMib: 512 });
  const out = await sandbox.shell("echo ok");
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  delete process.env.MSB_SNAPSHOT;
  if (out.stdout() !== "ok\n") throw new Error(`unexpected output ${JSON.stringify(out.stdout())}`);
  accel.note(sandbox);
  const took = await bootPathOf(sandbox);
  if (took !== expect) {
    await sandbox.stopAndWait();
    throw new Error(`a sandbox meant to come up ${expect} came up ${took}`);
  }
  return { ms, sandbox };
}

/** (d)'s options: (c)'s machine and image, and an env variable that only (d)'s creates ask for. */
function poolOptions(image: string): SandboxOptions {
  return { image, cpus: 1, memoryMib: 512, env: { MSB_BENCH_PATH: "warm-pool" } };
}

/** Names of sandboxes with a directory under MSB_HOME/sandboxes that Sandbox.list() does not show: pooled ones. */
async function unlistedSandboxes(): Promise<string[]> {
  const dir = path.join(process.env.MSB_HOME!, "sandboxes");
  const listed = new Set((await Sandbox.list()).map((s) => s.name));
  return (fs.existsSync(dir) ? fs.readdirSync(dir) : []).filter((name) => !listed.has(name));
}

/**
 * (d): with the pool full, Sandbox.create() of the pool's options to the
 * output of shell("echo ok"); fails unless the sandbox is the one the pool
 * held. Leaves the pool full again.
 */
async function pooledToFirstOutput(image: string, pool: WarmPool): Promise<number> {
  await pool.filled();
  if (pool.available !== 1) throw new Error(`the pool holds ${pool.available} sandboxes (last error: ${String(pool.lastError)})`);
  const pooled = await unlistedSandboxes();
  if (pooled.length !== 1) throw new Error(`expected one pooled sandbox, found ${JSON.stringify(pooled)}`);
  const started = process.hrtime.bigint();
  const sandbox = await Sandbox.create(poolOptions(image));
  const availableAfter: number = pool.available;
  const out = await sandbox.shell("echo ok");
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  try {
    if (out.stdout() !== "ok\n") throw new Error(`unexpected output ${JSON.stringify(out.stdout())}`);
    accel.note(sandbox);
    if (sandbox.name !== pooled[0] || availableAfter !== 0) {
      throw new Error(`create did not take the pooled ${pooled[0]}: got ${sandbox.name}, ${availableAfter} left in the pool`);
    }
  } finally {
    await sandbox.stopAndWait();
  }
  // The refill boots now: it must not overlap the next round's other paths.
  await pool.filled();
  return ms;
}

function parentOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/** The KiB fields of /proc/<pid>/status or smaps_rollup, read once. */
function procKib(file: string): (field: string) => number {
  const text = fs.readFileSync(file, "utf8");
  return (field) => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
    if (!match) throw new Error(`no ${field} in ${file}`);
    return Number(match[1]);
  };
}

/** Memory of a sandbox's QEMU and runtime processes together, in KiB. */
interface HostMemory {
  peakRss: number;
  rss: number;
  pss: number;
  /** Pss of pages mapped from files (the template's RAM file among them) and of shared memory. */
  pssFileShmem: number;
}

function hostMemory(sandbox: Sandbox): HostMemory {
  const vmPid = sandbox.bootInfo.vmPid;
  const total: HostMemory = { peakRss: 0, rss: 0, pss: 0, pssFileShmem: 0 };
  for (const pid of [vmPid, parentOf(vmPid)]) {
    const status = procKib(`/proc/${pid}/status`);
    const rollup = procKib(`/proc/${pid}/smaps_rollup`);
    total.peakRss += status("VmHWM");
    total.rss += status("VmRSS");
    total.pss += rollup("Pss");
    total.pssFileShmem += rollup("Pss_File") + rollup("Pss_Shmem");
  }
  return total;
}

/** One idle sandbox's memory, after it has run a command and idled. */
async function idleMemory(image: string, snapshots: "on" | "off", expect: BootPath): Promise<HostMemory> {
  const { sandbox } = await sandboxToFirstOutput(image, snapshots, expect);
  try {
    await new Promise((resolve) => setTimeout(resolve, 3000));
    return hostMemory(sandbox);
  } finally {
    await sandbox.stopAndWait();
  }
}

/** `sharing` restored sandboxes idle at once: their Pss and RSS per sandbox. */
async function sharedMemory(image: string): Promise<{ pss: number; rss: number }> {
  const sandboxes: Sandbox[] = [];
  try {
    for (let i = 0; i < sharing; i++) sandboxes.push((await sandboxToFirstOutput(image, "on", "restored")).sandbox);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const each = sandboxes.map(hostMemory);
    return {
      pss: each.reduce((sum, m) => sum + m.pss, 0) / sharing,
      rss: each.reduce((sum, m) => sum + m.rss, 0) / sharing,
    };
  } finally {
    await Promise.all(sandboxes.map((sb) => sb.stopAndWait()));
  }
}

async function main(): Promise<void> {
  if (!(rounds >= 5)) throw new Error("use at least 5 rounds");
  process.env.MSB_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-"));
  const image = busyboxRoot();
  const kernel = path.join(repoRoot, "assets", "vmlinux");

  // Warm-up: writes the agent's initramfs into the cache, builds the shape's
  // template, tells which accelerator the SDK uses, and warms the page cache
  // for every path.
  const built = await sandboxToFirstOutput(image, "on", "built");
  await built.sandbox.stopAndWait();
  const warm = await sandboxToFirstOutput(image, "off", "cold");
  await warm.sandbox.stopAndWait();
  const initramfs = baselineInitramfs(
    engineInitramfs(process.env.MSB_HOME),
    { reboot: rebootInit() },
    path.join(process.env.MSB_HOME, "baseline-boot.cpio"),
  );
  await rawQemuBoot(kernel, initramfs);
  // (d)'s pool, restored from the template like (c); closed before the memory measures.
  const pool = await Sandbox.prewarm({ ...poolOptions(image), count: 1 });

  const raw: number[] = [];
  const cold: number[] = [];
  const restored: number[] = [];
  const warmPool: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      // Interleaved, so that drift in machine load hits all alike.
      raw.push(await rawQemuBoot(kernel, initramfs));
      for (const [snapshots, expect, into] of [
        ["off", "cold", cold],
        ["on", "restored", restored],
      ] as const) {
        const { ms, sandbox } = await sandboxToFirstOutput(image, snapshots, expect);
        into.push(ms);
        await sandbox.stopAndWait();
      }
      warmPool.push(await pooledToFirstOutput(image, pool));
    }
  } finally {
    await pool.close();
  }

  const idleCold = await idleMemory(image, "off", "cold");
  const idleRestored = await idleMemory(image, "on", "restored");
  const shared = await sharedMemory(image);
  fs.rmSync(process.env.MSB_HOME, { recursive: true, force: true });

  const rawMedian = median(raw);
  const coldRatio = median(cold) / rawMedian;
  const restoredRatio = median(restored) / rawMedian;
  const warmPoolMedian = median(warmPool);
  const warmPoolRatio = warmPoolMedian / rawMedian;
  const warmPoolBarMs = 50;
  const rssBarMib = 60;
  const verdict = (pass: boolean) => (pass ? "pass" : "FAIL");
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
  const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;
  const memoryRow = (label: string, m: HostMemory) =>
    `| ${label} | ${mib(m.peakRss)} | ${mib(m.rss)} | ${mib(m.pss)} | ${mib(m.pssFileShmem)} |`;
  const lines = [
    `Rounds: ${rounds}, interleaved; guest 1 vCPU, 512 MiB; root: busybox-static over 9p.`,
    "",
    "| measure | median | all rounds (ms) |",
    "|---|---|---|",
    `| (a) raw QEMU boot, same machine and kernel, the agent's initramfs plus a ${rebootInit().length}-byte init (\`rdinit\`) that reboots at once | ${rawMedian.toFixed(0)} ms | ${fmt(raw)} |`,
    `| (b) \`Sandbox.create()\` to output of \`shell("echo ok")\`, cold boot (\`MSB_SNAPSHOT=off\`) | ${median(cold).toFixed(0)} ms | ${fmt(cold)} |`,
    `| (c) the same, restored from the shape's template snapshot (built by a warm-up create) | ${median(restored).toFixed(0)} ms | ${fmt(restored)} |`,
    `| (d) the same, taken from a warm pool (\`Sandbox.prewarm\`, count 1, of (c)'s options plus one env variable; refilled before each round's create) (bar: p50 <= ${warmPoolBarMs} ms) | **${warmPoolMedian.toFixed(0)} ms** ${verdict(warmPoolMedian <= warmPoolBarMs)} | ${fmt(warmPool)} |`,
    `| ratio (b)/(a) (bar: <= 1.5) | **${coldRatio.toFixed(2)}** ${verdict(coldRatio <= 1.5)} | |`,
    `| ratio (c)/(a) (bar: <= 0.40) | **${restoredRatio.toFixed(2)}** ${verdict(restoredRatio <= 0.4)} | |`,
    `| ratio (d)/(a) | **${warmPoolRatio.toFixed(2)}** | |`,
    "",
    "Host memory of one idle 512 MiB sandbox (QEMU + runtime, after `echo ok` and 3 s idle):",
    "",
    "| path | peak RSS | RSS | Pss | of which file and shmem Pss |",
    "|---|---|---|---|---|",
    memoryRow("(b) cold boot", idleCold),
    memoryRow("(c) restored", idleRestored),
    "",
    `Idle RSS of the restored sandbox (bar: <= ${rssBarMib} MiB): **${mib(idleRestored.rss)}** ${verdict(idleRestored.rss <= rssBarMib * 1024)}.`,
    `With ${sharing} restored sandboxes idle at once, per sandbox: Pss **${mib(shared.pss)}**, RSS ${mib(shared.rss)}.`,
  ];
  appendResults("Boot: raw QEMU vs Sandbox.create()", "node dist/benchmark/boot.js " + rounds, accelLine(accel.value), lines);
  console.log(lines.join("\n"));
  console.log(`\n${machineDescription()}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
