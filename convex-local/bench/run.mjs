#!/usr/bin/env node
// Runs bench.ts with TypeScript support: `node convex-local/bench/run.mjs [--docs 100000]`.
import { register } from "tsx/esm/api";
register();
await import("./bench.ts");
