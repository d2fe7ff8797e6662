/**
 * The `watchEvents` table: importing and deleting views. Each write appends
 * its change-log entry in the same mutation (see `changeLog.ts`).
 */
import { v } from "convex/values";
import type { Doc } from "./_generated/dataModel";
import { mutation, type MutationCtx } from "./_generated/server";
import { appendChange, nextChangeSeq } from "./changeLog";
import { appError } from "./errors";
import { getUser, requireCallerUserId } from "./users";
import {
  vDeleteResult,
  vImportResult,
  vWatchEventInput,
  type DeleteResult,
  type ImportResult,
  type WatchEventInput,
} from "./validators";

/** Most events accepted by one `importBatch` call. */
export const MAX_BATCH_EVENTS = 1000;
/** Most events deleted by one `deleteRange` call. */
export const MAX_DELETE_PER_CALL = 2000;
/** Earliest accepted `watchedAtMs`: 2005-01-01T00:00:00Z (YouTube did not exist before). */
export const MIN_WATCHED_AT_MS = Date.UTC(2005, 0, 1);
/** How far past the server clock a `watchedAtMs` may be (clock skew), in ms. */
export const MAX_FUTURE_SKEW_MS = 24 * 60 * 60 * 1000;
/** Longest accepted string per optional field, in UTF-16 code units. */
export const MAX_FIELD_LENGTH = {
  videoId: 64,
  title: 1000,
  channelId: 128,
  channelName: 1000,
} as const;
/** Most flags on one event. */
export const MAX_FLAGS = 8;

/** Precision of the time in a dedupe key, in ms: whole seconds. */
export const DEDUPE_PRECISION_MS = 1000;

/**
 * Compute the dedupe key of a view: the second it started + video id, or + title when there is
 * no video id (`${second start, epoch ms}|${videoId}|${title when no videoId}`).
 *
 * The time is truncated to the whole second because Takeout's HTML export prints whole seconds
 * (truncated) while its JSON export has milliseconds: the same view imported from both formats
 * must count once. The cost: two views of the same video (or, without an id, the same title) that
 * start within one UTC second count once, even from JSON; a person cannot start one video twice
 * within a second, so only logging artefacts are merged. Views of different videos in one second
 * stay distinct (never deduplicate on time alone).
 *
 * Views stored before the key had second precision keep their former key (`${watchedAtMs}|…`,
 * milliseconds); imports never compare stored key strings but recompute this key from the stored
 * fields, so those views deduplicate the same way.
 */
export function dedupeKey(event: Pick<WatchEventInput, "watchedAtMs" | "videoId" | "title">): string {
  const videoId = event.videoId ?? "";
  const second = secondStartMs(event.watchedAtMs);
  return `${second}|${videoId}|${videoId ? "" : (event.title ?? "")}`;
}

/** The start of the whole second holding `watchedAtMs` (epoch ms). */
function secondStartMs(watchedAtMs: number): number {
  return Math.floor(watchedAtMs / DEDUPE_PRECISION_MS) * DEDUPE_PRECISION_MS;
}

function invalidEvent(index: number, field: string, problem: string): never {
  throw appError("INVALID_EVENT", `events[${index}].${field} ${problem}`, { index, field });
}

/**
 * Check one event beyond what the argument validator checks.
 *
 * @throws ConvexError `INVALID_EVENT` with `index` and `field`.
 */
