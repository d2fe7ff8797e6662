"""A user whose recompute fails, against the local backend: the deployment's retry backoff paces the real runner.

A user whose event reads time out is recorded and backed off in the same way, and the others of the
round are processed.

The runner's subscription is silenced and its poll interval is 30 s, so the retry can only come from
the denied claim's ``retryAfterMs``: the test shows the user is claimed again when the backoff ends,
not before (no busy loop) and not at the next poll, and that a change committed during the backoff
is processed with the retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.backend import LocalBackend
from worker.config import load_settings
from worker.errors import TransientGatewayError
from worker.gateway import ConvexGateway
from worker.models import ChangeEntry, Claim, WatchEvent
from worker.recompute import RecomputeOutcome, Recomputer
from worker.runner import Runner

pytestmark = pytest.mark.integration

USER = "convex-local|failures-backoff"


class SilentGateway(ConvexGateway):
    """The real gateway without the subscription's pushes; counts the claims of :data:`USER`."""

    claims_of_user = 0

    async def subscribe_pending(self, limit: int) -> AsyncIterator[list[ChangeEntry]]:
        await asyncio.Event().wait()  # never pushes
        yield []

    async def claim_user(self, user_id: str, worker_id: str, lease_ms: int) -> Claim:
        if user_id == USER:
            self.claims_of_user += 1
        return await super().claim_user(user_id, worker_id, lease_ms)


class FlakyRecomputer:
    """The real recomputer, except that the first recompute of :data:`USER` raises."""

    def __init__(self, inner: Recomputer) -> None:
        self.inner = inner
        self.attempts: list[tuple[float, tuple[int, ...]]] = []  # (monotonic time, claimed seqs) of USER

    async def recompute(self, claim: Claim, **kwargs: Any) -> RecomputeOutcome:
        if claim.changes and claim.changes[0].user_id == USER:
            self.attempts.append((time.monotonic(), tuple(c.seq for c in claim.changes)))
            if len(self.attempts) == 1:
                raise RuntimeError("deterministic failure on the first attempt")
        return await self.inner.recompute(claim, **kwargs)


def view(i: int) -> WatchEvent:
    return WatchEvent(watched_at_ms=1_700_000_000_000 + i * 60_000, video_id=f"vid{i:08d}", title=f"Video {i}")


def test_failed_user_is_retried_when_its_backoff_ends_with_the_changes_from_meanwhile(
    project_backend: LocalBackend,
) -> None:
    settings = load_settings(
        convex_url=project_backend.url,
        convex_admin_key=project_backend.admin_key,
        worker_id="failures-test",
        heartbeat_file=None,
        poll_interval_s=30.0,
    )

    async def scenario() -> tuple[FlakyRecomputer, SilentGateway, dict[str, Any], float]:
        async with ConvexGateway(project_backend.url, admin_key=project_backend.admin_key) as admin:
            await admin.import_batch([view(0)], source="takeout_json", user_id=USER)  # seq 1
            async with SilentGateway(project_backend.url, admin_key=project_backend.admin_key) as gw:
                flaky = FlakyRecomputer(Recomputer(gw, settings))
                runner = Runner(settings, gw, recomputer=flaky)  # type: ignore[arg-type]
                task = asyncio.create_task(runner.run())
                try:
                    deadline = time.monotonic() + 30
                    while not flaky.attempts and time.monotonic() < deadline:
                        await asyncio.sleep(0.01)
                    await admin.import_batch([view(1)], source="takeout_json", user_id=USER)  # seq 2, backed off
                    while len(flaky.attempts) < 2 and time.monotonic() < deadline:
                        await asyncio.sleep(0.01)
                    while USER in {c.user_id for c in await admin.pending_changes(2000)}:
                        assert time.monotonic() < deadline, "the retry was not acknowledged"
                        await asyncio.sleep(0.05)
                    acked_at = time.monotonic()
                finally:
                    runner.request_stop()
                    await asyncio.wait_for(task, 30)
            token = project_backend.mint_token(USER.split("|", 1)[1])
        async with ConvexGateway(project_backend.url, user_token=token) as user_gw:
            state = await user_gw.query("settings:get", {})
        return flaky, gw, state, acked_at

    flaky, gw, state, acked_at = asyncio.run(scenario())
    (failed_at, first_seqs), (retried_at, retry_seqs) = flaky.attempts
    assert first_seqs == (1,) and retry_seqs == (1, 2)  # the change from the backoff rides with the retry
    assert 1.0 <= retried_at - failed_at < 10  # the 1 s backoff, then at once: not the 30 s poll
    assert gw.claims_of_user <= 3  # granted, denied once when the round after the failure saw it, granted
    assert state is not None and int(state["ackedSeq"]) == 2 and acked_at >= retried_at


SLOW_USER = "convex-local|failures-timing-out"
OTHER_USER = "convex-local|failures-bystander"


class TimingOutGateway(ConvexGateway):
    """The real gateway, except that every event read of :data:`SLOW_USER` times out (after the
    gateway's retries); its claims, stores and failure records reach the deployment."""

    def _timed_out(self, user_id: str) -> None:
        if user_id == SLOW_USER:
            raise TransientGatewayError("worker:listEvents: ReadTimeout: timed out", function="worker:listEvents")

    async def iter_event_pages(self, user_id: str, **kwargs: Any) -> AsyncIterator[list[WatchEvent]]:
        self._timed_out(user_id)
        async for page in super().iter_event_pages(user_id, **kwargs):
            yield page

    async def iter_changed_event_pages(self, user_id: str, **kwargs: Any) -> AsyncIterator[list[WatchEvent]]:
        self._timed_out(user_id)
        async for page in super().iter_changed_event_pages(user_id, **kwargs):
            yield page


def test_user_whose_event_reads_time_out_is_backed_off_and_does_not_hold_up_the_others(
    project_backend: LocalBackend,
) -> None:
    """The first user of the round keeps timing out: its failure is recorded with ``failChanges`` (a
    backoff lease, one attempt on its row) and the round goes on with the next user."""
    settings = load_settings(
        convex_url=project_backend.url,
        convex_admin_key=project_backend.admin_key,
        worker_id="timeouts-test",
        heartbeat_file=None,
    )

    async def scenario() -> tuple[int, Claim, list[ChangeEntry], Runner]:
        async with ConvexGateway(project_backend.url, admin_key=project_backend.admin_key) as admin:
            await admin.import_batch([view(0)], source="takeout_json", user_id=SLOW_USER)  # first in the log
            await admin.import_batch([view(1)], source="takeout_json", user_id=OTHER_USER)
            async with TimingOutGateway(project_backend.url, admin_key=project_backend.admin_key) as gw:
                runner = Runner(settings, gw)
                done = await runner.process_round()
            other_claim = await admin.claim_user(SLOW_USER, "another-replica", 60_000)
            pending = await admin.pending_changes(2000)
        return done, other_claim, pending, runner

    done, other_claim, pending, runner = asyncio.run(scenario())
    assert done == 2
    assert runner.stats.users_failed == 1 and runner.stats.users_processed == 1
    assert {c.user_id for c in pending} == {SLOW_USER}  # the bystander's change was acknowledged
    # the deployment backs the failing user off (1 s after a first failure), for every replica
    assert not other_claim.granted and other_claim.lease_owner == "timeouts-test"
    assert other_claim.retry_after_ms is not None and 0 < other_claim.retry_after_ms <= 1000
