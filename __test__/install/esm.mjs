// Run by install.sh, from a project that installed the packed tarballs: the ES
// module entry end to end. Prints `key: value` lines for the driver to check.
//   node esm.mjs ROOTFS
import { createRequire } from "node:module";

import * as esm from "microsandbox";
import { Image, Patch, Sandbox } from "microsandbox";

const require = createRequire(import.meta.url);
const cjs = require("microsandbox");
const provenance = require("./provenance.cjs");
const [rootfs] = process.argv.slice(2);

const names = (module) => Object.keys(module).filter((n) => n !== "default" && n !== "__esModule").sort().join(" ");
console.log(`entry: ${import.meta.resolve("microsandbox")}`);
console.log(`exports: ${names(esm) === names(cjs) ? "same as require" : `import [${names(esm)}] require [${names(cjs)}]`}`);
console.log(`one Sandbox class: ${Sandbox === cjs.Sandbox}`);
console.log(`Image.list: ${typeof Image.list}`);

const sb = await Sandbox.create({ image: rootfs, patches: [Patch.text("/etc/greeting", "patched in\n")] });
try {
  for (const line of provenance(process.env.MSB_HOME)) console.log(line);
  const out = await sb.shell("echo hello from $(uname -s) in the VM; cat /etc/greeting");
  for (const line of out.stdout().trimEnd().split("\n")) console.log(`vm: ${line}`);
  console.log(`code: ${out.code}`);
} finally {
  await sb.stopAndWait();
}
