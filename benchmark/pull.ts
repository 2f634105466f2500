// Image pull benchmark, against the plain-HTTP loopback registry, in one run:
//  - cold pull of a >= 100 MB (compressed) multi-layer image (the Debian +
//    python3 root split in three layers, plus a layer of incompressible data;
//    the section labels the layers from the pushed manifest) with
//    Image.pull into an empty state home. Two times: until every layer is
//    downloaded and verified on local disk (from the pull's progress events),
//    and until the pull returns with the root unpacked and ready to boot;
//  - `skopeo copy` of the same image to a local directory (download and digest
//    check, no unpacking), the baseline for the first;
//  - warm start: Sandbox.create() of the cached image to the output of a shell.
// Median of N rounds each, interleaved. Results are appended to benchmark/RESULTS.md.
//   node dist/benchmark/pull.js [ROUNDS]
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

import { Image, Sandbox, type PullEvent } from "../ts/index";
import { AccelRecord } from "./baseline";
import { accelLine, appendResults, median } from "./report";

const repoRoot = path.resolve(__dirname, "..", "..");
const rounds = Number(process.argv[2] ?? "5");

function registry(): string {
  const out = execFileSync(path.join(repoRoot, "scripts", "registry.sh"), ["start"], { encoding: "utf8" });
  const match = /MSB_TEST_REGISTRY_HTTP=(\S+)/.exec(out);
  if (!match) throw new Error("scripts/registry.sh start printed no HTTP registry");
  return match[1];
}

interface PushedImage {
  /** Compressed bytes of all layers, from the manifest. */
  bytes: number;
  /** "4 layers (tar+gzip)", from the manifest's layer media types. */
  layers: string;
  /** PRETTY_NAME of the root's /etc/os-release. */
  system: string;
}

