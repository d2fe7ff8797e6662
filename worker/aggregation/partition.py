"""Encoded partial frames ("partitions") and their merge into a :class:`Frame`. Pure: no I/O.

Building a frame is dominated by per-event Python work: sorting and deduplicating, reading the
fields of every event, classifying titles into topics, collecting the string tables. A
:class:`Partition` holds the result of that work for a subset of one user's events — in the worker,
one local calendar month — as compact numpy columns with their own string tables, so that it can
be kept between recomputes (and serialized with :func:`partition_to_bytes`). :func:`merge_partitions`
turns any number of partitions into the engine's :class:`Frame` with vectorised numpy operations
only (string codes are remapped with ``np.unique``/``np.searchsorted``); its Python work is
proportional to the number of distinct channels, not to the number of events.

Invariants:

* Events with the same ``dedupe_key`` share an instant (the key starts with ``watchedAtMs``), so
  they always fall in the same partition: deduplication inside a partition is deduplication of the
  merged history, as long as partitions hold disjoint sets of instants.
* ``merge_partitions(build_month_partitions(events, zone).values())`` equals
  ``build_frame(events, zone)`` field by field, for any split of the events into partitions with
  disjoint instants.
"""

from __future__ import annotations

import bisect
import json
import mmap
import struct
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from worker.aggregation.frame import PRODUCT_CODES, BoolArray, Frame, IntArray, local_offsets_ms
from worker.aggregation.taxonomy import MUSIC_TOPIC, TAXONOMY_VERSION, TOPIC_SLUGS, classify_topic
from worker.aggregation.timeframes import DAY_MS, HOUR_MS, check_instant
from worker.models import WatchEvent

__all__ = [
    "PARTITION_FORMAT_VERSION",
    "Payload",
    "Partition",
    "build_partition",
    "build_month_partitions",
    "MonthPartitioner",
    "merge_partitions",
    "combine_partitions",
    "extend_frame",
    "frame_nbytes",
    "PartitionShell",
    "shell_of",
    "refill_partitions",
    "local_months",
    "partition_to_bytes",
    "partition_payload",
    "MAPPED_MIN_BYTES",
    "json_int",
    "kept_payload",
    "partition_from_bytes",
]

PARTITION_FORMAT_VERSION: Final = 1
"""Version of the serialized layout written by :func:`partition_to_bytes`."""

BytesArray: TypeAlias = npt.NDArray[np.bytes_]
Payload: TypeAlias = bytes | mmap.mmap
"""A serialized partition: ``bytes`` or a memory map holding them (:func:`partition_payload`)."""
_TOPIC_CODE = {slug: i for i, slug in enumerate(TOPIC_SLUGS)}
_NO_NAME_MS: Final = -1
_NO_BYTES: Final = np.zeros(0, dtype="|S1")
_MAGIC: Final = b"WAGP"
_PREFIX = struct.Struct("<4sHHI")  # magic, format version, reserved, header length
_ALIGN: Final = 8


@dataclass(frozen=True, slots=True)
class Partition:
    """Sorted, deduplicated, encoded subset of one user's views (n views, c channels, v videos).

    Rows are in the order of :class:`Frame` (``(watched_at_ms, dedupe_key)``, duplicates dropped).
    Codes are -1 when absent; removed views have video, channel and topic -1. The partition is
    tied to the time zone it was built in (``offset_ms``) and to the taxonomy (``topic`` codes
    index ``TOPIC_SLUGS``).

    Attributes:
        ts: Instant, epoch ms UTC, int64 (n,), non-decreasing.
        offset_ms: UTC offset in force at each instant, ms (local − UTC), int32 (n,).
        product: 0 = youtube, 1 = youtube_music, int8 (n,).
        removed: True for ``kind == "removed"``, bool (n,).
        shorts: True when flags contain ``"shorts"``, bool (n,).
        video: Index into ``video_ids`` or -1, int32 (n,).
        channel: Index into ``channel_ids`` or -1, int32 (n,).
        topic: Index into ``TOPIC_SLUGS`` or -1, int8 (n,).
        video_ids: Distinct video ids of the partition, UTF-8, sorted, numpy bytes (v,).
        channel_ids: Distinct channel ids of the partition, UTF-8, sorted, numpy bytes (c,). Ids
            are compared as numpy fixed-width bytes, which ignore trailing NUL bytes.
        channel_first_ms: First view of each channel within the partition, epoch ms UTC, int64 (c,).
        channel_name_ms: Instant of the most recent view of each channel carrying a non-empty
            name within the partition, epoch ms UTC, or -1 when none did, int64 (c,).
        name_offsets: Byte offsets of each channel's name in ``name_blob``, int64 (c + 1,); an
            empty slice means no name.
        name_blob: The channel names, UTF-8, concatenated.
    """

    ts: IntArray
    offset_ms: npt.NDArray[np.int32]
    product: npt.NDArray[np.int8]
    removed: BoolArray
    shorts: BoolArray
    video: npt.NDArray[np.int32]
    channel: npt.NDArray[np.int32]
    topic: npt.NDArray[np.int8]
    video_ids: BytesArray
    channel_ids: BytesArray
    channel_first_ms: IntArray
    channel_name_ms: IntArray
    name_offsets: IntArray
    name_blob: bytes

    @property
    def size(self) -> int:
        """Return the number of views."""
        return int(self.ts.shape[0])

    def channel_name(self, code: int) -> str | None:
        """Return the most recent non-empty name of a partition channel code, or None."""
        lo, hi = int(self.name_offsets[code]), int(self.name_offsets[code + 1])
        return self.name_blob[lo:hi].decode("utf-8") if hi > lo else None

    @property
    def nbytes(self) -> int:
        """Return the memory held by the arrays and the name blob, in bytes."""
        arrays = (getattr(self, name) for name, _ in _SCHEMA)
        return sum(int(a.nbytes) for a in arrays if isinstance(a, np.ndarray)) + len(self.name_blob)


@dataclass(frozen=True, slots=True)
class _Rows:
    """All events of one build, encoded once, with codes into history-wide sorted tables."""

    ts: IntArray
    offset_ms: IntArray
    product: IntArray
    removed: BoolArray
    shorts: BoolArray
    video: IntArray
    channel: IntArray
    topic: IntArray
    name: IntArray
    video_ids: BytesArray
    channel_ids: BytesArray
    names: list[str]


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


def _topic_code(product: str, title: str | None, channel_name: str | None) -> int:
    """Topic code of one (non-removed) view: YouTube Music plays are music; else the keyword classifier."""
    if product == "youtube_music":
        return _TOPIC_CODE[MUSIC_TOPIC]
    slug = classify_topic(title, channel_name)
    return -1 if slug is None else _TOPIC_CODE[slug]


def _utf8_array(values: Sequence[str]) -> BytesArray:
    """Return the UTF-8 encodings as a numpy bytes array; byte order of UTF-8 is code point order."""
    out: BytesArray = np.array([v.encode("utf-8") for v in values], dtype=np.bytes_) if values else _NO_BYTES
    return out


