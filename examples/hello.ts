// The demo the README's first command runs: boot a VM from a Debian root with
// python3, run a shell line and Python inside it, stop it.
//   node dist/examples/hello.js /path/to/rootfs
// In your own code: import { Sandbox } from "microsandbox";
import { Sandbox } from "../ts/index";

async function main(image: string): Promise<void> {
  const started = Date.now();
  const sb = await Sandbox.create({ name: "hello", image, cpus: 1, memoryMib: 512, env: { GREETING: "hi" } });
  console.log(`sandbox ${sb.name} ready in ${Date.now() - started} ms (${sb.bootInfo.accel})`);

  const out = await sb.shell("echo $GREETING from $(uname -r); python3 -c 'import platform; print(6*7, platform.python_version())'");
  process.stdout.write(out.stdout());
  process.stderr.write(out.stderr());

  const r = await sb.exec("sh", ["-c", "exit 3"]);
  console.log(`exit code ${r.code}, success ${r.success}`);

  await sb.stopAndWait();
  console.log("stopped");
}

const image = process.argv[2];
if (!image) {
  console.error("usage: node dist/examples/hello.js ROOTFS_DIR");
  process.exit(2);
}
main(image).catch((err) => {
  console.error(err);
  process.exit(1);
});
