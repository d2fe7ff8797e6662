/**
 * The worker's side of the outbox (admin key only): watch pending changes,
 * claim a user under a lease, read their views, store aggregates behind the
 * write guard, then acknowledge (or fail) the consumed changes.
 */
import { paginationOptsValidator, type PaginationOptions } from "convex/server";
import { getDocumentSize, v, type Value } from "convex/values";
import type { Doc } from "./_generated/dataModel";
import {
  internalMutation,
  internalQuery,
  type MutationCtx,
  type QueryCtx,
} from "./_generated/server";
import { appendChange, firstPendingChangeAfter } from "./changeLog";
import { appError, requireInteger } from "./errors";
import { ensureUser, getUser, requireUserIdArg } from "./users";
import {
  vChangeEntry,
  vExpiryOutcome,
  vFilters,
  vPendingChange,
  vResultSetInput,
  vStoreResult,
  vWatchEventOutput,
  type AggregationType,
  type ChangeEntry,
  type ChangeKind,
  type ExpiryOutcome,
  type Filters,
  type PendingChange,
  type ResultSetInput,
  type StoreResult,
  type StoredRow,
  type TypeValidUntil,
  type WatchEventOutput,
} from "./validators";

/** Default and maximum `limit` of `pendingChanges`. */
export const PENDING_DEFAULT_LIMIT = 500;
export const PENDING_MAX_LIMIT = 2000;
/** Longest accepted lease, in ms (1 h). */
export const MAX_LEASE_MS = 60 * 60 * 1000;
/** `claimUser` returns pending changes one by one up to this many, coalesced beyond. */
export const CLAIM_MAX_CHANGES = 1000;
/** Most pending rows `claimUser` reads (and `ackChanges`/`failChanges` update) per call. */
export const CHANGE_ROWS_PER_CALL = 8000;
/** Most views `claimUser` returns with a claim of only imports (`appended`); more are paged. */
export const CLAIM_MAX_EVENTS = 1000;
/** Most active filter interests returned by `claimUser`. */
export const CLAIM_MAX_INTERESTS = 200;
/** Largest `paginationOpts.numItems` accepted by `listEvents`. */
export const LIST_EVENTS_MAX_PAGE = 4000;
/** Most results per `storeAggregations` call (over all its sets). */
export const STORE_MAX_RESULTS = 50;
/** Most stored aggregation rows read for one filter set (14 types today). */
export const MAX_ROWS_PER_SET = 64;
/** Longest accepted `filterKey`, in characters. */
export const MAX_FILTER_KEY_LENGTH = 16_384;
/** A change failed this many times becomes `"failed"` (dead letter). */
export const MAX_ATTEMPTS = 5;
/**
 * Wait before the next attempt on a user whose recompute failed, in ms, by the attempt count the
 * failure brought the user's pending rows to (1–4; the fifth failure dead-letters them): 1 s, 4 s,
 * 16 s, 64 s, 85 s in all. `failChanges` holds the user's lease that long (a backoff lease, see
 * `leases.backoffAttempts`), so no replica, the failing one included, claims the user earlier.
 *
 * Why these numbers: a cause that outlives the gateway's own per-call retries (a redeploy of these
 * functions, a restarted cache, a replica short of memory) clears within about a minute and a half
 * without an operator, while a deterministic failure costs five recomputes spread over that time
 * instead of five back to back within a fraction of a second, and other users' work runs in
 * between. The last step is about the default lease (`WORKER_LEASE_MS`, 60 s): a failing user is
 * never held much longer than a crashed replica's lease would hold it.
 */
export const RETRY_BACKOFF_MS: readonly number[] = [1_000, 4_000, 16_000, 64_000];
/** Longest stored error text, in characters (longer is truncated). */
export const MAX_ERROR_LENGTH = 2000;
/** Default and maximum `limit` of `enqueueExpired` (users). */
export const EXPIRED_DEFAULT_LIMIT = 100;
export const EXPIRED_MAX_LIMIT = 1000;
/**
 * Most expired `resultSets` rows `enqueueExpired` handles per call; its scan resumes after the last
 * one at the next call (`scanCursors`).
 */
export const EXPIRED_SCAN_ROWS = 4000;
/** Expired `resultSets` rows read per index range of `enqueueExpired`'s scan. */
export const EXPIRED_SCAN_PAGE = 100;
/** Most on-demand filter sets `enqueueExpired` retires per call (each deletes ≤ 66 documents). */
export const RETIRE_MAX_SETS = 50;
/**
 * Most expired `filterInterests` rows `enqueueExpired` deletes per call, read `EXPIRED_INTERESTS_PAGE`
 * per index range (a row is ≤ ≈ 26 KB with 50 topics and 50 channels of 128 characters).
 */
export const EXPIRED_INTERESTS_PER_CALL = 256;
export const EXPIRED_INTERESTS_PAGE = 64;

const MiB = 1 << 20;

/** What a transaction reads: index ranges, documents, bytes of those documents. */
export interface ReadLimits {
  /** Index ranges read: calls to `db.get` and `db.query`. */
  indexRanges: number;
  /** Documents read: returned by queries, and read by the writes that change them. */
  documents: number;
  /** Their size, as Convex measures it (`getDocumentSize`). */
  bytes: number;
}

/**
 * Convex's read limits for one query or mutation, from the "Transactions" table of
 * https://docs.convex.dev/production/state/limits (read 2026-11-30): 4,096 index ranges read ("the
 * number of calls to `db.get` and `db.query`"), 32,000 documents scanned, 16 MiB of data read. A
 * function that goes beyond one of them fails, and nothing it wrote is committed.
 */
export const CONVEX_TRANSACTION_READ_LIMITS: ReadLimits = { indexRanges: 4096, documents: 32_000, bytes: 16 * MiB };

/**
 * What one `enqueueExpired` call reads at most: half of each documented limit, counted as it goes
 * (`ReadBudget`). Each step (a page of the scan, one expired set, a page of expired interests) is
 * started only while its worst case in index ranges and documents still fits; bytes are known only
 * once read, so a step starts while the byte budget is not spent, and the other half of the limit
 * absorbs the last step (≤ ≈ 3.3 MB: a page of 64 of the largest interests, read then deleted).
 * Not counted: the bytes of a retired set's aggregation rows, deleted by id without being read
 * (≤ 50 sets per call; a user's 18 eager sets hold ≈ 1.4 MB in all, ≈ 80 KB a set).
 */
export const EXPIRED_READ_BUDGET: ReadLimits = {
  indexRanges: CONVEX_TRANSACTION_READ_LIMITS.indexRanges / 2,
  documents: CONVEX_TRANSACTION_READ_LIMITS.documents / 2,
  bytes: CONVEX_TRANSACTION_READ_LIMITS.bytes / 2,
};

/**
 * Worst case of handling one expired set after its scan page is read. Index ranges: interest lookup,
 * pending-change check, user read, and the user read of `appendChange` (counted twice: it may insert
 * then read the row); or interest lookup and the `aggregations` read of a set stored before
 * `resultSets.rows` existed. Documents: interest lookup (≤ 2, `unique`), ≤ 64 such aggregations read
 * then deleted, the set row and the interest deleted.
 */
