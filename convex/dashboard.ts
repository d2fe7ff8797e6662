/**
 * Reading materialized aggregates (UI), the manual recompute trigger and
 * on-demand filter registration.
 */
import { v } from "convex/values";
import type { Doc } from "./_generated/dataModel";
import { mutation, query, type MutationCtx, type QueryCtx } from "./_generated/server";
import { appendChange, countPendingChanges, hasPendingChangeAfter } from "./changeLog";
import { filterKey, isEagerFilterSet, normalizeFilters } from "./filters";
import { callerUserId, getUser, requireCallerUserId } from "./users";
import {
  vAggregationType,
  vAggregationView,
  vDashboard,
  vFilters,
  vRecomputeResult,
  vRegisterFilterResult,
  type AggregationType,
  type AggregationView,
  type Dashboard,
  type Filters,
} from "./validators";

/** How long a registered on-demand filter set stays computed, in ms (24 h). */
export const FILTER_INTEREST_TTL_MS = 24 * 60 * 60 * 1000;
/** `freshness.pendingChanges` counts at most this many rows. */
export const PENDING_COUNT_CAP = 100;
/** Most aggregation rows read for one filter set (14 types today). */
const MAX_AGGREGATIONS_PER_FILTER = 64;

/** What every view of one filter set shares: its `resultSets` row and the flags derived from it. */
interface SetState {
  rs: Doc<"resultSets">;
  lastSeq: number;
  pending: boolean;
  nowMs: number;
}

/** The caller's `resultSets` row for `key` with the set-wide flags, or null when never stored. */
async function setState(ctx: QueryCtx, userId: string, key: string): Promise<SetState | null> {
  const rs = await ctx.db
    .query("resultSets")
    .withIndex("by_user_filter", (q) => q.eq("userId", userId).eq("filterKey", key))
    .unique();
  if (rs === null) return null;
  const user = await getUser(ctx, userId);
  return {
    rs,
    lastSeq: user?.lastSeq ?? 0,
    pending: await hasPendingChangeAfter(ctx, userId, rs.watermark),
    nowMs: Date.now(),
  };
}

/**
 * Build the UI view of a stored aggregate. Freshness comes from the set's
 * `resultSets` row: `stale` when the user has changes newer than the set's
 * watermark or this type's `validUntilMs` has passed; `pending` when a change
 * newer than the watermark is still unacknowledged. `dataChangedAtMs` is when
 * this row's data last changed.
 */
function toView(row: Doc<"aggregations">, state: SetState): AggregationView {
  const { rs } = state;
  const validUntilMs = rs.validUntil.find((e) => e.type === row.type)?.validUntilMs;
  const expired = validUntilMs !== undefined && validUntilMs <= state.nowMs;
  return {
    type: row.type,
    filterKey: row.filterKey,
    data: row.data,
    computedAtMs: rs.computedAtMs,
    watermark: rs.watermark,
    ...(validUntilMs !== undefined ? { validUntilMs } : {}),
    definitionVersion: row.definitionVersion,
    dataChangedAtMs: row.computedAtMs,
    stale: state.lastSeq > rs.watermark || expired,
    pending: state.pending,
  };
}

/** Handler of `dashboard:getAggregation`. */
export async function getAggregationHandler(
  ctx: QueryCtx,
  args: { type: AggregationType; filters?: Filters },
): Promise<AggregationView | null> {
  const userId = await callerUserId(ctx);
  if (userId === null) return null;
  const key = filterKey(normalizeFilters(args.filters));
  const row = await ctx.db
    .query("aggregations")
    .withIndex("by_user_type_filter", (q) =>
      q.eq("userId", userId).eq("type", args.type).eq("filterKey", key),
    )
    .unique();
  if (row === null) return null;
  const state = await setState(ctx, userId, key);
  return state === null ? null : toView(row, state);
}

/** Handler of `dashboard:getDashboard`. */
export async function getDashboardHandler(
  ctx: QueryCtx,
  args: { filters?: Filters },
): Promise<Dashboard | null> {
  const userId = await callerUserId(ctx);
  if (userId === null) return null;
  const key = filterKey(normalizeFilters(args.filters));
  const state = await setState(ctx, userId, key);
  const rows =
    state === null
      ? []
      : await ctx.db
          .query("aggregations")
          .withIndex("by_user_filter", (q) => q.eq("userId", userId).eq("filterKey", key))
          .take(MAX_AGGREGATIONS_PER_FILTER);
  const lastSeq = state?.lastSeq ?? (await getUser(ctx, userId))?.lastSeq ?? 0;
  const aggregations = state === null ? [] : rows.map((row) => toView(row, state));
  aggregations.sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0));
  const pendingChanges = await countPendingChanges(ctx, userId, PENDING_COUNT_CAP);
  return {
    filterKey: key,
    aggregations,
    freshness: {
      computedAtMs: state?.rs.computedAtMs ?? null,
      watermark: state?.rs.watermark ?? null,
      lastSeq,
      pendingChanges,
      stale: state === null ? lastSeq > 0 : aggregations.some((a) => a.stale),
    },
  };
}

