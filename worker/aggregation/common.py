"""Small shared helpers for the aggregation families. Pure: no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from worker.aggregation.frame import CodeArray, Frame, IntArray
from worker.aggregation.timeframes import month_label

__all__ = [
    "run_positions",
    "unique_ints",
    "bincount",
    "code_counts",
    "kth_largest",
    "slot_month_counts",
    "Dependency",
    "Output",
    "ratio",
    "ratios",
    "num",
    "channel_name",
    "MonthAxis",
    "month_axis",
    "change",
]

Dependency = Literal["window", "day", "month"]
"""What besides the timeframe makes a result time-relative: nothing, "today", or "this month"."""
Output = tuple[dict[str, Any], Dependency]

_DECIMALS = 6


def num(value: float) -> float | None:
    """Return a finite float rounded to 6 decimals (stable storage), or None for NaN/inf."""
    f = float(value)
    if not math.isfinite(f):
        return None
    return round(f, _DECIMALS)


def ratio(numerator: float, denominator: float) -> float | None:
    """Return numerator / denominator rounded to 6 decimals, None when the denominator is 0."""
    if denominator == 0:
        return None
    return num(numerator / denominator)


_EXACT_FLOAT_INT = 2**53
"""Integers below this (in magnitude) convert to float64 exactly."""


def ratios(numerators: CodeArray, denominators: CodeArray) -> list[float | None]:
    """Return ``[ratio(n, d) for n, d in zip(numerators, denominators)]``, computed with numpy.

    Args:
        numerators: Integers (k,).
        denominators: Integers (k,).

    Returns:
        The same floats (and None) as ``ratio``, element by element. ``round(q, 6)`` rounds the exact
        value of ``q``; ``rint(q * 1e6) / 1e6`` gives the same float except when ``q * 1e6`` lies
        within its rounding error of a half-integer: such elements (and zero denominators, non-finite
        quotients, integers too large for float64) go through ``ratio`` itself.
    """
    top = np.asarray(numerators, dtype=np.float64)
    bottom = np.asarray(denominators, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = top / bottom * 10.0**_DECIMALS
        out: list[float | None] = (np.rint(scaled) / 10.0**_DECIMALS).tolist()
        magnitude = np.abs(scaled)
        clear = np.abs(scaled - np.floor(scaled) - 0.5) > magnitude * 2.0**-50
        clear &= magnitude < 2.0**52
        clear &= (np.abs(top) < _EXACT_FLOAT_INT) & (np.abs(bottom) < _EXACT_FLOAT_INT)
    for i in np.flatnonzero(~clear).tolist():
        out[i] = ratio(int(numerators[i]), int(denominators[i]))
    return out


def change(current: float, previous: float) -> float | None:
    """Return the relative change (current − previous) / previous, None when previous is 0."""
    return ratio(current - previous, previous)


def channel_name(frame: Frame, code: int) -> str | None:
    """Return the most recent name seen for a channel code."""
    return frame.channel_names[code]


@dataclass(frozen=True, slots=True)
class MonthAxis:
    """Contiguous local months ``first … last`` covered by a monthly series (capped).

    Attributes:
        first: First month index kept.
        last: Last month index.
        truncated: True when older months were dropped because of the cap.
        cap: The cap (``AggregationOptions.months_cap``).
    """

    first: int
    last: int
    truncated: bool
    cap: int

    @property
    def size(self) -> int:
        """Return the number of months (0 for an empty axis)."""
        return max(0, self.last - self.first + 1)

    def labels(self) -> list[str]:
        """Return ``"YYYY-MM"`` labels, oldest first."""
        return [month_label(m) for m in range(self.first, self.last + 1)]

    def meta(self) -> dict[str, Any]:
        """Return the cap record stored with a series."""
        return {"cap": self.cap, "truncated": self.truncated}


def month_axis(months: CodeArray, cap: int) -> MonthAxis:
    """Return the axis from the first to the last month present in ``months`` (keeping the newest ``cap``)."""
    if months.size == 0:
        return MonthAxis(0, -1, False, cap)
    first, last = int(months.min()), int(months.max())
    if last - first + 1 > cap:
        return MonthAxis(last - cap + 1, last, True, cap)
    return MonthAxis(first, last, False, cap)


def per_month(months: CodeArray, axis: MonthAxis) -> IntArray:
    """Return views per month of the axis (views outside the axis ignored)."""
    if axis.size == 0:
        return np.zeros(0, dtype=np.int64)
    off = months - axis.first
    if off.size and int(off.min()) < 0:  # months before the axis (a truncated one) are not counted
        off = off[off >= 0]
    return bincount(off, axis.size)


_BINCOUNT_CHUNK = 1 << 18
"""Values counted at once by :func:`bincount` (bounds its index-width copy to 2 MiB)."""


def bincount(values: CodeArray, minlength: int, *, shift: int = 0) -> IntArray:
    """Return ``np.bincount(values + shift, minlength=minlength)`` as int64 (values + shift ≥ 0).

    ``np.bincount`` first copies an input that is not index-width (the frame's narrow columns) into
    an int64 array of its length; counting ``_BINCOUNT_CHUNK`` values at a time keeps that copy
    (and the shifted one) small whatever the length. The counts are exact integer sums, the same as
    one call.
    """
    n = int(values.shape[0])
    if n <= _BINCOUNT_CHUNK:
        chunk = values.astype(np.intp)
        if shift:
            chunk += shift
        return np.bincount(chunk, minlength=minlength).astype(np.int64, copy=False)
    out: IntArray = np.zeros(minlength, dtype=np.int64)
    for lo in range(0, n, _BINCOUNT_CHUNK):
        chunk = values[lo : lo + _BINCOUNT_CHUNK].astype(np.intp)
        if shift:
            chunk += shift
        counts = np.bincount(chunk, minlength=out.size)
        if counts.size > out.size:  # a value beyond minlength: the result grows as np.bincount's would
            out = np.concatenate((out, np.zeros(counts.size - out.size, dtype=np.int64)))
        out += counts
    return out


def kth_largest(values: CodeArray, k: int) -> int:
    """Return the ``k``-th largest of non-negative integers (1 ≤ k ≤ values.size), counting repeats.

    Equals ``np.partition(values, values.size - k)[values.size - k]``. Counts (co-sessions, views)
    are small integers repeated many times, where a selection is slow; a histogram of the values is
    one pass: the answer is the largest t with at least k values ≥ t. Values spread wider than the
    histogram bound (a range above 16 cells per value plus 2^20) go through ``np.partition``.

    Raises:
        ValueError: ``k`` outside ``1 … values.size``.
    """
    n = int(values.shape[0])
    if not 1 <= k <= n:
        raise ValueError(f"k: {k} is outside 1 … {n}")
    high = int(values.max())
    if int(values.min()) < 0 or not _dense(high + 1, n):
        return int(np.partition(values, n - k)[n - k])
    at_least = np.cumsum(bincount(values, high + 1)[::-1])[::-1]  # at_least[t] = values ≥ t
    return int(np.flatnonzero(at_least >= k)[-1])


def code_counts(codes: CodeArray, k: int) -> IntArray:
    """Return how many of ``codes`` (values −1…k−1, −1 = none) are each code 0…k−1, as an int64 (k,).

    Counted by :func:`bincount` (its index-width copies stay the size of a chunk).
    """
    out: IntArray = bincount(codes, k + 1, shift=1)[1:]  # code -1 is counted in bin 0 and dropped
    return out


def slot_month_counts(slots: CodeArray, months: CodeArray, axis: MonthAxis, k: int) -> IntArray:
    """Return views per (slot, month of ``axis``) as an int64 (k, axis.size) array.

    Args:
        slots: Per view its slot 1…k, or 0 for a view not counted; an int array of the views' length
            that this function consumes (it is overwritten in place with the count keys).
        months: Per view its month index (same length).
        axis: The months counted; views of months before a truncated axis are not counted.
        k: Number of slots.
    """
    key = slots
    key *= axis.size
    key += months
    key -= axis.first
    if axis.truncated:  # months before the axis are not counted
        key[months < axis.first] = 0
    out: IntArray = np.bincount(key, minlength=(k + 1) * axis.size).reshape(k + 1, axis.size)[1:]
    return out


_DENSE_CELLS_PER_ROW = 16
"""Distinct values are counted in a bitmap when it has at most this many cells per input row (plus
2^20), i.e. at most twice the bytes of the int64 sort keys (plus 1 MiB); otherwise by sorting."""


def _dense(cells: int, rows: int) -> bool:
    return cells <= _DENSE_CELLS_PER_ROW * rows + (1 << 20)


def distinct_per_group(group: CodeArray, item: CodeArray, n_groups: int) -> IntArray:
    """Return, per group 0…n_groups−1, the number of distinct items ≥ 0 (rows with group < 0 ignored)."""
    keep = (item >= 0) & (group >= 0) & (group < n_groups)
    if not keep.any():
        return np.zeros(n_groups, dtype=np.int64)
    item_kept = item[keep]
    width = int(item_kept.max()) + 1
    # one key per row, built in place: int32 when every key fits it, else int64 (narrow inputs would overflow)
    key_type: type[np.signedinteger[Any]] = np.int32 if n_groups * width < 2**31 else np.int64
    keys: CodeArray = group[keep].astype(key_type)
    del keep
    keys *= width
    keys += item_kept
    del item_kept
    if _dense(n_groups * width, keys.size):
        seen = np.zeros(n_groups * width, dtype=np.bool_)
        seen[keys] = True
        del keys
        dense: IntArray = np.count_nonzero(seen.reshape(n_groups, width), axis=1).astype(np.int64)
        return dense
    keys.sort()
    first = np.empty(keys.size, dtype=np.bool_)
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    pairs = keys[first]
    del keys, first
    pairs //= width
    out: IntArray = np.bincount(pairs, minlength=n_groups).astype(np.int64)
    return out


def run_positions(groups: CodeArray) -> IntArray:
    """Return each entry's position (0, 1, …) within its run of equal values of ``groups`` (sorted), int64."""
    if groups.size == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.flatnonzero(np.concatenate(([True], groups[1:] != groups[:-1])))
    out: IntArray = np.arange(groups.size, dtype=np.int64) - np.repeat(start, np.diff(np.append(start, groups.size)))
    return out


def unique_ints(values: CodeArray) -> CodeArray:
    """Return the sorted distinct values of an int array (a bitmap over their range when it is small,
    else a sort; both faster than hashing here)."""
    if values.size == 0:
        return np.sort(values)
    low, high = int(values.min()), int(values.max())
    if _dense(high - low + 1, values.size):
        seen = np.zeros(high - low + 1, dtype=np.bool_)
        seen[np.subtract(values, low, dtype=np.int64)] = True
        present: CodeArray = (np.flatnonzero(seen) + low).astype(values.dtype)
        return present
    ordered: CodeArray = np.sort(values)
    keep = np.empty(ordered.size, dtype=np.bool_)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    out: CodeArray = ordered[keep]
    return out
