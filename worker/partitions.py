"""Per-user, per-local-month partition state kept between recomputes, and the rules that reuse it.

A user's history is split into **partitions**, one per local calendar month in the user's time zone
(:class:`worker.aggregation.partition.Partition`: the month's views, encoded once). They live in the
:class:`~worker.cache.PartitionCache` (L1 in process, optional Redis L2 shared by replicas) together
with a small **partition index** per user: the zone, the watermark of the recompute that wrote it,
and for every month holding views its view count and the watermark its partition was built at.
A recompute then reads from Convex only the months its changes touch and merges every partition
into the engine's frame.

Invalidation (:func:`plan_recompute`):

* when every change newer than the index is an ``import`` (and together they inserted at most
  ``delta_max_events`` views), the plan is an **append**: the views those changes inserted are read
  by change seq (``worker:listEventsByChange``, ``after_seq`` = the index's watermark) and combined
  with the cached partitions of the months they fall in, so an append of 100 views reads 100
  documents whatever the size of its month;
* otherwise ``import``/``delete`` changes with a ``[fromMs, toMs]`` range invalidate the local
  months that range overlaps (late data in an old month and deletions rebuild exactly those
  months; a month left empty leaves the index);
* ``timezone`` (every month boundary moves), ``manual`` (an explicit "recompute everything"), and
  any data change without a range invalidate everything;
* ``expiry`` and ``filter`` changes change no event: they invalidate nothing (the recompute still
  runs, with a new ``now`` or a new filter set, from cached partitions only);
* a claim for a zone other than the index's reads everything (the cache key includes the zone).

Validity rule. Every view stores the seq of the change that inserted it (``changeSeq``), and every
month read of the recompute of a claim with watermark ``W`` (its highest change seq) leaves out
views with ``changeSeq > W``. State written by that recompute therefore holds exactly the views of
the changes with ``seq <= W`` (each write to ``watchEvents`` appends its change row in the same
transaction, and the claim saw every row committed before it), except that a delete committed
after the claim may already be applied; its change row is still pending, so the next claim
re-reads those months. Hence an index with watermark ``Wi`` is usable for a claim whose lowest
change seq is ``s0`` iff ``Wi >= s0 - 1``: then every change the index does not reflect is in the
claim, each month not touched by a claim change is unchanged since its partition was built, and
the views appended since are exactly those with ``Wi < changeSeq <= W`` (never counted twice). If
``Wi < s0 - 1``, a change between them was never seen by this cache (processed by a replica
without a shared L2, or dead-lettered): everything is read again. A partition is loaded at
exactly the watermark the index records for it, so neither an older entry for the same key
(another replica's L1, a zone used before) nor a newer one the index does not record is taken.
Partitions are written before the index; after a crash between the two, the claim's changes are
still pending and rebuild the same months. Views stored without ``changeSeq`` (before the field
existed) count as seq 0: always read by month, never part of a delta.
"""

from __future__ import annotations

import json
import mmap
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

import zstandard

from worker.aggregation import DEFINITION_VERSION
from worker.aggregation.partition import (
    MAPPED_MIN_BYTES,
    PARTITION_FORMAT_VERSION,
    Partition,
    Payload,
    json_int,
    kept_payload,
    partition_from_bytes,
    partition_payload,
)
from worker.aggregation.timeframes import (
    DAY_MS,
    EPOCH_ORDINAL,
    MAX_MS,
    MIN_MS,
    month_first_day,
    month_start_ms,
    offset_ms_at,
)
from worker.cache import PartitionCache, PartitionKey
from worker.models import ChangeEntry

__all__ = [
    "INDEX_MONTH",
    "MAX_RANGE_MONTHS",
    "STATE_VERSION",
    "MonthEntry",
    "PartitionIndex",
    "PartitionStore",
    "Plan",
    "Delta",
    "local_month_of",
    "month_bounds_ms",
    "plan_recompute",
    "read_ranges",
]

STORED_ENCODING_VERSION: Final = 2
"""How :class:`PartitionStore` stores a month's payload: 2 = one zstd frame (1 stored it as it is)."""

STATE_VERSION: Final = DEFINITION_VERSION * 1000 + PARTITION_FORMAT_VERSION * 10 + STORED_ENCODING_VERSION
"""``PartitionKey.definition_version`` of every entry: changes with the definitions, the layout or the
stored encoding, so entries written by another version are never read."""

MAX_STORED_PAYLOAD_BYTES: Final = 512 * 1024 * 1024
"""Largest payload a stored month may claim (Redis's own bound on a value); a frame claiming more is
damaged or foreign, and is refused before any memory is taken for it."""

