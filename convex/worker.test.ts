import { describe, expect, test } from "vitest";
import { api, internal } from "./_generated/api";
import type { Doc } from "./_generated/dataModel";
import { ALICE, BOB, initConvexTest, seedEvents } from "./setup.test";
import type { WatchEventInput } from "./validators";
import { coalesceChanges, MAX_ATTEMPTS } from "./worker";

const T0 = Date.UTC(2024, 0, 1);
const HOUR = 3_600_000;
const A = ALICE.tokenIdentifier;

function event(i: number): WatchEventInput {
  return {
    watchedAtMs: T0 + i * HOUR,
    kind: "watch",
    product: i % 2 === 0 ? "youtube" : "youtube_music",
    videoId: `vid${i}`,
    title: `Video ${i}`,
    channelId: "UCx",
    source: "takeout_json",
    ...(i % 3 === 0 ? { flags: ["shorts" as const] } : {}),
  };
}

async function importFor(t: ReturnType<typeof initConvexTest>, userId: string, events: WatchEventInput[]) {
  return await t.mutation(internal.admin.importBatch, { userId, events });
}

async function changeRows(t: ReturnType<typeof initConvexTest>, userId: string) {
  return await t.run(async (ctx) =>
    (await ctx.db.query("changeLog").collect())
      .filter((r) => r.userId === userId)
      .sort((a, b) => a.seq - b.seq),
  );
}

async function userRow(t: ReturnType<typeof initConvexTest>, userId: string) {
  return await t.run(async (ctx) =>
    ctx.db
      .query("users")
      .withIndex("by_userId", (q) => q.eq("userId", userId))
      .unique(),
  );
}

describe("pendingChanges", () => {
  test("lists pending rows of every user, by user then seq, honouring limit", async () => {
    const t = initConvexTest();
    await importFor(t, "user-b", [event(0)]);
    await importFor(t, "user-a", [event(0), event(1)]);
    await t.mutation(internal.admin.requestRecompute, { userId: "user-a" });
    await t.mutation(internal.admin.setTimeZone, { userId: "user-b", timeZone: "Europe/Rome" });

    const all = await t.query(internal.worker.pendingChanges, {});
    expect(all).toEqual([
      { userId: "user-a", seq: 1, kind: "import", fromMs: T0, toMs: T0 + HOUR, count: 2 },
      { userId: "user-a", seq: 2, kind: "manual", count: 2 },
      { userId: "user-b", seq: 1, kind: "import", fromMs: T0, toMs: T0, count: 1 },
      { userId: "user-b", seq: 2, kind: "timezone", count: 1 },
    ]);
    expect(await t.query(internal.worker.pendingChanges, { limit: 1 })).toHaveLength(1);

    await t.mutation(internal.worker.ackChanges, { userId: "user-a", workerId: "w1", upToSeq: 2 });
    const after = await t.query(internal.worker.pendingChanges, {});
    expect(after.map((c) => [c.userId, c.seq])).toEqual([
      ["user-b", 1],
      ["user-b", 2],
    ]);
  });

  test("rejects a bad limit", async () => {
    const t = initConvexTest();
    await expect(t.query(internal.worker.pendingChanges, { limit: 0 })).rejects.toMatchObject({
      data: { code: "INVALID_ARGUMENT", field: "limit" },
    });
    await expect(t.query(internal.worker.pendingChanges, { limit: 2.5 })).rejects.toMatchObject({
      data: { code: "INVALID_ARGUMENT" },
    });
  });
});

