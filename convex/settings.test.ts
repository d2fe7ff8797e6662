import { describe, expect, test } from "vitest";
import { api, internal } from "./_generated/api";
import { canonicalTimeZone } from "./settings";
import { ALICE, BOB, initConvexTest, seedEvents } from "./setup.test";
import { TIME_ZONES } from "./timeZones";

async function state(t: ReturnType<typeof initConvexTest>) {
  return await t.run(async (ctx) => ({
    changes: await ctx.db.query("changeLog").collect(),
    users: await ctx.db.query("users").collect(),
  }));
}

describe("canonicalTimeZone", () => {
  test("accepts IANA names and fixes only their case", () => {
    expect(canonicalTimeZone("Europe/Berlin")).toBe("Europe/Berlin");
    expect(canonicalTimeZone("utc")).toBe("UTC");
    expect(canonicalTimeZone("america/new_york")).toBe("America/New_York");
    expect(canonicalTimeZone("Etc/GMT+5")).toBe("Etc/GMT+5");
    expect(canonicalTimeZone("Asia/Kolkata")).toBe("Asia/Kolkata");
    expect(canonicalTimeZone("Asia/Calcutta")).toBe("Asia/Calcutta");
    expect(canonicalTimeZone("Europe/Kyiv")).toBe("Europe/Kyiv");
  });

  test("accepts every zone of the worker's list as it is spelt there", () => {
    expect(TIME_ZONES.length).toBeGreaterThan(500);
    for (const zone of TIME_ZONES) expect(canonicalTimeZone(zone)).toBe(zone);
  });

  test.each([
    "Mars/Olympus_Mons",
    "",
    "+05:00",
    "Europe/Berlin ",
    "x".repeat(65),
    // known to JavaScript's Intl but not to the worker's tzdata: they used to end in dead letters
    "US/Pacific-New",
    "Canada/East-Saskatchewan",
    "Factory",
    "localtime",
  ])("rejects %j", (zone) => {
    expect(() => canonicalTimeZone(zone)).toThrow(/not an IANA time zone the worker supports/);
  });
});

describe("setTimeZone", () => {
  test("a new zone is stored with a whole-history timezone change", async () => {
    const t = initConvexTest();
    await seedEvents(t, ALICE.tokenIdentifier, [
      { watchedAtMs: Date.UTC(2024, 0, 1), kind: "watch", product: "youtube", source: "synthetic" },
    ]);
    const result = await t
      .withIdentity(ALICE)
      .mutation(api.settings.setTimeZone, { timeZone: "Europe/Berlin" });
    expect(result).toEqual({ seq: 1 });
    const { changes, users } = await state(t);
    expect(users[0]).toMatchObject({ timeZone: "Europe/Berlin", lastSeq: 1 });
    expect(changes).toHaveLength(1);
    expect(changes[0]).toMatchObject({ kind: "timezone", seq: 1, count: 1, status: "pending" });
    expect(changes[0].fromMs).toBeUndefined();
    expect(changes[0].toMs).toBeUndefined();
  });

  test("setting the current zone writes nothing", async () => {
    const t = initConvexTest();
    const alice = t.withIdentity(ALICE);
    expect(await alice.mutation(api.settings.setTimeZone, { timeZone: "UTC" })).toEqual({ seq: null });
    expect((await state(t)).users).toHaveLength(0);
    await alice.mutation(api.settings.setTimeZone, { timeZone: "Asia/Tokyo" });
    expect(await alice.mutation(api.settings.setTimeZone, { timeZone: "Asia/Tokyo" })).toEqual({
      seq: null,
    });
    const { changes, users } = await state(t);
    expect(changes).toHaveLength(1);
    expect(users[0].lastSeq).toBe(1);
  });

  test("an invalid zone fails with INVALID_TIME_ZONE and changes nothing", async () => {
    const t = initConvexTest();
    await expect(
      t.withIdentity(ALICE).mutation(api.settings.setTimeZone, { timeZone: "Nowhere/City" }),
    ).rejects.toMatchObject({ data: { code: "INVALID_TIME_ZONE", field: "timeZone" } });
    const { changes, users } = await state(t);
    expect(changes).toHaveLength(0);
    expect(users).toHaveLength(0);
  });

  test("unauthenticated calls are refused", async () => {
    const t = initConvexTest();
    await expect(
      t.mutation(api.settings.setTimeZone, { timeZone: "UTC" }),
    ).rejects.toMatchObject({ data: { code: "UNAUTHENTICATED" } });
  });

  test("admin:setTimeZone sets the zone of an explicit user", async () => {
    const t = initConvexTest();
    const result = await t.mutation(internal.admin.setTimeZone, {
      userId: "user-1",
      timeZone: "America/Sao_Paulo",
    });
    expect(result).toEqual({ seq: 1 });
    expect((await state(t)).users[0]).toMatchObject({ userId: "user-1", timeZone: "America/Sao_Paulo" });
  });
});

describe("settings:get", () => {
  test("returns the caller's settings only, defaults for a new user, null when signed out", async () => {
    const t = initConvexTest();
    await t.withIdentity(ALICE).mutation(api.settings.setTimeZone, { timeZone: "Europe/Paris" });
    expect(await t.withIdentity(ALICE).query(api.settings.get, {})).toEqual({
      timeZone: "Europe/Paris",
      eventCount: 0,
      lastSeq: 1,
      ackedSeq: 0,
    });
    expect(await t.withIdentity(BOB).query(api.settings.get, {})).toEqual({
      timeZone: "UTC",
      eventCount: 0,
      lastSeq: 0,
      ackedSeq: 0,
    });
    expect(await t.query(api.settings.get, {})).toBeNull();
  });
});
