import { afterEach, describe, expect, test, vi } from "vitest";
import { api, internal } from "./_generated/api";
import type { Doc } from "./_generated/dataModel";
import { ALICE, BOB, initConvexTest, seedEvents, toSets, type FlatResult } from "./setup.test";
import type { AggregationType, ResultSetInput, WatchEventInput } from "./validators";
import {
  CLAIM_MAX_INTERESTS,
  coalesceChanges,
  enqueueExpiredHandler,
  EXPIRED_INTERESTS_PER_CALL,
  EXPIRED_MAX_LIMIT,
  EXPIRED_READ_BUDGET,
  EXPIRED_SCAN_ROWS,
  MAX_ATTEMPTS,
  RETIRE_MAX_SETS,
  RETRY_BACKOFF_MS,
  retryBackoffMs,
} from "./worker";

const T0 = Date.UTC(2024, 0, 1);
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const A = ALICE.tokenIdentifier;
const AGGREGATION_TYPES: AggregationType[] = [
  "kpi", "monthly_trend", "top_channels", "day_time_heatmap", "topics_leaderboard", "session_analysis",
  "viewing_patterns", "channel_metrics", "channel_relationships", "channel_evolution", "topic_evolution",
  "topic_engagement", "topic_discovery", "topic_diversity",
];

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

/** The user's lease as `{owner, expiresAtMs}`, or null when none is held. */
async function leaseOf(t: ReturnType<typeof initConvexTest>, userId: string) {
  const row = await t.run(async (ctx) =>
    ctx.db
      .query("leases")
      .withIndex("by_userId", (q) => q.eq("userId", userId))
      .unique(),
  );
  return row === null ? null : { owner: row.owner, expiresAtMs: row.expiresAtMs };
}

async function userRow(t: ReturnType<typeof initConvexTest>, userId: string) {
  return await t.run(async (ctx) =>
    ctx.db
      .query("users")
      .withIndex("by_userId", (q) => q.eq("userId", userId))
      .unique(),
  );
}

/** A fixed server time for tests that move the clock (interest expiry is judged by it). */
const T_SERVER = Date.UTC(2030, 0, 15, 12);

/** Set the clock the functions read (`Date.now()`) to `ms` and return it; restored after each test. */
function useServerClock(ms: number): number {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(ms);
  return ms;
}

afterEach(() => {
  vi.useRealTimers();
});

/** The user's `filterInterests` rows as `[filterKey, expiresAtMs]`, by key. */
async function interestsOf(t: ReturnType<typeof initConvexTest>, userId: string) {
  const rows = await t.run(async (ctx) =>
    ctx.db
      .query("filterInterests")
      .withIndex("by_user_filter", (q) => q.eq("userId", userId))
      .collect(),
  );
  return rows.map((row) => [row.filterKey, row.expiresAtMs]);
}

/** Insert `count` interests of `userId` directly, keys `All|all|<prefix><i>|`, all expiring at `expiresAtMs`. */
async function insertInterests(
  t: ReturnType<typeof initConvexTest>,
  userId: string,
  prefix: string,
  count: number,
  expiresAtMs: number,
) {
  await t.run(async (ctx) => {
    for (let i = 0; i < count; i++) {
      const topic = `${prefix}${String(i).padStart(4, "0")}`;
      await ctx.db.insert("filterInterests", {
        userId,
        filterKey: `All|all|${topic}|`,
        filters: { timeframe: "All", product: "all", topics: [topic] },
        lastRequestedAtMs: expiresAtMs - DAY,
        expiresAtMs,
      });
    }
  });
}

