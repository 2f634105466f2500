// Whether this host can start sandboxes, for code that asks before it creates
// one (the upstream SDK's `isInstalled()`/`install()`).
import { check } from "./errors";
import { assetsDir, native } from "./native";

/**
 * True when sandboxes can start here: the guest kernel, agent and runtime are
 * installed and the runtime finds QEMU. Synchronous; takes a few milliseconds.
 */
export function isInstalled(): boolean {
  return native.checkInstalled({ assetsDir }) == null;
}

/**
 * Resolves when sandboxes can start here. Nothing is downloaded: the assets
 * come with the npm package (or `scripts/build.sh` in a checkout) and QEMU
 * from the system's packages; the error says which is missing and how to get it.
 *
 * @throws {MissingAssetError} An asset or QEMU is missing; the message names it and its source.
 */
export async function install(): Promise<void> {
  check(native.checkInstalled({ assetsDir }));
}
