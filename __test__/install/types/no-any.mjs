// Lists every explicit `any` in the declaration files (.d.ts, .d.mts, .d.cts)
// under DIR, with the declaration it appears in; exits 1 when there is one.
// Parsed with the TypeScript compiler, so comments and string literals such
// as `protocol?: "tcp" | "udp" | "any"` do not count.
//   node no-any.mjs DIR
import * as fs from "node:fs";
import * as path from "node:path";

import ts from "typescript";

const [dir] = process.argv.slice(2);
const declarationFiles = fs
  .readdirSync(dir, { recursive: true, encoding: "utf8" })
  .filter((f) => /\.d\.[cm]?ts$/.test(f) && !f.split(path.sep).includes("node_modules"))
  .map((f) => path.join(dir, f))
  .sort();

/** The nearest named declaration around `node`, e.g. `Sandbox.exec`. */
function owner(node) {
  const names = [];
  for (let n = node; n; n = n.parent) {
    if (n.name && ts.isIdentifier(n.name)) names.unshift(n.name.text);
  }
  return names.join(".") || "<top level>";
}

const found = [];
for (const file of declarationFiles) {
  const source = ts.createSourceFile(file, fs.readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true);
  const visit = (node) => {
    if (node.kind === ts.SyntaxKind.AnyKeyword) {
      const { line } = source.getLineAndCharacterOfPosition(node.getStart());
      found.push(`${path.relative(dir, file)}:${line + 1}: ${owner(node)}: ${node.parent.getText()}`);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
}

console.log(`${declarationFiles.length} declaration files, ${found.length} explicit any`);
for (const line of found) console.log(line);
process.exit(found.length === 0 && declarationFiles.length > 0 ? 0 : 1);
