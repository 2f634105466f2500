// End to end: the guest filesystem API against a real VM, checked both through
// the API and by processes inside the guest.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Readable } from "node:stream";
import { finished, pipeline } from "node:stream/promises";
import { after, before, describe, test } from "node:test";

import {
  AbortedError,
  FsError,
  FsExistsError,
  FsIsADirectoryError,
  FsNotADirectoryError,
  FsNotEmptyError,
  FsNotFoundError,
  FsPermissionError,
  HostIoError,
  InvalidOptionError,
  LimitExceededError,
  Sandbox,
  type SandboxFs,
} from "../ts/index";
import { busyboxRoot, isolatedHome } from "./helpers";

const home = isolatedHome("fs");
const hostDir = fs.mkdtempSync(path.join(os.tmpdir(), "msb-fs-host-"));
let root: string;
let sb: Sandbox;
let gfs: SandboxFs;

before(async () => {
  root = busyboxRoot();
  sb = await Sandbox.create({ name: "fs", image: root, memoryMib: 1024, workdir: "/root" });
  gfs = sb.fs();
});

after(async () => {
  await sb.stopAndWait();
  fs.rmSync(home, { recursive: true, force: true });
  fs.rmSync(hostDir, { recursive: true, force: true });
});

describe("files", () => {
  test("text and binary content round-trip, and the guest sees the same bytes", async () => {
    await gfs.write("/tmp/text.txt", "héllo wörld ✓\n");
    assert.equal(await gfs.readString("/tmp/text.txt"), "héllo wörld ✓\n");
    assert.equal((await sb.exec("cat", ["/tmp/text.txt"])).stdout(), "héllo wörld ✓\n");

    const binary = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 256));
    assert.equal(await gfs.write("/tmp/binary", binary), binary.length);
    assert.deepEqual(await gfs.read("/tmp/binary"), binary);
    const guestSum = (await sb.exec("sha256sum", ["/tmp/binary"])).stdout().split(" ")[0];
    assert.equal(guestSum, createHash("sha256").update(binary).digest("hex"));

    const empty = await gfs.write("/tmp/empty", "");
    assert.equal(empty, 0);
    assert.deepEqual(await gfs.read("/tmp/empty"), Buffer.alloc(0));
  });

  test("append adds to the end; relative paths start at the workdir", async () => {
    await gfs.write("notes", "a\n");
    await gfs.write("notes", "b\n", { append: true });
    assert.equal(await gfs.readString("/root/notes"), "a\nb\n");
  });

  test("modes are applied exactly and reported by stat and list", async () => {
    await gfs.write("/tmp/secret", "x", { mode: 0o600 });
    await gfs.write("/tmp/tool", "#!/bin/sh\necho tool ran\n", { mode: 0o755 });
    assert.equal((await gfs.stat("/tmp/secret")).mode, 0o600);
    assert.equal((await sb.exec("/tmp/tool")).stdout(), "tool ran\n");
    assert.equal((await sb.exec("stat", ["-c", "%a", "/tmp/secret"])).stdout(), "600\n");
    // Writing again without a mode keeps it.
    await gfs.write("/tmp/secret", "y");
    assert.equal((await gfs.stat("/tmp/secret")).mode, 0o600);
  });

  test("unicode names", async () => {
    await gfs.mkdir("/tmp/ünï", { recursive: true });
    await gfs.write("/tmp/ünï/日本語.txt", "ok");
    const entries = await gfs.list("/tmp/ünï");
    assert.deepEqual(entries.map((e) => e.name), ["日本語.txt"]);
    assert.equal((await sb.exec("cat", ["/tmp/ünï/日本語.txt"])).stdout(), "ok");
  });

  test("createParents makes the missing directories", async () => {
    await assert.rejects(gfs.write("/tmp/a/b/c.txt", "x"), FsNotFoundError);
    await gfs.write("/tmp/a/b/c.txt", "x", { createParents: true });
    assert.equal((await gfs.stat("/tmp/a/b")).kind, "dir");
  });
});