describe("claimUser", () => {
  test("grants a free lease and returns pending changes and active interests", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0), event(1)]);
    await t.mutation(internal.admin.setTimeZone, { userId: A, timeZone: "Europe/Berlin" });
    await t.withIdentity(ALICE).mutation(api.dashboard.registerFilter, {
      filters: { timeframe: "YTD", product: "all", topics: ["music", "gaming"] },
    });
    await t.run(async (ctx) => {
      await ctx.db.insert("filterInterests", {
        userId: A,
        filterKey: "All|all|old|",
        filters: { timeframe: "All", product: "all", topics: ["old"] },
        lastRequestedAtMs: 0,
        expiresAtMs: 1,
      });
    });

    const before = Date.now();
    const claim = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    expect(claim).toMatchObject({
      granted: true,
      leaseOwner: "w1",
      timeZone: "Europe/Berlin",
      lastSeq: 3,
      changes: [
        { seq: 1, kind: "import", fromMs: T0, toMs: T0 + HOUR, count: 2 },
        { seq: 2, kind: "timezone", count: 2 },
        { seq: 3, kind: "filter", count: 2 },
      ],
      interests: [{ timeframe: "YTD", product: "all", topics: ["gaming", "music"] }],
    });
    expect(claim.leaseExpiresAtMs).toBeGreaterThanOrEqual(before + 60_000);
    const user = await userRow(t, A);
    expect(user).toMatchObject({ leaseOwner: "w1", leaseExpiresAtMs: claim.leaseExpiresAtMs });
  });

  test("denies a held lease, renews our own, and takes over an expired one", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    const first = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    expect(first.granted).toBe(true);

    const denied = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w2", leaseMs: 60_000 });
    expect(denied).toMatchObject({
      granted: false,
      leaseOwner: "w1",
      leaseExpiresAtMs: first.leaseExpiresAtMs,
      changes: [],
      interests: [],
    });
    expect(await userRow(t, A)).toMatchObject({ leaseOwner: "w1" });

    const renewed = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 120_000 });
    expect(renewed.granted).toBe(true);
    expect(renewed.leaseExpiresAtMs).toBeGreaterThan(first.leaseExpiresAtMs);
    expect(renewed.changes).toHaveLength(1);

    await t.run(async (ctx) => {
      const user = await ctx.db
        .query("users")
        .withIndex("by_userId", (q) => q.eq("userId", A))
        .unique();
      await ctx.db.patch(user!._id, { leaseExpiresAtMs: Date.now() - 1 });
    });
    const takeover = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w2", leaseMs: 60_000 });
    expect(takeover).toMatchObject({ granted: true, leaseOwner: "w2" });
    expect(await userRow(t, A)).toMatchObject({ leaseOwner: "w2" });
  });

  test("rejects a lease longer than an hour or not positive", async () => {
    const t = initConvexTest();
    for (const leaseMs of [0, 3_600_001, Number.NaN]) {
      await expect(
        t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs }),
      ).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "leaseMs" } });
    }
    expect(await userRow(t, A)).toBeNull();
  });

  test("coalesces more than 1000 pending rows per kind", async () => {
    const t = initConvexTest();
    await t.run(async (ctx) => {
      for (let seq = 1; seq <= 1100; seq++) {
        await ctx.db.insert("changeLog", {
          userId: A,
          seq,
          kind: seq === 1050 ? "timezone" : "import",
          ...(seq === 1050 ? {} : { fromMs: T0 + seq, toMs: T0 + seq * 2 }),
          count: 1,
          status: "pending",
          attempts: 0,
          createdAtMs: 0,
        });
      }
      await ctx.db.insert("users", { userId: A, timeZone: "UTC", lastSeq: 1100, ackedSeq: 0, eventCount: 0 });
    });
    const claim = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 1000 });
    expect(claim.changes).toEqual([
      { seq: 1050, kind: "timezone", count: 1 },
      { seq: 1100, kind: "import", fromMs: T0 + 1, toMs: T0 + 2200, count: 1099 },
    ]);
  }, 30_000);
});

describe("coalesceChanges", () => {
  test("drops the range when any row of a kind covers the whole history", () => {
    const row = (seq: number, extra: Partial<Doc<"changeLog">>) =>
      ({ seq, kind: "delete", count: 2, ...extra }) as Doc<"changeLog">;
    expect(coalesceChanges([row(1, { fromMs: 5, toMs: 9 }), row(2, {})])).toEqual([
      { seq: 2, kind: "delete", count: 4 },
    ]);
  });
});

