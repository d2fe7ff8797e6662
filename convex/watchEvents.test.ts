import { describe, expect, test } from "vitest";
import { api, internal } from "./_generated/api";
import { ALICE, BOB, initConvexTest, seedEvents } from "./setup.test";
import type { WatchEventInput } from "./validators";
import { dedupeKey, MIN_WATCHED_AT_MS } from "./watchEvents";

const T0 = Date.UTC(2024, 0, 1);
const HOUR = 3_600_000;

function event(i: number, extra: Partial<WatchEventInput> = {}): WatchEventInput {
  return {
    watchedAtMs: T0 + i * HOUR,
    kind: "watch",
    product: "youtube",
    videoId: `vid${String(i).padStart(8, "0")}`,
    title: `Video ${i}`,
    channelId: "UCchannel",
    channelName: "Channel",
    source: "synthetic",
    ...extra,
  };
}

async function tables(t: ReturnType<typeof initConvexTest>) {
  return await t.run(async (ctx) => ({
    events: await ctx.db.query("watchEvents").collect(),
    changes: await ctx.db.query("changeLog").collect(),
    users: await ctx.db.query("users").collect(),
  }));
}

describe("dedupeKey", () => {
  test("uses the video id when present and the title otherwise", () => {
    expect(dedupeKey({ watchedAtMs: T0, videoId: "abc", title: "T" })).toBe(`${T0}|abc|`);
    expect(dedupeKey({ watchedAtMs: T0, title: "T" })).toBe(`${T0}||T`);
    expect(dedupeKey({ watchedAtMs: T0 })).toBe(`${T0}||`);
  });

  test("has second precision: the HTML (whole seconds) and JSON (ms) times of one view agree", () => {
    expect(dedupeKey({ watchedAtMs: T0 + 52_318, videoId: "abc" })).toBe(`${T0 + 52_000}|abc|`);
    expect(dedupeKey({ watchedAtMs: T0 + 52_999, videoId: "abc" })).toBe(
      dedupeKey({ watchedAtMs: T0 + 52_000, videoId: "abc" }),
    );
    expect(dedupeKey({ watchedAtMs: T0 + 53_000, videoId: "abc" })).not.toBe(
      dedupeKey({ watchedAtMs: T0 + 52_999, videoId: "abc" }),
    );
  });
});

