#!/usr/bin/env node
// msb: the command-line face of the SDK. For now one verb: run a command in a
// fresh sandbox and exit with its status.
import { MicrosandboxError, Sandbox } from "./index";

const usage = `usage: msb run [--name NAME] [--cpus N] [--memory MIB] [-e KEY=VALUE]... IMAGE -- COMMAND [ARG]...

Boots a sandbox from IMAGE (a root filesystem directory), runs COMMAND in it,
prints its output, stops the sandbox and exits with the command's status.`;

interface RunArgs {
  name?: string;
  cpus?: number;
  memoryMib?: number;
  env: Record<string, string>;
  image: string;
  command: string[];
}

function parseRun(argv: string[]): RunArgs {
  const env: Record<string, string> = {};
  const parsed: Partial<RunArgs> = { env };
  let i = 0;
  const value = (flag: string): string => {
    const v = argv[++i];
    if (v === undefined) throw new Error(`${flag} needs a value`);
    return v;
  };
  for (; i < argv.length && argv[i] !== "--"; i++) {
    const arg = argv[i];
    if (arg === "--name") parsed.name = value(arg);
    else if (arg === "--cpus") parsed.cpus = Number(value(arg));
    else if (arg === "--memory") parsed.memoryMib = Number(value(arg));
    else if (arg === "-e" || arg === "--env") {
      const pair = value(arg);
      const eq = pair.indexOf("=");
      if (eq <= 0) throw new Error(`-e expects KEY=VALUE, got ${pair}`);
      env[pair.slice(0, eq)] = pair.slice(eq + 1);
    } else if (arg.startsWith("-")) throw new Error(`unknown flag ${arg}`);
    else if (parsed.image === undefined) parsed.image = arg;
    else throw new Error(`unexpected argument ${arg} (put the command after --)`);
  }
  const command = argv.slice(i + 1);
  if (parsed.image === undefined) throw new Error("IMAGE is required");
  if (command.length === 0) throw new Error("COMMAND is required after --");
  return { ...parsed, image: parsed.image, command, env };
}

async function run(args: RunArgs): Promise<number> {
  const sandbox = await Sandbox.create({
    image: args.image,
    name: args.name,
    cpus: args.cpus,
    memoryMib: args.memoryMib,
    env: args.env,
  });
  try {
    const [command, ...rest] = args.command;
    const out = await sandbox.exec(command, rest);
    process.stdout.write(out.stdoutBytes());
    process.stderr.write(out.stderrBytes());
    return out.code ?? 128 + (out.signal ?? 0);
  } finally {
    await sandbox.stopAndWait();
  }
}

async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === undefined || verb === "-h" || verb === "--help" || verb === "help") {
    console.log(usage);
    return verb === undefined ? 2 : 0;
  }
  if (verb !== "run") {
    console.error(`msb: unknown command ${verb}\n${usage}`);
    return 2;
  }
  let args: RunArgs;
  try {
    args = parseRun(rest);
  } catch (err) {
    console.error(`msb run: ${(err as Error).message}\n${usage}`);
    return 2;
  }
  try {
    return await run(args);
  } catch (err) {
    if (err instanceof MicrosandboxError) {
      console.error(`msb: ${err.message} [${err.code}]`);
      return 1;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then((code) => process.exit(code));
