/**
 * Operator entry points (admin key only): the public writes, acting for an
 * explicit `userId` (importer CLI in operator mode, maintenance scripts), and
 * the dead letters: list them, deliver them again.
 */
import { v } from "convex/values";
import { internalMutation, internalQuery, type MutationCtx, type QueryCtx } from "./_generated/server";
import { requestRecomputeForUser } from "./dashboard";
import { appError, requireInteger } from "./errors";
import { setTimeZoneForUser } from "./settings";
import { requireUserIdArg } from "./users";
import {
  vDeadLetter,
  vDeleteResult,
  vImportResult,
  vRecomputeResult,
  vRetryDeadLettersResult,
  vSeqResult,
  vWatchEventInput,
  type DeadLetter,
  type DeleteResult,
  type ImportResult,
  type RetryDeadLettersResult,
  type WatchEventInput,
} from "./validators";
import { deleteRangeForUser, importEventsForUser } from "./watchEvents";

/** Handler of `admin:importBatch`. */
export async function importBatchHandler(
  ctx: MutationCtx,
  args: { userId: string; events: WatchEventInput[] },
): Promise<ImportResult> {
  return await importEventsForUser(ctx, requireUserIdArg(args.userId), args.events);
}

/** Handler of `admin:deleteRange`. */
export async function deleteRangeHandler(
  ctx: MutationCtx,
  args: { userId: string; fromMs?: number; toMs?: number },
): Promise<DeleteResult> {
  return await deleteRangeForUser(ctx, requireUserIdArg(args.userId), args);
}

/** Handler of `admin:setTimeZone`. */
export async function setTimeZoneHandler(
  ctx: MutationCtx,
  args: { userId: string; timeZone: string },
): Promise<{ seq: number | null }> {
  return await setTimeZoneForUser(ctx, requireUserIdArg(args.userId), args.timeZone);
}

/** Handler of `admin:requestRecompute`. */
export async function requestRecomputeHandler(
  ctx: MutationCtx,
  args: { userId: string },
): Promise<{ seq: number }> {
  return await requestRecomputeForUser(ctx, requireUserIdArg(args.userId));
}

/**
 * `watchEvents:importBatch` for `userId` (importer CLI, operator mode).
 * Same limits, validation and idempotency: ≤ 1000 events, duplicates skipped,
 * one `"import"` change when anything was inserted.
 */
export const importBatch = internalMutation({
  args: { userId: v.string(), events: v.array(vWatchEventInput) },
  returns: vImportResult,
  handler: importBatchHandler,
});

/**
 * `watchEvents:deleteRange` for `userId` (operators): ≤ 2000 per call, call
 * again while `hasMore`; bounds in epoch ms, inclusive.
 */
export const deleteRange = internalMutation({
  args: { userId: v.string(), fromMs: v.optional(v.number()), toMs: v.optional(v.number()) },
  returns: vDeleteResult,
  handler: deleteRangeHandler,
});

/** `settings:setTimeZone` for `userId` (operators). Idempotent; `seq` null when unchanged. */
export const setTimeZone = internalMutation({
  args: { userId: v.string(), timeZone: v.string() },
  returns: vSeqResult,
  handler: setTimeZoneHandler,
});

/** `dashboard:requestRecompute` for `userId` (operators). Appends a `"manual"` change each call. */
export const requestRecompute = internalMutation({
  args: { userId: v.string() },
  returns: vRecomputeResult,
  handler: requestRecomputeHandler,
});

/** Default and largest page of `admin:listDeadLetters`. */
export const DEAD_LETTER_PAGE = 100;
export const MAX_DEAD_LETTER_PAGE = 1000;

