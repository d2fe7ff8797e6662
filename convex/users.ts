/**
 * The `users` table: per-user settings, change counters and the worker lease,
 * plus the identity helpers used by public functions.
 */
import type { Doc } from "./_generated/dataModel";
import type { MutationCtx, QueryCtx } from "./_generated/server";
import { appError } from "./errors";

/** Time zone of a user who never set one. */
export const DEFAULT_TIME_ZONE = "UTC";
/** Longest user id accepted by internal functions, in characters. */
export const MAX_USER_ID_LENGTH = 512;

/** Return the caller's user id (`tokenIdentifier`), or null when unauthenticated. */
export async function callerUserId(ctx: QueryCtx): Promise<string | null> {
  const identity = await ctx.auth.getUserIdentity();
  return identity?.tokenIdentifier ?? null;
}

/**
 * Return the caller's user id for a public write.
 *
 * @throws ConvexError `UNAUTHENTICATED` when the call carries no identity.
 */
export async function requireCallerUserId(ctx: QueryCtx): Promise<string> {
  const userId = await callerUserId(ctx);
  if (userId === null) {
    throw appError("UNAUTHENTICATED", "this function needs a signed-in user");
  }
  return userId;
}

/** Validate a `userId` argument of an internal function. */
export function requireUserIdArg(userId: string): string {
  if (userId.length === 0 || userId.length > MAX_USER_ID_LENGTH) {
    throw appError(
      "INVALID_ARGUMENT",
      `userId must be 1-${MAX_USER_ID_LENGTH} characters, got ${userId.length}`,
      { field: "userId" },
    );
  }
  return userId;
}

/** Read a user's row, or null when the user has never written anything. */
export async function getUser(ctx: QueryCtx, userId: string): Promise<Doc<"users"> | null> {
  return await ctx.db
    .query("users")
    .withIndex("by_userId", (q) => q.eq("userId", userId))
    .unique();
}

/** Read a user's row, creating it with defaults (UTC, counters at 0) when missing. */
export async function ensureUser(ctx: MutationCtx, userId: string): Promise<Doc<"users">> {
  const existing = await getUser(ctx, userId);
  if (existing !== null) return existing;
  const id = await ctx.db.insert("users", {
    userId,
    timeZone: DEFAULT_TIME_ZONE,
    lastSeq: 0,
    ackedSeq: 0,
    eventCount: 0,
  });
  const created = await ctx.db.get(id);
  if (created === null) throw new Error(`users row ${id} vanished after insert`);
  return created;
}