const EXPIRED_SET_MAX_READS = { indexRanges: 5, documents: 2 + 2 * MAX_ROWS_PER_SET + 2 };

/**
 * Kept by the scan for what follows it in the same call: the cursor's update and the expired-interest
 * pages (≤ 4 ranges; ≤ 64 rows read and deleted per page, counting the rows deleted by earlier pages
 * once more, should the index still scan past them).
 */
const EXPIRED_SWEEP_RESERVE: ReadLimits = { indexRanges: 8, documents: 1024, bytes: 2 * MiB };

/** Longest accepted worker id, in characters. */
export const MAX_WORKER_ID_LENGTH = 256;

function requireWorkerId(workerId: string): string {
  if (workerId.length === 0 || workerId.length > MAX_WORKER_ID_LENGTH) {
    throw appError(
      "INVALID_ARGUMENT",
      `workerId must be 1-${MAX_WORKER_ID_LENGTH} characters, got ${workerId.length}`,
      { field: "workerId" },
    );
  }
  return workerId;
}

function toEntry(row: Doc<"changeLog">): ChangeEntry {
  return {
    seq: row.seq,
    kind: row.kind,
    ...(row.fromMs !== undefined ? { fromMs: row.fromMs } : {}),
    ...(row.toMs !== undefined ? { toMs: row.toMs } : {}),
    count: row.count,
  };
}

/**
 * Merge change rows into one entry per kind: `seq` is the kind's highest seq,
 * `count` the sum, the range the union (absent when any row covers the whole
 * history). Entries are returned in `seq` order.
 */
export function coalesceChanges(rows: readonly Doc<"changeLog">[]): ChangeEntry[] {
  const byKind = new Map<ChangeKind, ChangeEntry & { whole: boolean }>();
  for (const row of rows) {
    const whole = row.fromMs === undefined || row.toMs === undefined;
    const prev = byKind.get(row.kind);
    if (prev === undefined) {
      byKind.set(row.kind, { ...toEntry(row), whole });
      continue;
    }
    prev.seq = Math.max(prev.seq, row.seq);
    prev.count += row.count;
    prev.whole = prev.whole || whole;
    if (!prev.whole && row.fromMs !== undefined && row.toMs !== undefined) {
      prev.fromMs = Math.min(prev.fromMs ?? row.fromMs, row.fromMs);
      prev.toMs = Math.max(prev.toMs ?? row.toMs, row.toMs);
    }
  }
  return [...byKind.values()]
    .map(({ whole, ...entry }) => {
      if (whole) {
        delete entry.fromMs;
        delete entry.toMs;
      }
      return entry;
    })
    .sort((a, b) => a.seq - b.seq);
}

/** Handler of `worker:pendingChanges`. */
export async function pendingChangesHandler(
  ctx: QueryCtx,
  args: { limit?: number },
): Promise<PendingChange[]> {
  const limit = args.limit ?? PENDING_DEFAULT_LIMIT;
  requireInteger(limit, "limit", 1, PENDING_MAX_LIMIT);
  const rows = await ctx.db
    .query("changeLog")
    .withIndex("by_status", (q) => q.eq("status", "pending"))
    .take(limit);
  return rows.map((row) => ({ userId: row.userId, ...toEntry(row) }));
}

export interface ClaimResult {
  granted: boolean;
  leaseOwner: string;
  leaseExpiresAtMs: number;
  retryAfterMs?: number;
  timeZone: string;
  lastSeq: number;
  /** Creation time of the user's row, epoch ms: the incarnation of its change log. */
  userCreatedAtMs: number;
  changes: ChangeEntry[];
  interests: Filters[];
  appended?: { afterSeq: number; throughSeq: number; events: WatchEventOutput[] };
}

/** The user's `leases` row, or null when no lease was taken or it was released. */
async function getLease(ctx: QueryCtx, userId: string): Promise<Doc<"leases"> | null> {
  return await ctx.db
    .query("leases")
    .withIndex("by_userId", (q) => q.eq("userId", userId))
    .unique();
}

/** A lease recorded on the `users` row before `leases` existed (still honoured until released). */
function legacyLease(user: Doc<"users">): { owner: string; expiresAtMs: number } | null {
  if (user.leaseOwner === undefined || user.leaseExpiresAtMs === undefined) return null;
  return { owner: user.leaseOwner, expiresAtMs: user.leaseExpiresAtMs };
}

/** Delete the user's lease if `workerId` holds it. */
async function releaseLease(ctx: MutationCtx, userId: string, workerId: string): Promise<void> {
  const lease = await getLease(ctx, userId);
  if (lease !== null && lease.owner === workerId) await ctx.db.delete(lease._id);
}

/**
 * The wait before the next attempt after a failure that brought a user's pending rows to
 * `attempts` (≥ 1) attempts, in ms: `RETRY_BACKOFF_MS[attempts - 1]`, the last step beyond it.
 */
export function retryBackoffMs(attempts: number): number {
  const steps = RETRY_BACKOFF_MS;
  return steps[Math.min(Math.max(attempts, 1), steps.length) - 1];
}

/**
 * Turn the user's lease into a backoff lease held by `workerId` until `untilMs` (epoch ms): taken
 * over when it is ours, expired or absent; a live lease of another worker is left alone (that
 * worker is processing the user now, and its own acknowledgement or failure decides).
 * Returns whether the backoff lease is in place.
 */
async function holdForBackoff(
  ctx: MutationCtx,
  userId: string,
  workerId: string,
  attempts: number,
  nowMs: number,
  untilMs: number,
): Promise<boolean> {
  const lease = await getLease(ctx, userId);
  const doc = { owner: workerId, expiresAtMs: untilMs, backoffAttempts: attempts };
  if (lease === null) {
    await ctx.db.insert("leases", { userId, ...doc });
    return true;
  }
  if (lease.owner !== workerId && lease.expiresAtMs > nowMs) return false;
  await ctx.db.patch(lease._id, doc);
  return true;
}

export interface RenewLeaseResult {
  renewed: boolean;
  leaseOwner?: string;
  leaseExpiresAtMs?: number;
}

/** Handler of `worker:renewLease`. */
export async function renewLeaseHandler(
  ctx: MutationCtx,
  args: { userId: string; workerId: string; leaseMs: number },
): Promise<RenewLeaseResult> {
  const userId = requireUserIdArg(args.userId);
  const workerId = requireWorkerId(args.workerId);
  requireInteger(args.leaseMs, "leaseMs", 1, MAX_LEASE_MS);
  const lease = await getLease(ctx, userId);
  if (lease === null) return { renewed: false };
  // Another worker's lease, or a retry backoff (never renewable, as in claimUser): not ours to extend.
  if (lease.owner !== workerId || lease.backoffAttempts !== undefined) {
    return { renewed: false, leaseOwner: lease.owner, leaseExpiresAtMs: lease.expiresAtMs };
  }
  // Still ours, even past its expiry: a claim by another worker would have replaced the owner, and
  // its acknowledgement or failure the row, in a transaction this one is ordered with.
  const leaseExpiresAtMs = Math.max(lease.expiresAtMs, Date.now() + args.leaseMs);
  if (leaseExpiresAtMs !== lease.expiresAtMs) await ctx.db.patch(lease._id, { expiresAtMs: leaseExpiresAtMs });
  return { renewed: true, leaseOwner: workerId, leaseExpiresAtMs };
}