describe("pendingChanges", () => {
  test("lists pending rows of every user, oldest first, honouring limit", async () => {
    const t = initConvexTest();
    await importFor(t, "user-b", [event(0)]);
    await importFor(t, "user-a", [event(0), event(1)]);
    await t.mutation(internal.admin.requestRecompute, { userId: "user-a" });
    await t.mutation(internal.admin.setTimeZone, { userId: "user-b", timeZone: "Europe/Rome" });

    const all = await t.query(internal.worker.pendingChanges, {});
    // in commit order across users (a FIFO queue), not grouped by user id
    expect(all).toEqual([
      { userId: "user-b", seq: 1, kind: "import", fromMs: T0, toMs: T0, count: 1 },
      { userId: "user-a", seq: 1, kind: "import", fromMs: T0, toMs: T0 + HOUR, count: 2 },
      { userId: "user-a", seq: 2, kind: "manual", count: 2 },
      { userId: "user-b", seq: 2, kind: "timezone", count: 1 },
    ]);
    expect(await t.query(internal.worker.pendingChanges, { limit: 1 })).toEqual([all[0]]);

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
    expect(await leaseOf(t, A)).toEqual({ owner: "w1", expiresAtMs: claim.leaseExpiresAtMs });
    // the lease is not on the user's row: a claim does not invalidate queries reading it (dashboards)
    expect((await userRow(t, A))!.leaseOwner).toBeUndefined();
    // the incarnation of the user's change log, granted or not
    expect(claim.userCreatedAtMs).toBe((await userRow(t, A))!._creationTime);
    const denied = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w2", leaseMs: 60_000 });
    expect(denied).toMatchObject({ granted: false, userCreatedAtMs: claim.userCreatedAtMs });
  });

  test("never hands out an expired interest, and finds live ones behind many expired rows", async () => {
    const start = useServerClock(T_SERVER);
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    const gaming = { timeframe: "All" as const, product: "all" as const, topics: ["gaming"] };
    await alice.mutation(api.dashboard.registerFilter, { filters: gaming });
    const claim = () => t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    expect((await claim()).interests).toEqual([gaming]);

    // Registered, then left before the worker computed it: once expired it is not computed again,
    // although nothing deleted its row yet.
    useServerClock(start + DAY);
    expect((await claim()).interests).toEqual([]);
    expect(await interestsOf(t, A)).toEqual([["All|all|gaming|", start + DAY]]);

    // More expired rows than the claim reads, all sorting before the live ones by filter key: the
    // live ones are still returned, the most recently registered first.
    await insertInterests(t, A, "a", CLAIM_MAX_INTERESTS * 4 + 1, start + HOUR);
    const music = { timeframe: "All" as const, product: "all" as const, topics: ["music"] };
    await alice.mutation(api.dashboard.registerFilter, { filters: music });
    useServerClock(start + DAY + HOUR);
    await alice.mutation(api.dashboard.registerFilter, { filters: gaming });
    expect((await claim()).interests).toEqual([gaming, music]);

    // At most CLAIM_MAX_INTERESTS live ones, the most recent.
    await insertInterests(t, A, "z", CLAIM_MAX_INTERESTS, start + 2 * DAY + 2 * HOUR);
    const many = (await claim()).interests;
    expect(many).toHaveLength(CLAIM_MAX_INTERESTS);
    expect(many.every((f) => f.topics![0].startsWith("z"))).toBe(true);
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
    // the time left on the holder's lease, by the server's clock
    expect(denied.retryAfterMs).toBeGreaterThan(0);
    expect(denied.retryAfterMs).toBeLessThanOrEqual(60_000);
    expect(first.retryAfterMs).toBeUndefined();
    expect(await leaseOf(t, A)).toMatchObject({ owner: "w1" });

    const renewed = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 120_000 });
    expect(renewed.granted).toBe(true);
    expect(renewed.leaseExpiresAtMs).toBeGreaterThan(first.leaseExpiresAtMs);
    expect(renewed.changes).toHaveLength(1);

    await t.run(async (ctx) => {
      const lease = await ctx.db
        .query("leases")
        .withIndex("by_userId", (q) => q.eq("userId", A))
        .unique();
      await ctx.db.patch(lease!._id, { expiresAtMs: Date.now() - 1 });
    });
    const takeover = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w2", leaseMs: 60_000 });
    expect(takeover).toMatchObject({ granted: true, leaseOwner: "w2" });
    expect(await leaseOf(t, A)).toMatchObject({ owner: "w2" });
  });

  test("honours a lease recorded on the user's row before leases had their own table", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    const expiresAtMs = Date.now() + 60_000;
    await t.run(async (ctx) => {
      const user = await ctx.db
        .query("users")
        .withIndex("by_userId", (q) => q.eq("userId", A))
        .unique();
      await ctx.db.patch(user!._id, { leaseOwner: "old", leaseExpiresAtMs: expiresAtMs });
    });
    const denied = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    expect(denied).toMatchObject({ granted: false, leaseOwner: "old", leaseExpiresAtMs: expiresAtMs });
    expect((await t.mutation(internal.worker.claimUser, { userId: A, workerId: "old", leaseMs: 60_000 })).granted).toBe(true);
    expect(await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "old", upToSeq: 1 })).toEqual({ acked: 1, superseded: 0 });
    expect(await userRow(t, A)).toMatchObject({ ackedSeq: 1 });
    expect((await userRow(t, A))!.leaseOwner).toBeUndefined(); // released from the row for good
    expect(await leaseOf(t, A)).toBeNull();
  });

  test("a claim of only imports carries the views they inserted; other claims do not", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0), event(1)]);
    await importFor(t, A, [event(2)]);
    await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 1 });
    const claim = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    const paged = await t.query(internal.worker.listEventsByChange, {
      userId: A, afterSeq: 1, throughSeq: 2, paginationOpts: { numItems: 100, cursor: null },
    });
    expect(claim.appended).toEqual({ afterSeq: 1, throughSeq: 2, events: paged.page });
    expect(claim.appended!.events.map((e) => e.videoId)).toEqual(["vid2"]);

    // a pending change that is not an import: the worker plans a re-read, no views are sent
    await t.mutation(internal.admin.requestRecompute, { userId: A });
    const mixed = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    expect(mixed.changes.map((c) => c.kind)).toEqual(["import", "manual"]);
    expect(mixed.appended).toBeUndefined();
  });

  test("a claim of imports of more than 1000 views does not carry them", async () => {
    const t = initConvexTest();
    const batch = (from: number) => Array.from({ length: 600 }, (_, i) => event(from + i));
    await importFor(t, A, batch(0));
    await importFor(t, A, batch(600));
    const claim = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    expect(claim.changes).toHaveLength(2);
    expect(claim.appended).toBeUndefined();
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

describe("listEventsByChange and maxChangeSeq", () => {
  type T = ReturnType<typeof initConvexTest>;
  async function all(t: T, fn: "byChange" | "byTime", args: Record<string, unknown>) {
    const seen: { watchedAtMs: number }[] = [];
    let cursor: string | null = null;
    for (let i = 0; i < 20; i++) {
      const page: { page: { watchedAtMs: number }[]; isDone: boolean; continueCursor: string } =
        fn === "byChange"
          ? await t.query(internal.worker.listEventsByChange, {
              userId: A,
              afterSeq: 0,
              throughSeq: 0,
              ...args,
              paginationOpts: { numItems: 2, cursor },
            })
          : await t.query(internal.worker.listEvents, { userId: A, ...args, paginationOpts: { numItems: 2, cursor } });
      seen.push(...page.page);
      cursor = page.continueCursor;
      if (page.isDone) break;
    }
    return seen.map((e) => e.watchedAtMs);
  }

  test("imports stamp their views with the change's seq; the delta reads exactly those still stored", async () => {
    const t = initConvexTest();
    expect((await importFor(t, A, [event(0), event(5)])).seq).toBe(1);
    expect((await importFor(t, A, [event(1), event(5), event(2)])).seq).toBe(2); // event(5) is a duplicate
    expect((await importFor(t, A, [event(0)])).seq).toBeNull(); // nothing new: no change, seq not used
    await importFor(t, "other", [event(3)]);
    expect((await importFor(t, A, [event(3), event(4)])).seq).toBe(3);
    await t.mutation(internal.admin.deleteRange, { userId: A, fromMs: T0 + 4 * HOUR, toMs: T0 + 4 * HOUR }); // seq 4
    const stamped = await t.run(async (ctx) => await ctx.db.query("watchEvents").collect());
    expect(stamped.filter((r) => r.userId === A).map((r) => [r.watchedAtMs, r.changeSeq])).toEqual(
      [
        [0, 1],
        [5, 1],
        [1, 2],
        [2, 2],
        [3, 3],
      ].map(([i, seq]) => [T0 + i * HOUR, seq]),
    );
    expect(await all(t, "byChange", { afterSeq: 1, throughSeq: 4 })).toEqual([1, 2, 3].map((i) => T0 + i * HOUR));
    expect(await all(t, "byChange", { afterSeq: 0, throughSeq: 1 })).toEqual([0, 5].map((i) => T0 + i * HOUR));
    expect(await all(t, "byChange", { afterSeq: 3, throughSeq: 9 })).toEqual([]);
    // the time-ordered read leaves out views of later changes, and keeps views without a changeSeq
    await seedEvents(t, A, [event(9)]);
    expect(await all(t, "byTime", { maxChangeSeq: 2 })).toEqual([0, 1, 2, 5, 9].map((i) => T0 + i * HOUR));
    expect(await all(t, "byTime", {})).toEqual([0, 1, 2, 3, 5, 9].map((i) => T0 + i * HOUR));
  });

  test("rejects a negative or fractional seq bound, naming it", async () => {
    const t = initConvexTest();
    await expect(
      t.query(internal.worker.listEventsByChange, {
        userId: A,
        afterSeq: -1,
        throughSeq: 2,
        paginationOpts: { numItems: 2, cursor: null },
      }),
    ).rejects.toThrow(/afterSeq/);
    await expect(
      t.query(internal.worker.listEvents, { userId: A, maxChangeSeq: 1.5, paginationOpts: { numItems: 2, cursor: null } }),
    ).rejects.toThrow(/maxChangeSeq/);
  });
});

describe("storeAggregations", () => {
  type T = ReturnType<typeof initConvexTest>;
  const result = (data: unknown, extra: Partial<FlatResult> = {}): FlatResult => ({
    type: "kpi",
    filterKey: "All|all||",
    data,
    definitionVersion: 1,
    ...extra,
  });

  async function store(t: T, watermark: number, computedAtMs: number, results: FlatResult[], userId = A) {
    return await t.mutation(internal.worker.storeAggregations, {
      userId, watermark, computedAtMs, sets: toSets(results),
    });
  }

  async function aggregations(t: T) {
    return await t.run(async (ctx) => ctx.db.query("aggregations").collect());
  }

  async function resultSets(t: T) {
    return await t.run(async (ctx) => ctx.db.query("resultSets").collect());
  }

  async function seqs(t: T, n: number) {
    for (let i = 0; i < n; i++) await importFor(t, A, [event(i)]);
  }

  test("writes newer results, skips stale ones and treats repeats as no-ops", async () => {
    const t = initConvexTest();
    await seqs(t, 2);

    expect(await store(t, 1, 1000, [result({ views: 1 }, { validUntilMs: 5000 })])).toEqual({
      written: 1, unchanged: 0, skippedStale: 0, missing: [],
    });
    expect(await store(t, 2, 2000, [result({ views: 2 })])).toEqual({ written: 1, unchanged: 0, skippedStale: 0, missing: [] });
    let rows = await aggregations(t);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ watermark: 2, computedAtMs: 2000, data: { views: 2 }, dataHash: '{"views":2}' });
    let sets = await resultSets(t);
    expect(sets).toHaveLength(1);
    expect(sets[0]).toMatchObject({ userId: A, filterKey: "All|all||", watermark: 2, computedAtMs: 2000, definitionVersion: 1, validUntil: [] });
    expect(sets[0].nextValidUntilMs).toBeUndefined();

    expect(await store(t, 1, 9000, [result({ views: 1 })])).toEqual({ written: 0, unchanged: 0, skippedStale: 1, missing: [] });
    expect(await store(t, 2, 2000, [result({ views: 999 })])).toEqual({ written: 0, unchanged: 1, skippedStale: 0, missing: [] });
    rows = await aggregations(t);
    expect(rows[0]).toMatchObject({ watermark: 2, computedAtMs: 2000, data: { views: 2 } });

    // A new definition rewrites the row even when the data (and hash) are equal.
    expect(await store(t, 2, 2000, [result({ views: 2 }, { definitionVersion: 2 })])).toEqual({
      written: 1, unchanged: 0, skippedStale: 0, missing: [],
    });
    expect((await aggregations(t))[0].definitionVersion).toBe(2);
    expect((await store(t, 2, 3000, [result({ views: 3 }, { definitionVersion: 2 })])).written).toBe(1);
    rows = await aggregations(t);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ computedAtMs: 3000, definitionVersion: 2, data: { views: 3 } });
    sets = await resultSets(t);
    expect(sets[0]).toMatchObject({ watermark: 2, computedAtMs: 3000, definitionVersion: 2 });
  });

  test("a result sent without data is accepted only when the stored hash matches", async () => {
    const t = initConvexTest();
    await seqs(t, 3);
    const kpi = result({ views: 1 });
    const trend = result({ months: [1] }, { type: "monthly_trend" });
    await store(t, 1, 1000, [kpi, trend]);
    const before = await aggregations(t);
    const hashOnly = (sets: ResultSetInput[]) =>
      sets.map((set) => ({ ...set, results: set.results.map(({ data: _d, ...rest }) => rest) }));
    const call = (watermark: number, computedAtMs: number, sets: ResultSetInput[]) =>
      t.mutation(internal.worker.storeAggregations, { userId: A, watermark, computedAtMs, sets });

    // Claims that hold: nothing rewritten, the set row advances.
    expect(await call(2, 2000, hashOnly(toSets([kpi, trend])))).toEqual({
      written: 0, unchanged: 2, skippedStale: 0, missing: [],
    });
    expect(await aggregations(t)).toEqual(before);
    expect((await resultSets(t))[0]).toMatchObject({ watermark: 2, computedAtMs: 2000 });

    // One claim does not hold: the whole set is refused (nothing written) and reported missing.
    const [changedSet] = toSets([result({ views: 5 })]);
    const [wrongTrend] = hashOnly(toSets([result({ months: [2] }, { type: "monthly_trend" })]));
    const mixed = { ...changedSet, results: [...changedSet.results, ...wrongTrend.results] };
    expect(await call(3, 3000, [mixed])).toEqual({
      written: 0, unchanged: 0, skippedStale: 0, missing: ["All|all||"],
    });
    expect(await aggregations(t)).toEqual(before);
    expect((await resultSets(t))[0]).toMatchObject({ watermark: 2, computedAtMs: 2000 });
  });

  test("unchanged data writes no row; changed data replaces it; the set row always advances", async () => {
    const t = initConvexTest();
    await seqs(t, 3);
    await store(t, 1, 1000, [result({ views: 1 }), result({ months: [1] }, { type: "monthly_trend" })]);
    const before = await aggregations(t);
    const kpi0 = before.find((r) => r.type === "kpi")!;
    const trend0 = before.find((r) => r.type === "monthly_trend")!;

    const same = await store(t, 2, 2000, [result({ views: 1 }), result({ months: [1] }, { type: "monthly_trend" })]);
    expect(same).toEqual({ written: 0, unchanged: 2, skippedStale: 0, missing: [] });
    let rows = await aggregations(t);
    // Untouched documents: same id, same creation time, same "last changed" stamps.
    expect(rows.find((r) => r.type === "kpi")).toEqual(kpi0);
    expect(rows.find((r) => r.type === "monthly_trend")).toEqual(trend0);
    expect((await resultSets(t))[0]).toMatchObject({ watermark: 2, computedAtMs: 2000 });

    const changed = await store(t, 3, 3000, [result({ views: 2 }), result({ months: [1] }, { type: "monthly_trend" })]);
    expect(changed).toEqual({ written: 1, unchanged: 1, skippedStale: 0, missing: [] });
    rows = await aggregations(t);
    const kpi = rows.find((r) => r.type === "kpi")!;
    expect(kpi).toMatchObject({ _id: kpi0._id, data: { views: 2 }, watermark: 3, computedAtMs: 3000 });
    expect(kpi._creationTime).toBe(kpi0._creationTime); // replaced in place
    expect(rows.find((r) => r.type === "monthly_trend")).toEqual(trend0);
    expect((await resultSets(t))[0]).toMatchObject({ watermark: 3, computedAtMs: 3000 });
  });

  test("a stale set is skipped as a whole and a repeat changes nothing", async () => {
    const t = initConvexTest();
    await seqs(t, 2);
    const full = (v: number) => [result({ v }), result({ v }, { type: "monthly_trend" }), result({ v }, { type: "top_channels" })];
    await store(t, 2, 2000, full(2));
    const rowsBefore = await aggregations(t);
    const setBefore = await resultSets(t);

    expect(await store(t, 1, 5000, full(1))).toEqual({ written: 0, unchanged: 0, skippedStale: 3, missing: [] });
    expect(await store(t, 2, 2000, full(9))).toEqual({ written: 0, unchanged: 3, skippedStale: 0, missing: [] });
    expect(await store(t, 2, 1500, full(9))).toEqual({ written: 0, unchanged: 3, skippedStale: 0, missing: [] });
    expect(await aggregations(t)).toEqual(rowsBefore);
    expect(await resultSets(t)).toEqual(setBefore);
  });

  test("a replica on an older definition cannot overwrite a newer one, even with newer data", async () => {
    const t = initConvexTest();
    await seqs(t, 2);
    await store(t, 1, 1000, [result({ v: 1 }, { definitionVersion: 2 }), result({ v: 1 }, { type: "monthly_trend", definitionVersion: 2 })]);
    const rowsBefore = await aggregations(t);
    const older = await store(t, 2, 4000, [result({ v: 2 }), result({ v: 2 }, { type: "monthly_trend" })]);
    expect(older).toEqual({ written: 0, unchanged: 0, skippedStale: 2, missing: [] });
    expect(await aggregations(t)).toEqual(rowsBefore);
    expect((await resultSets(t))[0]).toMatchObject({ watermark: 1, definitionVersion: 2 });
  });

  test("guards each set of a call on its own", async () => {
    const t = initConvexTest();
    await seqs(t, 2);
    await store(t, 2, 2000, [result(1, { filterKey: "YTD|all||" })]);
    const outcome = await store(t, 1, 1000, [
      result(1),
      result(1, { type: "monthly_trend" }),
      result(2, { filterKey: "YTD|all||" }),
    ]);
    expect(outcome).toEqual({ written: 2, unchanged: 0, skippedStale: 1, missing: [] });
    const sets = (await resultSets(t)).map((r) => [r.filterKey, r.watermark]).sort();
    expect(sets).toEqual([["All|all||", 1], ["YTD|all||", 2]]);
  });

  test("readers never see two watermarks within one filter set", async () => {
    const t = initConvexTest();
    await seqs(t, 2);
    const alice = t.withIdentity(ALICE);
    await store(t, 1, 1000, [result({ v: 1 }), result({ m: 1 }, { type: "monthly_trend" }), result({ c: 1 }, { type: "top_channels" })]);
    // Only kpi changes at watermark 2; the other rows keep their stamps from watermark 1.
    await store(t, 2, 2000, [result({ v: 2 }), result({ m: 1 }, { type: "monthly_trend" }), result({ c: 1 }, { type: "top_channels" })]);
    const rows = await aggregations(t);
    expect(new Set(rows.map((r) => r.watermark))).toEqual(new Set([1, 2]));

    const dash = (await alice.query(api.dashboard.getDashboard, {}))!;
    expect(dash.aggregations).toHaveLength(3);
    for (const view of dash.aggregations) {
      expect(view).toMatchObject({ watermark: 2, computedAtMs: 2000, stale: false });
    }
    expect(dash.freshness).toMatchObject({ watermark: 2, computedAtMs: 2000, stale: false });
    const changedAt = Object.fromEntries(dash.aggregations.map((a) => [a.type, a.dataChangedAtMs]));
    expect(changedAt).toEqual({ kpi: 2000, monthly_trend: 1000, top_channels: 1000 });
    for (const type of ["kpi", "monthly_trend", "top_channels"] as const) {
      expect(await alice.query(api.dashboard.getAggregation, { type })).toMatchObject({ watermark: 2, computedAtMs: 2000 });
    }
  });

  test("the set row lists its rows, so a later store decides from it without reading their data", async () => {
    const t = initConvexTest();
    await seqs(t, 3);
    const trend = result({ months: [1] }, { type: "monthly_trend" });
    await store(t, 1, 1000, [result({ views: 1 }), trend]);
    const listed = async () => {
      const [set] = await resultSets(t);
      const byId = new Map((await aggregations(t)).map((row) => [row._id, row]));
      return set.rows!.map((r) => {
        const row = byId.get(r.id)!;
        expect(r).toEqual({ type: row.type, id: row._id, dataHash: row.dataHash, definitionVersion: row.definitionVersion });
        return r.type;
      });
    };
    expect(await listed()).toEqual(["kpi", "monthly_trend"]);
    expect(await store(t, 2, 2000, [result({ views: 2 })])).toMatchObject({ written: 1, unchanged: 0 });
    expect(await listed()).toEqual(["kpi"]); // the type no longer sent was deleted and unlisted
    expect(await aggregations(t)).toHaveLength(1);

    // A set row stored before `rows` existed: its rows are read once, then listed.
    await t.run(async (ctx) => {
      const [set] = await ctx.db.query("resultSets").collect();
      const { _id, _creationTime, rows: _rows, ...legacy } = set;
      await ctx.db.replace(_id, legacy);
    });
    expect((await resultSets(t))[0].rows).toBeUndefined();
    expect(await store(t, 3, 3000, [result({ views: 2 }), trend])).toMatchObject({ written: 1, unchanged: 1 });
    expect(await listed()).toEqual(["kpi", "monthly_trend"]);
    expect(await aggregations(t)).toHaveLength(2);
  });

  test("types missing from a stored set are removed", async () => {
    const t = initConvexTest();
    await seqs(t, 2);
    await store(t, 1, 1000, [result(1), result(1, { type: "monthly_trend" })]);
    expect(await store(t, 2, 2000, [result(1)])).toEqual({ written: 0, unchanged: 1, skippedStale: 0, missing: [] });
    expect((await aggregations(t)).map((r) => r.type)).toEqual(["kpi"]);
    expect(await t.withIdentity(ALICE).query(api.dashboard.getAggregation, { type: "monthly_trend" })).toBeNull();
  });

  test("records expiry per type and the set's earliest expiry", async () => {
    const t = initConvexTest();
    await seqs(t, 1);
    await store(t, 1, 1000, [
      result(1, { filterKey: "MTD|all||", validUntilMs: 9000 }),
      result(1, { filterKey: "MTD|all||", type: "monthly_trend", validUntilMs: 7000 }),
      result(1, { filterKey: "MTD|all||", type: "top_channels" }),
    ]);
    const [set] = await resultSets(t);
    expect(set.validUntil).toEqual([
      { type: "kpi", validUntilMs: 9000 },
      { type: "monthly_trend", validUntilMs: 7000 },
    ]);
    expect(set.nextValidUntilMs).toBe(7000);
    expect(await aggregations(t)).toSatisfy((rows: Doc<"aggregations">[]) => rows.every((r) => !("validUntilMs" in r)));
  });

  test("keys rows by user, type and filter key", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await importFor(t, "user-b", [event(0)]);
    await store(t, 1, 1, [result(1), result(2, { type: "monthly_trend" }), result(3, { filterKey: "YTD|all||" })]);
    await store(t, 1, 1, [result(4)], "user-b");
    const rows = await aggregations(t);
    expect(rows.map((r) => [r.userId, r.type, r.filterKey, r.data]).sort()).toEqual(
      [
        [A, "kpi", "All|all||", 1],
        [A, "monthly_trend", "All|all||", 2],
        [A, "kpi", "YTD|all||", 3],
        ["user-b", "kpi", "All|all||", 4],
      ].sort(),
    );
    expect((await resultSets(t)).map((r) => [r.userId, r.filterKey]).sort()).toEqual(
      [[A, "All|all||"], [A, "YTD|all||"], ["user-b", "All|all||"]].sort(),
    );
  });

  test("rejects bad calls without writing anything", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    const call = (sets: ResultSetInput[], watermark = 1) =>
      t.mutation(internal.worker.storeAggregations, { userId: A, watermark, computedAtMs: 1, sets });
    const set = (filterKey: string, n: number, extra: Partial<ResultSetInput["results"][number]> = {}): ResultSetInput => ({
      filterKey,
      definitionVersion: 1,
      results: Array.from({ length: n }, (_, i) => ({ type: AGGREGATION_TYPES[i % 14], data: i, dataHash: `h${i}`, ...extra })),
    });
    await expect(call([set("All|all||", 1)], 2)).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "watermark" } });
    await expect(
      call([set("a", 14), set("b", 14), set("c", 14), set("d", 14)]),
    ).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "sets" } });
    await expect(call([set("a", 1), set("a", 1)])).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "filterKey" } });
    await expect(call([set("a", 15)])).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "type" } });
    await expect(call([set("a", 1, { dataHash: "" })])).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "dataHash" } });
    await expect(call([set("", 1)])).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "filterKey" } });
    await expect(call([set("a", 1, { validUntilMs: Infinity })])).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "validUntilMs" } });
    expect(await aggregations(t)).toHaveLength(0);
    expect(await resultSets(t)).toHaveLength(0);
    // 3 sets × 14 = 42 results fit in one call.
    expect(await call([set("a", 14), set("b", 14), set("c", 14)])).toEqual({ written: 42, unchanged: 0, skippedStale: 0, missing: [] });
  });
});

