/**
 * A function runtime restarting after a timeout: calls that arrive while it is still loading the
 * functions wait for it, instead of running against a half-initialized runtime.
 */
import { afterAll, beforeAll, expect, test } from "vitest";
import { ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { randomChannel, startBackend, type RunningBackend } from "./support";

const api = anyApi;
let backend: RunningBackend;

beforeAll(async () => {
  // the fixture's schema takes 1.5 s to import: each (re)start of the runtime loads that long
  process.env.CONVEX_LOCAL_FIXTURE_SLOW_SCHEMA_MS = "1500";
  try {
    backend = await startBackend(["--function-timeout-ms", "300"]);
  } finally {
    delete process.env.CONVEX_LOCAL_FIXTURE_SLOW_SCHEMA_MS;
  }
});

afterAll(async () => {
  await backend?.stop();
});

test("calls made while the runtime restarts wait for it and see the committed data", async () => {
  const http = new ConvexHttpClient(backend.url);
  const ch = randomChannel("restart");
  await http.mutation(api.messages.send, {
    channel: ch,
    author: "a",
    body: "kept",
  });
  await expect(http.query(api.slow.spin, {})).rejects.toThrow(/timed out/);
  // the runtime is now loading its functions again (1.5 s): these arrive meanwhile
  const [listed, sent] = await Promise.all([
    http.query(api.messages.list, { channel: ch }),
    http.mutation(api.messages.send, {
      channel: ch,
      author: "b",
      body: "after",
    }),
  ]);
  // the two requests are concurrent: the mutation may be served first, so the query sees the
  // committed message and, at most, the one sent beside it
  expect([
    [{ author: "a", body: "kept" }],
    [
      { author: "a", body: "kept" },
      { author: "b", body: "after" },
    ],
  ]).toContainEqual(listed);
  expect(typeof sent).toBe("string");
  expect(await http.query(api.messages.list, { channel: ch })).toEqual([
    { author: "a", body: "kept" },
    { author: "b", body: "after" },
  ]);
});
