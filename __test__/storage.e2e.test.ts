// Storage that outlives a VM: named volumes (dir and disk), bind mounts,
// tmpfs mounts and persistent roots, each from inside real VMs, with the
// host's view checked where a hostile guest could try to harm it.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";

import {
  FsNotFoundError,
  InvalidOptionError,
  LimitExceededError,
  Sandbox,
  SandboxNotFoundError,
  Volume,
  VolumeAlreadyExistsError,
  VolumeBusyError,
  VolumeInUseError,
  VolumeNotFoundError,
} from "../ts/index";
import { busyboxRoot, isolatedHome, repoRoot } from "./helpers";

const home = isolatedHome("storage");
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "msb-storage-host-"));
let root: string;

before(() => {
  root = busyboxRoot();
});

after(() => {
  fs.rmSync(home, { recursive: true, force: true });
  fs.rmSync(scratch, { recursive: true, force: true });
});

/** A fresh empty host directory for a bind mount. */
function hostDir(label: string): string {
  return fs.mkdtempSync(path.join(scratch, `${label}-`));
}

test("the documented example: a writer, then a read-only reader, share a named volume", async () => {
  const data = await Volume.create({ name: "shared-data", quotaMib: 100 });
  const writer = await Sandbox.create({ name: "writer", image: root, volumes: { "/data": { named: data.name } } });
  try {
    await writer.shell("echo 'hello' > /data/message.txt");
  } finally {
    await writer.stopAndWait();
  }
  const reader = await Sandbox.create({
    name: "reader",
    image: root,
    volumes: { "/data": { named: data.name, readonly: true } },
  });
  try {
    assert.equal((await reader.shell("cat /data/message.txt")).stdout(), "hello\n");
  } finally {
    await reader.stopAndWait();
  }
});

test("a disk volume's quota: ENOSPC in the guest at the cap, earlier data intact, df shows the cap", async () => {
  await Volume.create({ name: "capped", quotaMib: 24 });
  const sb = await Sandbox.create({ image: root, volumes: { "/cap": { named: "capped" } } });
  try {
    await sb.shell("dd if=/dev/urandom of=/cap/keep bs=1M count=4 2>/dev/null && sync");
    const before = (await sb.shell("md5sum /cap/keep")).stdout();
    const fill = await sb.shell("dd if=/dev/zero of=/cap/fill bs=1M count=64; sync");
    assert.match(fill.stderr(), /No space left on device/);
    assert.equal((await sb.shell("md5sum /cap/keep")).stdout(), before, "the earlier file is intact");
    const df = (await sb.shell("df -k /cap | tail -n 1")).stdout().trim().split(/\s+/);
    const sizeKib = Number(df[1]);
    assert.ok(sizeKib > 18 * 1024 && sizeKib <= 24 * 1024, `df size ${sizeKib} KiB for a 24 MiB quota`);
    const usage = await (await Volume.get("capped")).usage();
    assert.equal(usage.capacityBytes, 24 << 20);
    assert.ok(usage.usedBytes >= 4 << 20, `used ${usage.usedBytes}`);
  } finally {
    await sb.stopAndWait();
  }
});

test("read-only is the host's: writes fail with EROFS and remounting read-write does not help", async () => {
  const dir = await Volume.create({ name: "ro-dir" });
  await dir.fs().write("/seed.txt", "seed\n");
  await Volume.create({ name: "ro-disk", quotaMib: 16 });
  const bind = hostDir("ro-bind");
  const sb = await Sandbox.create({
    image: root,
    volumes: {
      "/dir": { named: "ro-dir", readonly: true },
      "/disk": { named: "ro-disk", readonly: true },
      "/bind": { bind, readonly: true },
    },
  });
  try {
    assert.equal((await sb.shell("cat /dir/seed.txt")).stdout(), "seed\n");
    for (const mount of ["/dir", "/disk", "/bind"]) {
      const write = await sb.shell(`echo x > ${mount}/new`);
      assert.notEqual(write.code, 0, `${mount}: a write succeeded`);
      assert.match(write.stderr(), /Read-only file system/, mount);
      const remount = await sb.shell(`mount -o remount,rw ${mount}; echo x > ${mount}/new && echo WROTE`);
      assert.doesNotMatch(remount.stdout(), /WROTE/, `${mount}: remount made it writable`);
    }
    assert.deepEqual(fs.readdirSync(bind), []);
    assert.equal(await dir.fs().exists("/new"), false);
  } finally {
    await sb.stopAndWait();
  }
});

