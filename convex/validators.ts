/**
 * Argument and return validators shared by the Convex functions, with their
 * TypeScript types (`type Thing = Infer<typeof vThing>`).
 *
 * Numbers are `v.number()` everywhere (never `v.int64()`): the Python client
 * sends ints as float64. Timestamps are epoch milliseconds, UTC.
 */
import { v, type Infer } from "convex/values";

/** A view of a known video (`watch`) or of a removed/private video (`removed`). */
export const vEventKind = v.union(v.literal("watch"), v.literal("removed"));
export type EventKind = Infer<typeof vEventKind>;

export const vProduct = v.union(v.literal("youtube"), v.literal("youtube_music"));
export type Product = Infer<typeof vProduct>;

export const vSource = v.union(
  v.literal("takeout_json"),
  v.literal("takeout_html"),
  v.literal("synthetic"),
  v.literal("api"),
);
export type Source = Infer<typeof vSource>;

export const vEventFlag = v.union(v.literal("shorts"), v.literal("title_unknown"));
export type EventFlag = Infer<typeof vEventFlag>;

/** One view as sent by the importer. Optional fields are omitted, never `null`. */
export const vWatchEventInput = v.object({
  watchedAtMs: v.number(),
  kind: vEventKind,
  product: vProduct,
  videoId: v.optional(v.string()),
  title: v.optional(v.string()),
  channelId: v.optional(v.string()),
  channelName: v.optional(v.string()),
  source: vSource,
  flags: v.optional(v.array(vEventFlag)),
});
export type WatchEventInput = Infer<typeof vWatchEventInput>;

/** A stored view as the worker reads it: `WatchEventInput` without `source`. */
export const vWatchEventOutput = v.object({
  watchedAtMs: v.number(),
  kind: vEventKind,
  product: vProduct,
  videoId: v.optional(v.string()),
  title: v.optional(v.string()),
  channelId: v.optional(v.string()),
  channelName: v.optional(v.string()),
  flags: v.optional(v.array(vEventFlag)),
});
export type WatchEventOutput = Infer<typeof vWatchEventOutput>;

export const vChangeKind = v.union(
  v.literal("import"),
  v.literal("delete"),
  v.literal("timezone"),
  v.literal("manual"),
  v.literal("expiry"),
  v.literal("filter"),
);
export type ChangeKind = Infer<typeof vChangeKind>;

export const vChangeStatus = v.union(
  v.literal("pending"),
  v.literal("done"),
  v.literal("failed"),
);
export type ChangeStatus = Infer<typeof vChangeStatus>;

export const vTimeframe = v.union(
  v.literal("MTD"),
  v.literal("QTD"),
  v.literal("YTD"),
  v.literal("Last6M"),
  v.literal("Last12M"),
  v.literal("All"),
);
export type Timeframe = Infer<typeof vTimeframe>;

export const vProductFilter = v.union(
  v.literal("all"),
  v.literal("youtube"),
  v.literal("youtube_music"),
);
export type ProductFilter = Infer<typeof vProductFilter>;

/** A filter set; `topics` are topic slugs, `channels` are channel ids. */
export const vFilters = v.object({
  timeframe: vTimeframe,
  product: vProductFilter,
  topics: v.optional(v.array(v.string())),
  channels: v.optional(v.array(v.string())),
});
export type Filters = Infer<typeof vFilters>;

export const vAggregationType = v.union(
  v.literal("kpi"),
  v.literal("monthly_trend"),
  v.literal("top_channels"),
  v.literal("day_time_heatmap"),
  v.literal("topics_leaderboard"),
  v.literal("session_analysis"),
  v.literal("viewing_patterns"),
  v.literal("channel_metrics"),
  v.literal("channel_relationships"),
  v.literal("channel_evolution"),
  v.literal("topic_evolution"),
  v.literal("topic_engagement"),
  v.literal("topic_discovery"),
  v.literal("topic_diversity"),
);
export type AggregationType = Infer<typeof vAggregationType>;

/** A change-log entry as the worker sees it (the subscription and the claim). */
export const vChangeEntry = v.object({
  seq: v.number(),
  kind: vChangeKind,
  fromMs: v.optional(v.number()),
  toMs: v.optional(v.number()),
  count: v.number(),
});
export type ChangeEntry = Infer<typeof vChangeEntry>;

export const vPendingChange = v.object({
  userId: v.string(),
  seq: v.number(),
  kind: vChangeKind,
  fromMs: v.optional(v.number()),
  toMs: v.optional(v.number()),
  count: v.number(),
});
export type PendingChange = Infer<typeof vPendingChange>;

/** A dead-lettered change as `admin:listDeadLetters` returns it. */
export const vDeadLetter = v.object({
  ...vPendingChange.fields,
  attempts: v.number(),
  error: v.string(),
  createdAtMs: v.number(),
  failedAtMs: v.optional(v.number()),
});
export type DeadLetter = Infer<typeof vDeadLetter>;

