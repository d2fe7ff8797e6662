"""Small shared helpers for the aggregation families. Pure: no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from worker.aggregation.frame import CodeArray, Frame, IntArray
from worker.aggregation.timeframes import month_label

__all__ = [
    "unique_ints",
    "Dependency",
    "Output",
    "ratio",
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
    off = off[off >= 0]
    out: IntArray = np.bincount(off, minlength=axis.size).astype(np.int64)
    return out


def distinct_per_group(group: CodeArray, item: CodeArray, n_groups: int) -> IntArray:
    """Return, per group 0…n_groups−1, the number of distinct items ≥ 0 (rows with group < 0 ignored)."""
    keep = (item >= 0) & (group >= 0) & (group < n_groups)
    if not keep.any():
        return np.zeros(n_groups, dtype=np.int64)
    width = int(item[keep].max()) + 1
    # one int64 key per row (narrow inputs would overflow), built and sorted in place
    keys = group[keep].astype(np.int64)
    keys *= width
    keys += item[keep]
    del keep
    keys.sort()
    first = np.empty(keys.size, dtype=np.bool_)
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    pairs = keys[first]
    del keys, first
    pairs //= width
    out: IntArray = np.bincount(pairs, minlength=n_groups).astype(np.int64)
    return out


def unique_ints(values: CodeArray) -> CodeArray:
    """Return the sorted distinct values of an int array (sort-based; faster than hashing here)."""
    ordered: CodeArray = np.sort(values)
    if ordered.size == 0:
        return ordered
    keep = np.empty(ordered.size, dtype=np.bool_)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    out: CodeArray = ordered[keep]
    return out