def _dedupe(events: Sequence[WatchEvent]) -> list[WatchEvent]:
    """Return the events sorted by ``(watched_at_ms, dedupe_key)``, one per dedupe key.

    Of events sharing a dedupe key, the smallest by the total order of every field is kept, so
    input order never matters. Dedupe keys start with the instant, so only events sharing an
    instant are compared by key (in Python); the rest is one numpy sort.
    """
    n = len(events)
    ts = np.fromiter((e.watched_at_ms for e in events), dtype=np.int64, count=n)
    order = np.argsort(ts, kind="stable")
    ts_sorted = ts[order]
    tied = np.flatnonzero(ts_sorted[1:] == ts_sorted[:-1])
    if tied.size == 0:
        return [events[i] for i in order.tolist()]
    # runs of equal instants: [start, end) in sorted positions
    run_start = np.flatnonzero(np.concatenate(([True], ts_sorted[1:] != ts_sorted[:-1])))
    run_end = np.append(run_start[1:], n)
    multi = (run_end - run_start) > 1
    out: list[WatchEvent] = []
    pos = 0
    ordered = order.tolist()
    for lo, hi in zip(run_start[multi].tolist(), run_end[multi].tolist(), strict=True):
        out.extend(events[i] for i in ordered[pos:lo])
        group = sorted((events[i] for i in ordered[lo:hi]), key=lambda e: (e.dedupe_key, _sort_key(e)))
        previous: str | None = None
        for e in group:
            key = e.dedupe_key
            if key != previous:
                out.append(e)
                previous = key
        pos = hi
    out.extend(events[i] for i in ordered[pos:])
    return out


def _codes(values: list[str | None]) -> tuple[BytesArray, IntArray]:
    """Return the sorted distinct non-None values (UTF-8) and each value's code into them (-1 for None)."""
    table = sorted({v for v in values if v is not None})  # Python sorts str by code point
    index: dict[str | None, int] = {v: i for i, v in enumerate(table)}
    index[None] = -1
    codes: IntArray = np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values))
    return _utf8_array(table), codes


def _encode_rows(events: Iterable[WatchEvent], zone: ZoneInfo) -> _Rows:
    """Sort, deduplicate and encode events: the only per-event Python work of the engine.

    Each field is read in one list comprehension; string tables are built with one dict pass and a
    sort of the distinct values only; each distinct (title, channel name) is classified once.
    """
    rows = _dedupe(events if isinstance(events, Sequence) else list(events))
    n = len(rows)
    ts = np.fromiter((e.watched_at_ms for e in rows), dtype=np.int64, count=n)
    if n:
        check_instant("watched_at_ms", int(ts[0]))
        check_instant("watched_at_ms", int(ts[-1]))
    product_codes = PRODUCT_CODES
    removed = np.fromiter((e.kind == "removed" for e in rows), dtype=np.bool_, count=n)
    product = np.fromiter((product_codes[e.product] for e in rows), dtype=np.int64, count=n)
    shorts = np.fromiter(("shorts" in e.flags for e in rows), dtype=np.bool_, count=n)
    video_ids, video = _codes([e.video_id or None for e in rows])
    channel_l = [e.channel_id or None for e in rows]
    channel_ids, channel = _codes(channel_l)
    name_table: dict[str | None, int] = {None: -1}
    name = np.fromiter(
        (
            name_table.setdefault((e.channel_name or None) if c is not None else None, len(name_table) - 1)
            for e, c in zip(rows, channel_l, strict=True)
        ),
        dtype=np.int64,
        count=n,
    )
    music = _TOPIC_CODE[MUSIC_TOPIC]
    topic_cache: dict[tuple[str | None, str | None], int] = {}

    def topic_of(e: WatchEvent) -> int:
        if e.product == "youtube_music":
            return music
        key = (None if "title_unknown" in e.flags else e.title, e.channel_name)
        code = topic_cache.get(key)
        if code is None:
            slug = classify_topic(*key)
            code = topic_cache[key] = -1 if slug is None else _TOPIC_CODE[slug]
        return code

    topic = np.fromiter((topic_of(e) for e in rows), dtype=np.int64, count=n)
    if removed.any():
        # removed views have no video, channel or topic (table entries left unused are dropped by _compact)
        video[removed] = -1
        channel[removed] = -1
        name[removed] = -1
        topic[removed] = -1
    return _Rows(
        ts=ts,
        offset_ms=local_offsets_ms(ts, zone),
        product=product,
        removed=removed,
        shorts=shorts,
        video=video,
        channel=channel,
        topic=topic,
        name=name,
        video_ids=video_ids,
        channel_ids=channel_ids,
        names=[s for s in name_table if s is not None],
    )


def _compact(codes: IntArray, table: BytesArray) -> tuple[npt.NDArray[np.int32], BytesArray, IntArray]:
    """Return codes into the used part of ``table``, that part (still sorted), and the used codes."""
    used: IntArray = np.unique(codes[codes >= 0])
    remapped = np.where(codes >= 0, np.searchsorted(used, codes), -1)
    return remapped.astype(np.int32), table[used], used


def _pack(rows: _Rows, idx: IntArray | None) -> Partition:
    """Build the partition of ``rows[idx]`` (all rows when None); ``idx`` ascending."""

    def sel(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return a if idx is None else a[idx]

    ts = sel(rows.ts)
    video, video_ids, _ = _compact(sel(rows.video), rows.video_ids)
    channel, channel_ids, _ = _compact(sel(rows.channel), rows.channel_ids)
    c = int(channel_ids.shape[0])
    has = channel >= 0
    ch_rows = channel[has]
    first_ms = np.zeros(c, dtype=np.int64)
    if c:
        _, first_at = np.unique(ch_rows, return_index=True)
        first_ms = ts[has][first_at].astype(np.int64)
    name_ms = np.full(c, _NO_NAME_MS, dtype=np.int64)
    name_of = np.full(c, -1, dtype=np.int64)
    named = has & (sel(rows.name) >= 0)
    if named.any():
        ch_named = channel[named][::-1]
        uniq, last_rev = np.unique(ch_named, return_index=True)
        ts_named = ts[named][::-1]
        name_ms[uniq] = ts_named[last_rev]
        name_of[uniq] = sel(rows.name)[named][::-1][last_rev]
    encoded = [b"" if k < 0 else rows.names[k].encode("utf-8") for k in name_of.tolist()]
    offsets = np.zeros(c + 1, dtype=np.int64)
    if c:
        offsets[1:] = np.cumsum([len(b) for b in encoded])
    return Partition(
        ts=ts.astype(np.int64),
        offset_ms=sel(rows.offset_ms).astype(np.int32),
        product=sel(rows.product).astype(np.int8),
        removed=sel(rows.removed),
        shorts=sel(rows.shorts),
        video=video,
        channel=channel,
        topic=sel(rows.topic).astype(np.int8),
        video_ids=video_ids,
        channel_ids=channel_ids,
        channel_first_ms=first_ms,
        channel_name_ms=name_ms,
        name_offsets=offsets,
        name_blob=b"".join(encoded),
    )


def local_months(ts: IntArray, offset_ms: npt.NDArray[Any]) -> IntArray:
    """Return the local month index ``year*12 + month-1`` of each instant (vectorised).

    Args:
        ts: Instants, epoch ms UTC (n,).
        offset_ms: UTC offset at each instant, ms (n,).

    Returns:
        Month indexes, int64 (n,).
    """
    day = (ts + offset_ms.astype(np.int64)) // DAY_MS
    out: IntArray = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) + 1970 * 12
    return out


def build_partition(events: Iterable[WatchEvent], zone: ZoneInfo) -> Partition:
    """Sort, deduplicate and encode events into one partition.

    Args:
        events: Views of one user, any order; duplicate ``dedupe_key``s are counted once.
        zone: The user's time zone (offsets are computed in it).

    Returns:
        The partition (empty arrays for no events).

    Raises:
        ValueError: a ``watched_at_ms`` outside 1970-01-01 … 9999-12-30 (message names ``watched_at_ms``).
    """
    return _pack(_encode_rows(events, zone), None)


