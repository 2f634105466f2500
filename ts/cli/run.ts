// msb run, msb exec, msb shell: boot a sandbox (or reach a running one) and
// connect a process in it to this terminal.
import * as os from "node:os";

import { Command, Option } from "commander";

import { Sandbox, type ExecOptions, type SandboxOptions, type SecretEnv, type VolumeMount } from "../index";
import { attach, FORWARDED, terminalSize } from "./attach";
import type { CliContext } from "./context";
import { UsageError } from "./errors";
import { pullProgress, registryFrom, registryOptions, type RegistryFlags } from "./images";
import { resolveProjectRun } from "./project";
import { bindMount, envPair, integer, namedMount, networkPolicy, portPair, secretPair, tmpfsMount } from "./parse";

/** The shell of `msb shell` and of `msb run` without a command. */
const DEFAULT_SHELL = "/bin/sh";

interface RunFlags extends RegistryFlags {
  name?: string;
  detach?: boolean;
  cpus?: number;
  memory?: number;
  env?: Record<string, string>;
  publish?: Record<number, number>;
  network?: "public-only" | "allow-all" | "none";
  secret?: Record<string, SecretEnv>;
  workdir?: string;
  rm?: boolean;
  interactive?: boolean;
  tty?: boolean;
  sandbox?: string;
  reuse?: boolean;
  bind?: Record<string, VolumeMount>;
  volume?: Record<string, VolumeMount>;
  tmpfs?: Record<string, VolumeMount>;
  persistent?: boolean;
  rootfsSize?: number;
}

interface ExecFlags {
  interactive?: boolean;
  tty?: boolean;
  env?: Record<string, string>;
  workdir?: string;
  user?: string;
  shell?: string;
}

/** The command operands: commander passes a `--` after the first positional through; it only separates. */
function operands(command: string[]): string[] {
  return command[0] === "--" ? command.slice(1) : command;
}

/** A sandbox to run in, and whether this CLI must stop it when the command ends. */
interface Target {
  sandbox: Sandbox;
  owned: boolean;
}

/**
 * `--reuse`: the running sandbox of that name, or the stopped one booted
 * again, or undefined when there is none.
 */
async function reuse(name: string, secretEnv: Record<string, SecretEnv> | undefined): Promise<Target | undefined> {
  const info = (await Sandbox.list()).find((s) => s.name === name);
  if (!info) return undefined;
  if (info.status === "running" || info.status === "starting") return { sandbox: await Sandbox.get(name), owned: false };
  if (info.status === "stopping") {
    // Wait for it to finish stopping, then boot it again.
    await Sandbox.get(name).then(
      (s) => s.stopAndWait(),
      () => {},
    );
  }
  return { sandbox: await Sandbox.start(name, secretEnv ? { secretEnv } : {}), owned: true };
}

/** Raised when the CLI was told to stop (SIGINT, SIGTERM, SIGHUP) while a sandbox booted. */
class Interrupted extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
  }
}

/**
 * Creates the sandbox. A signal that arrives meanwhile does not end the CLI
 * at once (which would leave a detached sandbox running): the boot finishes,
 * the sandbox is stopped, and Interrupted is thrown.
 */
async function boot(context: CliContext, options: SandboxOptions): Promise<Sandbox> {
  const progress = pullProgress(context);
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    // Nothing to clean up for a sandbox that ends with this process; a second signal insists.
    if (!options.detached || interrupted) process.exit(128 + os.constants.signals[signal]);
    interrupted = signal;
    context.stdio.stderr.write(`msb: ${signal}: stopping the sandbox once it has booted (again to leave it)\n`);
  };
  for (const signal of FORWARDED) process.on(signal, onSignal);
  try {
    const sandbox = await Sandbox.create({ ...options, onProgress: progress.onProgress });
    if (interrupted) {
      await sandbox.stopAndWait();
      if (options.detached && options.name === undefined) await Sandbox.remove(sandbox.name).catch(() => {});
      throw new Interrupted(interrupted);
    }
    return sandbox;
  } finally {
    for (const signal of FORWARDED) process.off(signal, onSignal);
    progress.finish();
  }
}

