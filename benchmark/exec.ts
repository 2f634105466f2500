// Exec and transfer benchmark, one sandbox, one run:
//  - round trip of exec("/bin/true") over N runs (p50/p99), beside the guest's
//    own time from spawn to reaping of the same process (measured by the agent);
//    overhead = round trip - guest time, per run;
//  - stdout streaming throughput through execStream to a JS consumer;
//  - fs write/read throughput of a 200 MiB file (writeStream/readStream and
//    copyFromHost/copyToHost), every transfer checked by SHA-256.
// Results are appended to benchmark/RESULTS.md.
//   node dist/benchmark/exec.js [RUNS]
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

import { Sandbox } from "../ts/index";
import { accelOf } from "./baseline";
import { accelLine, appendResults, latencyRow } from "./report";

const repoRoot = path.resolve(__dirname, "..", "..");
const runs = Number(process.argv[2] ?? "200");
const MiB = 1 << 20;

function mbPerSecond(bytes: number, ms: number): number {
  return bytes / 1e6 / (ms / 1000);
}

async function roundTrips(sb: Sandbox): Promise<string[]> {
  const rtt: number[] = [];
  const guest: number[] = [];
  const overhead: number[] = [];
  for (let i = 0; i < 10; i++) await sb.exec("/bin/true"); // warm the guest's caches
  for (let i = 0; i < runs; i++) {
    const started = process.hrtime.bigint();
    const out = await sb.exec("/bin/true");
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (out.code !== 0 || out.durationMs === null) throw new Error("true failed");
    rtt.push(ms);
    guest.push(out.durationMs);
    overhead.push(ms - out.durationMs);
  }
  const row = latencyRow;
  return [
    `### exec("/bin/true"), ${runs} runs`,
    "",
    "| measure | p50 | p99 |",
    "|---|---|---|",
    row("round trip, SDK call to resolved result", rtt),
    row("guest's own spawn-to-reap time of the process (agent)", guest),
    row("**overhead of our path** (round trip - guest time, per run; bar p50 <= 3 ms)", overhead),
  ];
}

async function streaming(sb: Sandbox): Promise<string[]> {
  // 16 MiB of random data emitted 16 times: 256 MiB, checksummed on arrival.
  const blockOut = await sb.shell("head -c 16777216 /dev/urandom > /dev/shm/block && cat /dev/shm/block");
  const block = blockOut.stdoutBytes();
  const expected = createHash("sha256");
  for (let i = 0; i < 16; i++) expected.update(block);
  const actual = createHash("sha256");
  let bytes = 0;
  const started = process.hrtime.bigint();
  const handle = await sb.shellStream("for i in $(seq 16); do cat /dev/shm/block; done");
  for await (const event of handle) {
    if (event.eventType === "stdout") {
      actual.update(event.data);
      bytes += event.data.length;
    }
  }
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (actual.digest("hex") !== expected.digest("hex")) throw new Error("stream checksum mismatch");
  await sb.shell("rm /dev/shm/block");
  return [
    "### stdout streaming (execStream, async iteration in JS)",
    "",
    `${(bytes / MiB).toFixed(0)} MiB in ${ms.toFixed(0)} ms: **${mbPerSecond(bytes, ms).toFixed(0)} MB/s** (bar >= 50), SHA-256 verified.`,
  ];
}

async function files(sb: Sandbox, hostDir: string): Promise<string[]> {
  const size = 200 * MiB;
  const gfs = sb.fs();
  const source = path.join(hostDir, "source.bin");
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) buf.writeUInt32LE((i * 2654435761) >>> 0, i);
  fs.writeFileSync(source, buf);
  const expected = createHash("sha256").update(buf).digest("hex");
  const guestSum = async (file: string) => (await sb.exec("sha256sum", [file])).stdout().split(" ")[0];
  const timed = async (fn: () => Promise<unknown>) => {
    const started = process.hrtime.bigint();
    await fn();
    return Number(process.hrtime.bigint() - started) / 1e6;
  };

  const writeStreamMs = await timed(() =>
    pipeline(
      Readable.from((function* () {
        for (let off = 0; off < size; off += MiB) yield buf.subarray(off, off + MiB);
      })()),
      gfs.writeStream("/tmp/stream.bin"),
    ),
  );
  if ((await guestSum("/tmp/stream.bin")) !== expected) throw new Error("writeStream checksum mismatch");

  const readHash = createHash("sha256");
  const readStreamMs = await timed(async () => {
    for await (const chunk of gfs.readStream("/tmp/stream.bin")) readHash.update(chunk as Buffer);
  });
  if (readHash.digest("hex") !== expected) throw new Error("readStream checksum mismatch");
  await gfs.remove("/tmp/stream.bin");

  const copyInMs = await timed(() => gfs.copyFromHost(source, "/tmp/copy.bin"));
  if ((await guestSum("/tmp/copy.bin")) !== expected) throw new Error("copyFromHost checksum mismatch");
  const back = path.join(hostDir, "back.bin");
  const copyOutMs = await timed(() => gfs.copyToHost("/tmp/copy.bin", back));
  if (createHash("sha256").update(fs.readFileSync(back)).digest("hex") !== expected) {
    throw new Error("copyToHost checksum mismatch");
  }
  const row = (label: string, ms: number) => `| ${label} | ${ms.toFixed(0)} ms | **${mbPerSecond(size, ms).toFixed(0)} MB/s** |`;
  return [
    "### 200 MiB file, SHA-256 verified on the other side (bar >= 50 MB/s)",
    "",
    "| transfer | time | throughput |",
    "|---|---|---|",
    row("fs.writeStream (JS Readable into the guest)", writeStreamMs),
    row("fs.readStream (guest file to JS)", readStreamMs),
    row("fs.copyFromHost (host file into the guest)", copyInMs),
    row("fs.copyToHost (guest file to a host file)", copyOutMs),
  ];
}

async function main(): Promise<void> {
  process.env.MSB_HOME = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-"));
  const hostDir = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-files-"));
  const image = execFileSync(path.join(repoRoot, "scripts", "rootfs-busybox.sh"), { encoding: "utf8" }).trim();
  const sb = await Sandbox.create({ image, memoryMib: 1024, cpus: 1 });
  try {
    const lines = [
      "Guest 1 vCPU, 1024 MiB; root: busybox-static over 9p; guest files on the overlay's tmpfs.",
      "",
      ...(await roundTrips(sb)),
      "",
      ...(await streaming(sb)),
      "",
      ...(await files(sb, hostDir)),
    ];
    const accel = accelLine(accelOf(sb), "no baseline VM");
    appendResults("Exec and transfers", `node dist/benchmark/exec.js ${runs}`, accel, lines);
    console.log(lines.join("\n"));
  } finally {
    await sb.stopAndWait();
    fs.rmSync(process.env.MSB_HOME, { recursive: true, force: true });
    fs.rmSync(hostDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