test("a bind mount round-trips files both ways; a tmpfs mount is capped (built with .volume())", async () => {
  const bind = hostDir("rw-bind");
  fs.writeFileSync(path.join(bind, "from-host.txt"), "host says hi\n");
  // The upstream SDK's builder form of the same options.
  const sb = await Sandbox.builder("binder")
    .image(root)
    .volume("/work", (m) => m.bind(bind))
    .volume("/scratch", (m) => m.tmpfs(8))
    .create();
  try {
    assert.equal((await sb.shell("cat /work/from-host.txt")).stdout(), "host says hi\n");
    await sb.shell("mkdir -p /work/out && echo 'guest says hi' > /work/out/from-guest.txt");
    assert.equal(fs.readFileSync(path.join(bind, "out", "from-guest.txt"), "utf8"), "guest says hi\n");
    const full = await sb.shell("dd if=/dev/zero of=/scratch/f bs=1M count=16");
    assert.match(full.stderr(), /No space left on device/);
  } finally {
    await sb.stopAndWait();
  }
});

test("guest root in a writable share cannot leave setuid files, devices, FIFOs or symlinks on the host", async () => {
  const bind = hostDir("hostile");
  const sb = await Sandbox.create({ image: root, volumes: { "/b": { bind } } });
  try {
    const attack = await sb.shell(
      [
        "cp /bin/busybox /b/suid && chown 0:0 /b/suid && chmod 6755 /b/suid",
        "touch /b/sticky && chmod 1777 /b/sticky",
        "mknod /b/mem c 1 1",
        "mknod /b/disk b 8 0",
        "mkfifo /b/fifo",
        "ln -s /etc/shadow /b/shadow-link",
        "ln -s / /b/root-link",
        "echo done",
      ].join(" && "),
    );
    assert.equal(attack.stdout(), "done\n", attack.stderr());
    // The guest sees what it made (its metadata is kept as attributes)...
    assert.equal((await sb.shell("readlink /b/shadow-link")).stdout(), "/etc/shadow\n");
    assert.match((await sb.shell("ls -l /b/suid")).stdout(), /^-rwsr-sr-x/);
    assert.match((await sb.shell("ls -l /b/mem")).stdout(), /^c/);
  } finally {
    await sb.stopAndWait();
  }
  // ...the host sees plain files only, none setuid, setgid, sticky or executable by others.
  for (const name of fs.readdirSync(bind)) {
    const stat = fs.lstatSync(path.join(bind, name));
    assert.ok(stat.isFile(), `${name} is a ${stat.isSymbolicLink() ? "symlink" : "special file"} on the host`);
    assert.equal(stat.mode & 0o7000, 0, `${name} has mode ${(stat.mode & 0o7777).toString(8)}`);
    assert.equal(stat.mode & 0o077, 0, `${name} is open to others: ${(stat.mode & 0o7777).toString(8)}`);
    assert.equal(stat.uid, process.getuid?.(), `${name} is owned by uid ${stat.uid}`);
  }
  assert.equal(fs.readFileSync(path.join(bind, "shadow-link"), "utf8"), "/etc/shadow");
  assert.equal(fs.readFileSync(path.join(bind, "mem")).length, 0, "the device node is an empty file");
});

test("a persistent root keeps its files across stop and a new create of the same name", async () => {
  const options = { name: "keeper", image: root, persistent: true, rootfsSizeMib: 128 } as const;
  let sb = await Sandbox.create(options);
  try {
    await sb.shell("echo kept > /root/note.txt && mkdir -p /opt/app && echo v1 > /opt/app/version && rm /etc/hostname");
  } finally {
    await sb.stopAndWait();
  }
  sb = await Sandbox.create(options);
  try {
    assert.equal((await sb.shell("cat /root/note.txt /opt/app/version")).stdout(), "kept\nv1\n");
    assert.equal((await sb.shell("test -e /etc/hostname && echo present || echo gone")).stdout(), "gone\n");
  } finally {
    await sb.stopAndWait();
  }
  // Without persistent: true the same name starts from the image.
  sb = await Sandbox.create({ name: "keeper", image: root });
  try {
    assert.equal((await sb.shell("cat /root/note.txt 2>&1 || true")).stdout().includes("kept"), false);
  } finally {
    await sb.stopAndWait();
  }
  await Sandbox.remove("keeper");
  await assert.rejects(Sandbox.remove("keeper"), SandboxNotFoundError);
  sb = await Sandbox.create(options);
  try {
    assert.equal((await sb.shell("test -e /root/note.txt && echo kept || echo fresh")).stdout(), "fresh\n");
  } finally {
    await sb.stopAndWait();
  }
  await Sandbox.remove("keeper");
});

