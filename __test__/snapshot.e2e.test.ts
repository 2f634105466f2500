// Template snapshots, end to end: a sandbox whose VM has no block device
// starts from a saved VM of its machine shape (kernel, initramfs, cpus,
// memory, kernel arguments, devices) when one is in the cache, and the first
// create of a shape builds it. Checked from the runtime's lines in each
// sandbox's log, the files under MSB_HOME/cache/snapshots and from inside the
// guests: restored guests must not share randomness or a stale clock, a
// damaged template must never cost a create, and concurrent creators of a new
// shape must all come up with one template built.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";

import { Sandbox, Volume, type SandboxOptions } from "../ts/index";
import { busyboxRoot, eventually, isolatedHome, leftovers, processesOf } from "./helpers";

// A fresh home: the template cache starts empty.
const home = isolatedHome("snapshot");
const snapshots = path.join(home, "cache", "snapshots");
let root: string;

before(() => {
  delete process.env.MSB_SNAPSHOT;
  root = busyboxRoot();
});

after(() => {
  delete process.env.MSB_SNAPSHOT;
  fs.rmSync(home, { recursive: true, force: true });
});

/** The machine shape most tests share: the SDK's defaults, spelled out. */
function shape(): SandboxOptions {
  return { image: root, cpus: 1, memoryMib: 512 };
}

/** How a sandbox's VM came up, from its runtime's lines in events.log. */
interface BootPath {
  /** Template key this create built (`snapshot <key> built in <N> ms`). */
  built?: string;
  /** Template key it started from (`restored from snapshot <key> in <N> ms`). */
  restored?: string;
  /**
   * A template it found and could not use: `snapshot <key> unusable (<reason>); booting cold` when
   * restoring failed, `...; made again` when its files no longer matched their record.
   */
  unusable?: { key: string; reason: string; then: "booting cold" | "made again" };
  /** When the template it built was saved (the time of the `built` line), in ms since the epoch. */
  builtAt?: number;
  /** The runtime's lines, for messages. */
  lines: string[];
}

/**
 * Reads the sandbox's runtime lines (before it is stopped: an unnamed sandbox's
 * log goes with it). The runtime writes its boot lines before `create` returns.
 */
async function bootPath(sb: Sandbox): Promise<BootPath> {
  const found: BootPath = { lines: [] };
  for await (const line of sb.logs()) {
    if (line.source !== "runtime") continue;
    found.lines.push(line.text);
    let m: RegExpExecArray | null;
    if ((m = /^snapshot ([0-9a-f]+) built in \d+ ms$/.exec(line.text))) {
      assert.equal(found.built, undefined, "two built lines");
      found.built = m[1];
      found.builtAt = line.time.getTime();
    } else if ((m = /^restored from snapshot ([0-9a-f]+) in \d+ ms$/.exec(line.text))) {
      assert.equal(found.restored, undefined, "two restored lines");
      found.restored = m[1];
    } else if ((m = /^snapshot ([0-9a-f]+) unusable \((.*)\); (booting cold|made again)$/.exec(line.text))) {
      found.unusable = { key: m[1], reason: m[2], then: m[3] as "booting cold" | "made again" };
    }
  }
  assert.ok(
    found.lines.some((l) => /^booted in \d+ ms/.test(l)),
    `every boot still logs its "booted in" line: ${JSON.stringify(found.lines)}`,
  );
  return found;
}

/** Creates a sandbox, checks that it runs a command and reports how it booted. */
async function createChecked(options: SandboxOptions): Promise<{ sb: Sandbox; boot: BootPath }> {
  const sb = await Sandbox.create(options);
  try {
    const out = await sb.shell("echo ok");
    assert.equal(out.stdout(), "ok\n", out.stderr());
    return { sb, boot: await bootPath(sb) };
  } catch (err) {
    await sb.stopAndWait();
    throw err;
  }
}

/** Creates, checks, stops: how one create booted. */
async function bootOnce(options: SandboxOptions): Promise<BootPath> {
  const { sb, boot } = await createChecked(options);
  await sb.stopAndWait();
  return boot;
}

/** The key a sandbox of `shape()` uses, building the template if there is none. */
async function defaultKey(): Promise<string> {
  const boot = await bootOnce(shape());
  const key = boot.built ?? boot.restored;
  assert.ok(key, `the default shape neither built nor restored: ${JSON.stringify(boot.lines)}`);
  return key;
}

function templateFiles(key: string): string[] {
  const dir = path.join(snapshots, key);
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
}

