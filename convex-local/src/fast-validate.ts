/**
 * A fast path for convex-test's schema validation of written documents.
 *
 * convex-test (0.0.71) validates every inserted/patched/replaced document against the table's
 * validator by first copying the document to substitute commit-timestamp placeholders (a walk of
 * the whole value, `v.any()` fields included) and then validating it, trying the members of a
 * union one after the other and catching the error each non-matching member throws. For a field
 * such as `type: v.union(v.literal("a"), …, v.literal("n"))` that means up to 13 thrown and caught
 * errors per document, each capturing a stack trace.
 *
 * `conforms` answers the same question without allocating or throwing. It only ever says "valid"
 * for values convex-test's validator accepts; whenever it says "not valid" (or meets a validator
 * kind or a placeholder it does not handle), convex-test's own `_validate` runs, so every
 * rejection comes from convex-test with its exact message.
 */
import { CommitTsPlaceholder } from "convex/values";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyRecord = Record<string, any>;

const INSTALLED = "__convexLocalFastValidate";

function tableNameFromId(id: string): string | null {
  const match = /^[0-9]+/.exec(id);
  if (!match || match[0].length === id.length) return null;
  return id.slice(match[0].length);
}

function isSimpleObject(value: object): boolean {
  const prototype = Object.getPrototypeOf(value);
  return prototype === null || prototype === Object.prototype || prototype?.constructor?.name === "Object";
}

/**
 * True when convex-test's validator accepts `value` for `validator` (validator JSON as stored in
 * the schema). False means "unknown": the caller must run convex-test's own validation.
 */
export function conforms(validator: AnyRecord, value: unknown): boolean {
  if (value instanceof CommitTsPlaceholder) return false; // convex-test substitutes it first
  switch (validator.type) {
    case "any":
      return true;
    case "null":
      return value === null;
    case "number":
      return typeof value === "number";
    case "bigint":
      return typeof value === "bigint";
    case "commitTs":
      return typeof value === "bigint";
    case "boolean":
      return typeof value === "boolean";
    case "string":
      return typeof value === "string";
    case "bytes":
      return value instanceof ArrayBuffer;
    case "literal":
      return value === validator.value;
    case "id":
      return typeof value === "string" && tableNameFromId(value) === validator.tableName;
    case "array": {
      if (!Array.isArray(value)) return false;
      const element = validator.value as AnyRecord;
      for (let i = 0; i < value.length; i++) if (!conforms(element, value[i])) return false;
      return true;
    }
    case "union": {
      for (const member of validator.value as AnyRecord[]) if (conforms(member, value)) return true;
      return false;
    }
    case "object": {
      if (typeof value !== "object" || value === null || !isSimpleObject(value)) return false;
      const fields = validator.value as Record<string, { fieldType: AnyRecord; optional: boolean }>;
      const record = value as AnyRecord;
      for (const k in fields) {
        if (!Object.prototype.hasOwnProperty.call(fields, k)) continue;
        const { fieldType, optional } = fields[k];
        const v = record[k];
        if (v === undefined) {
          if (!optional) return false;
        } else if (!conforms(fieldType, v)) {
          return false;
        }
      }
      for (const k of Object.keys(record)) if (fields[k] === undefined) return false;
      return true;
    }
    default:
      return false;
  }
}

/**
 * Install the fast path on one convex-test `DatabaseFake` instance (an instance property shadows
 * its prototype's `_validate`). Documents that pass `conforms` skip convex-test's validation;
 * all others are validated by convex-test.
 */
export function installFastValidate(db: AnyRecord): void {
  if (db[INSTALLED]) return;
  const proto = Object.getPrototypeOf(db) as AnyRecord;
  const origValidate = proto._validate as (this: AnyRecord, tableName: string, doc: unknown) => void;
  if (typeof origValidate !== "function") {
    throw new Error("convex-test internals not found (unsupported convex-test version)");
  }
  db._validate = function _validate(this: AnyRecord, tableName: string, doc: unknown): void {
    const schema = this._schema as AnyRecord | null;
    if (schema === null || !schema.schemaValidation) return;
    const validator = schema.tables.get(tableName)?.documentType as AnyRecord | undefined;
    if (validator === undefined) return;
    if (conforms(validator, doc)) return;
    origValidate.call(this, tableName, doc);
  };
  db[INSTALLED] = true;
}
