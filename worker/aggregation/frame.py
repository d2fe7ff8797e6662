"""Columnar frame of one user's history: the engine's only view of the events. Pure: no I/O.

``build_frame`` sorts, deduplicates and encodes the events once per call into numpy columns so
that every aggregation is a handful of vectorised operations over index slices. A later per-month
partition cache can build frames per month and keep this layer unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from worker.aggregation.taxonomy import MUSIC_TOPIC, TOPIC_SLUGS, classify_topic
from worker.aggregation.timeframes import DAY_MS, HOUR_MS, check_instant, offset_ms_at
from worker.models import WatchEvent

__all__ = ["Frame", "build_frame", "IntArray", "BoolArray", "PRODUCT_CODES", "local_offsets_ms"]

IntArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
PRODUCT_CODES: dict[str, int] = {"youtube": 0, "youtube_music": 1}
_TOPIC_CODE = {slug: i for i, slug in enumerate(TOPIC_SLUGS)}


@dataclass(frozen=True, slots=True)
class Frame:
    """Sorted, deduplicated, encoded history of one user (n views).

    Rows are sorted by ``(watched_at_ms, dedupe_key)`` (then by every other field, so the order is
    total); a later row with an already-seen ``dedupe_key`` is dropped, as the backend does.
    Codes are -1 when absent; ``removed`` views always have video, channel and topic -1.

    Attributes:
        ts: Instant, epoch ms UTC (n,), non-decreasing.
        day: Local epoch day (days since 1970-01-01 in the user's zone) (n,).
        month: Local month index ``year*12 + month-1`` (n,).
        weekday: Local ISO weekday, Monday = 0 … Sunday = 6 (n,).
        hour: Local hour 0–23 (n,).
        product: 0 = youtube, 1 = youtube_music (n,).
        removed: True for ``kind == "removed"`` (n,).
        shorts: True when flags contain ``"shorts"`` (n,).
        video: Index into ``video_ids`` or -1 (n,).
        channel: Index into ``channel_ids`` or -1 (n,). Codes follow id order (code a < b ⇔ id a < id b).
        topic: Index into ``topic_slugs`` or -1 (unclassified) (n,).
        video_ids: Distinct video ids, sorted.
        channel_ids: Distinct channel ids, sorted.
        channel_names: Most recent non-empty name seen per channel (None when never named).
        channel_first_ms: First view of each channel over the whole history, epoch ms UTC.
        topic_slugs: The taxonomy's slugs (topic codes index it).
    """

    ts: IntArray
    day: IntArray
    month: IntArray
    weekday: IntArray
    hour: IntArray
    product: IntArray
    removed: BoolArray
    shorts: BoolArray
    video: IntArray
    channel: IntArray
    topic: IntArray
    video_ids: tuple[str, ...]
    channel_ids: tuple[str, ...]
    channel_names: tuple[str | None, ...]
    channel_first_ms: IntArray
    topic_slugs: tuple[str, ...]

    @property
    def size(self) -> int:
        """Return the number of views."""
        return int(self.ts.shape[0])


def _sort_key(e: WatchEvent) -> tuple[int, str, str, str, str, str, str, str, tuple[str, ...]]:
    return (
        e.watched_at_ms,
        e.dedupe_key,
        e.kind,
        e.product,
        e.video_id or "",
        e.title or "",
        e.channel_id or "",
        e.channel_name or "",
        tuple(sorted(e.flags)),
    )


def local_offsets_ms(ts: IntArray, zone: ZoneInfo) -> IntArray:
    """Return the zone's UTC offset (ms) for each instant in ``ts`` (epoch ms UTC), DST-correct.

    The offset is looked up at the first and the last millisecond of every distinct UTC day holding
    a view; when they differ (a transition that day) the day's views are looked up one by one.
    Assumes no UTC day holds two transitions that cancel out (none does in the tz database since 1970).
    """
    if ts.size == 0:
        return np.zeros(0, dtype=np.int64)
    days, inverse = np.unique(ts // DAY_MS, return_inverse=True)
    at_start = np.array([offset_ms_at(int(d) * DAY_MS, zone) for d in days], dtype=np.int64)
    at_end = np.array([offset_ms_at(int(d + 1) * DAY_MS - 1, zone) for d in days], dtype=np.int64)
    offsets: IntArray = at_start[inverse]
    for i in np.flatnonzero((at_start != at_end)[inverse]).tolist():
        offsets[i] = offset_ms_at(int(ts[i]), zone)
    return offsets


def build_frame(events: Sequence[WatchEvent], zone: ZoneInfo) -> Frame:
    """Sort, deduplicate and encode events into a ``Frame``.

    Args:
        events: Views of one user, any order; duplicate ``dedupe_key``s are counted once.
        zone: The user's time zone (local dates, months, weekdays and hours are computed in it).

    Returns:
        The frame (empty arrays for an empty history).

    Raises:
        ValueError: a ``watched_at_ms`` outside 1970-01-01 … 9999-12-30 (message names ``watched_at_ms``).
    """
    pairs = [((e.watched_at_ms, e.dedupe_key), e) for e in events]
    pairs.sort(key=lambda p: p[0])
    rows: list[WatchEvent] = []
    i, total = 0, len(pairs)
    while i < total:
        j = i + 1
        while j < total and pairs[j][0] == pairs[i][0]:
            j += 1
        # equal dedupe keys are adjacent; keep the smallest by the total order so input order never matters
        rows.append(pairs[i][1] if j == i + 1 else min((p[1] for p in pairs[i:j]), key=_sort_key))
        i = j
    del pairs
    n = len(rows)
    ts = np.array([e.watched_at_ms for e in rows], dtype=np.int64).reshape(n)
    if n:
        check_instant("watched_at_ms", int(ts[0]))
        check_instant("watched_at_ms", int(ts[-1]))
    local = ts + local_offsets_ms(ts, zone)
    day = local // DAY_MS
    month = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) + 1970 * 12
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday (ISO weekday index 3)
    hour = (local // HOUR_MS) % 24

    removed_l: list[bool] = []
    product_l: list[int] = []
    shorts_l: list[bool] = []
    video_l: list[str | None] = []
    channel_l: list[str | None] = []
    topic_l: list[int] = []
    topic_cache: dict[tuple[str, str | None, str | None], int] = {}
    for e in rows:
        is_removed = e.kind == "removed"
        removed_l.append(is_removed)
        product_l.append(PRODUCT_CODES[e.product])
        shorts_l.append("shorts" in e.flags)
        video_l.append(None if is_removed else (e.video_id or None))
        channel_l.append(None if is_removed else (e.channel_id or None))
        if is_removed:
            topic_l.append(-1)
            continue
        title = None if "title_unknown" in e.flags else e.title
        key = (e.product, title, e.channel_name)
        code = topic_cache.get(key)
        if code is None:
            code = topic_cache[key] = _topic_code(e.product, title, e.channel_name)
        topic_l.append(code)
    removed = np.array(removed_l, dtype=np.bool_).reshape(n)
    product = np.array(product_l, dtype=np.int64).reshape(n)
    shorts = np.array(shorts_l, dtype=np.bool_).reshape(n)
    topic = np.array(topic_l, dtype=np.int64).reshape(n)
    video_ids = tuple(sorted({v for v in video_l if v is not None}))
    video_code = {v: i for i, v in enumerate(video_ids)}
    video = np.array([-1 if v is None else video_code[v] for v in video_l], dtype=np.int64).reshape(n)
    channel_ids = tuple(sorted({c for c in channel_l if c is not None}))
    channel_code = {c: i for i, c in enumerate(channel_ids)}
    channel = np.array([-1 if c is None else channel_code[c] for c in channel_l], dtype=np.int64).reshape(n)
    names: list[str | None] = [None] * len(channel_ids)
    for e, c in zip(rows, channel.tolist(), strict=True):
        if c >= 0 and e.channel_name:
            names[c] = e.channel_name  # rows are in time order: the last write is the most recent name
    channel_first_ms = np.full(len(channel_ids), np.iinfo(np.int64).max, dtype=np.int64)
    has_channel = channel >= 0
    np.minimum.at(channel_first_ms, channel[has_channel], ts[has_channel])

    return Frame(
        ts=ts,
        day=day,
        month=month,
        weekday=weekday,
        hour=hour,
        product=product,
        removed=removed,
        shorts=shorts,
        video=video,
        channel=channel,
        topic=topic,
        video_ids=video_ids,
        channel_ids=channel_ids,
        channel_names=tuple(names),
        channel_first_ms=channel_first_ms,
        topic_slugs=TOPIC_SLUGS,
    )


def _topic_code(product: str, title: str | None, channel_name: str | None) -> int:
    """Topic code of one (non-removed) view: YouTube Music plays are music; else the keyword classifier."""
    if product == "youtube_music":
        return _TOPIC_CODE[MUSIC_TOPIC]
    slug = classify_topic(title, channel_name)
    return -1 if slug is None else _TOPIC_CODE[slug]
