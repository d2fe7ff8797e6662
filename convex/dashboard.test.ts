import { describe, expect, test } from "vitest";
import { api, internal } from "./_generated/api";
import { filterKey, normalizeFilters } from "./filters";
import { ALICE, BOB, initConvexTest, toSets } from "./setup.test";

const A = ALICE.tokenIdentifier;
const T0 = Date.UTC(2024, 0, 1);

async function seedWithAggregates(t: ReturnType<typeof initConvexTest>) {
  await t.withIdentity(ALICE).mutation(api.watchEvents.importBatch, {
    events: [{ watchedAtMs: T0, kind: "watch", product: "youtube", videoId: "v1", source: "api" }],
  });
  await t.mutation(internal.worker.storeAggregations, {
    userId: A,
    watermark: 1,
    computedAtMs: 1000,
    sets: toSets([
      { type: "kpi", filterKey: "All|all||", data: { views: 1 }, definitionVersion: 1 },
      { type: "monthly_trend", filterKey: "All|all||", data: { months: [] }, definitionVersion: 1, validUntilMs: 4_000_000_000_000 },
      { type: "kpi", filterKey: "YTD|youtube||", data: { views: 0 }, definitionVersion: 1 },
    ]),
  });
}

describe("filterKey", () => {
  test("matches the documented examples and ignores order and duplicates", () => {
    expect(filterKey({ timeframe: "All", product: "all" })).toBe("All|all||");
    expect(filterKey({ timeframe: "Last6M", product: "youtube_music", topics: ["music", "gaming"] })).toBe(
      "Last6M|youtube_music|gaming,music|",
    );
    const a = filterKey({ timeframe: "YTD", product: "all", topics: ["b", "a", "a"], channels: ["UC2", "UC1"] });
    const b = filterKey({ timeframe: "YTD", product: "all", topics: ["a", "b"], channels: ["UC1", "UC2", "UC1"] });
    expect(a).toBe("YTD|all|a,b|UC1,UC2");
    expect(b).toBe(a);
    expect(filterKey({ timeframe: "YTD", product: "all", topics: [], channels: [] })).toBe("YTD|all||");
  });

  test("normalizeFilters rejects malformed values", () => {
    expect(() => normalizeFilters({ timeframe: "All", product: "all", topics: ["a,b"] })).toThrow(/filters\.topics\[0\]/);
    expect(() =>
      normalizeFilters({ timeframe: "All", product: "all", channels: Array.from({ length: 51 }, (_, i) => `c${i}`) }),
    ).toThrow(/at most 50/);
  });
});

