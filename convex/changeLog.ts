/**
 * The `changeLog` table: the transactional outbox. Every write to a user's
 * watch data or settings calls `appendChange` inside the same mutation, so
 * the data and its change entry commit (or fail) together.
 */
import type { Doc } from "./_generated/dataModel";
import type { MutationCtx, QueryCtx } from "./_generated/server";
import { ensureUser, getUser } from "./users";
import type { ChangeKind } from "./validators";

/** What changed: the affected `watchedAtMs` range (inclusive; absent = whole history) and size. */
export interface ChangeSpec {
  kind: ChangeKind;
  fromMs?: number;
  toMs?: number;
  count: number;
}

/**
 * Append a pending change for `userId` and return its seq.
 *
 * Bumps `users.lastSeq` (creating the user row if needed) and inserts the
 * `changeLog` row with that seq, status `"pending"`, 0 attempts, in the
 * caller's transaction.
 */
export async function appendChange(
  ctx: MutationCtx,
  userId: string,
  change: ChangeSpec,
  expectedSeq?: number,
): Promise<number> {
  const user = await ensureUser(ctx, userId);
  const seq = user.lastSeq + 1;
  if (expectedSeq !== undefined && seq !== expectedSeq) {
    throw new Error(`change seq for ${userId} is ${seq}, expected ${expectedSeq} (reserved by nextChangeSeq)`);
  }
  await ctx.db.patch(user._id, { lastSeq: seq });
  await ctx.db.insert("changeLog", {
    userId,
    seq,
    kind: change.kind,
    ...(change.fromMs !== undefined ? { fromMs: change.fromMs } : {}),
    ...(change.toMs !== undefined ? { toMs: change.toMs } : {}),
    count: change.count,
    status: "pending",
    attempts: 0,
    createdAtMs: Date.now(),
  });
  return seq;
}

/**
 * The seq the next `appendChange` for `userId` in this transaction will take
 * (writes nothing). Lets a mutation stamp the rows it writes with their
 * change's seq before the change row itself is appended.
 */
export async function nextChangeSeq(ctx: QueryCtx, userId: string): Promise<number> {
  const user = await getUser(ctx, userId);
  return (user?.lastSeq ?? 0) + 1;
}

/** The oldest pending change of `userId` with `seq > afterSeq`, or null (one index range). */
export async function firstPendingChangeAfter(
  ctx: QueryCtx,
  userId: string,
  afterSeq: number,
): Promise<Doc<"changeLog"> | null> {
  return await ctx.db
    .query("changeLog")
    .withIndex("by_status_and_user", (q) =>
      q.eq("status", "pending").eq("userId", userId).gt("seq", afterSeq),
    )
    .first();
}

/** True when `userId` has a pending change with `seq > afterSeq`. */
export async function hasPendingChangeAfter(
  ctx: QueryCtx,
  userId: string,
  afterSeq: number,
): Promise<boolean> {
  return (await firstPendingChangeAfter(ctx, userId, afterSeq)) !== null;
}

/** Count a user's pending changes, stopping at `cap`. */
export async function countPendingChanges(
  ctx: QueryCtx,
  userId: string,
  cap: number,
): Promise<number> {
  const rows = await ctx.db
    .query("changeLog")
    .withIndex("by_status_and_user", (q) => q.eq("status", "pending").eq("userId", userId))
    .take(cap);
  return rows.length;
}