/** Append a `"manual"` change (whole history) for `userId` and return its seq. */
export async function requestRecomputeForUser(
  ctx: MutationCtx,
  userId: string,
): Promise<{ seq: number }> {
  const user = await getUser(ctx, userId);
  const seq = await appendChange(ctx, userId, { kind: "manual", count: user?.eventCount ?? 0 });
  return { seq };
}

/** Handler of `dashboard:requestRecompute`. */
export async function requestRecomputeHandler(
  ctx: MutationCtx,
  _args: Record<string, never>,
): Promise<{ seq: number }> {
  return await requestRecomputeForUser(ctx, await requireCallerUserId(ctx));
}

/**
 * Register (or refresh) `userId`'s interest in a filter set.
 *
 * Eager sets (no topics, no channels) are always computed: nothing is stored.
 * Other sets get a `filterInterests` row valid for 24 h; when the set was not
 * active (new or expired) a `"filter"` change is appended in the same
 * transaction so the worker computes it now.
 */
export async function registerFilterForUser(
  ctx: MutationCtx,
  userId: string,
  filters: Filters,
): Promise<{ filterKey: string; expiresAtMs: number }> {
  const canonical = normalizeFilters(filters);
  const key = filterKey(canonical);
  const nowMs = Date.now();
  const expiresAtMs = nowMs + FILTER_INTEREST_TTL_MS;
  if (isEagerFilterSet(canonical)) return { filterKey: key, expiresAtMs };

  const existing = await ctx.db
    .query("filterInterests")
    .withIndex("by_user_filter", (q) => q.eq("userId", userId).eq("filterKey", key))
    .unique();
  const wasActive = existing !== null && existing.expiresAtMs > nowMs;
  if (existing === null) {
    await ctx.db.insert("filterInterests", {
      userId,
      filterKey: key,
      filters: canonical,
      lastRequestedAtMs: nowMs,
      expiresAtMs,
    });
  } else {
    await ctx.db.patch(existing._id, { filters: canonical, lastRequestedAtMs: nowMs, expiresAtMs });
  }
  if (!wasActive) {
    const user = await getUser(ctx, userId);
    await appendChange(ctx, userId, { kind: "filter", count: user?.eventCount ?? 0 });
  }
  return { filterKey: key, expiresAtMs };
}

/** Handler of `dashboard:registerFilter`. */
export async function registerFilterHandler(
  ctx: MutationCtx,
  args: { filters: Filters },
): Promise<{ filterKey: string; expiresAtMs: number }> {
  return await registerFilterForUser(ctx, await requireCallerUserId(ctx), args.filters);
}

/**
 * Read one aggregate of the signed-in user for a filter set (UI).
 *
 * `filters` defaults to `{timeframe: "All", product: "all"}`; topic and channel
 * order does not matter. Returns `null` when unauthenticated or not computed
 * yet. `computedAtMs`, `watermark`, `validUntilMs`, `stale` and `pending`
 * describe the filter set's last stored computation (`resultSets`);
 * `dataChangedAtMs` is when this aggregate's data last changed. Flags as in
 * `docs/architecture.md`. Times are epoch ms.
 *
 * @throws ConvexError `INVALID_FILTERS` (too many or malformed topics/channels).
 */
export const getAggregation = query({
  args: { type: vAggregationType, filters: v.optional(vFilters) },
  returns: v.union(vAggregationView, v.null()),
  handler: getAggregationHandler,
});

/**
 * Read every aggregate of the signed-in user for one filter set, sorted by
 * type, with overall freshness (UI). All aggregates of a set come from one
 * stored computation; `freshness.computedAtMs`/`watermark` are the set's
 * (null when never stored); `pendingChanges` counts unacknowledged changes up
 * to 100; `stale` is true when any aggregate is stale (newer changes or an
 * expired type), or when none is stored yet although the user has changes.
 * Returns `null` when unauthenticated.
 *
 * @throws ConvexError `INVALID_FILTERS`.
 */
export const getDashboard = query({
  args: { filters: v.optional(vFilters) },
  returns: v.union(vDashboard, v.null()),
  handler: getDashboardHandler,
});

/**
 * Ask the worker to recompute all of the signed-in user's aggregates (UI
 * button). Appends a `"manual"` change every call (not idempotent; cheap).
 *
 * @throws ConvexError `UNAUTHENTICATED`.
 */
export const requestRecompute = mutation({
  args: {},
  returns: vRecomputeResult,
  handler: requestRecomputeHandler,
});

/**
 * Keep an on-demand filter set of the signed-in user computed for the next
 * 24 h (UI; re-register while the set is shown). Idempotent apart from
 * extending `expiresAtMs` (epoch ms): a `"filter"` change is appended only
 * when the set was not already active. Eager sets store nothing.
 *
 * @throws ConvexError `UNAUTHENTICATED`; `INVALID_FILTERS` (at most 50 topics
 *   and 50 channels, each 1-128 characters without "," or "|").
 */
export const registerFilter = mutation({
  args: { filters: vFilters },
  returns: vRegisterFilterResult,
  handler: registerFilterHandler,
});
