// Run by install.sh, from a project that installed the packed tarballs: the
// CommonJS entry end to end. Prints `key: value` lines for the driver to check.
//   node cjs.cjs ROOTFS
const { InvalidOptionError, Sandbox } = require("microsandbox");
const provenance = require("./provenance.cjs");

async function main(rootfs) {
  console.log(`entry: ${require.resolve("microsandbox")}`);
  try {
    await Sandbox.create({ image: rootfs, cpu: 1 });
  } catch (err) {
    console.log(`unknown option: ${err instanceof InvalidOptionError ? `${err.code} ${err.field}` : err}`);
  }
  const sb = await Sandbox.create({ image: rootfs, name: "install-test-cjs" });
  for (const line of provenance(process.env.MSB_HOME)) console.log(line);
  console.log(`running: ${sb.running}`);
  const out = await sb.exec("echo", ["hello", "from", "require"]);
  console.log(`vm: ${out.stdout().trimEnd()}`);
  await sb.stopAndWait();
  console.log(`running after stop: ${sb.running}`);
}

main(process.argv[2]).catch((err) => {
  console.error(err);
  process.exit(1);
});