/** Handler of `worker:claimUser`. */
export async function claimUserHandler(
  ctx: MutationCtx,
  args: { userId: string; workerId: string; leaseMs: number },
): Promise<ClaimResult> {
  const userId = requireUserIdArg(args.userId);
  const workerId = requireWorkerId(args.workerId);
  requireInteger(args.leaseMs, "leaseMs", 1, MAX_LEASE_MS);
  const nowMs = Date.now();
  const user = await ensureUser(ctx, userId);
  const lease = await getLease(ctx, userId);
  const holder = lease ?? legacyLease(user);
  // A backoff lease is not renewable: the worker that failed must wait like any other.
  const renewable = holder !== null && holder.owner === workerId && lease?.backoffAttempts === undefined;
  const free = holder === null || holder.expiresAtMs <= nowMs || renewable;
  if (!free) {
    return {
      granted: false,
      leaseOwner: holder.owner,
      leaseExpiresAtMs: holder.expiresAtMs,
      retryAfterMs: holder.expiresAtMs - nowMs,
      timeZone: user.timeZone,
      lastSeq: user.lastSeq,
      userCreatedAtMs: user._creationTime,
      changes: [],
      interests: [],
    };
  }
  const leaseExpiresAtMs = nowMs + args.leaseMs;
  if (lease === null) await ctx.db.insert("leases", { userId, owner: workerId, expiresAtMs: leaseExpiresAtMs });
  else await ctx.db.patch(lease._id, { owner: workerId, expiresAtMs: leaseExpiresAtMs, backoffAttempts: undefined });

  const rows = await ctx.db
    .query("changeLog")
    .withIndex("by_status_and_user", (q) =>
      q.eq("status", "pending").eq("userId", userId).lte("seq", user.lastSeq),
    )
    .take(CHANGE_ROWS_PER_CALL);
  const changes = rows.length <= CLAIM_MAX_CHANGES ? rows.map(toEntry) : coalesceChanges(rows);

  // Live interests only, the most recently registered first: an expired one is never computed
  // again, and expired rows not deleted yet cannot crowd live ones out of the bounded read.
  const interestRows = await ctx.db
    .query("filterInterests")
    .withIndex("by_user_and_expiresAt", (q) => q.eq("userId", userId).gt("expiresAtMs", nowMs))
    .order("desc")
    .take(CLAIM_MAX_INTERESTS);
  const interests = interestRows.map((row) => row.filters);

  return {
    granted: true,
    leaseOwner: workerId,
    leaseExpiresAtMs,
    timeZone: user.timeZone,
    lastSeq: user.lastSeq,
    userCreatedAtMs: user._creationTime,
    changes,
    interests,
    ...(await appendedViews(ctx, userId, rows)),
  };
}

/**
 * The views the claimed changes inserted, when every claimed change is an import and they are
 * few (≤ `CLAIM_MAX_EVENTS`): the worker then needs no `listEventsByChange` round trip for them.
 */
async function appendedViews(
  ctx: QueryCtx,
  userId: string,
  rows: Doc<"changeLog">[],
): Promise<Pick<ClaimResult, "appended">> {
  if (rows.length === 0 || rows.length > CLAIM_MAX_CHANGES || rows.some((r) => r.kind !== "import")) return {};
  if (rows.reduce((sum, r) => sum + r.count, 0) > CLAIM_MAX_EVENTS) return {};
  const afterSeq = rows[0].seq - 1;
  const throughSeq = rows[rows.length - 1].seq;
  const events = await ctx.db
    .query("watchEvents")
    .withIndex("by_user_and_changeSeq", (q) =>
      q.eq("userId", userId).gt("changeSeq", afterSeq).lte("changeSeq", throughSeq),
    )
    .take(CLAIM_MAX_EVENTS + 1);
  if (events.length > CLAIM_MAX_EVENTS) return {};
  return { appended: { afterSeq, throughSeq, events: events.map(toEventOutput) } };
}

export interface EventPage {
  page: WatchEventOutput[];
  isDone: boolean;
  continueCursor: string;
}

function toEventOutput(row: Doc<"watchEvents">): WatchEventOutput {
  return {
    watchedAtMs: row.watchedAtMs,
    kind: row.kind,
    product: row.product,
    ...(row.videoId !== undefined ? { videoId: row.videoId } : {}),
    ...(row.title !== undefined ? { title: row.title } : {}),
    ...(row.channelId !== undefined ? { channelId: row.channelId } : {}),
    ...(row.channelName !== undefined ? { channelName: row.channelName } : {}),
    ...(row.flags !== undefined ? { flags: row.flags } : {}),
  };
}

/** Handler of `worker:listEvents`. */
export async function listEventsHandler(
  ctx: QueryCtx,
  args: {
    userId: string;
    fromMs?: number;
    toMs?: number;
    maxChangeSeq?: number;
    paginationOpts: PaginationOptions;
  },
): Promise<EventPage> {
  const userId = requireUserIdArg(args.userId);
  requireInteger(args.paginationOpts.numItems, "paginationOpts.numItems", 1, LIST_EVENTS_MAX_PAGE);
  const { fromMs, toMs, maxChangeSeq } = args;
  if (maxChangeSeq !== undefined) requireInteger(maxChangeSeq, "maxChangeSeq", 0);
  const result = await ctx.db
    .query("watchEvents")
    .withIndex("by_user_and_watchedAt", (q) => {
      const byUser = q.eq("userId", userId);
      const lower = fromMs !== undefined ? byUser.gte("watchedAtMs", fromMs) : byUser;
      return toMs !== undefined ? lower.lte("watchedAtMs", toMs) : lower;
    })
    .paginate(args.paginationOpts);
  const rows =
    maxChangeSeq === undefined
      ? result.page
      : result.page.filter((row) => row.changeSeq === undefined || row.changeSeq <= maxChangeSeq);
  return { page: rows.map(toEventOutput), isDone: result.isDone, continueCursor: result.continueCursor };
}

/** Handler of `worker:listEventsByChange`. */
export async function listEventsByChangeHandler(
  ctx: QueryCtx,
  args: { userId: string; afterSeq: number; throughSeq: number; paginationOpts: PaginationOptions },
): Promise<EventPage> {
  const userId = requireUserIdArg(args.userId);
  requireInteger(args.paginationOpts.numItems, "paginationOpts.numItems", 1, LIST_EVENTS_MAX_PAGE);
  requireInteger(args.afterSeq, "afterSeq", 0);
  requireInteger(args.throughSeq, "throughSeq", 0);
  const { afterSeq, throughSeq } = args;
  const result = await ctx.db
    .query("watchEvents")
    .withIndex("by_user_and_changeSeq", (q) =>
      q.eq("userId", userId).gt("changeSeq", afterSeq).lte("changeSeq", throughSeq),
    )
    .paginate(args.paginationOpts);
  return { page: result.page.map(toEventOutput), isDone: result.isDone, continueCursor: result.continueCursor };
}

/** Longest accepted `dataHash`, in characters. */
export const MAX_DATA_HASH_LENGTH = 128;

