// End to end: OCI images pulled from real registries on loopback (HTTP, TLS,
// basic auth, token auth), unpacked into the shared cache, and booted.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";

import {
  Image,
  ImageInUseError,
  ImageIntegrityError,
  ImageNotFoundError,
  InvalidOptionError,
  LayerRejectedError,
  MicrosandboxError,
  RegistryUnauthorizedError,
  RegistryUnreachableError,
  Sandbox,
  type PullEvent,
} from "../ts/index";
import { busyboxRoot, isolatedHome, processesOf, pythonRoot } from "./helpers";
import { proxy, push, pushIndex, registries, registryBlobPath, type Registries } from "./registry";

const home = isolatedHome("images");
const work = fs.mkdtempSync(path.join(os.tmpdir(), "msb-images-"));
let reg: Registries;
let busybox: string;
/** Registry options for the plain-HTTP registry. */
let insecure: { insecure: string[] };

function dir(name: string, files: Record<string, string | null>): string {
  const root = path.join(work, name);
  for (const [file, content] of Object.entries(files)) {
    const full = path.join(root, file);
    fs.mkdirSync(path.dirname(full), { recursive: true });
    if (content === null) fs.mkdirSync(full, { recursive: true });
    else fs.writeFileSync(full, content);
  }
  return root;
}

