#!/usr/bin/env node
// The msi bin: see shortcuts.ts.
import { msi, runShortcut } from "./shortcuts";

runShortcut(msi, process.argv.slice(2));