describe("listEvents", () => {
  test("pages through a range in watchedAt order with a slim projection", async () => {
    const t = initConvexTest();
    await seedEvents(t, A, [event(5), event(1), event(3), event(2), event(4), event(0)]);
    await seedEvents(t, "other", [event(2)]);
    const seen: unknown[] = [];
    let cursor: string | null = null;
    for (let i = 0; i < 10; i++) {
      const page: { page: unknown[]; isDone: boolean; continueCursor: string } = await t.query(
        internal.worker.listEvents,
        { userId: A, fromMs: T0 + HOUR, toMs: T0 + 4 * HOUR, paginationOpts: { numItems: 3, cursor } },
      );
      seen.push(...page.page);
      cursor = page.continueCursor;
      if (page.isDone) break;
    }
    expect(seen).toEqual([event(1), event(2), event(3), event(4)].map(({ source: _s, ...rest }) => rest));
    const unbounded = await t.query(internal.worker.listEvents, {
      userId: A,
      paginationOpts: { numItems: 100, cursor: null },
    });
    expect(unbounded.isDone).toBe(true);
    expect(unbounded.page.map((e) => e.watchedAtMs)).toEqual([0, 1, 2, 3, 4, 5].map((i) => T0 + i * HOUR));
    expect(Object.keys(unbounded.page[0]).sort()).toEqual(
      ["channelId", "flags", "kind", "product", "title", "videoId", "watchedAtMs"].sort(),
    );
  });
});

describe("storeAggregations", () => {
  const result = (data: unknown, extra: Record<string, unknown> = {}) => ({
    type: "kpi" as const,
    filterKey: "All|all||",
    data,
    definitionVersion: 1,
    ...extra,
  });

  async function aggregations(t: ReturnType<typeof initConvexTest>) {
    return await t.run(async (ctx) => ctx.db.query("aggregations").collect());
  }

  test("writes newer results, skips stale ones and treats repeats as no-ops", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await importFor(t, A, [event(1)]);

    const w1 = await t.mutation(internal.worker.storeAggregations, {
      userId: A, watermark: 1, computedAtMs: 1000, results: [result({ views: 1 }, { validUntilMs: 5000 })],
    });
    expect(w1).toEqual({ written: 1, unchanged: 0, skippedStale: 0 });

    const w2 = await t.mutation(internal.worker.storeAggregations, {
      userId: A, watermark: 2, computedAtMs: 2000, results: [result({ views: 2 })],
    });
    expect(w2).toEqual({ written: 1, unchanged: 0, skippedStale: 0 });
    let rows = await aggregations(t);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ watermark: 2, computedAtMs: 2000, data: { views: 2 } });
    expect(rows[0].validUntilMs).toBeUndefined();

    const stale = await t.mutation(internal.worker.storeAggregations, {
      userId: A, watermark: 1, computedAtMs: 9000, results: [result({ views: 1 })],
    });
    expect(stale).toEqual({ written: 0, unchanged: 0, skippedStale: 1 });

    const repeat = await t.mutation(internal.worker.storeAggregations, {
      userId: A, watermark: 2, computedAtMs: 2000, results: [result({ views: 999 })],
    });
    expect(repeat).toEqual({ written: 0, unchanged: 1, skippedStale: 0 });
    rows = await aggregations(t);
    expect(rows[0]).toMatchObject({ watermark: 2, computedAtMs: 2000, data: { views: 2 } });

    const newerDefinition = await t.mutation(internal.worker.storeAggregations, {
      userId: A, watermark: 2, computedAtMs: 2000, results: [result({ views: 2, v: 2 }, { definitionVersion: 2 })],
    });
    expect(newerDefinition).toEqual({ written: 1, unchanged: 0, skippedStale: 0 });
    const recomputed = await t.mutation(internal.worker.storeAggregations, {
      userId: A, watermark: 2, computedAtMs: 3000, results: [result({ views: 3 }, { definitionVersion: 2 })],
    });
    expect(recomputed.written).toBe(1);
    rows = await aggregations(t);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ computedAtMs: 3000, definitionVersion: 2, data: { views: 3 } });

    // A replica still on definition 1 (rolling deploy) cannot overwrite definition 2, even with newer data.
    await importFor(t, A, [event(2)]);
    const olderDefinition = await t.mutation(internal.worker.storeAggregations, {
      userId: A, watermark: 3, computedAtMs: 4000, results: [result({ views: 4 }, { definitionVersion: 1 })],
    });
    expect(olderDefinition).toEqual({ written: 0, unchanged: 0, skippedStale: 1 });
    rows = await aggregations(t);
    expect(rows[0]).toMatchObject({ computedAtMs: 3000, definitionVersion: 2, data: { views: 3 } });
  });

  test("keys rows by user, type and filter key", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await importFor(t, "user-b", [event(0)]);
    await t.mutation(internal.worker.storeAggregations, {
      userId: A,
      watermark: 1,
      computedAtMs: 1,
      results: [result(1), result(2, { type: "monthly_trend" }), result(3, { filterKey: "YTD|all||" })],
    });
    await t.mutation(internal.worker.storeAggregations, {
      userId: "user-b", watermark: 1, computedAtMs: 1, results: [result(4)],
    });
    const rows = await aggregations(t);
    expect(rows.map((r) => [r.userId, r.type, r.filterKey, r.data]).sort()).toEqual(
      [
        [A, "kpi", "All|all||", 1],
        [A, "monthly_trend", "All|all||", 2],
        [A, "kpi", "YTD|all||", 3],
        ["user-b", "kpi", "All|all||", 4],
      ].sort(),
    );
  });

  test("rejects a watermark ahead of lastSeq and more than 50 results", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await expect(
      t.mutation(internal.worker.storeAggregations, { userId: A, watermark: 2, computedAtMs: 1, results: [result(1)] }),
    ).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "watermark" } });
    await expect(
      t.mutation(internal.worker.storeAggregations, {
        userId: A, watermark: 1, computedAtMs: 1,
        results: Array.from({ length: 51 }, (_, i) => result(i, { filterKey: `k${i}` })),
      }),
    ).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "results" } });
    expect(await aggregations(t)).toHaveLength(0);
  });
});

