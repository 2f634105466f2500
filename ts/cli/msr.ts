#!/usr/bin/env node
// The msr bin: see shortcuts.ts.
import { msr, runShortcut } from "./shortcuts";

runShortcut(msr, process.argv.slice(2));
