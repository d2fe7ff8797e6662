/**
 * Differential test of the sorted index structures (src/index-accel.ts): random documents of mixed
 * types, random writes inside and across transactions (including nested levels, rollbacks and a
 * wholesale replacement of the committed state), and random index range queries, each run twice in
 * the same transaction — accelerated and through convex-test's original code — with identical
 * results (documents, order, pages, cursors, errors) required.
 */
import { describe, expect, test } from "vitest";
import { convexTest } from "convex-test";
import { defineSchema, defineTable } from "convex/server";
import { convexToJson, v, type Value } from "convex/values";
import { captureInternals } from "../src/convex-test-internals.ts";
import { installIndexAccel, tuning, type IndexAccel } from "../src/index-accel.ts";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

const schema = defineSchema({
  items: defineTable({
    a: v.optional(v.any()),
    b: v.optional(v.any()),
    o: v.optional(v.any()),
    tag: v.string(),
  })
    .index("by_a", ["a"])
    .index("by_a_b", ["a", "b"])
    .index("by_b_a_tag", ["b", "a", "tag"])
    .index("by_o_x", ["o.x"])
    .index("by_tag", ["tag"]),
  others: defineTable({ a: v.optional(v.any()), tag: v.string() }).index("by_a", ["a"]),
});

const INDEXES: Record<string, Record<string, string[]>> = {
  items: {
    by_a: ["a", "_creationTime", "_id"],
    by_a_b: ["a", "b", "_creationTime", "_id"],
    by_b_a_tag: ["b", "a", "tag", "_creationTime", "_id"],
    by_o_x: ["o.x", "_creationTime", "_id"],
    by_tag: ["tag", "_creationTime", "_id"],
    by_creation_time: ["_creationTime", "_id"],
    by_id: ["_id"],
  },
  others: {
    by_a: ["a", "_creationTime", "_id"],
    by_creation_time: ["_creationTime", "_id"],
  },
};

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bytes(...xs: number[]): ArrayBuffer {
  return new Uint8Array(xs).buffer;
}

const POOL: (() => Value | undefined)[] = [
  () => undefined,
  () => null,
  () => -1,
  () => 0,
  () => -0,
  () => 1,
  () => 2.5,
  () => NaN,
  () => Infinity,
  () => -Infinity,
  () => 0n,
  () => 5n,
  () => -3n,
  () => true,
  () => false,
  () => "",
  () => "a",
  () => "b",
  () => "ab",
  () => "é",
  () => bytes(),
  () => bytes(1, 2),
  () => bytes(1),
  () => [],
  () => [1],
  () => ["a", 1],
  () => ({ x: 1 }),
  () => ({}),
  () => ({ y: "a" }),
];

function encode(x: unknown): string {
  return JSON.stringify(convexToJson(x as Value));
}

async function setup(): Promise<{ t: Any; db: Any; accel: IndexAccel }> {
  const t = convexTest(schema, { "./convex/_generated/api.js": async () => ({}) } as Any);
  const internals = await captureInternals(t as Any);
  const db = internals.components[""].db;
  const accel = installIndexAccel(db);
  return { t, db, accel };
}

class Driver {
  readonly r: () => number;
  readonly ids: Record<string, string[]> = { items: [], others: [] };
  queries = 0;
  pages = 0;
  nonEmpty = 0;
  constructor(
    seed: number,
    readonly db: Any,
    readonly accel: IndexAccel,
  ) {
    this.r = rng(seed);
  }

  int(n: number): number {
    return Math.floor(this.r() * n);
  }
  pick<T>(xs: T[]): T {
    return xs[this.int(xs.length)];
  }
  value(): Value | undefined {
    return this.pick(POOL)();
  }
  fields(table: string): Record<string, Value> {
    const doc: Record<string, Value> = { tag: this.pick(["t0", "t1", "t2"]) };
    const a = this.value();
    if (a !== undefined || this.r() < 0.5) doc.a = a as Value;
    if (table === "items") {
      const b = this.value();
      if (b !== undefined) doc.b = b;
      const k = this.int(4);
      if (k === 1) doc.o = { x: (this.value() ?? null) as Value };
      else if (k === 2) doc.o = this.value() ?? {};
    }
    for (const key of Object.keys(doc)) if (doc[key] === undefined) delete doc[key];
    return doc;
  }

