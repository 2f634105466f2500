// Finds the napi addon and the assets the engine runs (guest kernel, guest
// agent, sandbox runtime). Installed from npm, both come from the platform
// package (`microsandbox-linux-x64-gnu`, an optional dependency of this one);
// in a development checkout, from the root's build outputs (`*.node`,
// `assets/`). The engine gets the directory and knows nothing of npm.
//
// Types come from the generated index.d.ts. The compiled facade lives in
// dist/ts/, so its declarations' `../index` is dist/index.d.ts, which
// scripts/pack.sh ships as a copy of the root's; the require below is resolved
// at run time from the package root.
import * as path from "node:path";
import type * as Native from "../index";

/** The package root: dist/ts/ -> ./ */
export const packageRoot = path.resolve(__dirname, "..", "..");

/** The platform package holding this host's addon and assets, by `${process.platform}-${process.arch}`. */
const platformPackages: Readonly<Record<string, string>> = {
  "linux-x64": "microsandbox-linux-x64-gnu",
};

/** The platform package's directory, resolved as this package's dependency; null when it is not installed. */
function platformPackageDir(): string | null {
  const name = platformPackages[`${process.platform}-${process.arch}`];
  if (name === undefined) return null;
  try {
    return path.dirname(require.resolve(`${name}/package.json`, { paths: [packageRoot] }));
  } catch {
    return null;
  }
}

/**
 * The directory of `vmlinux`, `msb-agent` and `msb-runtime`: `MSB_ASSETS_DIR`,
 * else the platform package, else the checkout's `assets/`. The engine applies
 * `MSB_KERNEL`, `MSB_AGENT` and `MSB_RUNTIME` over it, one asset each.
 */
export const assetsDir = process.env.MSB_ASSETS_DIR ?? platformPackageDir() ?? path.join(packageRoot, "assets");

// The generated loader takes the checkout's ./microsandbox.<platform>.node when
// there is one, else the platform package's. A checkout never has both: its
// package.json does not list the platform package (scripts/pack.sh adds it).
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const native: typeof Native = require(path.join(packageRoot, "index.js"));

export type { Native };
