"""Channel aggregations: channel_metrics, channel_relationships, channel_evolution. Pure: no I/O.

Definitions: docs/aggregations.md. Channel order everywhere: views desc, then channel id asc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from worker.aggregation.common import (
    Output,
    change,
    channel_name,
    kth_largest,
    month_axis,
    num,
    ratios,
    run_positions,
    slot_month_counts,
    unique_ints,
)
from worker.aggregation.frame import CodeArray, Frame, IntArray
from worker.aggregation.options import AggregationOptions
from worker.aggregation.slices import Slice
from worker.aggregation.timeframes import Clock, month_label

__all__ = [
    "ListedChannels",
    "ListedMonths",
    "channel_evolution",
    "channel_metrics",
    "channel_metrics_data",
    "channel_relationships",
    "top_partners",
    "trend_label",
]


_DENSE_CELLS = 1 << 20
"""Largest channels × months matrix counted densely (bincount) instead of by sorting."""


def channel_metrics(s: Slice) -> Output:
    """Per-channel metrics for the top ``channel_metrics_cap`` channels of the slice.

    Shape: ``{channelCount, channels[{channelId, channelName, views, share, firstViewMs, lastViewMs,
    firstSeenMs, activeMonths, viewsPerActiveMonth, loyaltyScore, peakHour, peakWeekday, isNew,
    coWatched[{channelId, channelName, coSessions}]}], cap, truncated, recentDays}``.
    ``loyaltyScore = activeMonths / monthsSinceFirstView`` where monthsSinceFirstView counts local
    months from the channel's first month in the slice to the current month (inclusive), in [0, 1].
    ``isNew``: the channel's first view over the whole history is within the last ``recent_days``
    local days (time-relative: changes at the next local midnight). Peak hour/weekday: local, ties →
    the smallest. ``coWatched``: channels sharing the most sessions (coSessions desc, id asc).
    """
    frame, opts = s.frame, s.options
    n_channels = len(frame.channel_ids)
    cap = opts.channel_metrics_cap
    ranking = s.channel_ranking
    top = ranking[:cap]
    rank_of: CodeArray = np.full(n_channels, -1, dtype=np.int32 if n_channels < 2**31 else np.int64)
    rank_of[top] = np.arange(top.size)
    k = int(top.size)
    if k == 0:
        return channel_metrics_data(s, 0, s.n, ListedChannels.none()), "day"
    # before the per-view temporaries below (smaller peak)
    co = s.co_sessions
    co_watched = top_partners(co.pair_a, co.pair_b, co.pair_sessions, rank_of, k, opts.co_watched_per_channel)
    # only the views of the listed channels: r = their rank, rows in time order
    ch = s.channel
    r_all = rank_of[ch]  # channel -1 picks rank_of[-1] (the last channel): masked below
    sel = (ch >= 0) & (r_all >= 0)
    r = r_all[sel].astype(np.int64)
    del r_all
    m, ts = s.month[sel], s.ts[sel]
    first = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(k, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(first, r, ts)
    np.maximum.at(last, r, ts)
    del ts
    m0 = int(m.min())
    width = int(m.max()) - m0 + 1
    if k * width <= _DENSE_CELLS:
        per_month_views = np.bincount(r * width + (m - m0), minlength=k * width).reshape(k, width) > 0
        active = np.count_nonzero(per_month_views, axis=1)
        first_month = np.argmax(per_month_views, axis=1).astype(np.int64) + m0
    else:
        active = np.bincount(unique_ints(r * width + (m - m0)) // width, minlength=k)
        first_month = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first_month, r, m)
    months = ListedMonths(active, first_month, int(s.month.max()))
    hours = np.bincount(r * 24 + s.hour[sel], minlength=k * 24).reshape(k, 24)
    weekdays = np.bincount(r * 7 + s.weekday[sel], minlength=k * 7).reshape(k, 7)
    listed = ListedChannels(top, s.channel_views[top], first, last, months, hours, weekdays, co_watched)
    return channel_metrics_data(s, int(ranking.size), s.n, listed), "day"


@dataclass(frozen=True, slots=True)
class ListedMonths:
    """The months of the channels ``channel_metrics`` lists.

    Attributes:
        active: Distinct local months with a view of each listed channel (k,).
        first_month: Each one's first local month index in the slice (k,).
        last_month: The slice's last local month index (the latest of its views).
    """

    active: CodeArray
    first_month: CodeArray
    last_month: int


@dataclass(frozen=True, slots=True)
class ListedChannels:
    """What ``channel_metrics`` reports of its listed channels, in list order (k of them).

    Attributes:
        codes: Frame channel codes (k,).
        views: Views of each in the slice (k,).
        first_ms: First view of each in the slice, epoch ms UTC (k,).
        last_ms: Last view of each in the slice, epoch ms UTC (k,).
        months: Their active months and first months.
        hours: Views per local hour (k, 24).
        weekdays: Views per local weekday, Monday = 0 (k, 7).
        co_watched: Their co-watched partners (:func:`top_partners`): list position, frame channel
            code and coSessions of each entry, grouped by position in coWatched order ((m,) each).
    """

    codes: CodeArray
    views: CodeArray
    first_ms: CodeArray
    last_ms: CodeArray
    months: ListedMonths
    hours: CodeArray
    weekdays: CodeArray
    co_watched: tuple[IntArray, IntArray, IntArray]

    @classmethod
    def none(cls) -> ListedChannels:
        """Return the listed channels of a slice without channels."""
        empty = np.zeros(0, dtype=np.int64)
        hours, weekdays = np.zeros((0, 24), dtype=np.int64), np.zeros((0, 7), dtype=np.int64)
        return cls(empty, empty, empty, empty, ListedMonths(empty, empty, 0), hours, weekdays, (empty, empty, empty))


class _MetricsView(Protocol):
    """What :func:`channel_metrics_data` needs besides the listed channels (a ``Slice`` or a render context)."""

    @property
    def frame(self) -> Frame: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def options(self) -> AggregationOptions: ...


def channel_metrics_data(
    s: _MetricsView,
    channel_count: int,
    views: int,
    listed: ListedChannels,
    kept: list[dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Return the stored ``channel_metrics`` shape.

    Args:
        s: The frame (ids, names, whole-history first views), clock and options.
        channel_count: Channels with a view in the slice.
        views: Views of the slice (the share's denominator).
        listed: The listed channels (the first ``channel_metrics_cap`` by views desc, id asc).
        kept: Per listed channel, a row rendered earlier whose every field but ``share`` still holds
            (the append fast path: channels without appended views, new partners or a new name),
            or None to build it; None (the default) builds every row. A kept row is copied with the
            new share, never changed in place.
    """
    frame, opts, clock = s.frame, s.options, s.clock
    cap = opts.channel_metrics_cap
    k = int(listed.codes.size)
    rows: list[dict[str, Any]] = []
    if k:
        shares = ratios(listed.views, np.full(k, views))
        old = kept if kept is not None else [None] * k
        fresh = iter(_metrics_rows(frame, clock, listed, shares, [i for i, row in enumerate(old) if row is None]))
        rows = [next(fresh) if row is None else {**row, "share": share} for row, share in zip(old, shares, strict=True)]
    return {
        "channelCount": channel_count,
        "channels": rows,
        "cap": cap,
        "truncated": bool(channel_count > cap),
        "recentDays": opts.recent_days,
    }


