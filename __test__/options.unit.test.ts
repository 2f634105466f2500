// Unit tests of the TypeScript layer: no VM, no addon calls.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  BootFailedError,
  CommandNotFoundError,
  ExecFailedError,
  InternalError,
  InvalidOptionError,
  MicrosandboxError,
  SecretViolationError,
} from "../ts/index";
import { fromNative, unwrap } from "../ts/errors";
import { checkArgs, checkExecOptions, checkSandboxOptions } from "../ts/options";

describe("option shapes", () => {
  const field = (fn: () => void): string | undefined => {
    try {
      fn();
    } catch (err) {
      assert.ok(err instanceof InvalidOptionError);
      return err.field;
    }
    assert.fail("expected an InvalidOptionError");
  };

  test("a well-formed options object passes", () => {
    checkSandboxOptions({ image: "/r", name: "a", cpus: 2, memoryMib: 256, env: { A: "b" }, workdir: "/" });
    checkExecOptions({ cwd: "/tmp", env: {} });
    checkArgs("ls", ["-l"]);
  });

  test("unknown keys and wrong types name their field", () => {
    assert.equal(field(() => checkSandboxOptions({ image: "/r", cpu: 1 })), "cpu");
    assert.equal(field(() => checkSandboxOptions({ image: 5 })), "image");
    assert.equal(field(() => checkSandboxOptions({ image: "/r", env: ["A=b"] })), "env");
    assert.equal(field(() => checkSandboxOptions({})), "image");
    assert.equal(field(() => checkSandboxOptions(null)), "options");
    assert.equal(field(() => checkExecOptions({ timeOut: 5 })), "timeOut");
    assert.equal(field(() => checkExecOptions({ timeout: -1 })), "timeout");
    assert.equal(field(() => checkExecOptions({ stdin: 5 })), "stdin");
    assert.equal(field(() => checkExecOptions({ tty: { cols: 1.5, rows: 2 } })), "tty");
    assert.equal(field(() => checkArgs("ls", "-l")), "args");
    assert.equal(field(() => checkArgs(undefined, [])), "command");
  });

  test("secretEnv and network.tls shapes name their field", () => {
    const secret = { value: "sk-1", domain: "api.example.com" };
    checkSandboxOptions({
      image: "/r",
      secretEnv: { K: { ...secret, domains: ["*.example.com"], onViolation: "block", requireTls: true } },
      network: { tls: { intercept: "all", bypassDomains: ["x.example"], caCertificates: ["pem"] } },
    });
    assert.equal(field(() => checkSandboxOptions({ image: "/r", secretEnv: { K: "sk-1" } })), "secretEnv.K");
    assert.equal(field(() => checkSandboxOptions({ image: "/r", secretEnv: { K: { domain: "a.example" } } })), "secretEnv.K.value");
    assert.equal(field(() => checkSandboxOptions({ image: "/r", secretEnv: { K: { ...secret, domains: "a" } } })), "secretEnv.K.domains");
    assert.equal(field(() => checkSandboxOptions({ image: "/r", secretEnv: { K: { ...secret, onViolation: 1 } } })), "secretEnv.K.onViolation");
    assert.equal(field(() => checkSandboxOptions({ image: "/r", secretEnv: { K: { ...secret, domian: "x" } } })), "secretEnv.K.domian");
    assert.equal(field(() => checkSandboxOptions({ image: "/r", network: { tls: { intercept: 3 } } })), "network.tls.intercept");
    assert.equal(field(() => checkSandboxOptions({ image: "/r", network: { tls: { caCerts: [] } } })), "network.tls.caCerts");
    assert.equal(field(() => checkSandboxOptions({ image: "/r", network: { tls: "all" } })), "network.tls");
  });
});

describe("engine errors become typed classes", () => {
  test("each code maps to its class, keeping the details", () => {
    const invalid = fromNative({ code: "INVALID_OPTION", message: "cpus: bad", field: "cpus" });
    assert.ok(invalid instanceof InvalidOptionError && invalid instanceof MicrosandboxError);
    assert.equal(invalid.field, "cpus");
    assert.equal(invalid.code, "INVALID_OPTION");
    assert.equal(invalid.name, "InvalidOptionError");

    const boot = fromNative({ code: "BOOT_FAILED", message: "no", consoleTail: "Kernel panic" });
    assert.ok(boot instanceof BootFailedError);
    assert.equal(boot.consoleTail, "Kernel panic");

    const exec = fromNative({ code: "EXEC_FAILED", message: "denied", errno: 13 });
    assert.ok(exec instanceof ExecFailedError);
    assert.equal(exec.errno, 13);

    assert.ok(fromNative({ code: "COMMAND_NOT_FOUND", message: "x" }) instanceof CommandNotFoundError);
    const violation = fromNative({ code: "SECRET_VIOLATION", message: "secret K" });
    assert.ok(violation instanceof SecretViolationError);
    assert.equal(violation.code, "SECRET_VIOLATION");
    const unknown = fromNative({ code: "SOMETHING_NEW", message: "x" });
    assert.ok(unknown instanceof InternalError);
    assert.match(unknown.message, /SOMETHING_NEW/);
  });

  test("unwrap passes values through and throws failures", () => {
    const value = { stdout: "x" };
    assert.equal(unwrap(value), value);
    assert.throws(
      () => unwrap({ failure: { code: "COMMAND_NOT_FOUND", message: "nope" } }),
      CommandNotFoundError,
    );
  });
});
