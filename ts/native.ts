// Loads the napi addon through the loader napi-rs generates at the package root.
// Types come from the generated index.d.ts; the require is resolved at run time
// because the compiled facade lives in dist/ts/, two levels below the root.
import * as path from "node:path";
import type * as Native from "../index";

/** The package root: dist/ts/ -> ./ */
export const packageRoot = path.resolve(__dirname, "..", "..");

/** Kernel, agent and runtime binaries, unless MSB_KERNEL/MSB_AGENT/MSB_RUNTIME say otherwise. */
export const assetsDir = process.env.MSB_ASSETS_DIR ?? path.join(packageRoot, "assets");

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const native: typeof Native = require(path.join(packageRoot, "index.js"));

export type { Native };
