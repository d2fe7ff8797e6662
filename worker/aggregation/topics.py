"""Topic aggregations: topics_leaderboard, topic_evolution, topic_engagement, topic_discovery,
topic_diversity. Pure: no I/O.

Topics come from ``classify_topic`` (keyword taxonomy) at frame build; YouTube Music views are
music; removed views and unmatched titles are "untopiced". Definitions: docs/aggregations.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from worker.aggregation.channels import recent_windows
from worker.aggregation.common import (
    MonthAxis,
    Output,
    change,
    code_counts,
    distinct_per_group,
    month_axis,
    num,
    ratio,
    slot_month_counts,
    unique_ints,
)
from worker.aggregation.frame import IntArray
from worker.aggregation.slices import Slice
from worker.aggregation.timeframes import Clock, Window, day_start_ms, month_first_day, month_label

__all__ = ["topics_leaderboard", "topic_evolution", "topic_engagement", "topic_discovery", "topic_diversity"]

ALL_WINDOW_DAYS = 30
"""For timeframe All the leaderboard compares the last 30 local days with the 30 days before."""


def topics_leaderboard(s: Slice) -> Output:
    """Views per topic with share and the change against the previous period of equal length.

    Shape: ``{totalViews, classifiedViews, untopicedViews, comparison{currentStartMs, previousStartMs,
    previousEndMs, days}, topics[{topic, views, share, windowViews, previousViews, change}]}``.
    ``share = views / totalViews``. Comparison: for MTD/QTD/YTD/Last6M/Last12M the current window is
    the timeframe (start … +inf) and the previous window the same number of local days
    (timeframe start … today, inclusive) immediately before the start; for All the current window is
    the last 30 local days and the previous one the 30 days before. ``change = (windowViews −
    previousViews) / previousViews`` (null when previousViews is 0). ``previousEndMs`` is exclusive.
    Topics with any view in the slice or either window are listed: views desc, windowViews desc, slug.
    Time-relative: changes at the next local midnight.
    """
    k = len(s.frame.topic_slugs)
    days, current_start, previous_start = leaderboard_windows(s.window, s.clock)
    base_ts = s.base_ts
    base_topic = s.base_topic
    lo, mid = np.searchsorted(base_ts, [previous_start, current_start], side="left")
    previous = code_counts(base_topic[int(lo) : int(mid)], k)
    window = code_counts(base_topic[int(mid) :], k)
    data = topics_leaderboard_data(
        s.frame.topic_slugs, s.n, s.topic_views, window, previous, (days, current_start, previous_start)
    )
    return data, "day"


def leaderboard_windows(window: Window, clock: Clock) -> tuple[int, int, int]:
    """Return the leaderboard's comparison windows: (days, current start, previous start).

    The current window is ``[current start, +inf)``, the previous one ``[previous start, current
    start)``; starts are epoch ms UTC, ``days`` the local days of each window (see
    :func:`topics_leaderboard`).
    """
    if window.start_month is None:
        days = ALL_WINDOW_DAYS
        current_start = day_start_ms(clock.today - days + 1, clock.zone)
    else:
        start_day = month_first_day(window.start_month)
        days = clock.today - start_day + 1
        current_start = int(window.start_ms or 0)
    current_first_day = clock.today - days + 1
    previous_start = day_start_ms(current_first_day - days, clock.zone)
    return days, current_start, previous_start


def topics_leaderboard_data(
    slugs: Sequence[str],
    total: int,
    views: IntArray,
    window: IntArray,
    previous: IntArray,
    windows: tuple[int, int, int],
) -> dict[str, Any]:
    """Return the stored ``topics_leaderboard`` shape.

    Args:
        slugs: Topic slugs (topic codes index them).
        total: Views of the slice.
        views: Views per topic code in the slice (k,).
        window: Base views per topic code in the current comparison window (k,).
        previous: Base views per topic code in the previous comparison window (k,).
        windows: ``leaderboard_windows(window, clock)``.
    """
    days, current_start, previous_start = windows
    classified = int(views.sum())
    listed = np.flatnonzero((views > 0) | (window > 0) | (previous > 0))
    order = listed[np.lexsort((listed, -window[listed], -views[listed]))]
    rows = [
        {
            "topic": slugs[t],
            "views": int(views[t]),
            "share": ratio(int(views[t]), total),
            "windowViews": int(window[t]),
            "previousViews": int(previous[t]),
            "change": change(int(window[t]), int(previous[t])),
        }
        for t in order.tolist()
    ]
    return {
        "totalViews": total,
        "classifiedViews": classified,
        "untopicedViews": total - classified,
        "comparison": {
            "currentStartMs": current_start,
            "previousStartMs": previous_start,
            "previousEndMs": current_start,
            "days": days,
        },
        "topics": rows,
    }


def topic_evolution(s: Slice) -> Output:
    """Monthly views per topic with growth, peak and low month.

    Shape: ``{months["YYYY-MM"…], topics[{topic, views, monthlyViews[…], recentViews, previousViews,
    growthRate, peakMonth, peakViews, lowMonth, lowViews}], trendWindow{…}, monthsCap,
    monthsTruncated}``. ``growthRate = (recent − previous) / previous`` over the same trend windows as
    channel_evolution (last ``trend_months`` local months vs the ones before, filter over the whole
    history; null when previous is 0). Peak = the first month with the most views; low = the first
    month with the fewest views from the topic's first month on (zeros count). Topics with views in
    the slice, views desc then slug. Time-relative: changes at the next month start.
    """
    k = len(s.frame.topic_slugs)
    axis = month_axis(s.month, s.options.months_cap)
    windows = recent_windows(s)
    prev_start, recent_start, current = windows
    base_month = s.base_month
    base_topic = s.base_topic
    in_recent = (base_month >= recent_start) & (base_month <= current)
    in_previous = (base_month >= prev_start) & (base_month < recent_start)
    recent = code_counts(base_topic[in_recent], k)
    previous = code_counts(base_topic[in_previous], k)
    # monthly views of every topic: one (topic + 1, month) count, row 0 = unclassified (dropped)
    monthly = slot_month_counts(s.topic.astype(np.int32) + 1, s.month, axis, k)
    return topic_evolution_data(s.frame.topic_slugs, s.topic_views, monthly, axis, recent, previous, windows), "month"


def topic_evolution_data(
    slugs: Sequence[str],
    views: IntArray,
    monthly: IntArray,
    axis: MonthAxis,
    recent: IntArray,
    previous: IntArray,
    windows: tuple[int, int, int],
) -> dict[str, Any]:
    """Return the stored ``topic_evolution`` shape.

    Args:
        slugs: Topic slugs (topic codes index them).
        views: Views per topic code in the slice (k,).
        monthly: Views per (topic code, month of ``axis``) in the slice (k, axis.size).
        axis: The slice's months (``month_axis(s.month, months_cap)``).
        recent: Base views per topic code in the recent trend window (k,).
        previous: Base views per topic code in the previous trend window (k,).
        windows: (previous start, recent start, current) month indices (``recent_windows``).
    """
    k = len(slugs)
    prev_start, recent_start, current = windows
    labels = axis.labels()
    rows: list[dict[str, Any]] = []
    for t in np.lexsort((np.arange(k), -views)).tolist():
        if views[t] == 0:
            continue
        series = monthly[t]
        nonzero = np.flatnonzero(series)
        row: dict[str, Any] = {
            "topic": slugs[t],
            "views": int(views[t]),
            "monthlyViews": series.tolist(),
            "recentViews": int(recent[t]),
            "previousViews": int(previous[t]),
            "growthRate": change(int(recent[t]), int(previous[t])),
            "peakMonth": None,
            "peakViews": 0,
            "lowMonth": None,
            "lowViews": 0,
        }
        if nonzero.size:
            peak = int(np.argmax(series))
            tail = series[int(nonzero[0]) :]
            low = int(nonzero[0]) + int(np.argmin(tail))
            row.update(
                peakMonth=labels[peak],
                peakViews=int(series[peak]),
                lowMonth=labels[low],
                lowViews=int(series[low]),
            )
        rows.append(row)
    return {
        "months": labels,
        "topics": rows,
        "trendWindow": {
            "previousStartMonth": month_label(prev_start),
            "recentStartMonth": month_label(recent_start),
            "endMonth": month_label(current),
        },
        "monthsCap": axis.cap,
        "monthsTruncated": axis.truncated,
    }


def topic_engagement(s: Slice) -> Output:
    """Depth of engagement per topic.

    Shape: ``{topics[{topic, views, uniqueVideos, videoViews, rewatchRate, uniqueChannels, shortsShare,
    bingeShare}], untopicedViews}``. ``rewatchRate = 1 − uniqueVideos / videoViews`` (videoViews =
    views with a video id; null when 0); ``shortsShare`` = views flagged "shorts" / views;
    ``bingeShare`` = views inside binge sessions / views. Topics with views, views desc then slug.
    """
    return topic_engagement_data(s.frame.topic_slugs, engagement_counts(s), s.n), "window"


ENGAGEMENT_VIEWS, ENGAGEMENT_VIDEO_VIEWS, ENGAGEMENT_UNIQUE_VIDEOS, ENGAGEMENT_UNIQUE_CHANNELS = 0, 1, 2, 3
ENGAGEMENT_SHORTS, ENGAGEMENT_BINGE = 4, 5
"""Rows of :func:`engagement_counts`: views, views with a video id, distinct videos, distinct
channels, Shorts views and views inside binge sessions, per topic."""


def engagement_counts(s: Slice) -> IntArray:
    """Return the per-topic counts of ``topic_engagement``: int64 (6, T), rows ``ENGAGEMENT_*``."""
    k = len(s.frame.topic_slugs)
    topic = s.topic
    out = np.empty((6, k), dtype=np.int64)
    out[ENGAGEMENT_VIEWS] = s.topic_views
    out[ENGAGEMENT_VIDEO_VIEWS] = code_counts(topic[(s.video >= 0) & (topic >= 0)], k)
    out[ENGAGEMENT_UNIQUE_VIDEOS] = distinct_per_group(topic, s.video, k)
    out[ENGAGEMENT_UNIQUE_CHANNELS] = distinct_per_group(topic, s.channel, k)
    out[ENGAGEMENT_SHORTS] = code_counts(topic[s.shorts], k)
    out[ENGAGEMENT_BINGE] = code_counts(topic[s.sessions.binge[s.sessions.of_view]], k) if s.n else 0
    return out


def topic_engagement_data(slugs: tuple[str, ...], counts: IntArray, total: int) -> dict[str, Any]:
    """Return the stored ``topic_engagement`` shape.

    Args:
        slugs: The topic slugs (T,).
        counts: Per-topic counts, int64 (6, T), rows ``ENGAGEMENT_*`` (:func:`engagement_counts`).
        total: Views of the slice (untopiced ones included).
    """
    k = len(slugs)
    views = counts[ENGAGEMENT_VIEWS]
    rows: list[dict[str, Any]] = []
    for t in np.lexsort((np.arange(k), -views)).tolist():
        if views[t] == 0:
            continue
        v, vv, uv, uc, sh, bg = counts[:, t].tolist()
        rows.append(
            {
                "topic": slugs[t],
                "views": v,
                "uniqueVideos": uv,
                "videoViews": vv,
                "rewatchRate": None if vv == 0 else num(1 - uv / vv),
                "uniqueChannels": uc,
                "shortsShare": ratio(sh, v),
                "bingeShare": ratio(bg, v),
            }
        )
    return {"topics": rows, "untopicedViews": total - int(views.sum())}


def topic_discovery(s: Slice) -> Output:
    """Share of each topic's views coming from channels discovered recently (a proxy for exploration).

    A channel is "new" when its first view over the whole history (all products) is within the last
    ``recent_days`` local days; otherwise "habitual". Shape: ``{recentDays, recentStartMs, overall{…},
    topics[{topic, views, newChannelViews, habitualChannelViews, unattributedViews, newChannelShare,
    newChannels}]}`` with ``newChannelShare = new / (new + habitual)`` (null when 0). Topics with views,
    views desc then slug. Time-relative: changes at the next local midnight.
    """
    data = topic_discovery_data(
        s.frame.topic_slugs, discovery_counts(s), s.options.recent_days, s.clock.recent_start_ms
    )
    return data, "day"


DISCOVERY_VIEWS, DISCOVERY_NEW_VIEWS, DISCOVERY_HABITUAL_VIEWS, DISCOVERY_NEW_CHANNELS = 0, 1, 2, 3
"""Rows of :func:`discovery_counts`: views, views of new channels, views of habitual channels and
distinct new channels."""


def discovery_counts(s: Slice) -> IntArray:
    """Return the counts of ``topic_discovery``: int64 (4, T + 1), rows ``DISCOVERY_*``, columns the
    topics then the whole slice (untopiced views included)."""
    frame = s.frame
    k = len(frame.topic_slugs)
    topic, ch = s.topic, s.channel
    has = ch >= 0
    is_new = np.zeros(s.n, dtype=np.bool_)
    is_new[has] = frame.channel_first_ms[ch[has]] >= s.clock.recent_start_ms
    out = np.empty((4, k + 1), dtype=np.int64)
    out[DISCOVERY_VIEWS, :k] = s.topic_views
    out[DISCOVERY_NEW_VIEWS, :k] = code_counts(topic[is_new], k)
    out[DISCOVERY_HABITUAL_VIEWS, :k] = code_counts(topic[has & ~is_new], k)
    out[DISCOVERY_NEW_CHANNELS, :k] = distinct_per_group(topic, np.where(is_new, ch, -1), k)
    out[:, k] = (
        s.n,
        np.count_nonzero(is_new),
        np.count_nonzero(has & ~is_new),
        unique_ints(ch[is_new]).size,
    )
    return out


def topic_discovery_data(
    slugs: tuple[str, ...], counts: IntArray, recent_days: int, recent_start_ms: int
) -> dict[str, Any]:
    """Return the stored ``topic_discovery`` shape.

    Args:
        slugs: The topic slugs (T,).
        counts: Int64 (4, T + 1), rows ``DISCOVERY_*``, columns the topics then the whole slice
            (:func:`discovery_counts`).
        recent_days: The "last N days" window, local days including today.
        recent_start_ms: Its first instant, epoch ms UTC.
    """

    def row(column: int) -> dict[str, Any]:
        v, nv, hv, nc = counts[:, column].tolist()
        return {
            "views": v,
            "newChannelViews": nv,
            "habitualChannelViews": hv,
            "unattributedViews": v - nv - hv,
            "newChannelShare": ratio(nv, nv + hv),
            "newChannels": nc,
        }

    k = len(slugs)
    views = counts[DISCOVERY_VIEWS, :k]
    rows = [{"topic": slugs[t], **row(t)} for t in np.lexsort((np.arange(k), -views)).tolist() if views[t] != 0]
    return {"recentDays": recent_days, "recentStartMs": recent_start_ms, "overall": row(k), "topics": rows}


def _diversity(matrix: IntArray) -> list[dict[str, Any]]:
    """Return the diversity fields of each row of a (rows, topics) matrix of view counts."""
    totals = matrix.sum(axis=1)
    present = matrix > 0
    kinds = np.count_nonzero(present, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = matrix / totals[:, None]  # a row without views is NaN: never read below
        logs = np.log2(p, where=present, out=np.zeros(p.shape))
        entropies = -(p * logs).sum(axis=1)
        ginis = 1.0 - (p * p).sum(axis=1)
        log_kinds = np.log2(kinds)
    rows: list[dict[str, Any]] = []
    for total, k, entropy_bits, gini, log_k in zip(
        totals.tolist(), kinds.tolist(), entropies.tolist(), ginis.tolist(), log_kinds.tolist(), strict=True
    ):
        if total == 0:
            rows.append(
                {"classifiedViews": 0, "topicCount": 0, "entropyBits": 0.0, "evenness": None, "giniSimpson": 0.0}
            )
            continue
        entropy = entropy_bits + 0.0  # -0.0 (one topic) stored as 0.0
        rows.append(
            {
                "classifiedViews": total,
                "topicCount": k,
                "entropyBits": num(entropy),
                "evenness": num(entropy / log_k) if k >= 2 else None,
                "giniSimpson": num(gini),
            }
        )
    return rows


def topic_diversity(s: Slice) -> Output:
    """Diversity of classified views across topics, overall and per local month.

    Shape: ``{overall{classifiedViews, topicCount, entropyBits, evenness, giniSimpson},
    months[{month, …same fields}], cap, truncated}``. Over classified views only:
    ``p_i = views_i / classifiedViews``, Shannon entropy ``H = −Σ p_i log2 p_i`` (bits; Shannon 1948),
    evenness ``H / log2 k`` (Pielou 1966; null when k < 2), Gini–Simpson ``1 − Σ p_i²`` (Simpson 1949).
    """
    k = len(s.frame.topic_slugs)
    topic = s.topic
    axis = month_axis(s.month, s.options.months_cap)
    matrix = np.zeros((0, k), dtype=np.int64)
    if axis.size:
        off = s.month - axis.first
        sel = (topic >= 0) & (off >= 0)
        matrix = np.bincount(off[sel] * k + topic[sel], minlength=axis.size * k).reshape(axis.size, k)
    return topic_diversity_data(s.topic_views, matrix, axis), "window"


def topic_diversity_data(views: IntArray, matrix: IntArray, axis: MonthAxis) -> dict[str, Any]:
    """Return the stored ``topic_diversity`` shape.

    Args:
        views: Views per topic code in the slice (k,).
        matrix: Views per (month of ``axis``, topic code) in the slice, a C-contiguous int64
            (axis.size, k) array (the float sums of :func:`_diversity` run along its rows).
        axis: The slice's months (``month_axis(s.month, months_cap)``).
    """
    (overall,) = _diversity(views.reshape(1, -1))
    months: list[dict[str, Any]] = []
    if axis.size:
        months = [{"month": label, **row} for label, row in zip(axis.labels(), _diversity(matrix), strict=True)]
    return {"overall": overall, "months": months, **axis.meta()}
