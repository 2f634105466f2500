// msb pull, msb image ls|inspect|rm|prune: the SDK's Image API.
import { MultiBar, Presets, type SingleBar } from "cli-progress";
import type { Command } from "commander";

import { Image, type PullEvent, type RegistryOptions } from "../index";
import type { CliContext } from "./context";
import { bytes, json, table } from "./format";
import { collect, formatOption } from "./parse";

/** Flags of verbs that may contact a registry. */
export interface RegistryFlags {
  /** `--mirror HOST[:PORT]`. */
  mirror?: string;
  /** `--insecure HOST[:PORT]`, repeatable. */
  insecure?: string[];
  /** `--ca-cert FILE`, repeatable. */
  caCert?: string[];
}

/** Adds the registry flags to `command`. */
export function registryOptions(command: Command): Command {
  return command
    .option("--mirror <host[:port]>", "a mirror serving the default registry (for short names)")
    .option("--insecure <host[:port]>", "a registry spoken to over plain HTTP (repeatable)", collect)
    .option("--ca-cert <file>", "a PEM file of extra root certificates (repeatable)", collect);
}

/** The SDK's RegistryOptions for the registry flags, or undefined when none was given. */
export function registryFrom(flags: RegistryFlags): RegistryOptions | undefined {
  const registry: RegistryOptions = {
    ...(flags.mirror !== undefined && { mirror: flags.mirror }),
    ...(flags.insecure && { insecure: flags.insecure }),
    ...(flags.caCert && { caCertificates: flags.caCert }),
  };
  return Object.keys(registry).length > 0 ? registry : undefined;
}

const short = (digest: string) => digest.replace(/^sha256:/, "").slice(0, 12);

/**
 * A pull progress reporter writing to stderr: a bar per layer on a terminal,
 * one plain line per layer otherwise. `finish` removes the bars.
 */
export function pullProgress(context: CliContext): { onProgress: (event: PullEvent) => void; finish: () => void } {
  const err = context.stdio.stderr;
  if (!err.isTTY) {
    return {
      onProgress: (event) => {
        switch (event.kind) {
          case "resolved":
            err.write(`resolved ${event.manifestDigest}: ${event.layers.length} layer${event.layers.length === 1 ? "" : "s"}, ${bytes(event.totalBytes)}\n`);
            break;
          case "layer-cached":
            err.write(`layer ${short(event.digest)}: cached\n`);
            break;
          case "layer-done":
            err.write(`layer ${short(event.digest)}: done (${bytes(event.size)})\n`);
            break;
        }
      },
      finish: () => {},
    };
  }
  const multi = new MultiBar(
    {
      stream: err,
      format: " {layer} [{bar}] {percentage}% {done}/{size}",
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
    },
    Presets.shades_classic,
  );
  const bars = new Map<string, SingleBar>();
  let stopped = false;
  const bar = (digest: string, size: number) => {
    let found = bars.get(digest);
    if (!found) {
      found = multi.create(Math.max(size, 1), 0, { layer: short(digest), done: bytes(0), size: bytes(size) });
      bars.set(digest, found);
    }
    return found;
  };
  return {
    onProgress: (event) => {
      switch (event.kind) {
        case "resolved":
          for (const layer of event.layers) bar(layer.digest, layer.size);
          break;
        case "layer-progress":
          bar(event.digest, event.size).update(event.downloaded, { done: bytes(event.downloaded) });
          break;
        case "layer-cached":
        case "layer-done":
          bar(event.digest, event.size).update(Math.max(event.size, 1), { done: event.kind === "layer-cached" ? "cached" : bytes(event.size) });
          break;
      }
    },
    finish: () => {
      if (stopped) return;
      stopped = true;
      multi.stop();
    },
  };
}

/** Registers pull and image. */
export function registerImages(program: Command, context: CliContext): void {
  const out = context.stdio.stdout;
  registryOptions(
    program
      .command("pull")
      .description("pull an image into the local cache (a bar per layer on a terminal, plain lines otherwise)")
      .argument("<image>", "an OCI reference, e.g. python:3.12"),
  ).action(async (reference: string, flags: RegistryFlags) => {
    const progress = pullProgress(context);
    try {
      const info = await Image.pull(reference, { registry: registryFrom(flags), onProgress: progress.onProgress });
      progress.finish();
      out.write(`${info.reference} ${info.manifestDigest}\n`);
    } finally {
      progress.finish();
    }
  });

  const image = program.command("image").description("manage the local image cache");
  image
    .command("ls")
    .description("list cached images")
    .addOption(formatOption())
    .action(async (flags: { format: string }) => {
      const images = await Image.list();
      if (flags.format === "json") return void out.write(json(images));
      out.write(
        table(
          ["REFERENCE", "DIGEST", "LAYERS", "SIZE", "PULLED"],
          images.map((i) => [i.reference, short(i.manifestDigest), String(i.layers.length), bytes(i.size), i.pulledAt.toISOString()]),
        ),
      );
    });
  image
    .command("inspect")
    .description("show a cached image as JSON")
    .argument("<image>", "the reference it was pulled as")
    .action(async (reference: string) => {
      out.write(json(await Image.inspect(reference)));
    });
  image
    .command("rm")
    .description("forget cached images (their files go at the next prune)")
    .argument("<image...>", "references")
    .action(async (references: string[]) => {
      for (const reference of references) {
        await Image.remove(reference);
        out.write(`${reference}\n`);
      }
    });
  image
    .command("prune")
    .description("delete cached root filesystems and layers no image uses")
    .action(async () => {
      const { images, layers } = await Image.prune();
      out.write(`deleted ${images} root filesystems and ${layers} layers\n`);
    });
}
