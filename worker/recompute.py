"""Turn a claimed user into aggregation results: read events, compute, encode for Convex."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from worker.aggregation import (
    EAGER_FILTER_SETS,
    AggregationResult,
    FilterSet,
    compute_aggregations,
)
from worker.config import Settings
from worker.gateway import Gateway
from worker.models import Claim, WatchEvent


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
    """

    results: list[dict[str, Any]]
    computed_at_ms: int
    events_read: int
    read_ms: float
    compute_ms: float
    types: list[str]
    filter_sets: int


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


def filter_sets_for(claim: Claim) -> list[FilterSet]:
    """Return the eager filter sets plus the user's active on-demand sets, without duplicates."""
    sets: dict[str, FilterSet] = {fs.key: fs for fs in EAGER_FILTER_SETS}
    for raw in claim.interests:
        try:
            fs = FilterSet.from_dict(dict(raw))
        except ValueError:
            continue  # rejected by registerFilter's validation already; never fatal here
        sets.setdefault(fs.key, fs)
    return list(sets.values())


class Recomputer:
    """Full recompute of a user's aggregates from all of their events.

    Args:
        gateway: Source of the events.
        settings: Page size and related knobs.
    """

    def __init__(self, gateway: Gateway, settings: Settings) -> None:
        self.gateway = gateway
        self.settings = settings

    async def read_events(self, user_id: str) -> list[WatchEvent]:
        """Read every event of the user, in ``watchedAtMs`` order."""
        events: list[WatchEvent] = []
        async for page in self.gateway.iter_event_pages(user_id, page_size=self.settings.page_size):
            events.extend(page)
        return events

    async def recompute(self, claim: Claim, *, now_ms: int) -> RecomputeOutcome:
        """Recompute every eager and on-demand filter set of the claimed user.

        Args:
            claim: A granted claim (user, time zone, pending changes, interests).
            now_ms: The instant the time-relative results are computed for, epoch ms UTC.
        """
        user_id = claim.changes[0].user_id if claim.changes else ""
        started = time.perf_counter()
        events = await self.read_events(user_id)
        read_ms = (time.perf_counter() - started) * 1000
        filter_sets = filter_sets_for(claim)
        started = time.perf_counter()
        results = await asyncio.to_thread(
            compute_aggregations,
            events,
            now_ms=now_ms,
            time_zone=claim.time_zone,
            filter_sets=filter_sets,
        )
        compute_ms = (time.perf_counter() - started) * 1000
        return RecomputeOutcome(
            results=[result_to_convex(r) for r in results],
            computed_at_ms=now_ms,
            events_read=len(events),
            read_ms=read_ms,
            compute_ms=compute_ms,
            types=sorted({r.type for r in results}),
            filter_sets=len(filter_sets),
        )