def build_month_partitions(events: Iterable[WatchEvent], zone: ZoneInfo) -> dict[int, Partition]:
    """Encode events once and split them into one partition per local month.

    Args:
        events: Views of one user, any order; duplicate ``dedupe_key``s are counted once.
        zone: The user's time zone; months are local calendar months in it.

    Returns:
        ``{month index: partition}`` for every month holding at least one view, ascending.

    Raises:
        ValueError: a ``watched_at_ms`` outside 1970-01-01 … 9999-12-30 (message names ``watched_at_ms``).
    """
    rows = _encode_rows(events, zone)
    if rows.ts.size == 0:
        return {}
    month = local_months(rows.ts, rows.offset_ms)
    order = np.argsort(month, kind="stable")
    uniq, starts = np.unique(month[order], return_index=True)
    bounds = [*starts.tolist(), int(order.size)]
    return {int(m): _pack(rows, order[bounds[k] : bounds[k + 1]].astype(np.int64)) for k, m in enumerate(uniq.tolist())}


def _take_rows(rows: _Rows, idx: IntArray) -> _Rows:
    """Return the rows ``idx`` (ascending) of ``rows``, with the same string tables."""
    return _Rows(
        ts=rows.ts[idx],
        offset_ms=rows.offset_ms[idx],
        product=rows.product[idx],
        removed=rows.removed[idx],
        shorts=rows.shorts[idx],
        video=rows.video[idx],
        channel=rows.channel[idx],
        topic=rows.topic[idx],
        name=rows.name[idx],
        video_ids=rows.video_ids,
        channel_ids=rows.channel_ids,
        names=rows.names,
    )


def _unite_codes(tables: list[BytesArray], columns: list[IntArray]) -> tuple[BytesArray, IntArray]:
    """Return the sorted union of string tables and the columns' codes into it, concatenated (-1 kept)."""
    united, inverse = np.unique(np.concatenate(tables), return_inverse=True)
    out: list[IntArray] = []
    lo = 0
    for table, codes in zip(tables, columns, strict=True):
        ext = np.append(inverse[lo : lo + table.size].astype(np.int64), np.int64(-1))
        out.append(ext[codes])  # code -1 picks the appended -1
        lo += table.size
    return united, np.concatenate(out)


def _concat_rows(pieces: list[_Rows]) -> _Rows:
    """Concatenate encoded rows holding disjoint, increasing instants (string tables united)."""
    if len(pieces) == 1:
        return pieces[0]
    video_ids, video = _unite_codes([p.video_ids for p in pieces], [p.video for p in pieces])
    channel_ids, channel = _unite_codes([p.channel_ids for p in pieces], [p.channel for p in pieces])
    names: list[str] = []
    name_columns: list[IntArray] = []
    for p in pieces:
        name_columns.append(np.where(p.name >= 0, p.name + len(names), -1))
        names.extend(p.names)

    def cat(name: str) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = np.concatenate([getattr(p, name) for p in pieces])
        return out

    return _Rows(
        ts=cat("ts"),
        offset_ms=cat("offset_ms"),
        product=cat("product"),
        removed=cat("removed"),
        shorts=cat("shorts"),
        video=video,
        channel=channel,
        topic=cat("topic"),
        name=np.concatenate(name_columns),
        video_ids=video_ids,
        channel_ids=channel_ids,
        names=names,
    )


class MonthPartitioner:
    """Build month partitions from events arriving in time order, page by page.

    Each page is encoded as it arrives (:func:`build_partition`'s per-event work) and its WatchEvent
    objects are released; a month's encoded pages are concatenated into its partition when it is
    finished. Reading a whole history therefore keeps about one page of :class:`WatchEvent` objects
    alive (not one month of them), which bounds the small-object memory the interpreter grows to
    and keeps for the rest of the process. The views of the latest instant seen are held back and
    encoded with the next page, so that the views of one instant (the only ones deduplication
    compares) are always encoded together. A month is finished when a view of a later local month
    arrives; :meth:`finish` builds the rest.

    If an event arrives before the latest instant of an earlier page, or for a month already
    finished (a zone whose local month is not one UTC interval), :attr:`out_of_order` turns True
    and the builder ignores further input: the caller must drop what it took and split the events
    with :func:`build_month_partitions` instead. :meth:`take_finished` hands finished months over
    early (e.g. to serialize them at once).

    Args:
        zone: The user's time zone; months are local calendar months in it.
        keep: When given, only views of these local months are taken (the others are dropped: a
            month's UTC range can hold the next month's first instants, see
            :func:`worker.partitions.month_bounds_ms`).
    """

    def __init__(self, zone: ZoneInfo, keep: Iterable[int] | None = None) -> None:
        self.zone = zone
        self.keep = None if keep is None else np.array(sorted(set(keep)), dtype=np.int64)
        self.out_of_order = False
        self._open: dict[int, list[_Rows]] = {}
        self._held: list[WatchEvent] = []
        self._held_ms: int | None = None
        self._finished: dict[int, Partition] = {}
        self._built: set[int] = set()

    def _refuse(self) -> None:
        self.out_of_order = True
        self._open.clear()
        self._held = []
        self._finished.clear()

    def add(self, events: Sequence[WatchEvent]) -> None:
        """Take the next page of events (in ``watched_at_ms`` order across pages, any order within one).

        Raises:
            ValueError: a ``watched_at_ms`` outside 1970-01-01 … 9999-12-30.
        """
        if self.out_of_order or not events:
            return
        ts = np.fromiter((e.watched_at_ms for e in events), dtype=np.int64, count=len(events))
        check_instant("watched_at_ms", int(ts.min()))
        check_instant("watched_at_ms", int(ts.max()))
        if self.keep is not None:
            wanted = np.isin(local_months(ts, local_offsets_ms(ts, self.zone)), self.keep)
            if not wanted.all():
                picked = np.flatnonzero(wanted)
                events = [events[i] for i in picked.tolist()]
                ts = ts[picked]
                if not events:
                    return
        first, last = int(ts.min()), int(ts.max())
        if self._held_ms is not None and first < self._held_ms:
            self._refuse()
            return
        if self._held_ms == last:  # the whole page shares the held instant
            self._held.extend(events)
            return
        ready: list[WatchEvent] = []
        held: list[WatchEvent] = []
        for e, hold in zip(events, (ts == last).tolist(), strict=True):
            (held if hold else ready).append(e)
        self._encode([*self._held, *ready])
        self._held = held
        self._held_ms = last
        if self.out_of_order:
            return
        newest = local_months(np.array([last], dtype=np.int64), local_offsets_ms(np.array([last]), self.zone))
        self._finish_before(int(newest[0]))

    def _encode(self, events: list[WatchEvent]) -> None:
        """Encode views of instants before the held one and file them under their local months."""
        if not events:
            return
        rows = _encode_rows(events, self.zone)
        months = local_months(rows.ts, rows.offset_ms)
        distinct = np.unique(months).tolist()
        if any(m in self._built for m in distinct):
            self._refuse()
            return
        if len(distinct) == 1:
            self._open.setdefault(distinct[0], []).append(rows)
            return
        for m in distinct:
            self._open.setdefault(m, []).append(_take_rows(rows, np.flatnonzero(months == m)))

    def _finish_before(self, month: int) -> None:
        for m in sorted(k for k in self._open if k < month):
            self._finished[m] = _pack(_concat_rows(self._open.pop(m)), None)
            self._built.add(m)

    def take_finished(self) -> dict[int, Partition]:
        """Return the months finished since the last call (ascending) and stop holding them."""
        out, self._finished = self._finished, {}
        return out

    def finish(self) -> dict[int, Partition]:
        """Build the open months; return them with the finished months not taken yet (empty if out of order)."""
        if not self.out_of_order:
            held, self._held = self._held, []
            self._encode(held)
        if self.out_of_order:
            return {}
        self._finish_before(np.iinfo(np.int64).max)
        return dict(sorted(self.take_finished().items()))


