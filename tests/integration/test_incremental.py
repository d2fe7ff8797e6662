"""Incremental recompute end to end: over the local Convex backend, and across replicas over Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from tests.support.backend import LocalBackend
from tests.unit.test_partitions import (
    BASE,
    DAY,
    NOW,
    MemorySource,
    change,
    claim,
    event,
    from_scratch,
    history,
    make_settings,
)
from worker.aggregation import compute_aggregations
from worker.aggregation.timeframes import load_zone
from worker.cache import PartitionCache
from worker.config import load_settings
from worker.gateway import ConvexGateway, Gateway
from worker.importer import upload_events
from worker.models import Claim, WatchEvent
from worker.partitions import local_month_of
from worker.recompute import RecomputeOutcome, Recomputer, filter_sets_for, result_to_convex
from worker.runner import Runner
from worker.synthetic import generate_history

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


class RecordingRecomputer(Recomputer):
    """A Recomputer that keeps every outcome (what was read and what was computed)."""

    outcomes: list[tuple[Claim, RecomputeOutcome]]

    async def recompute(
        self, claim: Claim, *, now_ms: int, on_first: Any = None, on_batch: Any = None
    ) -> RecomputeOutcome:
        # Computes every set in one pass (no early store), so each outcome holds all results.
        out = await super().recompute(claim, now_ms=now_ms)
        self.outcomes.append((claim, out))
        return out


class TestOverTheBackend:
    def test_append_to_latest_month_reads_only_the_appended_views(self, project_backend: LocalBackend) -> None:
        """Import → worker → append 100 views to the latest month → worker: the second recompute
        reads only the 100 appended documents (by change seq), and its results equal a
        from-scratch compute."""
        tz = "Europe/Berlin"
        zone = load_zone(tz)
        views = generate_history(3000, seed=21, end_ms=1_790_000_000_000, time_zone=tz, years=2.0)
        last = max(v.watched_at_ms for v in views)
        extra = [
            WatchEvent(
                watched_at_ms=last + (i + 1) * 60_000, video_id=f"inc{i:08d}", title="Cooking pasta", channel_id="UCinc"
            )
            for i in range(100)
        ]
        assert local_month_of(extra[-1].watched_at_ms, zone) == local_month_of(last, zone)
        settings = load_settings(
            convex_url=project_backend.url,
            convex_admin_key=project_backend.admin_key,
            worker_id="inc",
            heartbeat_file=None,
        )
        cache = PartitionCache(max_bytes=64 * 1024 * 1024)
        outcomes: list[tuple[Claim, RecomputeOutcome]] = []

        async def run_worker() -> None:
            async with ConvexGateway(project_backend.url, admin_key=project_backend.admin_key) as gw:
                rc = RecordingRecomputer(gw, settings, cache=cache)
                rc.outcomes = outcomes
                stats = await Runner(settings, gw, recomputer=rc).run_until_idle()
                assert stats.users_failed == 0, stats.last_error

        async def scenario() -> tuple[Any, list[WatchEvent]]:
            token = project_backend.mint_token("incremental-append")
            async with ConvexGateway(project_backend.url, user_token=token) as gw:
                await gw.mutation("settings:setTimeZone", {"timeZone": tz})
                await upload_events(gw, views, source="synthetic")
            await run_worker()
            async with ConvexGateway(project_backend.url, user_token=token) as gw:
                await upload_events(gw, extra, source="synthetic")
            await run_worker()
            user_id = outcomes[-1][0].changes[0].user_id
            async with ConvexGateway(project_backend.url, admin_key=project_backend.admin_key) as gw:
                current = [e async for page in gw.iter_event_pages(user_id) for e in page]
            async with ConvexGateway(project_backend.url, user_token=token) as gw:
                dash = await gw.query("dashboard:getDashboard", {"filters": {"timeframe": "All", "product": "all"}})
            return dash, current

        dash, current = asyncio.run(scenario())
        first_claim, first = outcomes[0]
        second_claim, second = outcomes[-1]
        assert first.full_rebuild and first.events_read == len(views)
        month = local_month_of(last, zone)
        in_month = sum(1 for e in current if local_month_of(e.watched_at_ms, zone) == month)
        assert not second.full_rebuild and second.months_rebuilt == 1 and second.plan_reason == "append"
        assert second.events_read == len(extra) < in_month
        expected = compute_aggregations(
            current, now_ms=second.computed_at_ms, time_zone=tz, filter_sets=filter_sets_for(second_claim)
        )
        assert second.results == [result_to_convex(r) for r in expected]
        kpi = next(a for a in dash["aggregations"] if a["type"] == "kpi")
        assert int(kpi["data"]["views"]) == len(views) + len(extra)
        assert dash["freshness"]["stale"] is False


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"test-incremental-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        client.close()


class TestAcrossReplicas:
    def test_second_replica_reuses_partitions_from_redis(self, redis_prefix: str) -> None:
        """Replica B (empty L1) processes the next change with the partitions replica A put in Redis."""
        tz = "America/New_York"
        zone = load_zone(tz)
        source = MemorySource()
        source.insert(history(500, 31), 1)

        def replica() -> Recomputer:
            cache = PartitionCache(max_bytes=64 * 1024 * 1024, redis_url=REDIS_URL, key_prefix=redis_prefix)
            return Recomputer(cast(Gateway, source), make_settings(), cache=cache)

        a, b = replica(), replica()
        first = asyncio.run(a.recompute(claim(tz, [change(1, "import", BASE, NOW)]), now_ms=NOW))
        assert first.full_rebuild
        late = [event(BASE + 20 * DAY + i * 60_000, i) for i in range(10)]
        source.insert(late, 2)
        source.read = 0
        c2 = claim(tz, [change(2, "import", late[0].watched_at_ms, late[-1].watched_at_ms)])
        second = asyncio.run(b.recompute(c2, now_ms=NOW))
        month = local_month_of(late[0].watched_at_ms, zone)
        assert not second.full_rebuild and second.plan_reason == "append"
        assert second.events_read == len(late)  # the month itself came from Redis
        assert sum(1 for e in source.events if local_month_of(e.watched_at_ms, zone) == month) > len(late)
        stats = b.cache.stats()
        assert stats.l2_hits > 0 and stats.l2_errors == 0
        assert second.results == from_scratch(source.events, c2, NOW)
        a.cache.close()
        b.cache.close()
