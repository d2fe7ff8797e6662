/**
 * Filter sets and their canonical key (`docs/architecture.md`, "Filters and
 * their canonical key"):
 *
 *     filterKey = `${timeframe}|${product}|${sorted(unique(topics))}|${sorted(unique(channels))}`
 *
 * with lists joined by ",". Sorting is by UTF-16 code unit (JS default sort).
 */
import { appError } from "./errors";
import type { Filters } from "./validators";

/** The filter set used when a caller passes none. */
export const DEFAULT_FILTERS: Filters = { timeframe: "All", product: "all" };

// The two limits below must equal MAX_FILTER_VALUES and MAX_FILTER_VALUE_LENGTH in
// worker/aggregation/filters.py (FilterSet.from_dict); tests/unit/aggregation/test_aggregation_filters.py
// fails when they differ.

/** Most topics or channels accepted in one filter set, counted as given (duplicates included). */
export const MAX_FILTER_VALUES = 50;
/** Longest topic slug or channel id accepted, in characters. */
export const MAX_FILTER_VALUE_LENGTH = 128;

function canonicalList(values: readonly string[] | undefined): string[] {
  return [...new Set(values ?? [])].sort();
}

/** Return the canonical key of a filter set; independent of list order and duplicates. */
export function filterKey(filters: Filters): string {
  return [
    filters.timeframe,
    filters.product,
    canonicalList(filters.topics).join(","),
    canonicalList(filters.channels).join(","),
  ].join("|");
}

/** True for the 18 timeframe × product sets the worker computes eagerly. */
export function isEagerFilterSet(filters: Filters): boolean {
  return (filters.topics ?? []).length === 0 && (filters.channels ?? []).length === 0;
}

/**
 * Validate a filter set and return it in canonical form: lists sorted and
 * de-duplicated, empty lists omitted.
 *
 * @throws ConvexError `INVALID_FILTERS` naming the list and position of a bad value.
 */
export function normalizeFilters(filters: Filters | undefined): Filters {
  const input = filters ?? DEFAULT_FILTERS;
  const out: Filters = { timeframe: input.timeframe, product: input.product };
  for (const field of ["topics", "channels"] as const) {
    const values = input[field];
    if (values === undefined) continue;
    if (values.length > MAX_FILTER_VALUES) {
      throw appError(
        "INVALID_FILTERS",
        `filters.${field} has ${values.length} values; at most ${MAX_FILTER_VALUES} are allowed`,
        { field: `filters.${field}` },
      );
    }
    values.forEach((value, index) => {
      if (value.length === 0 || value.length > MAX_FILTER_VALUE_LENGTH || /[,|]/.test(value)) {
        throw appError(
          "INVALID_FILTERS",
          `filters.${field}[${index}] must be 1-${MAX_FILTER_VALUE_LENGTH} characters without "," or "|"`,
          { field: `filters.${field}`, index },
        );
      }
    });
    const canonical = canonicalList(values);
    if (canonical.length > 0) out[field] = canonical;
  }
  return out;
}
