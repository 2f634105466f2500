// The CLI's pure parts, without a VM: the Sandboxfile parser, flag value
// parsers, the short bins' expansions and the error line.
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";

import { InvalidArgumentError } from "commander";

import { ImageNotFoundError } from "../ts/index";
import { CliError, reportError, UsageError } from "../ts/cli/errors";
import { defaultCommandName } from "../ts/cli/install";
import { envPair, portPair, secretPair } from "../ts/cli/parse";
import { parseSandboxfile, TEMPLATE } from "../ts/cli/sandboxfile";
import { msi, msr, msx } from "../ts/cli/shortcuts";

function invalid(text: string): string {
  try {
    parseSandboxfile(text, "Sandboxfile");
  } catch (err) {
    assert.ok(err instanceof CliError);
    assert.equal(err.code, "SANDBOXFILE_INVALID");
    return err.message;
  }
  assert.fail(`parsed: ${text}`);
}

test("a Sandboxfile parses into typed sandboxes; the template is an empty project", () => {
  assert.deepEqual(parseSandboxfile(TEMPLATE, "Sandboxfile").sandboxes, {});
  assert.deepEqual(parseSandboxfile("", "Sandboxfile").sandboxes, {});
  const project = parseSandboxfile(
    [
      "sandboxes:",
      "  app:",
      "    image: python:3.12",
      "    cpus: 2",
      "    memory: 1024",
      "    env: { DEBUG: 1, NAME: x }",
      "    workdir: /app",
      '    ports: ["8080:80"]',
      "    network: none",
      "    scripts:",
      "      start: python3 app.py",
    ].join("\n"),
    "Sandboxfile",
  );
  assert.deepEqual(project.sandboxes.app, {
    image: "python:3.12",
    cpus: 2,
    memory: 1024,
    env: { DEBUG: "1", NAME: "x" },
    workdir: "/app",
    ports: { 8080: 80 },
    network: "none",
    scripts: { start: "python3 app.py" },
  });
});

test("Sandboxfile errors name the line and the key", () => {
  assert.match(invalid("sandbox:\n  app: {}\n"), /^Sandboxfile:1: unknown key "sandbox"/);
  assert.match(invalid("sandboxes:\n  app:\n    cpus: 1\n"), /^Sandboxfile:3: sandboxes\.app: image is required/);
  assert.match(invalid("sandboxes:\n  app:\n    image: x\n    cpus: 0\n"), /^Sandboxfile:4: sandboxes\.app\.cpus must be a whole number from 1 to 64/);
  assert.match(invalid("sandboxes:\n  app:\n    image: x\n    network: open\n"), /^Sandboxfile:4: sandboxes\.app\.network must be/);
  assert.match(invalid("sandboxes:\n  app:\n    image: x\n    ports: [8080]\n"), /^Sandboxfile:4: sandboxes\.app\.ports: "8080" is not HOST:GUEST/);
  assert.match(invalid("sandboxes:\n  app:\n    image: x\n    scripts:\n      start: [a]\n"), /^Sandboxfile:5: sandboxes\.app\.scripts\.start must be a non-empty string/);
  assert.match(invalid("sandboxes:\n  ../x:\n    image: x\n"), /^Sandboxfile:2: "\.\.\/x" is not a sandbox name/);
  assert.match(invalid("sandboxes:\n  app:\n    image: x\n    image: y\n"), /^Sandboxfile:4: /);
  assert.match(invalid("sandboxes: [\n"), /^Sandboxfile:\d+: /);
});

test("flag values parse into the SDK's option shapes; malformed ones are usage errors", () => {
  const env = envPair({ HOME_VAR: "from-here" });
  assert.deepEqual(env("B=x=y", env("A=1")), { A: "1", B: "x=y" });
  assert.deepEqual(env("HOME_VAR"), { HOME_VAR: "from-here" });
  assert.throws(() => env("UNSET_VAR"), InvalidArgumentError);
  assert.throws(() => env("=x"), InvalidArgumentError);
  assert.deepEqual(portPair("0:80", portPair("8080:80")), { 0: 80, 8080: 80 });
  assert.throws(() => portPair("80"), InvalidArgumentError);
  const secret = secretPair({ TOKEN: "t0ken" });
  assert.deepEqual(secret("KEY=a@b@api.example.com"), { KEY: { value: "a@b", domain: "api.example.com" } });
  assert.deepEqual(secret("TOKEN@*.example.com"), { TOKEN: { value: "t0ken", domain: "*.example.com" } });
  assert.throws(() => secret("KEY=value"), InvalidArgumentError);
  assert.throws(() => secret("MISSING@x.example"), InvalidArgumentError);
});

test("the short bins expand to msb command lines", () => {
  assert.deepEqual(msr.expand(["app~test", "-k", "x"]), ["run", "--sandbox", "app~test", "--", "-k", "x"]);
  assert.deepEqual(msx.expand(["alpine", "ls", "-l"]), ["run", "--rm", "alpine", "--", "ls", "-l"]);
  assert.deepEqual(msi.expand(["python:3.12"]), ["install", "python:3.12"]);
  assert.deepEqual(msi.expand(["python:3.12", "py"]), ["install", "--name", "py", "python:3.12"]);
  assert.equal(defaultCommandName("registry:5000/team/python:3.12"), "python");
  assert.equal(defaultCommandName("alpine@sha256:abc"), "alpine");
  assert.equal(defaultCommandName("/srv/roots/busybox/"), "busybox");
});

test("an error is one line with its code; usage errors exit 2, --debug adds the cause chain", () => {
  const capture = () => {
    const stream = new PassThrough();
    let text = "";
    stream.on("data", (chunk) => (text += chunk));
    return { stream, text: () => text };
  };
  const sdk = capture();
  assert.equal(reportError(new ImageNotFoundError("no image at /x\nsecond line"), sdk.stream, false), 1);
  assert.equal(sdk.text(), "msb: no image at /x; second line (IMAGE_NOT_FOUND)\n");
  const usage = capture();
  assert.equal(reportError(new UsageError("IMAGE is required"), usage.stream, false), 2);
  assert.equal(usage.text(), "msb: IMAGE is required (USAGE)\n");
  const debug = capture();
  reportError(new Error("outer", { cause: new Error("inner") }), debug.stream, true);
  assert.match(debug.text(), /^msb: outer \(INTERNAL\)\nError: outer\n.*caused by: Error: inner/s);
});
