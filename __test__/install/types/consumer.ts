// A consumer of the published typings: types.sh installs the packed tarballs
// into an empty project and type-checks this file (as .ts, .mts and .cts) under
// each module setting with `--strict` and without skipLibCheck. Every
// `@ts-expect-error` must stay an error: typings that degrade to `any` fail.
import { expectTypeOf } from "expect-type";
import {
  ExecHandle,
  ExecOutput,
  Image,
  InvalidOptionError,
  MicrosandboxError,
  Patch,
  Sandbox,
  SandboxFs,
  type ErrorCode,
  type ExecEvent,
  type ExecOptions,
  type ExitEvent,
  type ImageInfo,
  type SandboxOptions,
} from "microsandbox";

export async function useTheApi(image: string): Promise<void> {
  const options = {
    image,
    name: "consumer",
    cpus: 1,
    memoryMib: 512,
    env: { A: "b" },
    patches: [Patch.text("/etc/app.conf", "x=1\n"), Patch.mkdir("/data", { mode: 0o700 })],
    network: { policy: "none" },
  } satisfies SandboxOptions;
  await using sb = await Sandbox.create(options);
  expectTypeOf(sb).toEqualTypeOf<Sandbox>();
  expectTypeOf(sb.name).toBeString();
  expectTypeOf(sb.running).toBeBoolean();

  const out = await sb.exec("ls", ["-l"], { cwd: "/tmp", user: "nobody", timeout: 5000, stdin: "input" });
  expectTypeOf(out).toEqualTypeOf<ExecOutput>();
  expectTypeOf(out.code).toEqualTypeOf<number | null>();
  expectTypeOf(out.stdout()).toBeString();
  expectTypeOf(out.stdoutBytes()).toEqualTypeOf<Buffer>();
  expectTypeOf(out.success).toBeBoolean();

  const handle = await sb.shellStream("make 2>&1", { tty: true, stdin: "pipe" });
  expectTypeOf(handle).toEqualTypeOf<ExecHandle>();
  await handle.stdin?.write("input\n");
  for await (const event of handle) {
    expectTypeOf(event).toEqualTypeOf<ExecEvent>();
    if (event.eventType === "exited") {
      expectTypeOf(event).toEqualTypeOf<ExitEvent>();
      expectTypeOf(event.code).toEqualTypeOf<number | null>();
      // @ts-expect-error: an exited event carries no data
      void event.data;
    } else {
      expectTypeOf(event.data).toEqualTypeOf<Buffer>();
    }
  }
  expectTypeOf(handle.wait()).resolves.toEqualTypeOf<ExitEvent>();

  const fs = sb.fs();
  expectTypeOf(fs).toEqualTypeOf<SandboxFs>();
  expectTypeOf(fs.read("/etc/hostname")).resolves.toEqualTypeOf<Buffer>();
  expectTypeOf(fs.write("/app/data.json", "{}")).resolves.toBeNumber();
  expectTypeOf(fs.readStream("/big.bin")).toExtend<NodeJS.ReadableStream>();

  expectTypeOf(Image.list()).resolves.toEqualTypeOf<ImageInfo[]>();
  expectTypeOf<ImageInfo["pulledAt"]>().toEqualTypeOf<Date>();

  try {
    await Sandbox.create({ image });
  } catch (err) {
    if (err instanceof InvalidOptionError) {
      expectTypeOf(err.field).toEqualTypeOf<string | undefined>();
    }
    if (err instanceof MicrosandboxError) {
      expectTypeOf(err.code).toEqualTypeOf<ErrorCode>();
    }
  }
}

export async function misuse(image: string, sb: Sandbox): Promise<void> {
  await Sandbox.create({
    image,
    // @ts-expect-error: `cpu` is not an option (it is `cpus`)
    cpu: 2,
  });
  await Sandbox.create({
    image,
    // @ts-expect-error: memoryMib is a number
    memoryMib: "512",
  });
  // @ts-expect-error: image is required
  await Sandbox.create({ cpus: 1 });
  // @ts-expect-error: the constructor is private; Sandbox.create boots one
  new Sandbox();
  const options: ExecOptions = {
    // @ts-expect-error: a timeout is milliseconds, a number
    timeout: "5s",
  };
  await sb.exec("true", [], options);
  // @ts-expect-error: args are an array of strings
  await sb.exec("ls", "-l");
  // @ts-expect-error: ExecOutput holds output as Buffers, not strings
  new ExecOutput(0, null, "out", Buffer.alloc(0), null);
  const patch: Patch = {
    kind: "text",
    path: "/etc/app.conf",
    // @ts-expect-error: a patch's content is a Buffer (Patch.text converts strings)
    content: "x=1\n",
  };
  void patch;
}