def _remap(codes: npt.NDArray[Any], local_table: BytesArray, merged_table: BytesArray) -> IntArray:
    """Translate partition codes into codes of ``merged_table`` (a sorted superset), -1 kept."""
    ext = np.append(np.searchsorted(merged_table, local_table).astype(np.int64), np.int64(-1))
    out: IntArray = ext[codes]  # code -1 picks the appended -1
    return out


def merge_partitions(parts: Iterable[Partition]) -> Frame:
    """Concatenate partitions into the engine's frame, remapping string codes.

    The string tables are merged first; then the frame's columns are filled partition by
    partition and each partition is released once its rows are copied. When nothing else holds
    the partitions (``parts`` is an iterator that hands over the only references, e.g. one
    popping them from a dict), each one's memory is freed as soon as it is merged, so the
    partitions and the whole frame are never held together.

    Args:
        parts: Partitions of one user built in the same time zone, any order, holding disjoint
            sets of instants (e.g. one per local month).

    Returns:
        The frame of the union of the partitions' views: identical to ``build_frame`` over the
        union of their events.
    """
    ps = sorted((p for p in parts if p.size), key=lambda p: int(p.ts[0]))
    if not ps:
        empty_i = np.zeros(0, dtype=np.int64)
        empty_32 = np.zeros(0, dtype=np.int32)
        empty_8 = np.zeros(0, dtype=np.int8)
        empty_b = np.zeros(0, dtype=np.bool_)
        return Frame(
            ts=empty_i,
            day=empty_32,
            month=empty_32,
            weekday=empty_8,
            hour=empty_8,
            product=empty_8,
            removed=empty_b,
            shorts=empty_b,
            video=empty_32,
            channel=empty_32,
            topic=empty_8,
            video_ids=_NO_BYTES,
            channel_ids=(),
            channel_names=(),
            channel_first_ms=empty_i,
            topic_slugs=TOPIC_SLUGS,
        )
    video_ids = np.unique(np.concatenate([p.video_ids for p in ps]))
    channel_ids = np.unique(np.concatenate([p.channel_ids for p in ps]))
    first_ms, names = _merged_channel_tables(ps, channel_ids)
    # fill the frame's columns partition by partition: temporaries stay the size of one partition,
    # and each partition is dropped once copied (freed then unless the caller still holds it)
    n = sum(p.size for p in ps)
    ts = np.empty(n, dtype=np.int64)
    day = np.empty(n, dtype=np.int32)
    month = np.empty(n, dtype=np.int32)
    weekday = np.empty(n, dtype=np.int8)
    hour = np.empty(n, dtype=np.int8)
    product = np.empty(n, dtype=np.int8)
    removed = np.empty(n, dtype=np.bool_)
    shorts = np.empty(n, dtype=np.bool_)
    video = np.empty(n, dtype=np.int32)
    channel = np.empty(n, dtype=np.int32)
    topic = np.empty(n, dtype=np.int8)
    pos = 0
    ps.reverse()  # popped from the end, earliest first
    while ps:
        p = ps.pop()
        end = pos + p.size
        ts[pos:end] = p.ts
        local = p.ts + p.offset_ms.astype(np.int64)
        p_day = local // DAY_MS
        day[pos:end] = p_day
        month[pos:end] = p_day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) + 1970 * 12
        weekday[pos:end] = (p_day + 3) % 7  # 1970-01-01 was a Thursday (ISO weekday index 3)
        hour[pos:end] = (local // HOUR_MS) % 24
        product[pos:end] = p.product
        removed[pos:end] = p.removed
        shorts[pos:end] = p.shorts
        video[pos:end] = _remap(p.video, p.video_ids, video_ids)
        channel[pos:end] = _remap(p.channel, p.channel_ids, channel_ids)
        topic[pos:end] = p.topic
        pos = end
        del p, local, p_day
    columns: list[npt.NDArray[Any]] = [ts, day, month, weekday, hour, product, removed, shorts, video, channel, topic]
    if n > 1 and bool((ts[1:] < ts[:-1]).any()):
        # partitions interleave in time (only when a local month is not one UTC interval); equal
        # instants always share a partition, so a stable sort restores the frame order exactly
        order = np.argsort(ts, kind="stable")
        for column in columns:
            column[:] = column[order]
        del order

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
        channel_ids=tuple(c.decode("utf-8") for c in channel_ids.tolist()),
        channel_names=tuple(names),
        channel_first_ms=first_ms,
        topic_slugs=TOPIC_SLUGS,
    )


def _merged_channel_tables(ps: list[Partition], channel_ids: BytesArray) -> tuple[IntArray, list[str | None]]:
    """Return each merged channel's first view (epoch ms UTC, int64 (C,)) and most recent name (C,).

    Args:
        ps: The partitions being merged (non-empty ones, any order).
        channel_ids: The union of their ``channel_ids``, sorted (C,).
    """
    n_channels = int(channel_ids.shape[0])
    all_codes = np.concatenate([np.searchsorted(channel_ids, p.channel_ids).astype(np.int64) for p in ps])
    first_ms = np.full(n_channels, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_ms, all_codes, np.concatenate([p.channel_first_ms for p in ps]))
    # most recent name: among every partition's named channels, the one named last
    name_ms = np.concatenate([p.channel_name_ms for p in ps])
    part_of = np.concatenate([np.full(p.channel_ids.shape[0], k, dtype=np.int64) for k, p in enumerate(ps)])
    local_of = np.concatenate([np.arange(p.channel_ids.shape[0], dtype=np.int64) for p in ps])
    named = np.flatnonzero(name_ms != _NO_NAME_MS)
    order = named[np.lexsort((name_ms[named], all_codes[named]))]
    codes_sorted = all_codes[order]
    last = np.flatnonzero(np.append(codes_sorted[1:] != codes_sorted[:-1], True)) if order.size else order
    names: list[str | None] = [None] * n_channels
    for g, k, j in zip(
        codes_sorted[last].tolist(), part_of[order[last]].tolist(), local_of[order[last]].tolist(), strict=True
    ):
        names[g] = ps[k].channel_name(j)
    return first_ms, names


