"""Counting aggregations: kpi, monthly_trend, top_channels, day_time_heatmap. Pure: no I/O.

Definitions, formulas and output shapes: docs/aggregations.md.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.aggregation.common import (
    MonthAxis,
    Output,
    change,
    channel_name,
    distinct_per_group,
    month_axis,
    num,
    per_month,
    ratio,
    unique_ints,
)
from worker.aggregation.frame import IntArray
from worker.aggregation.options import AggregationOptions
from worker.aggregation.slices import Slice
from worker.aggregation.timeframes import EPOCH_ORDINAL, Clock, month_first_day, shift_year_back

__all__ = ["kpi", "monthly_trend", "top_channels", "day_time_heatmap"]

_MINUTE_MS = 60_000


def _iso_day(epoch_day: int) -> str:
    return date.fromordinal(epoch_day + EPOCH_ORDINAL).isoformat()


def kpi(s: Slice) -> Output:
    """Headline numbers of the slice plus period-to-date views with a year-over-year change.

    Shape: ``{views, removedViews, uniqueVideos, uniqueChannels, activeDays, firstViewMs, lastViewMs,
    estimatedWatchTimeMinutes, estimator{…}, periodToDate[{period, startDate, endDate,
    previousStartDate, previousEndDate, views, previousViews, yoyChange}]}``. Period-to-date counts use
    the filter over the whole history (not the timeframe); dates are local ``YYYY-MM-DD``.
    Time-relative: changes at the next local midnight.
    """
    frame = s.frame
    video = s.video
    counts = {
        "views": s.n,
        "removedViews": int(np.count_nonzero(frame.removed[s.idx])),
        "uniqueVideos": int(unique_ints(video[video >= 0]).size),
        "uniqueChannels": int(np.count_nonzero(s.channel_views)),
        "activeDays": int(unique_ints(s.day).size),
        "firstViewMs": int(s.ts[0]) if s.n else None,
        "lastViewMs": int(s.ts[-1]) if s.n else None,
    }
    spans = kpi_period_spans(s.clock)
    period_views = [s.base_views_between(first, last) for first, last in spans]
    return kpi_data(counts, int(s.sessions.estimated_ms.sum()), period_views, s.clock, s.options), "day"


def kpi_period_spans(clock: Clock) -> list[tuple[int, int]]:
    """Return the local-day spans (first, last; inclusive) whose base views ``kpi`` reports, in order:
    per period (month, quarter, year) the current span to today, then the same dates a year earlier."""
    m = clock.month
    out: list[tuple[int, int]] = []
    for start_month in (m, m - (m % 12) % 3, m - m % 12):
        start = month_first_day(start_month)
        out.append((start, clock.today))
        out.append((shift_year_back(start), shift_year_back(clock.today)))
    return out


def kpi_data(
    counts: dict[str, Any], estimated_ms: int, period_views: list[int], clock: Clock, opts: AggregationOptions
) -> dict[str, Any]:
    """Return the stored ``kpi`` shape from its counts (the keys ``views`` … ``lastViewMs`` in order),
    the slice's total estimated watch time (ms) and the base views of ``kpi_period_spans(clock)``."""
    data: dict[str, Any] = {
        **counts,
        "estimatedWatchTimeMinutes": num(estimated_ms / _MINUTE_MS),
        "estimator": {
            "method": "gapToNextViewInSession",
            "sessionGapMinutes": num(opts.session_gap_ms / _MINUTE_MS),
            "capMinutes": num(opts.watch_time_cap_ms / _MINUTE_MS),
            "lastViewMinutes": num(opts.last_view_estimate_ms / _MINUTE_MS),
        },
    }
    spans = kpi_period_spans(clock)
    rows: list[dict[str, Any]] = []
    for i, period in enumerate(("month", "quarter", "year")):
        (start, end), (prev_start, prev_end) = spans[2 * i], spans[2 * i + 1]
        current, previous = period_views[2 * i], period_views[2 * i + 1]
        rows.append(
            {
                "period": period,
                "startDate": _iso_day(start),
                "endDate": _iso_day(end),
                "previousStartDate": _iso_day(prev_start),
                "previousEndDate": _iso_day(prev_end),
                "views": current,
                "previousViews": previous,
                "yoyChange": change(current, previous),
            }
        )
    data["periodToDate"] = rows
    return data