/** What `admin:retryDeadLetters` returns: rows put back to pending, and whether more match. */
export const vRetryDeadLettersResult = v.object({
  retried: v.number(),
  hasMore: v.boolean(),
});
export type RetryDeadLettersResult = Infer<typeof vRetryDeadLettersResult>;

/**
 * One computed aggregate of a filter set, sent by the worker inside a
 * `vResultSetInput`. `dataHash` is the worker's digest of `data` (trusted:
 * only the admin key can call `worker:storeAggregations`); equal hashes mean
 * equal data, so the row is not rewritten, and `data` may then be left out.
 */
export const vAggregationResult = v.object({
  type: vAggregationType,
  /** Omitted when the worker believes the stored row already holds data with this `dataHash`. */
  data: v.optional(v.any()),
  dataHash: v.string(),
  validUntilMs: v.optional(v.number()),
});
export type AggregationResult = Infer<typeof vAggregationResult>;

/** The complete results of one filter set, stored in one transaction. */
export const vResultSetInput = v.object({
  filterKey: v.string(),
  definitionVersion: v.number(),
  results: v.array(vAggregationResult),
});
export type ResultSetInput = Infer<typeof vResultSetInput>;

/** Expiry of one aggregation type of a filter set (`resultSets.validUntil`). */
export const vTypeValidUntil = v.object({
  type: vAggregationType,
  validUntilMs: v.number(),
});
export type TypeValidUntil = Infer<typeof vTypeValidUntil>;

/**
 * Where one aggregation row of a filter set is and what it holds (`resultSets.rows`): the write guard
 * decides from these which rows to rewrite, without reading the rows' data.
 */
export const vStoredRow = v.object({
  type: vAggregationType,
  id: v.id("aggregations"),
  dataHash: v.string(),
  definitionVersion: v.number(),
});
export type StoredRow = Infer<typeof vStoredRow>;

export const vStoreResult = v.object({
  written: v.number(),
  unchanged: v.number(),
  skippedStale: v.number(),
  /** Filter keys of sets not applied because a result without `data` did not match the stored hash. */
  missing: v.array(v.string()),
});
export type StoreResult = Infer<typeof vStoreResult>;

/** Result of `worker:enqueueExpired` (counts). */
export const vExpiryOutcome = v.object({
  /** Users an `"expiry"` change was appended for. */
  enqueued: v.number(),
  /** On-demand filter sets deleted with their aggregates and interest. */
  retired: v.number(),
  /** Other expired `filterInterests` rows deleted. */
  removedInterests: v.number(),
});
export type ExpiryOutcome = Infer<typeof vExpiryOutcome>;

/**
 * A stored aggregate with its freshness flags, as the UI reads it.
 * `computedAtMs`, `watermark`, `validUntilMs`, `stale` and `pending` describe
 * the filter set's last stored computation; `dataChangedAtMs` is when this
 * aggregate's data last changed.
 */
export const vAggregationView = v.object({
  type: vAggregationType,
  filterKey: v.string(),
  data: v.any(),
  computedAtMs: v.number(),
  watermark: v.number(),
  validUntilMs: v.optional(v.number()),
  definitionVersion: v.number(),
  dataChangedAtMs: v.number(),
  stale: v.boolean(),
  pending: v.boolean(),
});
export type AggregationView = Infer<typeof vAggregationView>;

export const vDashboard = v.object({
  filterKey: v.string(),
  aggregations: v.array(vAggregationView),
  freshness: v.object({
    computedAtMs: v.union(v.number(), v.null()),
    watermark: v.union(v.number(), v.null()),
    lastSeq: v.number(),
    pendingChanges: v.number(),
    stale: v.boolean(),
  }),
});
export type Dashboard = Infer<typeof vDashboard>;

export const vSettings = v.object({
  timeZone: v.string(),
  eventCount: v.number(),
  lastSeq: v.number(),
  ackedSeq: v.number(),
});
export type Settings = Infer<typeof vSettings>;

export const vImportResult = v.object({
  inserted: v.number(),
  duplicates: v.number(),
  seq: v.union(v.number(), v.null()),
});
export type ImportResult = Infer<typeof vImportResult>;

export const vDeleteResult = v.object({
  deleted: v.number(),
  hasMore: v.boolean(),
  seq: v.union(v.number(), v.null()),
});
export type DeleteResult = Infer<typeof vDeleteResult>;

export const vSeqResult = v.object({ seq: v.union(v.number(), v.null()) });
export const vRecomputeResult = v.object({ seq: v.number() });

export const vRegisterFilterResult = v.object({
  filterKey: v.string(),
  expiresAtMs: v.number(),
});
