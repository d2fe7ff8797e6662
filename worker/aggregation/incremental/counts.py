"""Incremental states of kpi, monthly_trend, top_channels and day_time_heatmap (see
``worker.aggregation.incremental.core``). Pure: no I/O."""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.aggregation.common import Output, bincount, distinct_per_group, month_axis
from worker.aggregation.counts import (
    heatmap_data,
    kpi_data,
    kpi_period_spans,
    monthly_trend_data,
    top_channels_data,
)
from worker.aggregation.frame import IntArray
from worker.aggregation.incremental.core import IncrementalState, RenderContext, SliceTail, StableCodes
from worker.aggregation.incremental.shared import ChannelViews, SliceShared
from worker.aggregation.slices import Slice

__all__ = ["INCREMENTAL", "KpiState", "HeatmapState", "MonthlyTrendState", "TopChannelsState"]


class KpiState:
    """``kpi``: counts, distinct counts (new keys found by ``LastSeen``), the last active day, the
    total estimated watch time (ms) and the base views of the period spans of the state's day."""

    def __init__(
        self,
        counts: dict[str, Any],
        estimated_ms: int,
        spans: list[tuple[int, int]],
        period_views: list[int],
    ) -> None:
        self.counts = counts
        self.estimated_ms = estimated_ms
        self.spans = spans
        self.period_views = period_views

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> KpiState:
        """Build the state of the whole slice."""
        data, _ = _full_kpi(view)
        counts = {
            k: data[k]
            for k in (
                "views",
                "removedViews",
                "uniqueVideos",
                "uniqueChannels",
                "activeDays",
                "firstViewMs",
                "lastViewMs",
            )
        }
        spans = kpi_period_spans(view.clock)
        return cls(
            counts,
            int(view.sessions.estimated_ms.sum()),
            spans,
            [view.base_views_between(a, b) for a, b in spans],
        )

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views."""
        base = tail.base
        if base.size:
            day = base.day
            for i, (a, b) in enumerate(self.spans):
                self.period_views[i] += int(np.count_nonzero((day >= a) & (day <= b)))
        if tail.n == 0:
            return
        c = self.counts
        floor = tail.window_floor
        c["views"] += tail.n
        c["removedViews"] += int(np.count_nonzero(tail.removed))
        c["uniqueVideos"] += int(np.count_nonzero(tail.last_seen("video") < floor))
        c["uniqueChannels"] += int(np.count_nonzero(tail.last_seen("channel") < floor))
        # a local day can repeat after a later one (a clock change back across midnight): new days
        # are the ones the slice has not had, not the ones after its last
        c["activeDays"] += int(np.count_nonzero(tail.last_seen("day") < floor))
        if c["firstViewMs"] is None:
            c["firstViewMs"] = int(tail.ts[0])
        c["lastViewMs"] = int(tail.ts[-1])
        self.estimated_ms += int(tail.estimated_ms.sum()) + tail.prev_last_estimate_delta_ms

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``kpi`` output."""
        return kpi_data(dict(self.counts), self.estimated_ms, list(self.period_views), ctx.clock, ctx.options), "day"

    @property
    def nbytes(self) -> int:
        """Return the bytes held (a few Python ints)."""
        return 1024


def _full_kpi(view: Slice) -> Output:
    from worker.aggregation.counts import kpi

    return kpi(view)


class HeatmapState:
    """``day_time_heatmap``: the 168 (weekday, hour) counts."""

    def __init__(self, counts: IntArray, views: int) -> None:
        self.counts = counts
        self.views = views

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> HeatmapState:
        """Build the state of the whole slice."""
        cell = view.weekday.astype(np.intp) * 24 + view.hour
        return cls(np.bincount(cell, minlength=168).astype(np.int64), view.n)

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views."""
        if tail.n:
            np.add.at(self.counts, tail.weekday * 24 + tail.hour, 1)
            self.views += tail.n

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``day_time_heatmap`` output."""
        return heatmap_data(self.counts, self.views), "window"

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return int(self.counts.nbytes)


