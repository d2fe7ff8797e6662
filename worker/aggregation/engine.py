"""Entry point of the aggregation engine: events → one result per (filter set, type). Pure: no I/O.

The engine never reads a clock: "now" is the ``now_ms`` argument, so the same arguments always give
the same results, whatever the order of ``events``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.aggregation import channels, counts, sessions, topics
from worker.aggregation.common import Dependency, Output
from worker.aggregation.derived import DerivedState
from worker.aggregation.filters import FilterSet, filter_mask, group_by_base
from worker.aggregation.frame import CodeArray, Frame, IntArray, build_frame
from worker.aggregation.incremental import REGISTRY
from worker.aggregation.incremental.base import open_base
from worker.aggregation.options import AggregationOptions
from worker.aggregation.slices import Slice, take_rows
from worker.aggregation.timeframes import Clock, Window, load_zone, make_clock, resolve_window
from worker.models import WatchEvent

__all__ = [
    "AGGREGATION_TYPES",
    "DEFINITION_VERSION",
    "AggregationResult",
    "compute_aggregations",
    "compute_from_frame",
]

DEFINITION_VERSION = 1
"""Version of the definitions in docs/aggregations.md; bump on any change of a stored shape or formula."""

_REGISTRY: dict[str, Callable[[Slice], Output]] = {
    "kpi": counts.kpi,
    "monthly_trend": counts.monthly_trend,
    "top_channels": counts.top_channels,
    "day_time_heatmap": counts.day_time_heatmap,
    "topics_leaderboard": topics.topics_leaderboard,
    "session_analysis": sessions.session_analysis,
    "viewing_patterns": sessions.viewing_patterns,
    "channel_metrics": channels.channel_metrics,
    "channel_relationships": channels.channel_relationships,
    "channel_evolution": channels.channel_evolution,
    "topic_evolution": topics.topic_evolution,
    "topic_engagement": topics.topic_engagement,
    "topic_discovery": topics.topic_discovery,
    "topic_diversity": topics.topic_diversity,
}

AGGREGATION_TYPES: tuple[str, ...] = tuple(_REGISTRY)
"""The catalogue, in docs/architecture.md order (also the order of results per filter set)."""


@dataclass(frozen=True)
class AggregationResult:
    """One materialized aggregate, ready for ``worker:storeAggregations``.

    Attributes:
        type: One of ``AGGREGATION_TYPES``.
        filter_key: ``FilterSet.key`` of the filter set it was computed for.
        data: A valid Convex value (camelCase ASCII keys, no NaN/inf, arrays ≤ 8192, < 1 MiB).
        valid_until_ms: First instant (epoch ms UTC) at which the result would change without new
            data (timeframe start moving, next local midnight or month), or None when it never would.
        definition_version: ``DEFINITION_VERSION`` at computation time.
    """

    type: str
    filter_key: str
    data: dict[str, Any]
    valid_until_ms: int | None
    definition_version: int


_ROWS_PER_CHUNK = 1 << 18
"""Frame rows scanned at once when listing a filter's rows (bounds the int64 temporaries)."""


def _base_indices(frame: Frame, fs: FilterSet) -> CodeArray:
    if fs.product == "all" and not fs.topics and not fs.channels:
        return np.arange(frame.size, dtype=np.int32 if frame.size < 2**31 else np.int64)  # every row
    mask = filter_mask(frame, fs)
    # int32 row numbers when they fit (half the size of the base's index and of its suffixes),
    # found chunk by chunk so that the int64 row numbers np.flatnonzero returns stay chunk-sized
    out: CodeArray = np.empty(int(np.count_nonzero(mask)), dtype=np.int32 if frame.size < 2**31 else np.int64)
    pos = 0
    for lo in range(0, frame.size, _ROWS_PER_CHUNK):
        rows = np.flatnonzero(mask[lo : lo + _ROWS_PER_CHUNK])
        rows += lo
        out[pos : pos + rows.size] = rows
        pos += rows.size
    return out


def _valid_until(window_change_ms: int | None, dependency: Dependency, clock: Clock) -> int | None:
    candidates = [t for t in (window_change_ms,) if t is not None]
    if dependency == "day":
        candidates.append(clock.next_midnight_ms)
    elif dependency == "month":
        candidates.append(clock.next_month_ms)
    return min(candidates) if candidates else None


