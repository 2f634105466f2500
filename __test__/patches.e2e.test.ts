// End to end: scripts and patches change a sandbox's root before create()
// resolves, are visible in the guest, and never reach the image or another
// sandbox of the same image.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";

import { InvalidOptionError, Patch, Sandbox } from "../ts/index";
import { busyboxRoot, isolatedHome, processesOf } from "./helpers";

const home = isolatedHome("patches");
const hostDir = fs.mkdtempSync(path.join(os.tmpdir(), "msb-patch-host-"));
let root: string;

before(() => {
  root = busyboxRoot();
});

after(() => {
  fs.rmSync(home, { recursive: true, force: true });
  fs.rmSync(hostDir, { recursive: true, force: true });
});

function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, entry.name);
      const stat = fs.lstatSync(full);
      out.push(`${path.relative(dir, full)} ${stat.mode} ${stat.size} ${stat.mtimeMs}`);
      if (entry.isDirectory()) walk(full);
    }
  };
  walk(dir);
  return out.sort();
}

describe("scripts", () => {
  test("are executable files in /.msb/scripts and run by name", async () => {
    const sb = await Sandbox.create({
      image: root,
      scripts: { setup: "#!/bin/sh\necho \"set up $1 as $(id -un)\"\n", "report.sh": "#!/bin/sh\necho report\n" },
    });
    try {
      assert.equal((await sb.shell("setup web")).stdout(), "set up web as root\n");
      assert.equal((await sb.exec("report.sh")).stdout(), "report\n");
      assert.equal((await sb.exec("stat", ["-c", "%a", "/.msb/scripts/setup"])).stdout(), "755\n");
    } finally {
      await sb.stopAndWait();
    }
  });
});

describe("patches", () => {
  test("are applied in the guest and absent from a second sandbox of the same image", async () => {
    const tool = path.join(hostDir, "tool");
    fs.writeFileSync(tool, "#!/bin/sh\necho copied tool\n", { mode: 0o755 });
    const before = snapshot(root);

    const patched = await Sandbox.create({
      image: root,
      patches: [
        Patch.text("/etc/app/config.ini", "answer=42\n", { mode: 0o600 }),
        Patch.mkdir("/srv/data", { mode: 0o700 }),
        Patch.append("/etc/passwd", "app:x:1000:1000::/home/app:/bin/sh\n"),
        Patch.copy(tool, "/opt/bin/tool"),
        // The image's /usr/bin is a symlink to /bin: the patch follows it, as the guest would.
        Patch.text("/usr/bin/greet", "#!/bin/sh\necho greetings\n", { mode: 0o755 }),
      ],
    });
    const plain = await Sandbox.create({ image: root });
    try {
      const check = await patched.shell(
        "cat /etc/app/config.ini; stat -c '%a' /etc/app/config.ini /srv/data; id -u app; /opt/bin/tool; greet; ls /bin/greet",
      );
      assert.equal(check.stderr(), "");
      assert.equal(check.stdout(), "answer=42\n600\n700\n1000\ncopied tool\ngreetings\n/bin/greet\n");
      // The original passwd content is still there, the line was appended.
      assert.match(await patched.fs().readString("/etc/passwd"), /^root:x:0:0:.*\napp:x:1000/s);

      const absent = await plain.shell(
        "ls /etc/app /srv/data /opt/bin/tool /bin/greet 2>&1; grep -c '^app:' /etc/passwd",
      );
      assert.match(absent.stdout(), /No such file or directory[\s\S]*No such file[\s\S]*No such file[\s\S]*No such file/);
      assert.match(absent.stdout(), /\n0\n$/);
    } finally {
      await Promise.all([patched.stopAndWait(), plain.stopAndWait()]);
    }
    assert.deepEqual(snapshot(root), before, "the image directory changed");
  });

  const invalid: Array<[string, Patch[], string, RegExp]> = [
    ["a relative path", [Patch.text("etc/x", "x")], "patches[0]", /absolute/],
    ["a file's parent that is a file in the image", [Patch.text("/etc/passwd/x", "x")], "patches[0]", /is a file/],
    ["a parent that an earlier patch made a file", [Patch.text("/opt/a", "x"), Patch.mkdir("/opt/a/b")], "patches[1]", /is a file/],
    ["a file over an image directory", [Patch.text("/etc", "x")], "patches[0]", /is a directory/],
    ["a missing host path", [Patch.copy("/no/such/host/file", "/x")], "patches[0]", /\/no\/such\/host\/file/],
  ];
  for (const [label, patches, field, problem] of invalid) {
    test(`${label} is rejected before any VM starts`, async () => {
      await assert.rejects(Sandbox.create({ image: root, patches }), (err: unknown) => {
        assert.ok(err instanceof InvalidOptionError, String(err));
        assert.equal(err.field, field);
        assert.match(err.message, problem);
        return true;
      });
      assert.deepEqual(processesOf(home), []);
      assert.deepEqual(fs.readdirSync(path.join(home, "sandboxes"), { withFileTypes: true }).length, 0);
    });
  }

  test("bad script names are rejected", async () => {
    await assert.rejects(Sandbox.create({ image: root, scripts: { "a/b": "x" } }), (err: unknown) => {
      assert.ok(err instanceof InvalidOptionError);
      assert.equal(err.field, "scripts.a/b");
      return true;
    });
  });
});