/** `"4 layers (tar+gzip)"` for the manifest's layer descriptors. */
function describeLayers(layers: { mediaType: string }[]): string {
  const kinds = new Map<string, number>();
  for (const { mediaType } of layers) {
    const kind = /\.(tar(\+\w+)?)$/.exec(mediaType)?.[1] ?? mediaType;
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  const parts = [...kinds].map(([kind, n]) => (kinds.size === 1 ? kind : `${n} ${kind}`));
  return `${layers.length} layers (${parts.join(", ")})`;
}

function osName(root: string): string {
  const release = fs.readFileSync(path.join(root, "etc", "os-release"), "utf8");
  return /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(release)?.[1] ?? "unknown system";
}

/** Splits the Debian root into three layers (hard links, no copy), adds a data layer, pushes them. */
function pushBenchImage(reference: string, work: string): PushedImage {
  const root = execFileSync(path.join(repoRoot, "scripts", "rootfs-debian-python.sh"), { encoding: "utf8" }).trim();
  const layers = ["base", "python", "share", "data"].map((name) => path.join(work, name));
  const python = "usr/lib/python3.11";
  const share = "usr/share";
  execFileSync("cp", ["-al", root, layers[0]]);
  for (const [sub, layer] of [
    [python, layers[1]],
    [share, layers[2]],
  ]) {
    fs.mkdirSync(path.dirname(path.join(layer, sub)), { recursive: true });
    fs.renameSync(path.join(layers[0], sub), path.join(layer, sub));
  }
  // Incompressible content, so the image is over 100 MB on the wire.
  fs.mkdirSync(path.join(layers[3], "opt", "data"), { recursive: true });
  for (let i = 0; i < 4; i++) {
    fs.writeFileSync(path.join(layers[3], "opt", "data", `blob-${i}.bin`), crypto.randomBytes(10 << 20));
  }
  const testkit = path.join(repoRoot, "target", "release", "msb-oci-testkit");
  const args = ["push", "--ref", reference, "--insecure"];
  for (const layer of layers) args.push("--layer", layer);
  execFileSync(testkit, args, { stdio: ["ignore", "ignore", "inherit"] });
  const manifest = JSON.parse(
    execFileSync("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${reference}`], { encoding: "utf8" }),
  );
  return {
    bytes: manifest.layers.reduce((sum: number, l: { size: number }) => sum + l.size, 0),
    layers: describeLayers(manifest.layers),
    system: `${osName(root)} + python3`,
  };
}

async function timed(fn: () => Promise<unknown> | unknown): Promise<number> {
  const started = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - started) / 1e6;
}

function du(dir: string): number {
  return Number(execFileSync("du", ["-sb", dir], { encoding: "utf8" }).split("\t")[0]);
}

async function main(): Promise<void> {
  if (!(rounds >= 3)) throw new Error("use at least 3 rounds");
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-pull-"));
  const host = registry();
  const reference = `${host}/bench/python:1`;
  const { bytes, layers, system } = pushBenchImage(reference, work);
  if (bytes < 100e6) throw new Error(`the benchmark image is only ${bytes} compressed bytes`);
  const registryOptions = { insecure: [host] };

  const ours: number[] = [];
  const oursDownloaded: number[] = [];
  const skopeo: number[] = [];
  let unpacked = 0;
  for (let i = 0; i < rounds; i++) {
    const home = fs.mkdtempSync(path.join(work, "home-"));
    process.env.MSB_HOME = home;
    const started = process.hrtime.bigint();
    let pending = -1;
    let downloadedAt = 0;
    const onProgress = (event: PullEvent) => {
      if (event.kind === "resolved") pending = event.layers.length;
      const complete =
        (event.kind === "layer-progress" && event.downloaded === event.size) || event.kind === "layer-cached";
      if (complete && --pending === 0) downloadedAt = Number(process.hrtime.bigint() - started) / 1e6;
    };
    ours.push(await timed(() => Image.pull(reference, { registry: registryOptions, onProgress })));
    if (downloadedAt === 0) throw new Error("no download completion seen in the progress events");
    oursDownloaded.push(downloadedAt);
    unpacked = du(path.join(home, "cache", "oci", "layers"));
    fs.rmSync(home, { recursive: true, force: true });

    const target = path.join(work, `skopeo-${i}`);
    skopeo.push(
      await timed(() =>
        execFileSync("skopeo", ["copy", "--quiet", "--src-tls-verify=false", `docker://${reference}`, `dir:${target}`]),
      ),
    );
    fs.rmSync(target, { recursive: true, force: true });
  }

  // Warm start: the image is cached, create boots it.
  const home = fs.mkdtempSync(path.join(work, "home-"));
  process.env.MSB_HOME = home;
  await Image.pull(reference, { registry: registryOptions });
  const warm: number[] = [];
  const accel = new AccelRecord();
  for (let i = 0; i < rounds; i++) {
    warm.push(
      await timed(async () => {
        const sb = await Sandbox.create({ image: reference, registry: registryOptions, pullPolicy: "never" });
        accel.note(sb);
        const out = await sb.shell("python3 -c 'print(42)'");
        if (out.stdout() !== "42\n") throw new Error(`unexpected ${out.stdout()}`);
        await sb.stopAndWait();
      }),
    );
  }
  fs.rmSync(work, { recursive: true, force: true });

  const ratio = median(oursDownloaded) / median(skopeo);
  const totalRatio = median(ours) / median(skopeo);
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
  const lines = [
    `Image: ${system} in ${layers}, ${(bytes / 1e6).toFixed(0)} MB compressed, ${(unpacked / 1e6).toFixed(0)} MB unpacked; plain-HTTP registry on 127.0.0.1 (Debian's docker-registry). Rounds: ${rounds}, interleaved.`,
    "",
    "| measure | median | all rounds (ms) |",
    "|---|---|---|",
    `| cold \`Image.pull\`, until every layer is downloaded and verified on local disk | ${median(oursDownloaded).toFixed(0)} ms | ${fmt(oursDownloaded)} |`,
    `| \`skopeo copy\` to a directory: download and verify (no unpack) | ${median(skopeo).toFixed(0)} ms | ${fmt(skopeo)} |`,
    `| ratio, same work: ours / skopeo (bar: <= 1.2) | **${ratio.toFixed(2)}** | |`,
    `| cold \`Image.pull\` until it returns: also unpacked and the root built, ready to boot | ${median(ours).toFixed(0)} ms | ${fmt(ours)} |`,
    `| ratio, ready to boot vs. skopeo's download only | ${totalRatio.toFixed(2)} | |`,
    `| warm \`Sandbox.create\` of the cached image to the output of \`python3 -c 'print(42)'\`, then stop | ${median(warm).toFixed(0)} ms | ${fmt(warm)} |`,
  ];
  const accelText = accelLine(accel.value, "the pulls and skopeo run no VM");
  appendResults("Image pull: Image.pull vs skopeo copy", `node dist/benchmark/pull.js ${rounds}`, accelText, lines);
  console.log(lines.join("\n"));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
