"""Turn a claimed user into aggregation results: read the changed months, merge, compute, encode.

Read and compute time are measured separately: ``read_ms`` covers the cache look-up, the Convex
reads, the partition build and merge and storing the cache state; ``compute_ms`` the aggregation
engine.

Memory: each serialized month read is freed as soon as the merge has copied its rows into the
frame. While the engine runs, a recompute holds the merged frame and, of each month it built,
only the channel tables (:class:`~worker.aggregation.partition.PartitionShell`); the month payloads
are rebuilt from the frame's rows once the results are computed (byte-identical, see
:func:`~worker.aggregation.partition.refill_partitions`) and only then stored, months first, then
the index, each month's shell dropped once its payload is built. A recompute that fails before
that stores no cache state.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from worker.aggregation import EAGER_FILTER_SETS, AggregationResult, FilterSet, compute_from_frame
from worker.aggregation.derived import DerivedState
from worker.aggregation.filters import group_by_base
from worker.aggregation.frame import Frame
from worker.aggregation.partition import (
    MonthPartitioner,
    Partition,
    PartitionShell,
    Payload,
    build_month_partitions,
    combine_partitions,
    extend_frame,
    frame_nbytes,
    merge_partitions,
    partition_from_bytes,
    partition_payload,
    refill_partitions,
    shell_of,
)
from worker.aggregation.timeframes import load_zone
from worker.allocator import release_free_memory
from worker.cache import PartitionCache, SizedLRU
from worker.config import Settings
from worker.gateway import Gateway
from worker.models import AppendedViews, Claim, WatchEvent
from worker.partitions import (
    Delta,
    MonthEntry,
    PartitionIndex,
    PartitionStore,
    Plan,
    plan_recompute,
    read_ranges,
)


@dataclass(frozen=True, slots=True)
class RecomputeOutcome:
    """Results of one recompute and what it cost.

    Attributes:
        results: ``{type, filterKey, data, definitionVersion, validUntilMs?}`` objects for
            ``worker:storeAggregations``.
        computed_at_ms: The ``now`` the results were computed for, epoch ms UTC.
        events_read: Events read from Convex.
        read_ms: Wall time spent reading events, ms.
        compute_ms: Wall time spent in the aggregation engine, ms.
        types: Aggregation types computed.
        filter_sets: Number of filter sets computed.
        full_rebuild: True when every event was read and every month partition rebuilt.
        months_rebuilt: Month partitions read and rebuilt (-1 for a full rebuild).
        plan_reason: Why the recompute was full or incremental (see :class:`worker.partitions.Plan`).
    """

    results: list[dict[str, Any]] = field(repr=False)  # hundreds of documents: never formatted in logs or tracebacks
    computed_at_ms: int
    events_read: int
    read_ms: float
    compute_ms: float
    types: list[str]
    filter_sets: int
    full_rebuild: bool = True
    months_rebuilt: int = -1
    plan_reason: str = "full"


def _take_all(parts: dict[int, Partition]) -> Iterator[Partition]:
    """Yield every partition of ``parts``, removing it first (the consumer then holds the only reference)."""
    while parts:
        yield parts.popitem()[1]


def _pop_all(items: list[PartitionShell]) -> Iterator[PartitionShell]:
    """Yield the items of ``items`` from the last, removing each first (the consumer holds the only reference)."""
    while items:
        yield items.pop()


def result_to_convex(result: AggregationResult) -> dict[str, Any]:
    """Encode an :class:`AggregationResult` for ``worker:storeAggregations`` (no ``None`` fields)."""
    doc: dict[str, Any] = {
        "type": result.type,
        "filterKey": result.filter_key,
        "data": result.data,
        "definitionVersion": result.definition_version,
    }
    if result.valid_until_ms is not None:
        doc["validUntilMs"] = result.valid_until_ms
    return doc


DEFAULT_FILTER_SET = FilterSet("All", "all")
"""The set the dashboard opens with (``dashboard:getDashboard`` without filters): computed and stored first."""


def filter_sets_for(claim: Claim) -> list[FilterSet]:
    """Return the eager filter sets plus the user's active on-demand sets, without duplicates.

    The default dashboard's set comes first, so it is stored (and becomes fresh for readers) first;
    the other eager sets follow in catalogue order, then the on-demand sets.
    """
    sets: dict[str, FilterSet] = {DEFAULT_FILTER_SET.key: DEFAULT_FILTER_SET}
    for fs in EAGER_FILTER_SETS:
        sets.setdefault(fs.key, fs)
    for raw in claim.interests:
        try:
            fs = FilterSet.from_dict(dict(raw))
        except ValueError:
            continue  # rejected by registerFilter's validation already; never fatal here
        sets.setdefault(fs.key, fs)
    return list(sets.values())


@dataclass(frozen=True, slots=True)
class _Prepared:
    """Outcome of the cache look-up: the plan, the reused partitions and the bases of appends."""

    plan: Plan
    index: PartitionIndex | None
    reused: dict[int, Partition]
    patch_base: dict[int, Partition] = field(default_factory=dict)
    cached: DerivedState | None = None
    """The frame (and its engine state) kept for ``index``'s exact state, when no month is re-read;
    ``plan.reuse`` is then not loaded (``reused`` is empty) unless the frame cannot be extended."""


@dataclass(frozen=True, slots=True)
class _PendingState:
    """Cache state of a recompute, written once its results are computed.

    The months it built are kept as shells only: their rows are rows of the merged frame, so their
    payloads are rebuilt from it after the engine ran, instead of being held while it runs.
    """

    user_id: str
    index: PartitionIndex
    shells: list[PartitionShell]
    derived: DerivedState


@dataclass(frozen=True, slots=True)
class _CachedFrame:
    """A user's merged frame, the engine state kept with it, and the partition index state it was merged from."""

    watermark: int
    months: dict[int, MonthEntry]
    frame: Frame
    derived: DerivedState
    nbytes: int


