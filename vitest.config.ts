/**
 * Vitest configuration for the whole repository (`npx vitest run`):
 *  - `convex`: the project's Convex function tests (convex/**), in the edge-runtime environment
 *    like Convex's own runtime, with convex-test inlined so it shares the module graph.
 *  - `convex-local`: the local backend's tests (convex-local/test/**), in Node: they start the
 *    backend as a child process and talk to it with the real `convex` npm clients.
 *  - `dashboard-client`: the React app's read path (tests/js/**): the npm `ConvexClient` against
 *    the project's functions with the Python worker running as its own process.
 */
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "convex",
          include: ["convex/**/*.test.ts"],
          environment: "edge-runtime",
          server: { deps: { inline: ["convex-test"] } },
        },
      },
      {
        test: {
          name: "convex-local",
          include: ["convex-local/test/**/*.test.ts"],
          exclude: ["convex-local/test/fixture/**"],
          environment: "node",
          testTimeout: 60_000,
          hookTimeout: 90_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "dashboard-client",
          include: ["tests/js/**/*.test.ts"],
          environment: "node",
          testTimeout: 90_000,
          hookTimeout: 90_000,
        },
      },
    ],
  },
});
