// msb ls, ps, inspect, logs, metrics, stop, start, rm: sandboxes by name,
// through Sandbox.list/get/logs/start/remove and a handle's metrics and stop.
import type { Command } from "commander";

import { Sandbox, SandboxNotFoundError, SandboxNotRunningError, type SandboxInfo, type SandboxMetrics, type SecretEnv } from "../index";
import type { CliContext } from "./context";
import { reportError, UsageError } from "./errors";
import { age, bytes, duration, json, table } from "./format";
import { formatOption, integer, secretPair } from "./parse";

/** The gap between a fresh handle's first metrics sample and the one shown. */
const PRIME_MS = 500;

const LIVE = new Set(["starting", "running", "stopping"]);

/** How `ps` lists a guest's processes (kernel threads left out): from /proc, with sh, tr and awk. */
const PS_SCRIPT = `for d in /proc/[0-9]*; do
  p=\${d#/proc/}; [ "$p" = "$$" ] && continue
  c=$(tr '\\0' ' ' < "$d/cmdline" 2>/dev/null) || continue
  [ -n "$c" ] || continue
  u=$(awk '/^Uid:/ { print $2 }' "$d/status" 2>/dev/null)
  printf '%s\\t%s\\t%s\\n' "$p" "\${u:-?}" "$c"
done`;

/** Runs `each` for every name; an error is reported and the next name goes on. Returns the exit status. */
async function forEachName(context: CliContext, names: string[], each: (name: string) => Promise<void>): Promise<number> {
  let status = 0;
  for (const name of names) {
    try {
      await each(name);
      context.stdio.stdout.write(`${name}\n`);
    } catch (err) {
      status = reportError(err, context.stdio.stderr, false);
    }
  }
  return status;
}

async function info(name: string): Promise<SandboxInfo> {
  const found = (await Sandbox.list()).find((s) => s.name === name);
  if (!found) throw new SandboxNotFoundError(`there is no sandbox named ${JSON.stringify(name)}`);
  return found;
}

/** Stops `name`, killing it after `seconds`; an already stopped sandbox is left as it is. */
export async function stop(name: string, seconds: number): Promise<void> {
  let sandbox: Sandbox;
  try {
    sandbox = await Sandbox.get(name);
  } catch (err) {
    if (err instanceof SandboxNotRunningError) return;
    throw err;
  }
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), seconds * 1000)));
  try {
    if ((await Promise.race([sandbox.stopAndWait(), deadline])) === "late") await sandbox.kill();
  } finally {
    clearTimeout(timer);
  }
}

function metricsRow(name: string, m: SandboxMetrics): string[] {
  const memory = m.memoryUsedMib === undefined ? "-" : `${m.memoryUsedMib.toFixed(0)} / ${m.memoryTotalMib?.toFixed(0) ?? "?"} MiB`;
  return [
    name,
    `${m.cpuPercent.toFixed(1)}%`,
    memory,
    `${bytes(m.netRxBytes)} / ${bytes(m.netTxBytes)}`,
    `${bytes(m.diskReadBytes)} / ${bytes(m.diskWriteBytes)}`,
    duration(m.uptimeMs),
  ];
}

interface MetricsFlags {
  all?: boolean;
  watch?: boolean;
  interval: number;
}

async function metrics(context: CliContext, name: string | undefined, flags: MetricsFlags): Promise<number> {
  if (name !== undefined && flags.all) throw new UsageError("metrics: give NAME or --all, not both");
  const out = context.stdio.stdout;
  const live = out.isTTY === true;
  const handles = new Map<string, Sandbox>();
  const stopped = new AbortController();
  const onSignal = () => stopped.abort();
  process.once("SIGINT", onSignal);
  try {
    for (let first = true; first || (flags.watch && !stopped.signal.aborted); first = false) {
      const names =
        name !== undefined ? [name] : (await Sandbox.list()).filter((s) => s.status === "running").map((s) => s.name);
      // A handle's first CPU figure averages since boot: a fresh handle is sampled
      // once and again after PRIME_MS, so every figure shown is a recent one.
      let fresh = false;
      for (const each of names) {
        if (handles.has(each)) continue;
        try {
          const handle = await Sandbox.get(each);
          await handle.metrics();
          handles.set(each, handle);
          fresh = true;
        } catch (err) {
          // One named sandbox: its error is the answer. Among all: it stopped meanwhile.
          if (name !== undefined) throw err;
        }
      }
      if (fresh) await new Promise((resolve) => setTimeout(resolve, PRIME_MS));
      const rows: [string, SandboxMetrics][] = [];
      for (const each of names) {
        const handle = handles.get(each);
        if (!handle) continue;
        try {
          rows.push([each, await handle.metrics()]);
        } catch (err) {
          handles.delete(each);
          if (name !== undefined) throw err;
        }
      }
      if (live) {
        const text = table(["NAME", "CPU", "MEMORY", "NET RX / TX", "DISK R / W", "UPTIME"], rows.map(([n, m]) => metricsRow(n, m)));
        out.write(flags.watch ? `\x1b[H\x1b[2J${text}` : text);
      } else {
        for (const [n, m] of rows) out.write(JSON.stringify({ name: n, ...m }) + "\n");
      }
      if (flags.watch) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, flags.interval);
          stopped.signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
        });
      }
    }
  } finally {
    process.off("SIGINT", onSignal);
  }
  return 0;
}