describe("importBatch", () => {
  test("inserts events and appends one pending import change in the same transaction", async () => {
    const t = initConvexTest();
    const result = await t
      .withIdentity(ALICE)
      .mutation(api.watchEvents.importBatch, { events: [event(2), event(0), event(1)] });
    expect(result).toEqual({ inserted: 3, duplicates: 0, seq: 1 });

    const { events, changes, users } = await tables(t);
    expect(events).toHaveLength(3);
    expect(events.every((e) => e.userId === ALICE.tokenIdentifier)).toBe(true);
    expect(events.map((e) => e.dedupeKey).sort()).toEqual(
      [event(0), event(1), event(2)].map((e) => dedupeKey(e)).sort(),
    );
    expect(changes).toHaveLength(1);
    expect(changes[0]).toMatchObject({
      userId: ALICE.tokenIdentifier,
      seq: 1,
      kind: "import",
      fromMs: T0,
      toMs: T0 + 2 * HOUR,
      count: 3,
      status: "pending",
      attempts: 0,
    });
    expect(users).toHaveLength(1);
    expect(users[0]).toMatchObject({ lastSeq: 1, ackedSeq: 0, eventCount: 3, timeZone: "UTC" });
  });

  test("re-importing the same batch adds nothing and appends no change", async () => {
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    const batch = [event(0), event(1)];
    await alice.mutation(api.watchEvents.importBatch, { events: batch });
    const again = await alice.mutation(api.watchEvents.importBatch, { events: batch });
    expect(again).toEqual({ inserted: 0, duplicates: 2, seq: null });
    const { events, changes, users } = await tables(t);
    expect(events).toHaveLength(2);
    expect(changes).toHaveLength(1);
    expect(users[0]).toMatchObject({ lastSeq: 1, eventCount: 2 });
  });

  test("deduplicates within a batch, by title when there is no video id", async () => {
    const t = initConvexTest();
    const noId = { videoId: undefined, title: "Same title" };
    const result = await t.withIdentity(ALICE).mutation(api.watchEvents.importBatch, {
      events: [event(0), event(0), event(1, noId), event(1, noId), event(1, { ...noId, title: "Other" })],
    });
    expect(result).toEqual({ inserted: 3, duplicates: 2, seq: 1 });
    const { events, changes } = await tables(t);
    expect(events).toHaveLength(3);
    expect(changes[0].count).toBe(3);
  });

  test("the HTML export of views imported from JSON adds nothing, and the other way round", async () => {
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    const bob = t.withIdentity(BOB);
    // JSON: milliseconds; HTML: the same instants truncated to whole seconds
    const json = [event(0, { watchedAtMs: T0 + 52_318 }), event(1, { watchedAtMs: T0 + HOUR + 999 })];
    const html = json.map((e) => ({
      ...e,
      watchedAtMs: e.watchedAtMs - (e.watchedAtMs % 1000),
      source: "takeout_html" as const,
    }));
    await alice.mutation(api.watchEvents.importBatch, { events: json });
    expect(await alice.mutation(api.watchEvents.importBatch, { events: html })).toEqual({
      inserted: 0,
      duplicates: 2,
      seq: null,
    });
    await bob.mutation(api.watchEvents.importBatch, { events: html });
    expect(await bob.mutation(api.watchEvents.importBatch, { events: json })).toEqual({
      inserted: 0,
      duplicates: 2,
      seq: null,
    });
    const { events, users } = await tables(t);
    expect(events).toHaveLength(4);
    expect(users.map((u) => u.eventCount)).toEqual([2, 2]);
  });

  test("views of one video in one second count once; other videos in that second stay distinct", async () => {
    const t = initConvexTest();
    const result = await t.withIdentity(ALICE).mutation(api.watchEvents.importBatch, {
      events: [
        event(0, { watchedAtMs: T0 + 100 }),
        event(0, { watchedAtMs: T0 + 900 }), // same video, same second: a logging artefact, merged
        event(1, { watchedAtMs: T0 + 500 }), // another video in that second
        event(2, { watchedAtMs: T0 + 500, videoId: undefined, title: "No id" }),
        event(2, { watchedAtMs: T0 + 700, videoId: undefined, title: "No id" }),
        event(0, { watchedAtMs: T0 + 1000 }), // the same video one second later
      ],
    });
    expect(result).toEqual({ inserted: 4, duplicates: 2, seq: 1 });
  });

  test.each([
    ["one range read", 0],
    ["one read per event", 4001],
  ])("views stored under the former millisecond key still deduplicate (%s)", async (_path, crowd) => {
    const t = initConvexTest();
    const legacy = event(0, { watchedAtMs: T0 + 52_318 });
    // as stored before keys had second precision; with `crowd` more views in the batch's range
    await seedEvents(
      t,
      ALICE.tokenIdentifier,
      Array.from({ length: crowd }, (_, i) => event(i + 10, { watchedAtMs: T0 + 60_000 + i })),
    );
    await t.run(async (ctx) => {
      await ctx.db.insert("watchEvents", {
        ...legacy,
        userId: ALICE.tokenIdentifier,
        dedupeKey: `${legacy.watchedAtMs}|${legacy.videoId}|`,
      });
    });
    const html = { ...legacy, watchedAtMs: T0 + 52_000, source: "takeout_html" as const };
    const result = await t.withIdentity(ALICE).mutation(api.watchEvents.importBatch, {
      events: [html, event(9, { watchedAtMs: T0 + 60_000 + crowd })],
    });
    expect(result).toMatchObject({ inserted: 1, duplicates: 1 });
  }, 60_000);

  test("a full batch looked up event by event in crowded seconds fits in one transaction", async () => {
    const t = initConvexTest();
    // 4001 stored views in 5 seconds: more than one range read takes, and > 16 per second
    await seedEvents(
      t,
      ALICE.tokenIdentifier,
      Array.from({ length: 4001 }, (_, i) => event(i, { watchedAtMs: T0 + i, videoId: `old${i}` })),
    );
    const events = Array.from({ length: 1000 }, (_, i) => event(i, { watchedAtMs: T0 + i * 4 }));
    const result = await t.withIdentity(ALICE).mutation(api.watchEvents.importBatch, { events });
    expect(result).toEqual({ inserted: 1000, duplicates: 0, seq: 1 });
  }, 60_000);

  test("a partly new batch records only the inserted range", async () => {
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    await alice.mutation(api.watchEvents.importBatch, { events: [event(0), event(1)] });
    const result = await alice.mutation(api.watchEvents.importBatch, {
      events: [event(0), event(1), event(5)],
    });
    expect(result).toEqual({ inserted: 1, duplicates: 2, seq: 2 });
    const { changes, users } = await tables(t);
    expect(changes.find((c) => c.seq === 2)).toMatchObject({
      fromMs: T0 + 5 * HOUR,
      toMs: T0 + 5 * HOUR,
      count: 1,
    });
    expect(users[0].eventCount).toBe(3);
  });

  test("an invalid event rejects the whole batch with its index and field", async () => {
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    const cases: Array<[WatchEventInput, string]> = [
      [event(1, { watchedAtMs: MIN_WATCHED_AT_MS - 1 }), "watchedAtMs"],
      [event(1, { watchedAtMs: Date.now() + 2 * 86_400_000 }), "watchedAtMs"],
      [event(1, { watchedAtMs: T0 + 0.5 }), "watchedAtMs"],
      [event(1, { title: "x".repeat(1001) }), "title"],
      [event(1, { videoId: "" }), "videoId"],
      [event(1, { channelName: "n".repeat(1001) }), "channelName"],
    ];
    for (const [bad, field] of cases) {
      const error = await alice
        .mutation(api.watchEvents.importBatch, { events: [event(0), bad, event(2)] })
        .catch((e: unknown) => e);
      expect(error).toMatchObject({ data: { code: "INVALID_EVENT", index: 1, field } });
      expect((error as { data: { message: string } }).data.message).toContain(`events[1].${field}`);
    }
    const { events, changes, users } = await tables(t);
    expect(events).toHaveLength(0);
    expect(changes).toHaveLength(0);
    expect(users).toHaveLength(0);
  });

  test("more than 1000 events are refused", async () => {
    const t = initConvexTest();
    const events = Array.from({ length: 1001 }, (_, i) => event(i));
    await expect(
      t.withIdentity(ALICE).mutation(api.watchEvents.importBatch, { events }),
    ).rejects.toMatchObject({ data: { code: "BATCH_TOO_LARGE" } });
    expect((await tables(t)).events).toHaveLength(0);
  });

  test("a full batch of 1000 fits in one transaction", async () => {
    const t = initConvexTest();
    const events = Array.from({ length: 1000 }, (_, i) => event(i));
    const result = await t.withIdentity(ALICE).mutation(api.watchEvents.importBatch, { events });
    expect(result).toEqual({ inserted: 1000, duplicates: 0, seq: 1 });
  });

  test("unauthenticated imports are refused and write nothing", async () => {
    const t = initConvexTest();
    await expect(
      t.mutation(api.watchEvents.importBatch, { events: [event(0)] }),
    ).rejects.toMatchObject({ data: { code: "UNAUTHENTICATED" } });
    expect((await tables(t)).events).toHaveLength(0);
  });

  test("the same event is stored separately for two users", async () => {
    const t = initConvexTest();
    await t.withIdentity(ALICE).mutation(api.watchEvents.importBatch, { events: [event(0)] });
    const bob = await t
      .withIdentity(BOB)
      .mutation(api.watchEvents.importBatch, { events: [event(0)] });
    expect(bob).toEqual({ inserted: 1, duplicates: 0, seq: 1 });
    const { events, changes } = await tables(t);
    expect(events).toHaveLength(2);
    expect(changes.map((c) => [c.userId, c.seq]).sort()).toEqual([
      [ALICE.tokenIdentifier, 1],
      [BOB.tokenIdentifier, 1],
    ]);
  });

  test("admin:importBatch imports for an explicit user", async () => {
    const t = initConvexTest();
    const result = await t.mutation(internal.admin.importBatch, {
      userId: "user-1",
      events: [event(0)],
    });
    expect(result).toEqual({ inserted: 1, duplicates: 0, seq: 1 });
    const { events } = await tables(t);
    expect(events[0].userId).toBe("user-1");
  });
});

