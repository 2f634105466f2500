// msb volume: named volumes (Volume.create/list/get/remove).
import type { Command } from "commander";
import { InvalidArgumentError, Option } from "commander";

import { Volume } from "../index";
import type { CliContext } from "./context";
import { bytes, json, table } from "./format";
import { formatOption, integer } from "./parse";

/** A volume as `inspect` and `ls --format json` print it, with its usage. */
async function describe(volume: Volume) {
  return {
    name: volume.name,
    kind: volume.kind,
    quotaMib: volume.quotaMib ?? null,
    createdAt: volume.createdAt.toISOString(),
    path: volume.path,
    usage: await volume.usage(),
  };
}

export function registerVolumes(program: Command, context: CliContext): void {
  const out = context.stdio.stdout;
  const volume = program.command("volume").description("manage named volumes (storage that outlives sandboxes)");
  volume
    .command("create")
    .description("create a volume: a shared directory, or with --quota a disk capped at MIB")
    .argument("<name>", "the volume's name")
    .option("--quota <mib>", "cap in MiB (makes a disk volume)", integer(16))
    .addOption(
      new Option("--kind <kind>", "dir (default without --quota) or disk").argParser((value) => {
        if (value !== "dir" && value !== "disk") throw new InvalidArgumentError("expected dir or disk");
        return value;
      }),
    )
    .action(async (name: string, flags: { quota?: number; kind?: "dir" | "disk" }) => {
      const created = await Volume.create({
        name,
        ...(flags.quota !== undefined && { quotaMib: flags.quota }),
        ...(flags.kind && { kind: flags.kind }),
      });
      out.write(`${created.name}\n`);
    });
  volume
    .command("ls")
    .description("list volumes")
    .addOption(formatOption())
    .action(async (flags: { format: string }) => {
      const volumes = await Promise.all((await Volume.list()).map(describe));
      if (flags.format === "json") return void out.write(json(volumes));
      out.write(
        table(
          ["NAME", "KIND", "QUOTA", "USED", "CREATED"],
          volumes.map((v) => [
            v.name,
            v.kind,
            v.quotaMib === null ? "-" : bytes(v.quotaMib * 2 ** 20),
            bytes(v.usage.usedBytes),
            v.createdAt,
          ]),
        ),
      );
    });
  volume
    .command("inspect")
    .description("show a volume as JSON")
    .argument("<name>", "the volume's name")
    .action(async (name: string) => {
      out.write(json(await describe(await Volume.get(name))));
    });
  volume
    .command("rm")
    .description("delete volumes and their contents (refused while a running sandbox mounts one)")
    .argument("<name...>", "volume names")
    .action(async (names: string[]) => {
      for (const name of names) {
        await Volume.remove(name);
        out.write(`${name}\n`);
      }
    });
}
