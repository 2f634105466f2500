// What every verb may read about the CLI's surroundings, read once in main
// and passed down: streams, environment, working directory, state home.
import * as os from "node:os";
import * as path from "node:path";

import type { Stdio } from "./attach";

/** The CLI's surroundings. */
export interface CliContext {
  /** The streams commands run against. */
  stdio: Stdio;
  /** The environment the CLI was started with (for `-e KEY`, `--secret NAME@DOMAIN`). */
  env: NodeJS.ProcessEnv;
  /** The working directory (where `Sandboxfile` is looked up). */
  cwd: string;
  /** The state home the SDK uses: `$MSB_HOME`, else `~/.microsandbox`. */
  home: string;
}

/** The state home as the engine resolves it: `MSB_HOME`, else `~/.microsandbox`. */
export function stateHome(env: NodeJS.ProcessEnv): string {
  return env.MSB_HOME && env.MSB_HOME.length > 0 ? env.MSB_HOME : path.join(os.homedir(), ".microsandbox");
}
