/**
 * Convex value helpers shared by the HTTP API, the sync protocol and the engine:
 * timestamp encoding, HTTP number formatting, output formats and the documented
 * Convex value limits that `convex-test` does not enforce itself.
 */
import { Buffer } from "node:buffer";

/** Largest accepted function argument / return value, in bytes of encoded JSON (16 MiB). */
export const MAX_FUNCTION_VALUE_BYTES = 16 * 1024 * 1024;
/** Maximum array length inside any Convex value. */
export const MAX_ARRAY_ELEMENTS = 8192;
/** Maximum nesting of arrays/objects in a function argument or return value. */
export const MAX_VALUE_NESTING = 64;
/** Maximum nesting of arrays/objects inside a stored document. */
export const MAX_DOCUMENT_NESTING = 16;
/** Maximum number of fields of one object. */
export const MAX_OBJECT_FIELDS = 1024;
/** Maximum length of a field name in a function value / nested document object. */
export const MAX_FIELD_NAME_LENGTH = 1024;
/** Maximum length of a top-level document field name. */
export const MAX_TOP_LEVEL_FIELD_NAME_LENGTH = 64;

/** Error raised when a value breaks a documented Convex limit; the message names the limit and where. */
export class LimitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LimitError";
  }
}

/** Encode a Convex timestamp (ns since epoch, u64) as base64 of its 8 little-endian bytes. */
export function encodeTs(ts: bigint): string {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(ts < 0n ? 0n : ts);
  return b.toString("base64");
}

/**
 * Decode a base64 little-endian u64 timestamp.
 * @throws Error naming the field when the string is not 8 bytes of base64.
 */
export function decodeTs(s: unknown, field = "ts"): bigint {
  if (typeof s !== "string") throw new Error(`${field} must be a base64 string`);
  const b = Buffer.from(s, "base64");
  if (b.length !== 8) throw new Error(`${field} must encode exactly 8 bytes, got ${b.length}`);
  return b.readBigUInt64LE();
}

/**
 * Serialize a convex_encoded_json value (already JSON-shaped) the way the real backend does on
 * HTTP: every integral float64 gets a fraction (`25.0`). Only use this for Convex values, never for
 * protocol integers.
 */
export function stringifyConvexJson(value: unknown): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "number": {
      if (!Number.isFinite(value)) return "null";
      const s = JSON.stringify(value);
      return /^-?\d+$/.test(s) ? `${s}.0` : s;
    }
    case "string":
    case "boolean":
      return JSON.stringify(value);
    case "object": {
      if (Array.isArray(value)) return `[${value.map(stringifyConvexJson).join(",")}]`;
      const parts: string[] = [];
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (v === undefined) continue;
        parts.push(`${JSON.stringify(k)}:${stringifyConvexJson(v)}`);
      }
      return `{${parts.join(",")}}`;
    }
    default:
      return "null";
  }
}

/**
 * Convert a convex_encoded_json value to the "clean" `json` export format: int64 → decimal string,
 * bytes → base64 string, special floats → "NaN"/"Infinity"/"-Infinity" (−0 → 0).
 */
export function toCleanJson(value: unknown): unknown {
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map(toCleanJson);
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj);
  if (keys.length === 1) {
    const [k] = keys;
    const v = obj[k];
    if (k === "$integer" && typeof v === "string") {
      return Buffer.from(v, "base64").readBigInt64LE().toString();
    }
    if (k === "$bytes" && typeof v === "string") return v;
    if (k === "$float" && typeof v === "string") {
      const f = Buffer.from(v, "base64").readDoubleLE();
      if (Number.isNaN(f)) return "NaN";
      if (f === Infinity) return "Infinity";
      if (f === -Infinity) return "-Infinity";
      return 0;
    }
  }
  const out: Record<string, unknown> = {};
  for (const k of keys) out[k] = toCleanJson(obj[k]);
  return out;
}

const SPECIAL_KEYS = new Set(["$integer", "$float", "$bytes"]);

/**
 * Check a convex_encoded_json value against the Convex value limits (arrays, nesting, field
 * count, field names). `where` names the value in error messages (e.g. "arguments").
 * @throws LimitError naming the limit and the path of the offending element.
 */