def combine_partitions(base: Partition, extra: Partition) -> Partition | None:
    """Return the partition of the union of two partitions' views (an append to a cached month).

    Both must be built in the same time zone and taxonomy. Rows are merged by instant; string
    tables are united and codes remapped; a channel's first view is the earlier of the two, its
    name the one seen last. Exact only when no instant occurs in both (rows of one instant are
    ordered by dedupe key, which a partition does not keep), so the combination is refused then.

    Args:
        base: The cached partition.
        extra: The new views' partition.

    Returns:
        The combined partition (equal to ``build_partition`` over the union of both events), or
        None when the two share an instant (the caller reads the month again instead).
    """
    if extra.size == 0:
        return base
    if base.size == 0:
        return extra
    pos = np.searchsorted(base.ts, extra.ts)
    hit = pos < base.size
    if bool((base.ts[pos[hit]] == extra.ts[hit]).any()):
        return None
    ts = np.concatenate([base.ts, extra.ts])
    order = np.argsort(ts, kind="stable")  # equal instants lie in one input, in their stored order

    def rows(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = np.concatenate([a, b])[order]
        return out

    # both tables are sorted and distinct: unite them by searching the few new ids in the month's
    # table (sorting the month's ids again cost most of an append's combination at 1M views)
    video_ids, base_video, extra_video = _union_bytes(base.video_ids, extra.video_ids)
    channel_ids, base_channel, extra_channel = _union_bytes(base.channel_ids, extra.channel_ids)
    video = rows(_recode(base.video, base_video), _recode(extra.video, extra_video))
    channel = rows(_recode(base.channel, base_channel), _recode(extra.channel, extra_channel))
    c = int(channel_ids.shape[0])
    base_codes = np.arange(base.channel_ids.shape[0], dtype=np.int64) if base_channel is None else base_channel
    parts, maps = (base, extra), [base_codes.astype(np.int64), extra_channel]
    first_ms = np.full(c, np.iinfo(np.int64).max, dtype=np.int64)
    name_ms = np.full(c, _NO_NAME_MS, dtype=np.int64)
    source = np.full(c, -1, dtype=np.int64)  # which part names each channel (-1: none)
    local_of = np.zeros(c, dtype=np.int64)  # the channel's code in that part
    for k, (part, codes) in enumerate(zip(parts, maps, strict=True)):
        np.minimum.at(first_ms, codes, part.channel_first_ms)
        newer = np.flatnonzero(part.channel_name_ms > name_ms[codes])  # no ties: instants are disjoint
        name_ms[codes[newer]] = part.channel_name_ms[newer]
        source[codes[newer]], local_of[codes[newer]] = k, newer
    offsets, blob = _gather_names(parts, source, local_of)
    return Partition(
        ts=ts[order],
        offset_ms=rows(base.offset_ms, extra.offset_ms),
        product=rows(base.product, extra.product),
        removed=rows(base.removed, extra.removed),
        shorts=rows(base.shorts, extra.shorts),
        video=video,
        channel=channel,
        topic=rows(base.topic, extra.topic),
        video_ids=video_ids,
        channel_ids=channel_ids,
        channel_first_ms=first_ms,
        channel_name_ms=name_ms,
        name_offsets=offsets,
        name_blob=blob,
    )


def _gather_names(parts: Sequence[Partition], source: IntArray, local_of: IntArray) -> tuple[IntArray, bytes]:
    """Return the name offsets and blob of channels named by ``parts[source[i]]``'s channel
    ``local_of[i]`` (no name where ``source`` is -1): the bytes gathered in numpy, not one slice per
    channel in Python (about 5 of the 8 ms an append's combination took at 1M views, 5 000 channels)."""
    lengths = np.zeros(source.shape[0], dtype=np.int64)
    starts = np.zeros(source.shape[0], dtype=np.int64)
    for k, part in enumerate(parts):
        mine = source == k
        local = local_of[mine]
        starts[mine] = part.name_offsets[local]
        lengths[mine] = part.name_offsets[local + 1] - part.name_offsets[local]
    offsets = np.zeros(source.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    blob = np.empty(int(offsets[-1]), dtype=np.uint8)
    for k, part in enumerate(parts):
        mine = np.flatnonzero((source == k) & (lengths > 0))
        if mine.size == 0:
            continue
        n = lengths[mine]
        # byte j of channel i's name: from its start in the part, to its offset in the blob
        within = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
        text = np.frombuffer(part.name_blob, dtype=np.uint8)
        blob[np.repeat(offsets[mine], n) + within] = text[np.repeat(starts[mine], n) + within]
    return offsets, blob.tobytes()


def _union_bytes(old: BytesArray, new: BytesArray) -> tuple[BytesArray, npt.NDArray[np.int32] | None, IntArray]:
    """Unite two sorted, distinct bytes tables.

    Returns the united table (sorted), the new code of each ``old`` entry (int32; None when
    unchanged: ``new`` brought nothing ``old`` lacks), and the code of each ``new`` entry (int64).
    """
    if old.size == 0:
        return new, None, np.arange(new.size, dtype=np.int64)
    pos = np.searchsorted(old, new)
    found = (pos < old.size) & (old[np.minimum(pos, old.size - 1)] == new)
    missing = new[~found]
    if missing.size == 0:
        return old, None, pos.astype(np.int64)
    width = max(old.dtype.itemsize, missing.dtype.itemsize)
    at = np.searchsorted(old, missing)
    united = np.insert(old.astype(f"S{width}", copy=False), at, missing.astype(f"S{width}"))
    return united, _codes_after_insert(old.size, at), np.searchsorted(united, new).astype(np.int64)


def _codes_after_insert(n_old: int, at: IntArray) -> npt.NDArray[np.int32]:
    """Return the new code of each of ``n_old`` sorted entries once new ones are inserted before the
    old positions ``at`` (non-decreasing: the new entries sorted too).

    The old entries keep their order around the inserted ones (the j-th new entry lands at
    ``at[j] + j``): an old entry moves up by the new entries inserted before it, one slice per new
    entry, int32 (for a table of the history's videos: 2 MiB at 1M views, not three int64 tables).
    """
    codes = np.arange(n_old, dtype=np.int32)
    bounds = [*at.tolist(), n_old]
    for j in range(len(bounds) - 1):
        if bounds[j] < bounds[j + 1]:
            codes[bounds[j] : bounds[j + 1]] += j + 1
    return codes


def _recode(codes: npt.NDArray[Any], mapping: npt.NDArray[Any] | None) -> npt.NDArray[np.int32]:
    """Apply a code mapping to a code column (-1 kept), as int32."""
    if mapping is None:
        return codes.astype(np.int32, copy=False)
    return _recode_into(codes, mapping, np.empty(codes.shape[0], dtype=np.int32))


def _recode_into(
    codes: npt.NDArray[Any], mapping: npt.NDArray[Any], out: npt.NDArray[np.int32]
) -> npt.NDArray[np.int32]:
    """Write ``mapping`` applied to ``codes`` (-1 kept) into ``out`` (same length) and return it."""
    ext = np.empty(mapping.shape[0] + 1, dtype=np.int32)  # int32 throughout: half the time of an int64 gather
    ext[:-1] = mapping
    ext[-1] = -1  # code -1 picks it
    # np.take turns int32 indices into an int64 copy first (8 MiB at 1M rows): taken in runs of
    # _TAKE_ROWS rows, the copy is 512 KiB, and the whole is faster (3.5 vs 11 ms at 1M rows). "wrap"
    # reads -1 as the last entry, as "raise" does, and writes into ``out`` unbuffered ("raise" writes
    # into a temporary copy first); every other code is in range (it indexes ``mapping``).
    for at in range(0, codes.shape[0], _TAKE_ROWS):
        np.take(ext, codes[at : at + _TAKE_ROWS], out=out[at : at + _TAKE_ROWS], mode="wrap")
    return out


_TAKE_ROWS = 1 << 16


def _recoded_rows(
    a: npt.NDArray[Any], mapping: npt.NDArray[Any] | None, b: npt.NDArray[np.int32]
) -> npt.NDArray[np.int32]:
    """Return the code column ``a`` recoded by ``mapping`` (:func:`_recode`), followed by ``b``.

    As :func:`_append_rows` of the two, but a recoded ``a`` is written straight into the new buffer
    (with its room to spare) instead of into a copy first: one column of the history (4 MiB at 1M
    views) less allocated and copied at every append bringing a new id that sorts among the old.
    """
    if mapping is None:
        return _append_rows(_recode(a, None), b)
    n, total = int(a.shape[0]), int(a.shape[0]) + int(b.shape[0])
    made = _new_buffer(total, np.dtype(np.int32))
    _recode_into(a, mapping, made[:n])
    made[n:total] = b
    out: npt.NDArray[np.int32] = made[:total]
    return out


_ROWS_WRITTEN: dict[int, int] = {}
"""Rows written so far into each column buffer made by :func:`_append_rows`, by the buffer's ``id()``
(an entry leaves with its buffer)."""
_ROWS_WRITTEN_LOCK = threading.Lock()


def _append_rows(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Return the 1-D column ``a`` followed by ``b``, writing ``b`` in place after ``a`` when it can.

    A column of an extended frame is the prefix of a buffer with room to spare (an eighth of its
    rows). When ``a`` is such a prefix and no row was written after it, the
    next rows go into the room after it and the result is a longer prefix of the same buffer: ``a``
    itself (the previous frame's column) is unchanged, and at 1M views an append no longer copies
    the frame's columns (22 of its 37 MiB; the code columns are copied anyway when a new id sorts
    among the old ones). Otherwise (a first extension, no room left, a second extension of the same
    column: two frames extended from one) a new buffer is made. Thread-safe.
    """
    n, k = int(a.shape[0]), int(b.shape[0])
    buf = a.base
    if (
        isinstance(buf, np.ndarray)
        and buf.ndim == 1
        and a.ndim == 1
        and buf.dtype == a.dtype == b.dtype
        and a.strides == buf.strides
        and a.__array_interface__["data"][0] == buf.__array_interface__["data"][0]
        and buf.shape[0] >= n + k
    ):
        with _ROWS_WRITTEN_LOCK:
            claimed = _ROWS_WRITTEN.get(id(buf)) == n
            if claimed:
                _ROWS_WRITTEN[id(buf)] = n + k
        if claimed:
            buf[n : n + k] = b
            grown: npt.NDArray[Any] = buf[: n + k]
            return grown
    total = n + k
    made = _new_buffer(total, np.result_type(a, b))
    made[:n] = a
    made[n:total] = b
    out: npt.NDArray[Any] = made[:total]
    return out


def _new_buffer(rows: int, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """Return a column buffer with room for ``rows`` rows and an eighth more, registered as holding
    ``rows`` written rows (its first ``rows`` are the caller's to fill before it is shared)."""
    made = np.empty(rows + rows // 8, dtype=dtype)
    with _ROWS_WRITTEN_LOCK:
        _ROWS_WRITTEN[id(made)] = rows
    weakref.finalize(made, _forget_rows, id(made))
    return made


def _forget_rows(buffer_id: int) -> None:
    """Drop a dead buffer's entry (its ``weakref.finalize`` callback).

    Takes no lock: a buffer can die at any allocation, also inside :func:`_append_rows`'s locked
    block in the same thread (a cycle holding it collected there, at any call on Python ≥ 3.12),
    where waiting for the lock would deadlock. A single ``dict.pop`` is atomic, and the key cannot
    be claimed meanwhile: the callback runs before the dead buffer's memory (and ``id()``) can be
    reused.
    """
    _ROWS_WRITTEN.pop(buffer_id, None)


def extend_frame(frame: Frame, parts: Iterable[Partition]) -> Frame | None:
    """Return ``frame`` with the views of ``parts`` appended, when they all come after its last view.

    The cheap path for an append: the frame of the whole history is kept between recomputes and
    only the new views are encoded, instead of merging every month partition again. String tables
    are united (codes of the old rows remapped only when a new id sorts among them); a channel's
    first view stays the old one, its name becomes the newest name the new views carry.

    Args:
        frame: The frame of the history so far (``merge_partitions`` of its partitions).
        parts: Partitions of the new views (same zone and taxonomy).

    Returns:
        The frame of both (equal to ``merge_partitions`` over all the partitions), or None when a
        new view is not later than the frame's last view (late data: the caller merges instead).
    """
    tail = merge_partitions(parts)
    if tail.size == 0:
        return frame
    if frame.size == 0:
        return tail
    if int(tail.ts[0]) <= int(frame.ts[-1]):
        return None
    video_ids, old_video, tail_video = _union_bytes(frame.video_ids, tail.video_ids)
    # the few channels of the new views are searched among the history's (sorted): no pass in Python
    # over every channel of the history, which cost several ms per append at 1M views
    old_channels = frame.channel_ids
    n_old = len(old_channels)
    at = [bisect.bisect_left(old_channels, c) for c in tail.channel_ids]
    is_new = np.array(
        [p == n_old or old_channels[p] != c for p, c in zip(at, tail.channel_ids, strict=True)], dtype=np.bool_
    )
    tail_at = np.array(at, dtype=np.int64)
    inserted = tail_at[is_new]  # where each new id goes among the old ones (non-decreasing: ids sorted)
    old_channel: npt.NDArray[np.int32] | None = None
    if inserted.size:
        added = [c for c, new in zip(tail.channel_ids, is_new.tolist(), strict=True) if new]
        channel_ids = tuple(sorted((*old_channels, *added)))
        old_channel = _codes_after_insert(n_old, inserted)
        tail_channel = np.empty(tail_at.size, dtype=np.int64)
        tail_channel[~is_new] = old_channel[tail_at[~is_new]]
        tail_channel[is_new] = inserted + np.arange(inserted.size, dtype=np.int64)
    else:
        channel_ids, tail_channel = old_channels, tail_at
    targets = np.arange(n_old, dtype=np.int64) if old_channel is None else old_channel
    first_ms = np.empty(len(channel_ids), dtype=np.int64)
    first_ms[targets] = frame.channel_first_ms
    first_ms[tail_channel[is_new]] = tail.channel_first_ms[is_new]  # old channels keep their earlier first
    names = np.empty(len(channel_ids), dtype=object)  # None where not set below
    names[targets] = frame.channel_names
    for code, name in zip(tail_channel.tolist(), tail.channel_names, strict=True):
        if name is not None:  # the new views are the latest: their name is the most recent
            names[code] = name

    cat = _append_rows  # the appended rows go into room after the frame's columns when there is some
    return Frame(
        ts=cat(frame.ts, tail.ts),
        day=cat(frame.day, tail.day),
        month=cat(frame.month, tail.month),
        weekday=cat(frame.weekday, tail.weekday),
        hour=cat(frame.hour, tail.hour),
        product=cat(frame.product, tail.product),
        removed=cat(frame.removed, tail.removed),
        shorts=cat(frame.shorts, tail.shorts),
        video=_recoded_rows(frame.video, old_video, _recode(tail.video, tail_video)),
        channel=_recoded_rows(frame.channel, old_channel, _recode(tail.channel, tail_channel)),
        topic=cat(frame.topic, tail.topic),
        video_ids=video_ids,
        channel_ids=channel_ids,
        channel_names=tuple(names.tolist()),
        channel_first_ms=first_ms,
        topic_slugs=frame.topic_slugs,
    )


@dataclass(frozen=True, slots=True)
class PartitionShell:
    """What a merged frame cannot give back of one month's partition: its channel tables.

    The row columns of a month (instants, offsets, flags, codes) are rows of the merged
    :class:`Frame` again (its rows with that ``month``), so a recompute can drop a month's
    serialized partition while it computes and rebuild the identical payload afterwards with
    :func:`refill_partitions` (c channels of the partition).

    Attributes:
        month: Local month index ``year*12 + month-1`` of the partition.
        size: Views of the partition.
        video_itemsize: Width in bytes of the partition's ``video_ids`` table (fixed-width numpy bytes).
        channel_itemsize: Width in bytes of the partition's ``channel_ids`` table; the ids themselves
            are the frame's ids of the channels the month's rows use (not kept: c × width bytes).
        channels: Number of entries of the partition's ``channel_ids`` (c).
        offset_starts: Row index where each run of equal ``offset_ms`` begins, int64 (r,), first 0
            (r = 1 unless a clock change falls in the month; empty for an empty partition).
        offset_values: ``offset_ms`` of each run, ms, int32 (r,).
        channel_first_ms: The partition's ``channel_first_ms`` (c,).
        channel_name_ms: The partition's ``channel_name_ms`` (c,).
        name_offsets: The partition's ``name_offsets`` (c + 1,).
        name_blob: The partition's ``name_blob``.
    """

    month: int
    size: int
    video_itemsize: int
    channel_itemsize: int
    channels: int
    offset_starts: IntArray
    offset_values: npt.NDArray[np.int32]
    channel_first_ms: IntArray
    channel_name_ms: IntArray
    name_offsets: IntArray
    name_blob: bytes


def shell_of(month: int, part: Partition) -> PartitionShell:
    """Return the shell of a month's partition (copies of its channel tables but the ids, 24 bytes per channel)."""
    offsets = part.offset_ms
    starts = np.flatnonzero(offsets[1:] != offsets[:-1]) + 1
    starts = np.concatenate(([0], starts)).astype(np.int64) if offsets.size else starts.astype(np.int64)
    return PartitionShell(
        month=month,
        size=part.size,
        video_itemsize=int(part.video_ids.dtype.itemsize),
        channel_itemsize=int(part.channel_ids.dtype.itemsize),
        channels=int(part.channel_ids.shape[0]),
        offset_starts=starts,
        offset_values=offsets[starts].astype(np.int32),
        channel_first_ms=part.channel_first_ms.copy(),
        channel_name_ms=part.channel_name_ms.copy(),
        name_offsets=part.name_offsets.copy(),
        name_blob=part.name_blob,
    )


class _Ranks:
    """Turn codes into a large table into codes into the part of it a subset of rows uses (reusable scratch)."""

    def __init__(self, n_codes: int) -> None:
        self._seen = np.zeros(n_codes, dtype=np.bool_)
        self._rank = np.zeros(n_codes, dtype=np.int32)

    def local(self, codes: npt.NDArray[Any]) -> tuple[IntArray, npt.NDArray[np.int32]]:
        """Return the distinct codes ≥ 0 (ascending) and each code's rank among them (-1 kept), int32."""
        valid = codes >= 0
        picked = codes[valid]
        self._seen[picked] = True
        used: IntArray = np.flatnonzero(self._seen)
        self._seen[picked] = False
        self._rank[used] = np.arange(used.size, dtype=np.int32)
        out = np.full(codes.shape, -1, dtype=np.int32)
        out[valid] = self._rank[picked]
        return used, out


def refill_partitions(frame: Frame, shells: Iterable[PartitionShell]) -> Iterator[tuple[int, Partition]]:
    """Rebuild month partitions from the frame they were merged into and their shells.

    Exact (``partition_to_bytes`` of each result equals that of the original) when ``frame`` is
    the merge of a set of partitions holding those months' partitions: a month's rows are the
    frame rows of that local month, in frame order (the partition's order); its offsets are the
    shell's runs; a partition's string tables hold exactly the ids its rows use, so its codes are
    the ranks of the frame codes among the month's distinct ones.

    Args:
        frame: The merged frame.
        shells: The months' :func:`shell_of`.

    Yields:
        ``(month, partition)`` in the order of ``shells``, one at a time (a caller serializing each
        before taking the next holds one rebuilt month at a time).

    Raises:
        ValueError: the frame does not hold ``shell.size`` views of a shell's month.
    """
    videos = _Ranks(int(frame.video_ids.shape[0]))
    channels = _Ranks(len(frame.channel_ids))
    # a month's channel table is the frame's ids at the codes its rows use, encoded back to the bytes
    # they were decoded from (codes follow id order in both); each id is encoded once per call, and
    # only when a month uses it (an append rebuilds one month: not every channel of the history)
    encoded: dict[int, bytes] = {}

    def channel_table(codes: IntArray) -> BytesArray:
        out = []
        for code in codes.tolist():
            raw = encoded.get(code)
            if raw is None:
                raw = encoded[code] = frame.channel_ids[code].encode("utf-8")
            out.append(raw)
        return np.array(out, dtype=np.bytes_)

    for shell in shells:
        rows = np.flatnonzero(frame.month == shell.month)
        if rows.size != shell.size:
            raise ValueError(f"frame holds {rows.size} views of month {shell.month}, the partition {shell.size}")
        used, video = videos.local(frame.video[rows])
        channels_used, channel = channels.local(frame.channel[rows])
        if channels_used.size != shell.channels:
            raise ValueError(f"frame rows of month {shell.month} use {channels_used.size} channels, not its table's")
        run_lengths = np.diff(np.append(shell.offset_starts, rows.size))
        part = Partition(
            ts=frame.ts[rows],
            offset_ms=np.repeat(shell.offset_values, run_lengths),
            product=frame.product[rows],
            removed=frame.removed[rows],
            shorts=frame.shorts[rows],
            video=video,
            channel=channel,
            topic=frame.topic[rows],
            video_ids=frame.video_ids[used].astype(f"S{shell.video_itemsize}"),
            channel_ids=channel_table(channels_used).astype(f"S{shell.channel_itemsize}"),
            channel_first_ms=shell.channel_first_ms,
            channel_name_ms=shell.channel_name_ms,
            name_offsets=shell.name_offsets,
            name_blob=shell.name_blob,
        )
        yield shell.month, part


def frame_nbytes(frame: Frame) -> int:
    """Return the memory held by a frame's arrays plus an estimate for its string tuples, in bytes."""
    arrays = sum(
        # a column grown in place holds its buffer's room too (an eighth of its rows)
        int(value.base.nbytes)
        if isinstance(value.base, np.ndarray) and id(value.base) in _ROWS_WRITTEN
        else int(value.nbytes)
        for value in (getattr(frame, name) for name in frame.__dataclass_fields__)
        if isinstance(value, np.ndarray)
    )
    # len() mapped in C: this runs on every recompute, over every channel of the history
    strings = sum(map(len, frame.channel_ids)) + sum(map(len, filter(None, frame.channel_names)))
    strings += 60 * (len(frame.channel_ids) + len(frame.channel_names))
    return arrays + strings


# ------------------------------------------------------------------------------------ serialization

_SCHEMA: tuple[tuple[str, str], ...] = (
    ("ts", "<i8"),
    ("offset_ms", "<i4"),
    ("product", "|i1"),
    ("removed", "|b1"),
    ("shorts", "|b1"),
    ("video", "<i4"),
    ("channel", "<i4"),
    ("topic", "|i1"),
    ("video_ids", "S"),
    ("channel_ids", "S"),
    ("channel_first_ms", "<i8"),
    ("channel_name_ms", "<i8"),
    ("name_offsets", "<i8"),
)


def _layout(part: Partition) -> tuple[bytes, list[tuple[int, npt.NDArray[Any]]], int, int]:
    """Return the prefix and header, each array with its offset from the start, the name blob's
    offset and the payload's total length (the layout of :func:`partition_to_bytes`)."""
    placed: list[tuple[int, npt.NDArray[Any]]] = []
    specs: list[list[Any]] = []
    pos = 0
    for name, _ in _SCHEMA:
        arr = np.ascontiguousarray(getattr(part, name))
        specs.append([name, arr.dtype.str, int(arr.shape[0]), pos])
        placed.append((pos, arr))
        pos += arr.nbytes + (-arr.nbytes) % _ALIGN
    header = json.dumps(
        {"taxonomy": TAXONOMY_VERSION, "arrays": specs, "names": [pos, len(part.name_blob)]},
        separators=(",", ":"),
    ).encode("utf-8")
    header += b" " * ((-(_PREFIX.size + len(header))) % _ALIGN)
    head = _PREFIX.pack(_MAGIC, PARTITION_FORMAT_VERSION, 0, len(header)) + header
    base = len(head)
    return head, [(base + at, arr) for at, arr in placed], base + pos, base + pos + len(part.name_blob)


def partition_to_bytes(part: Partition) -> bytes:
    """Serialize a partition: a fixed prefix, a JSON header, then the raw little-endian arrays.

    Layout: ``struct "<4sHHI"`` (magic ``WAGP``, format version, 0, header length), the UTF-8 JSON
    header ``{"taxonomy": TAXONOMY_VERSION, "arrays": [[name, dtype, count, offset], ...],
    "names": [offset, length]}``, then the array buffers (each 8-byte aligned, zero padding) and the
    name blob. Only fixed-width numeric and bytes dtypes are written; never pickle.

    Args:
        part: The partition.

    Returns:
        The payload, about 24 bytes per view plus the string tables.
    """
    head, placed, blob_at, total = _layout(part)
    out = bytearray(total)
    _fill(out, head, placed, blob_at, part.name_blob)
    return bytes(out)


MAPPED_MIN_BYTES: Final = 256 * 1024
"""Payloads at least this long get a memory map of their own (:func:`partition_payload`). Below it
they are ``bytes`` in the C heap: a map costs whole 4 KiB pages and one kernel mapping, so the
waste stays under 2 % and a 64 MiB cache holds at most 256 maps."""


def partition_payload(part: Partition) -> Payload:
    """Serialize a partition as :func:`partition_to_bytes` does: into an anonymous memory map of its
    own when at least :data:`MAPPED_MIN_BYTES` long, else into ``bytes``; the bytes are the same.

    A mapped payload's pages go back to the operating system as soon as the map is dropped and no
    array viewing it (:func:`partition_from_bytes`) is left. Month payloads of a large history
    (≈ 1.3 MiB each at 1M views) kept in the C heap instead leave holes there when they are freed,
    between longer-lived blocks, which the engine's larger arrays cannot reuse: the process's
    resident memory keeps them (≈ 10–15 MiB of the peak at 1M views, measured with
    ``benchmarks/bench_incremental.py --rss-only``). A mapped payload is never written to after
    this call; its ``len()`` is its length.
    """
    head, placed, blob_at, total = _layout(part)
    out: bytearray | mmap.mmap = mmap.mmap(-1, total) if total >= MAPPED_MIN_BYTES else bytearray(total)
    _fill(out, head, placed, blob_at, part.name_blob)
    return bytes(out) if isinstance(out, bytearray) else out


def json_int(value: object) -> int:
    """Return a JSON integer as it is; raise ValueError for anything else (a float, ``Infinity``, a
    bool, a string): a header or index whose numbers are not integers is foreign."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not an integer: {value!r}")
    return value


def kept_payload(data: bytes) -> Payload:
    """Return ``data`` as a payload is kept: copied into an anonymous memory map of its own when at
    least :data:`MAPPED_MIN_BYTES` long (its pages go back to the operating system when it is dropped,
    leaving no hole in the C heap; see :func:`partition_payload`), else ``data`` itself."""
    if len(data) < MAPPED_MIN_BYTES:
        return data
    mapped = mmap.mmap(-1, len(data))
    mapped[:] = data
    return mapped


def _fill(
    out: bytearray | mmap.mmap, head: bytes, placed: list[tuple[int, npt.NDArray[Any]]], blob_at: int, blob: bytes
) -> None:
    out[: len(head)] = head
    view = np.frombuffer(out, dtype=np.uint8)
    for at, arr in placed:
        view[at : at + arr.nbytes] = arr.reshape(-1).view(np.uint8)
    del view  # a memory map cannot be closed while an array exports it
    out[blob_at : blob_at + len(blob)] = blob


def partition_from_bytes(payload: Payload) -> Partition:
    """Deserialize :func:`partition_to_bytes` output (arrays are read-only views of ``payload``).

    Args:
        payload: Bytes written by :func:`partition_to_bytes` or :func:`partition_payload`.

    Returns:
        The partition.

    Raises:
        ValueError: wrong magic, format or taxonomy version, unexpected dtype, or inconsistent
            lengths (a truncated or foreign payload).
    """
    if len(payload) < _PREFIX.size:
        raise ValueError("partition payload: too short")
    magic, version, _, header_len = _PREFIX.unpack_from(payload, 0)
    if magic != _MAGIC or version != PARTITION_FORMAT_VERSION:
        raise ValueError(f"partition payload: unknown magic/version {magic!r}/{version}")
    base = _PREFIX.size + header_len
    try:
        header = json.loads(payload[_PREFIX.size : base].decode("utf-8"))
        if header["taxonomy"] != TAXONOMY_VERSION:
            raise ValueError(f"partition payload: taxonomy {header['taxonomy']!r} != {TAXONOMY_VERSION!r}")
        specs = {str(s[0]): (str(s[1]), json_int(s[2]), json_int(s[3])) for s in header["arrays"]}
        names_at, names_len = (json_int(v) for v in header["names"])
    except (KeyError, TypeError, IndexError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        # (json.JSONDecodeError is a ValueError; RecursionError: a header nested thousands deep)
        raise ValueError(f"partition payload: bad header ({type(exc).__name__}: {exc})") from None
    fields: dict[str, Any] = {}
    for name, want in _SCHEMA:
        if name not in specs:
            raise ValueError(f"partition payload: missing array {name}")
        dtype_str, count, offset = specs[name]
        try:
            dtype = np.dtype(dtype_str)
        except TypeError:
            raise ValueError(f"partition payload: array {name} has dtype {dtype_str!r}") from None
        if (want == "S" and dtype.kind != "S") or (want != "S" and dtype.str != want):
            raise ValueError(f"partition payload: array {name} has dtype {dtype_str}")
        end = base + offset + count * dtype.itemsize
        if offset < 0 or count < 0 or end > len(payload):
            raise ValueError(f"partition payload: array {name} out of bounds")
        array = np.frombuffer(payload, dtype=dtype, count=count, offset=base + offset)
        array.flags.writeable = False  # a memory map is writable: the views of a cached payload must not be
        fields[name] = array
    blob_end = base + names_at + names_len
    if names_at < 0 or names_len < 0 or blob_end > len(payload):
        raise ValueError("partition payload: name blob out of bounds")
    fields["name_blob"] = bytes(payload[base + names_at : blob_end])
    part = Partition(**fields)
    n, c = part.size, int(part.channel_ids.shape[0])
    lengths = {part.offset_ms.size, part.product.size, part.removed.size, part.shorts.size}
    lengths |= {part.video.size, part.channel.size, part.topic.size}
    if lengths != {n} or {part.channel_first_ms.size, part.channel_name_ms.size} != {c}:
        raise ValueError("partition payload: inconsistent array lengths")
    if part.name_offsets.size != c + 1 or (c and int(part.name_offsets[-1]) > names_len):
        raise ValueError("partition payload: inconsistent name offsets")
    for codes, bound in (
        (part.video, part.video_ids.shape[0]),
        (part.channel, c),
        (part.topic, len(TOPIC_SLUGS)),
        (part.product, len(PRODUCT_CODES)),
    ):
        if n and (int(codes.min()) < -1 or int(codes.max()) >= bound):
            raise ValueError("partition payload: code out of range")
    return part