describe("getAggregation", () => {
  test("returns the caller's aggregate with freshness flags", async () => {
    const t = initConvexTest();
    await seedWithAggregates(t);
    const alice = t.withIdentity(ALICE);
    expect(await alice.query(api.dashboard.getAggregation, { type: "kpi" })).toEqual({
      type: "kpi",
      filterKey: "All|all||",
      data: { views: 1 },
      computedAtMs: 1000,
      watermark: 1,
      definitionVersion: 1,
      dataChangedAtMs: 1000,
      stale: false,
      pending: false,
    });
    const ytd = await alice.query(api.dashboard.getAggregation, {
      type: "kpi",
      filters: { timeframe: "YTD", product: "youtube" },
    });
    expect(ytd?.data).toEqual({ views: 0 });

    await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w", upToSeq: 1 });
    expect(await alice.query(api.dashboard.getAggregation, { type: "kpi" })).toMatchObject({ stale: false, pending: false });

    await alice.mutation(api.dashboard.requestRecompute, {});
    expect(await alice.query(api.dashboard.getAggregation, { type: "kpi" })).toMatchObject({ stale: true, pending: true });
    await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w", upToSeq: 2 });
    expect(await alice.query(api.dashboard.getAggregation, { type: "kpi" })).toMatchObject({ stale: true, pending: false });
  });

  test("an aggregate past its type's validUntilMs is stale; other types of the set are not", async () => {
    const t = initConvexTest();
    await seedWithAggregates(t);
    const past = Date.now() - 1;
    await t.mutation(internal.worker.storeAggregations, {
      userId: A, watermark: 1, computedAtMs: 2000,
      sets: toSets([
        { type: "kpi", filterKey: "All|all||", data: { views: 1 }, definitionVersion: 1, validUntilMs: past },
        { type: "monthly_trend", filterKey: "All|all||", data: { months: [] }, definitionVersion: 1, validUntilMs: 4_000_000_000_000 },
      ]),
    });
    await t.mutation(internal.worker.ackChanges, { userId: A, workerId: "w", upToSeq: 1 });
    const alice = t.withIdentity(ALICE);
    expect(await alice.query(api.dashboard.getAggregation, { type: "kpi" })).toMatchObject({
      validUntilMs: past,
      computedAtMs: 2000,
      dataChangedAtMs: 1000,
      stale: true,
      pending: false,
    });
    expect(await alice.query(api.dashboard.getAggregation, { type: "monthly_trend" })).toMatchObject({
      validUntilMs: 4_000_000_000_000,
      stale: false,
    });
    expect((await alice.query(api.dashboard.getDashboard, {}))!.freshness).toMatchObject({ computedAtMs: 2000, stale: true });
  });

  test("a row without its set row is not returned", async () => {
    const t = initConvexTest();
    await seedWithAggregates(t);
    await t.run(async (ctx) => {
      const rs = await ctx.db
        .query("resultSets")
        .withIndex("by_user_filter", (q) => q.eq("userId", A).eq("filterKey", "All|all||"))
        .unique();
      await ctx.db.delete(rs!._id);
    });
    const alice = t.withIdentity(ALICE);
    expect(await alice.query(api.dashboard.getAggregation, { type: "kpi" })).toBeNull();
    expect(await alice.query(api.dashboard.getDashboard, {})).toMatchObject({
      aggregations: [],
      freshness: { computedAtMs: null, watermark: null, lastSeq: 1, stale: true },
    });
  });

  test("returns null when signed out, for other users and for missing aggregates", async () => {
    const t = initConvexTest();
    await seedWithAggregates(t);
    expect(await t.query(api.dashboard.getAggregation, { type: "kpi" })).toBeNull();
    expect(await t.withIdentity(BOB).query(api.dashboard.getAggregation, { type: "kpi" })).toBeNull();
    expect(await t.withIdentity(ALICE).query(api.dashboard.getAggregation, { type: "topic_diversity" })).toBeNull();
  });
});

describe("getDashboard", () => {
  test("returns every aggregate of one filter set with overall freshness", async () => {
    const t = initConvexTest();
    await seedWithAggregates(t);
    const dash = await t.withIdentity(ALICE).query(api.dashboard.getDashboard, {});
    expect(dash).toMatchObject({
      filterKey: "All|all||",
      freshness: { computedAtMs: 1000, watermark: 1, lastSeq: 1, pendingChanges: 1, stale: false },
    });
    expect(dash!.aggregations.map((a) => a.type)).toEqual(["kpi", "monthly_trend"]);
    expect(dash!.aggregations[1].validUntilMs).toBe(4_000_000_000_000);

    const empty = await t.withIdentity(BOB).query(api.dashboard.getDashboard, {
      filters: { timeframe: "MTD", product: "all", topics: ["x"] },
    });
    expect(empty).toEqual({
      filterKey: "MTD|all|x|",
      aggregations: [],
      freshness: { computedAtMs: null, watermark: null, lastSeq: 0, pendingChanges: 0, stale: false },
    });
    expect(await t.query(api.dashboard.getDashboard, {})).toBeNull();

    const notYet = await t.withIdentity(ALICE).query(api.dashboard.getDashboard, {
      filters: { timeframe: "MTD", product: "youtube_music" },
    });
    expect(notYet).toMatchObject({ aggregations: [], freshness: { lastSeq: 1, pendingChanges: 1, stale: true } });
  });
});

