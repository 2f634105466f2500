// msb install, msb uninstall: a command on PATH that opens an image in a
// sandbox. Each launcher is a small sh script in $MSB_HOME/bin (the SDK's
// state home) that starts this CLI's `run`; its second line records what it
// was installed with, which `install --list` reads back.
import * as fs from "node:fs";
import * as path from "node:path";

import type { Command } from "commander";

import type { CliContext } from "./context";
import { CliError, UsageError } from "./errors";
import { table } from "./format";

const MARKER = "# msb-install: ";
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** What a launcher was installed with. */
interface Installed {
  /** The command (and, unless `tmp`, the sandbox) name. */
  command: string;
  /** The image it opens. */
  image: string;
  /** A fresh sandbox each time, nothing kept. */
  tmp: boolean;
}

/** Where launchers go: `bin` in the state home. */
export function launcherDir(context: CliContext): string {
  return path.join(context.home, "bin");
}

/** The command name an image gets by default: its last path component, without tag or digest. */
export function defaultCommandName(image: string): string {
  const base = image.replace(/\/+$/, "").split("/").pop() ?? image;
  return base.replace(/@.*$/, "").replace(/:.*$/, "");
}

const quote = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;

function launcher(context: CliContext, installed: Installed): string {
  // A directory image is found from wherever the command is run.
  const image = /^\.\.?\//.test(installed.image) ? path.resolve(context.cwd, installed.image) : installed.image;
  // A command's own sandbox keeps its root's changes between runs (persistent).
  const run = installed.tmp ? ["run", "--rm"] : ["run", "--name", installed.command, "--reuse", "--persistent"];
  const argv = [process.execPath, path.join(__dirname, "main.js"), ...run, image, "--"].map(quote).join(" ");
  return [
    "#!/bin/sh",
    `${MARKER}${JSON.stringify({ ...installed, image })}`,
    `# Opens ${image} in ${installed.tmp ? "a temporary sandbox" : `the sandbox ${installed.command}`}: a shell, or the command given.`,
    `# Installed by msb install; msb uninstall ${installed.command} removes it.`,
    `MSB_HOME=${quote(context.home)} exec ${argv} "$@"`,
    "",
  ].join("\n");
}

function readInstalled(file: string): Installed | undefined {
  try {
    const second = fs.readFileSync(file, "utf8").split("\n")[1] ?? "";
    return second.startsWith(MARKER) ? (JSON.parse(second.slice(MARKER.length)) as Installed) : undefined;
  } catch {
    return undefined;
  }
}

function list(context: CliContext): Installed[] {
  const dir = launcherDir(context);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .sort()
    .map((name) => readInstalled(path.join(dir, name)))
    .filter((i): i is Installed => i !== undefined);
}

interface InstallFlags {
  name?: string;
  tmp?: boolean;
  list?: boolean;
  force?: boolean;
}

/** Installs a launcher for `image`; returns its path. */
export function install(context: CliContext, image: string, flags: InstallFlags): string {
  const command = flags.name ?? defaultCommandName(image);
  if (!NAME.test(command)) {
    throw new UsageError(`install: ${JSON.stringify(command)} is not a command name (letters, digits, '-', '_', '.'); give --name`);
  }
  const dir = launcherDir(context);
  const file = path.join(dir, command);
  if (fs.existsSync(file) && !flags.force) {
    const what = readInstalled(file) ? `installed (${readInstalled(file)!.image})` : "taken by a file msb did not write";
    throw new CliError("ALREADY_INSTALLED", `${command} is already ${what}; --force replaces it`);
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const temp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temp, launcher(context, { command, image, tmp: Boolean(flags.tmp) }), { mode: 0o755 });
  fs.renameSync(temp, file);
  const out = context.stdio.stdout;
  out.write(`installed ${command}: ${file}\n`);
  const onPath = (context.env.PATH ?? "").split(path.delimiter).includes(dir);
  if (!onPath) out.write(`add ${dir} to PATH to run it by name: export PATH="${dir}:$PATH"\n`);
  return file;
}

/** Registers install and uninstall. */
export function registerInstall(program: Command, context: CliContext): void {
  const out = context.stdio.stdout;
  program
    .command("install")
    .description("install a command that opens an image in a sandbox (a shell, or the command's arguments)")
    .argument("[image]", "the image the command opens")
    .option("--name <command>", "the command's name (default: the image's name)")
    .option("--tmp", "a fresh sandbox each time, nothing kept (default: one named sandbox per command)")
    .option("-f, --force", "replace an installed command of that name")
    .option("--list", "list installed commands")
    .action((image: string | undefined, flags: InstallFlags) => {
      if (flags.list) {
        if (image !== undefined) throw new UsageError("install: --list takes no IMAGE");
        const rows = list(context).map((i) => [i.command, i.image, i.tmp ? "temporary" : `sandbox ${i.command}`]);
        return void out.write(table(["COMMAND", "IMAGE", "RUNS IN"], rows));
      }
      if (image === undefined) throw new UsageError("install: IMAGE is required (or --list)");
      install(context, image, flags);
    });

  program
    .command("uninstall")
    .description("remove an installed command (msb rm removes its sandbox)")
    .argument("<command>", "the command's name")
    .action((command: string) => {
      const file = path.join(launcherDir(context), command);
      if (!NAME.test(command) || !readInstalled(file)) {
        throw new CliError("NOT_INSTALLED", `${command} is not a command msb installed`);
      }
      fs.rmSync(file);
      out.write(`uninstalled ${command}\n`);
    });
}