test("two sandboxes share a dir volume read-write; a disk volume is one sandbox's at a time; removal waits for its users", async () => {
  await Volume.create({ name: "team" });
  await Volume.create({ name: "solo", quotaMib: 16 });
  const a = await Sandbox.create({ name: "a", image: root, volumes: { "/team": { named: "team" }, "/solo": { named: "solo" } } });
  try {
    const b = await Sandbox.create({ name: "b", image: root, volumes: { "/team": { named: "team" } } });
    try {
      await a.shell("echo from-a > /team/a.txt");
      await b.shell("echo from-b > /team/b.txt");
      assert.equal((await b.shell("cat /team/a.txt")).stdout(), "from-a\n");
      assert.equal((await a.shell("cat /team/b.txt")).stdout(), "from-b\n");
    } finally {
      await b.stopAndWait();
    }
    const busy = await Sandbox.create({ image: root, volumes: { "/s": { named: "solo", readonly: true } } }).then(
      async (sb) => {
        await sb.stopAndWait();
        return undefined;
      },
      (err: unknown) => err,
    );
    assert.ok(busy instanceof VolumeBusyError, `got ${String(busy)}`);
    assert.equal(busy.field, 'volumes["/s"]');
    await assert.rejects(Volume.remove("team"), VolumeInUseError);
    await assert.rejects(Volume.remove("solo"), VolumeInUseError);
  } finally {
    await a.stopAndWait();
  }
  await Volume.remove("team");
  await Volume.remove("solo");
  await assert.rejects(Volume.get("team"), VolumeNotFoundError);
  assert.equal(fs.existsSync(path.join(home, "volumes", "team")), false);
});

test("volumes are managed from the host: fs() without a VM, list from another process, typed errors", async () => {
  const vol = await Volume.create({ name: "hosted" });
  await assert.rejects(Volume.create({ name: "hosted" }), VolumeAlreadyExistsError);
  await assert.rejects(Volume.create({ name: "bad/name" }), (err: unknown) => err instanceof InvalidOptionError && err.field === "name");
  await assert.rejects(
    Volume.create({ name: "x", kind: "dir", quotaMib: 10 }),
    (err: unknown) => err instanceof InvalidOptionError && err.field === "quotaMib",
  );
  const volFs = vol.fs();
  await volFs.write("/in/from-host.txt", "host\n", { createParents: true });
  await assert.rejects(volFs.read("/../state.db"), InvalidOptionError);
  await assert.rejects(volFs.read("/missing"), FsNotFoundError);
  const sb = await Sandbox.create({ image: root, volumes: { "/v": { named: "hosted" } } });
  try {
    assert.equal((await sb.shell("cat /v/in/from-host.txt")).stdout(), "host\n");
    await sb.shell("echo guest > /v/from-guest.txt");
  } finally {
    await sb.stopAndWait();
  }
  assert.equal(await volFs.readString("/from-guest.txt"), "guest\n");
  assert.deepEqual((await volFs.list("/")).map((e) => e.name), ["from-guest.txt", "in"]);
  await assert.rejects(volFs.list("/", { maxEntries: 1 }), (err: unknown) => err instanceof LimitExceededError && err.field === "maxEntries");
  const disk = await Volume.create({ name: "hosted-disk", quotaMib: 16 });
  assert.throws(() => disk.fs(), InvalidOptionError);

  // The records are on disk: a new process lists them.
  const script = `const { Volume } = require(${JSON.stringify(path.join(repoRoot, "dist", "ts", "index.js"))});
    Volume.list().then((vs) => console.log(vs.filter((v) => v.name.startsWith("hosted")).map((v) => v.name + ":" + v.kind).join(",")));`;
  const { stdout } = await promisify(execFile)(process.execPath, ["-e", script], { env: process.env });
  assert.equal(stdout.trim(), "hosted:dir,hosted-disk:disk");
});

test("mount options are checked and name their field", async () => {
  const field = (f: string) => (err: unknown) => err instanceof InvalidOptionError && err.field === f;
  await assert.rejects(
    Sandbox.create({ image: root, volumes: { "/x": { bind: path.join(scratch, "does-not-exist") } } }),
    field('volumes["/x"]'),
  );
  await assert.rejects(Sandbox.create({ image: root, volumes: { data: { tmpfs: {} } } }), field('volumes["data"]'));
  await assert.rejects(
    Sandbox.create({ image: root, volumes: { "/d": { tmpfs: {} }, "/d/": { tmpfs: {} } } }),
    field('volumes["/d/"]'),
  );
  await assert.rejects(Sandbox.create({ image: root, volumes: { "/proc/x": { tmpfs: {} } } }), field('volumes["/proc/x"]'));
  await assert.rejects(
    Sandbox.create({ image: root, volumes: { "/x": { bind: home } } }),
    field('volumes["/x"]'),
    "the state home is not shared",
  );
  await assert.rejects(
    Sandbox.create({ image: root, volumes: { "/x": { named: "a", bind: "/tmp" } as never } }),
    field('volumes["/x"]'),
  );
  await assert.rejects(Sandbox.create({ image: root, persistent: true }), field("persistent"));
  const missing = await Sandbox.create({ image: root, volumes: { "/m": { named: "nope" } } }).catch((e: unknown) => e);
  assert.ok(missing instanceof VolumeNotFoundError, String(missing));
  assert.equal(missing.field, 'volumes["/m"]');
  // Nothing was left running or recorded by the refused creates.
  assert.deepEqual((await Sandbox.list()).filter((s) => s.status === "running"), []);
});
