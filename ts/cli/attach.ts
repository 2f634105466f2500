// Connects a process in a sandbox to this one's terminal or pipes.
//
// Who drives what: the output loop (`for await` over the ExecHandle) writes
// each chunk to stdout/stderr and waits for `drain` when the terminal is slow,
// so a slow terminal holds the guest process back instead of buffering. Stdin,
// when forwarded, is read in flowing mode and paused while each chunk's
// `stdin.write` is awaited (backpressure the other way). With a TTY, the local
// terminal is put in raw mode, so Ctrl-C, Ctrl-D and Ctrl-Z reach the guest's
// terminal as bytes and its line discipline turns them into signals; a window
// size change (SIGWINCH, seen as the tty's `resize`) is sent as `resize`.
// SIGINT, SIGTERM and SIGHUP sent to the CLI (Ctrl-C without a TTY, a closed
// terminal, kill) are passed on to the process's group instead of ending the
// CLI, so that it still stops what it started. Everything is undone when the
// process exits.
import type { ExecHandle, TtySize } from "../index";
import { exitStatus } from "./errors";

/** Signals passed on to the process rather than ending the CLI. */
export const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/** The streams a command runs against: the CLI's own, or a test's. */
export interface Stdio {
  /** Read for the process's stdin when it is forwarded. */
  stdin: NodeJS.ReadStream;
  /** Receives stdout (and everything under a TTY). */
  stdout: NodeJS.WriteStream;
  /** Receives stderr. */
  stderr: NodeJS.WriteStream;
}

/** The size of the terminal on `stdout`, or 80x24 when it is not one. */
export function terminalSize(stdio: Stdio): TtySize {
  const { columns, rows } = stdio.stdout;
  return stdio.stdout.isTTY && columns > 0 && rows > 0 ? { cols: columns, rows } : { cols: 80, rows: 24 };
}

async function write(stream: NodeJS.WriteStream, data: Buffer): Promise<void> {
  if (!stream.write(data)) {
    await new Promise<void>((resolve) => {
      const done = () => {
        stream.off("drain", done);
        stream.off("error", done);
        stream.off("close", done);
        resolve();
      };
      stream.once("drain", done).once("error", done).once("close", done);
    });
  }
}

function forwardStdin(handle: ExecHandle, stdin: NodeJS.ReadStream): () => void {
  const writer = handle.stdin;
  if (!writer) return () => {};
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    writer.close().catch(() => {});
  };
  const onData = (chunk: Buffer) => {
    stdin.pause();
    writer.write(chunk).then(
      () => stdin.resume(),
      // The process no longer reads: drop what comes.
      () => (closed = true),
    );
  };
  stdin.on("data", onData).on("end", close);
  stdin.resume();
  return () => {
    stdin.off("data", onData).off("end", close);
    stdin.pause();
  };
}

/**
 * Streams the process's output to `stdio` until it exits, forwarding stdin
 * when the handle has a pipe, and returns its exit status (128 + signal when a
 * signal ended it).
 */
export async function attach(handle: ExecHandle, stdio: Stdio, options: { tty: boolean }): Promise<number> {
  const undo: (() => void)[] = [];
  try {
    if (options.tty && stdio.stdin.isTTY) {
      stdio.stdin.setRawMode(true);
      undo.push(() => stdio.stdin.setRawMode(false));
    }
    if (options.tty && stdio.stdout.isTTY) {
      const onResize = () => {
        const { cols, rows } = terminalSize(stdio);
        handle.resize(cols, rows).catch(() => {});
      };
      stdio.stdout.on("resize", onResize);
      undo.push(() => stdio.stdout.off("resize", onResize));
    }
    const onSignal = (signal: NodeJS.Signals) => {
      handle.signal(signal).catch(() => {});
    };
    for (const signal of FORWARDED) {
      process.on(signal, onSignal);
      undo.push(() => process.off(signal, onSignal));
    }
    undo.push(forwardStdin(handle, stdio.stdin));
    let status = 0;
    for await (const event of handle) {
      if (event.eventType === "stdout") await write(stdio.stdout, event.data);
      else if (event.eventType === "stderr") await write(stdio.stderr, event.data);
      else status = exitStatus(event.code, event.signal);
    }
    return status;
  } finally {
    for (const step of undo.reverse()) step();
  }
}