describe("ackChanges", () => {
  test("marks rows up to upToSeq done, raises ackedSeq, releases our lease; idempotent", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await importFor(t, A, [event(1)]);
    await importFor(t, A, [event(2)]);
    await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });

    expect(await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 2 })).toEqual({ acked: 2, superseded: 0 });
    let rows = await changeRows(t, A);
    expect(rows.map((r) => r.status)).toEqual(["done", "done", "pending"]);
    expect(rows[0].processedAtMs).toBeTypeOf("number");
    let user = await userRow(t, A);
    expect(user).toMatchObject({ ackedSeq: 2, lastSeq: 3 });
    expect(await leaseOf(t, A)).toBeNull();

    expect(await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 2 })).toEqual({ acked: 0, superseded: 0 });
    expect((await userRow(t, A))!.ackedSeq).toBe(2);

    await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w2", leaseMs: 60_000 });
    expect(await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 99 })).toEqual({ acked: 1, superseded: 0 });
    user = await userRow(t, A);
    expect(user).toMatchObject({ ackedSeq: 3 });
    expect(await leaseOf(t, A)).toMatchObject({ owner: "w2" }); // another worker's lease is kept
    rows = await changeRows(t, A);
    expect(rows.every((r) => r.status === "done")).toBe(true);
  });

  test("acking an unknown user is a no-op", async () => {
    const t = initConvexTest();
    expect(await t.mutation(internal.worker.ackChanges, { userId: "nobody", workerId: "w1", upToSeq: 5 })).toEqual({ acked: 0, superseded: 0 });
    expect(await userRow(t, "nobody")).toBeNull();
  });
});

