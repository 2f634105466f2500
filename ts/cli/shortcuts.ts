// The short bins: msr (project run), msx (temporary sandbox), msi (install).
// Each rewrites its arguments into an msb command line.
import { EXIT_USAGE } from "./errors";

/** A short bin: its usage and how its arguments become msb's. */
export interface Shortcut {
  /** One line: what it takes and what it does. */
  usage: string;
  /** msb's arguments for these, or a usage message. */
  expand(argv: string[]): string[];
}

/** `msr NAME[~SCRIPT] [ARG...]`: `msb run --sandbox NAME[~SCRIPT] -- ARG...`. */
export const msr: Shortcut = {
  usage: "usage: msr NAME[~SCRIPT] [ARG...]  runs a sandbox of the project's Sandboxfile (script default: start)",
  expand: ([spec, ...args]) => ["run", "--sandbox", spec, "--", ...args],
};

/** `msx IMAGE [COMMAND [ARG...]]`: `msb run --rm IMAGE -- COMMAND ARG...`. */
export const msx: Shortcut = {
  usage: "usage: msx IMAGE [COMMAND [ARG...]]  runs IMAGE in a temporary sandbox, nothing kept (a shell when no command)",
  expand: ([image, ...command]) => ["run", "--rm", image, "--", ...command],
};

/** `msi IMAGE [COMMAND]`: `msb install [--name COMMAND] IMAGE`. */
export const msi: Shortcut = {
  usage: "usage: msi IMAGE [COMMAND]  installs COMMAND (default: the image's name), opening IMAGE in a sandbox",
  expand: ([image, command, ...extra]) => {
    if (extra.length > 0) throw new Error("too many arguments");
    return ["install", ...(command === undefined ? [] : ["--name", command]), image];
  },
};

/** Runs a short bin with `argv` and exits with msb's status. */
export function runShortcut(shortcut: Shortcut, argv: string[]): void {
  if (argv[0] === "-h" || argv[0] === "--help") {
    process.stdout.write(`${shortcut.usage}\n`);
    process.exit(0);
  }
  let expanded: string[];
  try {
    if (argv.length === 0 || argv[0].startsWith("-")) throw new Error(argv.length === 0 ? "an argument is required" : `unknown option ${argv[0]}`);
    expanded = shortcut.expand(argv);
  } catch (err) {
    process.stderr.write(`msb: ${(err as Error).message}; ${shortcut.usage} (USAGE)\n`);
    process.exit(EXIT_USAGE);
  }
  // Loaded here so that a usage error costs no SDK load.
  (require("./main") as typeof import("./main")).runCli(expanded);
}
