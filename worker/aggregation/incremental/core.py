"""Append fast path of the engine: per (filter set, type) state extended by appended views. Pure: no I/O.

When a recompute's frame is the previous one with views appended after its last view
(``worker.aggregation.partition.extend_frame``) and "today" (the local day of ``now``) has not
changed, every result is a function of the previous slice's state and the appended views alone:
the windows, "today", "the last 30 days" and "the current month" are the same, and no earlier view
moved, changed or left. Each aggregation type with an incremental implementation keeps a state per
(filter base, timeframe) that is

* built once from the whole slice (``from_slice``: the first append after a full merge),
* extended by the appended views (``extend``: cost proportional to the views appended, plus a
  re-count of the slice's last session when it grew), and
* rendered into the stored shape (``render``: cost proportional to the output).

``render(extend(from_slice(prefix), tail))`` equals the type's function over the whole slice,
field for field (``tests/unit/aggregation/test_incremental.py`` checks it for random appends).

Identities. A state never holds a frame's video or channel codes, which an append renumbers when a
new id sorts among the old ones. It holds **stable codes** instead (:class:`StableCodes`): the
frame's codes at the state's first frame, then a new id gets the next free code. Channel order
(ties by channel id) and names go back through ``StableCodes.channel_code``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

import numpy as np

from worker.aggregation.filters import filter_mask
from worker.aggregation.frame import BoolArray, Frame, IntArray
from worker.aggregation.options import AggregationOptions
from worker.aggregation.timeframes import Clock, Window, month_start_ms

if TYPE_CHECKING:
    from worker.aggregation.common import Output
    from worker.aggregation.filters import FilterSet
    from worker.aggregation.incremental.shared import SliceShared
    from worker.aggregation.slices import Slice

__all__ = [
    "NO_KEY",
    "NONE_BEFORE",
    "BaseTail",
    "IncrementalState",
    "KeyCounts",
    "LastSeen",
    "MONTH_KINDS",
    "RenderContext",
    "SliceInfo",
    "SliceTail",
    "StableCodes",
    "base_rows_between",
    "grown",
    "month_buckets",
    "window_floor",
]

NONE_BEFORE = -1
"""``LastSeen`` answer for a key the base never had before."""
NO_KEY = int(np.iinfo(np.int32).max)
"""``LastSeen`` answer for a row without the key (no video, no channel, unclassified): never "new"."""
_INT32_MAX = int(np.iinfo(np.int32).max)
_INT32_MIN = int(np.iinfo(np.int32).min)


def window_floor(window: Window) -> int:
    """Return the month bucket of ``window``'s first instant: its start month index, 0 for ``All``.

    A key is new to a slice iff the month bucket of its previous view in the base (``LastSeen``,
    :func:`month_buckets`) is below this: every window starts at the first instant of a local month,
    so an instant is before the window iff its bucket is before the window's start month.
    ``NONE_BEFORE`` (-1) is below every floor, ``NO_KEY`` never is.
    """
    return 0 if window.start_month is None else int(window.start_month)


def month_buckets(ts: IntArray, month: Any, zone: ZoneInfo) -> IntArray:
    """Return the month bucket of each instant: the latest local month whose first instant is not after it.

    That is the instant's local month, except where a clock turned back across the first of a
    month (America/Goose_Bay, 2009-11-01 00:01 local): there an instant of the new month reads as
    the old month's last day, and its bucket is the new month. Buckets never decrease with time.

    Args:
        ts: Instants, epoch ms UTC (r,).
        month: Their local month indices (r,).
        zone: The user's zone.

    Returns:
        Month indices (r,), int64.
    """
    m = np.asarray(month, dtype=np.int64)
    if m.size == 0:
        return m
    months, at = np.unique(m, return_inverse=True)
    next_start = np.array([month_start_ms(int(x) + 1, zone) for x in months.tolist()], dtype=np.int64)
    out: IntArray = m + (np.asarray(ts, dtype=np.int64) >= next_start[at])
    return out


@dataclass(frozen=True, slots=True)
class StableCodes:
    """Video and channel codes that an append never renumbers.

    Attributes:
        video: Stable code of each video code of the current frame (len(frame.video_ids),).
        channel: Stable code of each channel code of the current frame (len(frame.channel_ids),).
        channel_code: Current frame channel code of each stable channel code (inverse of ``channel``).
        renamed: Whether the append that produced the frame changed the name of a channel the
            frame before it had (a new channel's name is not a change).
    """

    video: IntArray
    channel: IntArray
    channel_code: IntArray
    renamed: bool = False

    @property
    def videos(self) -> int:
        """Return the number of stable video codes (= videos of the frame)."""
        return int(self.video.shape[0])

    @property
    def channels(self) -> int:
        """Return the number of stable channel codes (= channels of the frame)."""
        return int(self.channel.shape[0])

    @classmethod
    def identity(cls, frame: Frame) -> StableCodes:
        """Return the codes of a first frame: stable code = frame code."""
        videos = np.arange(len(frame.video_ids), dtype=np.int64)
        channels = np.arange(len(frame.channel_ids), dtype=np.int64)
        return cls(videos, channels, channels)

    def extended(self, old: Frame, new: Frame) -> StableCodes:
        """Return the codes of ``new`` = ``extend_frame(old, …)`` (new ids get the next free codes).

        Only the appended rows can bring new ids, so they are found among the codes those rows use
        (the cost is the rows appended plus one pass over the code tables, not a string comparison
        per id).
        """
        video, _ = _extend_codes(self.video, old.video_ids, new.video_ids, new.video[old.size :])
        if len(new.channel_ids) == len(old.channel_ids):  # no new channel: the same codes
            channel, added, channel_code = self.channel, np.zeros(0, dtype=np.int64), self.channel_code
        else:
            channel, added = _extend_codes(
                self.channel,
                np.array(old.channel_ids, dtype=object),
                np.array(new.channel_ids, dtype=object),
                new.channel[old.size :],
            )
            channel_code = np.empty_like(channel)
            channel_code[channel] = np.arange(channel.size, dtype=np.int64)
        used = np.unique(new.channel[old.size :].astype(np.int64))
        used = used[(used >= 0) & ~np.isin(used, added)]  # old channels the appended views name
        before = used - np.searchsorted(added, used)  # their codes in the old frame
        renamed = any(
            old.channel_names[b] != new.channel_names[u] for b, u in zip(before.tolist(), used.tolist(), strict=True)
        )
        return StableCodes(video, channel, channel_code, renamed)

    def stable_video(self, codes: Any) -> IntArray:
        """Return the stable codes of frame video codes (-1 kept)."""
        return _translate(self.video, codes)

    def stable_channel(self, codes: Any) -> IntArray:
        """Return the stable codes of frame channel codes (-1 kept)."""
        return _translate(self.channel, codes)


def _translate(table: IntArray, codes: Any) -> IntArray:
    c = np.asarray(codes, dtype=np.int64)
    out: IntArray = np.where(c >= 0, table[np.maximum(c, 0)] if table.size else -1, -1).astype(np.int64)
    return out


def _extend_codes(stable: IntArray, old_ids: Any, new_ids: Any, tail_codes: Any) -> tuple[IntArray, IntArray]:
    """Return the stable codes of the new frame's codes and the new frame's codes of the added ids."""
    n_old, n_new = int(stable.shape[0]), len(new_ids)
    if n_new == n_old:
        return stable, np.zeros(0, dtype=np.int64)
    used = np.unique(np.asarray(tail_codes, dtype=np.int64))
    used = used[used >= 0]
    pos = np.searchsorted(old_ids, new_ids[used]) if n_old else np.zeros(used.size, dtype=np.int64)
    found = np.zeros(used.size, dtype=np.bool_)
    inside = pos < n_old
    found[inside] = old_ids[pos[inside]] == new_ids[used][inside]
    added = used[~found]  # frame codes (new frame) of the ids the old frame lacked, ascending
    if added.size != n_new - n_old:
        raise ValueError("StableCodes.extended: the new frame is not the old one extended by its last rows")
    # old ids keep their order and stable codes; the j-th added id (new frame code added[j]) comes
    # after added[j] - j old ones and takes the next free stable code: one insert, no table of
    # every new frame code (two int64 ones of 3.6 MiB at 1M views before)
    out: IntArray = np.insert(stable, added - np.arange(added.size), np.arange(n_old, n_new, dtype=stable.dtype))
    return out, added


def grown(array: Any, rows: int, fill: int) -> Any:
    """Return ``array`` with room for at least ``rows`` rows along its first axis (``array`` itself
    when it has them; otherwise a copy with capacity grown by 1/8 + 64 at least, so that a run of
    appends each bringing a new channel copies it rarely), the new rows set to ``fill``."""
    if array.shape[0] >= rows:
        return array
    out = np.full((max(rows, array.shape[0] + array.shape[0] // 8 + 64), *array.shape[1:]), fill, dtype=array.dtype)
    out[: array.shape[0]] = array
    return out


class _SortedTable:
    """A value per non-negative key, sorted, in two levels: keys added since the last merge live in a
    small sorted side table, merged into the main one when it exceeds max(``side_min``, main / 16)
    keys, so adding a key costs O(log n) plus 16 copied keys amortized instead of a copy of the table.

    Keys and values keep the dtypes they were built with (int32 or int64); int32 keys become int64
    when a larger key is added.
    """

    __slots__ = ("keys", "values", "side_keys", "side_values")

    def __init__(self, keys: IntArray, values: IntArray) -> None:
        """Start from distinct ``keys`` in ascending order and their values (their dtypes are kept)."""
        self.keys: IntArray = keys
        self.values: IntArray = values
        self.side_keys: IntArray = np.zeros(0, dtype=keys.dtype)
        self.side_values: IntArray = np.zeros(0, dtype=values.dtype)

    @property
    def size(self) -> int:
        """Return the number of keys."""
        return int(self.keys.size + self.side_keys.size)

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return int(self.keys.nbytes + self.values.nbytes + self.side_keys.nbytes + self.side_values.nbytes)

    def get(self, keys: IntArray, missing: int) -> IntArray:
        """Return the value of each of ``keys`` (``missing`` for a key not held) (k,), int64."""
        out = np.full(keys.size, missing, dtype=np.int64)
        pos, hit = _locate(self.keys, keys)
        out[hit] = self.values[pos[hit]]
        rest = np.flatnonzero(~hit)
        pos, hit = _locate(self.side_keys, keys[rest])
        out[rest[hit]] = self.side_values[pos[hit]]
        return out

    def update(
        self, keys: IntArray, new_values: Callable[[IntArray], IntArray], *, missing: int, side_min: int
    ) -> IntArray:
        """Set distinct ``keys`` (ascending) to ``new_values(previous)``; return the previous values
        (``missing`` for a key not held before, which is added), int64."""
        if keys.size and self.keys.dtype != np.int64 and int(keys[-1]) > _INT32_MAX:
            self.keys, self.side_keys = self.keys.astype(np.int64), self.side_keys.astype(np.int64)
        before = np.full(keys.size, missing, dtype=np.int64)
        main_pos, main_hit = _locate(self.keys, keys)
        before[main_hit] = self.values[main_pos[main_hit]]
        rest = np.flatnonzero(~main_hit)
        side_pos, side_hit = _locate(self.side_keys, keys[rest])
        before[rest[side_hit]] = self.side_values[side_pos[side_hit]]
        after = new_values(before).astype(self.values.dtype)
        self.values[main_pos[main_hit]] = after[main_hit]
        self.side_values[side_pos[side_hit]] = after[rest[side_hit]]
        new = rest[~side_hit]
        if new.size:
            at = np.searchsorted(self.side_keys, keys[new])
            self.side_keys = np.insert(self.side_keys, at, keys[new].astype(self.keys.dtype))
            self.side_values = np.insert(self.side_values, at, after[new])
            if self.side_keys.size > max(side_min, self.keys.size // 16):
                merged = np.concatenate((self.keys, self.side_keys))
                order = np.argsort(merged, kind="stable")
                self.keys = merged[order]
                self.values = np.concatenate((self.values, self.side_values))[order]
                self.side_keys = np.zeros(0, dtype=self.keys.dtype)
                self.side_values = np.zeros(0, dtype=self.values.dtype)
        return before


class LastSeen:
    """Per key, the month bucket (:func:`month_buckets`) of the latest view of a base holding it.

    ``update`` answers, for each appended row, the bucket of the base's previous view of its key:
    a key is new to a slice iff that bucket is below the slice's :func:`window_floor`. Buckets
    rather than instants, because every window starts at the first instant of a local month: the
    answer is the same and a bucket takes 4 bytes. Stored as a two-level sorted table (keys int32
    while they fit, else int64; values int32: 8 bytes per key for video, channel and topic keys):
    an append does not copy the whole table.
    """

    __slots__ = ("table",)

    SIDE_MIN = 4096
    """The side table is merged when it exceeds max(this, main table / 16) keys."""

    def __init__(self, keys: IntArray, buckets: IntArray) -> None:
        """Build from every row of the base (``keys`` −1 = the row has no key; ``buckets`` non-decreasing)."""
        keep = keys >= 0
        k, t = keys[keep], buckets[keep]
        order = np.argsort(k, kind="stable")
        k, t = k[order], t[order]
        last = np.ones(k.size, dtype=np.bool_)
        last[:-1] = k[1:] != k[:-1]
        k = k[last]
        key_type = np.int32 if k.size == 0 or int(k[-1]) <= _INT32_MAX else np.int64
        self.table = _SortedTable(k.astype(key_type), t[last].astype(np.int32))

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return self.table.nbytes

    def update(self, keys: IntArray, buckets: IntArray) -> IntArray:
        """Record appended rows and return, per row, the bucket of its key's previous view.

        Args:
            keys: Key of each appended row (−1: none), rows in time order (r,).
            buckets: Their month buckets, not below any recorded one (r,).

        Returns:
            Per row (r,), int64: the bucket of the latest earlier view of its key (earlier appended
            rows included), ``NONE_BEFORE`` when there is none, ``NO_KEY`` for a row without a key.
        """
        out = np.full(keys.size, NO_KEY, dtype=np.int64)
        has = np.flatnonzero(keys >= 0)
        if has.size == 0:
            return out
        k, t = keys[has].astype(np.int64), buckets[has].astype(np.int64)
        order = np.argsort(k, kind="stable")
        ks, tsort = k[order], t[order]
        first = np.ones(ks.size, dtype=np.bool_)
        first[1:] = ks[1:] != ks[:-1]
        last = np.ones(ks.size, dtype=np.bool_)
        last[:-1] = ks[1:] != ks[:-1]
        latest = tsort[last]  # per distinct key: its latest appended bucket
        earlier = self.table.update(ks[first], lambda _: latest, missing=NONE_BEFORE, side_min=self.SIDE_MIN)
        prev = np.empty(ks.size, dtype=np.int64)
        prev[1:] = tsort[:-1]  # a repeated key's previous view is its previous appended row
        prev[first] = earlier
        result = np.empty(ks.size, dtype=np.int64)
        result[order] = prev
        out[has] = result
        return out


class KeyCounts:
    """Counts per non-negative int64 key (e.g. co-sessions per channel pair), only ever added to.

    A two-level sorted table like :class:`LastSeen`'s (12 bytes per key: int64 keys, int32 counts):
    adding a key does not copy the table. A count must stay below 2^31 (``add`` raises otherwise);
    co-sessions per pair are at most the history's sessions, which are at most its views.
    """

    __slots__ = ("table",)

    SIDE_MIN = 4096
    """The side table is merged when it exceeds max(this, main table / 16) keys."""

    def __init__(self, keys: IntArray, counts: IntArray) -> None:
        """Start from distinct ``keys`` in ascending order and their counts."""
        self.table = _SortedTable(keys.astype(np.int64), _int32_counts(counts).astype(np.int32))

    @property
    def size(self) -> int:
        """Return the number of keys."""
        return self.table.size

    @property
    def keys(self) -> IntArray:
        """Return the main level's keys, ascending (all of them until a key is added to a built table)."""
        return self.table.keys

    @property
    def counts(self) -> IntArray:
        """Return the counts of :attr:`keys`."""
        return self.table.values

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return self.table.nbytes

    def get(self, keys: IntArray) -> IntArray:
        """Return the count of each of ``keys`` (0 for a key never added) (k,), int64."""
        return self.table.get(keys, 0)

    def add(self, keys: IntArray, amounts: IntArray) -> IntArray:
        """Add ``amounts`` to the counts of distinct ``keys`` (ascending); return the counts before (k,), int64.

        Raises:
            OverflowError: a count would reach 2^31 (nothing is changed).
        """
        return self.table.update(
            keys, lambda before: _int32_counts(before + amounts), missing=0, side_min=self.SIDE_MIN
        )


def _int32_counts(counts: IntArray) -> IntArray:
    if counts.size and int(counts.max()) > _INT32_MAX:
        raise OverflowError("KeyCounts: a count does not fit an int32")
    return counts


def _locate(table: IntArray, keys: IntArray) -> tuple[IntArray, BoolArray]:
    """Return the position of each of ``keys`` in the sorted ``table`` and whether it is there.

    int64 ``keys`` that all fit an int32 ``table``'s dtype are narrowed to it first: searching
    int64 keys in an int32 table makes numpy copy the whole table to int64 (3.6 MiB and its copy
    time for a 470 000-key table at 1M views, at every append and kind).
    """
    narrow = table.dtype == np.int32 and keys.dtype != np.int32 and keys.size > 0
    if narrow and int(keys.min()) >= _INT32_MIN and int(keys.max()) <= _INT32_MAX:
        keys = keys.astype(np.int32)
    pos = np.searchsorted(table, keys)
    hit = pos < table.size
    hit[hit] = table[pos[hit]] == keys[hit]
    return pos, hit


# -- key functions of LastSeen kinds: rows → non-negative int64 keys (−1 = none) ----------------------

_TOPIC_SLOTS = 32  # topic code + 1 < 32 (18 topics)
_MONTH_SLOTS = 1 << 18  # month index year*12+month-1 < 120 000 < 2^18 (year ≤ 9999)


def _key(kind: str, video: IntArray, channel: IntArray, topic: IntArray, month: IntArray, day: IntArray) -> IntArray:
    if kind == "day":  # local epoch day (−1 is 1969-12-31, local to a zone west of UTC): shifted ≥ 0
        return day.astype(np.int64) + 1
    if kind == "video":
        return video.astype(np.int64)
    if kind == "channel":
        return channel.astype(np.int64)
    if kind == "topic_video":
        return np.where((video >= 0) & (topic >= 0), video.astype(np.int64) * _TOPIC_SLOTS + topic + 1, -1)
    if kind == "topic_channel":
        return np.where((channel >= 0) & (topic >= 0), channel.astype(np.int64) * _TOPIC_SLOTS + topic + 1, -1)
    if kind == "video_month":
        return np.where(video >= 0, video.astype(np.int64) * _MONTH_SLOTS + month, -1)
    if kind == "channel_month":
        return np.where(channel >= 0, channel.astype(np.int64) * _MONTH_SLOTS + month, -1)
    raise ValueError(f"kind: unknown LastSeen kind {kind!r}")


MONTH_KINDS = frozenset({"video_month", "channel_month"})
"""``LastSeen`` kinds keyed by local month: a base's table holds only the keys of its last two months
(an append's views are later than every earlier view, so their month is at least the last one's
minus one), not the whole history's (at 1M views: 34 of the 63 MiB of distinct-count tables)."""

LAST_SEEN_KINDS = ("day", "video", "channel", "topic_video", "topic_channel", "video_month", "channel_month")
"""Keys ``BaseTail.last_seen`` knows: a local day, a stable video / channel code, (topic, video),
(topic, channel), (video, local month), (channel, local month); rows lacking a part have no key.
(Local days and months are not monotonic in time: where a clock change moves the local time back
across midnight, a later view can fall on an earlier local day.)"""


@dataclass
class BaseMemory:
    """State shared by every timeframe and type of one filter base (built lazily, extended once per append).

    Attributes:
        last_seen: The distinct-count tables, per ``LAST_SEEN_KINDS`` kind.
        shared: Other per-base state of the types, by name (e.g. channel_evolution's monthly views:
            ``evolution.ChannelMonths``); each has an ``nbytes`` property and a ``sync(BaseTail)``
            method that adds an append once (``BaseRun.finish`` calls it at every append).
    """

    last_seen: dict[str, LastSeen] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return sum(s.nbytes for s in self.last_seen.values()) + sum(int(x.nbytes) for x in self.shared.values())


@dataclass
class BaseTail:
    """The views an append added to one filter base (all later than the base's earlier views).

    Columns are int64 (bool for flags), rows in time order; ``video``/``channel`` are stable codes
    (−1 = none).

    Attributes:
        frame: The extended frame (names, first views, id order: through ``codes.channel_code``).
        codes: Stable codes of ``frame``.
        rows: Frame row of each appended view of the base (r,).
        before: Rows of the frame before the append (the appended rows are ``before …``).
    """

    frame: Frame
    codes: StableCodes
    rows: IntArray
    memory: BaseMemory
    fs: FilterSet
    zone: ZoneInfo
    before: int
    _seen: dict[str, IntArray] = field(default_factory=dict, repr=False)
    _build: Any = field(default=None, repr=False)

    @cached_property
    def ts(self) -> IntArray:
        """Return the instants, epoch ms UTC."""
        return self.frame.ts[self.rows].astype(np.int64)

    @cached_property
    def day(self) -> IntArray:
        """Return local epoch days."""
        return self.frame.day[self.rows].astype(np.int64)

    @cached_property
    def bucket(self) -> IntArray:
        """Return month buckets (:func:`month_buckets`)."""
        return month_buckets(self.ts, self.month, self.zone)

    @cached_property
    def month(self) -> IntArray:
        """Return local month indices."""
        return self.frame.month[self.rows].astype(np.int64)

    @cached_property
    def weekday(self) -> IntArray:
        """Return local ISO weekdays (Monday = 0)."""
        return self.frame.weekday[self.rows].astype(np.int64)

    @cached_property
    def hour(self) -> IntArray:
        """Return local hours."""
        return self.frame.hour[self.rows].astype(np.int64)

    @cached_property
    def removed(self) -> BoolArray:
        """Return the removed flags."""
        return self.frame.removed[self.rows]

    @cached_property
    def shorts(self) -> BoolArray:
        """Return the Shorts flags."""
        return self.frame.shorts[self.rows]

    @cached_property
    def video(self) -> IntArray:
        """Return stable video codes (−1 = none)."""
        return self.codes.stable_video(self.frame.video[self.rows])

    @cached_property
    def channel(self) -> IntArray:
        """Return stable channel codes (−1 = none)."""
        return self.codes.stable_channel(self.frame.channel[self.rows])

    @cached_property
    def topic(self) -> IntArray:
        """Return topic codes (−1 = unclassified)."""
        return self.frame.topic[self.rows].astype(np.int64)

    @property
    def size(self) -> int:
        """Return the number of appended views of the base."""
        return int(self.rows.shape[0])

    def last_seen(self, kind: str) -> IntArray:
        """Return, per appended row, the month bucket of the base's previous view of its ``kind`` key
        (``LAST_SEEN_KINDS``).

        ``NONE_BEFORE`` (−1) when the base never had the key, ``NO_KEY`` when the row has none;
        earlier appended rows count. A key is new to a slice iff the answer is below
        ``window_floor(window)``. Computed once per append and kind, shared by every timeframe.
        """
        got = self._seen.get(kind)
        if got is None:
            seen = self.memory.last_seen.get(kind)
            if seen is None:  # first use: built from the base before the append (the frame's first rows)
                seen = self.memory.last_seen[kind] = self._build(kind)
            keys = _key(kind, self.video, self.channel, self.topic, self.month, self.day)
            got = self._seen[kind] = seen.update(keys, self.bucket)
        return got


@dataclass(frozen=True)
class RenderContext:
    """What a render needs besides its state.

    Attributes:
        frame: The current frame (channel ids and names, first views).
        codes: Its stable codes (``codes.channel_code[stable]`` = frame channel code).
        clock: Now, in the user's zone.
        window: The timeframe.
        options: Thresholds.
    """

    frame: Frame
    codes: StableCodes
    clock: Clock
    window: Window
    options: AggregationOptions

    def channel_id(self, stable: int) -> str:
        """Return the id of a stable channel code."""
        return self.frame.channel_ids[int(self.codes.channel_code[stable])]

    def channel_name(self, stable: int) -> str | None:
        """Return the most recent name of a stable channel code."""
        return self.frame.channel_names[int(self.codes.channel_code[stable])]


@dataclass
class SliceInfo:
    """What the framework keeps of a slice between appends (its sessions' end).

    Attributes:
        n: Views of the slice.
        last_ts: Its last instant (None when empty).
        sessions: Its session count.
        last_views: Views of the last session.
        last_first_ts: Instant of the last session's first view.
    """

    n: int
    last_ts: int | None
    sessions: int
    last_views: int
    last_first_ts: int

    @classmethod
    def of(cls, view: Slice) -> SliceInfo:
        """Return the info of a whole slice."""
        if view.n == 0:
            return cls(0, None, 0, 0, 0)
        ses = view.sessions
        s = int(ses.starts[-1])
        return cls(view.n, int(view.ts[-1]), ses.count, int(ses.views[-1]), int(view.ts[s]))


@dataclass
class SliceTail:
    """The views an append added to one slice (filter base × timeframe), with their sessions.

    Columns (``ts``, ``day``, … ``topic``; int64, bool flags) are the base tail's rows ``first:``.
    Sessions continue the slice's numbering: the slice had ``sessions_before`` sessions; when
    ``joins_last`` the first appended view continues session ``sessions_before − 1``.

    Attributes:
        base: The base's appended views.
        window: The slice's timeframe.
        first: Index of the first base tail row inside the window.
        prev_last_ts: The slice's last instant before the append (None: it was empty).
        sessions_before: Sessions of the slice before the append.
        joins_last: Whether the first appended view continues the slice's last session.
        session: Session number of each appended view of the slice (n,).
        estimated_ms: Estimated watch time of each appended view after the append (n,), ms.
        prev_last_estimate_delta_ms: Change of the previous last view's estimate (it gains a next
            view in its session: ``min(gap, cap) − last_view_estimate``), 0 otherwise.
        last_before: ``(views, first_ts)`` of the slice's last session before the append.
    """

    base: BaseTail
    window: Window
    first: int
    prev_last_ts: int | None
    sessions_before: int
    joins_last: bool
    session: IntArray
    estimated_ms: IntArray
    prev_last_estimate_delta_ms: int
    last_before: tuple[int, int]

    @property
    def window_floor(self) -> int:
        """Return :func:`window_floor` of the slice's window (a key is new iff last seen below it)."""
        return window_floor(self.window)

    @property
    def n(self) -> int:
        """Return the number of appended views of the slice."""
        return int(self.base.size - self.first)

    @property
    def ts(self) -> IntArray:
        """Return instants, epoch ms UTC."""
        return self.base.ts[self.first :]

    @property
    def day(self) -> IntArray:
        """Return local epoch days."""
        return self.base.day[self.first :]

    @property
    def month(self) -> IntArray:
        """Return local month indices."""
        return self.base.month[self.first :]

    @property
    def weekday(self) -> IntArray:
        """Return local weekdays."""
        return self.base.weekday[self.first :]

    @property
    def hour(self) -> IntArray:
        """Return local hours."""
        return self.base.hour[self.first :]

    @property
    def removed(self) -> BoolArray:
        """Return removed flags."""
        return self.base.removed[self.first :]

    @property
    def shorts(self) -> BoolArray:
        """Return Shorts flags."""
        return self.base.shorts[self.first :]

    @property
    def video(self) -> IntArray:
        """Return stable video codes (−1 = none)."""
        return self.base.video[self.first :]

    @property
    def channel(self) -> IntArray:
        """Return stable channel codes (−1 = none)."""
        return self.base.channel[self.first :]

    @property
    def topic(self) -> IntArray:
        """Return topic codes (−1 = unclassified)."""
        return self.base.topic[self.first :]

    def last_seen(self, kind: str) -> IntArray:
        """Return ``BaseTail.last_seen(kind)`` for this slice's appended rows (n,)."""
        return self.base.last_seen(kind)[self.first :]


def base_rows_between(frame: Frame, fs: FilterSet, lo: int, hi: int) -> IntArray:
    """Return the frame rows ``lo … hi−1`` passing ``fs``'s filter (product, topics, channels), int64."""
    if hi <= lo:
        return np.zeros(0, dtype=np.int64)
    out: IntArray = np.flatnonzero(filter_mask(frame, fs, lo, hi)).astype(np.int64) + lo
    return out


def slice_tail(base: BaseTail, info: SliceInfo, window: Window, options: AggregationOptions) -> SliceTail:
    """Return the slice's appended views with their sessions, and update ``info`` for them."""
    first = 0 if window.start_ms is None else int(np.searchsorted(base.ts, window.start_ms, side="left"))
    ts = base.ts[first:]
    n = int(ts.shape[0])
    gap, cap, last_est = options.session_gap_ms, options.watch_time_cap_ms, options.last_view_estimate_ms
    before = (info.last_views, info.last_first_ts)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return SliceTail(base, window, first, info.last_ts, info.sessions, False, empty, empty, 0, before)
    gaps = np.diff(ts)
    breaks = gaps > gap
    estimated = np.empty(n, dtype=np.int64)
    estimated[:-1] = np.where(breaks, last_est, np.minimum(gaps, cap))
    estimated[-1] = last_est
    prev = info.last_ts
    joins = prev is not None and ts[0] - prev <= gap
    delta = int(min(int(ts[0]) - prev, cap) - last_est) if joins and prev is not None else 0
    new_session = np.concatenate(([not joins], breaks))
    session = info.sessions - 1 + np.cumsum(new_session)
    starts = np.flatnonzero(new_session)
    if starts.size:  # the last session after the append starts among the appended views
        s = int(starts[-1])
        last_views, last_first = n - s, int(ts[s])
    else:
        last_views, last_first = info.last_views + n, info.last_first_ts
    tail = SliceTail(
        base=base,
        window=window,
        first=first,
        prev_last_ts=prev,
        sessions_before=info.sessions,
        joins_last=bool(joins),
        session=session.astype(np.int64),
        estimated_ms=estimated,
        prev_last_estimate_delta_ms=delta,
        last_before=before,
    )
    info.n += n
    info.last_ts = int(ts[-1])
    info.sessions = int(session[-1]) + 1
    info.last_views, info.last_first_ts = last_views, last_first
    return tail


_State = TypeVar("_State", bound="IncrementalState")


class IncrementalState(Protocol):
    """Incremental implementation of one aggregation type for one slice (see the module docstring)."""

    @classmethod
    def from_slice(cls: type[_State], view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> _State:
        """Build the state of the whole slice (frame codes of ``view`` translate through ``codes``).

        ``shared``: what the slice's states share (its pair counts), kept with the slice; None for
        a state of its own (tests).
        """
        ...

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views of the slice (the window, clock and options are unchanged)."""
        ...

    def render(self, ctx: RenderContext) -> Output:
        """Return what the type's function returns over the whole slice."""
        ...

    @property
    def nbytes(self) -> int:
        """Return the bytes held (numpy arrays; Python objects roughly)."""
        ...