def _metrics_rows(
    frame: Frame, clock: Clock, listed: ListedChannels, shares: list[float | None], build: list[int]
) -> list[dict[str, Any]]:
    """Return the ``channel_metrics`` rows of listed positions ``build`` (ascending), in that order."""
    if not build:
        return []
    at = np.asarray(build, dtype=np.int64)
    k = int(listed.codes.size)
    wanted = np.zeros(k, dtype=np.bool_)
    wanted[at] = True
    co_watched: list[list[dict[str, Any]]] = [[] for _ in range(k)]
    rank, partner, count = listed.co_watched
    take = wanted[rank] if rank.size else np.zeros(0, dtype=np.bool_)
    for i, code, n in zip(rank[take].tolist(), partner[take].tolist(), count[take].tolist(), strict=True):
        co_watched[i].append(
            {"channelId": frame.channel_ids[code], "channelName": channel_name(frame, code), "coSessions": n}
        )
    months = listed.months
    top, n_views, active = listed.codes[at], listed.views[at], months.active[at]
    end_month = max(clock.month, months.last_month)
    months_since = end_month - months.first_month[at] + 1
    first_seen = frame.channel_first_ms[top]
    columns = zip(
        top.tolist(),
        n_views.tolist(),
        [shares[i] for i in build],
        listed.first_ms[at].tolist(),
        listed.last_ms[at].tolist(),
        first_seen.tolist(),
        active.tolist(),
        ratios(n_views, active),
        ratios(active, months_since),
        np.argmax(listed.hours[at], axis=1).tolist(),
        np.argmax(listed.weekdays[at], axis=1).tolist(),
        (first_seen >= clock.recent_start_ms).tolist(),
        [co_watched[i] for i in build],
        strict=True,
    )
    return [
        {
            "channelId": frame.channel_ids[code],
            "channelName": channel_name(frame, code),
            "views": n,
            "share": share,
            "firstViewMs": first_ms,
            "lastViewMs": last_ms,
            "firstSeenMs": seen_ms,
            "activeMonths": n_active,
            "viewsPerActiveMonth": per_active,
            "loyaltyScore": loyalty,
            "peakHour": hour,
            "peakWeekday": weekday,
            "isNew": is_new,
            "coWatched": co,
        }
        for (
            code,
            n,
            share,
            first_ms,
            last_ms,
            seen_ms,
            n_active,
            per_active,
            loyalty,
            hour,
            weekday,
            is_new,
            co,
        ) in columns
    ]