describe("requestRecompute", () => {
  test("appends a manual change each call; refuses anonymous callers", async () => {
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    expect(await alice.mutation(api.dashboard.requestRecompute, {})).toEqual({ seq: 1 });
    expect(await alice.mutation(api.dashboard.requestRecompute, {})).toEqual({ seq: 2 });
    const rows = await t.run(async (ctx) => ctx.db.query("changeLog").collect());
    expect(rows.map((r) => [r.kind, r.seq, r.status])).toEqual([
      ["manual", 1, "pending"],
      ["manual", 2, "pending"],
    ]);
    await expect(t.mutation(api.dashboard.requestRecompute, {})).rejects.toMatchObject({
      data: { code: "UNAUTHENTICATED" },
    });
  });
});

describe("registerFilter", () => {
  test("stores one interest per canonical key and appends a filter change only when it was inactive", async () => {
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    const before = Date.now();
    const first = await alice.mutation(api.dashboard.registerFilter, {
      filters: { timeframe: "Last12M", product: "youtube", topics: ["music", "gaming", "music"], channels: ["UCb", "UCa"] },
    });
    expect(first.filterKey).toBe("Last12M|youtube|gaming,music|UCa,UCb");
    expect(first.expiresAtMs).toBeGreaterThanOrEqual(before + 24 * 3_600_000);

    const again = await alice.mutation(api.dashboard.registerFilter, {
      filters: { timeframe: "Last12M", product: "youtube", channels: ["UCa", "UCb"], topics: ["gaming", "music"] },
    });
    expect(again.filterKey).toBe(first.filterKey);

    let state = await t.run(async (ctx) => ({
      interests: await ctx.db.query("filterInterests").collect(),
      changes: await ctx.db.query("changeLog").collect(),
    }));
    expect(state.interests).toHaveLength(1);
    expect(state.interests[0]).toMatchObject({
      userId: A,
      filterKey: first.filterKey,
      filters: { timeframe: "Last12M", product: "youtube", topics: ["gaming", "music"], channels: ["UCa", "UCb"] },
    });
    expect(state.changes.map((c) => [c.kind, c.seq])).toEqual([["filter", 1]]);

    await t.run(async (ctx) => ctx.db.patch(state.interests[0]._id, { expiresAtMs: Date.now() - 1 }));
    await alice.mutation(api.dashboard.registerFilter, {
      filters: { timeframe: "Last12M", product: "youtube", topics: ["gaming", "music"], channels: ["UCa", "UCb"] },
    });
    state = await t.run(async (ctx) => ({
      interests: await ctx.db.query("filterInterests").collect(),
      changes: await ctx.db.query("changeLog").collect(),
    }));
    expect(state.interests).toHaveLength(1);
    expect(state.interests[0].expiresAtMs).toBeGreaterThan(Date.now());
    expect(state.changes.map((c) => [c.kind, c.seq])).toEqual([
      ["filter", 1],
      ["filter", 2],
    ]);
  });

  test("eager sets store nothing; bad filters and anonymous callers are refused", async () => {
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    const eager = await alice.mutation(api.dashboard.registerFilter, { filters: { timeframe: "QTD", product: "all" } });
    expect(eager.filterKey).toBe("QTD|all||");
    await expect(
      alice.mutation(api.dashboard.registerFilter, { filters: { timeframe: "QTD", product: "all", topics: [""] } }),
    ).rejects.toMatchObject({ data: { code: "INVALID_FILTERS", field: "filters.topics", index: 0 } });
    await expect(
      t.mutation(api.dashboard.registerFilter, { filters: { timeframe: "QTD", product: "all", topics: ["a"] } }),
    ).rejects.toMatchObject({ data: { code: "UNAUTHENTICATED" } });
    const state = await t.run(async (ctx) => ({
      interests: await ctx.db.query("filterInterests").collect(),
      changes: await ctx.db.query("changeLog").collect(),
    }));
    expect(state).toEqual({ interests: [], changes: [] });
  });
});