export function checkValueLimits(
  value: unknown,
  where: string,
  opts: { maxNesting?: number; document?: boolean } = {},
): void {
  const maxNesting = opts.maxNesting ?? MAX_VALUE_NESTING;
  const document = opts.document === true;
  // The path of the element being visited, as segments (array index or field name); it is only
  // turned into text ("$.a[3].b") when a limit is violated, so a valid value allocates no strings.
  const segments: (string | number)[] = [];
  const pathText = (extra?: string): string => {
    let text = "$";
    for (const s of segments) text += typeof s === "number" ? `[${s}]` : `.${s}`;
    return extra === undefined ? text : `${text}.${extra}`;
  };
  const walk = (v: unknown, depth: number): void => {
    if (v === null || typeof v !== "object") return;
    if (depth > maxNesting) {
      throw new LimitError(`${where}: value is nested more than ${maxNesting} levels deep at ${pathText()}`);
    }
    if (Array.isArray(v)) {
      const n = v.length;
      if (n > MAX_ARRAY_ELEMENTS) {
        throw new LimitError(
          `${where}: array at ${pathText()} has ${n} elements; the maximum is ${MAX_ARRAY_ELEMENTS}`,
        );
      }
      for (let i = 0; i < n; i++) {
        const e = v[i];
        if (e === null || typeof e !== "object") continue;
        segments.push(i);
        walk(e, depth + 1);
        segments.pop();
      }
      return;
    }
    const keys = Object.keys(v);
    if (keys.length === 1 && SPECIAL_KEYS.has(keys[0])) return;
    if (keys.length > MAX_OBJECT_FIELDS) {
      throw new LimitError(
        `${where}: object at ${pathText()} has ${keys.length} fields; the maximum is ${MAX_OBJECT_FIELDS}`,
      );
    }
    const topLevelDoc = document && depth === 1;
    for (const k of keys) {
      if (!isPlainFieldName(k, topLevelDoc)) checkFieldName(k, pathText(k), where, topLevelDoc);
      const e = (v as Record<string, unknown>)[k];
      if (e === null || typeof e !== "object") continue;
      segments.push(k);
      walk(e, depth + 1);
      segments.pop();
    }
  };
  walk(value, 1);
}

/**
 * True when `checkFieldName` would accept `name` (printable ASCII, no leading `$`, within the
 * length limit; top-level document fields also alphanumeric/underscore and no leading `_` other
 * than the system fields). A cheap pre-check: anything it does not accept goes through
 * `checkFieldName`, which produces the exact error.
 */
function isPlainFieldName(name: string, topLevelDoc: boolean): boolean {
  const n = name.length;
  if (n === 0 || n > (topLevelDoc ? MAX_TOP_LEVEL_FIELD_NAME_LENGTH : MAX_FIELD_NAME_LENGTH)) return false;
  if (topLevelDoc) return PLAIN_TOP_LEVEL.test(name) && (name.charCodeAt(0) !== 95 || name === "_id" || name === "_creationTime");
  if (name.charCodeAt(0) === 36) return false; // "$"
  for (let i = 0; i < n; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}
const PLAIN_TOP_LEVEL = /^[A-Za-z_][A-Za-z0-9_]*$/;

// eslint-disable-next-line no-control-regex
const CONTROL_OR_NON_ASCII = /[^\x20-\x7e]/;

function checkFieldName(name: string, path: string, where: string, topLevelDoc: boolean): void {
  if (name.startsWith("$")) {
    throw new LimitError(`${where}: field name '${name}' at ${path} must not start with '$'`);
  }
  if (CONTROL_OR_NON_ASCII.test(name)) {
    throw new LimitError(`${where}: field name at ${path} must be non-control ASCII`);
  }
  const max = topLevelDoc ? MAX_TOP_LEVEL_FIELD_NAME_LENGTH : MAX_FIELD_NAME_LENGTH;
  if (name.length > max) {
    throw new LimitError(`${where}: field name at ${path} is ${name.length} characters; the maximum is ${max}`);
  }
  if (topLevelDoc) {
    if (name.startsWith("_") && name !== "_id" && name !== "_creationTime") {
      throw new LimitError(`${where}: top-level field '${name}' must not start with '_'`);
    }
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw new LimitError(
        `${where}: top-level field '${name}' must be alphanumeric/underscore and start with a letter or underscore`,
      );
    }
  }
}
