/**
 * Real index structures for convex-test's in-memory database.
 *
 * convex-test (0.0.71) answers every `withIndex(...)` read by visiting every document of the table,
 * keeping those inside the range and sorting them, so a read costs O(table size). This module keeps,
 * for each (table, index) that has been read, the COMMITTED documents of the table in a sorted
 * structure keyed like convex-test sorts them (index fields, then `_creationTime`, then `_id`,
 * compared with `compareValues` from `convex/values`, the function convex-test itself uses), and
 * answers an `IndexRange` query by:
 *
 *  1. running convex-test's own `_resolveQuerySource` over the current transaction's pending writes
 *     only (the table's committed id set is hidden for that call). That validates the index and the
 *     range expression with convex-test's own code (same errors), evaluates the range on every
 *     pending document with convex-test's own filter, sorts them, and yields the query's
 *     filter/limit/order;
 *  2. binary-searching the committed structure for the range bounds;
 *  3. merging both lazily in query order, skipping committed documents that the transaction has
 *     written (they are represented by step 1, or deleted).
 *
 * The result is handed to convex-test's unchanged `_evaluateQuery`/`paginate` as an array-like
 * sequence that materializes documents only as they are consumed, so `first()`/`take(n)`/a page
 * costs O(log n + documents consumed). `paginate` with a cursor starts right after the cursor
 * instead of skipping from the start of the range (the skipped documents had no observable effect
 * there). Full table scans and search queries keep convex-test's code, as does any range shape this
 * module does not recognise.
 *
 * The structures are built on first use of an index, updated in `commit` (the only place convex-test
 * changes committed documents), and dropped when the committed state is replaced wholesale
 * (restore from persistence), to be rebuilt on next use.
 */
import { compareValues, jsonToConvex, type Value } from "convex/values";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyRecord = Record<string, any>;
type Doc = AnyRecord;
type Key = (Value | undefined)[];

interface Entry {
  key: Key;
  doc: Doc;
}

interface RangeFilter {
  type: "Eq" | "Gt" | "Gte" | "Lt" | "Lte";
  fieldPath: string;
  value: unknown;
}

/** Largest chunk of a `SortedIndex` before it is split in two (adjustable for tests). */
export const tuning = { chunkMax: 1024 };

/** Lexicographic comparison of the first `n` components of two keys. */
function compareKeys(a: Key, b: Key, n = Math.max(a.length, b.length)): number {
  for (let i = 0; i < n; i++) {
    const c = compareValues(a[i] as Value, b[i] as Value);
    if (c !== 0) return c;
  }
  return 0;
}

function isSimpleObject(value: unknown): boolean {
  if (typeof value !== "object" || value === null) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === null || prototype === Object.prototype || prototype?.constructor?.name === "Object";
}

/**
 * The value at a dotted field path, as convex-test reads it for sorting and range filters. Pending
 * commit-timestamp placeholders are left as they are: `compareValues` orders them as the value
 * convex-test substitutes for them, so comparisons agree.
 */
function fieldValue(doc: Doc, fieldPath: string): Value | undefined {
  let result: unknown = doc;
  for (const p of fieldPath.split(".")) {
    result = result !== undefined && result !== null && isSimpleObject(result) ? (result as AnyRecord)[p] : undefined;
  }
  return result as Value | undefined;
}

/** A range bound or cursor value as convex-test decodes it (`{$undefined}` → undefined). */
function queryValue(value: unknown): Value | undefined {
  if (typeof value === "object" && value !== null && "$undefined" in value) return undefined;
  return jsonToConvex(value as never);
}

/** A sorted multiset of entries, stored as a list of sorted chunks (O(log n) search, O(√-ish) update). */
export class SortedIndex {
  readonly fields: string[];
  private chunks: Entry[][] = [];

  constructor(fields: string[], docs: Iterable<Doc>) {
    this.fields = fields;
    const all: Entry[] = [];
    for (const doc of docs) all.push({ key: this.keyOf(doc), doc });
    all.sort((a, b) => compareKeys(a.key, b.key));
    for (let i = 0; i < all.length; i += (tuning.chunkMax >> 1)) this.chunks.push(all.slice(i, i + (tuning.chunkMax >> 1)));
  }