describe("ackChanges", () => {
  test("marks rows up to upToSeq done, raises ackedSeq, releases our lease; idempotent", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await importFor(t, A, [event(1)]);
    await importFor(t, A, [event(2)]);
    await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });

    expect(await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 2 })).toEqual({ acked: 2 });
    let rows = await changeRows(t, A);
    expect(rows.map((r) => r.status)).toEqual(["done", "done", "pending"]);
    expect(rows[0].processedAtMs).toBeTypeOf("number");
    let user = await userRow(t, A);
    expect(user).toMatchObject({ ackedSeq: 2, lastSeq: 3 });
    expect(user!.leaseOwner).toBeUndefined();
    expect(user!.leaseExpiresAtMs).toBeUndefined();

    expect(await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 2 })).toEqual({ acked: 0 });
    expect((await userRow(t, A))!.ackedSeq).toBe(2);

    await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w2", leaseMs: 60_000 });
    expect(await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 99 })).toEqual({ acked: 1 });
    user = await userRow(t, A);
    expect(user).toMatchObject({ ackedSeq: 3, leaseOwner: "w2" });
    rows = await changeRows(t, A);
    expect(rows.every((r) => r.status === "done")).toBe(true);
  });

  test("acking an unknown user is a no-op", async () => {
    const t = initConvexTest();
    expect(await t.mutation(internal.worker.ackChanges, { userId: "nobody", workerId: "w1", upToSeq: 5 })).toEqual({ acked: 0 });
    expect(await userRow(t, "nobody")).toBeNull();
  });
});

describe("failChanges", () => {
  test("counts attempts and dead-letters a row at the fifth failure", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await importFor(t, A, [event(1)]);
    for (let attempt = 1; attempt < MAX_ATTEMPTS; attempt++) {
      await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
      const r = await t.mutation(internal.worker.failChanges, { userId: A, workerId: "w1", upToSeq: 1, error: `boom ${attempt}` });
      expect(r).toEqual({ failed: 1, deadLettered: 0 });
      expect((await userRow(t, A))!.leaseOwner).toBeUndefined();
    }
    let rows = await changeRows(t, A);
    expect(rows[0]).toMatchObject({ status: "pending", attempts: 4, error: "boom 4" });

    const last = await t.mutation(internal.worker.failChanges, { userId: A, workerId: "w1", upToSeq: 1, error: "x".repeat(5000) });
    expect(last).toEqual({ failed: 1, deadLettered: 1 });
    rows = await changeRows(t, A);
    expect(rows[0]).toMatchObject({ status: "failed", attempts: 5 });
    expect(rows[0].error).toHaveLength(2000);
    expect(rows[1]).toMatchObject({ status: "pending", attempts: 0 });

    const pending = await t.query(internal.worker.pendingChanges, {});
    expect(pending.map((c) => c.seq)).toEqual([2]);
    expect(await t.mutation(internal.worker.failChanges, { userId: A, workerId: "w1", upToSeq: 1, error: "again" })).toEqual({ failed: 0, deadLettered: 0 });
  });
});

