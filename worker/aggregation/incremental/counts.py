"""Incremental states of kpi and day_time_heatmap (see ``worker.aggregation.incremental.core``). Pure: no I/O."""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.aggregation.common import Output, unique_ints
from worker.aggregation.counts import heatmap_data, kpi_data, kpi_period_spans
from worker.aggregation.frame import IntArray
from worker.aggregation.incremental.core import IncrementalState, RenderContext, SliceTail, StableCodes
from worker.aggregation.slices import Slice

__all__ = ["INCREMENTAL", "KpiState", "HeatmapState"]


class KpiState:
    """``kpi``: counts, distinct counts (new keys found by ``LastSeen``), the last active day, the
    total estimated watch time (ms) and the base views of the period spans of the state's day."""

    def __init__(
        self,
        counts: dict[str, Any],
        last_day: int,
        estimated_ms: int,
        spans: list[tuple[int, int]],
        period_views: list[int],
    ) -> None:
        self.counts = counts
        self.last_day = last_day
        self.estimated_ms = estimated_ms
        self.spans = spans
        self.period_views = period_views

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes) -> KpiState:
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
            int(view.day[-1]) if view.n else -1,
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
        days = tail.day
        c["activeDays"] += int(unique_ints(days[days > self.last_day]).size)
        self.last_day = int(days[-1])
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
    def from_slice(cls, view: Slice, codes: StableCodes) -> HeatmapState:
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


INCREMENTAL: dict[str, type[IncrementalState]] = {"kpi": KpiState, "day_time_heatmap": HeatmapState}
"""Aggregation type → its incremental state class."""