  keyOf(doc: Doc): Key {
    return this.fields.map((f) => fieldValue(doc, f));
  }

  get size(): number {
    let n = 0;
    for (const c of this.chunks) n += c.length;
    return n;
  }

  /**
   * The first position whose entry does not satisfy `before` (a predicate that is true for a prefix
   * of the order), as [chunk, offset]; [chunks.length, 0] when every entry satisfies it.
   */
  seek(before: (key: Key) => boolean): [number, number] {
    const chunks = this.chunks;
    let lo = 0;
    let hi = chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const chunk = chunks[mid];
      if (before(chunk[chunk.length - 1].key)) lo = mid + 1;
      else hi = mid;
    }
    if (lo === chunks.length) return [lo, 0];
    const chunk = chunks[lo];
    let a = 0;
    let b = chunk.length - 1; // the last entry of this chunk does not satisfy `before`
    while (a < b) {
      const mid = (a + b) >>> 1;
      if (before(chunk[mid].key)) a = mid + 1;
      else b = mid;
    }
    return [lo, a];
  }

  /** Entry at a position, or undefined past the end. */
  at(pos: [number, number]): Entry | undefined {
    return this.chunks[pos[0]]?.[pos[1]];
  }

  /** Next position (in place). */
  next(pos: [number, number]): void {
    if (++pos[1] >= (this.chunks[pos[0]]?.length ?? 0)) {
      pos[0]++;
      pos[1] = 0;
    }
  }

  /** Previous position (in place); [-1, 0] before the start. */
  prev(pos: [number, number]): void {
    if (--pos[1] < 0) {
      pos[0]--;
      pos[1] = pos[0] >= 0 ? this.chunks[pos[0]].length - 1 : 0;
    }
  }

  comparePos(a: [number, number], b: [number, number]): number {
    return a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1];
  }

  insert(doc: Doc): void {
    const key = this.keyOf(doc);
    const entry = { key, doc };
    if (this.chunks.length === 0) {
      this.chunks.push([entry]);
      return;
    }
    let [ci, off] = this.seek((k) => compareKeys(k, key) < 0);
    if (ci === this.chunks.length) {
      ci = this.chunks.length - 1;
      off = this.chunks[ci].length;
    }
    const chunk = this.chunks[ci];
    chunk.splice(off, 0, entry);
    if (chunk.length > tuning.chunkMax) this.chunks.splice(ci + 1, 0, chunk.splice((tuning.chunkMax >> 1)));
  }

  /** Remove the entry of `doc` (matched by its full key, which ends with `_id`). */
  remove(doc: Doc): boolean {
    const key = this.keyOf(doc);
    const [ci, off] = this.seek((k) => compareKeys(k, key) < 0);
    const chunk = this.chunks[ci];
    if (!chunk || chunk[off].doc._id !== doc._id) return false;
    chunk.splice(off, 1);
    if (chunk.length === 0) this.chunks.splice(ci, 1);
    return true;
  }

  /** All entries in order (tests). */
  *entries(): IterableIterator<Entry> {
    for (const c of this.chunks) yield* c;
  }
}

/** The parsed shape of an index range: equalities on a key prefix, then optional bounds on the next field. */
interface ParsedRange {
  eq: Key;
  lower: { value: Value | undefined; inclusive: boolean } | null;
  upper: { value: Value | undefined; inclusive: boolean } | null;
}

function parseRange(range: RangeFilter[], fields: string[]): ParsedRange | null {
  const eq: Key = [];
  let i = 0;
  while (i < range.length && range[i].type === "Eq") {
    if (range[i].fieldPath !== fields[eq.length]) return null;
    eq.push(queryValue(range[i].value));
    i++;
  }
  let lower: ParsedRange["lower"] = null;
  let upper: ParsedRange["upper"] = null;
  for (; i < range.length; i++) {
    const f = range[i];
    if (f.fieldPath !== fields[eq.length]) return null;
    const bound = { value: queryValue(f.value), inclusive: f.type === "Gte" || f.type === "Lte" };
    if (f.type === "Gt" || f.type === "Gte") {
      if (lower) return null;
      lower = bound;
    } else if (f.type === "Lt" || f.type === "Lte") {
      if (upper) return null;
      upper = bound;
    } else {
      return null;
    }
  }
  return { eq, lower, upper };
}

