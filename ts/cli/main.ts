#!/usr/bin/env node
// msb: the command line of the SDK. Each verb group lives in its own module
// and only parses flags into SDK options and formats what the SDK returns;
// this entry wires them together, turns every failure into one line and an
// exit status (errors.ts), and serves `msb mcp` (../mcp/server.ts).
import * as fs from "node:fs";
import * as path from "node:path";

import { Command, CommanderError, type Option } from "commander";

import { stateHome, type CliContext } from "./context";
import { EXIT_USAGE, reportError, UsageError } from "./errors";
import { registerImages } from "./images";
import { registerInstall } from "./install";
import { registerProject } from "./project";
import { registerRun } from "./run";
import { registerSandboxes } from "./sandboxes";
import { registerVolumes } from "./volumes";
import { msi, msr, msx } from "./shortcuts";

function version(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "..", "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

/** Every verb and its flags, one per line, indented by depth: `msb --tree`. */
function tree(command: Command, depth = 0): string {
  const pad = "  ".repeat(depth);
  const args = command.registeredArguments.map((a) => (a.required ? `<${a.name()}${a.variadic ? "..." : ""}>` : `[${a.name()}${a.variadic ? "..." : ""}]`));
  let text = `${pad}${[depth === 0 ? command.name() : command.name(), ...args].join(" ")}${depth > 0 ? `  ${command.description()}` : ""}\n`;
  for (const option of command.options as readonly Option[]) text += `${pad}    ${option.flags}  ${option.description}\n`;
  for (const sub of command.commands) text += tree(sub, depth + 1);
  return text;
}

function program(context: CliContext, setStatus: (status: number) => void): Command {
  const { stdout, stderr } = context.stdio;
  const root = new Command("msb")
    .description("run untrusted code in microVMs")
    .version(version(), "-V, --version")
    .option("--debug", "on an error, print its stack and cause chain")
    .option("--tree", "list every verb and flag")
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({
      writeOut: (text) => stdout.write(text),
      writeErr: (text) => stderr.write(text),
      // Errors are printed once, as one line, by main.
      outputError: () => {},
    });
  registerRun(root, context, setStatus);
  registerSandboxes(root, context, setStatus);
  registerImages(root, context);
  registerVolumes(root, context);
  registerInstall(root, context);
  registerProject(root, context);
  root
    .command("mcp")
    .description("serve the Model Context Protocol over stdio (sandboxes it creates are detached and named)")
    .action(async () => {
      // Loaded only here: the MCP SDK would slow every other verb's start.
      const { serveMcp } = await import("../mcp/server");
      await serveMcp({ stdin: context.stdio.stdin, stdout: context.stdio.stdout }, version());
    });
  return root;
}

/**
 * Runs the CLI on `argv` (the arguments after the program name) and returns
 * the exit status: the command's own for run, exec and shell; 1 for a failed
 * operation; 2 for a usage error.
 */
export async function main(argv: string[], overrides: Partial<CliContext> = {}): Promise<number> {
  const context: CliContext = {
    stdio: { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
    env: process.env,
    cwd: process.cwd(),
    home: stateHome(process.env),
    ...overrides,
  };
  let status = 0;
  const root = program(context, (s) => (status = s));
  // Global flags stand before the verb.
  const firstVerb = argv.findIndex((a) => !a.startsWith("-"));
  const globals = firstVerb < 0 ? argv : argv.slice(0, firstVerb);
  const debug = globals.includes("--debug");
  try {
    if (globals.includes("--tree")) {
      const shortForms = [msr, msx, msi].map((s) => `${s.usage.replace(/^usage: /, "")}\n`).join("");
      context.stdio.stdout.write(`${tree(root)}short forms (bins of their own):\n${shortForms}`);
      return 0;
    }
    if (argv.filter((a) => a !== "--debug").length === 0) throw new UsageError("a command is required; msb --help lists them");
    await root.parseAsync(argv, { from: "user" });
    return status;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (["commander.helpDisplayed", "commander.version", "commander.help"].includes(err.code) && err.exitCode === 0) return 0;
      if (err.code === "commander.help") return EXIT_USAGE;
      return reportError(new UsageError(err.message.replace(/^error: /, "")), context.stdio.stderr, debug);
    }
    return reportError(err, context.stdio.stderr, debug);
  }
}

/** Runs the CLI and exits with its status. */
export function runCli(argv: string[]): void {
  main(argv).then(
    (status) => process.exit(status),
    (err: unknown) => {
      process.stderr.write(`msb: ${String(err)} (INTERNAL)\n`);
      process.exit(1);
    },
  );
}

if (require.main === module) runCli(process.argv.slice(2));