function invalid(message: string, field: string, extra: Record<string, unknown> = {}): never {
  throw appError("INVALID_ARGUMENT", message, { field, ...extra });
}

/** Reject malformed sets before anything is read or written (the call then changes nothing). */
function validateSets(sets: readonly ResultSetInput[]): void {
  const total = sets.reduce((n, set) => n + set.results.length, 0);
  if (total > STORE_MAX_RESULTS) {
    invalid(`sets hold ${total} results; at most ${STORE_MAX_RESULTS} per call are allowed`, "sets");
  }
  const keys = new Set<string>();
  sets.forEach((set, index) => {
    if (set.filterKey.length === 0 || set.filterKey.length > MAX_FILTER_KEY_LENGTH) {
      invalid(`sets[${index}].filterKey must be 1-${MAX_FILTER_KEY_LENGTH} characters`, "filterKey", { index });
    }
    if (keys.has(set.filterKey)) {
      invalid(`sets[${index}].filterKey ${set.filterKey} appears twice; send each set once, whole`, "filterKey", {
        index,
      });
    }
    keys.add(set.filterKey);
    requireInteger(set.definitionVersion, `sets[${index}].definitionVersion`, 0);
    const types = new Set<AggregationType>();
    set.results.forEach((result, r) => {
      const where = `sets[${index}].results[${r}]`;
      if (types.has(result.type)) {
        invalid(`${where}.type ${result.type} appears twice in one set`, "type", { index });
      }
      types.add(result.type);
      if (result.dataHash.length === 0 || result.dataHash.length > MAX_DATA_HASH_LENGTH) {
        invalid(`${where}.dataHash must be 1-${MAX_DATA_HASH_LENGTH} characters`, "dataHash", { index });
      }
      if (result.validUntilMs !== undefined && !Number.isFinite(result.validUntilMs)) {
        invalid(`${where}.validUntilMs must be finite`, "validUntilMs", { index });
      }
    });
  });
}

/**
 * Store one filter set (the write guard of `storeAggregations`; see
 * docs/architecture.md). Adds the set's results to `outcome`.
 */
/**
 * The `aggregations` rows of a filter set: from its set row's `rows` list, or — for a set row stored
 * before `rows` existed, or none — read by index (their data is then read too, once).
 */
async function storedRows(
  ctx: QueryCtx,
  userId: string,
  filterKey: string,
  rs: Doc<"resultSets"> | null,
): Promise<StoredRow[]> {
  if (rs !== null && rs.rows !== undefined) return rs.rows;
  const stored = await ctx.db
    .query("aggregations")
    .withIndex("by_user_filter", (q) => q.eq("userId", userId).eq("filterKey", filterKey))
    .take(MAX_ROWS_PER_SET);
  return stored.map((row) => ({
    type: row.type,
    id: row._id,
    dataHash: row.dataHash,
    definitionVersion: row.definitionVersion,
  }));
}

async function storeSet(
  ctx: MutationCtx,
  userId: string,
  watermark: number,
  computedAtMs: number,
  set: ResultSetInput,
  outcome: StoreResult,
): Promise<void> {
  const { filterKey, definitionVersion, results } = set;
  const rs = await ctx.db
    .query("resultSets")
    .withIndex("by_user_filter", (q) => q.eq("userId", userId).eq("filterKey", filterKey))
    .unique();
  if (rs !== null) {
    if (watermark < rs.watermark || definitionVersion < rs.definitionVersion) {
      // Older data, or an older definition (a replica not yet upgraded during a rolling deploy).
      outcome.skippedStale += results.length;
      return;
    }
    if (
      watermark === rs.watermark &&
      computedAtMs <= rs.computedAtMs &&
      definitionVersion <= rs.definitionVersion
    ) {
      outcome.unchanged += results.length; // a retry
      return;
    }
  }

  // The rows' hashes and ids come from the set's own row, so their data is not read (rows of a set
  // stored before `rows` existed are read once, then listed).
  const byType = new Map((await storedRows(ctx, userId, filterKey, rs)).map((row) => [row.type, row]));
  // A result sent without `data` claims "unchanged": the set is applied only if every such claim holds.
  for (const result of results) {
    if (result.data !== undefined) continue;
    const old = byType.get(result.type);
    if (old === undefined || old.dataHash !== result.dataHash || old.definitionVersion !== definitionVersion) {
      outcome.missing.push(filterKey);
      return;
    }
  }
  const rows: StoredRow[] = [];
  for (const result of results) {
    const old = byType.get(result.type);
    byType.delete(result.type);
    if (old !== undefined && old.dataHash === result.dataHash && old.definitionVersion === definitionVersion) {
      rows.push(old);
      outcome.unchanged++;
      continue;
    }
    const doc = {
      userId,
      type: result.type,
      filterKey,
      data: result.data,
      dataHash: result.dataHash,
      watermark,
      computedAtMs,
      definitionVersion,
    };
    const id = old === undefined ? await ctx.db.insert("aggregations", doc) : old.id;
    if (old !== undefined) await ctx.db.replace(old.id, doc);
    rows.push({ type: result.type, id, dataHash: result.dataHash, definitionVersion });
    outcome.written++;
  }
  // The set is sent whole: a type it no longer contains must not be shown under its new watermark.
  for (const leftover of byType.values()) await ctx.db.delete(leftover.id);

  const validUntil: TypeValidUntil[] = results
    .filter((r) => r.validUntilMs !== undefined)
    .map((r) => ({ type: r.type, validUntilMs: r.validUntilMs! }));
  const doc = {
    userId,
    filterKey,
    watermark,
    computedAtMs,
    definitionVersion,
    validUntil,
    rows,
    ...(validUntil.length > 0
      ? { nextValidUntilMs: Math.min(...validUntil.map((e) => e.validUntilMs)) }
      : {}),
  };
  if (rs === null) await ctx.db.insert("resultSets", doc);
  else await ctx.db.replace(rs._id, doc);
}

/** Handler of `worker:storeAggregations` (the write guard; see the JSDoc of the function). */
export async function storeAggregationsHandler(
  ctx: MutationCtx,
  args: { userId: string; watermark: number; computedAtMs: number; sets: ResultSetInput[] },
): Promise<StoreResult> {
  const userId = requireUserIdArg(args.userId);
  const { watermark, computedAtMs } = args;
  validateSets(args.sets);
  requireInteger(watermark, "watermark", 0);
  requireInteger(computedAtMs, "computedAtMs", 0);
  const user = await getUser(ctx, userId);
  const lastSeq = user?.lastSeq ?? 0;
  if (watermark > lastSeq) {
    invalid(`watermark ${watermark} is ahead of the user's last change seq ${lastSeq}`, "watermark");
  }
  const outcome: StoreResult = { written: 0, unchanged: 0, skippedStale: 0, missing: [] };
  for (const set of args.sets) await storeSet(ctx, userId, watermark, computedAtMs, set, outcome);
  return outcome;
}

async function pendingUpTo(
  ctx: QueryCtx,
  userId: string,
  upToSeq: number,
): Promise<Doc<"changeLog">[]> {
  return await ctx.db
    .query("changeLog")
    .withIndex("by_status_and_user", (q) =>
      q.eq("status", "pending").eq("userId", userId).lte("seq", upToSeq),
    )
    .take(CHANGE_ROWS_PER_CALL);
}