def _wanted_types(types: Sequence[str] | None) -> tuple[str, ...]:
    if types is None:
        return AGGREGATION_TYPES
    unknown = sorted(set(types) - set(AGGREGATION_TYPES))
    if unknown:
        raise ValueError(f"types: unknown aggregation type(s) {unknown}")
    return tuple(t for t in AGGREGATION_TYPES if t in set(types))


def compute_aggregations(
    events: Sequence[WatchEvent],
    *,
    now_ms: int,
    time_zone: str,
    filter_sets: Sequence[FilterSet],
    types: Sequence[str] | None = None,
    options: AggregationOptions | None = None,
) -> list[AggregationResult]:
    """Compute aggregations of one user's history for each filter set.

    Args:
        events: The user's views, any order; duplicate ``dedupe_key``s counted once.
        now_ms: The instant of computation, epoch ms UTC (timeframes, "today", "last 30 days").
        time_zone: The user's IANA zone; every date, month, weekday and hour is local to it.
        filter_sets: Filter sets to compute; duplicates (same key) are computed once.
        types: Aggregation types to compute (default: all of ``AGGREGATION_TYPES``), any order.
        options: Thresholds (default ``AggregationOptions()``).

    Returns:
        One result per (distinct filter set, type): filter sets in first-occurrence order, types in
        ``AGGREGATION_TYPES`` order. Empty history → zeroed results.

    Raises:
        ValueError: unknown ``time_zone`` or type, ``now_ms``/``watched_at_ms`` out of range
            (the message names the argument).
    """
    opts = options if options is not None else AggregationOptions()
    wanted = _wanted_types(types)
    zone = load_zone(time_zone)
    clock = make_clock(now_ms, zone, opts.recent_days)
    return _compute(build_frame(events, zone), clock, filter_sets, wanted, opts)


def compute_from_frame(
    frame: Frame,
    *,
    now_ms: int,
    time_zone: str,
    filter_sets: Sequence[FilterSet],
    types: Sequence[str] | None = None,
    options: AggregationOptions | None = None,
    derived: DerivedState | None = None,
) -> list[AggregationResult]:
    """Compute aggregations from an already built frame (e.g. merged month partitions).

    ``compute_from_frame(build_frame(events, zone), ...)`` equals ``compute_aggregations(events,
    ...)``; the frame must have been built in ``time_zone``.

    Args:
        frame: The user's encoded history (``build_frame`` or ``merge_partitions``).
        now_ms: The instant of computation, epoch ms UTC.
        time_zone: The IANA zone the frame was built in.
        filter_sets: Filter sets to compute; duplicates (same key) are computed once.
        types: Aggregation types to compute (default: all of ``AGGREGATION_TYPES``), any order.
        options: Thresholds (default ``AggregationOptions()``).
        derived: State kept with ``frame`` between recomputes (:class:`DerivedState`): each base's
            session pairs are taken from it, or extended from the previous frame's, and retained
            in it. Results are the same with or without it; a state of another frame is ignored.

    Returns:
        As :func:`compute_aggregations`.

    Raises:
        ValueError: unknown ``time_zone`` or type, ``now_ms`` out of range.
    """
    opts = options if options is not None else AggregationOptions()
    wanted = _wanted_types(types)
    clock = make_clock(now_ms, load_zone(time_zone), opts.recent_days)
    return _compute(frame, clock, filter_sets, wanted, opts, derived)