describe("directories and metadata", () => {
  test("mkdir, list, stat, exists, rename, remove", async () => {
    await gfs.mkdir("/srv/x/y", { recursive: true });
    await gfs.write("/srv/x/y/file", "12345");
    await sb.shell("ln -s y/file /srv/x/link");
    const entries = await gfs.list("/srv/x");
    assert.deepEqual(
      entries.map((e) => [e.name, e.kind]),
      [["link", "symlink"], ["y", "dir"]],
    );
    const file = await gfs.stat("/srv/x/y/file");
    assert.equal(file.kind, "file");
    assert.equal(file.size, 5);
    assert.equal(file.uid, 0);
    assert.ok(Math.abs(file.mtime.getTime() - Date.now()) < 60_000, String(file.mtime));
    assert.equal((await gfs.stat("/srv/x/link")).kind, "file");
    assert.equal((await gfs.stat("/srv/x/link", { followSymlinks: false })).kind, "symlink");

    assert.equal(await gfs.exists("/srv/x/y/file"), true);
    assert.equal(await gfs.exists("/srv/x/nothing"), false);

    await gfs.rename("/srv/x/y/file", "/srv/x/moved");
    assert.equal(await gfs.readString("/srv/x/moved"), "12345");
    assert.equal(await gfs.exists("/srv/x/y/file"), false);

    await assert.rejects(gfs.remove("/srv/x"), FsNotEmptyError);
    await gfs.remove("/srv/x/moved");
    await gfs.remove("/srv/x", { recursive: true });
    assert.equal(await gfs.exists("/srv/x"), false);
    assert.equal((await sb.shell("ls /srv")).stdout(), "");
  });

  test("errors are typed and carry the guest errno and path", async () => {
    await assert.rejects(gfs.read("/no/such/file"), (err: unknown) => {
      assert.ok(err instanceof FsNotFoundError && err instanceof FsError);
      assert.equal(err.code, "FS_NOT_FOUND");
      assert.equal(err.errno, 2);
      assert.equal(err.path, "/no/such/file");
      return true;
    });
    await assert.rejects(gfs.read("/etc"), FsIsADirectoryError);
    await assert.rejects(gfs.mkdir("/etc"), FsExistsError);
    await assert.rejects(gfs.write("/etc/passwd/x", "x"), FsNotADirectoryError);
    // Read-only even for root: sysfs refuses to open it for writing.
    await assert.rejects(gfs.write("/sys/kernel/notes", "x"), FsPermissionError);
    await assert.rejects(gfs.remove("/"), InvalidOptionError);
    await assert.rejects(gfs.write("/tmp/x", "x", { mode: 0o10000 }), InvalidOptionError);
  });
});

describe("paths resolve inside the guest", () => {
  test("`..` and symlinks cannot leave the sandbox root", async () => {
    const marker = `written-through-escape-${process.pid}`;
    await sb.shell("ln -s ../../../../../../etc /tmp/escape");
    await gfs.write(`/tmp/escape/${marker}`, "inside");
    await gfs.write(`/../../../../tmp/${marker}`, "inside too");
    // Both landed in the guest...
    assert.equal((await sb.exec("cat", [`/etc/${marker}`])).stdout(), "inside");
    assert.equal((await sb.exec("cat", [`/tmp/${marker}`])).stdout(), "inside too");
    // ...and nowhere on the host, neither its /etc nor the image.
    assert.equal(fs.existsSync(`/etc/${marker}`), false);
    assert.equal(fs.existsSync(`/tmp/${marker}`), false);
    assert.equal(fs.existsSync(path.join(root, "etc", marker)), false);
    // Reading through the link reads the guest's file, not the host's.
    assert.equal(await gfs.readString("/tmp/escape/os-release"), fs.readFileSync(path.join(root, "etc", "os-release"), "utf8"));
  });
});

describe("the transfer share", () => {
  test("large writes are staged through it and leave nothing behind", async () => {
    const big = Buffer.alloc(3 << 20, 0x5a);
    await gfs.write("/tmp/staged.bin", big);
    assert.deepEqual(await gfs.read("/tmp/staged.bin"), big);
    assert.deepEqual(fs.readdirSync(path.join(home, "sandboxes", "fs", "transfer")), []);
  });

  test("the guest cannot write to it, even through the agent's descriptor", async () => {
    const attempt = await sb.shell(
      'for f in /proc/1/fd/*; do if [ "$(readlink $f)" = /msb/transfer ]; then echo found; echo evil > $f/evil && echo wrote; fi; done',
    );
    assert.equal(attempt.stdout(), "found\n");
    assert.match(attempt.stderr(), /Read-only file system/);
    assert.equal(fs.existsSync(path.join(home, "sandboxes", "fs", "transfer", "evil")), false);
  });
});

