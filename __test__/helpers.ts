// Shared by the end-to-end tests: real root filesystems, an isolated state home
// per test file, and a way to see which host processes a sandbox left behind.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export const repoRoot = path.resolve(__dirname, "..", "..");

function buildRoot(script: string): string {
  // The scripts are cached and idempotent: after the first build they only print the path.
  return execFileSync(path.join(repoRoot, "scripts", script), {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
}

/** A busybox-static root: fast to boot, has sh and the usual applets. */
export function busyboxRoot(): string {
  return buildRoot("rootfs-busybox.sh");
}

/** A Debian 12 minbase root with python3. */
export function pythonRoot(): string {
  return buildRoot("rootfs-debian-python.sh");
}

/** A Debian 12 minbase root with python3, nodejs and python3-matplotlib: PythonSandbox and NodeSandbox. */
export function runnerRoot(): string {
  return buildRoot("rootfs-debian-runner.sh");
}

/**
 * Points the engine at a fresh MSB_HOME for this test file, so that what its
 * sandboxes leave behind (processes, files) can be told apart from others'.
 */
export function isolatedHome(label: string): string {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), `msb-test-${label}-`));
  process.env.MSB_HOME = home;
  return home;
}

/** Pids of processes whose environment carries MSB_HOME=home: runtimes and VMs of that home. */
export function processesOf(home: string): number[] {
  const marker = Buffer.from(`MSB_HOME=${home}\0`);
  const pids: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const environ = fs.readFileSync(`/proc/${entry}/environ`);
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      // A zombie has exited; its parent has yet to reap it. It holds no resources.
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      if (state !== "Z" && environ.includes(marker)) pids.push(Number(entry));
    } catch {
      // The process exited while we looked.
    }
  }
  return pids;
}

export function commandOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
  } catch {
    return "<gone>";
  }
}

/** Polls until `check` returns true or `timeoutMs` passes; returns the last result. */
export async function eventually(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return check();
}

/** Every file under `dir` whose type is one of `kinds` ("socket", "temp"). */
export function leftovers(dir: string): string[] {
  const found: string[] = [];
  const walk = (d: string) => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isSocket() || entry.isFIFO() || /\.tmp$|^\.#|~$/.test(entry.name)) found.push(full);
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return found;
}

/** The fields of `/proc/PID/stat` after the command name (state first), which may hold spaces and parentheses. */
function statFields(pid: number): string[] {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/** Whether `pid` runs: it exists and is no zombie. */
export function alive(pid: number): boolean {
  try {
    return statFields(pid)[0] !== "Z";
  } catch {
    return false;
  }
}

/** The parent process of `pid`. */
export function parentOf(pid: number): number {
  return Number(statFields(pid)[1]);
}