  async write(ctx: Any): Promise<void> {
    const table = this.r() < 0.8 ? "items" : "others";
    const ids = this.ids[table];
    const op = ids.length === 0 ? 0 : this.int(4);
    if (op === 0) {
      ids.push(await ctx.db.insert(table, this.fields(table)));
      return;
    }
    const id = this.pick(ids);
    if ((await ctx.db.get(id)) === null) return;
    if (op === 1) {
      const f = this.fields(table);
      const patch: Record<string, unknown> = {};
      for (const key of ["a", "b", "o", "tag"]) {
        if (this.r() < 0.5) continue;
        if (key in f) patch[key] = f[key];
        else if (key !== "tag") patch[key] = undefined;
      }
      if (table === "others") delete patch.b, delete patch.o;
      await ctx.db.patch(id, patch);
    } else if (op === 2) {
      await ctx.db.replace(id, this.fields(table));
    } else {
      await ctx.db.delete(id);
    }
  }

  /** A random range value for `field`: from an existing document or from the pool. */
  async rangeValue(ctx: Any, table: string, field: string): Promise<unknown> {
    if (this.r() < 0.5) {
      const docs = await ctx.db.query(table).take(50);
      if (docs.length > 0) {
        let x: Any = this.pick(docs);
        for (const p of field.split(".")) x = x !== null && typeof x === "object" && !Array.isArray(x) && !(x instanceof ArrayBuffer) ? x[p] : undefined;
        return x;
      }
    }
    if (field === "_creationTime") return this.r() < 0.5 ? Date.now() - this.int(5) : 1e15;
    if (field === "_id") return this.pick(this.ids[table].length ? this.ids[table] : ["x"]);
    if (field === "tag") return this.pick(["t0", "t1", "t2", "t", "t10"]);
    return this.value();
  }