function assertTemplate(key: string): void {
  const files = templateFiles(key);
  for (const name of ["meta.json", "ram", "state"]) {
    assert.ok(files.includes(name), `${name} missing from ${path.join(snapshots, key)}: ${files.join(", ")}`);
  }
  JSON.parse(fs.readFileSync(path.join(snapshots, key, "meta.json"), "utf8"));
  assert.ok(fs.statSync(path.join(snapshots, key, "state")).size > 0);
  assert.ok(fs.statSync(path.join(snapshots, key, "ram")).size > 0);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** When the default shape's template was last saved: the clock check waits until it is old. */
let defaultBuiltAt = 0;

test("the first create of a shape builds its template; the next restores from it; both run commands", async () => {
  assert.equal(fs.existsSync(snapshots), false, "the cache starts empty");
  const first = await bootOnce(shape());
  assert.ok(first.built, `the first create built no template: ${JSON.stringify(first.lines)}`);
  assert.equal(first.unusable, undefined);
  // The builder's own sandbox starts from the template too.
  assert.equal(first.restored, first.built, JSON.stringify(first.lines));
  defaultBuiltAt = first.builtAt!;
  assertTemplate(first.built);
  // The key names the directory; only the template and its lock live beside it.
  for (const entry of fs.readdirSync(snapshots)) {
    assert.match(entry, /^[0-9a-f]+(\.lock)?$/, `unexpected ${entry} in ${snapshots}`);
  }

  const second = await bootOnce(shape());
  assert.equal(second.restored, first.built, `the second create did not restore: ${JSON.stringify(second.lines)}`);
  assert.equal(second.built, undefined);
  assert.equal(second.unusable, undefined);
});

test("MSB_SNAPSHOT=off boots cold even though a template of the shape exists", async () => {
  process.env.MSB_SNAPSHOT = "off";
  try {
    const boot = await bootOnce(shape());
    assert.deepEqual(
      [boot.built, boot.restored, boot.unusable],
      [undefined, undefined, undefined],
      JSON.stringify(boot.lines),
    );
  } finally {
    delete process.env.MSB_SNAPSHOT;
  }
});

test("a sandbox with a disk volume or a persistent root boots cold and works", async () => {
  await Volume.create({ name: "snap-disk", quotaMib: 16 });
  const withDisk = await createChecked({ ...shape(), volumes: { "/disk": { named: "snap-disk" } } });
  try {
    await withDisk.sb.shell("echo kept > /disk/file && sync");
    assert.equal((await withDisk.sb.shell("cat /disk/file")).stdout(), "kept\n");
  } finally {
    await withDisk.sb.stopAndWait();
  }
  const persistent = await createChecked({ ...shape(), name: "snap-persistent", persistent: true, rootfsSizeMib: 64 });
  await persistent.sb.stopAndWait();
  await Sandbox.remove("snap-persistent");
  await Volume.remove("snap-disk");
  for (const boot of [withDisk.boot, persistent.boot]) {
    assert.deepEqual([boot.built, boot.restored, boot.unusable], [undefined, undefined, undefined], JSON.stringify(boot.lines));
  }
});

test("three concurrent creates of a new shape all come up and exactly one builds its template", async () => {
  const newShape = { ...shape(), memoryMib: 384 };
  const settled = await Promise.allSettled([0, 1, 2].map(() => createChecked(newShape)));
  const made = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  let key = "";
  try {
    assert.deepEqual(
      settled.filter((s) => s.status === "rejected").map((s) => String((s as PromiseRejectedResult).reason)),
      [],
    );
    const builders = made.filter((m) => m.boot.built);
    assert.equal(builders.length, 1, JSON.stringify(made.map((m) => m.boot.lines)));
    key = builders[0].boot.built!;
    for (const { boot } of made) {
      assert.equal(boot.unusable, undefined, JSON.stringify(boot.lines));
      // Those that did not build either waited for the builder and restored, or booted cold.
      if (boot.restored !== undefined) assert.equal(boot.restored, key);
    }
    assertTemplate(key);
  } finally {
    await Promise.all(made.map((m) => m.sb.stopAndWait()));
  }
  assert.notEqual(key, await defaultKey(), "the memory size is part of the shape");
});

test("two sandboxes restored from one template differ in randomness and boot id, and keep the host's time", async () => {
  // A guest restored without the host's clock would read the time its template was saved.
  await sleep(defaultBuiltAt + 8000 - Date.now());
  const a = await createChecked(shape());
  try {
    const b = await createChecked(shape());
    try {
      assert.ok(a.boot.restored, JSON.stringify(a.boot.lines));
      assert.equal(b.boot.restored, a.boot.restored, JSON.stringify(b.boot.lines));
      const probe = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; cat /proc/sys/kernel/random/boot_id; date +%s";
      const [outA, outB] = await Promise.all([a.sb.shell(probe), b.sb.shell(probe)]);
      const hostSeconds = Date.now() / 1000;
      const [randomA, bootIdA, dateA] = outA.stdout().trim().split("\n");
      const [randomB, bootIdB, dateB] = outB.stdout().trim().split("\n");
      assert.match(randomA, /^[0-9a-f]{64}$/);
      assert.notEqual(randomA, randomB, "both guests read the same bytes from /dev/urandom");
      assert.match(bootIdA, /^[0-9a-f-]{36}$/);
      assert.notEqual(bootIdA, bootIdB, "both guests have the same boot_id");
      for (const date of [dateA, dateB]) {
        assert.ok(Math.abs(Number(date) - hostSeconds) <= 5, `guest clock ${date}, host ${hostSeconds.toFixed(0)}`);
      }
    } finally {
      await b.sb.stopAndWait();
    }
  } finally {
    await a.sb.stopAndWait();
  }
});

/**
 * Damages the default shape's template with `damage(statePath)`, checks the
 * next create with `check` (it must work whichever way it came up), then that
 * a template of the shape is back (made again by that create, else by the one
 * after) and that a sandbox restored before the damage kept running throughout:
 * removing or replacing a template must not touch a live guest's memory file.
 */
async function afterDamage(damage: (state: string) => void, check: (next: BootPath, key: string) => void): Promise<void> {
  const survivor = await createChecked(shape());
  try {
    const key = survivor.boot.restored;
    assert.ok(key, JSON.stringify(survivor.boot.lines));
    damage(path.join(snapshots, key, "state"));

    const next = await bootOnce(shape());
    check(next, key);
    if (next.built === undefined) {
      const rebuilt = await bootOnce(shape());
      assert.equal(rebuilt.built, key, `the damaged template was not made again: ${JSON.stringify(rebuilt.lines)}`);
      assert.equal(rebuilt.restored, key, JSON.stringify(rebuilt.lines));
    }
    assertTemplate(key);
    const again = await bootOnce(shape());
    assert.equal(again.restored, key, JSON.stringify(again.lines));
    assert.equal(again.built, undefined, JSON.stringify(again.lines));

    const out = await survivor.sb.shell("ls -R / >/dev/null 2>&1; cat /proc/meminfo >/dev/null; echo alive");
    assert.equal(out.stdout(), "alive\n");
  } finally {
    await survivor.sb.stopAndWait();
  }
}

test("a truncated template state is never loaded: the next create says so, makes the template again and restores from it", async () => {
  await afterDamage(
    (state) => fs.truncateSync(state, Math.floor(fs.statSync(state).size / 2)),
    (next, key) => {
      // meta.json's record of the file's size no longer holds: the template is made again at once.
      assert.equal(next.unusable?.key, key, JSON.stringify(next.lines));
      assert.equal(next.unusable?.then, "made again", JSON.stringify(next.lines));
      assert.match(next.unusable!.reason, /state changed/);
      assert.equal(next.built, key, JSON.stringify(next.lines));
      assert.equal(next.restored, key, JSON.stringify(next.lines));
    },
  );
});

test("a template state changed in place (same size, inode and mtime) that QEMU cannot load: a cold boot, then made again", async () => {
  await afterDamage(
    (state) => {
      const before = fs.statSync(state, { bigint: true });
      // `touch -r` copies the timestamps to the nanosecond; fs.utimesSync would round them.
      const reference = path.join(home, "state-times");
      fs.writeFileSync(reference, "");
      execFileSync("touch", ["-r", state, reference]);
      const size = Number(before.size);
      const fd = fs.openSync(state, "r+");
      try {
        // The middle half: device state and section markers, which QEMU checks as it loads.
        fs.writeSync(fd, Buffer.alloc(Math.floor(size / 2), 0xa5), 0, Math.floor(size / 2), Math.floor(size / 4));
      } finally {
        fs.closeSync(fd);
      }
      execFileSync("touch", ["-r", reference, state]);
      fs.rmSync(reference);
      const damaged = fs.statSync(state, { bigint: true });
      assert.deepEqual([damaged.ino, damaged.size, damaged.mtimeNs], [before.ino, before.size, before.mtimeNs]);
    },
    (next, key) => {
      assert.equal(next.unusable?.key, key, `no fallback: ${JSON.stringify(next.lines)}`);
      assert.equal(next.unusable?.then, "booting cold", JSON.stringify(next.lines));
      assert.equal(next.restored, undefined, JSON.stringify(next.lines));
      assert.equal(next.built, undefined, JSON.stringify(next.lines));
      // The template was removed: the next create makes it.
      assert.equal(fs.existsSync(path.join(snapshots, key)), false);
    },
  );
});

test("every VM is gone once its sandbox stopped, template builders included; no temporary files are left", async () => {
  assert.ok(await eventually(() => processesOf(home).length === 0, 5000), `left running: ${processesOf(home).join(", ")}`);
  assert.deepEqual(leftovers(snapshots), []);
});
