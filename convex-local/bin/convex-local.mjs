#!/usr/bin/env node
// Entry point of `npx convex-local`: make TypeScript importable, then run the CLI.
import { register } from "tsx/esm/api";
register();
await import("../src/cli.ts");
