"""Turn a claimed user into aggregation results: read the changed months, merge, compute, encode.

Read and compute time are measured separately: ``read_ms`` covers the cache look-up, the Convex
reads and the partition build and merge; ``compute_ms`` the aggregation engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from worker.aggregation import EAGER_FILTER_SETS, AggregationResult, FilterSet, compute_from_frame
from worker.aggregation.frame import Frame
from worker.aggregation.partition import (
    MonthPartitioner,
    Partition,
    build_month_partitions,
    merge_partitions,
    partition_from_bytes,
    partition_to_bytes,
)
from worker.aggregation.timeframes import load_zone
from worker.cache import PartitionCache
from worker.config import Settings
from worker.gateway import Gateway
from worker.models import Claim, WatchEvent
from worker.partitions import MonthEntry, PartitionIndex, PartitionStore, Plan, plan_recompute, read_ranges


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

    results: list[dict[str, Any]]
    computed_at_ms: int
    events_read: int
    read_ms: float
    compute_ms: float
    types: list[str]
    filter_sets: int
    full_rebuild: bool = True
    months_rebuilt: int = -1
    plan_reason: str = "full"


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
    """Outcome of the cache look-up: the plan and the reused partitions."""

    plan: Plan
    index: PartitionIndex | None
    reused: dict[int, Partition]


class Recomputer:
    """Recompute a user's aggregates from month partitions, reading only invalidated months.

    Partition state is kept in a :class:`~worker.cache.PartitionCache` (``settings.cache_max_bytes``
    in process, plus Redis at ``settings.redis_url`` when set, shared by replicas); the reuse rules
    are in :mod:`worker.partitions`. Non-mergeable aggregations (sessions, relationships, first
    seen, distinct counts) are computed on the merged frame, so results equal a from-scratch
    :func:`~worker.aggregation.compute_aggregations` over the user's current events.

    Args:
        gateway: Source of the events.
        settings: Page size and cache knobs.
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

    async def read_events(
        self, user_id: str, *, from_ms: int | None = None, to_ms: int | None = None
    ) -> list[WatchEvent]:
        """Read the user's events with ``from_ms <= watchedAtMs <= to_ms`` (None = unbounded), in order."""
        events: list[WatchEvent] = []
        async for page in self.gateway.iter_event_pages(
            user_id, from_ms=from_ms, to_ms=to_ms, page_size=self.settings.page_size
        ):
            events.extend(page)
        return events

    def _prepare(self, user_id: str, claim: Claim, zone: ZoneInfo) -> _Prepared:
        """Plan from the cached index and load the reusable partitions (blocking: runs in a thread)."""
        index = None
        if claim.changes:
            first_seq = min(c.seq for c in claim.changes)
            index = self.store.load_index(user_id, claim.time_zone, min_watermark=first_seq - 1)
        plan = plan_recompute(index, claim.changes, claim.time_zone, zone)
        reused: dict[int, Partition] = {}
        if plan.full:
            return _Prepared(plan, index, reused)
        missing: list[int] = []
        for month, entry in plan.reuse.items():
            part = self.store.load(user_id, claim.time_zone, month, min_watermark=entry.watermark)
            if part is None or part.size != entry.count:
                missing.append(month)
            else:
                reused[month] = part
        if missing:  # evicted or expired: read those months again too
            rebuild = tuple(sorted({*plan.rebuild, *missing}))
            plan = Plan(full=False, reason="incremental", rebuild=rebuild, reuse=plan.reuse)
        return _Prepared(plan, index, reused)

    async def read_partitions(
        self, user_id: str, zone: ZoneInfo, ranges: list[tuple[int | None, int | None]]
    ) -> tuple[dict[int, bytes] | None, int]:
        """Read the events of ``ranges`` page by page into serialized month partitions.

        Pages are split by local month as they arrive; each finished month is encoded and
        serialized at once (the payload is what the cache keeps, and the merge reads it through
        zero-copy views), so at most about one month of events is held. Returns ``(None, read)``
        when the events did not arrive month by month (see
        :class:`~worker.aggregation.partition.MonthPartitioner`).
        """
        builder = MonthPartitioner(zone)
        payloads: dict[int, bytes] = {}

        def add(page: list[WatchEvent]) -> None:
            builder.add(page)
            payloads.update({m: partition_to_bytes(p) for m, p in builder.take_finished().items()})

        read = 0
        for lo, hi in ranges:
            async for page in self.gateway.iter_event_pages(
                user_id, from_ms=lo, to_ms=hi, page_size=self.settings.page_size
            ):
                read += len(page)
                await asyncio.to_thread(add, page)
        rest = await asyncio.to_thread(builder.finish)
        if builder.out_of_order:
            return None, read
        payloads.update({m: partition_to_bytes(p) for m, p in rest.items()})
        return dict(sorted(payloads.items())), read

    def _finish(
        self,
        user_id: str,
        claim: Claim,
        prepared: _Prepared,
        payloads: dict[int, bytes],
    ) -> Frame | None:
        """Store the built months and the index, merge everything (runs in a thread).

        Returns None when the built months do not fit the plan (a local month that is not one UTC
        interval); the caller then reads everything.
        """
        plan = prepared.plan
        if not plan.full and not set(payloads) <= set(plan.rebuild):
            return None
        built = {m: partition_from_bytes(p) for m, p in payloads.items()}
        if not user_id:
            return merge_partitions(built.values())
        watermark = claim.watermark
        if plan.full and any(c.kind == "timezone" for c in claim.changes):
            self.cache.invalidate_user(user_id)  # partitions of the previous zone are useless now
        for month, payload in payloads.items():
            self.store.save_payload(user_id, claim.time_zone, month, payload, watermark=watermark)
        months = {m: e for m, e in plan.reuse.items() if m in prepared.reused}
        months.update({m: MonthEntry(p.size, watermark) for m, p in built.items()})
        self.store.save_index(user_id, PartitionIndex(claim.time_zone, watermark, months))
        return merge_partitions([*prepared.reused.values(), *built.values()])

    async def _read_all_at_once(
        self, user_id: str, zone: ZoneInfo, ranges: list[tuple[int | None, int | None]]
    ) -> tuple[dict[int, bytes], int]:
        """Read ``ranges`` whole and split the events by month in one pass (any arrival order)."""
        events: list[WatchEvent] = []
        for lo, hi in ranges:
            events.extend(await self.read_events(user_id, from_ms=lo, to_ms=hi))
        parts = await asyncio.to_thread(build_month_partitions, events, zone)
        return {m: partition_to_bytes(p) for m, p in parts.items()}, len(events)

    async def build_frame(self, claim: Claim, zone: ZoneInfo) -> tuple[Frame, int, Plan]:
        """Return the user's merged frame, the events read from Convex, and the plan followed."""
        user_id = claim.changes[0].user_id if claim.changes else ""
        prepared = await asyncio.to_thread(self._prepare, user_id, claim, zone)
        ranges: list[tuple[int | None, int | None]] = (
            [(None, None)] if prepared.plan.full else list(read_ranges(prepared.plan.rebuild, zone))
        )
        payloads, read = await self.read_partitions(user_id, zone, ranges)
        if payloads is None:  # not month by month: split everything read in one pass
            payloads, more = await self._read_all_at_once(user_id, zone, ranges)
            read += more
        frame = await asyncio.to_thread(self._finish, user_id, claim, prepared, payloads)
        if frame is None:
            prepared = _Prepared(Plan(full=True, reason="irregular months"), prepared.index, {})
            payloads, more = await self._read_all_at_once(user_id, zone, [(None, None)])
            read += more
            frame = await asyncio.to_thread(self._finish, user_id, claim, prepared, payloads)
            assert frame is not None  # a full plan accepts every month
        return frame, read, prepared.plan

    async def recompute(
        self,
        claim: Claim,
        *,
        now_ms: int,
        on_first: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
    ) -> RecomputeOutcome:
        """Recompute every eager and on-demand filter set of the claimed user.

        Args:
            claim: A granted claim (user, time zone, pending changes, interests).
            now_ms: The instant the time-relative results are computed for, epoch ms UTC.
            on_first: When given, the default dashboard's set (:data:`DEFAULT_FILTER_SET`) is computed
                alone first and handed to this callback (the runner stores it) before the other sets
                are computed, so the view most readers look at becomes fresh first.

        Returns:
            The results not already handed to ``on_first``, and the cost of the whole recompute
            (``events_read`` counts only the events read from Convex).

        Raises:
            ValueError: unknown time zone or an event instant out of range.
            GatewayError: reading events failed.
        """
        zone = load_zone(claim.time_zone)
        started = time.perf_counter()
        frame, events_read, plan = await self.build_frame(claim, zone)
        read_ms = (time.perf_counter() - started) * 1000
        filter_sets = filter_sets_for(claim)
        started = time.perf_counter()
        first_types: set[str] = set()
        remaining = filter_sets
        if on_first is not None:
            first = await asyncio.to_thread(
                compute_from_frame, frame, now_ms=now_ms, time_zone=claim.time_zone, filter_sets=filter_sets[:1]
            )
            first_ms = (time.perf_counter() - started) * 1000
            await on_first([result_to_convex(r) for r in first])
            first_types = {r.type for r in first}
            remaining = filter_sets[1:]
            started = time.perf_counter() - first_ms / 1000  # compute_ms excludes the callback's time
        results = await asyncio.to_thread(
            compute_from_frame,
            frame,
            now_ms=now_ms,
            time_zone=claim.time_zone,
            filter_sets=remaining,
        )
        compute_ms = (time.perf_counter() - started) * 1000
        return RecomputeOutcome(
            results=[result_to_convex(r) for r in results],
            computed_at_ms=now_ms,
            events_read=events_read,
            read_ms=read_ms,
            compute_ms=compute_ms,
            types=sorted({r.type for r in results} | first_types),
            filter_sets=len(filter_sets),
            full_rebuild=plan.full,
            months_rebuilt=len(plan.rebuild) if not plan.full else -1,
            plan_reason=plan.reason,
        )