before(() => {
  reg = registries();
  busybox = busyboxRoot();
  insecure = { insecure: [reg.http] };
  push(`${reg.http}/library/busybox:latest`, {
    layers: [busybox],
    env: ["IMAGE_VAR=from-image", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
    workdir: "/srv",
    cmd: ["sh"],
    insecure: true,
  });
});

after(() => {
  fs.rmSync(home, { recursive: true, force: true });
  fs.rmSync(work, { recursive: true, force: true });
});

describe("pulling and booting", () => {
  test("a short name through the mirror boots, with the image's env and workdir as defaults", async () => {
    const events: PullEvent[] = [];
    const sb = await Sandbox.create({
      image: "busybox",
      registry: { mirror: reg.http, ...insecure },
      pullPolicy: "always",
      onProgress: (e) => events.push(e),
    });
    try {
      const out = await sb.shell('echo "$IMAGE_VAR|$(pwd)|$PATH"');
      assert.equal(out.stdout(), "from-image|/srv|/usr/sbin:/usr/bin:/sbin:/bin:/.msb/scripts\n");
      assert.equal((await sb.exec("cat", ["/etc/os-release"])).stdout(), fs.readFileSync(path.join(busybox, "etc/os-release"), "utf8"));
    } finally {
      await sb.stopAndWait();
    }
    const resolved = events.find((e) => e.kind === "resolved");
    assert.ok(resolved && resolved.kind === "resolved");
    assert.equal(resolved.totalBytes, resolved.layers.reduce((sum, l) => sum + l.size, 0));
    assert.ok(events.some((e) => e.kind === "done"));
    for (const layer of resolved.layers) {
      assert.ok(events.some((e) => (e.kind === "layer-done" || e.kind === "layer-cached") && e.digest === layer.digest));
    }
  });

  test('"python:3.11" resolves through the mirror to the official-images namespace and runs python', async () => {
    // Debian's root split in two layers (hard links, no copy): python's library in its own.
    const root = pythonRoot();
    const base = path.join(work, "py-base");
    const lib = path.join(work, "py-lib");
    execFileSync("cp", ["-al", root, base]);
    fs.mkdirSync(path.join(lib, "usr/lib"), { recursive: true });
    fs.renameSync(path.join(base, "usr/lib/python3.11"), path.join(lib, "usr/lib/python3.11"));
    push(`${reg.http}/library/python:3.11`, { layers: [base, lib], insecure: true, cmd: ["python3"] });
    const sb = await Sandbox.create({ image: "python:3.11", registry: { mirror: reg.http, ...insecure } });
    try {
      const out = await sb.exec("python3", ["-c", "import sys, json; print(6*7, sys.version_info[:2])"]);
      assert.equal(out.stdout(), "42 (3, 11)\n");
      const info = await Image.inspect("python:3.11", { registry: { mirror: reg.http, ...insecure } });
      assert.deepEqual(info.config.cmd, ["python3"]);
      assert.equal(info.layers.length, 2);
      assert.match(info.reference, /\/library\/python:3\.11$/);
    } finally {
      await sb.stopAndWait();
    }
  });

  test("layers with whiteouts and opaque directories merge like Docker's", async () => {
    const lower = dir("lower", { "data/a": "one", "data/b": "bee", "data/dir/x": "x", "data/keep": "k" });
    const upper = dir("upper", { "data/a": "two", "data/.wh.b": "", "data/dir/.wh..wh..opq": "", "data/dir/y": "y" });
    push(`${reg.http}/layered:1`, { layers: [busybox, lower, upper], insecure: true });
    const sb = await Sandbox.create({ image: `${reg.http}/layered:1`, registry: insecure });
    try {
      const out = await sb.shell("cat /data/a; echo; ls /data; ls /data/dir; ls -a /data | grep -c wh || true");
      assert.equal(out.stdout(), "two\na\ndir\nkeep\ny\n0\n");
    } finally {
      await sb.stopAndWait();
    }
  });

  test("a multi-arch index resolves to linux/amd64", async () => {
    const arm = dir("arm", { "arch.txt": "arm64" });
    push(`${reg.http}/arm-only:1`, { layers: [busybox, arm], platform: "linux/arm64", insecure: true });
    const amd = dir("amd", { "arch.txt": "amd64" });
    push(`${reg.http}/amd-only:1`, { layers: [busybox, amd], insecure: true });
    pushIndex(`${reg.http}/multiarch:1`, {
      "linux/arm64": `${reg.http}/arm-only:1`,
      "linux/amd64": `${reg.http}/amd-only:1`,
    });
    const sb = await Sandbox.create({ image: `${reg.http}/multiarch:1`, registry: insecure });
    try {
      assert.equal((await sb.exec("cat", ["/arch.txt"])).stdout(), "amd64");
    } finally {
      await sb.stopAndWait();
    }
  });

  test("two sandboxes of one image each write privately; the cache never changes", async () => {
    const image = `${reg.http}/library/busybox:latest`;
    const info = await Image.pull(image, { registry: insecure });
    const [a, b] = await Promise.all([
      Sandbox.create({ image, registry: insecure }),
      Sandbox.create({ image, registry: insecure }),
    ]);
    try {
      await a.shell("echo mine > /etc/os-release; echo new > /etc/added");
      assert.equal((await b.exec("cat", ["/etc/os-release"])).stdout(), fs.readFileSync(path.join(busybox, "etc/os-release"), "utf8"));
      assert.equal((await b.shell("ls /etc/added 2>&1")).code, 1);
    } finally {
      await Promise.all([a.stopAndWait(), b.stopAndWait()]);
    }
    const rootfs = path.join(home, "cache", "oci", "images", info.manifestDigest.replace("sha256:", ""), "rootfs");
    assert.equal(fs.readFileSync(path.join(rootfs, "etc/os-release"), "utf8"), fs.readFileSync(path.join(busybox, "etc/os-release"), "utf8"));
    assert.equal(fs.existsSync(path.join(rootfs, "etc/added")), false);
  });

  test("the image's User is the default user of execs", async () => {
    push(`${reg.http}/as-nobody:1`, { layers: [busybox], user: "nobody", insecure: true });
    const sb = await Sandbox.create({ image: `${reg.http}/as-nobody:1`, registry: insecure });
    try {
      assert.equal((await sb.exec("id", ["-u"])).stdout(), "65534\n");
      assert.equal((await sb.exec("id", ["-u"], { user: "root" })).stdout(), "0\n");
    } finally {
      await sb.stopAndWait();
    }
  });

  test("a digest reference pulls exactly that manifest", async () => {
    const digest = push(`${reg.http}/pinned:1`, { layers: [busybox, dir("pin", { "pin.txt": "pinned" })], insecure: true });
    const info = await Image.pull(`${reg.http}/pinned@${digest}`, { registry: insecure });
    assert.equal(info.manifestDigest, digest);
    const wrong = `sha256:${"0".repeat(64)}`;
    await assert.rejects(Image.pull(`${reg.http}/pinned@${wrong}`, { registry: insecure }), ImageNotFoundError);
  });
});

describe("registries and credentials", () => {
  test("TLS with a private CA, and the error without it", async () => {
    push(`${reg.tls}/busybox:1`, { layers: [busybox], ca: reg.ca });
    const info = await Image.pull(`${reg.tls}/busybox:1`, { registry: { caCertificates: [reg.ca] } });
    assert.match(info.reference, /busybox:1$/);
    await assert.rejects(Image.pull(`${reg.tls}/busybox:1`), (err: unknown) => {
      assert.ok(err instanceof MicrosandboxError);
      assert.match(err.message, /certificate|UnknownIssuer/i);
      return true;
    });
  });

  test("basic auth: refused without credentials, accepted from options and from a docker config", async () => {
    const credentials = { username: reg.user, password: reg.password };
    push(`${reg.basic}/private:1`, { layers: [busybox], ca: reg.ca, credentials });
    const ref = `${reg.basic}/private:1`;
    const caCertificates = [reg.ca];
    await assert.rejects(Image.pull(ref, { registry: { caCertificates } }), RegistryUnauthorizedError);
    await assert.rejects(
      Image.pull(ref, { registry: { caCertificates, auth: { [reg.basic]: { username: reg.user, password: "wrong" } } } }),
      RegistryUnauthorizedError,
    );
    await Image.pull(ref, { registry: { caCertificates, auth: { [reg.basic]: credentials } } });
    const dockerConfig = path.join(work, "docker-config.json");
    const auth = Buffer.from(`${reg.user}:${reg.password}`).toString("base64");
    fs.writeFileSync(dockerConfig, JSON.stringify({ auths: { [reg.basic]: { auth } } }));
    const info = await Image.pull(ref, { registry: { caCertificates, dockerConfig } });
    assert.equal(info.layers.length, 1);
  });

  test("bearer tokens: anonymous pulls go through the token flow", async () => {
    push(`${reg.token}/public:1`, { layers: [busybox], ca: reg.ca, credentials: { username: reg.user, password: reg.password } });
    const sb = await Sandbox.create({ image: `${reg.token}/public:1`, registry: { caCertificates: [reg.ca] } });
    try {
      assert.equal((await sb.exec("echo", ["token ok"])).stdout(), "token ok\n");
    } finally {
      await sb.stopAndWait();
    }
  });

  test("a missing image and an unreachable registry are typed errors", async () => {
    await assert.rejects(Image.pull(`${reg.http}/no-such-repo:1`, { registry: insecure }), ImageNotFoundError);
    await assert.rejects(Image.pull(`${reg.http}/library/busybox:no-such-tag`, { registry: insecure }), ImageNotFoundError);
    await assert.rejects(Image.pull("127.0.0.1:5999/nothing:1", { registry: { insecure: ["127.0.0.1:5999"] } }), RegistryUnreachableError);
    await assert.rejects(Sandbox.create({ image: "Not A Reference" }), (err: unknown) => {
      assert.ok(err instanceof InvalidOptionError);
      assert.equal(err.field, "image");
      return true;
    });
    assert.deepEqual(processesOf(home), []);
  });
});

describe("integrity and failures", () => {
  test("a blob that does not match its digest is refused and nothing of it is kept", async () => {
    const unique = dir("corrupt", { "payload.bin": randomBytes(4096).toString("hex") });
    push(`${reg.http}/corrupt:1`, { layers: [unique], insecure: true });
    const manifest = JSON.parse(
      execFileSync("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${reg.http}/corrupt:1`], { encoding: "utf8" }),
    );
    const layer = manifest.layers[0].digest as string;
    const blob = registryBlobPath(layer);
    const size = fs.statSync(blob).size;
    fs.writeFileSync(blob, randomBytes(size));
    await assert.rejects(Image.pull(`${reg.http}/corrupt:1`, { registry: insecure }), ImageIntegrityError);
    const cache = path.join(home, "cache", "oci");
    assert.equal(fs.existsSync(path.join(cache, "layers", layer.replace("sha256:", ""))), false);
    assert.deepEqual(fs.readdirSync(path.join(cache, "tmp")), []);
  });

  test("a download cut off mid-blob is resumed and verified", async () => {
    const big = dir("resume", { "big.bin": randomBytes(3 << 20).toString("base64") });
    push(`${reg.http}/resume:1`, { layers: [busybox, big], insecure: true });
    const flaky = await proxy(reg.http, { breakBlobsOnce: true });
    try {
      const info = await Image.pull(`${flaky.address}/resume:1`, { registry: { insecure: [flaky.address] } });
      assert.equal(info.layers.length, 2);
      // The proxy cuts the first full download of each blob halfway. Every layer
      // this pull downloaded (the busybox layer may be cached by earlier tests;
      // the random one cannot be) was downloaded in full exactly once, then
      // resumed by a range request from a byte after the start.
      const log = flaky.requests.join("\n");
      const downloaded = info.layers.filter((digest) => flaky.requests.some((r) => r.endsWith(`/blobs/${digest}`)));
      assert.ok(downloaded.includes(info.layers[1]), `the random layer was not downloaded:\n${log}`);
      for (const digest of downloaded) {
        assert.equal(flaky.blobGets(digest), 1, `full downloads of ${digest}:\n${log}`);
        const starts = flaky.requests
          .filter((r) => r.startsWith("GET ") && r.includes(`/blobs/${digest} range=bytes=`))
          .map((r) => Number(/range=bytes=(\d+)-/.exec(r)?.[1]));
        assert.ok(starts.length >= 1 && starts.every((start) => start > 0), `${digest} not resumed by range:\n${log}`);
      }
    } finally {
      await flaky.close();
    }
    // From the cache: the proxy is gone.
    const sb = await Sandbox.create({
      image: `${flaky.address}/resume:1`,
      registry: { insecure: [flaky.address] },
      pullPolicy: "never",
    });
    try {
      const inGuest = (await sb.exec("sha256sum", ["/big.bin"])).stdout().split(" ")[0];
      assert.equal(inGuest, createHash("sha256").update(fs.readFileSync(path.join(big, "big.bin"))).digest("hex"));
    } finally {
      await sb.stopAndWait();
    }
  });

  test("a hostile layer is rejected and writes nothing outside the cache", async () => {
    const marker = `msb-escape-${process.pid}`;
    const tar = path.join(work, "evil.tar");
    execFileSync("python3", [
      "-c",
      `import tarfile, io
t = tarfile.open(${JSON.stringify(tar)}, "w")
for name in ["../../../../../../tmp/${marker}", "ok.txt"]:
    data = b"evil"
    info = tarfile.TarInfo(name); info.size = len(data)
    t.addfile(info, io.BytesIO(data))
t.close()`,
    ]);
    push(`${reg.http}/evil:1`, { layers: [busybox], rawLayers: [tar], insecure: true });
    await assert.rejects(Sandbox.create({ image: `${reg.http}/evil:1`, registry: insecure }), LayerRejectedError);
    assert.equal(fs.existsSync(`/tmp/${marker}`), false);
    assert.deepEqual(processesOf(home), []);
  });
});

describe("cache and policies", () => {
  test("two processes pulling one image download each blob once", async () => {
    const image = dir("shared", { "shared.bin": randomBytes(1 << 20).toString("hex") });
    push(`${reg.http}/shared:1`, { layers: [busybox, image], insecure: true });
    const counting = await proxy(reg.http);
    const sharedHome = fs.mkdtempSync(path.join(os.tmpdir(), "msb-shared-home-"));
    try {
      const script = `const { Image } = require(${JSON.stringify(path.resolve(__dirname, "..", "ts", "index.js"))});
Image.pull(process.argv[1], { registry: { insecure: [process.argv[2]] } }).then((i) => console.log(i.manifestDigest), (e) => { console.error(e); process.exit(1); });`;
      const run = () =>
        new Promise<string>((resolve, reject) => {
          const child = spawn(process.execPath, ["-e", script, `${counting.address}/shared:1`, counting.address], {
            env: { ...process.env, MSB_HOME: sharedHome },
            stdio: ["ignore", "pipe", "inherit"],
          });
          let out = "";
          child.stdout.on("data", (d) => (out += d));
          child.on("exit", (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`pull exited ${code}`))));
        });
      const [first, second] = await Promise.all([run(), run()]);
      assert.equal(first, second);
      const manifest = JSON.parse(
        execFileSync("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${reg.http}/shared:1`], { encoding: "utf8" }),
      );
      for (const layer of manifest.layers) {
        assert.equal(counting.blobGets(layer.digest), 1, `${layer.digest}:\n${counting.requests.join("\n")}`);
      }
    } finally {
      await counting.close();
      fs.rmSync(sharedHome, { recursive: true, force: true });
    }
  });

  test('"if-missing" does not contact the registry for a cached image; "never" refuses an uncached one', async () => {
    const counting = await proxy(reg.http);
    const registry = { insecure: [counting.address] };
    try {
      const ref = `${counting.address}/library/busybox:latest`;
      const { layers } = await Image.pull(ref, { registry });
      const seen = counting.requests.length;
      const sb = await Sandbox.create({ image: ref, registry, pullPolicy: "if-missing" });
      await sb.stopAndWait();
      assert.equal(counting.requests.length, seen);
      const again = await Sandbox.create({ image: ref, registry, pullPolicy: "always" });
      await again.stopAndWait();
      assert.ok(counting.requests.length > seen);
      const later = counting.requests.slice(seen);
      assert.ok(!layers.some((layer) => later.some((r) => r.endsWith(layer))), `layers downloaded again:\n${later.join("\n")}`);
    } finally {
      await counting.close();
    }
    await assert.rejects(
      Sandbox.create({ image: `${reg.http}/never-pulled:1`, registry: insecure, pullPolicy: "never" }),
      ImageNotFoundError,
    );
  });

  test("list, inspect, remove (refused while in use), prune", async () => {
    const ref = `${reg.http}/lifecycle:1`;
    push(ref, { layers: [busybox, dir("life", { "life.txt": randomBytes(64).toString("hex") })], insecure: true });
    const info = await Image.pull(ref, { registry: insecure });
    assert.ok((await Image.list()).some((i) => i.reference === info.reference));
    const inspected = await Image.inspect(ref, { registry: insecure });
    assert.equal(inspected.manifestDigest, info.manifestDigest);
    assert.ok(inspected.pulledAt instanceof Date);

    const sb = await Sandbox.create({ image: ref, registry: insecure });
    await assert.rejects(Image.remove(ref, { registry: insecure }), ImageInUseError);
    await sb.stopAndWait();
    await Image.remove(ref, { registry: insecure });
    await assert.rejects(Image.inspect(ref, { registry: insecure }), ImageNotFoundError);
    assert.ok(!(await Image.list()).some((i) => i.reference === info.reference));

    const uniqueLayer = info.layers[1].replace("sha256:", "");
    const layerDir = path.join(home, "cache", "oci", "layers", uniqueLayer);
    assert.ok(fs.existsSync(layerDir));
    const pruned = await Image.prune();
    assert.ok(pruned.images >= 1 && pruned.layers >= 1, JSON.stringify(pruned));
    assert.equal(fs.existsSync(layerDir), false);
  });
});

describe("other root sources", () => {
  test("an ext4 filesystem image boots read-only underneath the sandbox", async () => {
    const disk = path.join(work, "root.ext4");
    execFileSync("mkfs.ext4", ["-q", "-F", "-d", busybox, disk, "64M"]);
    const before = createHash("sha256").update(fs.readFileSync(disk)).digest("hex");
    const sb = await Sandbox.create({ image: disk });
    try {
      const out = await sb.shell("echo changed > /etc/os-release; cat /etc/os-release");
      assert.equal(out.stdout(), "changed\n");
    } finally {
      await sb.stopAndWait();
    }
    assert.equal(createHash("sha256").update(fs.readFileSync(disk)).digest("hex"), before);
  });
});