/**
 * Mark the user's dead letters with `seq ≤ coveredSeq` done, at most `limit` of them, oldest
 * first; return how many. `attempts` and `error` are kept (a done row with attempts is a
 * superseded dead letter); `processedAtMs` becomes `nowMs`.
 */
async function supersedeDeadLetters(
  ctx: MutationCtx,
  userId: string,
  coveredSeq: number,
  limit: number,
  nowMs: number,
): Promise<number> {
  if (limit <= 0) return 0;
  const rows = await ctx.db
    .query("changeLog")
    .withIndex("by_status_and_user", (q) =>
      q.eq("status", "failed").eq("userId", userId).lte("seq", coveredSeq),
    )
    .take(limit);
  for (const row of rows) await ctx.db.patch(row._id, { status: "done", processedAtMs: nowMs });
  return rows.length;
}

/** Handler of `worker:ackChanges`. */
export async function ackChangesHandler(
  ctx: MutationCtx,
  args: { userId: string; workerId: string; upToSeq: number },
): Promise<{ acked: number; superseded: number }> {
  const userId = requireUserIdArg(args.userId);
  const workerId = requireWorkerId(args.workerId);
  requireInteger(args.upToSeq, "upToSeq", 0);
  const user = await getUser(ctx, userId);
  if (user === null) return { acked: 0, superseded: 0 };
  const nowMs = Date.now();
  const rows = await pendingUpTo(ctx, userId, args.upToSeq);
  for (const row of rows) {
    await ctx.db.patch(row._id, { status: "done", processedAtMs: nowMs });
  }
  const coveredSeq =
    rows.length < CHANGE_ROWS_PER_CALL
      ? Math.min(args.upToSeq, user.lastSeq)
      : rows[rows.length - 1].seq;
  // Only an acknowledgement that consumed pending rows proves a recompute at this watermark was
  // stored (an ack of nothing may just release the lease of an empty claim). Such results were
  // computed from every view with changeSeq ≤ the watermark and the user's current settings, so
  // they reflect the dead-lettered changes below it as well: those are no longer dead.
  const superseded =
    rows.length > 0
      ? await supersedeDeadLetters(ctx, userId, coveredSeq, CHANGE_ROWS_PER_CALL - rows.length, nowMs)
      : 0;
  const legacyOurs = user.leaseOwner === workerId;
  const ackedSeq = Math.max(user.ackedSeq, coveredSeq);
  if (ackedSeq !== user.ackedSeq || legacyOurs) {
    await ctx.db.patch(user._id, {
      ackedSeq,
      ...(legacyOurs ? { leaseOwner: undefined, leaseExpiresAtMs: undefined } : {}),
    });
  }
  await releaseLease(ctx, userId, workerId);
  return { acked: rows.length, superseded };
}

/** Handler of `worker:failChanges`. */
export async function failChangesHandler(
  ctx: MutationCtx,
  args: { userId: string; workerId: string; upToSeq: number; error: string },
): Promise<{ failed: number; deadLettered: number; backoffMs: number }> {
  const userId = requireUserIdArg(args.userId);
  const workerId = requireWorkerId(args.workerId);
  requireInteger(args.upToSeq, "upToSeq", 0);
  const user = await getUser(ctx, userId);
  if (user === null) return { failed: 0, deadLettered: 0, backoffMs: 0 };
  const nowMs = Date.now();
  const error = args.error.slice(0, MAX_ERROR_LENGTH);
  const rows = await pendingUpTo(ctx, userId, args.upToSeq);
  let deadLettered = 0;
  let retriedAttempts = 0; // the most attempts among the rows that stay pending
  for (const row of rows) {
    const attempts = row.attempts + 1;
    if (attempts >= MAX_ATTEMPTS) {
      deadLettered++;
      await ctx.db.patch(row._id, { attempts, error, status: "failed", processedAtMs: nowMs });
    } else {
      retriedAttempts = Math.max(retriedAttempts, attempts);
      await ctx.db.patch(row._id, { attempts, error });
    }
  }
  if (user.leaseOwner === workerId) {
    await ctx.db.patch(user._id, { leaseOwner: undefined, leaseExpiresAtMs: undefined });
  }
  if (retriedAttempts > 0) {
    const backoffMs = retryBackoffMs(retriedAttempts);
    if (await holdForBackoff(ctx, userId, workerId, retriedAttempts, nowMs, nowMs + backoffMs)) {
      return { failed: rows.length, deadLettered, backoffMs };
    }
    return { failed: rows.length, deadLettered, backoffMs: 0 };
  }
  // Nothing failed is left to retry (all dead-lettered, or no row matched): release at once, so
  // changes that arrived meanwhile are not held up.
  await releaseLease(ctx, userId, workerId);
  return { failed: rows.length, deadLettered, backoffMs: 0 };
}

/**
 * Reads of one call counted against `limits` (see `EXPIRED_READ_BUDGET`): index ranges, documents
 * and their bytes, counted as they are read rather than estimated up front.
 */
export class ReadBudget {
  readonly used: ReadLimits = { indexRanges: 0, documents: 0, bytes: 0 };

  constructor(readonly limits: ReadLimits) {}

  /**
   * Whether a step of at most `indexRanges` index ranges and `documents` documents still fits with
   * `reserve` kept for later steps, and the bytes read so far leave `reserve.bytes` unspent.
   */
  fits(indexRanges: number, documents: number, reserve: ReadLimits = NO_RESERVE): boolean {
    const { used, limits } = this;
    return (
      used.indexRanges + indexRanges + reserve.indexRanges <= limits.indexRanges &&
      used.documents + documents + reserve.documents <= limits.documents &&
      used.bytes + reserve.bytes < limits.bytes
    );
  }

  /** Count one index range (a `db.query` or `db.get`) and what it returned; return that. */
  range<D extends Record<string, Value>>(result: D[]): D[];
  range<D extends Record<string, Value>>(result: D | null): D | null;
  range(result: Record<string, Value> | Record<string, Value>[] | null): unknown {
    this.count(1, result === null ? [] : Array.isArray(result) ? result : [result]);
    return result;
  }

  /** Count documents read without a range of their own: by a write (patch, replace, delete). */
  touched(...docs: Record<string, Value>[]): void {
    this.count(0, docs);
  }

  /** Count documents of unknown size (their bytes are not counted). */
  unsized(documents: number): void {
    this.used.documents += documents;
  }

  private count(indexRanges: number, docs: readonly Record<string, Value>[]): void {
    this.used.indexRanges += indexRanges;
    this.used.documents += docs.length;
    for (const doc of docs) this.used.bytes += getDocumentSize(doc);
  }
}

const NO_RESERVE: ReadLimits = { indexRanges: 0, documents: 0, bytes: 0 };

/**
 * A place in index `resultSets.by_nextValidUntil`: the keys of a row, the scan goes on after it.
 * (`_creationTime` tells apart rows that expire at the same instant; should two rows share both keys,
 * the one not handled yet waits for the scan's next pass.)
 */
interface ScanPosition {
  nextValidUntilMs: number;
  creationTime: number;
}

