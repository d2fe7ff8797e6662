/**
 * Tables of the watch-history analytics backend. The contract is
 * `docs/architecture.md` ("Tables"); change both together.
 */
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";
import {
  vAggregationType,
  vChangeStatus,
  vFilters,
  vPendingChange,
  vStoredRow,
  vTypeValidUntil,
  vWatchEventInput,
} from "./validators";

export default defineSchema({
  /**
   * One document per view. `dedupeKey` is computed server-side (see
   * `watchEvents.ts`; views stored before it had second precision keep their
   * millisecond key, and imports recompute keys from the fields rather than
   * compare it); `changeSeq` is the seq of the `"import"` change that
   * inserted the view (absent on views stored before the field existed).
   */
  watchEvents: defineTable({
    userId: v.string(),
    ...vWatchEventInput.fields,
    dedupeKey: v.string(),
    changeSeq: v.optional(v.number()),
  })
    .index("by_user_and_watchedAt", ["userId", "watchedAtMs"])
    .index("by_user_and_dedupeKey", ["userId", "dedupeKey"])
    .index("by_user_and_changeSeq", ["userId", "changeSeq"]),

  /** The transactional outbox: one row per write to a user's watch data or settings. */
  changeLog: defineTable({
    ...vPendingChange.fields,
    status: vChangeStatus,
    attempts: v.number(),
    error: v.optional(v.string()),
    createdAtMs: v.number(),
    processedAtMs: v.optional(v.number()),
  })
    .index("by_status", ["status"])
    .index("by_status_and_user", ["status", "userId", "seq"])
    .index("by_user_and_seq", ["userId", "seq"]),

  /** Per-user state: settings, change sequence counters and the worker lease. */
  users: defineTable({
    userId: v.string(),
    timeZone: v.string(),
    lastSeq: v.number(),
    ackedSeq: v.number(),
    /** Superseded by `leases` (never written now); honoured by `claimUser` until released. */
    leaseOwner: v.optional(v.string()),
    /** Superseded by `leases` (never written now); honoured by `claimUser` until released. */
    leaseExpiresAtMs: v.optional(v.number()),
    eventCount: v.number(),
  }).index("by_userId", ["userId"]),

  /**
   * The worker lease of a user (at most one row per user; deleted on release). Kept out of `users`
   * so that claiming a user does not invalidate every query that reads the user's row (the
   * dashboard's), which would re-run them on each claim for nothing.
   */
  leases: defineTable({
    userId: v.string(),
    owner: v.string(),
    expiresAtMs: v.number(),
    /**
     * Present while the lease is a retry backoff set by `worker:failChanges` (the attempt count
     * that set it): until `expiresAtMs` no worker claims the user, `owner` included.
     */
    backoffAttempts: v.optional(v.number()),
  }).index("by_userId", ["userId"]),

  /**
   * Materialized aggregates written by the worker behind the write guard, one
   * row per (user, type, filter set). `watermark`/`computedAtMs` say when this
   * row's data last changed; the freshness of the set is in `resultSets`.
   */
  aggregations: defineTable({
    userId: v.string(),
    type: vAggregationType,
    filterKey: v.string(),
    data: v.any(),
    dataHash: v.string(),
    watermark: v.number(),
    computedAtMs: v.number(),
    definitionVersion: v.number(),
  })
    .index("by_user_type_filter", ["userId", "type", "filterKey"])
    .index("by_user_filter", ["userId", "filterKey"]),

  /**
   * One row per (user, filter set): the last stored computation of the set
   * (write guard state and what the views report), and the expiry of its
   * time-relative types.
   */
  resultSets: defineTable({
    userId: v.string(),
    filterKey: v.string(),
    watermark: v.number(),
    computedAtMs: v.number(),
    definitionVersion: v.number(),
    validUntil: v.array(vTypeValidUntil),
    nextValidUntilMs: v.optional(v.number()),
    /** The set's `aggregations` rows (absent on rows stored before it existed: read them instead). */
    rows: v.optional(v.array(vStoredRow)),
  })
    .index("by_user_filter", ["userId", "filterKey"])
    .index("by_nextValidUntil", ["nextValidUntilMs"]),

  /**
   * On-demand filter sets the worker keeps computed until `expiresAtMs`. `claimUser` reads a user's
   * live rows through `by_user_and_expiresAt`; `enqueueExpired` deletes expired rows in expiry order
   * through `by_expiresAt`.
   */
  filterInterests: defineTable({
    userId: v.string(),
    filterKey: v.string(),
    filters: vFilters,
    lastRequestedAtMs: v.number(),
    expiresAtMs: v.number(),
  })
    .index("by_user_filter", ["userId", "filterKey"])
    .index("by_user_and_expiresAt", ["userId", "expiresAtMs"])
    .index("by_expiresAt", ["expiresAtMs"]),

  /**
   * Where a scan spread over calls stopped, one row per scan (`name`). `enqueueExpired`'s scan of
   * expired `resultSets` (`"expiredResultSets"`) resumes after the row it handled last, the one with
   * this `nextValidUntilMs` and `_creationTime` (`creationTime`) in index `by_nextValidUntil`; no
   * row = from the start.
   */
  scanCursors: defineTable({
    name: v.string(),
    nextValidUntilMs: v.number(),
    creationTime: v.number(),
  }).index("by_name", ["name"]),
});