function execOptions(context: CliContext, flags: { tty: boolean; stdin: boolean }, extra: ExecOptions): ExecOptions {
  return {
    ...extra,
    ...(flags.tty && { tty: terminalSize(context.stdio) }),
    ...(flags.stdin && { stdin: "pipe" as const }),
  };
}

async function run(context: CliContext, image: string | undefined, rest: string[], flags: RunFlags): Promise<number> {
  let options: SandboxOptions;
  let command: string[];
  let name = flags.name;
  if (flags.sandbox !== undefined) {
    const project = resolveProjectRun(flags.sandbox, context.cwd);
    // Everything after the flags goes to the script.
    command = [...project.command, ...(image === undefined ? [] : [image]), ...rest];
    options = { ...project.options, env: { ...project.options.env, ...flags.env } };
    name ??= project.name;
  } else {
    if (image === undefined) throw new UsageError("run: IMAGE is required (or --sandbox NAME)");
    options = { image, ...(flags.env && { env: flags.env }) };
    command = rest;
  }
  if (flags.rm && flags.detach) throw new UsageError("run: --rm and --detach together need the engine to remove a sandbox when it stops; stop and rm it instead");
  if (flags.reuse && name === undefined) throw new UsageError("run: --reuse needs --name");
  // Kept afterwards (stopped, for logs and `msb start`): detached runs, and
  // attached image runs without --rm. A project run keeps nothing unless detached.
  const detached = Boolean(flags.detach) || (!flags.rm && flags.sandbox === undefined);
  options = {
    ...options,
    ...(name !== undefined && { name }),
    ...(flags.cpus !== undefined && { cpus: flags.cpus }),
    ...(flags.memory !== undefined && { memoryMib: flags.memory }),
    ...(flags.publish && { ports: { ...options.ports, ...flags.publish } }),
    ...(flags.network && { network: { policy: flags.network } }),
    ...(flags.secret && { secretEnv: flags.secret }),
    ...(flags.workdir !== undefined && { workdir: flags.workdir }),
    ...(registryFrom(flags) && { registry: registryFrom(flags) }),
    ...((flags.bind || flags.volume || flags.tmpfs) && {
      volumes: { ...options.volumes, ...flags.bind, ...flags.volume, ...flags.tmpfs },
    }),
    ...(flags.persistent && { persistent: true }),
    ...(flags.rootfsSize !== undefined && { rootfsSizeMib: flags.rootfsSize }),
    detached,
  };

  let target: Target;
  try {
    target = (flags.reuse && (await reuse(name!, flags.secret))) || { sandbox: await boot(context, options), owned: true };
  } catch (err) {
    if (err instanceof Interrupted) return 128 + os.constants.signals[err.signal];
    throw err;
  }
  const { sandbox } = target;
  if (flags.detach) {
    if (command.length > 0) {
      // Started and left running: a handle dropped unread leaves its process running.
      await sandbox.execStream(command[0], command.slice(1));
    }
    context.stdio.stdout.write(`${sandbox.name}\n`);
    return 0;
  }
  try {
    const interactiveShell = command.length === 0;
    const tty = Boolean(flags.tty) || (interactiveShell && context.stdio.stdin.isTTY === true);
    const stdin = Boolean(flags.interactive) || interactiveShell;
    const [program, ...args] = interactiveShell ? [DEFAULT_SHELL] : command;
    const handle = await sandbox.execStream(program, args, execOptions(context, { tty, stdin }, {}));
    return await attach(handle, context.stdio, { tty });
  } finally {
    if (target.owned) await sandbox.stopAndWait();
  }
}

async function exec(context: CliContext, name: string, command: string[], flags: ExecFlags): Promise<number> {
  if (command.length === 0) throw new UsageError("exec: COMMAND is required");
  const sandbox = await Sandbox.get(name);
  const tty = Boolean(flags.tty);
  const options = execOptions(context, { tty, stdin: Boolean(flags.interactive) }, {
    ...(flags.env && { env: flags.env }),
    ...(flags.workdir !== undefined && { cwd: flags.workdir }),
    ...(flags.user !== undefined && { user: flags.user }),
  });
  const handle = await sandbox.execStream(command[0], command.slice(1), options);
  return attach(handle, context.stdio, { tty });
}

