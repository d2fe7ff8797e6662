"""Columnar frame of one user's history: the engine's only view of the events. Pure: no I/O.

``build_frame`` sorts, deduplicates and encodes the events once per call into numpy columns so
that every aggregation is a handful of vectorised operations over index slices. The per-event
work lives in ``worker.aggregation.partition``: a frame is the merge of encoded partitions (one
for the whole history here, one per local month in the worker's partition cache).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from worker.aggregation.timeframes import DAY_MS, offset_ms_at
from worker.models import WatchEvent

__all__ = [
    "Frame",
    "build_frame",
    "IntArray",
    "Int32Array",
    "Int8Array",
    "CodeArray",
    "BoolArray",
    "PRODUCT_CODES",
    "local_offsets_ms",
]

IntArray: TypeAlias = npt.NDArray[np.int64]
Int32Array: TypeAlias = npt.NDArray[np.int32]
Int8Array: TypeAlias = npt.NDArray[np.int8]
CodeArray: TypeAlias = npt.NDArray[np.signedinteger[Any]]
"""Any signed integer column (frame columns of any width, int64 slices and results)."""
BoolArray: TypeAlias = npt.NDArray[np.bool_]
PRODUCT_CODES: dict[str, int] = {"youtube": 0, "youtube_music": 1}


_SERIALS = itertools.count(1)
"""Serial numbers of frames (``Frame.serial``)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """Sorted, deduplicated, encoded history of one user (n views).

    Rows are sorted by ``(watched_at_ms, dedupe_key)`` (then by every other field, so the order is
    total); a later row with an already-seen ``dedupe_key`` is dropped, as the backend does.
    Codes are -1 when absent; ``removed`` views always have video, channel and topic -1.
    Columns use the narrowest dtype their range allows (int64 instants, int32 days, months and
    string codes, int8 weekdays, hours, products and topics): about 30 bytes per view. Arithmetic
    that can leave that range widens first (``Slice`` hands out int64 copies).

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
        video_ids: Distinct video ids, UTF-8 encoded, sorted (numpy bytes array; the aggregations
            only count video codes, so the ids stay encoded).
        channel_ids: Distinct channel ids, sorted.
        channel_names: Most recent non-empty name seen per channel (None when never named).
        channel_first_ms: First view of each channel over the whole history, epoch ms UTC.
        topic_slugs: The taxonomy's slugs (topic codes index it).
        serial: This frame object's number in the process, never reused (unlike ``id()`` once an
            object is freed): what refers to a frame without keeping it alive uses it.
    """

    ts: IntArray
    day: Int32Array
    month: Int32Array
    weekday: Int8Array
    hour: Int8Array
    product: Int8Array
    removed: BoolArray
    shorts: BoolArray
    video: Int32Array
    channel: Int32Array
    topic: Int8Array
    video_ids: npt.NDArray[np.bytes_]
    channel_ids: tuple[str, ...]
    channel_names: tuple[str | None, ...]
    channel_first_ms: IntArray
    topic_slugs: tuple[str, ...]
    serial: int = field(init=False, default_factory=lambda: next(_SERIALS), compare=False, repr=False)

    @property
    def size(self) -> int:
        """Return the number of views."""
        return int(self.ts.shape[0])


@lru_cache(maxsize=1 << 14)  # (zone, UTC day) → offsets: 45 years of one zone, about 3 MB at most
def _day_offsets_ms(epoch_day: int, zone: ZoneInfo) -> tuple[int, int]:
    """Return the zone's UTC offsets (ms) at the first and the last millisecond of a UTC day."""
    return offset_ms_at(epoch_day * DAY_MS, zone), offset_ms_at((epoch_day + 1) * DAY_MS - 1, zone)


def local_offsets_ms(ts: IntArray, zone: ZoneInfo) -> IntArray:
    """Return the zone's UTC offset (ms) for each instant in ``ts`` (epoch ms UTC), DST-correct.

    The offset is looked up at the first and the last millisecond of every distinct UTC day holding
    a view (memoized per zone and day: the worker splits and encodes the same days more than once);
    when they differ (a transition that day) the day's views are looked up one by one.
    Assumes no UTC day holds two transitions that cancel out (none does in the tz database since 1970).
    """
    if ts.size == 0:
        return np.zeros(0, dtype=np.int64)
    all_days = ts // DAY_MS
    if ts.size > 1 and bool(np.all(all_days[1:] >= all_days[:-1])):  # sorted (the usual case): no sort
        new_day = np.concatenate(([True], all_days[1:] != all_days[:-1]))
        days = all_days[new_day]
        inverse = np.cumsum(new_day) - 1
        del new_day
    else:
        days, inverse = np.unique(all_days, return_inverse=True)
    del all_days
    bounds = [_day_offsets_ms(d, zone) for d in days.tolist()]
    at_start = np.array([b[0] for b in bounds], dtype=np.int64)
    at_end = np.array([b[1] for b in bounds], dtype=np.int64)
    offsets: IntArray = at_start[inverse]
    for i in np.flatnonzero((at_start != at_end)[inverse]).tolist():
        offsets[i] = offset_ms_at(int(ts[i]), zone)
    return offsets


def build_frame(events: Sequence[WatchEvent], zone: ZoneInfo) -> Frame:
    """Sort, deduplicate and encode events into a ``Frame``.

    Equivalent to ``merge_partitions([build_partition(events, zone)])`` (see
    ``worker.aggregation.partition``, which holds the per-event encoding).

    Args:
        events: Views of one user, any order; duplicate ``dedupe_key``s are counted once.
        zone: The user's time zone (local dates, months, weekdays and hours are computed in it).

    Returns:
        The frame (empty arrays for an empty history).

    Raises:
        ValueError: a ``watched_at_ms`` outside 1970-01-01 … 9999-12-30 (message names ``watched_at_ms``).
    """
    from worker.aggregation.partition import build_partition, merge_partitions  # imports this module

    return merge_partitions([build_partition(events, zone)])