def monthly_trend(s: Slice) -> Output:
    """Views, unique videos and unique channels per local calendar month.

    Shape: ``{months[{month: "YYYY-MM", views, uniqueVideos, uniqueChannels}], cap, truncated}``,
    oldest first, every month between the first and last month with a view present (zeros included);
    at most ``months_cap`` newest months.
    """
    axis = month_axis(s.month, s.options.months_cap)
    if axis.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return monthly_trend_data(axis, empty, empty, empty), "window"
    off = s.month - axis.first
    views = per_month(s.month, axis)
    videos = distinct_per_group(off, s.video, axis.size)
    channels = distinct_per_group(off, s.channel, axis.size)
    return monthly_trend_data(axis, views, videos, channels), "window"


def monthly_trend_data(axis: MonthAxis, views: IntArray, videos: IntArray, channels: IntArray) -> dict[str, Any]:
    """Return the stored ``monthly_trend`` shape from per month counts of the axis.

    Args:
        axis: The months listed (``month_axis`` of the slice's months and ``months_cap``).
        views: Views per month of the axis (axis.size,).
        videos: Distinct videos per month of the axis (axis.size,).
        channels: Distinct channels per month of the axis (axis.size,).
    """
    months = [
        {"month": label, "views": v, "uniqueVideos": uv, "uniqueChannels": uc}
        for label, v, uv, uc in zip(axis.labels(), views.tolist(), videos.tolist(), channels.tolist(), strict=True)
    ]
    return {"months": months, **axis.meta()}


def top_channels(s: Slice) -> Output:
    """Top channels by views (views desc, then channel id asc).

    Shape: ``{totalViews, attributedViews, unattributedViews, channelCount, channels[{rank, channelId,
    channelName, views, share}], cap, truncated}``; ``share = views / totalViews`` (all views of the
    slice, removed and channel-less views included); ``channelName`` is the most recent name seen.
    """
    views = s.channel_views
    ranking = s.channel_ranking
    cap = s.options.top_n
    top = [
        (s.frame.channel_ids[code], channel_name(s.frame, code), int(views[code])) for code in ranking[:cap].tolist()
    ]
    return top_channels_data(s.n, int(views.sum()), int(ranking.size), top, cap), "window"


def top_channels_data(
    total: int, attributed: int, channel_count: int, top: list[tuple[str, str | None, int]], cap: int
) -> dict[str, Any]:
    """Return the stored ``top_channels`` shape.

    Args:
        total: Views of the slice.
        attributed: Its views with a channel.
        channel_count: Channels with ≥ 1 view.
        top: The first ``cap`` channels of the ranking (views desc, then channel id asc), each as
            (channel id, most recent name, views).
        cap: ``AggregationOptions.top_n``.
    """
    rows = [
        {"rank": rank + 1, "channelId": cid, "channelName": name, "views": v, "share": ratio(v, total)}
        for rank, (cid, name, v) in enumerate(top)
    ]
    return {
        "totalViews": total,
        "attributedViews": attributed,
        "unattributedViews": total - attributed,
        "channelCount": channel_count,
        "channels": rows,
        "cap": cap,
        "truncated": bool(channel_count > cap),
    }


def day_time_heatmap(s: Slice) -> Output:
    """Views per local weekday × local hour (DST-correct wall-clock time).

    Shape: ``{weekdayConvention: "iso-monday-0", cells: 7 arrays of 24 counts (cells[weekday][hour],
    Monday = 0), totalViews, maxCount, peakWeekday, peakHour}``; peak = the first maximum in
    (weekday, hour) order, null when empty.
    """
    cell = s.weekday.astype(np.intp)  # one index-width copy, the cell number built in place
    cell *= 24
    cell += s.hour
    counts = np.bincount(cell, minlength=7 * 24).astype(np.int64)
    del cell
    return heatmap_data(counts, s.n), "window"


def heatmap_data(counts: npt.NDArray[np.int64], views: int) -> dict[str, Any]:
    """Return the stored ``day_time_heatmap`` shape from the 168 cell counts (weekday*24 + hour)."""
    peak = int(np.argmax(counts)) if views else None
    return {
        "weekdayConvention": "iso-monday-0",
        "cells": counts.reshape(7, 24).tolist(),
        "totalViews": views,
        "maxCount": int(counts.max()),
        "peakWeekday": None if peak is None else peak // 24,
        "peakHour": None if peak is None else peak % 24,
    }
