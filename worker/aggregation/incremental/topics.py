"""Incremental states of the topics family (see worker.aggregation.incremental.core). Pure: no I/O.

topics_leaderboard, topic_evolution and topic_diversity are counts of the slice's views per topic
(and per month) plus, for the first two, counts of the base's views in windows fixed by the clock
and the timeframe: each appended view adds to them, nothing is ever taken away. The states hold
those integer counts; the rendering code that turns them into the stored shape is the full
functions' own (``worker.aggregation.topics``).
"""

from __future__ import annotations

import numpy as np

from worker.aggregation.channels import recent_windows
from worker.aggregation.common import MonthAxis, Output, code_counts, month_axis
from worker.aggregation.frame import CodeArray, IntArray
from worker.aggregation.incremental.core import IncrementalState, RenderContext, SliceTail, StableCodes
from worker.aggregation.incremental.shared import SliceShared
from worker.aggregation.slices import Slice
from worker.aggregation.topics import (
    leaderboard_windows,
    topic_diversity_data,
    topic_evolution_data,
    topics_leaderboard_data,
)

__all__ = ["INCREMENTAL", "TopicDiversityState", "TopicEvolutionState", "TopicsLeaderboardState"]

_OBJECT_BYTES = 256
"""Rough bytes of a state object with its few Python ints and tuples (besides its arrays)."""


class TopicsLeaderboardState:
    """``topics_leaderboard``: views per topic of the slice and of the base in the two comparison
    windows (fixed by the clock's day and the timeframe: ``leaderboard_windows``).

    Attributes:
        total: Views of the slice.
        views: Views per topic code in the slice, int64 (k,).
        window: Base views per topic code at or after the current window's start, int64 (k,).
        previous: Base views per topic code in the previous window, int64 (k,).
        windows: (days, current start, previous start); starts epoch ms UTC.
    """

    def __init__(
        self, total: int, views: IntArray, window: IntArray, previous: IntArray, windows: tuple[int, int, int]
    ) -> None:
        self.total = total
        self.views = views
        self.window = window
        self.previous = previous
        self.windows = windows

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> TopicsLeaderboardState:
        """Build the state of the whole slice (one pass over the slice and the base)."""
        k = len(view.frame.topic_slugs)
        windows = leaderboard_windows(view.window, view.clock)
        _, current_start, previous_start = windows
        lo, mid = np.searchsorted(view.base_ts, [previous_start, current_start], side="left")
        base_topic = view.base_topic
        return cls(
            view.n,
            view.topic_views.copy(),
            code_counts(base_topic[int(mid) :], k),
            code_counts(base_topic[int(lo) : int(mid)], k),
            windows,
        )

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views: the slice's to the topic views, the base's to the windows."""
        base = tail.base
        if base.size:
            k = int(self.views.size)
            _, current_start, previous_start = self.windows
            lo, mid = np.searchsorted(base.ts, [previous_start, current_start], side="left")
            self.previous += code_counts(base.topic[int(lo) : int(mid)], k)
            self.window += code_counts(base.topic[int(mid) :], k)
        if tail.n:
            self.total += tail.n
            self.views += code_counts(tail.topic, int(self.views.size))

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``topics_leaderboard`` output."""
        data = topics_leaderboard_data(
            ctx.frame.topic_slugs, self.total, self.views, self.window, self.previous, self.windows
        )
        return data, "day"

    @property
    def nbytes(self) -> int:
        """Return the bytes held (three (k,) arrays and a few ints)."""
        return int(self.views.nbytes + self.window.nbytes + self.previous.nbytes) + _OBJECT_BYTES