/** Handler of `admin:listDeadLetters`. */
export async function listDeadLettersHandler(
  ctx: QueryCtx,
  args: { limit?: number; userId?: string },
): Promise<DeadLetter[]> {
  const limit = args.limit ?? DEAD_LETTER_PAGE;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_DEAD_LETTER_PAGE) {
    throw appError("INVALID_ARGUMENT", `limit must be an integer from 1 to ${MAX_DEAD_LETTER_PAGE}, got ${limit}`, {
      field: "limit",
    });
  }
  const userId = args.userId === undefined ? undefined : requireUserIdArg(args.userId);
  const rows = await ctx.db
    .query("changeLog")
    .withIndex("by_status_and_user", (q) =>
      userId === undefined ? q.eq("status", "failed") : q.eq("status", "failed").eq("userId", userId),
    )
    .take(limit);
  return rows.map((r) => ({
    userId: r.userId,
    seq: r.seq,
    kind: r.kind,
    ...(r.fromMs !== undefined ? { fromMs: r.fromMs } : {}),
    ...(r.toMs !== undefined ? { toMs: r.toMs } : {}),
    count: r.count,
    attempts: r.attempts,
    error: r.error ?? "",
    createdAtMs: r.createdAtMs,
    ...(r.processedAtMs !== undefined ? { failedAtMs: r.processedAtMs } : {}),
  }));
}

/**
 * Dead-lettered changes (operators): `changeLog` rows the worker failed on `MAX_ATTEMPTS` (5) times,
 * which are no longer delivered. Ordered by `userId`, then `seq`; at most `limit` (default 100,
 * 1–1000) rows, optionally of one `userId`. `error` is the last failure (≤ 2000 characters),
 * `failedAtMs` (epoch ms) when the row was dead-lettered.
 *
 * The data of such a change is stored. After fixing the cause, `admin:retryDeadLetters` delivers
 * the rows again, or `admin:requestRecompute` recomputes the user's whole history. A dead letter
 * leaves this list (becomes `"done"`) as soon as the worker acknowledges a recompute of its user at
 * a watermark ≥ its `seq`, whatever started that recompute (see `worker:ackChanges`).
 *
 * @throws ConvexError `INVALID_ARGUMENT` for a bad `limit` or `userId`.
 */
export const listDeadLetters = internalQuery({
  args: { limit: v.optional(v.number()), userId: v.optional(v.string()) },
  returns: v.array(vDeadLetter),
  handler: listDeadLettersHandler,
});

/** Default and largest `limit` of `admin:retryDeadLetters` (rows updated per call). */
export const RETRY_DEFAULT_LIMIT = 1000;
export const RETRY_MAX_LIMIT = 4000;

/** Handler of `admin:retryDeadLetters`. */
export async function retryDeadLettersHandler(
  ctx: MutationCtx,
  args: { userId?: string; limit?: number },
): Promise<RetryDeadLettersResult> {
  const limit = args.limit ?? RETRY_DEFAULT_LIMIT;
  requireInteger(limit, "limit", 1, RETRY_MAX_LIMIT);
  const userId = args.userId === undefined ? undefined : requireUserIdArg(args.userId);
  const rows = await ctx.db
    .query("changeLog")
    .withIndex("by_status_and_user", (q) =>
      userId === undefined ? q.eq("status", "failed") : q.eq("status", "failed").eq("userId", userId),
    )
    .take(limit + 1);
  const retried = rows.slice(0, limit);
  for (const row of retried) {
    await ctx.db.patch(row._id, { status: "pending", attempts: 0, error: undefined, processedAtMs: undefined });
  }
  return { retried: retried.length, hasMore: rows.length > limit };
}

/**
 * Deliver dead-lettered changes again (operators, once the cause of the failures is fixed): up to
 * `limit` (default 1000, 1–4000) `"failed"` rows, of one `userId` or of every user (by `userId`,
 * then `seq`), become `"pending"` with `attempts` 0 and no `error`, as when they were appended. The
 * worker's subscription to `worker:pendingChanges` picks them up (oldest first: they keep their
 * commit order) and recomputes their users; a row that fails 5 times again is dead-lettered again.
 * Returns the rows put back (`retried`) and whether more dead letters match (`hasMore`: call
 * again). With no dead letter left it changes nothing and returns 0. A user still in a
 * retry backoff (`worker:failChanges`) is claimed when the backoff ends (≤ 64 s).
 *
 * @throws ConvexError `INVALID_ARGUMENT` for a bad `limit` or `userId`.
 */
export const retryDeadLetters = internalMutation({
  args: { userId: v.optional(v.string()), limit: v.optional(v.number()) },
  returns: vRetryDeadLettersResult,
  handler: retryDeadLettersHandler,
});