  async query(ctx: Any): Promise<void> {
    const table = this.r() < 0.85 ? "items" : "others";
    const indexName = this.pick(Object.keys(INDEXES[table]));
    const fields = INDEXES[table][indexName];
    const nEq = this.int(Math.min(fields.length, 3) + 1);
    const ops: [string, string, unknown][] = [];
    for (let i = 0; i < nEq; i++) ops.push(["eq", fields[i], await this.rangeValue(ctx, table, fields[i])]);
    if (nEq < fields.length) {
      const bf = fields[nEq];
      const lower = this.int(3); // 0 none, 1 gt, 2 gte
      const upper = this.int(3); // 0 none, 1 lt, 2 lte
      const lo = lower ? ([lower === 1 ? "gt" : "gte", bf, await this.rangeValue(ctx, table, bf)] as [string, string, unknown]) : null;
      const hi = upper ? ([upper === 1 ? "lt" : "lte", bf, await this.rangeValue(ctx, table, bf)] as [string, string, unknown]) : null;
      const both = [lo, hi].filter((x) => x !== null) as [string, string, unknown][];
      if (this.r() < 0.3) both.reverse();
      ops.push(...both);
    }
    if (this.r() < 0.03 && fields.length > 1) ops.push(["eq", fields[fields.length - 1], "zzz"]); // invalid shape
    const order = this.r() < 0.5 ? "asc" : "desc";
    const filterTag = this.r() < 0.25 ? this.pick(["t0", "t1"]) : null;
    const build = () => {
      let q = ctx.db.query(table).withIndex(indexName, (b: Any) => {
        for (const [op, f, val] of ops) b = b[op](f, val);
        return b;
      });
      q = q.order(order);
      if (filterTag) q = q.filter((f: Any) => f.eq(f.field("tag"), filterTag));
      return q;
    };
    const kind = this.int(6);
    const n = 1 + this.int(6);
    const numItems = 1 + this.int(4);
    const maximumRowsRead = this.r() < 0.2 ? 1 + this.int(5) : undefined;
    const useEnd = this.r() < 0.2;
    const endPick = this.r();
    const readEnd = this.r() < 0.1;
    const run = async (): Promise<string> => {
      try {
        switch (kind) {
          case 0:
            return encode(await build().collect());
          case 1:
            return encode(await build().take(n));
          case 2:
            return encode(await build().first());
          case 3:
            return encode(await build().unique());
          case 4: {
            const out: unknown[] = [];
            for await (const doc of build()) {
              out.push(doc);
              if (out.length >= n) break;
            }
            return encode(out);
          }
          default: {
            // Page through, then re-read one page with an end cursor.
            const pages: unknown[] = [];
            let cursor: string | null = null;
            const cursors: (string | null)[] = [null];
            for (let i = 0; i < 8; i++) {
              const res: Any = await build().paginate({ numItems, cursor, maximumRowsRead });
              pages.push({ ...res });
              this.pages++;
              if (res.isDone) break;
              cursor = res.continueCursor;
              cursors.push(cursor);
            }
            if (useEnd && cursors.length > 2) {
              const i = Math.floor(endPick * (cursors.length - 2));
              pages.push(await build().paginate({ numItems, cursor: cursors[i], endCursor: cursors[i + 2] }));
            }
            if (readEnd) pages.push(await build().paginate({ numItems, cursor: "_end_cursor" }));
            return encode(pages.map((p: Any) => ({ ...p, page: p.page })));
          }
        }
      } catch (e) {
        return `error: ${(e as Error).message}`;
      }
    };
    this.accel.enabled = true;
    const fast = await run();
    this.accel.enabled = false;
    const slow = await run();
    this.accel.enabled = true;
    this.queries++;
    if (!slow.startsWith("error") && slow !== "[]" && slow !== "null") this.nonEmpty++;
    expect(fast, `${table}.${indexName} ${JSON.stringify(ops.map(([o, f, x]) => [o, f, encode(x ?? null)]))} ${order} kind=${kind}`).toBe(slow);
  }

  /** One transaction of random writes and queries; some throw (rolled back), some nest a level. */
  async transaction(t: Any): Promise<void> {
    const steps = 1 + this.int(12);
    const fail = this.r() < 0.1;
    const nest = this.r() < 0.15;
    try {
      await t.run(async (ctx: Any) => {
        for (let i = 0; i < steps; i++) {
          if (nest && i === Math.floor(steps / 2)) {
            this.db.startTransaction();
            await this.write(ctx);
            await this.query(ctx);
            if (this.r() < 0.5) this.db.commit(null);
            else this.db.rollbackWrites();
          }
          if (this.r() < 0.5) await this.write(ctx);
          else await this.query(ctx);
        }
        if (fail) throw new Error("rollback");
      });
    } catch (e) {
      if ((e as Error).message !== "rollback") throw e;
    }
  }
}

function checkStructures(db: Any, accel: IndexAccel): void {
  for (const [table, idx] of Object.entries(INDEXES)) {
    for (const [name, fields] of Object.entries(idx)) {
      const index = accel.index(table, name)!;
      const committed = [...(db._tableIds.get(table) ?? [])].map((id: string) => db._documents[id]);
      const got = [...index.entries()].map((e) => e.doc);
      expect(got.length).toBe(committed.length);
      expect(new Set(got)).toEqual(new Set(committed));
      expect(index.fields).toEqual(fields);
    }
  }
}

