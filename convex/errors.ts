/**
 * Expected failures are thrown as `ConvexError({code, message, ...})`; clients
 * read `error.data.code` (Python: `ConvexError.data["code"]`).
 */
import { ConvexError } from "convex/values";

/** Error codes thrown by the functions in this directory. */
export type ErrorCode =
  | "UNAUTHENTICATED"
  | "INVALID_ARGUMENT"
  | "INVALID_EVENT"
  | "BATCH_TOO_LARGE"
  | "INVALID_TIME_ZONE"
  | "INVALID_FILTERS";

/** Build the `ConvexError` thrown for an expected failure; `details` are extra JSON fields. */
export function appError(
  code: ErrorCode,
  message: string,
  details: Record<string, string | number> = {},
): ConvexError<{ code: ErrorCode; message: string } & Record<string, string | number>> {
  return new ConvexError({ ...details, code, message });
}

/** Reject anything that is not a finite integer (float64 carrying an int). */
export function requireInteger(value: number, where: string, min?: number, max?: number): void {
  if (!Number.isFinite(value) || !Number.isInteger(value)) {
    throw appError("INVALID_ARGUMENT", `${where} must be a finite integer, got ${String(value)}`, {
      field: where,
    });
  }
  if (min !== undefined && value < min) {
    throw appError("INVALID_ARGUMENT", `${where} must be >= ${min}, got ${value}`, { field: where });
  }
  if (max !== undefined && value > max) {
    throw appError("INVALID_ARGUMENT", `${where} must be <= ${max}, got ${value}`, { field: where });
  }
}