/** Counters of what the accelerated path did (tests, diagnostics). */
export interface AccelStats {
  accelerated: number;
  fallback: number;
  builds: number;
}

export interface IndexAccel {
  /** When false, every query takes convex-test's original path (the structures stay maintained). */
  enabled: boolean;
  stats: AccelStats;
  /** The structure for `table.index`, built if needed (tests). */
  index(table: string, indexName: string): SortedIndex | null;
  /** Drop every structure (they are rebuilt on next use). */
  invalidate(): void;
}

function tableNameFromId(id: string): string {
  return id.replace(/^[0-9]+/, "");
}

const EMPTY_TABLE_IDS = new Map<string, Set<string>>();
const INSTALLED = "__convexLocalIndexAccel";

/**
 * Install the index structures on one convex-test `DatabaseFake` instance (instance properties
 * shadow its prototype methods `_resolveQuerySource`, `paginate` and `commit`).
 */
export function installIndexAccel(db: AnyRecord): IndexAccel {
  if (db[INSTALLED]) return db[INSTALLED] as IndexAccel;
  const proto = Object.getPrototypeOf(db) as AnyRecord;
  const origResolve = proto._resolveQuerySource as (this: AnyRecord, query: AnyRecord) => AnyRecord;
  const origPaginate = proto.paginate as (this: AnyRecord, args: AnyRecord) => AnyRecord;
  const origCommit = proto.commit as (this: AnyRecord, commitTs?: bigint | null) => void;
  if (typeof origResolve !== "function" || typeof origPaginate !== "function" || typeof origCommit !== "function") {
    throw new Error("convex-test internals not found (unsupported convex-test version)");
  }

  const indexes = new Map<string, SortedIndex>(); // "table.index" → structure
  let documentsRef: unknown = db._documents;
  let tableIdsRef: unknown = db._tableIds;
  /** Bumped on every change of the committed state; lazy results refuse to continue across it. */
  let version = 0;
  let pendingCursor: unknown = null; // cursor of the paginate call in progress

  const accel: IndexAccel = {
    enabled: true,
    stats: { accelerated: 0, fallback: 0, builds: 0 },
    index: (table, indexName) => {
      checkState();
      const fields = indexFields(table, indexName);
      return fields ? getIndex(table, indexName, fields) : null;
    },
    invalidate: () => {
      indexes.clear();
      version++;
    },
  };

  function checkState(): void {
    if (db._documents !== documentsRef || db._tableIds !== tableIdsRef) {
      documentsRef = db._documents;
      tableIdsRef = db._tableIds;
      accel.invalidate();
    }
  }

  function indexFields(table: string, indexName: string): string[] | null {
    if (indexName === "by_creation_time") return ["_creationTime", "_id"];
    if (indexName === "by_id") return ["_id"];
    const list = db._schema?.tables.get(table)?.indexes as { indexDescriptor: string; fields: string[] }[] | undefined;
    const index = list?.find((i) => i.indexDescriptor === indexName);
    return index ? index.fields.concat(["_creationTime", "_id"]) : null;
  }

  function getIndex(table: string, indexName: string, fields: string[]): SortedIndex {
    const name = `${table}.${indexName}`;
    let index = indexes.get(name);
    if (!index) {
      const ids: Set<string> = db._tableIds.get(table) ?? new Set();
      const docs: Doc[] = [];
      for (const id of ids) {
        const doc = db._documents[id];
        if (doc) docs.push(doc);
      }
      index = new SortedIndex(fields, docs);
      indexes.set(name, index);
      accel.stats.builds++;
      // Like a real deployment, keep every schema index of the table up to date from now on, so
      // the first query on another index of a large table does not pay for building it.
      const schemaIndexes = db._schema?.tables.get(table)?.indexes as { indexDescriptor: string }[] | undefined;
      for (const other of schemaIndexes ?? []) {
        const otherName = `${table}.${other.indexDescriptor}`;
        const otherFields = indexFields(table, other.indexDescriptor);
        if (indexes.has(otherName) || otherFields === null) continue;
        indexes.set(otherName, new SortedIndex(otherFields, docs));
        accel.stats.builds++;
      }
    }
    return index;
  }

  function indexesOf(table: string): SortedIndex[] {
    const out: SortedIndex[] = [];
    for (const [name, index] of indexes) if (name.slice(0, name.indexOf(".")) === table) out.push(index);
    return out;
  }

  db.commit = function commit(this: AnyRecord, commitTs: bigint | null = null): void {
    checkState();
    // Only the outermost level reaches the committed documents; a nested commit merges upwards.
    const top = db._writes.length === 1 ? (db._writes[0] as Record<string, Doc | null>) : null;
    if (top === null) {
      origCommit.call(db, commitTs);
      return;
    }
    const before = new Map<string, Doc | undefined>();
    for (const id of Object.keys(top)) before.set(id, db._documents[id]);
    let changed = false;
    try {
      origCommit.call(db, commitTs);
      for (const [id, old] of before) {
        const now: Doc | undefined = db._documents[id];
        if (old === now) continue;
        changed = true;
        for (const index of indexesOf(tableNameFromId(id))) {
          if (old !== undefined && !index.remove(old)) throw new Error(`index out of sync for ${id}`);
          if (now !== undefined) index.insert(now);
        }
      }
    } catch (e) {
      changed = true;
      indexes.clear();
      throw e;
    } finally {
      if (changed) version++;
    }
  };

  db.paginate = function paginate(this: AnyRecord, args: AnyRecord): AnyRecord {
    pendingCursor = args.cursor ?? null;
    try {
      return origPaginate.call(db, args);
    } finally {
      pendingCursor = null;
    }
  };

  db._resolveQuerySource = function _resolveQuerySource(this: AnyRecord, query: AnyRecord): AnyRecord {
    const cursor = pendingCursor;
    pendingCursor = null;
    const source = query.source as AnyRecord;
    if (!accel.enabled || source.type !== "IndexRange") return origResolve.call(db, query);
    checkState();
    const [table, indexName] = (source.indexName as string).split(".");

    // Pending writes of the table, through convex-test's own evaluation (also validates the query).
    const savedTableIds = db._tableIds;
    let pending: AnyRecord;
    db._tableIds = EMPTY_TABLE_IDS;
    try {
      pending = origResolve.call(db, query);
    } finally {
      db._tableIds = savedTableIds;
    }
    const fields = indexFields(table, indexName);
    const range = fields ? parseRange(source.range as RangeFilter[], fields) : null;
    if (!fields || !range || fields.join("\u0000") !== (pending.fieldPathsToSortBy as string[]).join("\u0000")) {
      accel.stats.fallback++;
      return origResolve.call(db, query);
    }
    accel.stats.accelerated++;
    const index = getIndex(table, indexName, fields);
    const written = new Set<string>();
    for (const level of db._writes as Record<string, unknown>[]) {
      for (const id of Object.keys(level)) if (tableNameFromId(id) === table) written.add(id);
    }
    const desc = pending.order === "desc";

    // Bounds: [start, end) in ascending order.
    const m = range.eq.length;
    const { lower, upper } = range;
    const lowKey = lower ? [...range.eq, lower.value] : range.eq;
    const lowN = lower ? m + 1 : m;
    let start = index.seek((k) => {
      const c = compareKeys(k, lowKey, lowN);
      return lower && !lower.inclusive ? c <= 0 : c < 0;
    });
    const highKey = upper ? [...range.eq, upper.value] : range.eq;
    const highN = upper ? m + 1 : m;
    let end = index.seek((k) => {
      const c = compareKeys(k, highKey, highN);
      return upper && !upper.inclusive ? c < 0 : c <= 0;
    });
    let overlay = pending.sortedDocs as Doc[];

    // Continue after a pagination cursor: documents at or before it are skipped by `paginate`
    // without any effect, so leave them out.
    const cursorKeys = decodeCursor(cursor);
    if (cursor === "_end_cursor") {
      end = start;
      overlay = [];
    } else if (cursorKeys) {
      const n = fields.length;
      if (!desc) {
        const after = index.seek((k) => compareKeys(k, cursorKeys, n) <= 0);
        if (index.comparePos(after, start) > 0) start = after;
        overlay = overlay.filter((d) => compareKeys(index.keyOf(d), cursorKeys, n) > 0);
      } else {
        const after = index.seek((k) => compareKeys(k, cursorKeys, n) < 0);
        if (index.comparePos(after, end) < 0) end = after;
        overlay = overlay.filter((d) => compareKeys(index.keyOf(d), cursorKeys, n) < 0);
      }
    }

    const sortedDocs = lazyMerge(index, start, end, desc, written, overlay, version, () => version);
    return { ...pending, sortedDocs };
  };

  db[INSTALLED] = accel;
  return accel;
}