STATE_BYTES_PER_FRAME_BYTE = 1.75
"""The engine's incremental states take at least this many bytes per byte of their frame (measured
on synthetic histories: 18.3 MiB for a 4 MiB frame at 100k views, 66.2 MiB for 37 MiB at 1M; the
ratio falls as histories grow). An append does not build them when that much and the frame would
not fit the frame cache's bound together."""


class FrameCache:
    """Byte-bounded LRU of merged whole-history frames, per (user, zone), in process.

    An append then extends the cached frame with the new views (:func:`extend_frame`) instead of
    merging every month partition again, and the engine extends the session pairs kept with it
    (:class:`~worker.aggregation.derived.DerivedState`, counted in the bound). An entry is used only
    for the exact partition index state it was merged from (watermark and every month's count and
    build watermark), so a replica whose frame is older than the shared index merges instead.
    Thread-safe (recomputes run in threads).

    Args:
        max_bytes: Bound on the frames and states held (estimated with :func:`frame_nbytes` and
            ``DerivedState.nbytes``); 0 disables.

    Attributes:
        hits: Look-ups that returned a frame (since start).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: SizedLRU[tuple[str, str], _CachedFrame] = SizedLRU(max_bytes, lambda e: e.nbytes)
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, user_id: str, time_zone: str, index: PartitionIndex) -> Frame | None:
        """Return the frame merged from exactly ``index``'s state, or None."""
        state = self.get_state(user_id, time_zone, index)
        return None if state is None else state.frame

    def get_state(self, user_id: str, time_zone: str, index: PartitionIndex) -> DerivedState | None:
        """Return the engine state (with its frame) kept for exactly ``index``'s state, or None."""
        with self._lock:
            entry = self._entries.get((user_id, time_zone))  # a hit becomes the most recently used
            if entry is None or entry.watermark != index.watermark or entry.months != dict(index.months):
                return None
            self.hits += 1
            return entry.derived

    def put(self, user_id: str, index: PartitionIndex, frame: Frame, derived: DerivedState | None = None) -> None:
        """Keep ``frame`` as the merge of ``index``'s partitions, with the engine state computed on it
        (a cold one when None), evicting least recently used frames."""
        state = derived if derived is not None and derived.frame is frame else DerivedState.cold(frame)
        frame_bytes, state_bytes = frame_nbytes(frame), state.nbytes
        if frame_bytes + state_bytes > self.max_bytes:
            # the engine's incremental states do not fit beside the frame (a very large history):
            # keep the frame (and its session pairs) and let later appends recompute on it, as the
            # states would evict the frame and every append would merge and rebuild them again
            state.drop_incremental()
            state_bytes = state.nbytes
        entry = _CachedFrame(index.watermark, dict(index.months), frame, state, frame_bytes + state_bytes)
        with self._lock:
            self._entries.store((user_id, index.time_zone), entry)

    def drop_user(self, user_id: str) -> None:
        """Forget every frame of ``user_id`` (all zones)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == user_id]:
                self._entries.pop(key, None)


class Recomputer:
    """Recompute a user's aggregates from month partitions, reading only what changed.

    Partition state is kept in a :class:`~worker.cache.PartitionCache` (``settings.cache_max_bytes``
    in process, plus Redis at ``settings.redis_url`` when set, shared by replicas); the reuse rules
    are in :mod:`worker.partitions`. Appends (import changes only) are read by change seq and
    combined with the cached months they fall in; other changes re-read the months they touch.
    Every month read leaves out views of changes newer than the claim, so cached state at a
    watermark holds exactly the views of the changes up to it. Non-mergeable aggregations
    (sessions, relationships, first seen, distinct counts) are computed on the merged frame, so
    results equal a from-scratch :func:`~worker.aggregation.compute_aggregations` over the user's
    events of the claimed changes.

    Args:
        gateway: Source of the events.
        settings: Page size, delta bound and cache knobs.
        cache: The partition cache; built from ``settings`` when None.
    """

    def __init__(self, gateway: Gateway, settings: Settings, *, cache: PartitionCache | None = None) -> None:
        self.gateway = gateway
        self.settings = settings
        self.cache = (
            cache
            if cache is not None
            else PartitionCache(max_bytes=settings.cache_max_bytes, redis_url=settings.redis_url)
        )
        self.store = PartitionStore(self.cache)
        self.frames = FrameCache(settings.frame_cache_max_bytes)

    async def read_events(
        self,
        user_id: str,
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
        max_change_seq: int | None = None,
    ) -> list[WatchEvent]:
        """Read the user's events with ``from_ms <= watchedAtMs <= to_ms`` (None = unbounded), in order."""
        events: list[WatchEvent] = []
        async for page in self.gateway.iter_event_pages(
            user_id, from_ms=from_ms, to_ms=to_ms, max_change_seq=max_change_seq, page_size=self.settings.page_size
        ):
            events.extend(page)
        return events

    def _prepare(self, user_id: str, claim: Claim, zone: ZoneInfo) -> _Prepared:
        """Plan from the cached index and load the reusable partitions (blocking: runs in a thread)."""
        index = None
        if claim.changes:
            first_seq = min(c.seq for c in claim.changes)
            index = self.store.load_index(user_id, claim.time_zone, min_watermark=first_seq - 1)
        plan = plan_recompute(
            index, claim.changes, claim.time_zone, zone, delta_max_events=self.settings.delta_max_events
        )
        if plan.full:
            return _Prepared(plan, index, {})
        # with the frame of this exact index state at hand (the common append), the untouched months
        # are not loaded: the frame is extended instead of merged from them
        cached = None
        if index is not None and not plan.rebuild:
            cached = self.frames.get_state(user_id, claim.time_zone, index)
        reused, missing = ({}, []) if cached is not None else self._load(user_id, claim.time_zone, plan.reuse)
        patch_base, missing_patch = self._load(user_id, claim.time_zone, plan.patch)
        if missing or missing_patch:  # evicted or expired: read those months again too
            rebuild = tuple(sorted({*plan.rebuild, *missing, *missing_patch}))
            plan = replace(plan, rebuild=rebuild)
        return _Prepared(plan, index, reused, patch_base, cached=cached)

    def _load(
        self, user_id: str, time_zone: str, entries: Mapping[int, MonthEntry]
    ) -> tuple[dict[int, Partition], list[int]]:
        """Load the cached partitions of ``entries`` (blocking): those found, and the months missing
        (evicted, expired, or not of the count the index records)."""
        found: dict[int, Partition] = {}
        missing: list[int] = []
        for month, entry in entries.items():
            part = self.store.load(user_id, time_zone, month, watermark=entry.watermark)
            if part is None or part.size != entry.count:
                missing.append(month)
            else:
                found[month] = part
        return found, missing

    async def read_partitions(
        self,
        user_id: str,
        zone: ZoneInfo,
        ranges: list[tuple[int | None, int | None]],
        max_change_seq: int | None = None,
        keep: Collection[int] | None = None,
    ) -> tuple[dict[int, Payload] | None, int]:
        """Read the events of ``ranges`` page by page into serialized month partitions.

        With ``keep``, views of other local months are dropped (a month's range may hold the next
        month's first instants: :func:`~worker.partitions.month_bounds_ms`).

        Pages are encoded as they arrive, so about one page of events is held; each finished month
        is serialized at once (:func:`partition_payload`: a large one into a memory map of its
        own), which the merge reads through zero-copy views and which goes back to the operating
        system as soon as its rows are in the frame (the cache keeps payloads rebuilt from the
        frame, see :meth:`_store_state`). Returns ``(None, read)``
        when the events did not arrive month by month (see
        :class:`~worker.aggregation.partition.MonthPartitioner`).
        """
        builder = MonthPartitioner(zone, keep)
        payloads: dict[int, Payload] = {}

        def add(page: list[WatchEvent]) -> None:
            builder.add(page)
            payloads.update({m: partition_payload(p) for m, p in builder.take_finished().items()})

        read = 0
        for lo, hi in ranges:
            async for page in self.gateway.iter_event_pages(
                user_id, from_ms=lo, to_ms=hi, max_change_seq=max_change_seq, page_size=self.settings.page_size
            ):
                read += len(page)
                await asyncio.to_thread(add, page)
        rest = await asyncio.to_thread(builder.finish)
        if builder.out_of_order:
            return None, read
        payloads.update({m: partition_payload(p) for m, p in rest.items()})
        return dict(sorted(payloads.items())), read

    async def read_delta(
        self, user_id: str, zone: ZoneInfo, delta: Delta, appended: AppendedViews | None = None
    ) -> tuple[dict[int, Partition], int]:
        """Read the appended views of ``delta`` and split them by local month.

        When the claim carried the views of exactly ``delta``'s seq range (``appended``), they are
        used as they are (read from Convex by the claim itself) instead of being paged again.
        """
        events: list[WatchEvent] = []
        if appended is not None and appended.after_seq == delta.after_seq and appended.through_seq == delta.through_seq:
            events.extend(appended.events)
        else:
            async for page in self.gateway.iter_changed_event_pages(
                user_id, after_seq=delta.after_seq, through_seq=delta.through_seq, page_size=self.settings.page_size
            ):
                events.extend(page)
        parts = await asyncio.to_thread(build_month_partitions, events, zone)
        return parts, len(events)

    @staticmethod
    def _combine(prepared: _Prepared, delta_parts: dict[int, Partition]) -> tuple[dict[int, Payload], set[int]]:
        """Combine each month's appended views with its cached partition (runs in a thread).

        Returns the serialized combined months and the months to read whole instead: a month
        whose cached partition is missing although the index lists it, a month outside the
        changes' ranges, or a month where old and new views share an instant.
        """
        plan = prepared.plan
        assert plan.delta is not None
        expected = set(plan.delta.months)
        reread = set(plan.rebuild) & expected
        combined: dict[int, Payload] = {}
        for month, extra in delta_parts.items():
            if month in reread:
                continue
            if month not in expected:
                reread.add(month)
                continue
            base = prepared.patch_base.get(month)
            part = extra if base is None else combine_partitions(base, extra)
            if part is None:
                reread.add(month)
            else:
                combined[month] = partition_payload(part)
        return combined, reread

    def _finish(
        self,
        user_id: str,
        claim: Claim,
        prepared: _Prepared,
        payloads: dict[int, Payload],
        combined: dict[int, Payload],
        delta_parts: dict[int, Partition],
    ) -> tuple[Frame, _PendingState | None] | None:
        """Merge everything and shell the built months (runs in a thread).

        For an append whose months were all combined (none read whole), the cached frame of the
        index's state is extended with the new views when they all follow its last view; otherwise
        every partition is merged. The built months and the new index are not stored yet: they are
        returned for :meth:`_store_state`, with each built month reduced to its shell, so that the
        payloads are not held while the engine runs. ``payloads`` and ``combined`` are emptied once
        decoded, and the merge takes the only references to the built months, so each month's
        payload is freed as soon as its rows are in the frame. Returns None when the built months
        do not fit the plan (a local month that is not one UTC interval; nothing emptied), or when
        the frame could not be extended and a month left unloaded (``prepared.cached``) is no longer
        cached; the caller then reads everything.
        """
        plan = prepared.plan
        if not plan.full and not set(payloads) <= set(plan.rebuild):
            return None
        built = {m: partition_from_bytes(p) for m, p in {**combined, **payloads}.items()}
        combined_months = set(combined)
        payloads.clear()  # the partitions' arrays are views of the payloads: they hold them now
        combined.clear()
        if not user_id:
            return merge_partitions(_take_all(built)), None
        kept = {m: p for m, p in prepared.patch_base.items() if m not in built and m not in plan.rebuild}
        watermark = claim.watermark
        if plan.full and any(c.kind == "timezone" for c in claim.changes):
            self.cache.invalidate_user(user_id)  # partitions of the previous zone are useless now
            self.frames.drop_user(user_id)
        reused = prepared.reused
        lazy = prepared.cached is not None  # plan.reuse not loaded: every entry is assumed cached
        months = dict(plan.reuse) if lazy else {m: e for m, e in plan.reuse.items() if m in reused}
        months.update({m: e for m, e in plan.patch.items() if m in kept})
        months.update({m: MonthEntry(p.size, watermark) for m, p in built.items()})
        index = PartitionIndex(claim.time_zone, watermark, months)
        shells = [shell_of(m, p) for m, p in built.items()]  # before the merge releases the months
        frame: Frame | None = None
        derived: DerivedState | None = None
        unchanged_months = not plan.full and not plan.rebuild and set(delta_parts) == combined_months
        cached = prepared.cached
        if unchanged_months and cached is not None:
            # no month invalidated: the cached frame of the previous state, extended by the appended
            # views (an expiry or filter change appends nothing and reuses the frame as it is)
            frame = extend_frame(cached.frame, delta_parts.values())
            if frame is not None:
                derived = cached if frame is cached.frame else cached.extended(frame)
                if derived is not cached:
                    # the cache's entry would keep the previous frame alive while the engine runs on
                    # this one (37 MiB at 1M views); the new one replaces it once stored, and a
                    # recompute that fails before merges the months again
                    self.frames.drop_user(user_id)
                # the states and the frame they extend must fit the bound together: else do not build them
                if (
                    derived.incremental
                    and frame_nbytes(frame) * (1 + STATE_BYTES_PER_FRAME_BYTE) > self.frames.max_bytes
                ):
                    derived.drop_incremental()
        if frame is None:
            if lazy:
                reused, missing = self._load(user_id, claim.time_zone, plan.reuse)
                if missing:
                    return None
            frame = merge_partitions(itertools.chain(reused.values(), kept.values(), _take_all(built)))
        if derived is None:
            derived = DerivedState.cold(frame)
        return frame, _PendingState(user_id, index, shells, derived)

    def _store_state(self, frame: Frame, pending: _PendingState) -> None:
        """Store the built months (rebuilt from the frame), then the index, and keep the frame (runs in a thread)."""
        index = pending.index
        # each shell is dropped once its month is rebuilt: the stored payloads replace them one by one
        shells = pending.shells[::-1]
        pending.shells.clear()
        for month, part in refill_partitions(frame, _pop_all(shells)):
            payload = partition_payload(part)
            self.store.save_payload(pending.user_id, index.time_zone, month, payload, watermark=index.watermark)
        self.store.save_index(pending.user_id, index)
        self.frames.put(pending.user_id, index, frame, pending.derived)
        release_free_memory()  # what the recompute freed between kept blocks leaves the resident set

    async def _read_all_at_once(
        self,
        user_id: str,
        zone: ZoneInfo,
        ranges: list[tuple[int | None, int | None]],
        max_change_seq: int | None,
        keep: Collection[int] | None = None,
    ) -> tuple[dict[int, Payload], int]:
        """Read ``ranges`` whole and split the events by month in one pass (any arrival order).

        With ``keep``, only those local months are returned.
        """
        events: list[WatchEvent] = []
        for lo, hi in ranges:
            events.extend(await self.read_events(user_id, from_ms=lo, to_ms=hi, max_change_seq=max_change_seq))
        parts = await asyncio.to_thread(build_month_partitions, events, zone)
        wanted = parts if keep is None else {m: p for m, p in parts.items() if m in keep}
        return {m: partition_payload(p) for m, p in wanted.items()}, len(events)

    async def build_frame(self, claim: Claim, zone: ZoneInfo) -> tuple[Frame, int, Plan, _PendingState | None]:
        """Return the user's merged frame, the events read from Convex, the plan followed, and the
        cache state to store once the results are computed (:meth:`_store_state`; None without a user)."""
        user_id = claim.changes[0].user_id if claim.changes else ""
        # the caches file the user under its incarnation too (Claim.cache_user): a wiped and
        # re-imported user, or the same id in another deployment sharing the Redis, starts afresh
        cache_user = claim.cache_user(user_id) if user_id else ""
        max_seq = claim.watermark if claim.changes else None
        prepared = await asyncio.to_thread(self._prepare, cache_user, claim, zone)
        read = 0
        combined: dict[int, Payload] = {}
        delta_parts: dict[int, Partition] = {}
        if prepared.plan.delta is not None:
            delta_parts, read = await self.read_delta(user_id, zone, prepared.plan.delta, claim.appended)
            combined, reread = await asyncio.to_thread(self._combine, prepared, delta_parts)
            if reread - set(prepared.plan.rebuild):
                prepared = replace(
                    prepared, plan=replace(prepared.plan, rebuild=tuple(sorted({*prepared.plan.rebuild, *reread})))
                )
        ranges: list[tuple[int | None, int | None]] = (
            [(None, None)] if prepared.plan.full else list(read_ranges(prepared.plan.rebuild, zone))
        )
        keep = None if prepared.plan.full else frozenset(prepared.plan.rebuild)
        payloads, more = await self.read_partitions(user_id, zone, ranges, max_seq, keep)
        read += more
        if payloads is None:  # not month by month: split everything read in one pass
            payloads, more = await self._read_all_at_once(user_id, zone, ranges, max_seq, keep)
            read += more
        combined = {m: p for m, p in combined.items() if m not in prepared.plan.rebuild}
        merged = await asyncio.to_thread(self._finish, cache_user, claim, prepared, payloads, combined, delta_parts)
        if merged is None:
            prepared = _Prepared(Plan(full=True, reason="irregular months"), prepared.index, {})
            payloads, more = await self._read_all_at_once(user_id, zone, [(None, None)], max_seq)
            read += more
            merged = await asyncio.to_thread(self._finish, cache_user, claim, prepared, payloads, {}, {})
            assert merged is not None  # a full plan accepts every month
        return merged[0], read, prepared.plan, merged[1]

    async def recompute(
        self,
        claim: Claim,
        *,
        now_ms: int,
        on_first: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
        on_batch: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
    ) -> RecomputeOutcome:
        """Recompute every eager and on-demand filter set of the claimed user.

        Args:
            claim: A granted claim (user, time zone, pending changes, interests).
            now_ms: The instant the time-relative results are computed for, epoch ms UTC.
            on_first: When given, the default dashboard's set (:data:`DEFAULT_FILTER_SET`) is computed
                alone first and handed to this callback (the runner stores it) before the other sets
                are computed, so the view most readers look at becomes fresh first.
            on_batch: When given, the other sets are computed one filter base at a time (sets that
                differ only in timeframe share their derived arrays) and each base's results are
                handed to this callback as soon as they are computed, while the next base is
                computed; calls are made in order, one at a time, each with whole filter sets.

        The months built and the partition index are stored (and the frame kept) after every set is
        computed and handed over; when a callback or the engine raises, nothing is stored.

        Returns:
            The results not handed to a callback, and the cost of the whole recompute
            (``events_read`` counts only the events read from Convex; ``compute_ms`` excludes the
            time spent waiting for callbacks).

        Raises:
            ValueError: unknown time zone or an event instant out of range.
            GatewayError: reading events failed.
            Exception: whatever a callback raised (the sets after it are not handed over).
        """
        zone = load_zone(claim.time_zone)
        started = time.perf_counter()
        frame, events_read, plan, pending = await self.build_frame(claim, zone)
        derived = pending.derived if pending is not None else None
        read_ms = (time.perf_counter() - started) * 1000
        filter_sets = filter_sets_for(claim)
        compute_ms = 0.0
        types: set[str] = set()

        async def compute(sets: list[FilterSet]) -> list[dict[str, Any]]:
            nonlocal compute_ms
            began = time.perf_counter()
            out = await asyncio.to_thread(
                compute_from_frame, frame, now_ms=now_ms, time_zone=claim.time_zone, filter_sets=sets, derived=derived
            )
            compute_ms += (time.perf_counter() - began) * 1000
            types.update(r.type for r in out)
            return [result_to_convex(r) for r in out]

        remaining = filter_sets
        if on_first is not None:
            await on_first(await compute(filter_sets[:1]))
            remaining = filter_sets[1:]
        results: list[dict[str, Any]] = []
        if on_batch is None:
            results = await compute(remaining)
        else:
            in_flight: asyncio.Future[None] | None = None
            try:
                for group in group_by_base(remaining):
                    batch = await compute(group)
                    if in_flight is not None:
                        await in_flight
                    in_flight = asyncio.ensure_future(on_batch(batch))
                if in_flight is not None:
                    await in_flight
            finally:
                if in_flight is not None and not in_flight.done():
                    in_flight.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await in_flight
        if pending is not None:
            began = time.perf_counter()
            await asyncio.to_thread(self._store_state, frame, pending)
            read_ms += (time.perf_counter() - began) * 1000
        return RecomputeOutcome(
            results=results,
            computed_at_ms=now_ms,
            events_read=events_read,
            read_ms=read_ms,
            compute_ms=compute_ms,
            types=sorted(types),
            filter_sets=len(filter_sets),
            full_rebuild=plan.full,
            months_rebuilt=len(plan.rebuild) + len(plan.delta.months if plan.delta else ()) if not plan.full else -1,
            plan_reason=plan.reason,
        )
