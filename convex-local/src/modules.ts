/** Discovery of the Convex function modules in a functions directory. */
import { readdirSync, statSync } from "node:fs";
import { join, relative, sep } from "node:path";

const SOURCE_EXT = /\.(ts|tsx|js|mjs|jsx|mts)$/;
const EXCLUDED = /(\.test\.|\.spec\.|\.d\.ts$|\.d\.mts$)/;

/**
 * List module files under `functionsDir` (recursive), as paths relative to it with `/` separators,
 * e.g. `["_generated/api.js", "messages.ts", "lib/util.ts"]`. Skips tests, declaration files,
 * dot-directories and `node_modules`.
 * @throws Error when the directory does not exist.
 */
export function listModuleFiles(functionsDir: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      if (name.startsWith(".") || name === "node_modules") continue;
      const full = join(dir, name);
      const st = statSync(full);
      if (st.isDirectory()) walk(full);
      else if (SOURCE_EXT.test(name) && !EXCLUDED.test(name)) {
        out.push(relative(functionsDir, full).split(sep).join("/"));
      }
    }
  };
  if (!statSync(functionsDir, { throwIfNoEntry: false })?.isDirectory()) {
    throw new Error(`functions directory not found: ${functionsDir}`);
  }
  walk(functionsDir);
  return out.sort();
}

/** Module paths (without extension) that clients can never call as functions. */
export function isReservedModule(modulePath: string): boolean {
  return (
    modulePath.startsWith("_generated/") ||
    ["schema", "auth.config", "convex.config", "http", "crons"].includes(modulePath)
  );
}