describe("enqueueExpired", () => {
  test("appends one expiry change per user with an expired aggregate and no pending change", async () => {
    const t = initConvexTest();
    const now = Date.now();
    await importFor(t, A, [event(0)]);
    await importFor(t, "user-b", [event(0)]);
    await importFor(t, "user-c", [event(0)]);
    for (const userId of [A, "user-b", "user-c"]) {
      await t.mutation(internal.worker.storeAggregations, {
        userId,
        watermark: 1,
        computedAtMs: now,
        results: [
          { type: "kpi", filterKey: "MTD|all||", data: {}, definitionVersion: 1, validUntilMs: userId === "user-c" ? now + HOUR : now - 1 },
          { type: "monthly_trend", filterKey: "MTD|all||", data: {}, definitionVersion: 1, validUntilMs: now - 2 },
          { type: "top_channels", filterKey: "All|all||", data: {}, definitionVersion: 1 },
        ],
      });
    }
    await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 1 });
    await t.mutation(internal.worker.ackChanges, { userId: "user-c", workerId: "w1", upToSeq: 1 });
    // user-b still has its import pending → skipped; user-c's monthly_trend expired → enqueued.

    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: now })).toEqual({ enqueued: 2 });
    const a = await changeRows(t, A);
    expect(a.map((r) => [r.seq, r.kind, r.status])).toEqual([
      [1, "import", "done"],
      [2, "expiry", "pending"],
    ]);
    expect(a[1]).toMatchObject({ count: 1 });
    expect((await changeRows(t, "user-b")).map((r) => r.kind)).toEqual(["import"]);
    expect((await changeRows(t, "user-c")).map((r) => r.kind)).toEqual(["import", "expiry"]);

    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: now })).toEqual({ enqueued: 0 });
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: now - 10 })).toEqual({ enqueued: 0 });
  });

  test("honours limit", async () => {
    const t = initConvexTest();
    for (const userId of ["u1", "u2", "u3"]) {
      await t.run(async (ctx) => {
        await ctx.db.insert("users", { userId, timeZone: "UTC", lastSeq: 1, ackedSeq: 1, eventCount: 0 });
        await ctx.db.insert("aggregations", {
          userId, type: "kpi", filterKey: "MTD|all||", data: null, watermark: 1, computedAtMs: 0, definitionVersion: 1, validUntilMs: 10,
        });
      });
    }
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: 100, limit: 2 })).toEqual({ enqueued: 2 });
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: 100, limit: 2 })).toEqual({ enqueued: 1 });
  });
});

test("B never sees A's data through the public API", async () => {
  const t = initConvexTest();
  await importFor(t, A, [event(0)]);
  await t.mutation(internal.worker.storeAggregations, {
    userId: A, watermark: 1, computedAtMs: 1, results: [{ type: "kpi", filterKey: "All|all||", data: { views: 1 }, definitionVersion: 1 }],
  });
  const bob = t.withIdentity(BOB);
  expect(await bob.query(api.dashboard.getAggregation, { type: "kpi" })).toBeNull();
  const dash = await bob.query(api.dashboard.getDashboard, {});
  expect(dash!.aggregations).toEqual([]);
  expect(await bob.mutation(api.watchEvents.deleteRange, {})).toEqual({ deleted: 0, hasMore: false, seq: null });
  expect(await t.withIdentity(ALICE).query(api.dashboard.getAggregation, { type: "kpi" })).not.toBeNull();
});