/** The user's raw `leases` row (with `backoffAttempts`), or null. */
async function leaseRow(t: ReturnType<typeof initConvexTest>, userId: string) {
  return await t.run(async (ctx) =>
    ctx.db
      .query("leases")
      .withIndex("by_userId", (q) => q.eq("userId", userId))
      .unique(),
  );
}

/** Move the user's lease expiry to `expiresAtMs` (epoch ms): time passing, for the lease. */
async function expireLease(t: ReturnType<typeof initConvexTest>, userId: string, expiresAtMs = Date.now() - 1) {
  await t.run(async (ctx) => {
    const lease = await ctx.db
      .query("leases")
      .withIndex("by_userId", (q) => q.eq("userId", userId))
      .unique();
    await ctx.db.patch(lease!._id, { expiresAtMs });
  });
}

/** Fail `userId`'s rows up to `upToSeq` until they are dead-lettered (5 calls). */
async function deadLetter(t: ReturnType<typeof initConvexTest>, userId: string, upToSeq: number) {
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    await t.mutation(internal.worker.failChanges, { userId, workerId: "w1", upToSeq, error: `boom ${attempt}` });
  }
}

describe("failChanges", () => {
  test("counts attempts, backs off 1, 4, 16, 64 s and dead-letters a row at the fifth failure", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await importFor(t, A, [event(1)]);
    expect(RETRY_BACKOFF_MS).toEqual([1_000, 4_000, 16_000, 64_000]);
    // a fixed clock: the lease must end exactly backoffMs after the failure
    vi.useFakeTimers({ toFake: ["Date"] });
    try {
      for (let attempt = 1; attempt < MAX_ATTEMPTS; attempt++) {
        const now = 1_800_000_000_000 + attempt * 100_000;
        vi.setSystemTime(now);
        const r = await t.mutation(internal.worker.failChanges, { userId: A, workerId: "w1", upToSeq: 1, error: `boom ${attempt}` });
        const backoffMs = RETRY_BACKOFF_MS[attempt - 1];
        expect(r).toEqual({ failed: 1, deadLettered: 0, backoffMs });
        const lease = await leaseRow(t, A);
        expect(lease).toMatchObject({ owner: "w1", backoffAttempts: attempt, expiresAtMs: now + backoffMs });
      }
    } finally {
      vi.useRealTimers();
    }
    let rows = await changeRows(t, A);
    expect(rows[0]).toMatchObject({ status: "pending", attempts: 4, error: "boom 4" });

    const last = await t.mutation(internal.worker.failChanges, { userId: A, workerId: "w1", upToSeq: 1, error: "x".repeat(5000) });
    expect(last).toEqual({ failed: 1, deadLettered: 1, backoffMs: 0 });
    rows = await changeRows(t, A);
    expect(rows[0]).toMatchObject({ status: "failed", attempts: 5 });
    expect(rows[0].error).toHaveLength(2000);
    expect(rows[1]).toMatchObject({ status: "pending", attempts: 0 });
    // nothing failed is left to retry: the lease is released at once, the newer change is claimable
    expect(await leaseOf(t, A)).toBeNull();
    const claim = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w2", leaseMs: 60_000 });
    expect(claim.granted).toBe(true);
    expect(claim.changes.map((c) => c.seq)).toEqual([2]);

    const pending = await t.query(internal.worker.pendingChanges, {});
    expect(pending.map((c) => c.seq)).toEqual([2]);
    expect(await t.mutation(internal.worker.failChanges, { userId: A, workerId: "w2", upToSeq: 1, error: "again" })).toEqual({
      failed: 0,
      deadLettered: 0,
      backoffMs: 0,
    });
    expect(await leaseOf(t, A)).toBeNull();
  });

  test("a backoff lease is denied to every worker, the failing one included, until it expires", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    expect((await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 })).granted).toBe(true);
    const failed = await t.mutation(internal.worker.failChanges, { userId: A, workerId: "w1", upToSeq: 1, error: "boom" });
    expect(failed.backoffMs).toBe(1_000);
    await importFor(t, A, [event(1)]); // a new change while the user is backed off

    for (const workerId of ["w1", "w2"]) {
      const denied = await t.mutation(internal.worker.claimUser, { userId: A, workerId, leaseMs: 60_000 });
      expect(denied).toMatchObject({ granted: false, leaseOwner: "w1", changes: [] });
      expect(denied.retryAfterMs).toBeGreaterThan(0);
      expect(denied.retryAfterMs).toBeLessThanOrEqual(1_000);
    }
    expect(await leaseRow(t, A)).toMatchObject({ owner: "w1", backoffAttempts: 1 });

    await expireLease(t, A); // the backoff has passed
    const claim = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w2", leaseMs: 60_000 });
    expect(claim.granted).toBe(true);
    expect(claim.changes.map((c) => c.seq)).toEqual([1, 2]); // the retry and the change that arrived meanwhile
    const lease = await leaseRow(t, A);
    expect(lease).toMatchObject({ owner: "w2" });
    expect(lease!.backoffAttempts).toBeUndefined(); // an ordinary lease again: w2 may renew it
    expect((await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w2", leaseMs: 60_000 })).granted).toBe(true);
  });

  test("the backoff follows the most attempts left pending; another worker's live lease is kept", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await importFor(t, A, [event(1)]);
    await t.run(async (ctx) => {
      const first = (await ctx.db.query("changeLog").collect()).find((r) => r.userId === A && r.seq === 1);
      await ctx.db.patch(first!._id, { attempts: 2 });
    });
    const r = await t.mutation(internal.worker.failChanges, { userId: A, workerId: "w1", upToSeq: 2, error: "boom" });
    expect(r).toEqual({ failed: 2, deadLettered: 0, backoffMs: retryBackoffMs(3) });
    expect(retryBackoffMs(3)).toBe(16_000);
    expect(await leaseRow(t, A)).toMatchObject({ owner: "w1", backoffAttempts: 3 });
    expect((await changeRows(t, A)).map((row) => row.attempts)).toEqual([3, 1]);

    // w2 holds a live lease (it took over after w1's had expired): w1's late failure leaves it alone
    await expireLease(t, A);
    await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w2", leaseMs: 60_000 });
    const late = await t.mutation(internal.worker.failChanges, { userId: A, workerId: "w1", upToSeq: 2, error: "late" });
    expect(late).toEqual({ failed: 2, deadLettered: 0, backoffMs: 0 });
    const lease = await leaseRow(t, A);
    expect(lease).toMatchObject({ owner: "w2" });
    expect(lease!.backoffAttempts).toBeUndefined();
    expect(retryBackoffMs(9)).toBe(64_000); // beyond the table: its last step
  });
});

