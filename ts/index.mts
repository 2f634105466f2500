// The ES module entry (`import { Sandbox } from "microsandbox"`): the CommonJS
// build's named exports, so that both module systems share one copy of every
// class and `instanceof` holds across them.
export * from "./index.js";
