/**
 * User settings (the `users` table's time zone) and the per-user counters the
 * UI shows.
 */
import { v } from "convex/values";
import { mutation, query, type MutationCtx, type QueryCtx } from "./_generated/server";
import { appendChange } from "./changeLog";
import { appError } from "./errors";
import { TIME_ZONES } from "./timeZones";
import { callerUserId, DEFAULT_TIME_ZONE, getUser, requireCallerUserId } from "./users";
import { vSeqResult, vSettings, type Settings } from "./validators";

/** Longest accepted time zone name, in characters. */
export const MAX_TIME_ZONE_LENGTH = 64;

/** Each accepted zone by its lower-case name, for the case-insensitive lookup. */
const ZONES_BY_LOWER_CASE = new Map(TIME_ZONES.map((zone) => [zone.toLowerCase(), zone]));

/**
 * Validate an IANA time zone name and return the name to store.
 *
 * The name must be one of `TIME_ZONES` (`timeZones.ts`): the zones the worker can load, generated
 * from the Python `tzdata` package it depends on, rather than whatever the runtime's `Intl`
 * knows (which accepts names the worker cannot load, such as `US/Pacific-New`, so its user's
 * recomputes failed until they were dead letters). The match ignores case and returns the listed
 * spelling (`utc` → `UTC`, `america/new_york` → `America/New_York`); aliases are kept as given
 * (`Asia/Calcutta` stays `Asia/Calcutta`, `Europe/Kyiv` stays `Europe/Kyiv`), since the list
 * holds them as well.
 *
 * @throws ConvexError `INVALID_TIME_ZONE` naming the zone.
 */
export function canonicalTimeZone(timeZone: string): string {
  const zone =
    timeZone.length <= MAX_TIME_ZONE_LENGTH ? ZONES_BY_LOWER_CASE.get(timeZone.toLowerCase()) : undefined;
  if (zone === undefined) {
    throw appError(
      "INVALID_TIME_ZONE",
      `timeZone ${JSON.stringify(timeZone)} is not an IANA time zone the worker supports`,
      { field: "timeZone" },
    );
  }
  return zone;
}

/**
 * Set `userId`'s time zone; appends a `"timezone"` change (whole history)
 * only when the stored zone actually changes, else returns `{seq: null}`.
 */
export async function setTimeZoneForUser(
  ctx: MutationCtx,
  userId: string,
  timeZone: string,
): Promise<{ seq: number | null }> {
  const zone = canonicalTimeZone(timeZone);
  const user = await getUser(ctx, userId);
  const current = user?.timeZone ?? DEFAULT_TIME_ZONE;
  if (zone === current) return { seq: null };
  const seq = await appendChange(ctx, userId, {
    kind: "timezone",
    count: user?.eventCount ?? 0,
  });
  const updated = await getUser(ctx, userId);
  if (updated === null) throw new Error(`users row for ${userId} missing after appendChange`);
  await ctx.db.patch(updated._id, { timeZone: zone });
  return { seq };
}

/** Read `userId`'s settings and counters; defaults for a user with no row yet. */
export async function settingsForUser(ctx: QueryCtx, userId: string): Promise<Settings> {
  const user = await getUser(ctx, userId);
  return {
    timeZone: user?.timeZone ?? DEFAULT_TIME_ZONE,
    eventCount: user?.eventCount ?? 0,
    lastSeq: user?.lastSeq ?? 0,
    ackedSeq: user?.ackedSeq ?? 0,
  };
}

export const setTimeZoneArgs = { timeZone: v.string() };

/** Handler of `settings:setTimeZone`. */
export async function setTimeZoneHandler(
  ctx: MutationCtx,
  args: { timeZone: string },
): Promise<{ seq: number | null }> {
  return await setTimeZoneForUser(ctx, await requireCallerUserId(ctx), args.timeZone);
}

/** Handler of `settings:get`. */
export async function getHandler(ctx: QueryCtx, _args: Record<string, never>): Promise<Settings | null> {
  const userId = await callerUserId(ctx);
  return userId === null ? null : await settingsForUser(ctx, userId);
}

/**
 * Set the signed-in user's IANA time zone (UI settings page).
 *
 * Idempotent: setting the current zone writes nothing and returns `{seq: null}`;
 * a real change appends a `"timezone"` change (whole history, count = the
 * user's events) in the same transaction, since every local-time aggregate
 * must be recomputed.
 *
 * @throws ConvexError `UNAUTHENTICATED`; `INVALID_TIME_ZONE`.
 */
export const setTimeZone = mutation({
  args: setTimeZoneArgs,
  returns: vSeqResult,
  handler: setTimeZoneHandler,
});

/**
 * Read the signed-in user's settings and counters (UI): time zone, number of
 * stored views, last assigned change seq and highest acknowledged seq.
 * Returns defaults (`UTC`, zeros) for a user who never wrote anything and
 * `null` when unauthenticated. Read-only.
 */
export const get = query({
  args: {},
  returns: v.union(vSettings, v.null()),
  handler: getHandler,
});