function positionOf(row: Doc<"resultSets">): ScanPosition {
  // Only expired rows are scanned, and those have a `nextValidUntilMs`.
  return { nextValidUntilMs: row.nextValidUntilMs!, creationTime: row._creationTime };
}

/** The name of `enqueueExpired`'s scan in `scanCursors`. */
const EXPIRED_SCAN = "expiredResultSets";

/**
 * The expired sets (`nextValidUntilMs ≤ nowMs`) after `after` (from the first when null) in index
 * order, read `EXPIRED_SCAN_PAGE` per index range, each page counted on `budget` and read only while
 * a page fits with `reserve` kept. Returns true when it went past the last expired set, false when
 * the budget stopped it. A page resumes after the previous page's last row: first the rows expiring
 * at the same instant and created after it (many sets expire at one instant: every MTD set of a time
 * zone at the start of a month), then the later instants.
 */
async function* expiredSetsAfter(
  ctx: QueryCtx,
  nowMs: number,
  after: ScanPosition | null,
  budget: ReadBudget,
  reserve: ReadLimits,
): AsyncGenerator<Doc<"resultSets">, boolean, undefined> {
  let position = after;
  // Whether rows at `position`'s instant may follow it (none is expired if that instant is later than
  // `nowMs`: a caller whose clock is behind the previous one's).
  let tiesLeft = position !== null && position.nextValidUntilMs <= nowMs;
  for (;;) {
    if (!budget.fits(1, EXPIRED_SCAN_PAGE, reserve)) return false;
    const from = position;
    const range =
      from !== null && tiesLeft
        ? ctx.db
            .query("resultSets")
            .withIndex("by_nextValidUntil", (q) =>
              q.eq("nextValidUntilMs", from.nextValidUntilMs).gt("_creationTime", from.creationTime),
            )
        : ctx.db
            .query("resultSets")
            .withIndex("by_nextValidUntil", (q) =>
              (from === null
                ? q.gte("nextValidUntilMs", Number.MIN_SAFE_INTEGER)
                : q.gt("nextValidUntilMs", from.nextValidUntilMs)
              ).lte("nextValidUntilMs", nowMs),
            );
    const page = budget.range(await range.take(EXPIRED_SCAN_PAGE));
    for (const row of page) yield row;
    if (page.length === EXPIRED_SCAN_PAGE) {
      position = positionOf(page[page.length - 1]);
      tiesLeft = true;
    } else if (tiesLeft) {
      tiesLeft = false; // on to the later instants
    } else {
      return true;
    }
  }
}

/** Handler of `worker:enqueueExpired` (see the JSDoc of the function); `limits` bound what it reads. */
export async function enqueueExpiredHandler(
  ctx: MutationCtx,
  args: { nowMs: number; limit?: number },
  limits: ReadLimits = EXPIRED_READ_BUDGET,
): Promise<ExpiryOutcome> {
  const { nowMs } = args;
  if (!Number.isFinite(nowMs)) {
    throw appError("INVALID_ARGUMENT", "nowMs must be a finite epoch-ms number", { field: "nowMs" });
  }
  const limit = args.limit ?? EXPIRED_DEFAULT_LIMIT;
  requireInteger(limit, "limit", 1, EXPIRED_MAX_LIMIT);
  // Interests are given their expiry and checked (`registerFilter`, `claimUser`) by the server's
  // clock: a caller's clock running ahead must not end one the server still counts as live.
  const interestNowMs = Math.min(nowMs, Date.now());
  const budget = new ReadBudget(limits);

  // The scan resumes where the previous call stopped, so sets it skips (a user with a pending change
  // is not enqueued again; the worker's recompute will move their expiry) or could not handle (read
  // budget, `limit`, retirement cap) cannot hold back the sets behind them call after call.
  const cursor = budget.range(
    await ctx.db
      .query("scanCursors")
      .withIndex("by_name", (q) => q.eq("name", EXPIRED_SCAN))
      .unique(),
  );
  const start: ScanPosition | null =
    cursor === null ? null : { nextValidUntilMs: cursor.nextValidUntilMs, creationTime: cursor.creationTime };
  const expired = expiredSetsAfter(ctx, nowMs, start, budget, EXPIRED_SWEEP_RESERVE);
  let last = start; // the last set handled
  let leftBehind: ScanPosition | null | undefined; // where the first set left for the next call is
  let reachedEnd = false;
  let scanned = 0;
  const seen = new Set<string>();
  let enqueued = 0;
  let retired = 0;
  while (scanned < EXPIRED_SCAN_ROWS && enqueued < limit) {
    const next = await expired.next();
    if (next.done === true) {
      reachedEnd = next.value;
      break;
    }
    const row = next.value;
    if (!budget.fits(EXPIRED_SET_MAX_READS.indexRanges, EXPIRED_SET_MAX_READS.documents, EXPIRED_SWEEP_RESERVE)) break;
    scanned++;
    if (!isEagerFilterKey(row.filterKey)) {
      // An on-demand set nobody asked for within its interest's lifetime is not recomputed by the
      // worker, so its expiry never moves: without this it would enqueue an expiry change for its
      // user on every call. It is retired (results, set row and interest deleted); asking for the
      // filter again registers a new interest, which recomputes it.
      const interest = budget.range(
        await ctx.db
          .query("filterInterests")
          .withIndex("by_user_filter", (q) => q.eq("userId", row.userId).eq("filterKey", row.filterKey))
          .unique(),
      );
      if (interest === null || interest.expiresAtMs <= interestNowMs) {
        if (retired < RETIRE_MAX_SETS) {
          await retireSet(ctx, row, interest, budget);
          retired++;
          last = positionOf(row);
        } else if (leftBehind === undefined) {
          leftBehind = last; // the next call starts with this set; the scan goes on for the others
        }
        continue;
      }
    }
    if (!seen.has(row.userId)) {
      seen.add(row.userId);
      if (budget.range(await firstPendingChangeAfter(ctx, row.userId, 0)) === null) {
        const user = budget.range(await getUser(ctx, row.userId));
        await appendChange(ctx, row.userId, { kind: "expiry", count: user?.eventCount ?? 0 });
        budget.range(user); // appendChange reads the user row (twice when it has to create it)
        if (user === null) budget.range(null);
        else budget.touched(user); // and updates it
        enqueued++;
      }
    }
    last = positionOf(row);
  }
  await expired.return(false);
  // Next call: from the first set left behind, else after the last set handled, or from the start
  // once the scan went past the last expired set.
  await moveScanCursor(ctx, cursor, leftBehind !== undefined ? leftBehind : reachedEnd ? null : last, budget);
  const removedInterests = await removeExpiredInterests(ctx, interestNowMs, budget);
  return { enqueued, retired, removedInterests };
}

/** Store where the expired-set scan goes on next call (`position`; null = from the start). */
async function moveScanCursor(
  ctx: MutationCtx,
  cursor: Doc<"scanCursors"> | null,
  position: ScanPosition | null,
  budget: ReadBudget,
): Promise<void> {
  if (position === null) {
    if (cursor !== null) {
      await ctx.db.delete(cursor._id);
      budget.touched(cursor);
    }
    return;
  }
  if (cursor === null) {
    await ctx.db.insert("scanCursors", { name: EXPIRED_SCAN, ...position });
  } else if (cursor.nextValidUntilMs !== position.nextValidUntilMs || cursor.creationTime !== position.creationTime) {
    await ctx.db.patch(cursor._id, position);
    budget.touched(cursor);
  }
}