/** Registers ls, ps, inspect, logs, metrics, stop, start and rm; `setStatus` receives the exit status. */
export function registerSandboxes(program: Command, context: CliContext, setStatus: (status: number) => void): void {
  const out = context.stdio.stdout;
  program
    .command("ls")
    .description("list running sandboxes (-a: also stopped and crashed ones)")
    .option("-a, --all", "include stopped and crashed sandboxes")
    .addOption(formatOption())
    .action(async (flags: { all?: boolean; format: string }) => {
      const sandboxes = (await Sandbox.list()).filter((s) => flags.all || LIVE.has(s.status));
      if (flags.format === "json") return void out.write(json(sandboxes));
      const now = Date.now();
      out.write(
        table(
          ["NAME", "STATUS", "IMAGE", "CPUS", "MEMORY", "CREATED", "PID"],
          sandboxes.map((s) => [
            s.name,
            s.status + (s.reason && !LIVE.has(s.status) ? ` (${s.reason})` : ""),
            s.image,
            String(s.cpus),
            `${s.memoryMib} MiB`,
            age(s.createdAt, now),
            s.pid === undefined ? "-" : String(s.pid),
          ]),
        ),
      );
    });

  program
    .command("ps")
    .description("list the processes running in a sandbox")
    .argument("<name>", "the sandbox")
    .addOption(formatOption())
    .action(async (name: string, flags: { format: string }) => {
      const sandbox = await Sandbox.get(name);
      const result = await sandbox.shell(PS_SCRIPT);
      const processes = result
        .stdout()
        .split("\n")
        .filter((line) => line.length > 0)
        .map((line) => {
          const [pid, uid, ...command] = line.split("\t");
          return { pid: Number(pid), uid: uid === "?" ? null : Number(uid), command: command.join("\t").trim() };
        })
        .filter((p) => !p.command.includes("for d in /proc/"))
        .sort((a, b) => a.pid - b.pid);
      if (flags.format === "json") return void out.write(json(processes));
      out.write(table(["PID", "UID", "COMMAND"], processes.map((p) => [String(p.pid), String(p.uid ?? "?"), p.command])));
    });

  program
    .command("inspect")
    .description("show a sandbox's record, and how it booted when running, as JSON")
    .argument("<name>", "the sandbox")
    .action(async (name: string) => {
      const record = await info(name);
      const boot = record.status === "running" ? (await Sandbox.get(name)).bootInfo : undefined;
      out.write(json({ ...record, ...(boot && { boot }) }));
    });

  program
    .command("logs")
    .description("print a sandbox's console and runtime log")
    .argument("<name>", "the sandbox")
    .option("-f, --follow", "wait for new lines until the sandbox ends")
    .option("-t, --timestamps", "prefix each line with its time")
    .action(async (name: string, flags: { follow?: boolean; timestamps?: boolean }) => {
      const stopped = new AbortController();
      const onSignal = () => stopped.abort();
      process.once("SIGINT", onSignal);
      try {
        for await (const line of Sandbox.logs(name, { follow: flags.follow, signal: stopped.signal })) {
          const time = flags.timestamps ? `${line.time.toISOString()} ` : "";
          const source = line.source === "runtime" ? "[runtime] " : "";
          out.write(`${time}${source}${line.text}\n`);
        }
      } finally {
        process.off("SIGINT", onSignal);
      }
    });

  program
    .command("metrics")
    .description("CPU, memory, network and disk use: a table on a terminal, JSON lines otherwise")
    .argument("[name]", "the sandbox (default: every running one)")
    .option("--all", "every running sandbox")
    .option("--watch", "sample again every interval until interrupted")
    .option("--interval <ms>", "time between samples with --watch", integer(100), 1000)
    .action(async (name: string | undefined, flags: MetricsFlags) => {
      setStatus(await metrics(context, name, flags));
    });

  program
    .command("stop")
    .description("stop sandboxes (killed if they have not stopped after the timeout)")
    .argument("<name...>", "sandboxes")
    .option("-t, --time <seconds>", "seconds to wait before killing", integer(0), 10)
    .action(async (names: string[], flags: { time: number }) => {
      setStatus(await forEachName(context, names, (name) => stop(name, flags.time)));
    });

  program
    .command("start")
    .description("boot stopped sandboxes again with the options they were created with")
    .argument("<name...>", "sandboxes")
    .option("--secret <name=value@domain>", "a secret the sandbox was created with, given again (repeatable)", secretPair(context.env))
    .action(async (names: string[], flags: { secret?: Record<string, SecretEnv> }) => {
      setStatus(
        await forEachName(context, names, async (name) => {
          await Sandbox.start(name, flags.secret ? { secretEnv: flags.secret } : {});
        }),
      );
    });

  program
    .command("rm")
    .description("remove sandboxes: their records and logs")
    .argument("<name...>", "sandboxes")
    .option("-f, --force", "kill running ones first")
    .action(async (names: string[], flags: { force?: boolean }) => {
      setStatus(await forEachName(context, names, (name) => Sandbox.remove(name, { force: Boolean(flags.force) })));
    });
}