export function validateEvent(event: WatchEventInput, index: number, nowMs: number): void {
  const t = event.watchedAtMs;
  if (!Number.isFinite(t) || !Number.isInteger(t)) {
    invalidEvent(index, "watchedAtMs", `must be an integer epoch-ms timestamp, got ${String(t)}`);
  }
  if (t < MIN_WATCHED_AT_MS || t > nowMs + MAX_FUTURE_SKEW_MS) {
    invalidEvent(
      index,
      "watchedAtMs",
      `must be between ${MIN_WATCHED_AT_MS} (2005-01-01) and now + 1 day (${nowMs + MAX_FUTURE_SKEW_MS}), got ${t}`,
    );
  }
  for (const field of ["videoId", "title", "channelId", "channelName"] as const) {
    const value = event[field];
    if (value === undefined) continue;
    if (value.length === 0) {
      invalidEvent(index, field, "is empty; omit the field instead");
    }
    if (value.length > MAX_FIELD_LENGTH[field]) {
      invalidEvent(
        index,
        field,
        `is ${value.length} characters; at most ${MAX_FIELD_LENGTH[field]} are allowed`,
      );
    }
  }
  if (event.flags !== undefined && event.flags.length > MAX_FLAGS) {
    invalidEvent(index, "flags", `has ${event.flags.length} entries; at most ${MAX_FLAGS} are allowed`);
  }
}

/** Largest number of stored views read by one range read for deduplication. */
const MAX_DEDUPE_RANGE_READ = 4000;
/** Most stored views read for one event's second when each event is looked up on its own. */
const MAX_DEDUPE_SECOND_READ = 16;

/** Stored views as far as deduplication needs them. */
type StoredView = Pick<Doc<"watchEvents">, "watchedAtMs" | "videoId" | "title">;

/**
 * Read up to `limit` of `userId`'s stored views in the whole seconds from the
 * one holding `loMs` to the one holding `hiMs` (one `by_user_and_watchedAt`
 * range: the span a second-precision dedupe key can match).
 */
async function storedViewsInSeconds(
  ctx: MutationCtx,
  userId: string,
  loMs: number,
  hiMs: number,
  limit: number,
): Promise<StoredView[]> {
  return await ctx.db
    .query("watchEvents")
    .withIndex("by_user_and_watchedAt", (q) =>
      q
        .eq("userId", userId)
        .gte("watchedAtMs", secondStartMs(loMs))
        .lt("watchedAtMs", secondStartMs(hiMs) + DEDUPE_PRECISION_MS),
    )
    .take(limit);
}

/**
 * Return the dedupe keys of `userId`'s stored views in the whole seconds from
 * the batch's earliest to its latest `watchedAtMs` (one index range read
 * instead of one read per event: importers send time-ordered batches, so the
 * range is narrow). Keys are recomputed from the stored fields, so views stored
 * under the former millisecond key compare like new ones. Returns null when
 * more than `MAX_DEDUPE_RANGE_READ` views lie in that range; callers then look
 * each event up with `isStoredView`.
 */
async function storedKeysInRange(
  ctx: MutationCtx,
  userId: string,
  events: WatchEventInput[],
): Promise<Set<string> | null> {
  if (events.length === 0) return new Set();
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const e of events) {
    lo = Math.min(lo, e.watchedAtMs);
    hi = Math.max(hi, e.watchedAtMs);
  }
  const rows = await storedViewsInSeconds(ctx, userId, lo, hi, MAX_DEDUPE_RANGE_READ + 1);
  if (rows.length > MAX_DEDUPE_RANGE_READ) return null;
  return new Set(rows.map((r) => dedupeKey(r)));
}

/**
 * Whether `userId` has a stored view with dedupe key `key` in the second of
 * `event`: the views of that second are read (at most `MAX_DEDUPE_SECOND_READ`,
 * once per second per batch: `bySecond` keeps them; views the batch inserts are
 * never among them, the batch's own duplicates being caught before) and their
 * keys recomputed; a second holding more views than that (no real history
 * does) is also looked up by stored key on `by_user_and_dedupeKey`, which finds
 * every view stored since keys have second precision.
 */
async function isStoredView(
  ctx: MutationCtx,
  userId: string,
  event: WatchEventInput,
  key: string,
  bySecond: Map<number, StoredView[]>,
): Promise<boolean> {
  const second = secondStartMs(event.watchedAtMs);
  let rows = bySecond.get(second);
  if (rows === undefined) {
    rows = await storedViewsInSeconds(ctx, userId, second, second, MAX_DEDUPE_SECOND_READ + 1);
    bySecond.set(second, rows);
  }
  if (rows.some((r) => dedupeKey(r) === key)) return true;
  if (rows.length <= MAX_DEDUPE_SECOND_READ) return false;
  const byKey = await ctx.db
    .query("watchEvents")
    .withIndex("by_user_and_dedupeKey", (q) => q.eq("userId", userId).eq("dedupeKey", key))
    .first();
  return byKey !== null;
}

