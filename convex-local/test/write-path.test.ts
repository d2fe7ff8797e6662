/**
 * The write-path fast checks agree with the code they shortcut:
 *  - `conforms` (src/fast-validate.ts) never accepts a document convex-test's own schema
 *    validation rejects, and accepts the ordinary valid ones (random documents, differential);
 *  - `checkValueLimits` (src/values.ts) reports the same limit with the same path as before.
 */
import { describe, expect, test } from "vitest";
import { convexTest } from "convex-test";
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";
import { captureInternals } from "../src/convex-test-internals.ts";
import { conforms } from "../src/fast-validate.ts";
import { checkValueLimits, LimitError } from "../src/values.ts";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

const schema = defineSchema({
  rows: defineTable({
    kind: v.union(v.literal("a"), v.literal("b"), v.literal("c")),
    mixed: v.optional(v.union(v.string(), v.number(), v.null(), v.array(v.boolean()))),
    data: v.any(),
    ref: v.optional(v.id("rows")),
    nested: v.optional(v.object({ x: v.number(), y: v.optional(v.string()) })),
    list: v.array(v.object({ k: v.string(), n: v.int64() })),
    blob: v.optional(v.bytes()),
    rec: v.optional(v.record(v.string(), v.number())),
  }),
});

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomDoc(r: () => number): Record<string, unknown> {
  const pick = <T,>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
  const scalar = (): unknown => pick(["a", "b", "c", "d", 1, 2.5, null, true, 3n, [true], [1], {}, undefined]);
  const doc: Record<string, unknown> = {
    kind: pick(["a", "b", "c", "x", 1]),
    data: pick([{ deep: [1, 2, { z: "q" }] }, "s", 7, null, [1, 2]]),
    list: pick([[], [{ k: "k", n: 1n }], [{ k: "k", n: 1 }], [{ k: 1, n: 1n }], "no", [{ k: "k", n: 2n, extra: 1 }]]),
  };
  if (r() < 0.5) doc.mixed = scalar();
  if (r() < 0.3) doc.ref = pick(["10001rows", "10001other", "rows", 5]);
  if (r() < 0.4) doc.nested = pick([{ x: 1 }, { x: 1, y: "s" }, { x: "1" }, { y: "s" }, { x: 1, z: 2 }, [1], null]);
  if (r() < 0.2) doc.blob = pick([new ArrayBuffer(2), "b"]);
  if (r() < 0.2) doc.rec = pick([{ a: 1 }, { a: "1" }, {}]);
  if (r() < 0.1) doc.unexpected = 1;
  if (r() < 0.1) delete doc.kind;
  return doc;
}

describe("fast document validation", () => {
  test("agrees with convex-test's validation on random documents", async () => {
    const t = convexTest(schema, { "./convex/_generated/api.js": async () => ({}) } as Any);
    const db = (await captureInternals(t as never)).components[""].db;
    const original = Object.getPrototypeOf(db)._validate as (table: string, doc: unknown) => void;
    const validator = db._schema.tables.get("rows").documentType;
    const r = rng(42);
    let accepted = 0;
    let fellBack = 0;
    for (let i = 0; i < 5000; i++) {
      const doc = randomDoc(r);
      let originalOk = true;
      try {
        original.call(db, "rows", doc);
      } catch {
        originalOk = false;
      }
      const fast = conforms(validator, doc);
      if (fast) expect(originalOk, JSON.stringify(doc, (_k, x) => (typeof x === "bigint" ? `${x}n` : x))).toBe(true);
      if (fast) accepted++;
      else if (originalOk) fellBack++;
    }
    // Ordinary valid documents take the fast path; only validator kinds it leaves to convex-test
    // (here v.record) fall back.
    expect(accepted).toBeGreaterThan(50);
    expect(fellBack).toBeLessThan(accepted);
  });
});

describe("value limits", () => {
  const message = (value: unknown, opts = {}): string => {
    try {
      checkValueLimits(value, "arguments", opts);
    } catch (e) {
      expect(e).toBeInstanceOf(LimitError);
      return (e as Error).message;
    }
    return "ok";
  };
  test("paths and messages", () => {
    expect(message({ a: [1, { b: new Array(8193).fill(0) }] })).toBe(
      "arguments: array at $.a[1].b has 8193 elements; the maximum is 8192",
    );
    expect(message({ a: [{ $bad: 1 }] })).toBe("arguments: field name '$bad' at $.a[0].$bad must not start with '$'");
    expect(message({ a: { "é": 1 } })).toBe("arguments: field name at $.a.é must be non-control ASCII");
    expect(message({ a: { ["x".repeat(1025)]: 1 } })).toMatch(/^arguments: field name at \$\.a\.x+ is 1025 characters; the maximum is 1024$/);
    let deep: unknown = 1;
    for (let i = 0; i < 70; i++) deep = [deep];
    expect(message({ d: deep })).toMatch(/^arguments: value is nested more than 64 levels deep at \$\.d(\[0\])+$/);
    expect(message({ _x: 1 }, { document: true })).toBe("arguments: top-level field '_x' must not start with '_'");
    expect(message({ "a-b": 1 }, { document: true })).toBe(
      "arguments: top-level field 'a-b' must be alphanumeric/underscore and start with a letter or underscore",
    );
    expect(message({ _id: "1x", _creationTime: 1, ok_1: { "a-b": { $integer: "AAAAAAAAAAA=" } }, "": 2 })).toBe("ok");
    expect(message({ "": 1 }, { document: true })).toBe(
      "arguments: top-level field '' must be alphanumeric/underscore and start with a letter or underscore",
    );
  });
});
