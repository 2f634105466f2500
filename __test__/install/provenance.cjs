// Which files a program that uses the SDK runs, for install.sh to compare with
// the installed packages: `addon: <path>` for each loaded .node file,
// `runtime: <exe>` for each sandbox runtime and `kernel: <path>` for each VM.
// Sandbox processes are told apart by MSB_HOME, which the runtime and QEMU
// inherit from the program.
const fs = require("node:fs");

module.exports = function provenance(home) {
  const lines = Object.keys(require.cache)
    .filter((file) => file.endsWith(".node"))
    .map((file) => `addon: ${file}`);
  const marker = Buffer.from(`MSB_HOME=${home}\0`);
  for (const pid of fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid)) {
    try {
      if (!fs.readFileSync(`/proc/${pid}/environ`).includes(marker)) continue;
      const exe = fs.readlinkSync(`/proc/${pid}/exe`);
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (exe.endsWith("/msb-runtime")) lines.push(`runtime: ${exe}`);
      const kernel = argv.indexOf("-kernel");
      if (kernel >= 0) lines.push(`kernel: ${argv[kernel + 1]}`);
    } catch {
      // The process exited while we looked.
    }
  }
  return lines.sort();
};