/**
 * Import a batch of views for `userId`: validate all, skip duplicates (within
 * the batch and against stored rows), insert the rest stamped with the
 * `changeSeq` of their change, and append that `"import"` change covering the
 * inserted range. Nothing is written when any
 * event is invalid or when every event is a duplicate (`seq` is then null).
 */
export async function importEventsForUser(
  ctx: MutationCtx,
  userId: string,
  events: WatchEventInput[],
): Promise<ImportResult> {
  if (events.length > MAX_BATCH_EVENTS) {
    throw appError(
      "BATCH_TOO_LARGE",
      `events has ${events.length} entries; at most ${MAX_BATCH_EVENTS} per call are allowed`,
      { field: "events", count: events.length, max: MAX_BATCH_EVENTS },
    );
  }
  const nowMs = Date.now();
  events.forEach((event, index) => validateEvent(event, index, nowMs));

  const stored = await storedKeysInRange(ctx, userId, events);
  const changeSeq = await nextChangeSeq(ctx, userId);
  const seen = new Set<string>();
  const bySecond = new Map<number, StoredView[]>(); // stored views per second, for isStoredView
  let inserted = 0;
  let duplicates = 0;
  let fromMs = Number.POSITIVE_INFINITY;
  let toMs = Number.NEGATIVE_INFINITY;
  for (const event of events) {
    const key = dedupeKey(event);
    if (seen.has(key)) {
      duplicates++;
      continue;
    }
    seen.add(key);
    const isStored = stored !== null ? stored.has(key) : await isStoredView(ctx, userId, event, key, bySecond);
    if (isStored) {
      duplicates++;
      continue;
    }
    const flags = event.flags === undefined ? undefined : [...new Set(event.flags)];
    await ctx.db.insert("watchEvents", {
      userId,
      watchedAtMs: event.watchedAtMs,
      kind: event.kind,
      product: event.product,
      ...(event.videoId !== undefined ? { videoId: event.videoId } : {}),
      ...(event.title !== undefined ? { title: event.title } : {}),
      ...(event.channelId !== undefined ? { channelId: event.channelId } : {}),
      ...(event.channelName !== undefined ? { channelName: event.channelName } : {}),
      source: event.source,
      ...(flags !== undefined && flags.length > 0 ? { flags } : {}),
      dedupeKey: key,
      changeSeq,
    });
    inserted++;
    fromMs = Math.min(fromMs, event.watchedAtMs);
    toMs = Math.max(toMs, event.watchedAtMs);
  }
  if (inserted === 0) return { inserted, duplicates, seq: null };

  const seq = await appendChange(ctx, userId, { kind: "import", fromMs, toMs, count: inserted }, changeSeq);
  const user = await getUser(ctx, userId);
  if (user === null) throw new Error(`users row for ${userId} missing after appendChange`);
  await ctx.db.patch(user._id, { eventCount: user.eventCount + inserted });
  return { inserted, duplicates, seq };
}

/**
 * Delete up to `MAX_DELETE_PER_CALL` of `userId`'s views with
 * `fromMs <= watchedAtMs <= toMs` (absent bound = unbounded), oldest first,
 * and append one `"delete"` change recording the min/max `watchedAtMs`
 * actually deleted and the count. Returns `hasMore` when matching views remain.
 */
