// msb init, msb add, msb remove: editing the Sandboxfile; and what
// `msb run --sandbox NAME[~SCRIPT]` takes from it.
import * as fs from "node:fs";
import * as path from "node:path";

import type { Command } from "commander";

import type { SandboxOptions } from "../index";
import { CliError, UsageError } from "./errors";
import type { CliContext } from "./context";
import { loadProject, editProject, SANDBOXFILE, sandboxNode, TEMPLATE, type ProjectSandbox } from "./sandboxfile";
import { collect, envPair, integer, networkPolicy, portPair } from "./parse";

/** Where a project sandbox's scripts are in the guest (the SDK's `scripts` option puts them there). */
const SCRIPTS_DIR = "/.msb/scripts";

/** What `run --sandbox` boots and runs. */
export interface ProjectRun {
  /** The sandbox's name in the Sandboxfile (the name it runs under unless `--name` says otherwise). */
  name: string;
  /** Options for `Sandbox.create`, from the Sandboxfile. */
  options: SandboxOptions;
  /** The script's command line in the guest. */
  command: string[];
}

/** A script body as an executable: shell commands get a `#!/bin/sh` line unless they have their own. */
function executable(body: string): string {
  return body.startsWith("#!") ? body : `#!/bin/sh\n${body}\n`;
}

/** The persistent root of project sandbox `name`: `menv/NAME/root.ext4` next to the Sandboxfile (its directory made here). */
function menvRoot(projectDir: string, name: string): string {
  const dir = path.join(projectDir, "menv", name);
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, "root.ext4");
}

/** Resolves `NAME[~SCRIPT]` (script `start` by default) against the project `cwd` is in. */
export function resolveProjectRun(spec: string, cwd: string): ProjectRun {
  const tilde = spec.indexOf("~");
  const name = tilde < 0 ? spec : spec.slice(0, tilde);
  const script = tilde < 0 ? "start" : spec.slice(tilde + 1);
  if (name.length === 0 || script.length === 0) throw new UsageError(`--sandbox: expected NAME[~SCRIPT], got ${JSON.stringify(spec)}`);
  const project = loadProject(cwd);
  const sandbox = project.sandboxes[name];
  if (!sandbox) {
    const known = Object.keys(project.sandboxes);
    throw new CliError("SANDBOX_NOT_IN_PROJECT", `${project.file} has no sandbox ${JSON.stringify(name)} (it has: ${known.join(", ") || "none"})`);
  }
  if (!(script in sandbox.scripts)) {
    const known = Object.keys(sandbox.scripts);
    throw new CliError("SCRIPT_NOT_FOUND", `sandbox ${JSON.stringify(name)} has no script ${JSON.stringify(script)} (it has: ${known.join(", ") || "none"})`);
  }
  // A relative directory image is relative to the project, not to where msb runs.
  const image = /^\.\.?\//.test(sandbox.image) ? path.resolve(path.dirname(project.file), sandbox.image) : sandbox.image;
  const options: SandboxOptions = {
    image,
    ...(sandbox.cpus !== undefined && { cpus: sandbox.cpus }),
    ...(sandbox.memory !== undefined && { memoryMib: sandbox.memory }),
    ...(sandbox.env && { env: sandbox.env }),
    ...(sandbox.workdir !== undefined && { workdir: sandbox.workdir }),
    ...(sandbox.ports && { ports: sandbox.ports }),
    ...(sandbox.network !== undefined && { network: { policy: sandbox.network } }),
    scripts: Object.fromEntries(Object.entries(sandbox.scripts).map(([k, v]) => [k, executable(v)])),
    // File changes persist in the project, under ./menv/NAME, from run to run.
    persistent: true,
    rootfsPath: menvRoot(path.dirname(project.file), name),
  };
  return { name, options, command: [`${SCRIPTS_DIR}/${script}`] };
}

interface AddFlags {
  image: string;
  cpus?: number;
  memory?: number;
  env?: Record<string, string>;
  workdir?: string;
  publish?: Record<number, number>;
  network?: ProjectSandbox["network"];
  start?: string;
  script?: string[];
  force?: boolean;
}

/** Registers init, add and remove. */
export function registerProject(program: Command, context: CliContext): void {
  const out = context.stdio.stdout;
  program
    .command("init")
    .description(`write a ${SANDBOXFILE} in the current directory`)
    .action(() => {
      const file = path.join(context.cwd, SANDBOXFILE);
      try {
        fs.writeFileSync(file, TEMPLATE, { flag: "wx" });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EEXIST") throw new CliError("SANDBOXFILE_EXISTS", `${file} already exists`);
        throw err;
      }
      out.write(`wrote ${file}\n`);
    });

  program
    .command("add")
    .description(`add a sandbox to the project's ${SANDBOXFILE}`)
    .argument("<name>", "the sandbox's name in the project")
    .requiredOption("--image <image>", "an OCI reference, or a root directory (relative to the Sandboxfile with ./)")
    .option("--cpus <n>", "virtual CPUs", integer(1))
    .option("--memory <mib>", "guest memory in MiB", integer(1))
    .option("-e, --env <key=value>", "an environment variable (repeatable)", envPair(context.env))
    .option("-w, --workdir <dir>", "where processes start")
    .option("-p, --publish <host:guest>", "publish a TCP port (repeatable)", portPair)
    .option("--network <policy>", "public-only, allow-all or none", networkPolicy)
    .option("--start <command>", "the start script: what `msr NAME` runs")
    .option("--script <name=command>", "another script (repeatable)", collect)
    .option("-f, --force", "replace a sandbox of that name")
    .action((name: string, flags: AddFlags) => {
      const scripts: Record<string, string> = {};
      if (flags.start !== undefined) scripts.start = flags.start;
      for (const pair of flags.script ?? []) {
        const eq = pair.indexOf("=");
        if (eq <= 0) throw new UsageError(`--script: expected NAME=COMMAND, got ${JSON.stringify(pair)}`);
        scripts[pair.slice(0, eq)] = pair.slice(eq + 1);
      }
      const sandbox: ProjectSandbox = {
        image: flags.image,
        cpus: flags.cpus,
        memory: flags.memory,
        env: flags.env,
        workdir: flags.workdir,
        ports: flags.publish,
        network: flags.network,
        scripts,
      };
      const file = editProject(context.cwd, (doc, project) => {
        if (project.sandboxes[name] && !flags.force) {
          throw new CliError("SANDBOX_EXISTS", `${project.file} already has a sandbox ${JSON.stringify(name)} (--force replaces it)`);
        }
        if (!doc.has("sandboxes") || doc.get("sandboxes") === null) doc.set("sandboxes", doc.createNode({}));
        const sandboxes = doc.get("sandboxes") as { flow?: boolean };
        sandboxes.flow = false;
        doc.setIn(["sandboxes", name], sandboxNode(doc, sandbox));
      });
      out.write(`added ${name} to ${file}\n`);
    });

  program
    .command("remove")
    .description(`remove a sandbox from the project's ${SANDBOXFILE}`)
    .argument("<name>", "the sandbox's name in the project")
    .action((name: string) => {
      const file = editProject(context.cwd, (doc, project) => {
        if (!project.sandboxes[name]) throw new CliError("SANDBOX_NOT_IN_PROJECT", `${project.file} has no sandbox ${JSON.stringify(name)}`);
        doc.deleteIn(["sandboxes", name]);
      });
      out.write(`removed ${name} from ${file}\n`);
    });
}