def _compute(
    frame: Frame,
    clock: Clock,
    filter_sets: Sequence[FilterSet],
    wanted: tuple[str, ...],
    opts: AggregationOptions,
    derived: DerivedState | None = None,
) -> list[AggregationResult]:
    # Filter sets differing only in timeframe share the base (filter over the whole history) and its
    # derived columns; a timeframe whose window selects the same views as the previous one (e.g.
    # YTD and Last6M in June) shares every derived array. Filter sets are computed base by base,
    # so only one base's arrays are alive at a time; results keep the first-occurrence order.
    order = dict.fromkeys(fs.key for fs in filter_sets)
    by_key: dict[str, list[AggregationResult]] = {}
    # The append fast path (worker.aggregation.incremental) for a state extended by an append: the
    # types it implements come from their states, the others from the slices as below.
    fast = (
        derived is not None
        and derived.incremental
        and derived.frame is frame
        and derived.epoch > 0
        and any(t in REGISTRY for t in wanted)
    )
    for group in group_by_base(filter_sets):
        windows = [resolve_window(fs.timeframe, clock) for fs in group]
        views = _BaseViews(frame, group, windows, clock, opts, derived)
        run = None
        if fast and derived is not None:
            codes, origin = derived.codes()
            run = open_base(
                derived.bases,
                group[0],
                frame=frame,
                epoch=derived.epoch,
                codes=codes,
                codes_origin=origin,
                clock=clock,
                options=opts,
                parent_serial=derived.parent_serial,
            )
        for i, (fs, window) in enumerate(zip(group, windows, strict=True)):
            results = by_key[fs.key] = []
            for name in wanted:
                cls = REGISTRY.get(name) if run is not None else None
                if run is not None and cls is not None:
                    data, dependency = run.result(fs, window, name, cls, functools.partial(views.view, i))
                else:
                    data, dependency = _REGISTRY[name](views.view(i))
                results.append(
                    AggregationResult(
                        type=name,
                        filter_key=fs.key,
                        data=data,
                        valid_until_ms=_valid_until(window.next_change_ms, dependency, clock),
                        definition_version=DEFINITION_VERSION,
                    )
                )
        if run is not None:
            run.finish()
        del views  # the base's arrays are freed before the next base is gathered
    return [r for key in order for r in by_key[key]]


class _BaseViews:
    """The slices of one filter base's sets, built on first use (the fast path may need none).

    The engine asks for them in order; only the newest is kept (with the base's arrays), so a
    timeframe's derived arrays are freed once the next timeframe is computed, as before the fast path.
    """

    def __init__(
        self,
        frame: Frame,
        group: list[FilterSet],
        windows: list[Window],
        clock: Clock,
        opts: AggregationOptions,
        derived: DerivedState | None,
    ) -> None:
        self.frame, self.group, self.windows, self.clock, self.opts, self.derived = (
            frame,
            group,
            windows,
            clock,
            opts,
            derived,
        )
        self._base: tuple[CodeArray, IntArray, list[int], bool] | None = None
        self._last: tuple[int, int, Slice] | None = None  # (set index, start, slice)

    def view(self, i: int) -> Slice:
        """Return the slice of the base's ``i``-th filter set (``i`` never below an earlier call's)."""
        if self._last is not None and self._last[0] == i:
            return self._last[2]
        if self._last is not None and self._last[0] > i:
            raise ValueError(f"i: slices are built in order, {i} after {self._last[0]}")
        if self._base is None:
            self._base = self._gather()
        base, base_ts, starts, derive = self._base
        frame, derived = self.frame, self.derived
        provider = None
        if derived is not None and derived.frame is frame:
            key = (self.group[0].product, self.group[0].topics, self.group[0].channels)
            provider = functools.partial(derived.session_pairs, key)
        start = starts[i]
        previous = self._last
        # a timeframe whose window selects the same views as the previous one shares its arrays
        same_views = previous is not None and previous[1] == start
        idx = previous[2].idx if previous is not None and same_views else (base if start == 0 else base[start:])
        view = Slice(
            frame,
            idx,
            base,
            self.clock,
            self.windows[i],
            self.opts,
            start=start,
            base_ts=base_ts,
            derive_co_sessions=derive,
            pairs_provider=provider,
        )
        if previous is not None:
            view.share_derived(previous[2])
        self._last = (i, start, view)
        return view

    def _gather(self) -> tuple[CodeArray, IntArray, list[int], bool]:
        # Filter sets differing only in timeframe share the base (filter over the whole history) and
        # its derived columns, gathered once.
        base = _base_indices(self.frame, self.group[0])
        base_ts = take_rows(self.frame.ts, base)
        starts = [
            0 if w.start_ms is None else int(np.searchsorted(base_ts, w.start_ms, side="left")) for w in self.windows
        ]
        # co-sessions come from the base's sessions when its timeframes hold at least as many views
        derive = sum(base.size - start for start in starts) >= base.size
        return base, base_ts, starts, derive
