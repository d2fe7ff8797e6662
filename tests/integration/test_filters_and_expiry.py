"""On-demand filter sets and time-relative expiry, end to end over the local backend."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.integration.test_pipeline import as_int, import_as_user, run_worker
from tests.support.backend import LocalBackend
from worker.aggregation import FilterSet, compute_aggregations
from worker.gateway import ConvexGateway
from worker.models import ExpiryOutcome, WatchEvent

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def history(now_ms: int) -> list[WatchEvent]:
    """Forty views over the last 40 days: gaming, music and cooking titles on three channels."""
    titles = [
        ("Minecraft hardcore survival episode", "UCgaminggaminggaminggami", "Pixel Plays"),
        ("Official music video live concert", "UCmusicmusicmusicmusicmu", "Loud Records"),
        ("Easy chicken curry recipe", "UCcookingcookingcookingc", "Home Kitchen"),
    ]
    events = []
    for i in range(40):
        title, channel_id, channel_name = titles[i % 3]
        events.append(
            WatchEvent(
                watched_at_ms=now_ms - (i + 1) * DAY_MS + 3_600_000,
                video_id=f"vid{i:08d}",
                title=f"{title} {i}",
                channel_id=channel_id,
                channel_name=channel_name,
            )
        )
    return events


class TestOnDemandFilters:
    def test_registered_filter_is_computed_under_its_canonical_key(self, project_backend: LocalBackend) -> None:
        """registerFilter makes the worker compute that set; any list order reads the same result."""
        now_ms = time.time_ns() // 1_000_000
        views = history(now_ms)
        filters = {"timeframe": "All", "product": "all", "topics": ["music", "gaming", "music"]}

        async def scenario() -> tuple[Any, Any, Any, ExpiryOutcome, Any]:
            token = await import_as_user(project_backend, "filters", views, "UTC")
            await run_worker(project_backend)
            async with ConvexGateway(project_backend.url, user_token=token) as gw:
                before = await gw.query("dashboard:getAggregation", {"type": "kpi", "filters": filters})
                reg = await gw.mutation("dashboard:registerFilter", {"filters": filters})
                await run_worker(project_backend)
                swapped = {"timeframe": "All", "product": "all", "topics": ["gaming", "music"]}
                after = await gw.query("dashboard:getAggregation", {"type": "kpi", "filters": swapped})
                # A caller whose clock runs two days ahead: the set's results count as expired, but the
                # interest is judged by the server's clock, so it is kept and the set recomputed.
                async with ConvexGateway(project_backend.url, admin_key=project_backend.admin_key) as admin:
                    ahead = await admin.enqueue_expired(now_ms + 2 * DAY_MS)
                await run_worker(project_backend)
                again = await gw.query("dashboard:getAggregation", {"type": "kpi", "filters": swapped})
            return before, reg, after, ahead, again

        before, reg, after, ahead, again = asyncio.run(scenario())
        assert ahead.retired == 0 and ahead.removed_interests == 0
        assert again is not None and again["watermark"] > after["watermark"]
        key = FilterSet("All", "all", topics=("gaming", "music")).key
        assert before is None
        assert reg["filterKey"] == key
        assert after is not None and after["filterKey"] == key
        expected = compute_aggregations(
            views, now_ms=now_ms, time_zone="UTC", filter_sets=[FilterSet.from_dict(filters)], types=["kpi"]
        )[0]
        assert as_int(after["data"]["views"]) == expected.data["views"]
        assert as_int(after["data"]["uniqueChannels"]) == 2


class TestExpiry:
    def test_expired_time_relative_results_are_recomputed(self, project_backend: LocalBackend) -> None:
        """Once validUntilMs passes, enqueueExpired appends a change and the worker refreshes the result."""
        now_ms = time.time_ns() // 1_000_000
        views = history(now_ms)

        async def scenario() -> tuple[Any, Any, int]:
            token = await import_as_user(project_backend, "expiry", views, "UTC")
            await run_worker(project_backend)
            async with ConvexGateway(project_backend.url, user_token=token) as user:
                first = await user.query(
                    "dashboard:getAggregation", {"type": "kpi", "filters": {"timeframe": "MTD", "product": "all"}}
                )
                async with ConvexGateway(project_backend.url, admin_key=project_backend.admin_key) as admin:
                    enqueued = await admin.enqueue_expired(int(first["validUntilMs"]) + 1)
                    again = await admin.enqueue_expired(int(first["validUntilMs"]) + 1)
                assert again.enqueued == 0, "a user with a pending expiry change is not enqueued twice"
                await run_worker(project_backend)
                second = await user.query(
                    "dashboard:getAggregation", {"type": "kpi", "filters": {"timeframe": "MTD", "product": "all"}}
                )
            return first, second, enqueued

        first, second, enqueued = asyncio.run(scenario())
        assert first["validUntilMs"] is not None and first["validUntilMs"] > first["computedAtMs"]
        assert enqueued.enqueued >= 1
        assert second["watermark"] > first["watermark"]
        assert second["computedAtMs"] >= first["computedAtMs"]

    def test_each_call_resumes_the_scan_where_the_previous_one_stopped(self, project_backend: LocalBackend) -> None:
        """With ``limit`` 1, successive calls enqueue one user each, in expiry order, until all are.

        Three users' MTD sets expire at the same instant: each call stops after its one user and the
        next resumes after the last set it handled (a range on the index's creation time within that
        instant), so no user is skipped and none is enqueued twice.
        """
        now_ms = time.time_ns() // 1_000_000
        views = history(now_ms)
        mtd = {"type": "kpi", "filters": {"timeframe": "MTD", "product": "all"}}

        async def last_seqs(tokens: list[str]) -> list[int]:
            seqs = []
            for token in tokens:
                async with ConvexGateway(project_backend.url, user_token=token) as user:
                    seqs.append(as_int((await user.query("settings:get", {}))["lastSeq"]))
            return seqs

        async def scenario() -> tuple[list[int], list[int], list[int]]:
            tokens = [await import_as_user(project_backend, f"resume-{i}", views, "UTC") for i in range(3)]
            await run_worker(project_backend)
            async with ConvexGateway(project_backend.url, user_token=tokens[0]) as user:
                expires_at = as_int((await user.query("dashboard:getAggregation", mtd))["validUntilMs"])
            before = await last_seqs(tokens)
            counts: list[int] = []
            async with ConvexGateway(project_backend.url, admin_key=project_backend.admin_key) as admin:
                while not counts or (counts[-1] > 0 and len(counts) < 100):
                    raw = await admin.mutation("worker:enqueueExpired", {"nowMs": expires_at + 1, "limit": 1})
                    counts.append(as_int(raw["enqueued"]))
            after = await last_seqs(tokens)
            await run_worker(project_backend)
            return before, after, counts

        before, after, counts = asyncio.run(scenario())
        assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]
        assert counts[-1] == 0 and all(n == 1 for n in counts[:-1]) and len(counts) >= 4
