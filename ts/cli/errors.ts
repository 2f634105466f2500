// How the CLI fails: one line on stderr, `msb: <message> (<CODE>)`, and an exit
// status that tells a usage mistake (2) from a failed operation (1). A command
// run in a sandbox exits with its own status instead; that path never comes here.
import { MicrosandboxError } from "../index";

/** Exit status of an operation that failed. */
export const EXIT_FAILURE = 1;
/** Exit status of a command line that could not be understood. */
export const EXIT_USAGE = 2;

/** The code printed for usage errors, in place of an SDK error code. */
const USAGE_CODE = "USAGE";

/** A command line the CLI cannot act on: a missing argument, a malformed flag value. Exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** An operation of the CLI's own that failed (a Sandboxfile problem, an install conflict). Exits 1. */
export class CliError extends Error {
  /** Stable code printed after the message, in the style of the SDK's codes. */
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = "CliError";
    this.code = code;
  }
}

function codeOf(err: unknown): string {
  if (err instanceof MicrosandboxError || err instanceof CliError) return err.code;
  if (err instanceof UsageError) return USAGE_CODE;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" ? code : "INTERNAL";
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, "; ").trim();
}

/**
 * Writes `err` as the one line `msb: <message> (<CODE>)` to `stderr` (with
 * `debug`, its stack and cause chain after it) and returns the exit status.
 */
export function reportError(err: unknown, stderr: NodeJS.WritableStream, debug: boolean): number {
  const message = err instanceof Error ? err.message : String(err);
  stderr.write(`msb: ${oneLine(message)} (${codeOf(err)})\n`);
  if (debug) {
    let cause: unknown = err;
    for (let depth = 0; cause !== undefined && depth < 16; depth++) {
      const text = cause instanceof Error ? (cause.stack ?? `${cause.name}: ${cause.message}`) : String(cause);
      stderr.write(`${depth === 0 ? "" : "caused by: "}${text}\n`);
      cause = cause instanceof Error ? cause.cause : undefined;
    }
  }
  return err instanceof UsageError ? EXIT_USAGE : EXIT_FAILURE;
}

/** The exit status of a process that ended with `code` or was ended by `signal`, as shells report it. */
export function exitStatus(code: number | null, signal: number | null | undefined): number {
  if (code !== null) return code;
  return 128 + (signal ?? 0);
}