export async function deleteRangeForUser(
  ctx: MutationCtx,
  userId: string,
  range: { fromMs?: number; toMs?: number },
): Promise<DeleteResult> {
  const { fromMs, toMs } = range;
  for (const [field, value] of [
    ["fromMs", fromMs],
    ["toMs", toMs],
  ] as const) {
    if (value !== undefined && !Number.isFinite(value)) {
      throw appError("INVALID_ARGUMENT", `${field} must be a finite epoch-ms number`, { field });
    }
  }
  if (fromMs !== undefined && toMs !== undefined && fromMs > toMs) {
    throw appError("INVALID_ARGUMENT", `fromMs (${fromMs}) must be <= toMs (${toMs})`, {
      field: "fromMs",
    });
  }
  const rows: Doc<"watchEvents">[] = await ctx.db
    .query("watchEvents")
    .withIndex("by_user_and_watchedAt", (q) => {
      const byUser = q.eq("userId", userId);
      const lower = fromMs !== undefined ? byUser.gte("watchedAtMs", fromMs) : byUser;
      return toMs !== undefined ? lower.lte("watchedAtMs", toMs) : lower;
    })
    .take(MAX_DELETE_PER_CALL + 1);
  const hasMore = rows.length > MAX_DELETE_PER_CALL;
  const batch = rows.slice(0, MAX_DELETE_PER_CALL);
  if (batch.length === 0) return { deleted: 0, hasMore: false, seq: null };

  for (const row of batch) await ctx.db.delete(row._id);
  const seq = await appendChange(ctx, userId, {
    kind: "delete",
    fromMs: batch[0].watchedAtMs,
    toMs: batch[batch.length - 1].watchedAtMs,
    count: batch.length,
  });
  const user = await getUser(ctx, userId);
  if (user === null) throw new Error(`users row for ${userId} missing after appendChange`);
  await ctx.db.patch(user._id, { eventCount: Math.max(0, user.eventCount - batch.length) });
  return { deleted: batch.length, hasMore, seq };
}

export const importBatchArgs = { events: v.array(vWatchEventInput) };
export const deleteRangeArgs = { fromMs: v.optional(v.number()), toMs: v.optional(v.number()) };

/** Handler of `watchEvents:importBatch`: imports for the caller. */
export async function importBatchHandler(
  ctx: MutationCtx,
  args: { events: WatchEventInput[] },
): Promise<ImportResult> {
  return await importEventsForUser(ctx, await requireCallerUserId(ctx), args.events);
}

/** Handler of `watchEvents:deleteRange`: deletes for the caller. */
export async function deleteRangeHandler(
  ctx: MutationCtx,
  args: { fromMs?: number; toMs?: number },
): Promise<DeleteResult> {
  return await deleteRangeForUser(ctx, await requireCallerUserId(ctx), args);
}

/**
 * Import up to 1000 views for the signed-in user (UI upload, importer CLI).
 *
 * Idempotent: views are deduplicated on the second of `watchedAtMs` +
 * `videoId` (or + `title` without an id; see `dedupeKey`), within the batch and
 * against stored views, so re-sending a batch, or importing the HTML export of
 * views already imported from JSON, inserts nothing and appends no change
 * (`seq: null`). Appends one
 * `"import"` change covering the inserted `watchedAtMs` range in the same
 * transaction. Timestamps are epoch ms, UTC, within [2005-01-01, now + 1 day].
 *
 * @throws ConvexError `UNAUTHENTICATED`; `BATCH_TOO_LARGE` (> 1000 events);
 *   `INVALID_EVENT` with `index` and `field` (the whole batch is rejected).
 */
export const importBatch = mutation({
  args: importBatchArgs,
  returns: vImportResult,
  handler: importBatchHandler,
});

/**
 * Delete the signed-in user's views with `fromMs <= watchedAtMs <= toMs`
 * (epoch ms, inclusive, absent = unbounded), at most 2000 per call (UI).
 * Call again while `hasMore`. Each call that deletes something appends one
 * `"delete"` change with the actual min/max deleted and the count; a call that
 * deletes nothing writes nothing (`seq: null`), so repeating is harmless.
 *
 * @throws ConvexError `UNAUTHENTICATED`; `INVALID_ARGUMENT` (non-finite bound, fromMs > toMs).
 */
export const deleteRange = mutation({
  args: deleteRangeArgs,
  returns: vDeleteResult,
  handler: deleteRangeHandler,
});