/**
 * Delete up to `EXPIRED_INTERESTS_PER_CALL` interests with `expiresAtMs ≤ nowMs`, the longest expired
 * first, `EXPIRED_INTERESTS_PAGE` per read while `budget` allows, and return how many. This is what
 * removes an interest whose set was never stored (the user left before the worker computed it, or
 * its computation failed): set retirement never finds those.
 * An expired interest is read by nothing else: `claimUser` skips it, `registerFilter` treats it as
 * absent (a new registration appends a `"filter"` change either way) and set retirement retires a set
 * whose interest is gone as one whose interest expired, so a set still stored keeps its results
 * until its own expiry retires it. A row renewed by `registerFilter` no longer matches the range
 * (both are transactions: a renewal and this read cannot interleave).
 */
async function removeExpiredInterests(ctx: MutationCtx, nowMs: number, budget: ReadBudget): Promise<number> {
  let removed = 0;
  while (removed < EXPIRED_INTERESTS_PER_CALL) {
    const size = Math.min(EXPIRED_INTERESTS_PAGE, EXPIRED_INTERESTS_PER_CALL - removed);
    // Each page reads the range from its start again: the rows deleted before may count as scanned.
    if (!budget.fits(1, removed + 2 * size)) break;
    const rows = budget.range(
      await ctx.db
        .query("filterInterests")
        .withIndex("by_expiresAt", (q) => q.lte("expiresAtMs", nowMs))
        .take(size),
    );
    for (const row of rows) {
      await ctx.db.delete(row._id);
      budget.touched(row);
    }
    removed += rows.length;
    if (rows.length < size) break;
  }
  return removed;
}

/** True when `key` (see `filters.ts`) names one of the 18 eager sets: no topics, no channels. */
function isEagerFilterKey(key: string): boolean {
  const parts = key.split("|");
  return parts.length === 4 && parts[2] === "" && parts[3] === "";
}

/**
 * Delete an on-demand filter set's aggregates, its `resultSets` row and its expired interest,
 * counting the reads on `budget` (the aggregates listed in `rs.rows` are deleted unread: their
 * documents count, their bytes are not known).
 */
async function retireSet(
  ctx: MutationCtx,
  rs: Doc<"resultSets">,
  interest: Doc<"filterInterests"> | null,
  budget: ReadBudget,
): Promise<void> {
  const rows = await storedRows(ctx, rs.userId, rs.filterKey, rs);
  // A set row stored before `rows` existed has its aggregations read by index first.
  if (rs.rows === undefined) budget.range([]);
  for (const row of rows) await ctx.db.delete(row.id);
  budget.unsized(rs.rows === undefined ? 2 * rows.length : rows.length);
  await ctx.db.delete(rs._id);
  budget.touched(rs);
  if (interest !== null) {
    await ctx.db.delete(interest._id);
    budget.touched(interest);
  }
}

/**
 * Pending change-log rows, at most `limit` (default 500, max 2000) (worker
 * subscription). Order: oldest first across all users, i.e. commit order
 * (index `by_status`, which ends in `_creationTime`), so a user whose id sorts
 * late is not starved by others' newer changes; within a user that is `seq`
 * order. Read-only and cheap (one index range of `limit` rows), so it is a good
 * subscription target.
 *
 * @throws ConvexError `INVALID_ARGUMENT` for a bad `limit`.
 */
export const pendingChanges = internalQuery({
  args: { limit: v.optional(v.number()) },
  returns: v.array(vPendingChange),
  handler: pendingChangesHandler,
});

/**
 * Take (or renew) the per-user lease and return what to recompute (worker).
 *
 * Granted when no lease is held, it has expired, or `workerId` already holds it
 * (renewal) and it is not a retry backoff (set by `failChanges`: not renewable,
 * not even by the worker that failed); the lease then lasts `leaseMs`
 * (1 ms-1 h) from now. On grant,
 * returns the user's time zone, `lastSeq`, pending changes with `seq ≤ lastSeq`
 * in seq order, and the filter sets of non-expired `filterInterests` (≤ 200,
 * the most recently registered first; expired ones are never returned).
 * Up to 1000 pending rows are returned one by one; beyond that (reading at most
 * 8000) they are coalesced to one entry per kind (highest seq, summed count,
 * union of ranges, range absent when any row covers the whole history). Ack
 * with `upToSeq` = the highest returned seq. When denied, `changes` and
 * `interests` are empty, `leaseOwner`/`leaseExpiresAtMs` (epoch ms) describe the
 * holder and `retryAfterMs` (≥ 1) is the time until the lease expires, by the
 * server's clock: the worker claims the user again no earlier than that.
 * `userCreatedAtMs` (granted or not) is the creation time of the user's row:
 * it names this incarnation of the user's change log, whose seqs start again
 * when the user's data is wiped and re-imported (a reset deployment), so the
 * worker keys its caches by it and never takes one incarnation's cached
 * months for another's.
 *
 * When every claimed change is an import and they inserted at most 1000 views,
 * `appended` holds those views (`changeSeq` in `(afterSeq, throughSeq]`, as
 * `listEventsByChange` would page them), saving the worker that round trip.
 */
export const claimUser = internalMutation({
  args: { userId: v.string(), workerId: v.string(), leaseMs: v.number() },
  returns: v.object({
    granted: v.boolean(),
    leaseOwner: v.string(),
    leaseExpiresAtMs: v.number(),
    retryAfterMs: v.optional(v.number()),
    timeZone: v.string(),
    lastSeq: v.number(),
    userCreatedAtMs: v.number(),
    changes: v.array(vChangeEntry),
    interests: v.array(vFilters),
    appended: v.optional(
      v.object({ afterSeq: v.number(), throughSeq: v.number(), events: v.array(vWatchEventOutput) }),
    ),
  }),
  handler: claimUserHandler,
});

/**
 * Extend `workerId`'s lease on `userId` to `leaseMs` (1 ms-1 h) from now, if
 * it still holds it (worker, periodically while it recomputes the user, so a
 * recompute longer than the lease does not let another replica claim the user
 * meanwhile). Nothing else is read or returned: unlike `claimUser` it is cheap
 * enough to call every third of the lease.
 *
 * `renewed` is false when the user has no lease (released, or never claimed),
 * another worker holds it (it took the user over after this lease expired), or
 * it is a retry backoff set by `failChanges` (not renewable); `leaseOwner` and
 * `leaseExpiresAtMs` then describe the lease as it is, if any. A lease of
 * `workerId` that expired without another worker claiming the user is still
 * its own and is renewed. A lease is never shortened.
 *
 * @throws ConvexError `INVALID_ARGUMENT` for a bad `userId`, `workerId` or `leaseMs`.
 */
export const renewLease = internalMutation({
  args: { userId: v.string(), workerId: v.string(), leaseMs: v.number() },
  returns: v.object({
    renewed: v.boolean(),
    leaseOwner: v.optional(v.string()),
    leaseExpiresAtMs: v.optional(v.number()),
  }),
  handler: renewLeaseHandler,
});