/** Decode a pagination cursor like convex-test does; null for none or an undecodable one. */
function decodeCursor(cursor: unknown): Key | null {
  if (typeof cursor !== "string" || cursor === "_end_cursor" || cursor === "") return null;
  try {
    const parsed = JSON.parse(cursor) as unknown;
    if (!Array.isArray(parsed)) return null;
    return parsed.map((k) => (k === null ? undefined : jsonToConvex(JSON.parse(k as string))));
  } catch {
    return null;
  }
}

/**
 * An array-like, read-only view of the merged range that materializes documents on access. Its
 * `length` is exact for every index up to one past the highest index read so far, which is all
 * convex-test's consumers (`i < length`, `i === length - 1`, `scanned === length`) look at.
 */
function lazyMerge(
  index: SortedIndex,
  start: [number, number],
  end: [number, number],
  desc: boolean,
  written: Set<string>,
  overlay: Doc[],
  createdAt: number,
  currentVersion: () => number,
): Doc[] {
  const out: Doc[] = [];
  let exhausted = false;
  let highest = -1;
  // Committed cursor.
  const pos: [number, number] = desc ? [end[0], end[1]] : [start[0], start[1]];
  if (desc) index.prev(pos);
  let committed: Entry | undefined;
  const advanceCommitted = (): void => {
    for (;;) {
      const inRange = desc ? index.comparePos(pos, start) >= 0 : index.comparePos(pos, end) < 0;
      const entry = inRange ? index.at(pos) : undefined;
      if (entry === undefined) {
        committed = undefined;
        return;
      }
      if (desc) index.prev(pos);
      else index.next(pos);
      if (!written.has(entry.doc._id as string)) {
        committed = entry;
        return;
      }
    }
  };
  advanceCommitted();
  let oi = 0;
  let overlayKey: Key | null = overlay.length > 0 ? index.keyOf(overlay[0]) : null;

  const fill = (n: number): void => {
    while (!exhausted && out.length < n) {
      if (currentVersion() !== createdAt) {
        throw new Error("A database query was read after its transaction ended.");
      }
      if (committed === undefined && oi >= overlay.length) {
        exhausted = true;
        return;
      }
      let takeOverlay: boolean;
      if (committed === undefined) takeOverlay = true;
      else if (oi >= overlay.length) takeOverlay = false;
      else {
        const c = compareKeys(overlayKey!, committed.key);
        takeOverlay = desc ? c > 0 : c < 0;
      }
      if (takeOverlay) {
        out.push(overlay[oi++]);
        overlayKey = oi < overlay.length ? index.keyOf(overlay[oi]) : null;
      } else {
        out.push(committed!.doc);
        advanceCommitted();
      }
    }
  };

  return new Proxy(out, {
    get(target, prop, receiver) {
      if (prop === "length") {
        fill(highest + 2);
        return target.length;
      }
      if (typeof prop === "string") {
        const i = Number(prop);
        if (Number.isInteger(i) && i >= 0 && String(i) === prop) {
          if (i > highest) highest = i;
          fill(i + 1);
          return target[i];
        }
      }
      if (prop === Symbol.iterator) {
        return function* () {
          for (let i = 0; ; i++) {
            fill(i + 1);
            if (i >= target.length) return;
            yield target[i];
          }
        };
      }
      return Reflect.get(target, prop, receiver);
    },
    set() {
      throw new Error("read-only query result");
    },
  });
}