describe("renewLease", () => {
  test("the holder extends its lease; the claim's changes and interests are not read again", async () => {
    const start = useServerClock(T_SERVER);
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    const claim = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 500 });
    expect(claim.leaseExpiresAtMs).toBe(start + 500);

    vi.setSystemTime(start + 400);
    const renewed = await t.mutation(internal.worker.renewLease, { userId: A, workerId: "w1", leaseMs: 500 });
    expect(renewed).toEqual({ renewed: true, leaseOwner: "w1", leaseExpiresAtMs: start + 900 });
    expect(await leaseOf(t, A)).toEqual({ owner: "w1", expiresAtMs: start + 900 });

    // past the claim's expiry, another replica is still denied: the lease was renewed
    vi.setSystemTime(start + 700);
    const denied = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w2", leaseMs: 500 });
    expect(denied).toMatchObject({ granted: false, leaseOwner: "w1", retryAfterMs: 200 });

    // a shorter renewal never shortens the lease
    const shorter = await t.mutation(internal.worker.renewLease, { userId: A, workerId: "w1", leaseMs: 1 });
    expect(shorter).toEqual({ renewed: true, leaseOwner: "w1", leaseExpiresAtMs: start + 900 });

    // the rows are acknowledged as usual, which releases the lease: renewing it then is refused
    await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 1 });
    expect(await t.mutation(internal.worker.renewLease, { userId: A, workerId: "w1", leaseMs: 500 })).toEqual({
      renewed: false,
    });
    expect(await leaseOf(t, A)).toBeNull();
  });

  test("another worker cannot renew a lease it does not hold", async () => {
    const start = useServerClock(T_SERVER);
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    const refused = await t.mutation(internal.worker.renewLease, { userId: A, workerId: "w2", leaseMs: 60_000 });
    expect(refused).toEqual({ renewed: false, leaseOwner: "w1", leaseExpiresAtMs: start + 60_000 });
    expect(await leaseOf(t, A)).toEqual({ owner: "w1", expiresAtMs: start + 60_000 });
    // nor a user nobody claimed (no lease is created)
    expect(await t.mutation(internal.worker.renewLease, { userId: BOB.tokenIdentifier, workerId: "w2", leaseMs: 1000 })).toEqual({
      renewed: false,
    });
    expect(await leaseOf(t, BOB.tokenIdentifier)).toBeNull();
  });

  test("an expired lease another worker took over is lost; one nobody took over is still the holder's", async () => {
    const start = useServerClock(T_SERVER);
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 500 });

    // expired, not claimed by anyone since: still w1's, renewed from now
    vi.setSystemTime(start + 600);
    expect(await t.mutation(internal.worker.renewLease, { userId: A, workerId: "w1", leaseMs: 500 })).toEqual({
      renewed: true,
      leaseOwner: "w1",
      leaseExpiresAtMs: start + 1100,
    });

    // expired and taken over by w2: w1's renewal is refused and w2's lease is left as it is
    vi.setSystemTime(start + 1200);
    const takeover = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w2", leaseMs: 500 });
    expect(takeover.granted).toBe(true);
    const lost = await t.mutation(internal.worker.renewLease, { userId: A, workerId: "w1", leaseMs: 500 });
    expect(lost).toEqual({ renewed: false, leaseOwner: "w2", leaseExpiresAtMs: start + 1700 });
    expect(await leaseOf(t, A)).toEqual({ owner: "w2", expiresAtMs: start + 1700 });
  });

  test("a retry backoff is not renewable, not even by the worker that failed", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    const failed = await t.mutation(internal.worker.failChanges, { userId: A, workerId: "w1", upToSeq: 1, error: "boom" });
    expect(failed.backoffMs).toBe(RETRY_BACKOFF_MS[0]);
    const backoff = await leaseRow(t, A);
    expect(backoff).toMatchObject({ owner: "w1", backoffAttempts: 1 });
    const refused = await t.mutation(internal.worker.renewLease, { userId: A, workerId: "w1", leaseMs: 60_000 });
    expect(refused).toEqual({ renewed: false, leaseOwner: "w1", leaseExpiresAtMs: backoff!.expiresAtMs });
    expect(await leaseRow(t, A)).toEqual(backoff); // unchanged: still the 1 s backoff
  });

  test("rejects a lease longer than an hour or not positive, and a bad worker id", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    for (const leaseMs of [0, 3_600_001, 1.5, Number.NaN]) {
      await expect(
        t.mutation(internal.worker.renewLease, { userId: A, workerId: "w1", leaseMs }),
      ).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "leaseMs" } });
    }
    for (const workerId of ["", "w".repeat(257)]) {
      await expect(
        t.mutation(internal.worker.renewLease, { userId: A, workerId, leaseMs: 1000 }),
      ).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "workerId" } });
    }
  });
});