describe("deleteRange", () => {
  test("deletes at most 2000 per call, reports hasMore and logs each page", async () => {
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    await seedEvents(t, ALICE.tokenIdentifier, Array.from({ length: 3000 }, (_, i) => event(i)));
    await seedEvents(t, ALICE.tokenIdentifier, [event(5000)]);

    const toMs = T0 + 2999 * HOUR;
    const first = await alice.mutation(api.watchEvents.deleteRange, { fromMs: T0 + 10 * HOUR, toMs });
    expect(first).toEqual({ deleted: 2000, hasMore: true, seq: 1 });
    const second = await alice.mutation(api.watchEvents.deleteRange, { fromMs: T0 + 10 * HOUR, toMs });
    expect(second).toEqual({ deleted: 990, hasMore: false, seq: 2 });
    const third = await alice.mutation(api.watchEvents.deleteRange, { fromMs: T0 + 10 * HOUR, toMs });
    expect(third).toEqual({ deleted: 0, hasMore: false, seq: null });

    const { events, changes, users } = await tables(t);
    expect(events).toHaveLength(11);
    const deletes = changes.filter((c) => c.kind === "delete").sort((a, b) => a.seq - b.seq);
    expect(deletes).toHaveLength(2);
    expect(deletes[0]).toMatchObject({ seq: 1, fromMs: T0 + 10 * HOUR, toMs: T0 + 2009 * HOUR, count: 2000 });
    expect(deletes[1]).toMatchObject({ seq: 2, fromMs: T0 + 2010 * HOUR, toMs: T0 + 2999 * HOUR, count: 990 });
    expect(users[0]).toMatchObject({ lastSeq: 2, eventCount: 11 });
  }, 60_000);

  test("unbounded delete removes only the caller's events", async () => {
    const t = initConvexTest();
    await t.withIdentity(ALICE).mutation(api.watchEvents.importBatch, { events: [event(0), event(1)] });
    await t.withIdentity(BOB).mutation(api.watchEvents.importBatch, { events: [event(0)] });
    const result = await t.withIdentity(ALICE).mutation(api.watchEvents.deleteRange, {});
    expect(result).toEqual({ deleted: 2, hasMore: false, seq: 2 });
    const { events } = await tables(t);
    expect(events.map((e) => e.userId)).toEqual([BOB.tokenIdentifier]);
  });

  test("rejects fromMs > toMs and unauthenticated calls", async () => {
    const t = initConvexTest();
    await expect(
      t.withIdentity(ALICE).mutation(api.watchEvents.deleteRange, { fromMs: 10, toMs: 5 }),
    ).rejects.toMatchObject({ data: { code: "INVALID_ARGUMENT", field: "fromMs" } });
    await expect(t.mutation(api.watchEvents.deleteRange, {})).rejects.toMatchObject({
      data: { code: "UNAUTHENTICATED" },
    });
  });
});