def top_partners(
    pair_a: IntArray, pair_b: IntArray, pair_sessions: IntArray, rank_of: CodeArray, k: int, per: int
) -> tuple[IntArray, IntArray, IntArray]:
    """Return the first ``per`` co-watched partners (coSessions desc, id asc) of each ranked channel.

    Args:
        pair_a: Lower channel code of each co-watched pair (p,); codes in id order.
        pair_b: Higher channel code of each pair (p,).
        pair_sessions: Sessions holding each pair (p,), ≥ 1.
        rank_of: Rank (0 … k−1) of each channel code, −1 for the channels not asked about (C,).
        k: Number of ranked channels.
        per: Partners kept per ranked channel.

    Returns:
        Per kept entry, int64 (m,) each: the rank of the channel, the partner's code and their
        coSessions, ordered by rank, then coSessions desc, then partner code asc.
    """
    empty = np.zeros(0, dtype=np.int64)
    if per == 0 or pair_a.size == 0:
        return empty, empty, empty
    n_channels = int(rank_of.size)
    # each pair once per ranked side: (rank of the ranked channel, partner, coSessions)
    ra, rb = rank_of[pair_a], rank_of[pair_b]
    side_a, side_b = np.flatnonzero(ra >= 0), np.flatnonzero(rb >= 0)
    if side_a.size + side_b.size == 0:
        return empty, empty, empty
    rx = np.concatenate((ra[side_a], rb[side_b]), dtype=np.int64)  # widened as it is copied: one pass
    y = np.concatenate((pair_b[side_a], pair_a[side_b]), dtype=np.int64)
    cnt = np.concatenate((pair_sessions[side_a], pair_sessions[side_b]), dtype=np.int64)
    del ra, rb, side_a, side_b
    # most pairs share one session: a channel with at least ``per`` partners of 2+ sessions lists
    # none of its 1-session partners, so those entries are dropped before the sort (same result)
    strong = cnt >= 2
    keep_weak = np.bincount(rx[strong], minlength=k) < per
    wanted = strong | keep_weak[rx]
    if not wanted.all():
        rx, y, cnt = rx[wanted], y[wanted], cnt[wanted]
    del strong, keep_weak, wanted
    top_count = int(cnt.max())
    # order: rank asc, coSessions desc, partner id asc — one sort of a packed key when it fits
    if k * (top_count + 1) * n_channels < 2**62:
        packed = (rx * (top_count + 1) + (top_count - cnt)) * n_channels + y
        packed.sort()
        rx = packed // ((top_count + 1) * n_channels)
        keep = run_positions(rx) < per
        rx, packed = rx[keep], packed[keep]  # decode the kept entries only
        y = packed % n_channels
        cnt = top_count - (packed // n_channels) % (top_count + 1)
    else:
        order = np.lexsort((y, -cnt, rx))
        rx, y, cnt = rx[order], y[order], cnt[order]
        keep = run_positions(rx) < per
        rx, y, cnt = rx[keep], y[keep], cnt[keep]
    return rx, y, cnt


def channel_relationships(s: Slice) -> Output:
    """Channel pairs watched in the same session.

    Shape: ``{sessionCount, multiChannelSessions, cappedSessions, maxChannelsPerSession, minCoSessions,
    pairCount, pairs[{channelAId, channelAName, channelBId, channelBName, coSessions, jaccard}], cap,
    truncated}``; ``channelAId < channelBId``; ``jaccard = co / (sessionsA + sessionsB − co)`` over
    sessions; pairs with ``coSessions >= minCoSessions``, ordered coSessions desc, then A id, B id asc.
    """
    co = s.co_sessions
    cnt = co.pair_sessions
    pair_count, listed = listed_pairs(cnt, s.options)
    a, b, c = co.pair_a[listed], co.pair_b[listed], cnt[listed]
    union = co.sessions_with[a] + co.sessions_with[b] - c
    counts = (s.sessions.count, co.multi_channel_sessions, co.capped_sessions, pair_count)
    return relationships_data(s.frame, s.options, counts, a, b, c, union), "window"


def listed_pairs(cnt: IntArray, opts: AggregationOptions) -> tuple[int, IntArray]:
    """Return the pairs ``channel_relationships`` counts and lists, from the co-sessions of every pair.

    Args:
        cnt: Sessions holding each pair, pairs in (A, B) channel id order (p,).
        opts: Thresholds (``min_co_sessions``, ``pairs_cap``).

    Returns:
        ``pairCount`` (pairs with ``cnt >= min_co_sessions``) and the indices (into ``cnt``) of the
        listed pairs, in output order (coSessions desc, then A, B asc), at most ``pairs_cap``.
    """
    pair_count = int(np.count_nonzero(cnt >= opts.min_co_sessions))
    # the listed pairs: only those with at least the cap-th largest count can be among them; pairs
    # are in (A, B) order, so a stable sort by count desc gives coSessions desc, then A, B asc
    threshold = opts.min_co_sessions
    if pair_count > opts.pairs_cap:
        threshold = max(threshold, kth_largest(cnt, opts.pairs_cap))
    candidates = np.flatnonzero(cnt >= threshold)
    listed: IntArray = candidates[np.argsort(-cnt[candidates], kind="stable")[: opts.pairs_cap]].astype(np.int64)
    return pair_count, listed


def relationships_data(
    frame: Frame,
    opts: AggregationOptions,
    counts: tuple[int, int, int, int],
    a: IntArray,
    b: IntArray,
    c: IntArray,
    union: IntArray,
) -> dict[str, Any]:
    """Return the stored ``channel_relationships`` shape.

    Args:
        frame: The frame (channel ids and names).
        opts: Thresholds.
        counts: ``(sessionCount, multiChannelSessions, cappedSessions, pairCount)``.
        a: Frame channel code of channel A of each listed pair, in output order (k,).
        b: Frame channel code of channel B of each listed pair, ``b > a`` (k,).
        c: Sessions holding both (k,).
        union: Sessions holding either (k,): ``sessionsA + sessionsB − c``.
    """
    session_count, multi, capped, pair_count = counts
    rows = [
        {
            "channelAId": frame.channel_ids[ca],
            "channelAName": channel_name(frame, ca),
            "channelBId": frame.channel_ids[cb],
            "channelBName": channel_name(frame, cb),
            "coSessions": n,
            "jaccard": jaccard,
        }
        for ca, cb, n, jaccard in zip(a.tolist(), b.tolist(), c.tolist(), ratios(c, union), strict=True)
    ]
    return {
        "sessionCount": session_count,
        "multiChannelSessions": multi,
        "cappedSessions": capped,
        "maxChannelsPerSession": opts.max_channels_per_session,
        "minCoSessions": opts.min_co_sessions,
        "pairCount": pair_count,
        "pairs": rows,
        "cap": opts.pairs_cap,
        "truncated": pair_count > opts.pairs_cap,
    }


def trend_label(recent: int, previous: int, is_new: bool, ratio_threshold: float) -> str:
    """Classify a recent-vs-previous count pair.

    Returns:
        ``"new"`` when ``is_new``; ``"dormant"`` when both are 0; ``"rising"`` when
        recent ≥ previous × (1 + r) (previous 0 and recent > 0 included); ``"declining"`` when
        recent ≤ previous × (1 − r); ``"stable"`` otherwise.
    """
    if is_new:
        return "new"
    if recent == 0 and previous == 0:
        return "dormant"
    if recent >= previous * (1 + ratio_threshold):
        return "rising"
    if recent <= previous * (1 - ratio_threshold):
        return "declining"
    return "stable"


def recent_windows(s: Slice) -> tuple[int, int, int]:
    """Return (previous start, recent start, current) month indices of the trend windows."""
    t = s.options.trend_months
    current = s.clock.month
    return current - 2 * t + 1, current - t + 1, current


def channel_evolution(s: Slice) -> Output:
    """Monthly views of the top ``top_n`` channels of the slice, with a trend label each.

    Shape: ``{months["YYYY-MM"…], channels[{channelId, channelName, views, monthlyViews[…],
    recentViews, previousViews, change, trend}], trendWindow{previousStartMonth, recentStartMonth,
    endMonth}, cap, truncated, monthsCap, monthsTruncated}``. ``monthlyViews`` aligns with ``months``
    (first to last month of the slice). Trend windows are computed on the filter over the whole
    history: recent = the last ``trend_months`` local months up to the current one, previous = the
    ``trend_months`` before; "new" when the channel's first view (filtered history) falls in the
    recent window (time-relative: changes at the next month start).
    """
    frame, opts = s.frame, s.options
    top = s.channel_ranking[: opts.top_n]
    t = int(top.size)
    axis = month_axis(s.month, opts.months_cap)
    prev_start, recent_start, current = recent_windows(s)
    slot_of = np.zeros(len(frame.channel_ids) + 1, dtype=np.int32)  # channel -1 picks the last entry: 0
    slot_of[top] = np.arange(1, t + 1)
    # monthly views of the listed channels in the slice: one (slot, month) count, slot 0 = the others
    series = slot_month_counts(slot_of[s.channel], s.month, axis, t)
    # trend windows and first month on the filter over the whole history
    slots = slot_of[s.base_channel]
    listed = np.flatnonzero(slots)  # rows of the listed channels, in time order
    rb, mb = slots[listed].astype(np.int64) - 1, s.base_month[listed]
    del slots, listed
    recent = np.bincount(rb[(mb >= recent_start) & (mb <= current)], minlength=t).tolist()
    previous = np.bincount(rb[(mb >= prev_start) & (mb < recent_start)], minlength=t).tolist()
    first_row = np.full(t, rb.size, dtype=np.int64)  # first view of each channel
    np.minimum.at(first_row, rb, np.arange(rb.size))
    first_month = [current if i == rb.size else int(mb[i]) for i in first_row.tolist()]
    codes = top.tolist()
    return channel_evolution_data(
        [frame.channel_ids[code] for code in codes],
        [channel_name(frame, code) for code in codes],
        s.channel_views[top].tolist(),
        series.tolist(),
        recent,
        previous,
        first_month,
        months=axis.labels(),
        months_cap=axis.cap,
        months_truncated=axis.truncated,
        windows=(prev_start, recent_start, current),
        ranked=int(s.channel_ranking.size),
        top_n=opts.top_n,
        trend_ratio=opts.trend_ratio,
    )


def channel_evolution_data(
    ids: list[str],
    names: list[str | None],
    views: list[int],
    monthly: list[list[int]],
    recent: list[int],
    previous: list[int],
    first_month: list[int],
    *,
    months: list[str],
    months_cap: int,
    months_truncated: bool,
    windows: tuple[int, int, int],
    ranked: int,
    top_n: int,
    trend_ratio: float,
) -> Output:
    """Return the ``channel_evolution`` output of its numbers (the full function and the append fast
    path's state both end here, so their results are equal by construction).

    Args:
        ids: Channel ids of the listed channels, in list order (views desc, id asc) (t,).
        names: Their most recent names (t,).
        views: Their views in the slice (t,).
        monthly: Their views per month of the axis, oldest first (t × len(months)).
        recent: Their base views in the recent window (t,).
        previous: Their base views in the previous window (t,).
        first_month: Local month index of each one's first base view (t,).
        months: ``"YYYY-MM"`` labels of the month axis.
        months_cap: The axis cap (``months_cap``).
        months_truncated: Whether older months were dropped.
        windows: (previous start, recent start, current) month indices (:func:`recent_windows`).
        ranked: Channels with ≥ 1 view in the slice.
        top_n: The list cap.
        trend_ratio: The trend threshold.
    """
    prev_start, recent_start, current = windows
    rows: list[dict[str, Any]] = [
        {
            "channelId": channel_id,
            "channelName": name,
            "views": n_views,
            "monthlyViews": series,
            "recentViews": n_recent,
            "previousViews": n_previous,
            "change": change(n_recent, n_previous),
            "trend": trend_label(n_recent, n_previous, first >= recent_start, trend_ratio),
        }
        for channel_id, name, n_views, series, n_recent, n_previous, first in zip(
            ids, names, views, monthly, recent, previous, first_month, strict=True
        )
    ]
    data: dict[str, Any] = {
        "months": months,
        "channels": rows,
        "trendWindow": {
            "previousStartMonth": month_label(prev_start),
            "recentStartMonth": month_label(recent_start),
            "endMonth": month_label(current),
            "ratio": num(trend_ratio),
        },
        "cap": top_n,
        "truncated": ranked > top_n,
        "monthsCap": months_cap,
        "monthsTruncated": months_truncated,
    }
    return data, "month"