/** Registers run, exec and shell; `setStatus` receives the command's exit status. */
export function registerRun(program: Command, context: CliContext, setStatus: (status: number) => void): void {
  const env = envPair(context.env);
  registryOptions(
    program
      .command("run")
      .description("boot a sandbox and run a command in it (a shell when none is given)")
      .usage("[options] IMAGE [-- COMMAND [ARG...]]\n       msb run [options] --sandbox NAME[~SCRIPT] [-- ARG...]")
      .argument("[image]", "an OCI reference, a root directory or an ext4 image file (absolute or ./)")
      .argument("[command...]", "the command and its arguments (default: an interactive shell)")
      .option("--name <name>", "the sandbox's name (default: generated)")
      .option("-d, --detach", "leave the sandbox running and print its name")
      .option("--cpus <n>", "virtual CPUs", integer(1))
      .option("--memory <mib>", "guest memory in MiB", integer(1))
      .option("-e, --env <key=value>", "an environment variable; KEY alone takes this shell's value (repeatable)", env)
      .option("-p, --publish <host:guest>", "publish a guest TCP port on 127.0.0.1:HOST (repeatable)", portPair)
      .option("--network <policy>", "public-only (default), allow-all or none", networkPolicy)
      .option(
        "--secret <name=value@domain>",
        "a secret variable whose value goes only to DOMAIN; NAME@DOMAIN takes this shell's $NAME (repeatable)",
        secretPair(context.env),
      )
      .option("-w, --workdir <dir>", "where processes start")
      .option("-v, --bind <host:guest[:ro]>", "mount a host directory at GUEST, read-only with :ro (repeatable)", bindMount(context.cwd))
      .option("--volume <name:guest[:ro]>", "mount the named volume NAME at GUEST, read-only with :ro (repeatable)", namedMount)
      .option("--tmpfs <guest[:mib]>", "a tmpfs of MIB MiB (default 64) at GUEST (repeatable)", tmpfsMount)
      .option("--persistent", "keep the root's changes for the next sandbox of this --name")
      .option("--rootfs-size <mib>", "size of a persistent root's disk in MiB (default 4096)", integer(64))
      .option("--rm", "keep nothing: the sandbox ends with this command (and with this CLI)")
      .option("-i, --interactive", "forward stdin to the command")
      .option("-t, --tty", "run the command on a pseudo-terminal")
      .option("--sandbox <name[~script]>", "run a sandbox of the project's Sandboxfile (script default: start)")
      .option("--reuse", "with --name: run in the sandbox of that name if it exists, booting it again if stopped")
      .passThroughOptions(),
  ).action(async (image: string | undefined, command: string[], flags: RunFlags) => {
    setStatus(await run(context, image === "--" ? undefined : image, operands(command), flags));
  });

  program
    .command("exec")
    .description("run a command in a running sandbox")
    .usage("[options] NAME [--] COMMAND [ARG...]")
    .argument("<name>", "the sandbox")
    .argument("[command...]", "the command and its arguments")
    .option("-i, --interactive", "forward stdin to the command")
    .option("-t, --tty", "run the command on a pseudo-terminal")
    .option("-e, --env <key=value>", "an environment variable (repeatable)", env)
    .option("-w, --workdir <dir>", "working directory")
    .option("-u, --user <user>", "a user name or uid of the guest")
    .passThroughOptions()
    .action(async (name: string, command: string[], flags: ExecFlags) => {
      setStatus(await exec(context, name, operands(command), flags));
    });

  program
    .command("shell")
    .description("an interactive shell in a running sandbox (a pseudo-terminal when stdin is a terminal)")
    .argument("<name>", "the sandbox")
    .option("-e, --env <key=value>", "an environment variable (repeatable)", env)
    .option("-w, --workdir <dir>", "working directory")
    .option("-u, --user <user>", "a user name or uid of the guest")
    .addOption(new Option("-s, --shell <path>", "the shell").default(DEFAULT_SHELL))
    .action(async (name: string, flags: ExecFlags) => {
      const tty = context.stdio.stdin.isTTY === true;
      setStatus(await exec(context, name, [flags.shell ?? DEFAULT_SHELL], { ...flags, tty, interactive: true }));
    });
}
