// Unit tests of the warm pool's bookkeeping (ts/pool.ts): which creates a pool
// serves, how it replaces what is taken, and what it stops. The sandboxes are
// stand-ins for the addon's handles; __test__/pool.e2e.test.ts boots real ones.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { InvalidOptionError } from "../ts/index";
import type { Native } from "../ts/native";
import { splitPrewarmOptions, takePooled, WarmPool, type Pooled, type PrewarmOptions } from "../ts/pool";

/** A stand-in for a booted sandbox: running until `die`, recording claims and stops. */
class FakeSandbox {
  running = true;
  claims = 0;
  stops = 0;
  constructor(readonly id: number) {}
  async claim(): Promise<null> {
    this.claims += 1;
    return null;
  }
  async stopAndWait(): Promise<object> {
    this.stops += 1;
    this.running = false;
    return {};
  }
}

/** A boot function handing out FakeSandboxes in order; `failNext` makes the next boots reject. */
function booter() {
  const booted: FakeSandbox[] = [];
  const state = { failNext: 0, inFlight: 0, maxInFlight: 0 };
  const boot = async (): Promise<Pooled> => {
    state.inFlight += 1;
    state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
    await new Promise((resolve) => setTimeout(resolve, 20));
    state.inFlight -= 1;
    if (state.failNext > 0) {
      state.failNext -= 1;
      throw new Error("boot failed");
    }
    const sandbox = new FakeSandbox(booted.length);
    booted.push(sandbox);
    return { value: sandbox, handle: sandbox as unknown as Native.NativeSandbox };
  };
  return { boot, booted, state };
}

async function pool(size: number, image: string, boot: () => Promise<Pooled>, env?: Record<string, string>) {
  const made = new WarmPool("sandbox", size, { image, env }, boot);
  await made.fill();
  return made;
}

describe("warm pool", () => {
  test("serves only creates whose options equal its own, apart from onProgress", async () => {
    const { boot, booted } = booter();
    const env = { A: "1" };
    const made = await pool(1, "/equal", boot, env);
    try {
      env.A = "changed after prewarm";
      assert.equal(await takePooled("sandbox", { image: "/equal", env: { A: "2" } }), undefined);
      assert.equal(await takePooled("sandbox", { image: "/equal" }), undefined);
      assert.equal(await takePooled("sandbox", { image: "/other", env: { A: "1" } }), undefined);
      const taken = await takePooled("sandbox", { image: "/equal", env: { A: "1" }, onProgress: () => {}, workdir: undefined });
      assert.equal(taken, booted[0]);
      assert.equal(booted[0]!.claims, 1);
    } finally {
      await made.close();
    }
  });

  test("serves only its own kind: a code runner's pool is not a plain sandbox's", async () => {
    const { boot, booted } = booter();
    const made = new WarmPool("python", 1, { image: "/kind" }, boot);
    await made.fill();
    try {
      assert.equal(await takePooled("sandbox", { image: "/kind" }), undefined);
      assert.equal(await takePooled("python", { image: "/kind" }), booted[0]);
    } finally {
      await made.close();
    }
  });

  test("replaces what is taken a second later, never holding more than its size", async () => {
    const { boot, booted, state } = booter();
    const made = await pool(2, "/refill", boot);
    try {
      assert.equal(made.available, 2);
      const first = await takePooled("sandbox", { image: "/refill" });
      const second = await takePooled("sandbox", { image: "/refill" });
      assert.deepEqual([first, second], [booted[0], booted[1]]);
      // Empty now: the replacements wait out their delay, and a create boots as usual.
      assert.equal(await takePooled("sandbox", { image: "/refill" }), undefined);
      assert.equal(booted.length, 2, "a replacement booted before its delay");
      await made.filled();
      assert.equal(made.available, 2);
      assert.equal(booted.length, 4);
      assert.ok(state.maxInFlight <= 2, `${state.maxInFlight} boots at once`);
    } finally {
      await made.close();
    }
  });

  test("skips and stops a sandbox whose VM ended while it waited", async () => {
    const { boot, booted } = booter();
    const made = await pool(2, "/dead", boot);
    try {
      booted[0]!.running = false;
      assert.equal(made.available, 1);
      const taken = await takePooled("sandbox", { image: "/dead" });
      assert.equal(taken, booted[1]);
      assert.equal(booted[0]!.stops, 1);
      assert.equal(booted[0]!.claims, 0);
      await made.filled();
      assert.equal(made.available, 2);
    } finally {
      await made.close();
    }
  });

  test("a failed replacement is reported and tried again at the next take", async () => {
    const { boot, state } = booter();
    const made = await pool(1, "/retry", boot);
    try {
      state.failNext = 1;
      assert.notEqual(await takePooled("sandbox", { image: "/retry" }), undefined);
      await made.filled();
      assert.equal(made.available, 0);
      assert.match(made.lastError?.message ?? "", /boot failed/);
      // Nothing to take, but the take starts the missing boot.
      assert.equal(await takePooled("sandbox", { image: "/retry" }), undefined);
      await made.filled();
      assert.equal(made.available, 1);
    } finally {
      await made.close();
    }
  });

  test("a failed first fill stops what did boot and serves nothing", async () => {
    const { boot, booted, state } = booter();
    state.failNext = 1;
    const made = new WarmPool("sandbox", 3, { image: "/fill" }, boot);
    await assert.rejects(made.fill(), /boot failed/);
    assert.equal(booted.length, 2);
    assert.deepEqual(
      booted.map((s) => s.stops),
      [1, 1],
    );
    assert.equal(await takePooled("sandbox", { image: "/fill" }), undefined);
  });

  test("close stops what was not taken, at once, and boots no more", async () => {
    const { boot, booted } = booter();
    const made = await pool(2, "/close", boot);
    const taken = (await takePooled("sandbox", { image: "/close" })) as unknown as FakeSandbox;
    const started = Date.now();
    await made.close();
    assert.ok(Date.now() - started < 500, "close waited out the replacement's delay");
    assert.equal(booted.length, 2, "a replacement booted after close");
    assert.deepEqual(
      booted.map((s) => s.stops),
      [taken === booted[0] ? 0 : 1, taken === booted[1] ? 0 : 1],
    );
    assert.equal(made.available, 0);
    assert.equal(await takePooled("sandbox", { image: "/close" }), undefined);
    await made.close();
  });

  test("count is an integer from 1 to 32; replace and onProgress are not prewarm's", () => {
    const field = (options: unknown): string | undefined => {
      try {
        splitPrewarmOptions(options as PrewarmOptions);
      } catch (err) {
        assert.ok(err instanceof InvalidOptionError);
        return err.field;
      }
      return undefined;
    };
    for (const count of [0, 1.5, 33, -1, "2", undefined]) assert.equal(field({ image: "/r", count }), "count");
    assert.equal(field({ image: "/r", count: 2, replace: true }), "replace");
    assert.equal(field({ image: "/r", count: 2, onProgress: () => {} }), "onProgress");
    assert.equal(field(null), "options");
    assert.deepEqual(splitPrewarmOptions({ image: "/r", count: 32, cpus: 2 }), {
      count: 32,
      sandbox: { image: "/r", cpus: 2 },
    });
  });
});