const vEventPage = v.object({
  page: v.array(vWatchEventOutput),
  isDone: v.boolean(),
  continueCursor: v.string(),
});

/**
 * One page of `userId`'s views in `watchedAtMs` order, optionally limited to
 * `fromMs <= watchedAtMs <= toMs` (epoch ms, inclusive) (worker). With
 * `maxChangeSeq`, views inserted by a later change are left out of the page
 * (so a page may hold fewer than `numItems` rows while `isDone` is false).
 * Pass `continueCursor` back until `isDone`. `numItems` at most 4000. Rows
 * carry only the fields the aggregation needs (no ids, `source` or `dedupeKey`).
 */
export const listEvents = internalQuery({
  args: {
    userId: v.string(),
    fromMs: v.optional(v.number()),
    toMs: v.optional(v.number()),
    maxChangeSeq: v.optional(v.number()),
    paginationOpts: paginationOptsValidator,
  },
  returns: vEventPage,
  handler: listEventsHandler,
});

/**
 * One page of the views `userId`'s `"import"` changes with
 * `afterSeq < seq <= throughSeq` inserted and that still exist, in change
 * order (worker: the delta of appends since its cached state). Same page
 * contract and projection as `listEvents`.
 */
export const listEventsByChange = internalQuery({
  args: {
    userId: v.string(),
    afterSeq: v.number(),
    throughSeq: v.number(),
    paginationOpts: paginationOptsValidator,
  },
  returns: vEventPage,
  handler: listEventsByChangeHandler,
});

/**
 * Store computed aggregates for `userId`, one filter set at a time, behind the
 * write guard (worker). Each element of `sets` is the complete result of one
 * filter set and is applied as a unit in this transaction, so readers never
 * see two computations mixed within a set.
 *
 * Per set, against its `resultSets` row `rs`: skipped as stale (all its
 * results count in `skippedStale`) when `watermark < rs.watermark` or
 * `definitionVersion < rs.definitionVersion`; a no-op (`unchanged`) when
 * `watermark == rs.watermark`, `computedAtMs <= rs.computedAtMs` and
 * `definitionVersion <= rs.definitionVersion` (a retry). Otherwise each result
 * whose stored row has the same `dataHash` and `definitionVersion` is left
 * untouched (`unchanged`), the others are inserted or replaced (`written`),
 * stored types missing from the set are deleted, and `rs` takes the new
 * watermark, `computedAtMs`, `definitionVersion` and per-type `validUntilMs`.
 *
 * `dataHash` is computed by the worker and trusted (this is an admin-key-only
 * function): a wrong hash can only make the server keep or rewrite a row.
 * At most 50 results per call over all sets; a filter key at most once per
 * call; `watermark` must not exceed the user's `lastSeq`; times are epoch ms.
 * `data` must be a valid Convex value (see docs/architecture.md).
 *
 * @throws ConvexError `INVALID_ARGUMENT` (nothing is written).
 */
export const storeAggregations = internalMutation({
  args: {
    userId: v.string(),
    watermark: v.number(),
    computedAtMs: v.number(),
    sets: v.array(vResultSetInput),
  },
  returns: vStoreResult,
  handler: storeAggregationsHandler,
});

/**
 * Mark `userId`'s pending changes with `seq ≤ upToSeq` done, raise `ackedSeq`
 * and release the lease if `workerId` holds it (worker, after storing results
 * computed at watermark `upToSeq`). Idempotent: a repeat finds no pending rows
 * and acks 0. Updates at most 8000 rows per call.
 *
 * When it acknowledges at least one pending row, the user's dead letters
 * (`"failed"` rows) with `seq ≤` the acknowledged watermark become `"done"`
 * too (`superseded`; `attempts` and `error` are kept): results at a watermark
 * are computed from every view of the changes up to it and the user's current
 * settings, so they reflect those changes although their own attempts failed.
 * Together with the acked rows at most 8000 rows are updated; dead letters
 * beyond that stay listed until the next such acknowledgement. An ack that
 * consumes nothing (releasing the lease of an empty claim) supersedes nothing.
 */
export const ackChanges = internalMutation({
  args: { userId: v.string(), workerId: v.string(), upToSeq: v.number() },
  returns: v.object({ acked: v.number(), superseded: v.number() }),
  handler: ackChangesHandler,
});

/**
 * Record a failed attempt on `userId`'s pending changes with `seq ≤ upToSeq`
 * (worker). Each call increments `attempts` and stores `error` (truncated to
 * 2000 characters); a row reaching 5 attempts becomes `"failed"` (dead letter,
 * no longer delivered; see `admin:listDeadLetters`, `admin:retryDeadLetters`).
 *
 * While failed rows stay pending, the user is backed off: the lease becomes a
 * backoff lease held by `workerId` until now + `retryBackoffMs(attempts)` (the
 * most attempts among those rows: 1 s, 4 s, 16 s, 64 s after the first to the
 * fourth failure), which no worker can claim or renew before it expires, so
 * the next attempt, and any change that arrives meanwhile, waits that long on
 * every replica. A live lease of another worker is left as it is (`backoffMs`
 * is then 0). When no failed row stays pending the lease is released if
 * `workerId` holds it. Returns the rows updated (`failed`), those
 * dead-lettered now and the backoff set, in ms (0 = none). Not idempotent:
 * call once per failed attempt.
 */
export const failChanges = internalMutation({
  args: { userId: v.string(), workerId: v.string(), upToSeq: v.number(), error: v.string() },
  returns: v.object({ failed: v.number(), deadLettered: v.number(), backoffMs: v.number() }),
  handler: failChangesHandler,
});

/**
 * Append an `"expiry"` change (whole history) for up to `limit` users
 * (default 100, max 1000) who have a filter set with an aggregate whose
 * `validUntilMs ≤ nowMs` (epoch ms; `resultSets.nextValidUntilMs`) and no
 * pending change (worker, periodically). Idempotent until the worker catches
 * up: a user with a pending change is skipped.
 *
 * Bounded per call: at most 4000 expired sets handled, and reads counted as
 * they happen against `EXPIRED_READ_BUDGET` (half of Convex's per-transaction
 * limits: 2048 index ranges, 16 000 documents, 8 MiB). The expired sets are
 * scanned in expiry order from where the previous call stopped
 * (`scanCursors`), so every expired set is reached within a bounded number of
 * calls, however many sets ahead of it are skipped; a call that reaches the
 * last expired set makes the next one start from the first again (a skipped
 * user is checked again then).
 *
 * An expired on-demand set (topics or channels) whose `filterInterests` row
 * has expired too (or is gone) is retired instead, at most 50 per call: its
 * aggregates, its `resultSets` row and the interest are deleted (`retired`).
 * Then up to 256 other expired interests are deleted, the longest expired
 * first (`removedInterests`), as far as the read budget allows, whether or not
 * their set was ever stored; call again to remove more. Interest expiry is
 * judged at the earlier of `nowMs` and the server's clock, which
 * `registerFilter` and `claimUser` use.
 */
export const enqueueExpired = internalMutation({
  args: { nowMs: v.number(), limit: v.optional(v.number()) },
  returns: vExpiryOutcome,
  handler: enqueueExpiredHandler,
});
