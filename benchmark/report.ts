// Helpers shared by the benchmarks: statistics and the RESULTS.md writer.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export const resultsPath = path.resolve(__dirname, "..", "..", "benchmark", "RESULTS.md");

export function median(values: number[]): number {
  return percentile(values, 50);
}

/** Nearest-rank percentile. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) throw new Error("no values");
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}

/** Runs `f` and returns the milliseconds it took with its value. */
export async function timed<T>(f: () => Promise<T>): Promise<[number, T]> {
  const started = process.hrtime.bigint();
  const value = await f();
  return [Number(process.hrtime.bigint() - started) / 1e6, value];
}

/** A table row of latencies: `| label | p50 ms | p99 ms |`. */
export function latencyRow(label: string, xs: number[]): string {
  return `| ${label} | ${median(xs).toFixed(2)} ms | ${percentile(xs, 99).toFixed(2)} ms |`;
}

function qemuVersion(): string {
  try {
    return execFileSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" }).split("\n")[0];
  } catch {
    return "qemu: unknown";
  }
}

export function machineDescription(): string {
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  const memGib = (os.totalmem() / 2 ** 30).toFixed(0);
  return `${os.cpus().length} x ${cpu}, ${memGib} GiB, Linux ${os.release()}, ${qemuVersion()}, Node ${process.version}`;
}

/** The section's accelerator line: what the SDK reported (`bootInfo.accel`) for every sandbox of the run. */
export function accelLine(accel: "kvm" | "tcg", baseline = "the raw QEMU baseline ran on the same"): string {
  return `${accel.toUpperCase()}, as the SDK's probe chose (bootInfo.accel of every sandbox); ${baseline}`;
}

/** The checkout's commit, with "+changes" when the tree differs from it: which code a section measured. */
function sourceCommit(): string {
  const git = (...args: string[]) => execFileSync("git", args, { cwd: path.dirname(resultsPath), encoding: "utf8" }).trim();
  try {
    const commit = git("rev-parse", "--short=12", "HEAD");
    // RESULTS.md itself is not code: an earlier benchmark of the same session may have appended to it.
    const changes = git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)benchmark/RESULTS.md");
    return changes === "" ? commit : `${commit}+changes`;
  } catch {
    return "unknown (not a git checkout)";
  }
}

/**
 * Appends one dated section to RESULTS.md. The file is append-only and
 * written only here: a section is what one run measured, never edited after.
 */
export function appendResults(title: string, command: string, accel: string, lines: string[]): void {
  const date = new Date().toISOString().replace("T", " ").slice(0, 16) + " UTC";
  const section = [
    `## ${title}: ${date}`,
    "",
    `Machine: ${machineDescription()}.`,
    `Commit: ${sourceCommit()}.`,
    `Command: \`${command}\``,
    `Accelerator: ${accel}.`,
    "",
    ...lines,
    "",
  ].join("\n");
  const header = "# Benchmark results\n\nEach section is one run, appended by the benchmark that produced it.\n\n";
  if (!fs.existsSync(resultsPath)) fs.writeFileSync(resultsPath, header);
  fs.appendFileSync(resultsPath, section + "\n");
}