class MonthTopicCounts:
    """Views per (local month, topic code) of a slice over the months its month axis can still show.

    The slice's month axis (``month_axis(s.month, months_cap)``) depends only on the slice's first
    and last months; an append can only lower the first (never in practice: views are appended in
    time order) and raise the last, so the axis's first month never decreases and the months before
    it are dropped for good.

    Attributes:
        views: Views per topic code in the slice (unclassified not counted), int64 (k,).
        first_month: The slice's first local month index (None while the slice is empty).
        last_month: Its last local month index (None while empty).
        start: Month index of ``counts``' first row.
        counts: Views per (month ``start + row``, topic code), int64 (rows, k), rows ≥ the axis's
            months; months before the axis are not counted.
        cap: ``AggregationOptions.months_cap``.
    """

    def __init__(
        self,
        views: IntArray,
        first_month: int | None,
        last_month: int | None,
        start: int,
        counts: IntArray,
        cap: int,
    ) -> None:
        self.views = views
        self.first_month = first_month
        self.last_month = last_month
        self.start = start
        self.counts = counts
        self.cap = cap

    @classmethod
    def of(cls, view: Slice) -> MonthTopicCounts:
        """Count the whole slice (one pass)."""
        k = len(view.frame.topic_slugs)
        cap = view.options.months_cap
        month, topic = view.month, view.topic
        axis = month_axis(month, cap)
        counts = np.zeros((axis.size, k), dtype=np.int64)
        if axis.size:
            off = month.astype(np.int64) - axis.first
            sel = (topic >= 0) & (off >= 0)
            counts = np.bincount(off[sel] * k + topic[sel], minlength=axis.size * k).reshape(axis.size, k)
            counts = counts.astype(np.int64, copy=False)
        first = int(month.min()) if view.n else None
        last = int(month.max()) if view.n else None
        return cls(view.topic_views.copy(), first, last, axis.first, counts, cap)

    def axis(self) -> MonthAxis:
        """Return the slice's month axis (``month_axis`` of its months: only the first and last matter)."""
        if self.first_month is None or self.last_month is None:
            return month_axis(np.zeros(0, dtype=np.int64), self.cap)
        return month_axis(np.array([self.first_month, self.last_month], dtype=np.int64), self.cap)

    def add(self, month: IntArray, topic: IntArray) -> None:
        """Add appended views of the slice (local month indices and topic codes, (n,) each)."""
        if month.size == 0:
            return
        k = int(self.views.size)
        low, high = int(month.min()), int(month.max())
        self.first_month = low if self.first_month is None else min(self.first_month, low)
        self.last_month = high if self.last_month is None else max(self.last_month, high)
        axis = self.axis()
        rows = int(self.counts.shape[0])
        if axis.first != self.start or axis.size != rows:  # the axis moved: keep the rows of its months
            counts = np.zeros((axis.size, k), dtype=np.int64)
            lo, hi = max(axis.first, self.start), min(axis.last + 1, self.start + rows)
            if hi > lo:
                counts[lo - axis.first : hi - axis.first] = self.counts[lo - self.start : hi - self.start]
            self.start, self.counts = axis.first, counts
        sel = (topic >= 0) & (month >= axis.first)
        np.add.at(self.counts, (month[sel] - self.start, topic[sel]), 1)
        self.views += code_counts(topic, k)

    def matrix(self, axis: MonthAxis) -> IntArray:
        """Return the counts of the axis' months, a C-contiguous int64 (axis.size, k) array."""
        lo = axis.first - self.start
        out: IntArray = np.ascontiguousarray(self.counts[lo : lo + axis.size])
        return out

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return int(self.views.nbytes + self.counts.nbytes) + _OBJECT_BYTES


class TopicEvolutionState:
    """``topic_evolution``: views per (month, topic) of the slice and base views per topic in the two
    trend windows (fixed by the clock's month: ``recent_windows``).

    Attributes:
        months: The slice's counts per month and topic.
        recent: Base views per topic code in the recent trend window, int64 (k,).
        previous: Base views per topic code in the previous trend window, int64 (k,).
        windows: (previous start, recent start, current) local month indices.
    """

    def __init__(
        self, months: MonthTopicCounts, recent: IntArray, previous: IntArray, windows: tuple[int, int, int]
    ) -> None:
        self.months = months
        self.recent = recent
        self.previous = previous
        self.windows = windows

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> TopicEvolutionState:
        """Build the state of the whole slice (one pass over the slice and the base)."""
        windows = recent_windows(view)
        recent, previous = _trend_counts(view.base_month, view.base_topic, windows, len(view.frame.topic_slugs))
        return cls(MonthTopicCounts.of(view), recent, previous, windows)

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views: the slice's to the monthly counts, the base's to the trend windows."""
        base = tail.base
        if base.size:
            recent, previous = _trend_counts(base.month, base.topic, self.windows, int(self.recent.size))
            self.recent += recent
            self.previous += previous
        if tail.n:
            self.months.add(tail.month, tail.topic)

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``topic_evolution`` output."""
        m = self.months
        axis = m.axis()
        monthly = m.matrix(axis).T  # (k, axis.size): integer counts, read by index only
        data = topic_evolution_data(
            ctx.frame.topic_slugs, m.views, monthly, axis, self.recent, self.previous, self.windows
        )
        return data, "month"

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return self.months.nbytes + int(self.recent.nbytes + self.previous.nbytes) + _OBJECT_BYTES


def _trend_counts(
    month: CodeArray, topic: CodeArray, windows: tuple[int, int, int], k: int
) -> tuple[IntArray, IntArray]:
    """Return base views per topic code in the recent and the previous trend window ((k,) each)."""
    prev_start, recent_start, current = windows
    in_recent = (month >= recent_start) & (month <= current)
    in_previous = (month >= prev_start) & (month < recent_start)
    return code_counts(topic[in_recent], k), code_counts(topic[in_previous], k)


class TopicDiversityState:
    """``topic_diversity``: views per topic and per (month, topic) of the slice; the entropies are
    computed at render by the full function's code from the same integer matrix."""

    def __init__(self, months: MonthTopicCounts) -> None:
        self.months = months

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> TopicDiversityState:
        """Build the state of the whole slice (one pass)."""
        return cls(MonthTopicCounts.of(view))

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views of the slice."""
        if tail.n:
            self.months.add(tail.month, tail.topic)

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``topic_diversity`` output."""
        m = self.months
        axis = m.axis()
        return topic_diversity_data(m.views, m.matrix(axis), axis), "window"

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return self.months.nbytes + _OBJECT_BYTES


INCREMENTAL: dict[str, type[IncrementalState]] = {
    "topics_leaderboard": TopicsLeaderboardState,
    "topic_evolution": TopicEvolutionState,
    "topic_diversity": TopicDiversityState,
}
"""Aggregation type → its incremental state class."""