describe("index range reads over sorted structures", () => {
  for (const [seed, chunkMax] of [[1, 1024], [2, 1024], [3, 1024], [4, 4], [5, 8], [6, 16]]) {
    test(`accelerated == original (seed ${seed}, chunks of ≤ ${chunkMax})`, async () => {
      tuning.chunkMax = chunkMax;
      const { t, db, accel } = await setup();
      const d = new Driver(seed, db, accel);
      // A committed base, written in a few large transactions.
      for (let k = 0; k < 4; k++) {
        await t.run(async (ctx: Any) => {
          for (let i = 0; i < 60; i++) await d.write(ctx);
        });
      }
      for (let i = 0; i < 150; i++) {
        await d.transaction(t);
        if (i === 75) {
          // Replace the committed state wholesale, as restoring from persistence does.
          db._documents = { ...db._documents };
          db._tableIds = new Map([...db._tableIds].map(([k, s]: [string, Set<string>]) => [k, new Set(s)]));
        }
      }
      checkStructures(db, accel);
      expect(d.queries).toBeGreaterThan(300);
      expect(d.nonEmpty).toBeGreaterThan(50);
      expect(accel.stats.accelerated).toBeGreaterThan(200);
      expect(accel.stats.builds).toBeGreaterThan(0);
      tuning.chunkMax = 1024;
      console.log(`seed ${seed}: ${d.queries} queries (${d.nonEmpty} non-empty, ${d.pages} pages), stats ${JSON.stringify(accel.stats)}`);
    });
  }

  test("chunked structure stays sorted through many inserts and removals", async () => {
    const { t, db, accel } = await setup();
    const d = new Driver(42, db, accel);
    for (let k = 0; k < 6; k++) {
      await t.run(async (ctx: Any) => {
        for (let i = 0; i < 800; i++) await d.write(ctx);
      });
      await t.run(async (ctx: Any) => {
        await d.query(ctx);
      });
    }
    checkStructures(db, accel);
  });

  test("the first read of one index builds every schema index of its table, kept current by writes", async () => {
    const { t, accel } = await setup();
    await t.run(async (ctx: Any) => {
      for (let i = 0; i < 50; i++) await ctx.db.insert("items", { a: i, b: 50 - i, tag: `t${i % 3}` });
    });
    await t.run(async (ctx: Any) => await ctx.db.query("items").withIndex("by_a", (q: Any) => q.gte("a", 10)).first());
    const built = accel.stats.builds;
    expect(built).toBe(5); // by_a, by_a_b, by_b_a_tag, by_o_x, by_tag
    await t.run(async (ctx: Any) => {
      for (let i = 50; i < 60; i++) await ctx.db.insert("items", { a: i, b: 60 - i, tag: "new" });
    });
    const tagged = await t.run(
      async (ctx: Any) =>
        await ctx.db.query("items").withIndex("by_tag", (q: Any) => q.eq("tag", "new")).collect(),
    );
    expect(tagged.map((x: Any) => x.a)).toEqual([50, 51, 52, 53, 54, 55, 56, 57, 58, 59]);
    expect(accel.stats.builds).toBe(built); // served by the structure built with by_a, not rebuilt
  });

  test("a narrow read of a large table visits only its range", async () => {
    const { t, accel } = await setup();
    await t.run(async (ctx: Any) => {
      for (let i = 0; i < 6000; i++) await ctx.db.insert("items", { a: i, tag: `t${i % 3}` });
    });
    const read = async () =>
      await t.run(async (ctx: Any) => {
        const first = await ctx.db.query("items").withIndex("by_a", (q: Any) => q.gte("a", 3000)).first();
        const last = await ctx.db.query("items").withIndex("by_tag", (q: Any) => q.eq("tag", "t1")).order("desc").take(2);
        return [first.a, last.map((x: Any) => x.a)];
      });
    expect(await read()).toEqual([3000, [5998, 5995]]);
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) await read();
    const fast = performance.now() - t0;
    accel.enabled = false;
    const t1 = performance.now();
    for (let i = 0; i < 5; i++) await read();
    const slow = (performance.now() - t1) * 10;
    accel.enabled = true;
    expect(fast).toBeLessThan(slow);
  });
});
