// End to end: PythonSandbox and NodeSandbox on a Debian root with python3,
// nodejs and matplotlib. One sandbox per language serves every test in order
// (state carried between tests is part of what is checked), so the file boots
// two VMs in all.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { after, before, describe, test } from "node:test";

import {
  InterpreterFailedError,
  LimitExceededError,
  NodeSandbox,
  PythonSandbox,
  SandboxNotRunningError,
  type Execution,
} from "../ts/index";
import { isolatedHome, runnerRoot } from "./helpers";

const home = isolatedHome("runner");
const image = runnerRoot();
const MiB = 1024 * 1024;
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

after(() => {
  fs.rmSync(home, { recursive: true, force: true });
});

/** Aborts `controller` once the run has had time to start in the guest. */
function abortLater(controller: AbortController, ms: number): void {
  setTimeout(() => controller.abort(new Error("enough")), ms);
}

function assertOk(execution: Execution): void {
  assert.equal(execution.status, "ok", `${execution.exception?.traceback ?? ""}${execution.error()}`);
}

describe("PythonSandbox", () => {
  let sb: PythonSandbox;

  before(async () => {
    sb = await PythonSandbox.create({ name: "test", image });
  });

  after(async () => {
    await sb.stopAndWait();
  });

  test("the issue's example", async () => {
    await sb.run("name = 'Python'");
    const exec = await sb.run("print(f'Hello {name}!')");
    assert.equal(await exec.output(), "Hello Python!\n");
    assert.equal(exec.hasError(), false);
  });

  test("a variable, an import, a function and a file carry over three runs", async () => {
    assertOk(await sb.run("import json\ncount = 41\ndef bump(n):\n    return n + 1\nopen('/tmp/state.txt', 'w').write('kept')"));
    assertOk(await sb.run("count = bump(count)"));
    const exec = await sb.run("print(json.dumps({'count': count, 'file': open('/tmp/state.txt').read()}))");
    assert.deepEqual(JSON.parse(exec.output()), { count: 42, file: "kept" });
  });

  test("an exception comes with its traceback, and the state survives it", async () => {
    const exec = await sb.run("def fail():\n    raise ValueError('bad input')\nfail()");
    assert.equal(exec.status, "error");
    assert.equal(exec.hasError(), true);
    assert.equal(exec.exception?.name, "ValueError");
    assert.equal(exec.exception?.message, "bad input");
    assert.match(exec.exception!.traceback, /<cell \d+>", line 3, in <module>[\s\S]*in fail[\s\S]*ValueError: bad input/);
    assert.doesNotMatch(exec.exception!.traceback, /<string>/, "the driver's frames are left out");
    assert.equal((await sb.run("count")).value, "42");
  });

  test("a syntax error loses nothing", async () => {
    const exec = await sb.run("def broken(:\n    pass");
    assert.equal(exec.status, "error");
    assert.equal(exec.exception?.name, "SyntaxError");
    assert.match(exec.exception!.traceback, /def broken\(:/);
    assert.equal((await sb.run("count")).value, "42");
  });

  test("output without a trailing newline, on both streams, is the run's", async () => {
    const exec = await sb.run("import sys\nprint('no newline', end='')\nprint('warn', end='', file=sys.stderr)");
    assert.equal(exec.output(), "no newline");
    assert.equal(exec.error(), "warn");
    assert.equal(exec.status, "ok");
    assert.equal(exec.hasError(), true, "stderr output counts, as upstream");
    assert.equal((await sb.run("print('next')")).output(), "next\n");
  });

  test("a timeout interrupts `while True: pass` and the variables stay", async () => {
    const started = Date.now();
    const exec = await sb.run("while True:\n    pass", { timeout: 1500 });
    assert.equal(exec.status, "timeout");
    assert.equal(exec.exception?.name, "KeyboardInterrupt");
    assert.equal(exec.interpreterKilled, false);
    assert.ok(Date.now() - started < 5000, "interrupted promptly");
    assert.equal((await sb.run("count")).value, "42");
  });

  test("an AbortSignal interrupts a sleep and the variables stay", async () => {
    const controller = new AbortController();
    abortLater(controller, 1000);
    const exec = await sb.run("import time\ntime.sleep(60)", { signal: controller.signal });
    assert.equal(exec.status, "aborted");
    assert.equal(exec.exception?.name, "KeyboardInterrupt");
    assert.equal((await sb.run("count")).value, "42");
    const before = await sb.run("count", { signal: AbortSignal.abort() });
    assert.equal(before.status, "aborted", "a signal that fired before the run starts it not");
  });

  test("a matplotlib figure is a PNG result", async () => {
    const exec = await sb.run(
      "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()",
    );
    assertOk(exec);
    const pngs = exec.results.filter((r) => r.mime === "image/png");
    assert.equal(pngs.length, 1, JSON.stringify(exec.results.map((r) => r.mime)));
    assert.equal(pngs[0].kind, "display");
    const png = Buffer.from(pngs[0].data, "base64");
    assert.deepEqual(png.subarray(0, 8), PNG_MAGIC);
    assert.ok(png.length > 5000, `a plot, not an empty image (${png.length} bytes)`);
  });

  test("the trailing expression is the value; _repr_html_ adds HTML", async () => {
    assert.equal((await sb.run("[x * x for x in range(4)]")).value, "[0, 1, 4, 9]");
    assert.equal((await sb.run("x = 5")).results.length, 0, "a statement has no value");
    const exec = await sb.run("class Table:\n    def _repr_html_(self):\n        return '<b>hi</b>'\nTable()");
    assert.deepEqual(
      exec.results.filter((r) => r.mime === "text/html"),
      [{ kind: "value", mime: "text/html", data: "<b>hi</b>" }],
    );
  });

  test("unicode and 10 MiB of output in one run, streamed to onStdout", async () => {
    let streamed = 0;
    const exec = await sb.run("print('héllo ✓ 🐍')\nprint('y' * (10 * 1024 * 1024), end='')", {
      onStdout: (text) => (streamed += text.length),
    });
    const out = exec.output();
    assert.ok(out.startsWith("héllo ✓ 🐍\n"));
    assert.equal(exec.outputBytes().length, Buffer.byteLength("héllo ✓ 🐍\n") + 10 * MiB);
    assert.ok(/^y+$/.test(out.slice(out.indexOf("\n") + 1)));
    assert.equal(streamed, out.length);
  });

  test("two runs at once are served in the order asked", async () => {
    const first = sb.run("import time\ntime.sleep(0.5)\norder = ['first']");
    const second = sb.run("order.append('second')\nprint(order)");
    const [a, b] = await Promise.all([first, second]);
    assertOk(a);
    assert.equal(b.output(), "['first', 'second']\n");
  });

  test("output beyond maxOutputBytes rejects with LimitExceededError and the state stays", async () => {
    await assert.rejects(sb.run("while True:\n    print('z' * 1000)", { maxOutputBytes: 100_000 }), (err) => {
      assert.ok(err instanceof LimitExceededError);
      assert.equal(err.field, "maxOutputBytes");
      assert.equal(err.stdout?.length, 100_000);
      return true;
    });
    assert.equal((await sb.run("count")).value, "42");
  });

  test("restart() gives a fresh interpreter", async () => {
    await sb.run("before_restart = 1");
    await sb.restart();
    const exec = await sb.run("before_restart");
    assert.equal(exec.exception?.name, "NameError");
  });

  test("a snippet that ignores the interrupt is killed after 5 s, and the next run starts afresh", async () => {
    await sb.run("kept = 1");
    const started = Date.now();
    const exec = await sb.run("import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass", {
      timeout: 1000,
    });
    assert.equal(exec.status, "timeout");
    assert.equal(exec.interpreterKilled, true);
    const took = Date.now() - started;
    assert.ok(took >= 6000 && took < 15000, `timeout + grace, not more (${took} ms)`);
    assert.equal((await sb.run("kept")).exception?.name, "NameError");
    assert.equal((await sb.run("6 * 7")).value, "42");
  });

  test("garbage on the driver's channel kills the interpreter, not the sandbox", async () => {
    await sb.run("kept = 1");
    // The reply channel is one of the driver's descriptors; write garbage to every one that takes it.
    const hostile = "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'garbage\\n')\n    except OSError:\n        pass\nimport time\ntime.sleep(5)";
    await assert.rejects(sb.run(hostile), (err: unknown) => err instanceof InterpreterFailedError && err.code === "INTERPRETER_FAILED");
    assert.equal(sb.running, true);
    const exec = await sb.run("kept");
    assert.equal(exec.exception?.name, "NameError", "a fresh interpreter");
  });

  test("run on a stopped sandbox is a SandboxNotRunningError", async () => {
    await sb.stop();
    await assert.rejects(sb.run("print(1)"), SandboxNotRunningError);
  });
});

describe("NodeSandbox", () => {
  let sb: NodeSandbox;

  before(async () => {
    sb = await NodeSandbox.create({ name: "test", image });
  });

  after(async () => {
    await sb.stopAndWait();
  });

  test("the issue's example", async () => {
    await sb.run("var name = 'JavaScript'");
    const exec = await sb.run("console.log(`Hello ${name}!`)");
    assert.equal(await exec.output(), "Hello JavaScript!\n");
    assert.equal(exec.hasError(), false);
  });

  test("a variable, a module, a function and a file carry over three runs", async () => {
    assertOk(
      await sb.run(
        "const fs = require('fs')\nlet count = 41\nfunction bump(n) { return n + 1 }\nfs.writeFileSync('/tmp/state.txt', 'kept')",
      ),
    );
    assertOk(await sb.run("count = bump(count)"));
    const exec = await sb.run("console.log(JSON.stringify({ count, file: fs.readFileSync('/tmp/state.txt', 'utf8') }))");
    assert.deepEqual(JSON.parse(exec.output()), { count: 42, file: "kept" });
  });

  test("an exception comes with its stack, and the state survives it", async () => {
    const exec = await sb.run("function fail() {\n  throw new TypeError('bad input')\n}\nfail()");
    assert.equal(exec.status, "error");
    assert.equal(exec.exception?.name, "TypeError");
    assert.equal(exec.exception?.message, "bad input");
    assert.match(exec.exception!.traceback, /TypeError: bad input\n\s+at fail \(<cell \d+>:2:9\)/);
    assert.doesNotMatch(exec.exception!.traceback, /\[eval\]/, "the driver's frames are left out");
    assert.equal((await sb.run("count")).value, "42");
  });

  test("a syntax error loses nothing", async () => {
    const exec = await sb.run("function (");
    assert.equal(exec.exception?.name, "SyntaxError");
    assert.equal((await sb.run("count")).value, "42");
  });

  test("output without a trailing newline is the run's", async () => {
    const exec = await sb.run("process.stdout.write('no newline'); process.stderr.write('warn'); undefined");
    assert.equal(exec.output(), "no newline");
    assert.equal(exec.error(), "warn");
    const child = await sb.run("require('child_process').execSync('printf child', { stdio: 'inherit' }); undefined");
    assert.equal(child.output(), "child", "a child's output through fd 1 is the run's too");
    // More than a pipe holds, written while the driver is busy in execSync: nothing blocks, nothing is lost.
    const flood = await sb.run("require('child_process').execSync(\"head -c 300000 /dev/zero | tr '\\\\0' x\", { stdio: 'inherit' }); undefined");
    assert.equal(flood.output(), "x".repeat(300000));
  });

  test("a timeout interrupts `while (true) {}` and the variables stay", async () => {
    const exec = await sb.run("while (true) {}", { timeout: 1500 });
    assert.equal(exec.status, "timeout");
    assert.equal(exec.interpreterKilled, false);
    assert.equal((await sb.run("count")).value, "42");
  });

  test("an AbortSignal interrupts a pending promise and the variables stay", async () => {
    const controller = new AbortController();
    abortLater(controller, 1000);
    const exec = await sb.run("new Promise(() => {})", { signal: controller.signal });
    assert.equal(exec.status, "aborted");
    assert.equal((await sb.run("count")).value, "42");
  });

  test("the trailing expression is the value; a promise is awaited", async () => {
    assert.equal((await sb.run("({ a: [1, 2], b: 'x' })")).value, "{ a: [ 1, 2 ], b: 'x' }");
    assert.equal((await sb.run("Promise.resolve(6 * 7)")).value, "42");
    assert.equal((await sb.run("let unused = 1")).results.length, 0);
  });

  test("unicode and 10 MiB of output in one run", async () => {
    const exec = await sb.run("console.log('héllo ✓ 🐍'); process.stdout.write('y'.repeat(10 * 1024 * 1024)); undefined");
    assert.equal(exec.outputBytes().length, Buffer.byteLength("héllo ✓ 🐍\n") + 10 * MiB);
    assert.ok(exec.output().startsWith("héllo ✓ 🐍\ny"));
  });

  test("two runs at once are served in the order asked", async () => {
    const first = sb.run("var order = []; const until = Date.now() + 500; while (Date.now() < until) {} order.push('first')");
    const second = sb.run("order.push('second'); console.log(order.join(','))");
    const [, b] = await Promise.all([first, second]);
    assert.equal(b.output(), "first,second\n");
  });

  test("run on a stopped sandbox is a SandboxNotRunningError", async () => {
    await sb.stop();
    await assert.rejects(sb.run("1"), SandboxNotRunningError);
  });
});

describe("warm pools of code runners", () => {
  for (const [label, runner, code, setState, readState] of [
    ["PythonSandbox", PythonSandbox, "x = 41\nx + 1", "state = 'mine'", "print(globals().get('state'))"],
    ["NodeSandbox", NodeSandbox, "var x = 41; x + 1", "var state = 'mine'", "console.log(typeof state === 'undefined' ? 'None' : state)"],
  ] as const) {
    test(`${label}.prewarm: an equal create takes a sandbox whose interpreter runs; each taken one has its own`, async () => {
      const options = { image, env: { POOL: label } };
      const pool = await runner.prewarm({ ...options, count: 1 });
      try {
        assert.equal(pool.available, 1);
        const first = await runner.create(options);
        assert.ok(first instanceof runner);
        assert.equal(pool.available, 0, "the create did not take from the pool");
        const value = await first.run(code);
        assertOk(value);
        assert.deepEqual(
          value.results.map((r) => r.data),
          ["42"],
        );
        assertOk(await first.run(setState));
        // The replacement is a machine and an interpreter of its own.
        await pool.filled();
        assert.equal(pool.available, 1, String(pool.lastError));
        const second = await runner.create(options);
        assert.notEqual(second.name, first.name);
        assert.equal((await second.run(readState)).output(), "None\n");
        assert.equal((await first.run(readState)).output(), "mine\n");
        await Promise.all([first.stopAndWait(), second.stopAndWait()]);
      } finally {
        await pool.close();
      }
    });
  }
});
