/**
 * Shared test setup: the module map for `convex-test` and `initConvexTest()`.
 */
import { convexTest } from "convex-test";
import { expect, test } from "vitest";
import schema from "./schema";
import { ensureUser } from "./users";
import type { AggregationType, ResultSetInput, WatchEventInput } from "./validators";
import { dedupeKey } from "./watchEvents";

/** Every module under `convex/`, including `_generated` (convex-test derives the root from it). */
export const modules = import.meta.glob("./**/*.*s");

/** A fresh in-memory backend with Convex's per-transaction limits enforced. */
export function initConvexTest() {
  return convexTest({ schema, modules, transactionLimits: true });
}

/** Identities used across tests. */
export const ALICE = { tokenIdentifier: "https://issuer.example|alice", subject: "alice" };
export const BOB = { tokenIdentifier: "https://issuer.example|bob", subject: "bob" };

test("module map includes the generated files", () => {
  expect(Object.keys(modules).some((key) => key.includes("_generated"))).toBe(true);
});

/**
 * Insert views directly (no validation, no change row) and raise the user's
 * `eventCount`; fast seeding for tests that need thousands of rows.
 */
export async function seedEvents(
  t: ReturnType<typeof initConvexTest>,
  userId: string,
  events: WatchEventInput[],
): Promise<void> {
  await t.run(async (ctx) => {
    for (const event of events) {
      await ctx.db.insert("watchEvents", { ...event, userId, dedupeKey: dedupeKey(event) });
    }
    const user = await ensureUser(ctx, userId);
    await ctx.db.patch(user._id, { eventCount: user.eventCount + events.length });
  });
}

/** A result as the worker produces it before grouping (test shorthand). */
export interface FlatResult {
  type: AggregationType;
  filterKey: string;
  data: unknown;
  definitionVersion: number;
  validUntilMs?: number;
}

/**
 * Group flat results by filter key into `storeAggregations` sets, as the
 * worker does; `dataHash` is the JSON text of `data` (any digest will do).
 */
export function toSets(results: readonly FlatResult[]): ResultSetInput[] {
  const sets = new Map<string, ResultSetInput>();
  for (const r of results) {
    let set = sets.get(r.filterKey);
    if (set === undefined) {
      set = { filterKey: r.filterKey, definitionVersion: r.definitionVersion, results: [] };
      sets.set(r.filterKey, set);
    }
    set.results.push({
      type: r.type,
      data: r.data,
      dataHash: JSON.stringify(r.data) ?? "undefined",
      ...(r.validUntilMs !== undefined ? { validUntilMs: r.validUntilMs } : {}),
    });
  }
  return [...sets.values()];
}
