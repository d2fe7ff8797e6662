"""Session aggregations: session_analysis, viewing_patterns. Pure: no I/O.

Sessions are computed on the filtered views of the slice (a product/topic/channel filter changes
the sessions), and a session crossing the timeframe start is cut at it. Definitions:
docs/aggregations.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.aggregation.common import Output, num, ratio, unique_ints
from worker.aggregation.frame import IntArray
from worker.aggregation.options import AggregationOptions
from worker.aggregation.slices import Slice

__all__ = [
    "OrderStats",
    "PatternCounts",
    "order_stats",
    "session_analysis",
    "session_analysis_data",
    "viewing_patterns",
    "viewing_patterns_data",
]

_MINUTE_MS = 60_000


OrderStats = tuple[int, int, int, int]
"""``(total, lower middle, upper middle, maximum)`` of per-session integers; the middles are the
order statistics at ``(count − 1) // 2`` and ``count // 2`` (equal for an odd count), all 0 when
there is no session."""


def order_stats(values: IntArray) -> OrderStats:
    """Return the :data:`OrderStats` of per-session integers (s,) (a partition, as ``np.median``)."""
    count = int(values.size)
    if count == 0:
        return 0, 0, 0, 0
    half = count // 2
    kth = [half - 1, half] if count % 2 == 0 else [half]
    part = np.partition(values, kth)
    return int(values.sum()), int(part[(count - 1) // 2]), int(part[half]), int(values.max())


def _stats(stats: OrderStats, count: int, scale: float) -> tuple[float | None, float | None, float | None]:
    """Return (mean, median, max) / ``scale`` of ``count`` sessions, None when there is none.

    The floats are numpy's ``mean``, ``median`` and ``max`` of the values: the mean is the float64
    sum (exact: totals stay below 2**53) over the count, the median of an even count the float64
    sum of the two middle values halved.
    """
    if count == 0:
        return None, None, None
    total, low, high, top = stats
    median = float(low) if low == high else (float(low) + float(high)) / 2
    return num(float(total) / count / scale), num(median / scale), num(float(top) / scale)


def session_analysis(s: Slice) -> Output:
    """Session counts and length statistics of the slice.

    Shape: ``{sessionCount, views, meanViews, medianViews, maxViews, meanSpanMinutes,
    medianSpanMinutes, maxSpanMinutes, meanEstimatedMinutes, medianEstimatedMinutes,
    maxEstimatedMinutes, bingeSessions, bingeSessionShare, bingeViews, bingeViewShare,
    sessionsByStartHour[24], thresholds{…}}``. Span = last − first view instant (measured);
    estimated minutes = sum of the per-view watch-time estimates (see kpi). Stats are null when empty.
    """
    ses = s.sessions
    by_hour = np.bincount(s.hour[ses.starts], minlength=24) if ses.count else np.zeros(24, dtype=np.int64)
    data = session_analysis_data(
        ses.count,
        s.n,
        (order_stats(ses.views), order_stats(ses.span_ms), order_stats(ses.estimated_session_ms)),
        int(np.count_nonzero(ses.binge)),
        int(ses.views[ses.binge].sum()),
        by_hour,
        s.options,
    )
    return data, "window"


def session_analysis_data(
    count: int,
    views: int,
    stats: tuple[OrderStats, OrderStats, OrderStats],
    binge_sessions: int,
    binge_views: int,
    by_hour: IntArray,
    opts: AggregationOptions,
) -> dict[str, Any]:
    """Return the stored ``session_analysis`` shape.

    Args:
        count: Sessions of the slice.
        views: Views of the slice.
        stats: :data:`OrderStats` of the sessions' views, spans (ms) and estimated watch times (ms).
        binge_sessions: Binge sessions.
        binge_views: Views in binge sessions.
        by_hour: Sessions per local hour of their first view (24,).
        opts: Thresholds.
    """
    mean_v, median_v, max_v = _stats(stats[0], count, 1.0)
    mean_s, median_s, max_s = _stats(stats[1], count, _MINUTE_MS)
    mean_e, median_e, max_e = _stats(stats[2], count, _MINUTE_MS)
    return {
        "sessionCount": count,
        "views": views,
        "meanViews": mean_v,
        "medianViews": median_v,
        "maxViews": max_v,
        "meanSpanMinutes": mean_s,
        "medianSpanMinutes": median_s,
        "maxSpanMinutes": max_s,
        "meanEstimatedMinutes": mean_e,
        "medianEstimatedMinutes": median_e,
        "maxEstimatedMinutes": max_e,
        "bingeSessions": binge_sessions,
        "bingeSessionShare": ratio(binge_sessions, count),
        "bingeViews": binge_views,
        "bingeViewShare": ratio(binge_views, views),
        "sessionsByStartHour": [int(x) for x in by_hour],
        "thresholds": {
            "sessionGapMinutes": num(opts.session_gap_ms / _MINUTE_MS),
            "bingeMinViews": opts.binge_min_views,
            "bingeMinSpanMinutes": num(opts.binge_min_span_ms / _MINUTE_MS),
            "watchTimeCapMinutes": num(opts.watch_time_cap_ms / _MINUTE_MS),
            "lastViewEstimateMinutes": num(opts.last_view_estimate_ms / _MINUTE_MS),
        },
    }


# (label, threshold, rationale) — the rationale is repeated in docs/aggregations.md.
NIGHT_HOURS = (22, 23, 0, 1, 2, 3)
EARLY_HOURS = (5, 6, 7, 8)
NIGHT_OWL_MIN_SHARE = 0.25  # = 6/24: at least as much as a uniform spread over the clock would put there
EARLY_BIRD_MIN_SHARE = 4 / 24  # same uniform-clock baseline for the 4 early hours
WEEKEND_MIN_SHARE = 0.40  # uniform baseline is 2/7 ≈ 0.286; 0.40 ⇒ weekend days ≥ 1.67× a weekday
BINGE_VIEWER_MIN_SHARE = 0.50  # at least half of the views inside binge sessions
STEADY_MIN_ACTIVE_DAY_RATIO = 0.50  # active on at least every other day …
STEADY_MIN_SPAN_DAYS = 28  # … over at least four weeks
EXPLORER_MIN_CHANNELS_PER_VIEW = 0.50  # a new channel at least every second attributed view
LOYALIST_TOP_CHANNELS = 5
LOYALIST_MIN_SHARE = 0.50  # the top 5 channels hold at least half of the attributed views


def _label(name: str, value: float | None, threshold: float, enough: bool, evidence: dict[str, Any]) -> dict[str, Any]:
    return {
        "label": name,
        "matched": bool(enough and value is not None and value >= threshold),
        "value": None if value is None else num(value),
        "threshold": num(threshold),
        "evidence": evidence,
    }


def viewing_patterns(s: Slice) -> Output:
    """Behaviour labels, each with the measured value, its threshold and the evidence counts.

    Shape: ``{views, minViews, insufficientData, labels[{label, matched, value, threshold,
    evidence{…}}]}`` for labels night_owl, early_bird, weekend_viewer, binge_viewer, steady_viewer,
    explorer, loyalist (in that order). A label matches when ``value >= threshold`` and the slice has
    ≥ ``pattern_min_views`` views. Thresholds are project heuristics (module constants, rationale in
    docs/aggregations.md).
    """
    n = s.n
    hours = np.bincount(s.hour, minlength=24) if n else np.zeros(24, dtype=np.int64)
    ses = s.sessions
    views = s.channel_views
    counts = PatternCounts(
        views=n,
        hours=hours,
        weekend=int(np.count_nonzero(s.weekday >= 5)),
        binge_views=int(ses.views[ses.binge].sum()),
        binge_sessions=int(np.count_nonzero(ses.binge)),
        active_days=int(unique_ints(s.day).size),
        span_days=int(s.day.max() - s.day.min() + 1) if n else 0,
        attributed=int(views.sum()),
        channel_count=int(np.count_nonzero(views)),
        top_channel_views=int(views[s.channel_ranking[:LOYALIST_TOP_CHANNELS]].sum()),
    )
    return viewing_patterns_data(counts, s.options), "window"


@dataclass(frozen=True, slots=True)
class PatternCounts:
    """The counts ``viewing_patterns`` reports.

    Attributes:
        views: Views of the slice.
        hours: Views per local hour (24,).
        weekend: Views on a local Saturday or Sunday.
        binge_views: Views in binge sessions.
        binge_sessions: Binge sessions.
        active_days: Distinct local days with a view.
        span_days: Local days from the first to the last view, both included (0 when empty).
        attributed: Views with a channel.
        channel_count: Distinct channels.
        top_channel_views: Views of the ``LOYALIST_TOP_CHANNELS`` channels with the most views.
    """

    views: int
    hours: IntArray
    weekend: int
    binge_views: int
    binge_sessions: int
    active_days: int
    span_days: int
    attributed: int
    channel_count: int
    top_channel_views: int


def viewing_patterns_data(c: PatternCounts, opts: AggregationOptions) -> dict[str, Any]:
    """Return the stored ``viewing_patterns`` shape from its counts."""
    n = c.views
    enough = n >= opts.pattern_min_views
    night = int(c.hours[list(NIGHT_HOURS)].sum())
    early = int(c.hours[list(EARLY_HOURS)].sum())
    weekend, binge_views, active_days, span_days = c.weekend, c.binge_views, c.active_days, c.span_days
    attributed, channel_count, top = c.attributed, c.channel_count, c.top_channel_views
    steady_value = ratio(active_days, span_days) if span_days >= STEADY_MIN_SPAN_DAYS else None
    labels = [
        _label("night_owl", ratio(night, n), NIGHT_OWL_MIN_SHARE, enough, {"nightViews": night, "views": n}),
        _label("early_bird", ratio(early, n), EARLY_BIRD_MIN_SHARE, enough, {"earlyViews": early, "views": n}),
        _label(
            "weekend_viewer",
            ratio(weekend, n),
            WEEKEND_MIN_SHARE,
            enough,
            {"weekendViews": weekend, "views": n},
        ),
        _label(
            "binge_viewer",
            ratio(binge_views, n),
            BINGE_VIEWER_MIN_SHARE,
            enough,
            {"bingeViews": binge_views, "bingeSessions": c.binge_sessions, "views": n},
        ),
        _label(
            "steady_viewer",
            steady_value,
            STEADY_MIN_ACTIVE_DAY_RATIO,
            enough,
            {"activeDays": active_days, "spanDays": span_days, "minSpanDays": STEADY_MIN_SPAN_DAYS},
        ),
        _label(
            "explorer",
            ratio(channel_count, attributed),
            EXPLORER_MIN_CHANNELS_PER_VIEW,
            enough,
            {"uniqueChannels": channel_count, "attributedViews": attributed},
        ),
        _label(
            "loyalist",
            ratio(top, attributed),
            LOYALIST_MIN_SHARE,
            enough,
            {"topChannelViews": top, "topChannels": LOYALIST_TOP_CHANNELS, "attributedViews": attributed},
        ),
    ]
    return {
        "views": n,
        "minViews": opts.pattern_min_views,
        "insufficientData": not enough,
        "labels": labels,
    }
