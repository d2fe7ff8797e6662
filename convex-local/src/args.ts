/** Validation of function arguments received from clients, before they reach the runtime. */
import { jsonToConvex } from "convex/values";
import { checkValueLimits, MAX_FUNCTION_VALUE_BYTES } from "./values.ts";

/**
 * Check a convex_encoded_json argument object: must be an object, ≤ 16 MiB encoded, within the
 * value limits, and decodable. Returns the JSON text to execute with, or an error message naming
 * the function and the problem (reported as a function failure, not a protocol error).
 */
export function checkArgs(raw: unknown, udfPath: string): { argsJson: string | null; argsError: string | null } {
  const fail = (why: string) => ({ argsJson: null, argsError: `Invalid arguments for ${udfPath}: ${why}` });
  if (raw === undefined || raw === null) raw = {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    return fail(`the arguments to a Convex function must be an object, got ${Array.isArray(raw) ? "array" : typeof raw}`);
  }
  const json = JSON.stringify(raw);
  if (json.length > MAX_FUNCTION_VALUE_BYTES) {
    return fail(`arguments are too large (${json.length} bytes > maximum ${MAX_FUNCTION_VALUE_BYTES} bytes)`);
  }
  try {
    checkValueLimits(raw, "arguments");
    jsonToConvex(raw as never);
  } catch (e) {
    return fail((e as Error).message);
  }
  return { argsJson: json, argsError: null };
}
