#!/usr/bin/env node
// The msx bin: see shortcuts.ts.
import { msx, runShortcut } from "./shortcuts";

runShortcut(msx, process.argv.slice(2));
