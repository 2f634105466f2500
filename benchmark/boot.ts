// Boot benchmark. In one run, median of N rounds each:
//  (a) raw QEMU, launched here (benchmark/baseline.ts): the engine's machine,
//      the same kernel, the agent's initramfs with a tiny init appended that
//      reboots the moment it runs as PID 1 (`rdinit=`); wall time from spawn
//      to exit;
//  (b) Sandbox.create() until shell("echo ok") has returned its output;
//  and the peak RSS of the runtime and QEMU processes of one idle sandbox.
// Both run on the accelerator the SDK's probe chose (bootInfo.accel), which
// the section records. Results are appended to benchmark/RESULTS.md.
//   node dist/benchmark/boot.js [ROUNDS]
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

import { Sandbox } from "../ts/index";
import { AccelRecord, baselineInitramfs, engineInitramfs, rebootInit, runRawQemu } from "./baseline";
import { accelLine, appendResults, machineDescription, median } from "./report";

const repoRoot = path.resolve(__dirname, "..", "..");
const rounds = Number(process.argv[2] ?? "7");

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

async function sandboxToFirstOutput(image: string): Promise<{ ms: number; sandbox: Sandbox }> {
  const started = process.hrtime.bigint();
  const sandbox = await Sandbox.create({ image, cpus: 1, memoryMib: 512 });
  const out = await sandbox.shell("echo ok");
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (out.stdout() !== "ok\n") throw new Error(`unexpected output ${JSON.stringify(out.stdout())}`);
  accel.note(sandbox);
  return { ms, sandbox };
}

function peakRssKib(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /VmHWM:\s+(\d+) kB/.exec(status);
  if (!match) throw new Error(`no VmHWM for ${pid}`);
  return Number(match[1]);
}

function parentOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

async function main(): Promise<void> {
  if (!(rounds >= 5)) throw new Error("use at least 5 rounds");
  process.env.MSB_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-"));
  const image = busyboxRoot();
  const kernel = path.join(repoRoot, "assets", "vmlinux");

  // Warm-up: writes the agent's initramfs into the cache, tells which accelerator
  // the SDK uses, and warms the page cache for both paths.
  const warm = await sandboxToFirstOutput(image);
  await warm.sandbox.stopAndWait();
  const initramfs = baselineInitramfs(
    engineInitramfs(process.env.MSB_HOME),
    { reboot: rebootInit() },
    path.join(process.env.MSB_HOME, "baseline-boot.cpio"),
  );
  await rawQemuBoot(kernel, initramfs);

  const raw: number[] = [];
  const sdk: number[] = [];
  for (let i = 0; i < rounds; i++) {
    // Interleaved, so that drift in machine load hits both alike.
    raw.push(await rawQemuBoot(kernel, initramfs));
    const { ms, sandbox } = await sandboxToFirstOutput(image);
    sdk.push(ms);
    await sandbox.stopAndWait();
  }

  // Peak RSS of one idle 512 MiB sandbox, after it has run a command and idled.
  const idle = await sandboxToFirstOutput(image);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const vmPid = idle.sandbox.bootInfo.vmPid;
  const runtimePid = parentOf(vmPid);
  const rssVm = peakRssKib(vmPid);
  const rssRuntime = peakRssKib(runtimePid);
  await idle.sandbox.stopAndWait();
  fs.rmSync(process.env.MSB_HOME, { recursive: true, force: true });

  const rawMedian = median(raw);
  const sdkMedian = median(sdk);
  const ratio = sdkMedian / rawMedian;
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
  const lines = [
    `Rounds: ${rounds}, interleaved; guest 1 vCPU, 512 MiB; root: busybox-static over 9p.`,
    "",
    "| measure | median | all rounds (ms) |",
    "|---|---|---|",
    `| (a) raw QEMU boot, same machine and kernel, the agent's initramfs plus a ${rebootInit().length}-byte init (\`rdinit\`) that reboots at once | ${rawMedian.toFixed(0)} ms | ${fmt(raw)} |`,
    `| (b) \`Sandbox.create()\` to output of \`shell("echo ok")\` | ${sdkMedian.toFixed(0)} ms | ${fmt(sdk)} |`,
    `| ratio (b)/(a) (bar: <= 1.5) | **${ratio.toFixed(2)}** | |`,
    "",
    `Peak RSS of one idle 512 MiB sandbox: QEMU ${(rssVm / 1024).toFixed(1)} MiB + runtime ${(rssRuntime / 1024).toFixed(1)} MiB = **${((rssVm + rssRuntime) / 1024).toFixed(1)} MiB**.`,
  ];
  appendResults("Boot: raw QEMU vs Sandbox.create()", "node dist/benchmark/boot.js " + rounds, accelLine(accel.value), lines);
  console.log(lines.join("\n"));
  console.log(`\n${machineDescription()}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