describe("host copies", () => {
  test("a tree goes in and comes back out with its content and modes", async () => {
    const src = path.join(hostDir, "src");
    fs.mkdirSync(path.join(src, "sub"), { recursive: true });
    fs.writeFileSync(path.join(src, "a.txt"), "alpha");
    fs.writeFileSync(path.join(src, "sub", "run.sh"), "#!/bin/sh\necho from copied script\n", { mode: 0o755 });
    fs.symlinkSync("a.txt", path.join(src, "link"));

    const copied = await gfs.copyFromHost(src, "/opt/tree");
    assert.equal(copied, 5 + 34);
    assert.equal((await sb.exec("/opt/tree/sub/run.sh")).stdout(), "from copied script\n");
    assert.equal((await sb.exec("readlink", ["/opt/tree/link"])).stdout(), "a.txt\n");

    await sb.shell("echo made in guest > /opt/tree/sub/new.txt");
    const back = path.join(hostDir, "back");
    await gfs.copyToHost("/opt/tree", back);
    assert.equal(fs.readFileSync(path.join(back, "a.txt"), "utf8"), "alpha");
    assert.equal(fs.readFileSync(path.join(back, "sub", "new.txt"), "utf8"), "made in guest\n");
    assert.equal(fs.statSync(path.join(back, "sub", "run.sh")).mode & 0o777, 0o755);
    assert.deepEqual(fs.readdirSync(back).sort(), ["a.txt", "sub"]);
  });

  test("a missing host file or guest file fails cleanly", async () => {
    await assert.rejects(gfs.copyFromHost(path.join(hostDir, "absent"), "/tmp/absent"), HostIoError);
    const target = path.join(hostDir, "never");
    await assert.rejects(gfs.copyToHost("/no/such", target), FsNotFoundError);
    assert.equal(fs.existsSync(target), false);
    assert.deepEqual(fs.readdirSync(hostDir).filter((f) => f.endsWith(".tmp")), []);
  });

  test("copyToHost limits reject with the limit's field and leave no temporary file", async () => {
    await sb.shell(
      "mkdir -p /opt/limits/a/b/c && head -c 300000 /dev/zero > /opt/limits/big && " +
        "for i in 1 2 3 4 5 6; do echo $i > /opt/limits/f$i; done",
    );
    const temporaries = (dir: string): string[] =>
      fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => f.includes(".msb-copy-")) : [];
    const cases: Array<[string, object]> = [
      ["maxBytes", { maxBytes: 100_000 }],
      ["maxEntries", { maxEntries: 5 }],
      ["maxDepth", { maxDepth: 1 }],
    ];
    for (const [field, limits] of cases) {
      const dest = path.join(hostDir, `limits-${field}`);
      await assert.rejects(gfs.copyToHost("/opt/limits", dest, limits), (err: unknown) => {
        assert.ok(err instanceof LimitExceededError, String(err));
        assert.equal(err.field, field);
        return true;
      });
      assert.deepEqual(temporaries(dest), [], `${field} left a temporary file`);
    }
    await assert.rejects(gfs.copyToHost("/opt/limits", path.join(hostDir, "bad"), { maxDepth: 0 }), InvalidOptionError);
    const whole = path.join(hostDir, "limits-whole");
    assert.equal(await gfs.copyToHost("/opt/limits", whole, { maxBytes: 400_000, maxEntries: 20, maxDepth: 3 }), 300_012);
  });

  test("an aborted copyToHost rejects with AbortedError and leaves no temporary file", async () => {
    // Large enough that the copy is still running when the signal fires.
    await sb.shell("mkdir -p /opt/abort && head -c 200000000 /dev/zero > /opt/abort/big");
    const dest = path.join(hostDir, "aborted");
    const controller = new AbortController();
    const copy = gfs.copyToHost("/opt/abort", dest, { signal: controller.signal });
    setTimeout(() => controller.abort(), 300);
    await assert.rejects(copy, AbortedError);
    assert.deepEqual(fs.existsSync(dest) ? fs.readdirSync(dest) : [], [], "a partial file was left");
    await assert.rejects(gfs.copyToHost("/opt/abort", dest, { signal: AbortSignal.abort() }), AbortedError);
    await sb.shell("rm -rf /opt/abort");
  });
});

describe("streams", () => {
  test("a 200 MiB file goes in by writeStream and comes back by readStream, checksum intact", async () => {
    const size = 200 << 20;
    const chunk = 1 << 20;
    const written = createHash("sha256");
    let counter = 0;
    async function* produce(): AsyncGenerator<Buffer> {
      for (let off = 0; off < size; off += chunk) {
        const buf = Buffer.alloc(chunk);
        for (let i = 0; i < chunk; i += 4) buf.writeUInt32LE((counter++ * 2246822519) >>> 0, i);
        written.update(buf);
        yield buf;
      }
    }
    const sink = gfs.writeStream("/tmp/big.bin");
    await pipeline(Readable.from(produce()), sink);
    await finished(sink);
    const expected = written.digest("hex");
    assert.equal((await gfs.stat("/tmp/big.bin")).size, size);
    assert.equal((await sb.exec("sha256sum", ["/tmp/big.bin"])).stdout().split(" ")[0], expected);

    const read = createHash("sha256");
    let bytes = 0;
    for await (const part of gfs.readStream("/tmp/big.bin")) {
      read.update(part as Buffer);
      bytes += (part as Buffer).length;
    }
    assert.equal(bytes, size);
    assert.equal(read.digest("hex"), expected);
    await gfs.remove("/tmp/big.bin");
  });

  test("a stream of a missing file errors", async () => {
    const stream = gfs.readStream("/no/such/stream");
    await assert.rejects(
      (async () => {
        for await (const _ of stream) void _;
      })(),
      FsNotFoundError,
    );
  });
});