STORED_ZSTD_LEVEL: Final = 1
"""zstd level of stored month partitions. On the 1M-view benchmark history (38 months) level 1
stores 44.8 MiB of payloads in 21.9 MiB (2.05×) for 0.12 s of CPU and reads them back in 0.07 s;
level 3 stores 20.7 MiB for 0.21 s; lz4 31.7 MiB for 0.07 s (measured on the payloads of
``benchmarks/bench_incremental.py``'s history, 2026-12-01)."""

INDEX_MONTH: Final = 0
"""Month slot of the partition index in :class:`PartitionKey` (month 0 = January of year 0, which
no view can fall in: instants start in 1970)."""

MAX_RANGE_MONTHS: Final = 1200
"""A change range overlapping more local months than this is treated as the whole history."""

_DATA_KINDS_WITHOUT_EFFECT: Final = frozenset({"expiry", "filter"})
_WHOLE_HISTORY_KINDS: Final = frozenset({"timezone", "manual"})


def local_month_of(instant_ms: int, zone: ZoneInfo) -> int:
    """Return the local month index ``year*12 + month-1`` of an instant (epoch ms UTC)."""
    local = date.fromordinal((instant_ms + offset_ms_at(instant_ms, zone)) // DAY_MS + EPOCH_ORDINAL)
    return local.year * 12 + local.month - 1


_REENTRY_PROBE_MS: Final = 26 * 3_600_000
"""How long after a month's end a backward transition is looked for (larger than any clock change)."""
_REENTRY_STEP_MS: Final = 15 * 60_000
"""Sampling step of that search: transitions closer together than this are assumed not to cancel out."""


def _last_instant_of_month(month: int, next_start: int, zone: ZoneInfo) -> int:
    """Return the last instant whose local month is ``month`` (epoch ms UTC; ≥ ``next_start - 1``).

    Usually ``next_start - 1``. But a backward clock change shortly after the next month began can
    bring the local date back into ``month``: in America/Goose_Bay, November 2009 began at
    03:00Z and from 03:01Z to 04:00Z the local date was 31 October again. Offset changes in the
    26 hours after ``next_start`` are located (15-minute samples, then bisection to the second); a
    segment that starts back in ``month`` lasts, at most, until its local clock reaches the next
    month's first midnight.
    """
    end = next_start - 1
    local_next = month_first_day(month + 1) * DAY_MS  # the next month's first local midnight, as local ms
    t, prev = next_start, offset_ms_at(next_start, zone)
    limit = min(next_start + _REENTRY_PROBE_MS, MAX_MS)
    while t < limit:
        u = min(t + _REENTRY_STEP_MS, limit)
        offset = offset_ms_at(u, zone)
        if offset != prev:
            lo, hi = t, u  # offset(lo) == prev != offset(hi): find the first second of the new offset
            while hi - lo > 1000:
                mid = (lo + hi) // 2
                if offset_ms_at(mid, zone) == prev:
                    lo = mid
                else:
                    hi = mid
            if local_month_of(hi, zone) == month:
                end = max(end, local_next - offset - 1)
            prev = offset
        t = u
    return end


@lru_cache(maxsize=8192)
def month_bounds_ms(month: int, zone: ZoneInfo) -> tuple[int, int]:
    """Return the inclusive UTC range ``[first ms, last ms]`` covering every instant of a local month.

    Args:
        month: Month index ``year*12 + month-1`` (1970 … 9999).
        zone: The user's zone; the month starts at its first existing local instant.

    Returns:
        ``(start_ms, end_ms)``, epoch ms UTC, clipped to the engine's instant range. ``end_ms`` is
        the next month's start − 1, unless a backward clock change right after it brings the local
        date back into the month (then the range also holds the next month's first instants, so
        a reader of the range must drop views of other months).
    """
    start = max(month_start_ms(month, zone), MIN_MS)
    if month + 1 >= 10000 * 12:
        return start, MAX_MS
    end = _last_instant_of_month(month, month_start_ms(month + 1, zone), zone)
    return start, min(end, MAX_MS)


def read_ranges(months: Iterable[int], zone: ZoneInfo) -> list[tuple[int, int]]:
    """Return inclusive UTC ranges covering the given local months, consecutive months joined.

    Args:
        months: Month indexes, any order, duplicates allowed.
        zone: The user's zone.

    Returns:
        ``[(from_ms, to_ms), ...]`` ascending, one per run of consecutive months.
    """
    ordered = sorted(set(months))
    runs: list[tuple[int, int]] = []
    for m in ordered:
        if runs and runs[-1][1] == m - 1:
            runs[-1] = (runs[-1][0], m)
        else:
            runs.append((m, m))
    return [(month_bounds_ms(a, zone)[0], month_bounds_ms(b, zone)[1]) for a, b in runs]


@dataclass(frozen=True, slots=True)
class MonthEntry:
    """One month of the partition index.

    Attributes:
        count: Views in the month's partition (after deduplication), ``> 0``.
        watermark: Watermark of the recompute that built the partition (change seq).
    """

    count: int
    watermark: int


@dataclass(frozen=True, slots=True)
class PartitionIndex:
    """Which local months of a user hold views, and when each partition was built.

    Attributes:
        time_zone: IANA zone the months are local to.
        watermark: Watermark of the recompute that wrote the index (its claim's highest seq).
        months: ``{month index: MonthEntry}`` for every month holding at least one view.
    """

    time_zone: str
    watermark: int
    months: Mapping[int, MonthEntry]

    def to_bytes(self) -> bytes:
        """Serialize as compact JSON (``{"z", "w", "m": [[month, count, watermark], ...]}``)."""
        doc = {
            "z": self.time_zone,
            "w": self.watermark,
            "m": [[m, e.count, e.watermark] for m, e in sorted(self.months.items())],
        }
        return json.dumps(doc, separators=(",", ":")).encode("utf-8")

    @staticmethod
    def from_bytes(payload: bytes) -> PartitionIndex:
        """Parse :meth:`to_bytes` output.

        Raises:
            ValueError: the payload is not a partition index.
        """
        try:
            doc = json.loads(payload.decode("utf-8"))
            months = {json_int(m): MonthEntry(json_int(c), json_int(w)) for m, c, w in doc["m"]}
            return PartitionIndex(str(doc["z"]), json_int(doc["w"]), months)
        except (KeyError, TypeError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"partition index: bad payload ({type(exc).__name__}: {exc})") from None

    @property
    def events(self) -> int:
        """Return the number of views over all months."""
        return sum(e.count for e in self.months.values())


@dataclass(frozen=True, slots=True)
class Delta:
    """The appends a recompute reads by change seq instead of by month.

    Attributes:
        after_seq: The index's watermark: appends of changes with a higher seq are read.
        through_seq: The claim's watermark (inclusive).
        months: Local months the appends' ranges overlap, ascending: each is the cached partition
            (absent from the index = empty) combined with the appended views.
        events: Views the changes report inserted (an upper bound of what is read: some may have
            been deleted since).
    """

    after_seq: int
    through_seq: int
    months: tuple[int, ...]
    events: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What a recompute reads and what it reuses.

    Attributes:
        full: True when every event is read and every partition rebuilt.
        reason: Why (``"cold"``, ``"gap"``, ``"zone"``, ``"whole-history change"``, ``"wide range"``,
            ``"no changes"``), ``"incremental"`` (months re-read) or ``"append"`` (delta read).
        rebuild: Months to read from Convex and rebuild, ascending (empty when ``full``).
        reuse: Months to take from the cache as they are, with the watermark to require.
        delta: For ``"append"``: the appended views to read (by change seq) and the months they fall in.
        patch: For ``"append"``: the index entries of the months in ``delta.months`` that already hold
            views; their cached partitions (required at these entries' watermarks) are the bases the
            appended views are combined with. A month of ``delta.months`` absent here was empty.
    """

    full: bool
    reason: str
    rebuild: tuple[int, ...] = ()
    reuse: Mapping[int, MonthEntry] = field(default_factory=dict)
    delta: Delta | None = None
    patch: Mapping[int, MonthEntry] = field(default_factory=dict)


def _touched_months(changes: Sequence[ChangeEntry], zone: ZoneInfo) -> set[int] | None:
    """Months the changes' ranges overlap, or None when a change affects the whole history."""
    touched: set[int] = set()
    for c in changes:
        if c.kind in _DATA_KINDS_WITHOUT_EFFECT:
            continue
        if c.kind in _WHOLE_HISTORY_KINDS or c.from_ms is None or c.to_ms is None:
            return None
        lo, hi = max(c.from_ms, MIN_MS), min(c.to_ms, MAX_MS)
        if lo > hi:
            continue
        first, last = local_month_of(lo, zone), local_month_of(hi, zone)
        if last - first + 1 > MAX_RANGE_MONTHS:
            return None
        # around a backward clock change the local month is not monotone in UTC: also take a later
        # month that begins inside the range, and an earlier one whose last instant lies inside it
        while last + 1 < 10000 * 12 and month_bounds_ms(last + 1, zone)[0] <= hi:
            last += 1
        while first - 1 >= 1970 * 12 and month_bounds_ms(first - 1, zone)[1] >= lo:
            first -= 1
        if last - first + 1 > MAX_RANGE_MONTHS:
            return None
        touched.update(range(first, last + 1))
    return touched


def _append_delta(
    index: PartitionIndex, changes: Sequence[ChangeEntry], zone: ZoneInfo, max_events: int
) -> Delta | None:
    """The delta when every change newer than the index only appended views (else None)."""
    if max_events <= 0:
        return None
    newer = [c for c in changes if c.seq > index.watermark and c.kind not in _DATA_KINDS_WITHOUT_EFFECT]
    if not newer or any(c.kind != "import" for c in newer):
        return None
    inserted = sum(c.count for c in newer)
    if inserted > max_events:
        return None
    months = _touched_months(newer, zone)
    if months is None:
        return None
    return Delta(index.watermark, max(c.seq for c in changes), tuple(sorted(months)), inserted)


def plan_recompute(
    index: PartitionIndex | None,
    changes: Sequence[ChangeEntry],
    time_zone: str,
    zone: ZoneInfo,
    *,
    delta_max_events: int = 0,
) -> Plan:
    """Decide which months a recompute must read again (the rules of the module docstring).

    Args:
        index: The user's cached partition index, or None when absent.
        changes: The claim's changes (any order).
        time_zone: The user's current IANA zone.
        zone: ``ZoneInfo`` of ``time_zone``.
        delta_max_events: Largest append read by change seq (0 = never): when every change the index
            does not reflect is an ``import`` (or changes no event) and they inserted at most this
            many views, the plan is ``"append"``.

    Returns:
        The plan: full, or the months to rebuild and those to reuse (and the delta for appends).
    """
    if not changes:
        return Plan(full=True, reason="no changes")
    if index is None:
        return Plan(full=True, reason="cold")
    if index.time_zone != time_zone:
        return Plan(full=True, reason="zone")
    if index.watermark < min(c.seq for c in changes) - 1:
        return Plan(full=True, reason="gap")
    delta = _append_delta(index, changes, zone, delta_max_events)
    if delta is not None:
        reuse = {m: e for m, e in index.months.items() if m not in delta.months}
        patch = {m: index.months[m] for m in delta.months if m in index.months}
        return Plan(full=False, reason="append", reuse=reuse, delta=delta, patch=patch)
    touched = _touched_months(changes, zone)
    if touched is None:
        return Plan(full=True, reason="whole-history change")
    reuse = {m: e for m, e in index.months.items() if m not in touched}
    return Plan(full=False, reason="incremental", rebuild=tuple(sorted(touched)), reuse=reuse)


_codecs = threading.local()  # zstd contexts may not be used by two threads at once: one pair per thread


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pair: tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor] | None = getattr(_codecs, "pair", None)
    if pair is None:
        compressor = zstandard.ZstdCompressor(level=STORED_ZSTD_LEVEL, write_checksum=True)
        pair = _codecs.pair = (compressor, zstandard.ZstdDecompressor())
    return pair


def compress_payload(payload: Payload) -> Payload:
    """Return ``payload`` (:func:`~worker.aggregation.partition.partition_payload` output) as one zstd
    frame (level :data:`STORED_ZSTD_LEVEL`) recording its length and a checksum of its content, as
    :class:`PartitionStore` stores it: in an anonymous memory map of its own when at least
    :data:`~worker.aggregation.partition.MAPPED_MIN_BYTES` long (see ``partition_payload``: the
    L1 entry of a month replaced at every append then leaves no hole in the C heap), else ``bytes``."""
    with memoryview(payload) as view:  # a view releases a memory map as soon as it is read
        return kept_payload(_zstd()[0].compress(view))


def decompress_payload(stored: Payload) -> Payload:
    """Return the payload :func:`compress_payload` compressed into ``stored``.

    A payload of at least :data:`~worker.aggregation.partition.MAPPED_MIN_BYTES` is written into an
    anonymous memory map of its own, as :func:`~worker.aggregation.partition.partition_payload` does
    (its pages go back to the operating system once it and the arrays viewing it are dropped).

    Raises:
        ValueError: ``stored`` is not one zstd frame recording its length, claims more than
            :data:`MAX_STORED_PAYLOAD_BYTES`, is truncated or followed by other bytes, or its content
            does not match its checksum.
    """
    with memoryview(stored) as frame:
        return _decompress(frame)


def _decompress(stored: memoryview) -> Payload:
    decompressor = _zstd()[1]
    try:
        size = zstandard.frame_content_size(stored)
    except zstandard.ZstdError as exc:
        raise ValueError(f"stored partition: {exc}") from None
    if size < 0:  # unknown (-1)
        raise ValueError("stored partition: a zstd frame without its content size")
    if size > MAX_STORED_PAYLOAD_BYTES:
        raise ValueError(f"stored partition: claims {size} bytes, more than {MAX_STORED_PAYLOAD_BYTES}")
    # decompressed piece by piece into a buffer of the recorded length (a map of its own when large);
    # the frame must end exactly at the end of ``stored`` (its checksum verified), not merely yield
    # ``size`` bytes (a one-shot decompress ignores what follows its frame)
    out: bytearray | mmap.mmap = mmap.mmap(-1, size) if size >= MAPPED_MIN_BYTES else bytearray(size)
    unpacker = decompressor.decompressobj()
    got = 0
    try:
        for at in range(0, len(stored), _UNPACK_BYTES):
            piece = unpacker.decompress(stored[at : at + _UNPACK_BYTES])
            if got + len(piece) > size:
                raise ValueError(f"stored partition: more than its recorded {size} bytes")
            out[got : got + len(piece)] = piece
            got += len(piece)
    except zstandard.ZstdError as exc:
        raise ValueError(f"stored partition: {exc}") from None
    if got != size or not unpacker.eof or unpacker.unused_data:
        raise ValueError(f"stored partition: truncated or followed by other bytes ({got} of {size} bytes)")
    return bytes(out) if isinstance(out, bytearray) else out


_UNPACK_BYTES = 128 * 1024
"""Compressed bytes handed to the decompressor at a time (bounds the pieces it returns)."""


class PartitionStore:
    """Typed access to a user's partitions and index in a :class:`PartitionCache`.

    Month payloads are stored compressed (:func:`compress_payload`: about half the L1 bytes and
    Redis memory of the raw payloads, for about 3 ms of CPU per MiB of payload written at
    :data:`STORED_ZSTD_LEVEL`) and decompressed when loaded; the index is stored as it is.
    Undecodable payloads (foreign, truncated or corrupt) are treated as misses.

    Args:
        cache: The two-level cache.
        version: ``PartitionKey.definition_version`` of the entries (default :data:`STATE_VERSION`).
    """

    def __init__(self, cache: PartitionCache, *, version: int = STATE_VERSION) -> None:
        self.cache = cache
        self.version = version

    def _key(self, user_id: str, time_zone: str, month: int) -> PartitionKey:
        return PartitionKey(user_id=user_id, month=month, time_zone=time_zone, definition_version=self.version)

    def load_index(self, user_id: str, time_zone: str, *, min_watermark: int) -> PartitionIndex | None:
        """Return the user's index for ``time_zone`` if its watermark is at least ``min_watermark``."""
        payload = self.cache.get(self._key(user_id, time_zone, INDEX_MONTH), min_watermark=max(min_watermark, 0))
        if payload is None:
            return None
        try:
            index = PartitionIndex.from_bytes(payload[:])  # index payloads are bytes; a slice reads either kind
        except ValueError:
            return None
        return index if index.time_zone == time_zone else None

    def save_index(self, user_id: str, index: PartitionIndex) -> None:
        """Store the index under its zone with its watermark (a newer index is kept)."""
        self.cache.put(self._key(user_id, index.time_zone, INDEX_MONTH), index.to_bytes(), watermark=index.watermark)

    def load(self, user_id: str, time_zone: str, month: int, *, watermark: int) -> Partition | None:
        """Return a month's partition built at exactly ``watermark`` (the index's entry), or None.

        Exactly, not "at least": a build the index does not record (a replica that crashed before
        writing its index, or a foreign entry claiming a far-future watermark, which no later put
        can replace) may hold other views in the same number, and is read again instead.
        """
        key = self._key(user_id, time_zone, month)
        payload = self.cache.get(key, min_watermark=watermark, max_watermark=watermark)
        if payload is None:
            return None
        try:
            return partition_from_bytes(decompress_payload(payload))
        except ValueError:
            return None

    def save(self, user_id: str, time_zone: str, month: int, part: Partition, *, watermark: int) -> None:
        """Store a month's partition built by the recompute with ``watermark``."""
        self.save_payload(user_id, time_zone, month, partition_payload(part), watermark=watermark)

    def save_payload(self, user_id: str, time_zone: str, month: int, payload: Payload, *, watermark: int) -> None:
        """Store a month's partition already serialized with :func:`partition_payload` (compressed)."""
        self.cache.put(self._key(user_id, time_zone, month), compress_payload(payload), watermark=watermark)