class MonthlyTrendState:
    """``monthly_trend``: views, distinct videos and distinct channels per local month of the slice.

    Attributes:
        first: Month index (year*12 + month−1) of the slice's first local month: the arrays' index 0
            (0 when empty).
        views: Views per month ``first …`` the slice's last month (m,), int64.
        videos: Distinct videos per month (m,), int64; an appended view counts when its
            (video, month) key is new to the slice (``LastSeen`` kind ``video_month``).
        channels: Distinct channels per month (m,), int64 (kind ``channel_month``).
    """

    def __init__(self, first: int, views: IntArray, videos: IntArray, channels: IntArray) -> None:
        self.first = first
        self.views = views
        self.videos = videos
        self.channels = channels

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> MonthlyTrendState:
        """Build the state of the whole slice (distinct counts do not depend on the codes)."""
        if view.n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return cls(0, empty, empty.copy(), empty.copy())
        month = view.month
        first, last = int(month.min()), int(month.max())
        size = last - first + 1
        off = month.astype(np.int64) - first
        return cls(
            first,
            bincount(month, size, shift=-first),
            distinct_per_group(off, view.video, size),
            distinct_per_group(off, view.channel, size),
        )

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views (the month range widens to theirs first)."""
        if tail.n == 0:
            return
        month = tail.month
        self._cover(int(month.min()), int(month.max()))
        off = month - self.first
        np.add.at(self.views, off, 1)
        floor = tail.window_floor
        np.add.at(self.videos, off[tail.last_seen("video_month") < floor], 1)
        np.add.at(self.channels, off[tail.last_seen("channel_month") < floor], 1)

    def _cover(self, lo: int, hi: int) -> None:
        """Widen the arrays (zeros) to cover months ``lo … hi`` too (at most once per new month)."""
        size = int(self.views.shape[0])
        if size == 0:
            self.first = lo
        start = min(lo, self.first)
        end = max(hi, self.first + size - 1)
        before, after = self.first - start, end - (self.first + size - 1)
        if before or after:
            self.views, self.videos, self.channels = (
                np.concatenate((np.zeros(before, dtype=np.int64), a, np.zeros(after, dtype=np.int64)))
                for a in (self.views, self.videos, self.channels)
            )
            self.first = start

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``monthly_trend`` output (cost: the months listed)."""
        size = int(self.views.shape[0])
        bounds = np.array([self.first, self.first + size - 1] if size else [], dtype=np.int64)
        axis = month_axis(bounds, ctx.options.months_cap)
        skip = axis.first - self.first if size else 0
        return monthly_trend_data(axis, self.views[skip:], self.videos[skip:], self.channels[skip:]), "window"

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return int(self.views.nbytes + self.videos.nbytes + self.channels.nbytes)


class TopChannelsState:
    """``top_channels``: the ranking's first ``top_n`` channels, over the slice's views per channel.

    Appends only add views, so the first ``cap`` channels after an append are among the first ``cap``
    before it and the channels the append gave views to: any other channel has the views it had, and
    the ``cap`` channels ranked above it before still are (ids keep their relative order when new
    ones arrive). ``extend`` re-ranks just those, ``render`` lists them: no pass over the channels.

    Attributes:
        channel_views: The slice's views per channel (shared with the slice's other states).
        top: Stable codes of the first ``cap`` channels with views, by views desc then channel id asc
            (≤ cap,), int64; ids compared through the codes of the frame last extended to (the render's).
        total: Views of the slice.
        cap: ``AggregationOptions.top_n``.
    """

    def __init__(self, channel_views: ChannelViews, top: IntArray, total: int, cap: int) -> None:
        self.channel_views = channel_views
        self.top = top
        self.total = total
        self.cap = cap

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> TopChannelsState:
        """Build the state of the whole slice."""
        cap = view.options.top_n
        channel_views = (shared or SliceShared(0)).channel_views_of(view, codes)
        return cls(channel_views, codes.channel[view.channel_ranking[:cap]], view.n, cap)

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views and re-rank the previous first channels with the ones they viewed."""
        if tail.n == 0:
            return
        self.total += tail.n
        viewed = self.channel_views.add(tail)
        if viewed.size == 0:
            return
        candidates = np.union1d(self.top, viewed)
        order = np.lexsort((tail.base.codes.channel_code[candidates], -self.channel_views.views[candidates]))
        self.top = candidates[order[: self.cap]]

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``top_channels`` output (cost: the channels listed)."""
        cv = self.channel_views
        views = cv.views
        top = [(ctx.channel_id(c), ctx.channel_name(c), int(views[c])) for c in self.top.tolist()]
        return top_channels_data(self.total, cv.attributed, cv.channel_count, top, self.cap), "window"

    @property
    def nbytes(self) -> int:
        """Return the bytes held (not the views per channel: the slice's, counted with it)."""
        return int(self.top.nbytes) + 128


INCREMENTAL: dict[str, type[IncrementalState]] = {
    "kpi": KpiState,
    "monthly_trend": MonthlyTrendState,
    "top_channels": TopChannelsState,
    "day_time_heatmap": HeatmapState,
}
"""Aggregation type → its incremental state class."""
