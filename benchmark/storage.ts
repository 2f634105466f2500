// Storage throughput from inside a guest: sequential write and read of a
// 200 MiB file, and creating then stat-ing 10,000 small files, on a named dir
// volume (9p), a disk volume (virtio-blk, ext4), a bind mount (9p) and the
// in-memory root (the baseline, measured in the same run and the same VM).
// Each step is one exec timed on the host (the guest's busybox date has no
// sub-second clock); an exec round trip costs a few milliseconds.
//
// Usage: node dist/benchmark/storage.js [ROUNDS]   (default 3; the median is reported)
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

import { Sandbox, Volume } from "../ts/index";
import { accelOf } from "./baseline";
import { accelLine, appendResults, median } from "./report";

const repoRoot = path.resolve(__dirname, "..", "..");
const rounds = Number(process.argv[2] ?? 3);
const FILE_MIB = 200;
const SMALL_FILES = 10_000;

/** One step per call, so that the host times each: `bench-io STEP DIR`. */
const ioScript = `#!/bin/sh
set -e
dir=$2
case $1 in
prepare) rm -rf "$dir/bench" && mkdir -p "$dir/bench/small" ;;
write) dd if=/dev/zero of="$dir/bench/big" bs=1M count=${FILE_MIB} conv=fsync 2>/dev/null ;;
drop) sync && echo 3 > /proc/sys/vm/drop_caches ;;
read) dd if="$dir/bench/big" of=/dev/null bs=1M 2>/dev/null ;;
create) cd "$dir/bench/small" && seq 1 ${SMALL_FILES} | xargs touch && sync ;;
stat) n=$(ls -l "$dir/bench/small" | wc -l); [ "$n" -gt ${SMALL_FILES} ] || { echo "listed $n" >&2; exit 1; } ;;
clean) rm -rf "$dir/bench" ;;
esac
`;

interface Sample {
  writeMBs: number;
  readMBs: number;
  createMs: number;
  statMs: number;
}

/** Milliseconds one step took, seen from the host (an exec round trip, a few ms, included). */
async function step(sb: Sandbox, name: string, dir: string): Promise<number> {
  const started = performance.now();
  const out = await sb.exec("bench-io", [name, dir], { timeout: 600_000 });
  const took = performance.now() - started;
  if (out.code !== 0) throw new Error(`bench-io ${name} ${dir}: ${out.stderr()}`);
  return took;
}

async function measure(sb: Sandbox, dir: string): Promise<Sample> {
  await step(sb, "prepare", dir);
  const write = await step(sb, "write", dir);
  await step(sb, "drop", dir);
  const read = await step(sb, "read", dir);
  const create = await step(sb, "create", dir);
  await step(sb, "drop", dir);
  const stat = await step(sb, "stat", dir);
  await step(sb, "clean", dir);
  const mbs = (ms: number) => (FILE_MIB * 2 ** 20) / 1e6 / (ms / 1e3);
  return { writeMBs: mbs(write), readMBs: mbs(read), createMs: create, statMs: stat };
}

async function main(): Promise<void> {
  process.env.MSB_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-"));
  const bind = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-bind-"));
  const image = execFileSync(path.join(repoRoot, "scripts", "rootfs-busybox.sh"), { encoding: "utf8" }).trim();
  await Volume.create({ name: "bench-dir" });
  await Volume.create({ name: "bench-disk", quotaMib: 1024 });
  const sb = await Sandbox.create({
    image,
    memoryMib: 1024,
    scripts: { "bench-io": ioScript },
    volumes: {
      "/vol-dir": { named: "bench-dir" },
      "/vol-disk": { named: "bench-disk" },
      "/bind": { bind },
    },
  });
  try {
    const targets: [string, string][] = [
      ["in-memory root (baseline)", "/root"],
      ["named dir volume (9p)", "/vol-dir"],
      ["named disk volume (ext4 on virtio-blk)", "/vol-disk"],
      ["bind mount (9p)", "/bind"],
    ];
    const lines = [
      `Guest 1 vCPU, 1024 MiB; busybox root. ${FILE_MIB} MiB file written with dd conv=fsync, read back after`,
      `dropping the guest's caches; ${SMALL_FILES} empty files created (xargs touch, then sync) and listed with ls -l`,
      `(an lstat each). Median of ${rounds} rounds; MB/s is 10^6 bytes per second.`,
      "",
      "| target | write MB/s | read MB/s | create 10k files ms | stat 10k files ms |",
      "|---|---|---|---|---|",
    ];
    for (const [label, dir] of targets) {
      const samples: Sample[] = [];
      for (let i = 0; i < rounds; i++) samples.push(await measure(sb, dir));
      const pick = (key: keyof Sample) => median(samples.map((s) => s[key]));
      lines.push(
        `| ${label} | ${pick("writeMBs").toFixed(0)} | ${pick("readMBs").toFixed(0)} | ${pick("createMs").toFixed(0)} | ${pick("statMs").toFixed(0)} |`,
      );
    }
    lines.push("", "Bar: volume throughput >= 50 MB/s under TCG.");
    const accel = accelLine(accelOf(sb), "every target ran in the same VM");
    appendResults("Storage", `node dist/benchmark/storage.js ${rounds}`, accel, lines);
    console.log(lines.join("\n"));
  } finally {
    await sb.stopAndWait();
    fs.rmSync(process.env.MSB_HOME, { recursive: true, force: true });
    fs.rmSync(bind, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