describe("dead letters", () => {
  test("admin:listDeadLetters lists dead-lettered rows only, by user then seq, with the last error", async () => {
    const t = initConvexTest();
    const B = "user-b";
    for (const userId of [B, A]) {
      await importFor(t, userId, [event(0)]);
      await importFor(t, userId, [event(1)]);
    }
    expect(await t.query(internal.admin.listDeadLetters, {})).toEqual([]);
    for (const userId of [B, A]) await deadLetter(t, userId, 1);
    const all = await t.query(internal.admin.listDeadLetters, {});
    expect(all.map((r) => [r.userId, r.seq])).toEqual([[A, 1], [B, 1]].sort());
    expect(all[0]).toMatchObject({ kind: "import", count: 1, attempts: MAX_ATTEMPTS, error: `boom ${MAX_ATTEMPTS}` });
    expect(typeof all[0].failedAtMs).toBe("number");
    expect(await t.query(internal.admin.listDeadLetters, { userId: B })).toMatchObject([{ userId: B, seq: 1 }]);
    expect(await t.query(internal.admin.listDeadLetters, { limit: 1 })).toHaveLength(1);
    await expect(t.query(internal.admin.listDeadLetters, { limit: 0 })).rejects.toThrow(/limit must be an integer/);
  });

  test("an acknowledged recompute at a later watermark supersedes the user's dead letters", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await importFor(t, "user-b", [event(0)]);
    await deadLetter(t, A, 1);
    await deadLetter(t, "user-b", 1);
    expect((await t.query(internal.admin.listDeadLetters, { userId: A })).map((r) => r.seq)).toEqual([1]);

    // the operator asks for a recompute; the worker claims it, stores results at watermark 2, acks
    const { seq } = await t.mutation(internal.admin.requestRecompute, { userId: A });
    const claim = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    expect(claim.changes.map((c) => c.seq)).toEqual([seq]); // the dead letter is not delivered
    await t.mutation(internal.worker.storeAggregations, {
      userId: A, watermark: seq, computedAtMs: Date.now(),
      sets: toSets([{ type: "kpi", filterKey: "All|all||", data: { views: 1 }, definitionVersion: 1 }]),
    });
    expect(await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: seq })).toEqual({
      acked: 1,
      superseded: 1,
    });

    expect(await t.query(internal.admin.listDeadLetters, { userId: A })).toEqual([]);
    const [row] = await changeRows(t, A);
    // done, with its history: 5 failed attempts and the last error
    expect(row).toMatchObject({ status: "done", attempts: MAX_ATTEMPTS, error: `boom ${MAX_ATTEMPTS}` });
    expect(row.processedAtMs).toBeTypeOf("number");
    expect(await userRow(t, A)).toMatchObject({ ackedSeq: seq });
    // another user's dead letter is not touched
    expect((await t.query(internal.admin.listDeadLetters, {})).map((r) => r.userId)).toEqual(["user-b"]);
  });

  test("dead letters above the acknowledged watermark stay listed", async () => {
    const t = initConvexTest();
    await t.run(async (ctx) => {
      const row = (seq: number, status: "pending" | "failed") => ({
        userId: A, seq, kind: "manual" as const, count: 0, status,
        attempts: status === "failed" ? MAX_ATTEMPTS : 0, createdAtMs: 0,
      });
      await ctx.db.insert("changeLog", row(1, "failed"));
      await ctx.db.insert("changeLog", row(2, "pending"));
      await ctx.db.insert("changeLog", row(3, "failed"));
      await ctx.db.insert("users", { userId: A, timeZone: "UTC", lastSeq: 3, ackedSeq: 0, eventCount: 0 });
    });
    expect(await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 2 })).toEqual({
      acked: 1,
      superseded: 1,
    });
    expect((await t.query(internal.admin.listDeadLetters, {})).map((r) => r.seq)).toEqual([3]);
  });

  test("an acknowledgement that consumed no pending row (an empty claim) supersedes nothing", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await deadLetter(t, A, 1);
    const claim = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    expect(claim.changes).toEqual([]);
    expect(await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 1 })).toEqual({
      acked: 0,
      superseded: 0,
    });
    expect((await t.query(internal.admin.listDeadLetters, {})).map((r) => r.seq)).toEqual([1]);
    expect(await leaseOf(t, A)).toBeNull(); // the lease is still released
  });

  test("admin:retryDeadLetters puts dead letters back to pending, per user or all, a page at a time", async () => {
    const t = initConvexTest();
    const B = "user-b";
    await importFor(t, A, [event(0)]);
    await importFor(t, A, [event(1)]);
    await importFor(t, B, [event(0)]);
    await deadLetter(t, A, 2);
    await deadLetter(t, B, 1);
    expect(await t.query(internal.worker.pendingChanges, {})).toEqual([]);

    expect(await t.mutation(internal.admin.retryDeadLetters, { userId: B })).toEqual({ retried: 1, hasMore: false });
    const [b] = await changeRows(t, B);
    expect(b).toMatchObject({ status: "pending", attempts: 0 });
    expect(b.error).toBeUndefined();
    expect(b.processedAtMs).toBeUndefined();
    expect((await t.query(internal.worker.pendingChanges, {})).map((c) => [c.userId, c.seq])).toEqual([[B, 1]]);

    expect(await t.mutation(internal.admin.retryDeadLetters, { limit: 1 })).toEqual({ retried: 1, hasMore: true });
    expect(await t.mutation(internal.admin.retryDeadLetters, {})).toEqual({ retried: 1, hasMore: false });
    expect(await t.mutation(internal.admin.retryDeadLetters, {})).toEqual({ retried: 0, hasMore: false });
    expect(await t.query(internal.admin.listDeadLetters, {})).toEqual([]);
    // delivered again in their commit order, and claimed like any pending change
    expect((await t.query(internal.worker.pendingChanges, {})).map((c) => [c.userId, c.seq])).toEqual([
      [A, 1],
      [A, 2],
      [B, 1],
    ]);
    const claim = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    expect(claim.changes.map((c) => c.seq)).toEqual([1, 2]);
    expect(await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 2 })).toEqual({
      acked: 2,
      superseded: 0,
    });
  });

  test("a retried row that fails again counts its attempts from zero", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    await deadLetter(t, A, 1);
    await t.mutation(internal.admin.retryDeadLetters, { userId: A });
    const r = await t.mutation(internal.worker.failChanges, { userId: A, workerId: "w1", upToSeq: 1, error: "still" });
    expect(r).toEqual({ failed: 1, deadLettered: 0, backoffMs: RETRY_BACKOFF_MS[0] });
    expect((await changeRows(t, A))[0]).toMatchObject({ status: "pending", attempts: 1, error: "still" });
  });

  test("admin:retryDeadLetters rejects a bad limit or user id", async () => {
    const t = initConvexTest();
    for (const limit of [0, 4001, 1.5]) {
      await expect(t.mutation(internal.admin.retryDeadLetters, { limit })).rejects.toMatchObject({
        data: { code: "INVALID_ARGUMENT", field: "limit" },
      });
    }
    await expect(t.mutation(internal.admin.retryDeadLetters, { userId: "" })).rejects.toMatchObject({
      data: { code: "INVALID_ARGUMENT", field: "userId" },
    });
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
        sets: toSets([
          { type: "kpi", filterKey: "MTD|all||", data: {}, definitionVersion: 1, validUntilMs: now + HOUR },
          // user-c's MTD set expires through its second type only.
          { type: "monthly_trend", filterKey: "MTD|all||", data: {}, definitionVersion: 1, validUntilMs: userId === A ? now + HOUR : now - 2 },
          { type: "top_channels", filterKey: "All|all||", data: {}, definitionVersion: 1 },
          ...(userId === A
            ? [{ type: "kpi" as const, filterKey: "YTD|all||", data: {}, definitionVersion: 1, validUntilMs: now - 1 }]
            : []),
        ]),
      });
    }
    await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 1 });
    await t.mutation(internal.worker.ackChanges, { userId: "user-c", workerId: "w1", upToSeq: 1 });
    // user-b still has its import pending → skipped.

    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: now })).toEqual({ enqueued: 2, retired: 0, removedInterests: 0 });
    const a = await changeRows(t, A);
    expect(a.map((r) => [r.seq, r.kind, r.status])).toEqual([
      [1, "import", "done"],
      [2, "expiry", "pending"],
    ]);
    expect(a[1]).toMatchObject({ count: 1 });
    expect((await changeRows(t, "user-b")).map((r) => r.kind)).toEqual(["import"]);
    expect((await changeRows(t, "user-c")).map((r) => r.kind)).toEqual(["import", "expiry"]);

    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: now })).toEqual({ enqueued: 0, retired: 0, removedInterests: 0 });
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: now - 10 })).toEqual({ enqueued: 0, retired: 0, removedInterests: 0 });
  });

  test("a recompute moves the set's expiry forward", async () => {
    const t = initConvexTest();
    await importFor(t, A, [event(0)]);
    const store = (watermark: number, validUntilMs: number) =>
      t.mutation(internal.worker.storeAggregations, {
        userId: A, watermark, computedAtMs: watermark * 1000,
        sets: toSets([{ type: "kpi", filterKey: "MTD|all||", data: {}, definitionVersion: 1, validUntilMs }]),
      });
    await store(1, 100);
    await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 1 });
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: 150 })).toEqual({ enqueued: 1, retired: 0, removedInterests: 0 });
    // Same data (no row write), new expiry: the set is no longer expired at 150.
    expect(await store(2, 200)).toEqual({ written: 0, unchanged: 1, skippedStale: 0, missing: [] });
    await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: 2 });
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: 150 })).toEqual({ enqueued: 0, retired: 0, removedInterests: 0 });
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: 200 })).toEqual({ enqueued: 1, retired: 0, removedInterests: 0 });
  });

  test("retires an expired on-demand set whose interest expired, instead of enqueueing its user forever", async () => {
    const now = useServerClock(T_SERVER);
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    await alice.mutation(api.watchEvents.importBatch, { events: [event(0)] });
    const topics = { timeframe: "MTD" as const, product: "all" as const, topics: ["gaming"] };
    const { filterKey } = await alice.mutation(api.dashboard.registerFilter, { filters: topics });
    const results = (key: string, validUntilMs: number) => [
      { type: "kpi" as const, filterKey: key, data: { views: 1 }, definitionVersion: 1, validUntilMs },
      { type: "top_channels" as const, filterKey: key, data: {}, definitionVersion: 1 },
    ];
    const lastSeq = (await changeRows(t, A)).length;
    await t.mutation(internal.worker.storeAggregations, {
      userId: A, watermark: lastSeq, computedAtMs: now,
      sets: toSets([...results("MTD|all||", now + HOUR), ...results(filterKey, now - 1)]),
    });
    await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: lastSeq });
    const count = async (table: "aggregations" | "resultSets" | "filterInterests") =>
      (await t.run(async (ctx) => ctx.db.query(table).collect())).length;

    // Interest still live: the expired set is recomputed as any other.
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: now })).toEqual({ enqueued: 1, retired: 0, removedInterests: 0 });
    await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: lastSeq + 1 });

    // A day later the interest has expired: the set is deleted once, and nothing is enqueued for it.
    const later = useServerClock(now + 25 * HOUR);
    await t.mutation(internal.worker.storeAggregations, {
      userId: A, watermark: lastSeq + 1, computedAtMs: later, sets: toSets(results("MTD|all||", later + HOUR)),
    });
    expect([await count("aggregations"), await count("resultSets"), await count("filterInterests")]).toEqual([4, 2, 1]);
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: later })).toEqual({ enqueued: 0, retired: 1, removedInterests: 0 });
    expect([await count("aggregations"), await count("resultSets"), await count("filterInterests")]).toEqual([2, 1, 0]);
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: later })).toEqual({ enqueued: 0, retired: 0, removedInterests: 0 });

    // Asking for the filter again registers it anew (a "filter" change recomputes it).
    await alice.mutation(api.dashboard.registerFilter, { filters: topics });
    expect((await changeRows(t, A)).at(-1)).toMatchObject({ kind: "filter", status: "pending" });
  });

  test("removes an expired interest whose set was never stored, and keeps a renewed one", async () => {
    const start = useServerClock(T_SERVER);
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    const left = { timeframe: "All" as const, product: "all" as const, topics: ["gaming"] };
    const renewed = { timeframe: "All" as const, product: "all" as const, topics: ["music"] };
    await alice.mutation(api.dashboard.registerFilter, { filters: left });
    await alice.mutation(api.dashboard.registerFilter, { filters: renewed });
    useServerClock(start + DAY - HOUR);
    await alice.mutation(api.dashboard.registerFilter, { filters: renewed });
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: start + DAY - HOUR })).toEqual({
      enqueued: 0, retired: 0, removedInterests: 0,
    });

    // The registered but never computed set (no resultSets row) is gone once its interest expired;
    // the one renewed before its expiry stays, with its new expiry.
    const now = useServerClock(start + DAY);
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: now })).toEqual({
      enqueued: 0, retired: 0, removedInterests: 1,
    });
    expect(await interestsOf(t, A)).toEqual([["All|all|music|", start + 2 * DAY - HOUR]]);
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: now })).toEqual({
      enqueued: 0, retired: 0, removedInterests: 0,
    });
    const claim = await t.mutation(internal.worker.claimUser, { userId: A, workerId: "w1", leaseMs: 60_000 });
    expect(claim.interests).toEqual([renewed]);

    // Asking for the removed filter again registers it anew, with a "filter" change to compute it.
    await alice.mutation(api.dashboard.registerFilter, { filters: left });
    expect((await changeRows(t, A)).at(-1)).toMatchObject({ kind: "filter", status: "pending" });
    const [gaming, music] = await interestsOf(t, A);
    expect(gaming[0]).toBe("All|all|gaming|");
    expect(gaming[1]).toBeGreaterThanOrEqual(now + DAY);
    expect(music).toEqual(["All|all|music|", start + 2 * DAY - HOUR]);
  });

  test("an expired interest whose set is stored goes; the set keeps its results until its own expiry", async () => {
    const start = useServerClock(T_SERVER);
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    await alice.mutation(api.watchEvents.importBatch, { events: [event(0)] });
    const filters = { timeframe: "All" as const, product: "all" as const, topics: ["gaming"] };
    const { filterKey } = await alice.mutation(api.dashboard.registerFilter, { filters });
    const lastSeq = (await changeRows(t, A)).length;
    await t.mutation(internal.worker.storeAggregations, {
      userId: A, watermark: lastSeq, computedAtMs: start,
      sets: toSets([
        { type: "kpi", filterKey, data: { views: 1 }, definitionVersion: 1, validUntilMs: start + DAY + 6 * HOUR },
        { type: "top_channels", filterKey, data: {}, definitionVersion: 1 },
      ]),
    });
    await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w1", upToSeq: lastSeq });

    const now = useServerClock(start + DAY + HOUR);
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: now })).toEqual({
      enqueued: 0, retired: 0, removedInterests: 1,
    });
    expect(await interestsOf(t, A)).toEqual([]);
    expect(await alice.query(api.dashboard.getAggregation, { type: "kpi", filters })).toMatchObject({
      data: { views: 1 }, watermark: lastSeq,
    });

    // Its expiry passed: the set is retired although its interest is already gone.
    const later = useServerClock(start + DAY + 6 * HOUR);
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: later })).toEqual({
      enqueued: 0, retired: 1, removedInterests: 0,
    });
    expect(await alice.query(api.dashboard.getAggregation, { type: "kpi", filters })).toBeNull();
    const left = await t.run(async (ctx) => ({
      sets: (await ctx.db.query("resultSets").collect()).length,
      rows: (await ctx.db.query("aggregations").collect()).length,
    }));
    expect(left).toEqual({ sets: 0, rows: 0 });
  });

  test("removes expired interests in bounded batches, the longest expired first", async () => {
    const start = useServerClock(T_SERVER);
    const t = initConvexTest();
    // More expired rows than one call removes, over two users and two expiry times, and live ones.
    await insertInterests(t, A, "old", EXPIRED_INTERESTS_PER_CALL, start - 2 * DAY);
    await insertInterests(t, "user-b", "new", 10, start - HOUR);
    await insertInterests(t, "user-b", "live", 3, start + HOUR);
    await insertInterests(t, A, "live", 2, start + 1);
    const sweep = () => t.mutation(internal.worker.enqueueExpired, { nowMs: start });

    expect(await sweep()).toEqual({ enqueued: 0, retired: 0, removedInterests: EXPIRED_INTERESTS_PER_CALL });
    expect(await interestsOf(t, A)).toEqual([
      ["All|all|live0000|", start + 1],
      ["All|all|live0001|", start + 1],
    ]);
    expect(await interestsOf(t, "user-b")).toHaveLength(13);
    expect(await sweep()).toEqual({ enqueued: 0, retired: 0, removedInterests: 10 });
    expect(await sweep()).toEqual({ enqueued: 0, retired: 0, removedInterests: 0 });
    expect((await interestsOf(t, "user-b")).map(([key]) => key)).toEqual([
      "All|all|live0000|",
      "All|all|live0001|",
      "All|all|live0002|",
    ]);
  });

  test("judges interest expiry by the server's clock when the caller's runs ahead", async () => {
    const start = useServerClock(T_SERVER);
    const t = initConvexTest();
    await t.withIdentity(ALICE).mutation(api.dashboard.registerFilter, {
      filters: { timeframe: "All", product: "all", topics: ["gaming"] },
    });
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: start + 2 * DAY })).toEqual({
      enqueued: 0, retired: 0, removedInterests: 0,
    });
    expect(await interestsOf(t, A)).toEqual([["All|all|gaming|", start + DAY]]);
    useServerClock(start + DAY);
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: start + 2 * DAY })).toEqual({
      enqueued: 0, retired: 0, removedInterests: 1,
    });
  });

  test("a backlog larger than one call's reads is worked off over several calls, each within the budget", async () => {
    // The worst case for reads: expired on-demand sets of distinct users, each with a live interest
    // (looked up) and a pending change (looked up), every fourth user to enqueue (two more lookups).
    // Read in one call that is ≈ 6000 index ranges, above Convex's 4096.
    const now = useServerClock(T_SERVER);
    const t = initConvexTest();
    const users = 2200;
    const toEnqueue = (i: number) => i % 4 === 0;
    for (let start = 0; start < users; start += 400) {
      await t.run(async (ctx) => {
        for (let i = start; i < Math.min(start + 400, users); i++) {
          const userId = `user-${String(i).padStart(5, "0")}`;
          const filterKey = `All|all|t${i}|`;
          await ctx.db.insert("users", { userId, timeZone: "UTC", lastSeq: 1, ackedSeq: toEnqueue(i) ? 1 : 0, eventCount: 0 });
          await ctx.db.insert("resultSets", {
            userId, filterKey, watermark: 1, computedAtMs: 0, definitionVersion: 1,
            // 50 sets per expiry instant: page and call boundaries fall inside an instant too.
            validUntil: [{ type: "kpi", validUntilMs: now - HOUR + Math.floor(i / 50) }],
            nextValidUntilMs: now - HOUR + Math.floor(i / 50),
            rows: [],
          });
          await ctx.db.insert("filterInterests", {
            userId, filterKey, filters: { timeframe: "All", product: "all", topics: [`t${i}`] },
            lastRequestedAtMs: now, expiresAtMs: now + DAY,
          });
          if (!toEnqueue(i)) {
            await ctx.db.insert("changeLog", {
              userId, seq: 1, kind: "import", count: 1, status: "pending", attempts: 0, createdAtMs: now,
            });
          }
        }
      });
    }

    const calls: { enqueued: number; indexRanges: number; documents: number; bytes: number }[] = [];
    for (let call = 0; call < 20; call++) {
      const measured = await t.run(async (ctx) => {
        const outcome = await enqueueExpiredHandler(ctx, { nowMs: now, limit: EXPIRED_MAX_LIMIT });
        const metrics = await ctx.meta.getTransactionMetrics();
        return {
          outcome,
          indexRanges: metrics.databaseQueries.used,
          documents: metrics.documentsRead.used,
          bytes: metrics.bytesRead.used,
        };
      });
      expect(measured.outcome).toMatchObject({ retired: 0, removedInterests: 0 });
      calls.push({ enqueued: measured.outcome.enqueued, indexRanges: measured.indexRanges, documents: measured.documents, bytes: measured.bytes });
      if (calls.reduce((n, c) => n + c.enqueued, 0) === users / 4) break;
    }
    expect(calls.length).toBeGreaterThan(1); // more than one call's budget
    for (const c of calls) {
      expect(c.indexRanges).toBeLessThanOrEqual(EXPIRED_READ_BUDGET.indexRanges);
      expect(c.documents).toBeLessThanOrEqual(EXPIRED_READ_BUDGET.documents);
      expect(c.bytes).toBeLessThanOrEqual(EXPIRED_READ_BUDGET.bytes);
    }
    // Every user without a pending change got exactly one expiry change; the others none.
    const expiries = await t.run(async (ctx) =>
      (await ctx.db.query("changeLog").collect()).filter((r) => r.kind === "expiry").map((r) => r.userId),
    );
    expect(new Set(expiries).size).toBe(expiries.length);
    expect(expiries.length).toBe(users / 4);
    expect(expiries.every((userId) => toEnqueue(Number(userId.slice(5))))).toBe(true);
    // Caught up: the next call enqueues nothing and stays within the budget too.
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: now, limit: EXPIRED_MAX_LIMIT })).toEqual({
      enqueued: 0, retired: 0, removedInterests: 0,
    });
  }, 120_000);

  test("expired sets skipped for a pending change do not keep later ones from being enqueued", async () => {
    // More expired sets than one call scans, all of a user with a pending change, ahead of another
    // user's set in expiry order: each call used to scan the same skipped rows and stop before it.
    const t = initConvexTest();
    await t.run(async (ctx) => {
      await ctx.db.insert("users", { userId: "busy", timeZone: "UTC", lastSeq: 1, ackedSeq: 0, eventCount: 0 });
      await ctx.db.insert("changeLog", {
        userId: "busy", seq: 1, kind: "import", count: 1, status: "pending", attempts: 0, createdAtMs: 0,
      });
      await ctx.db.insert("users", { userId: "later", timeZone: "UTC", lastSeq: 1, ackedSeq: 1, eventCount: 3 });
    });
    const sets = EXPIRED_SCAN_ROWS + 10;
    for (let start = 0; start < sets; start += 1000) {
      await t.run(async (ctx) => {
        for (let i = start; i < Math.min(start + 1000, sets); i++) {
          await ctx.db.insert("resultSets", {
            userId: "busy", filterKey: `T${i}|all||`, watermark: 1, computedAtMs: 0, definitionVersion: 1,
            validUntil: [{ type: "kpi", validUntilMs: 10 }], nextValidUntilMs: 10, rows: [],
          });
        }
      });
    }
    await t.run(async (ctx) => {
      await ctx.db.insert("resultSets", {
        userId: "later", filterKey: "MTD|all||", watermark: 1, computedAtMs: 0, definitionVersion: 1,
        validUntil: [{ type: "kpi", validUntilMs: 20 }], nextValidUntilMs: 20, rows: [],
      });
    });
    const sweep = () => t.mutation(internal.worker.enqueueExpired, { nowMs: 100 });

    const outcomes = [await sweep(), await sweep()];
    expect(outcomes.map((o) => o.enqueued)).toEqual([0, 1]);
    expect((await changeRows(t, "later")).map((r) => [r.seq, r.kind, r.count])).toEqual([[2, "expiry", 3]]);
    expect((await changeRows(t, "busy")).map((r) => r.kind)).toEqual(["import"]);

    // The scan went past the end, so the next call starts over: the busy user's sets are checked
    // again, and once its change is done it is enqueued like any other.
    await t.mutation(internal.worker.ackChanges, { userId: "busy", workerId: "w1", upToSeq: 1 });
    const again = [await sweep(), await sweep()];
    expect(again.map((o) => o.enqueued).reduce((a, b) => a + b)).toBe(1);
    expect((await changeRows(t, "busy")).map((r) => r.kind)).toEqual(["import", "expiry"]);
  }, 60_000);

  test("a call stopped by its limit inside one expiry instant is resumed by the next, within that instant", async () => {
    // 250 users whose sets all expire at the same instant (every MTD set of a time zone does).
    const t = initConvexTest();
    await t.run(async (ctx) => {
      for (let i = 0; i < 250; i++) {
        const userId = `u${String(i).padStart(3, "0")}`;
        await ctx.db.insert("users", { userId, timeZone: "UTC", lastSeq: 1, ackedSeq: 1, eventCount: 0 });
        await ctx.db.insert("resultSets", {
          userId, filterKey: "MTD|all||", watermark: 1, computedAtMs: 0, definitionVersion: 1,
          validUntil: [{ type: "kpi", validUntilMs: 10 }], nextValidUntilMs: 10, rows: [],
        });
      }
    });
    const counts = [];
    for (let call = 0; call < 4; call++) {
      counts.push((await t.mutation(internal.worker.enqueueExpired, { nowMs: 100, limit: 100 })).enqueued);
    }
    expect(counts).toEqual([100, 100, 50, 0]);
    const expiries = await t.run(async (ctx) =>
      (await ctx.db.query("changeLog").collect()).filter((r) => r.kind === "expiry").map((r) => r.userId),
    );
    expect(new Set(expiries).size).toBe(250);
  });

  test("sets left by the retirement cap come first at the next call; the sets behind them are not held up", async () => {
    const t = initConvexTest();
    await t.run(async (ctx) => {
      await ctx.db.insert("users", { userId: "gone", timeZone: "UTC", lastSeq: 1, ackedSeq: 1, eventCount: 0 });
      await ctx.db.insert("users", { userId: "behind", timeZone: "UTC", lastSeq: 1, ackedSeq: 1, eventCount: 0 });
      // Expired on-demand sets without an interest: more than one call retires.
      for (let i = 0; i < RETIRE_MAX_SETS + 10; i++) {
        await ctx.db.insert("resultSets", {
          userId: "gone", filterKey: `All|all|t${i}|`, watermark: 1, computedAtMs: 0, definitionVersion: 1,
          validUntil: [{ type: "kpi", validUntilMs: 10 }], nextValidUntilMs: 10, rows: [],
        });
      }
      await ctx.db.insert("resultSets", {
        userId: "behind", filterKey: "MTD|all||", watermark: 1, computedAtMs: 0, definitionVersion: 1,
        validUntil: [{ type: "kpi", validUntilMs: 20 }], nextValidUntilMs: 20, rows: [],
      });
    });
    const sweep = () => t.mutation(internal.worker.enqueueExpired, { nowMs: 100 });
    expect(await sweep()).toEqual({ enqueued: 1, retired: RETIRE_MAX_SETS, removedInterests: 0 });
    expect(await sweep()).toEqual({ enqueued: 0, retired: 10, removedInterests: 0 });
    expect(await sweep()).toEqual({ enqueued: 0, retired: 0, removedInterests: 0 });
    const left = await t.run(async (ctx) => (await ctx.db.query("resultSets").collect()).map((r) => r.userId));
    expect(left).toEqual(["behind"]);
  });

  test("honours limit", async () => {
    const t = initConvexTest();
    for (const userId of ["u1", "u2", "u3"]) {
      await t.run(async (ctx) => {
        await ctx.db.insert("users", { userId, timeZone: "UTC", lastSeq: 1, ackedSeq: 1, eventCount: 0 });
        await ctx.db.insert("resultSets", {
          userId, filterKey: "MTD|all||", watermark: 1, computedAtMs: 0, definitionVersion: 1,
          validUntil: [{ type: "kpi", validUntilMs: 10 }], nextValidUntilMs: 10,
        });
      });
    }
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: 100, limit: 2 })).toEqual({ enqueued: 2, retired: 0, removedInterests: 0 });
    expect(await t.mutation(internal.worker.enqueueExpired, { nowMs: 100, limit: 2 })).toEqual({ enqueued: 1, retired: 0, removedInterests: 0 });
  });
});

test("B never sees A's data through the public API", async () => {
  const t = initConvexTest();
  await importFor(t, A, [event(0)]);
  await t.mutation(internal.worker.storeAggregations, {
    userId: A, watermark: 1, computedAtMs: 1,
    sets: toSets([{ type: "kpi", filterKey: "All|all||", data: { views: 1 }, definitionVersion: 1 }]),
  });
  const bob = t.withIdentity(BOB);
  expect(await bob.query(api.dashboard.getAggregation, { type: "kpi" })).toBeNull();
  const dash = await bob.query(api.dashboard.getDashboard, {});
  expect(dash!.aggregations).toEqual([]);
  expect(await bob.mutation(api.watchEvents.deleteRange, {})).toEqual({ deleted: 0, hasMore: false, seq: null });
  expect(await t.withIdentity(ALICE).query(api.dashboard.getAggregation, { type: "kpi" })).not.toBeNull();
});
