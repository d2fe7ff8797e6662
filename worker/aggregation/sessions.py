"""Session aggregations: session_analysis, viewing_patterns. Pure: no I/O.

Sessions are computed on the filtered views of the slice (a product/topic/channel filter changes
the sessions), and a session crossing the timeframe start is cut at it. Definitions:
docs/aggregations.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.aggregation.common import Output, num, ratio, unique_ints
from worker.aggregation.frame import IntArray
from worker.aggregation.slices import Slice

__all__ = ["session_analysis", "viewing_patterns"]

_MINUTE_MS = 60_000


def _stats(values: IntArray, scale: float) -> tuple[float | None, float | None, float | None]:
    if values.size == 0:
        return None, None, None
    return (
        num(float(values.mean()) / scale),
        num(float(np.median(values)) / scale),
        num(float(values.max()) / scale),
    )


def session_analysis(s: Slice) -> Output:
    """Session counts and length statistics of the slice.

    Shape: ``{sessionCount, views, meanViews, medianViews, maxViews, meanSpanMinutes,
    medianSpanMinutes, maxSpanMinutes, meanEstimatedMinutes, medianEstimatedMinutes,
    maxEstimatedMinutes, bingeSessions, bingeSessionShare, bingeViews, bingeViewShare,
    sessionsByStartHour[24], thresholds{…}}``. Span = last − first view instant (measured);
    estimated minutes = sum of the per-view watch-time estimates (see kpi). Stats are null when empty.
    """
    opts = s.options
    ses = s.sessions
    mean_v, median_v, max_v = _stats(ses.views, 1.0)
    mean_s, median_s, max_s = _stats(ses.span_ms, _MINUTE_MS)
    mean_e, median_e, max_e = _stats(ses.estimated_session_ms, _MINUTE_MS)
    binge_views = int(ses.views[ses.binge].sum())
    by_hour = np.bincount(s.hour[ses.starts], minlength=24) if ses.count else np.zeros(24, dtype=np.int64)
    data: dict[str, Any] = {
        "sessionCount": ses.count,
        "views": s.n,
        "meanViews": mean_v,
        "medianViews": median_v,
        "maxViews": max_v,
        "meanSpanMinutes": mean_s,
        "medianSpanMinutes": median_s,
        "maxSpanMinutes": max_s,
        "meanEstimatedMinutes": mean_e,
        "medianEstimatedMinutes": median_e,
        "maxEstimatedMinutes": max_e,
        "bingeSessions": int(np.count_nonzero(ses.binge)),
        "bingeSessionShare": ratio(int(np.count_nonzero(ses.binge)), ses.count),
        "bingeViews": binge_views,
        "bingeViewShare": ratio(binge_views, s.n),
        "sessionsByStartHour": [int(x) for x in by_hour],
        "thresholds": {
            "sessionGapMinutes": num(opts.session_gap_ms / _MINUTE_MS),
            "bingeMinViews": opts.binge_min_views,
            "bingeMinSpanMinutes": num(opts.binge_min_span_ms / _MINUTE_MS),
            "watchTimeCapMinutes": num(opts.watch_time_cap_ms / _MINUTE_MS),
            "lastViewEstimateMinutes": num(opts.last_view_estimate_ms / _MINUTE_MS),
        },
    }
    return data, "window"


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
    enough = n >= s.options.pattern_min_views
    hours = np.bincount(s.hour, minlength=24) if n else np.zeros(24, dtype=np.int64)
    night = int(hours[list(NIGHT_HOURS)].sum())
    early = int(hours[list(EARLY_HOURS)].sum())
    weekend = int(np.count_nonzero(s.weekday >= 5))
    ses = s.sessions
    binge_views = int(ses.views[ses.binge].sum())
    active_days = int(unique_ints(s.day).size)
    span_days = int(s.day.max() - s.day.min() + 1) if n else 0
    views = s.channel_views
    attributed = int(views.sum())
    channel_count = int(np.count_nonzero(views))
    top = int(views[s.channel_ranking[:LOYALIST_TOP_CHANNELS]].sum())
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
            {"bingeViews": binge_views, "bingeSessions": int(np.count_nonzero(ses.binge)), "views": n},
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
    data: dict[str, Any] = {
        "views": n,
        "minViews": s.options.pattern_min_views,
        "insufficientData": not enough,
        "labels": labels,
    }
    return data, "window"
