"""A recompute longer than the lease, against the local backend: the runner renews the lease
(``worker:renewLease``) so a second replica cannot claim the user meanwhile.

The lease is 500 ms and the recompute is held for 2 s (four leases) in a worker thread before the real
one runs, as a long history's engine work would be. Without renewals the lease would run out after
500 ms and the second replica's claim would be granted, duplicating the work.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support.backend import LocalBackend
from worker.config import load_settings
from worker.gateway import ConvexGateway
from worker.models import Claim, WatchEvent
from worker.recompute import RecomputeOutcome, Recomputer
from worker.runner import Runner

pytestmark = pytest.mark.integration

USER = "convex-local|lease-renewal"
LEASE_MS = 500
SLOW_S = 2.0


class SlowRecomputer:
    """The real recomputer, after ``SLOW_S`` seconds of work in a worker thread; ``slow`` is True meanwhile."""

    def __init__(self, inner: Recomputer) -> None:
        self.inner = inner
        self.slow = False

    async def recompute(self, claim: Claim, **kwargs: Any) -> RecomputeOutcome:
        self.slow = True
        try:
            await asyncio.to_thread(time.sleep, SLOW_S)
        finally:
            self.slow = False
        return await self.inner.recompute(claim, **kwargs)


def test_second_replica_cannot_claim_a_user_whose_recompute_outlasts_the_lease(project_backend: LocalBackend) -> None:
    settings = load_settings(
        convex_url=project_backend.url,
        convex_admin_key=project_backend.admin_key,
        worker_id="renewing-replica",
        heartbeat_file=None,
        lease_ms=LEASE_MS,
    )

    async def scenario() -> tuple[int, list[Claim], Runner, list[str], dict[str, Any]]:
        async with ConvexGateway(project_backend.url, admin_key=project_backend.admin_key) as other:
            view = WatchEvent(watched_at_ms=1_700_000_000_000, video_id="vid00000001", title="Video 1")
            await other.import_batch([view], source="takeout_json", user_id=USER)  # seq 1
            async with ConvexGateway(project_backend.url, admin_key=project_backend.admin_key) as gw:
                slow = SlowRecomputer(Recomputer(gw, settings))
                runner = Runner(settings, gw, recomputer=slow)  # type: ignore[arg-type]
                task = asyncio.create_task(runner.process_round())
                deadline = time.monotonic() + 30
                while not slow.slow and not task.done():
                    assert time.monotonic() < deadline, "the recompute did not start"
                    await asyncio.sleep(0.01)
                # the second replica tries to claim the user all through the slow recompute
                probes: list[Claim] = []
                while slow.slow:
                    probes.append(await other.claim_user(USER, "second-replica", LEASE_MS))
                    await asyncio.sleep(0.05)
                done = await asyncio.wait_for(task, 30)
            pending = [c.user_id for c in await other.pending_changes(2000)]
        token = project_backend.mint_token(USER.split("|", 1)[1])
        async with ConvexGateway(project_backend.url, user_token=token) as user_gw:
            state = await user_gw.query("settings:get", {})
        return done, probes, runner, pending, state

    done, probes, runner, pending, state = asyncio.run(scenario())
    assert done == 1
    assert len(probes) >= 10  # claims spread over the 2 s (four leases)
    granted = [p for p in probes if p.granted]
    assert granted == [], f"the second replica was granted the lease: {granted[0]}"
    assert {p.lease_owner for p in probes} == {"renewing-replica"}
    assert all(p.retry_after_ms is not None and 0 < p.retry_after_ms <= LEASE_MS for p in probes)
    assert runner.stats.lease_renewals >= 6 and runner.stats.leases_lost == 0  # every ≈ 167 ms for 2 s
    assert runner.stats.users_processed == 1 and USER not in pending
    assert state is not None and int(state["ackedSeq"]) == 1
