"""Runner: lease handling, acknowledgement, poisoned users, retry backoff, transient failures, stop.

The gateway here is an in-memory stand-in (the failure modes it injects cannot be produced on demand
by a real deployment); the same runner is exercised end to end against the local Convex backend in
tests/integration/.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from worker import runner as runner_module
from worker.config import Settings, load_settings
from worker.errors import AuthenticationError, PermanentGatewayError, TransientGatewayError
from worker.models import (
    AckOutcome,
    ChangeEntry,
    Claim,
    ExpiryOutcome,
    FailOutcome,
    LeaseRenewal,
    StoreOutcome,
    WatchEvent,
)
from worker.recompute import RecomputeOutcome
from worker.runner import Runner, coalesce_by_user


class FakeGateway:
    """Change log, leases and stored results kept in dictionaries.

    ``lease_owner`` holds leases that never expire (renewable by their owner); ``held_until`` holds
    leases that no worker can claim, their owner included, until a ``time.monotonic()`` instant (a
    retry backoff, or another replica's lease about to expire): a claim is denied with the time left
    as ``retry_after_ms``, as ``worker:claimUser`` does. With ``fail_backoff_s`` set, ``fail_changes``
    keeps the rows pending and backs the user off that long (as ``worker:failChanges`` does before the
    fifth attempt) and reports that backoff; without it the rows are dropped (dead-lettered at once,
    no backoff). ``dead_letters[user]`` is how many dead letters the user's next acknowledgement of
    pending rows supersedes; ``fail_changes_with`` makes recording a failure raise. ``renew_lease``
    renews a lease while ``lease_owner`` names the caller (as ``worker:renewLease`` does) and records
    each call in ``renewals``; ``renew_errors`` are raised by the next calls, in order.
    """

    def __init__(self) -> None:
        self.pending: list[ChangeEntry] = []
        self.lease_owner: dict[str, str] = {}
        self.held_until: dict[str, tuple[str, float]] = {}
        self.fail_backoff_s: float | None = None
        self.stored: dict[str, list[Mapping[str, Any]]] = {}
        self.store_calls: list[list[str]] = []
        self.acked: list[tuple[str, int]] = []
        self.failed: list[tuple[str, int, str]] = []
        self.failed_at: list[float] = []  # time.monotonic() of each fail_changes call
        self.fail_store_with: Exception | None = None
        self.fail_changes_with: Exception | None = None
        self.dead_letters: dict[str, int] = {}
        self.subscription_values: asyncio.Queue[list[ChangeEntry]] = asyncio.Queue()
        self.calls: list[str] = []  # "read" (pendingChanges) and "claim:<user>", in order
        self.expiry_outcome: ExpiryOutcome | Exception = ExpiryOutcome()
        self.expiry_checks: list[int] = []  # now_ms of each enqueue_expired call
        self.connect_errors: list[Exception] = []  # raised by the next validate_credentials calls, in order
        self.connect_attempts = 0
        self.renewals: list[tuple[str, str, int, float]] = []  # (user, worker, lease_ms, time.monotonic())
        self.renew_errors: list[Exception] = []
        self.acked_at: list[float] = []  # time.monotonic() of each ack_changes call

    async def validate_credentials(self) -> None:
        self.connect_attempts += 1
        if self.connect_errors:
            raise self.connect_errors.pop(0)

    async def pending_changes(self, limit: int) -> list[ChangeEntry]:
        self.calls.append("read")
        return self.pending[:limit]

    async def claim_user(self, user_id: str, worker_id: str, lease_ms: int) -> Claim:
        self.calls.append(f"claim:{user_id}")
        held = self.held_until.get(user_id)
        if held is not None:
            holder, until = held
            left_s = until - time.monotonic()
            if left_s > 0:
                return Claim(
                    granted=False,
                    lease_owner=holder,
                    lease_expires_at_ms=None,
                    time_zone="UTC",
                    last_seq=0,
                    changes=(),
                    retry_after_ms=max(1, math.ceil(left_s * 1000)),
                )
            del self.held_until[user_id]
        owner = self.lease_owner.setdefault(user_id, worker_id)
        changes = tuple(c for c in self.pending if c.user_id == user_id)
        return Claim(
            granted=owner == worker_id,
            lease_owner=owner,
            lease_expires_at_ms=None,
            time_zone="UTC",
            last_seq=max((c.seq for c in changes), default=0),
            changes=changes,
        )

    async def renew_lease(self, user_id: str, worker_id: str, lease_ms: int) -> LeaseRenewal:
        self.renewals.append((user_id, worker_id, lease_ms, time.monotonic()))
        if self.renew_errors:
            raise self.renew_errors.pop(0)
        owner = self.lease_owner.get(user_id)
        return LeaseRenewal(renewed=owner == worker_id, lease_owner=owner)

    async def iter_event_pages(
        self,
        user_id: str,
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
        max_change_seq: int | None = None,
        page_size: int = 4000,
    ) -> AsyncIterator[list[WatchEvent]]:
        yield []

    async def iter_changed_event_pages(
        self, user_id: str, *, after_seq: int, through_seq: int, page_size: int = 4000
    ) -> AsyncIterator[list[WatchEvent]]:
        yield []

    async def store_aggregations(
        self,
        user_id: str,
        *,
        watermark: int,
        computed_at_ms: int,
        results: Sequence[Mapping[str, Any]],
        chunk_size: int,
        known_hashes: Mapping[tuple[str, str], str] | None = None,
    ) -> StoreOutcome:
        if self.fail_store_with:
            raise self.fail_store_with
        self.stored.setdefault(user_id, []).extend(results)
        self.store_calls.append([str(r["filterKey"]) for r in results])
        return StoreOutcome(written=len(results))

    async def ack_changes(self, user_id: str, worker_id: str, up_to_seq: int) -> AckOutcome:
        before = len(self.pending)
        self.pending = [c for c in self.pending if not (c.user_id == user_id and c.seq <= up_to_seq)]
        self.lease_owner.pop(user_id, None)
        self.acked.append((user_id, up_to_seq))
        self.acked_at.append(time.monotonic())
        acked = before - len(self.pending)
        return AckOutcome(acked=acked, superseded=self.dead_letters.pop(user_id, 0) if acked else 0)

    async def fail_changes(self, user_id: str, worker_id: str, up_to_seq: int, error: str) -> FailOutcome:
        if self.fail_changes_with:
            raise self.fail_changes_with
        self.failed.append((user_id, up_to_seq, error))
        self.failed_at.append(time.monotonic())
        self.lease_owner.pop(user_id, None)
        rows = sum(1 for c in self.pending if c.user_id == user_id and c.seq <= up_to_seq)
        if self.fail_backoff_s is not None:
            self.held_until[user_id] = (worker_id, time.monotonic() + self.fail_backoff_s)
            return FailOutcome(failed=rows, backoff_ms=round(self.fail_backoff_s * 1000))
        self.pending = [c for c in self.pending if c.user_id != user_id]
        return FailOutcome(failed=rows, dead_lettered=rows)

    async def enqueue_expired(self, now_ms: int) -> ExpiryOutcome:
        self.expiry_checks.append(now_ms)
        if isinstance(self.expiry_outcome, Exception):
            raise self.expiry_outcome
        return self.expiry_outcome

    async def subscribe_pending(self, limit: int) -> AsyncIterator[list[ChangeEntry]]:
        while True:
            yield await self.subscription_values.get()


class FakeRecomputer:
    """Recomputes by returning one result; raises for ``poisoned`` users, for the first
    ``fail_first[user]`` recomputes of a user, and a :class:`TransientGatewayError` (its reads timing
    out, after the gateway's retries) for ``timing_out`` users."""

    def __init__(
        self,
        poisoned: set[str] | None = None,
        first: bool = False,
        fail_first: dict[str, int] | None = None,
        timing_out: set[str] | None = None,
    ) -> None:
        self.poisoned = poisoned or set()
        self.first = first
        self.fail_first = dict(fail_first or {})
        self.timing_out = timing_out or set()
        self.calls: list[str] = []

    async def recompute(
        self,
        claim: Claim,
        *,
        now_ms: int,
        on_first: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
        on_batch: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
    ) -> RecomputeOutcome:  # results are returned, not handed to on_batch: the runner stores them itself
        user = claim.changes[0].user_id
        self.calls.append(user)
        if user in self.poisoned:
            raise ValueError(f"bad data for {user}")
        if user in self.timing_out:
            raise TransientGatewayError(f"worker:listEvents: ReadTimeout: timed out reading {user}")
        if self.fail_first.get(user, 0) > 0:
            self.fail_first[user] -= 1
            raise ValueError(f"failing for {user}")
        if self.first and on_first is not None:
            await on_first([{"type": "kpi", "filterKey": "All|all||", "data": {}, "definitionVersion": 1}])
        return RecomputeOutcome(
            results=[{"type": "kpi", "filterKey": "All|all||", "data": {"views": 1}, "definitionVersion": 1}],
            computed_at_ms=now_ms,
            events_read=0,
            read_ms=0.0,
            compute_ms=0.0,
            types=["kpi"],
            filter_sets=1,
        )


class SlowRecomputer(FakeRecomputer):
    """A recompute that takes ``slices`` × ``slice_s`` seconds in a worker thread, as the real engine's
    work does (``asyncio.to_thread``), calling ``during(i)`` on the event loop after each slice; with
    ``block_loop`` it sleeps on the event loop itself instead, as a loop that is stuck would."""

    def __init__(
        self, slices: int, slice_s: float, during: Callable[[int], None] | None = None, block_loop: bool = False
    ) -> None:
        super().__init__()
        self.slices = slices
        self.slice_s = slice_s
        self.during = during
        self.block_loop = block_loop

    async def recompute(self, claim: Claim, **kwargs: Any) -> RecomputeOutcome:
        for i in range(self.slices):
            if self.block_loop:
                time.sleep(self.slice_s)
            else:
                await asyncio.to_thread(time.sleep, self.slice_s)
            if self.during is not None:
                self.during(i)
        return await super().recompute(claim, **kwargs)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        convex_url="http://127.0.0.1:9",
        convex_admin_key="k",
        worker_id="w1",
        heartbeat_file=str(tmp_path / "hb"),
        debounce_ms=0,
        poll_interval_s=0.05,
    )


def change(user: str, seq: int, kind: str = "import") -> ChangeEntry:
    return ChangeEntry(user_id=user, seq=seq, kind=kind, from_ms=0, to_ms=1, count=1)  # type: ignore[arg-type]


class TestCoalesce:
    def test_users_in_order_of_first_change(self) -> None:
        """Several rows of one user become one unit of work, oldest user first."""
        rows = [change("b", 1), change("a", 1), change("b", 2), change("a", 2)]
        assert coalesce_by_user(rows) == ["b", "a"]


class TestProcessRound:
    def test_processes_and_acks_each_user_once(self, settings: Settings) -> None:
        """All rows of a user are consumed with one recompute and acknowledged up to the watermark."""
        gw, rc = FakeGateway(), FakeRecomputer()
        gw.pending = [change("a", 1), change("b", 1), change("a", 2)]
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        stats = asyncio.run(runner.run_until_idle())
        assert rc.calls == ["a", "b"]
        assert gw.acked == [("a", 2), ("b", 1)]
        assert gw.pending == []
        assert stats.users_processed == 2 and stats.changes_acked == 3

    def test_user_leased_by_another_replica_is_left_pending(self, settings: Settings) -> None:
        """A user whose lease another replica holds is neither recomputed nor acknowledged."""
        gw, rc = FakeGateway(), FakeRecomputer()
        gw.pending = [change("a", 1), change("b", 1)]
        gw.lease_owner["a"] = "other-replica"
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        asyncio.run(runner.process_round())
        assert rc.calls == ["b"]
        assert [c.user_id for c in gw.pending] == ["a"]
        assert runner.stats.users_skipped_lease == 1

    def test_poisoned_user_is_recorded_and_others_continue(self, settings: Settings) -> None:
        """A recompute that raises records the failure on the user's rows and the round goes on."""
        gw, rc = FakeGateway(), FakeRecomputer(poisoned={"a"})
        gw.pending = [change("a", 1), change("b", 1)]
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        asyncio.run(runner.process_round())
        assert gw.failed and gw.failed[0][:2] == ("a", 1) and "bad data for a" in gw.failed[0][2]
        assert gw.acked == [("b", 1)]
        assert runner.stats.users_failed == 1

    def test_transient_failure_leaves_changes_pending_when_the_deployment_is_down(self, settings: Settings) -> None:
        """When even ``failChanges`` cannot reach the deployment, nothing is acknowledged or failed: the
        round ends and the rows stay pending with their attempts unchanged."""
        gw, rc = FakeGateway(), FakeRecomputer()
        gw.pending = [change("a", 1), change("b", 1)]
        gw.fail_store_with = TransientGatewayError("connection refused")
        gw.fail_changes_with = TransientGatewayError("connection refused")
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        with pytest.raises(TransientGatewayError):
            asyncio.run(runner.process_round())
        assert gw.acked == [] and gw.failed == [] and len(gw.pending) == 2
        assert rc.calls == ["a"] and runner.stats.users_failed == 0

    def test_user_whose_reads_time_out_is_backed_off_and_the_round_goes_on(self, settings: Settings) -> None:
        """A transient error of one user's recompute is recorded like any failure (backoff, attempts
        counted towards the dead letter) and the other users of the round are processed."""
        gw, rc = FakeGateway(), FakeRecomputer(timing_out={"a"})
        gw.fail_backoff_s = 30.0
        gw.pending = [change("a", 1), change("b", 1), change("c", 1)]
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            assert asyncio.run(runner.process_round()) == 3
        assert [(user, seq) for user, seq, _ in gw.failed] == [("a", 1)]
        assert gw.failed[0][2] == "TransientGatewayError: worker:listEvents: ReadTimeout: timed out reading a"
        assert gw.acked == [("b", 1), ("c", 1)]
        assert runner.stats.users_failed == 1 and runner.stats.users_processed == 2
        [line] = [e for e in logs if e["event"] == "user.failed"]
        assert line["transient"] is True and line["backoff_ms"] == 30_000
        # the next round skips the backed-off user instead of failing on it again
        gw.pending.append(change("b", 2))
        assert asyncio.run(runner.process_round()) == 1
        assert rc.calls == ["a", "b", "c", "b"] and gw.acked[-1] == ("b", 2)

    def test_store_timing_out_for_one_user_is_recorded_too(self, settings: Settings) -> None:
        """A transient failure after the recompute (storing the results) is recorded on the user's rows."""
        gw, rc = FakeGateway(), FakeRecomputer()
        gw.pending = [change("a", 1)]
        gw.fail_store_with = TransientGatewayError("worker:storeAggregations: HTTP 503")
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        assert asyncio.run(runner.process_round()) == 1
        assert gw.failed == [("a", 1, "TransientGatewayError: worker:storeAggregations: HTTP 503")]
        assert gw.acked == [] and runner.stats.users_failed == 1

    def test_default_set_is_stored_before_the_rest(self, settings: Settings) -> None:
        """Results handed over early (the default dashboard) are stored first, under the same watermark."""
        gw, rc = FakeGateway(), FakeRecomputer(first=True)
        gw.pending = [change("a", 1)]
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        asyncio.run(runner.process_round())
        assert gw.store_calls == [["All|all||"], ["All|all||"]]
        assert runner.stats.results_written == 2 and gw.acked == [("a", 1)]

    def test_stale_pushed_rows_cost_an_empty_claim_only(self, settings: Settings) -> None:
        """Rows pushed by the subscription but acknowledged since: the claim finds nothing to do.

        The lease is released with an acknowledgement up to seq 0, which consumes nothing: nothing was
        stored, so it must not mark anything done (such as a dead letter retried since the claim).
        """
        gw, rc = FakeGateway(), FakeRecomputer()
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        assert asyncio.run(runner.process_round([change("a", 1)])) == 0
        assert gw.calls == ["claim:a"] and rc.calls == [] and gw.stored == {}
        assert gw.acked == [("a", 0)] and "a" not in gw.lease_owner


class TestLogLinesNameTheReplica:
    def test_round_lines_carry_the_worker_id(self, settings: Settings) -> None:
        """With several replicas logging to one place, batch.processed says which one did the work."""
        import io
        import json

        from worker.logs import configure_logging

        out = io.StringIO()
        configure_logging("json", "info", stream=out)
        try:
            gw, rc = FakeGateway(), FakeRecomputer()
            gw.pending = [change("a", 1)]
            asyncio.run(Runner(settings, gw, recomputer=rc).run_until_idle())  # type: ignore[arg-type]
        finally:
            structlog.reset_defaults()
            structlog.contextvars.clear_contextvars()
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        processed = [line for line in lines if line["event"] == "batch.processed"]
        assert len(processed) == 1 and processed[0]["worker"] == "w1" and processed[0]["user"] == "a"


class TestOutcomeLogs:
    @staticmethod
    def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
        return [e for e in logs if e["event"] == name]

    def test_batch_line_reports_the_dead_letters_the_ack_superseded(self, settings: Settings) -> None:
        """``batch.processed`` carries ``superseded`` next to ``acked``, and the run counts them."""
        gw, rc = FakeGateway(), FakeRecomputer()
        gw.pending = [change("a", 3), change("b", 1)]
        gw.dead_letters["a"] = 2  # seqs 1 and 2 were dead-lettered; the recompute at seq 3 covers them
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            asyncio.run(runner.process_round())
        lines = self.events(logs, "batch.processed")
        assert [(e["watermark"], e["acked"], e["superseded"]) for e in lines] == [(3, 1, 2), (1, 1, 0)]  # a, then b
        assert runner.stats.dead_letters_superseded == 2 and runner.stats.changes_acked == 2

    def test_failure_line_reports_the_backoff_the_deployment_set(self, settings: Settings) -> None:
        """``user.failed`` says how long the user is backed off, with the rows failed and dead-lettered."""
        gw, rc = FakeGateway(), FakeRecomputer(poisoned={"a"})
        gw.fail_backoff_s = 4.0
        gw.pending = [change("a", 1), change("a", 2)]
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            asyncio.run(runner.process_round())
        [line] = self.events(logs, "user.failed")
        assert line["log_level"] == "error" and line["watermark"] == 2
        assert (line["failed"], line["dead_lettered"], line["backoff_ms"]) == (2, 0, 4000)
        assert isinstance(line["exc_info"], ValueError) and "record_error" not in line

    def test_failure_line_reports_a_last_attempt_without_backoff(self, settings: Settings) -> None:
        """When the failure dead-letters every row, the deployment sets no backoff: 0 is logged."""
        gw, rc = FakeGateway(), FakeRecomputer(poisoned={"a"})
        gw.pending = [change("a", 1)]
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            asyncio.run(runner.process_round())
        [line] = self.events(logs, "user.failed")
        assert (line["failed"], line["dead_lettered"], line["backoff_ms"]) == (1, 1, 0)

    def test_failure_that_cannot_be_recorded_is_still_logged(self, settings: Settings) -> None:
        """If ``failChanges`` itself fails, the recompute's error is logged with why it was not recorded."""
        gw, rc = FakeGateway(), FakeRecomputer(poisoned={"a"})
        gw.fail_changes_with = PermanentGatewayError("worker:failChanges: boom")
        gw.pending = [change("a", 1), change("b", 1)]
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            asyncio.run(runner.process_round())
        [line] = self.events(logs, "user.failed")
        assert line["backoff_ms"] is None and line["record_error"] == "worker:failChanges: boom"
        assert gw.acked == [("b", 1)] and runner.stats.users_failed == 1


class TestBackoff:
    def test_denied_claim_is_retried_when_the_lease_ends_not_at_the_next_poll(self, settings: Settings) -> None:
        """A user whose lease ends in 0.2 s is claimed again then (30 s poll, no push), and only then."""
        gw, rc = FakeGateway(), FakeRecomputer()
        gw.pending = [change("a", 1)]
        gw.held_until["a"] = ("other-replica", time.monotonic() + 0.2)
        runner = Runner(settings.model_copy(update={"poll_interval_s": 30.0}), gw, recomputer=rc)  # type: ignore[arg-type]

        async def scenario() -> float:
            started = time.monotonic()
            task = asyncio.create_task(runner.run())
            while not gw.acked and time.monotonic() - started < 5:
                await asyncio.sleep(0.01)
            elapsed = time.monotonic() - started
            runner.request_stop()
            await asyncio.wait_for(task, 5)
            return elapsed

        elapsed = asyncio.run(scenario())
        assert gw.acked == [("a", 1)]
        assert 0.2 <= elapsed < 3  # at the lease's end, not after the 30 s poll interval
        assert gw.calls.count("claim:a") == 2  # denied once, granted once: no claims in between
        assert runner.stats.users_skipped_lease == 1

    def test_failed_user_waits_out_its_backoff_then_is_processed_with_changes_from_meanwhile(
        self, settings: Settings
    ) -> None:
        """After a failure the user is not claimed in a loop; a change pushed meanwhile waits for the backoff."""
        gw, rc = FakeGateway(), FakeRecomputer(fail_first={"a": 1})
        gw.fail_backoff_s = 0.3
        gw.pending = [change("a", 1)]
        runner = Runner(settings.model_copy(update={"poll_interval_s": 30.0}), gw, recomputer=rc)  # type: ignore[arg-type]
        times: dict[str, float] = {}

        async def scenario() -> None:
            task = asyncio.create_task(runner.run())
            while not gw.failed:
                await asyncio.sleep(0.005)
            # the backoff starts when failChanges is called, not when this loop notices it: logging the
            # failure with its traceback can take tens of milliseconds before the loop runs again
            times["failed"] = gw.failed_at[0]
            gw.pending.append(change("a", 2))
            await gw.subscription_values.put(list(gw.pending))
            while not gw.acked and time.monotonic() - times["failed"] < 5:
                await asyncio.sleep(0.005)
            times["acked"] = time.monotonic()
            runner.request_stop()
            await asyncio.wait_for(task, 5)

        asyncio.run(scenario())
        assert rc.calls == ["a", "a"]  # the failed attempt, then one retry
        assert gw.acked == [("a", 2)]  # the retry covers the change that arrived during the backoff
        assert times["acked"] - times["failed"] >= 0.3
        # the first attempt, at most the round right after it and the push (both denied), the retry
        assert 3 <= gw.calls.count("claim:a") <= 4
        assert runner.stats.users_failed == 1 and runner.stats.users_processed == 1

    def test_run_until_idle_does_not_wait_for_a_backed_off_user(self, settings: Settings) -> None:
        """The burst mode ends when only backed-off users are left pending (they are not waited for)."""
        gw, rc = FakeGateway(), FakeRecomputer(poisoned={"a"})
        gw.fail_backoff_s = 30.0
        gw.pending = [change("a", 1), change("b", 1)]
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        started = time.monotonic()
        stats = asyncio.run(runner.run_until_idle())
        assert time.monotonic() - started < 5
        assert rc.calls == ["a", "b"] and gw.acked == [("b", 1)]
        assert [c.user_id for c in gw.pending] == ["a"]
        assert stats.users_failed == 1 and stats.users_skipped_lease == 1


class TestRunLoop:
    def test_subscription_wakes_loop_and_stop_exits(self, settings: Settings, tmp_path: Path) -> None:
        """A change announced by the subscription is processed; request_stop ends run() cleanly."""
        gw, rc = FakeGateway(), FakeRecomputer()
        settings = settings.model_copy(update={"poll_interval_s": 30.0})
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]

        async def scenario() -> None:
            task = asyncio.create_task(runner.run())
            await asyncio.sleep(0.05)
            gw.pending = [change("a", 1)]
            await gw.subscription_values.put(list(gw.pending))
            for _ in range(100):
                if gw.acked:
                    break
                await asyncio.sleep(0.01)
            runner.request_stop()
            await asyncio.wait_for(task, 5)

        asyncio.run(scenario())
        assert gw.acked == [("a", 1)]
        assert (tmp_path / "hb").exists()
        # catch-up read at start; the pushed rows are claimed without reading them again; the round
        # after the one that did work reads, finds nothing and ends the burst
        assert gw.calls == ["read", "claim:a", "read"]


class TestConnect:
    def test_unreachable_deployment_is_tried_again_with_growing_waits(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A deployment that does not answer yet is waited for; each failed attempt is logged."""
        monkeypatch.setattr(runner_module, "CONNECT_FIRST_WAIT_S", 0.01)
        gw = FakeGateway()
        gw.connect_errors = [TransientGatewayError("connection refused"), TransientGatewayError("HTTP 503")]
        runner = Runner(settings.model_copy(update={"max_backoff_s": 0.5}), gw, recomputer=FakeRecomputer())  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            assert asyncio.run(runner.connect()) is True
        assert gw.connect_attempts == 3
        failed = [e for e in logs if e["event"] == "worker.connect_failed"]
        assert [(e["attempt"], e["error"], e["log_level"]) for e in failed] == [
            (1, "connection refused", "warning"),
            (2, "HTTP 503", "warning"),
        ]
        assert all(0 < e["retry_in_s"] <= 0.5 for e in failed) and failed[0]["url"] == "http://127.0.0.1:9/"
        assert [e["attempts"] for e in logs if e["event"] == "worker.connected"] == [3]

    def test_connected_is_logged_when_the_first_attempt_succeeds_too(self, settings: Settings) -> None:
        """``worker.connected`` marks every start-up once the deployment answers, with attempts=1 on the first try."""
        gw = FakeGateway()
        runner = Runner(settings, gw, recomputer=FakeRecomputer())  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            assert asyncio.run(runner.connect()) is True
        assert [(e["event"], e["attempts"], e["url"]) for e in logs] == [("worker.connected", 1, "http://127.0.0.1:9/")]
        assert gw.connect_attempts == 1

    def test_stop_ends_the_wait(self, settings: Settings) -> None:
        """SIGTERM/SIGINT while the deployment is unreachable: connect returns False at once, not after the wait."""
        gw = FakeGateway()
        gw.connect_errors = [TransientGatewayError("connection refused")] * 100
        runner = Runner(settings.model_copy(update={"max_backoff_s": 60.0}), gw, recomputer=FakeRecomputer())  # type: ignore[arg-type]

        async def scenario() -> bool:
            task = asyncio.create_task(runner.connect())
            while gw.connect_attempts < 1:
                await asyncio.sleep(0.005)
            runner.request_stop()
            return await asyncio.wait_for(task, 2)

        assert asyncio.run(scenario()) is False
        assert gw.connect_attempts == 1

    @pytest.mark.parametrize(
        "error",
        [
            AuthenticationError("rejected the admin key", reason="BadAdminKey"),
            PermanentGatewayError("worker:pendingChanges: HTTP 404, not JSON"),
        ],
    )
    def test_permanent_errors_are_raised_at_once(self, settings: Settings, error: Exception) -> None:
        """A rejected key or a URL that is no deployment of this project is not retried."""
        gw = FakeGateway()
        gw.connect_errors = [error]
        runner = Runner(settings, gw, recomputer=FakeRecomputer())  # type: ignore[arg-type]
        with pytest.raises(type(error)):
            asyncio.run(runner.connect())
        assert gw.connect_attempts == 1


class TestExpiryCheck:
    @pytest.mark.parametrize(
        ("outcome", "expected"),
        [
            (ExpiryOutcome(), []),
            (ExpiryOutcome(enqueued=2), [("expiry.enqueued", {"users": 2})]),
            (ExpiryOutcome(removed_interests=256), [("expiry.filters_removed", {"sets": 0, "interests": 256})]),
            (
                ExpiryOutcome(enqueued=1, retired=3, removed_interests=4),
                [("expiry.enqueued", {"users": 1}), ("expiry.filters_removed", {"sets": 3, "interests": 4})],
            ),
        ],
    )
    def test_logs_what_the_check_did(
        self, settings: Settings, outcome: ExpiryOutcome, expected: list[tuple[str, dict[str, int]]]
    ) -> None:
        """Each count is logged when non-zero: users enqueued, filter sets and interests removed."""
        gw = FakeGateway()
        gw.expiry_outcome = outcome
        runner = Runner(settings, gw, recomputer=FakeRecomputer(), clock_ms=lambda: 1234)  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            asyncio.run(runner._enqueue_expired())
        assert gw.expiry_checks == [1234]
        assert [(e["event"], {k: v for k, v in e.items() if k not in ("event", "log_level")}) for e in logs] == expected

    def test_failed_check_is_logged_and_not_raised(self, settings: Settings) -> None:
        """A failing check is a warning: the loop goes on and checks again next period."""
        gw = FakeGateway()
        gw.expiry_outcome = PermanentGatewayError("boom")
        runner = Runner(settings, gw, recomputer=FakeRecomputer())  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            asyncio.run(runner._enqueue_expired())
        assert [(e["event"], e["error"]) for e in logs] == [("expiry.check_failed", "boom")]


class TestHeartbeat:
    def test_idle_loop_keeps_touching_the_heartbeat(
        self, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A poll interval longer than the health check's limit does not make an idle worker unhealthy."""
        monkeypatch.setattr(runner_module, "HEARTBEAT_EVERY_S", 0.05)
        hb = tmp_path / "hb"
        runner = Runner(
            settings.model_copy(update={"poll_interval_s": 600.0}), FakeGateway(), recomputer=FakeRecomputer()
        )  # type: ignore[arg-type]
        touches: list[float] = []

        async def scenario() -> None:
            task = asyncio.create_task(runner.run())
            for _ in range(20):
                await asyncio.sleep(0.05)
                if hb.exists():
                    touches.append(hb.stat().st_mtime_ns)
            runner.request_stop()
            await asyncio.wait_for(task, 5)

        asyncio.run(scenario())
        assert len(set(touches)) >= 5  # touched again and again while waiting for work

    def test_debounce_wait_touches_the_heartbeat_and_ends_at_stop(
        self, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A long WORKER_DEBOUNCE_MS neither makes the worker look dead nor delays SIGTERM (it was a plain
        sleep: a stop waited for it, and the heartbeat aged meanwhile)."""
        monkeypatch.setattr(runner_module, "HEARTBEAT_EVERY_S", 0.05)
        hb = tmp_path / "hb"
        runner = Runner(
            settings.model_copy(update={"debounce_ms": 60_000, "poll_interval_s": 600.0}),
            FakeGateway(),
            recomputer=FakeRecomputer(),
        )  # type: ignore[arg-type]
        touches: list[int] = []
        stopped_in: list[float] = []

        async def scenario() -> None:
            task = asyncio.create_task(runner.run())  # the start-up catch-up goes through the debounce
            for _ in range(10):
                await asyncio.sleep(0.05)
                if (seen := mtime_ns(hb)) is not None:
                    touches.append(seen)
            started = time.monotonic()
            runner.request_stop()
            await asyncio.wait_for(task, 5)
            stopped_in.append(time.monotonic() - started)

        asyncio.run(scenario())
        assert len(set(touches)) >= 4
        assert stopped_in[0] < 1.0

    def test_unwritable_heartbeat_is_reported_once(self, settings: Settings, tmp_path: Path) -> None:
        path = tmp_path / "missing-dir" / "hb"
        runner = Runner(
            settings.model_copy(update={"heartbeat_file": str(path)}), FakeGateway(), recomputer=FakeRecomputer()
        )  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            runner._heartbeat()
            runner._heartbeat()
        assert [e["event"] for e in logs] == ["heartbeat.unwritable"]
        assert logs[0]["path"] == str(path)


def mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


class TestHeartbeatDuringARecompute:
    def test_long_recompute_in_threads_keeps_the_heartbeat_fresh(
        self, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A recompute longer than the touch period (24 s at 400k views) does not let the heartbeat go stale:
        a task on the event loop touches it while the work runs in worker threads."""
        monkeypatch.setattr(runner_module, "HEARTBEAT_EVERY_S", 0.05)
        hb = tmp_path / "hb"
        seen: list[int | None] = []
        gw = FakeGateway()
        gw.pending = [change("a", 1)]
        rc = SlowRecomputer(slices=12, slice_s=0.05, during=lambda _: seen.append(mtime_ns(hb)))
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        assert asyncio.run(runner.process_round()) == 1
        assert gw.acked == [("a", 1)]
        touched = {t for t in seen if t is not None}
        assert len(touched) >= 4, seen  # touched again and again during the one user's recompute

    def test_a_stuck_event_loop_stops_the_touches(
        self, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The touches come from the event loop: while it is blocked the heartbeat ages, as the health
        check needs; once it runs again they resume."""
        monkeypatch.setattr(runner_module, "HEARTBEAT_EVERY_S", 0.05)
        hb = tmp_path / "hb"
        hb.touch()
        seen: list[int | None] = [mtime_ns(hb)]
        gw = FakeGateway()
        gw.pending = [change("a", 1)]
        rc = SlowRecomputer(slices=4, slice_s=0.1, during=lambda _: seen.append(mtime_ns(hb)), block_loop=True)
        runner = Runner(settings, gw, recomputer=rc)  # type: ignore[arg-type]
        assert asyncio.run(runner.process_round()) == 1
        assert len(set(seen)) == 1, seen  # 0.4 s with the loop blocked: not touched once
        assert mtime_ns(hb) != seen[0]  # touched after the user, once the loop ran again


class TestOverrunningUser:
    def test_past_max_user_s_neither_heartbeat_nor_lease_is_kept_alive(
        self, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A recompute stuck in a thread must not keep the replica healthy and the user leased forever:
        past max_user_s the touches and renewals stop (logged once), and the user is still acked when
        the recompute does end."""
        monkeypatch.setattr(runner_module, "HEARTBEAT_EVERY_S", 0.05)
        hb = tmp_path / "hb"
        seen: list[tuple[float, int | None]] = []
        gw = FakeGateway()
        gw.pending = [change("a", 1)]
        rc = SlowRecomputer(slices=16, slice_s=0.05, during=lambda _: seen.append((time.monotonic(), mtime_ns(hb))))
        overrun = settings.model_copy(update={"lease_ms": 150, "max_user_s": 0.3})
        runner = Runner(overrun, gw, recomputer=rc)  # type: ignore[arg-type]
        started = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            assert asyncio.run(runner.process_round()) == 1
        assert gw.acked == [("a", 1)]
        assert [e["max_user_s"] for e in logs if e["event"] == "user.overrunning"] == [0.3]
        assert gw.renewals and max(at for *_, at in gw.renewals) <= started + 0.3 + 0.06
        late = {m for at, m in seen if at > started + 0.45}  # well past the limit, before the recompute ends
        assert len(late) == 1, seen  # the heartbeat no longer changes

    def test_overrun_is_logged_at_the_limit_not_at_the_next_heartbeat_tick(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the 15 s touch period, an overrun of max_user_s is still logged when it happens."""
        monkeypatch.setattr(runner_module, "HEARTBEAT_EVERY_S", 30.0)
        gw = FakeGateway()
        gw.pending = [change("a", 1)]
        rc = SlowRecomputer(slices=10, slice_s=0.05)  # 0.5 s
        runner = Runner(settings.model_copy(update={"max_user_s": 0.2}), gw, recomputer=rc)  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            assert asyncio.run(runner.process_round()) == 1
        assert [e["event"] for e in logs].count("user.overrunning") == 1
        assert gw.acked == [("a", 1)]


class TestLeaseRenewal:
    def test_lease_is_renewed_every_third_of_it_while_the_user_is_recomputed(self, settings: Settings) -> None:
        """A recompute longer than the lease renews it every lease_ms / 3 (here 0.1 s of a 0.3 s lease),
        with this worker's id and lease, until the results are stored; none after the acknowledgement."""
        gw = FakeGateway()
        gw.pending = [change("a", 1)]
        rc = SlowRecomputer(slices=15, slice_s=0.05)  # 0.75 s: 2.5 leases
        runner = Runner(settings.model_copy(update={"lease_ms": 300}), gw, recomputer=rc)  # type: ignore[arg-type]

        async def scenario() -> None:
            assert await runner.process_round() == 1
            await asyncio.sleep(0.35)  # renewals would have gone on here, had they not been stopped

        with structlog.testing.capture_logs() as logs:
            asyncio.run(scenario())
        assert gw.acked == [("a", 1)]
        assert len(gw.renewals) >= 5, gw.renewals  # ≈ 7 in 0.75 s
        assert {(user, worker, lease) for user, worker, lease, _ in gw.renewals} == {("a", "w1", 300)}
        assert max(at for *_, at in gw.renewals) < gw.acked_at[0]
        gaps = [b[3] - a[3] for a, b in zip(gw.renewals, gw.renewals[1:], strict=False)]
        # a third of the lease apart: not a busy loop, and never a whole lease without a renewal
        assert all(0.09 <= gap < 0.3 for gap in gaps), gaps
        assert runner.stats.lease_renewals == len(gw.renewals) and runner.stats.leases_lost == 0
        not_debug = [e for e in logs if e["log_level"] != "debug"]
        assert [e["event"] for e in not_debug] == ["batch.processed"]  # renewals are logged at debug level only

    def test_short_recompute_sends_no_renewal(self, settings: Settings) -> None:
        """A user processed within a third of the lease costs no renewal call (the default lease is 60 s)."""
        gw = FakeGateway()
        gw.pending = [change("a", 1), change("b", 1)]
        runner = Runner(settings, gw, recomputer=FakeRecomputer())  # type: ignore[arg-type]
        assert asyncio.run(runner.process_round()) == 2
        assert gw.renewals == []

    def test_lost_lease_is_logged_and_the_recompute_goes_on(self, settings: Settings) -> None:
        """Another replica took the user over (this lease had expired): the renewal says so, it is logged once,
        renewals stop, and the recompute is stored and acknowledged as usual (the write guard decides)."""
        gw = FakeGateway()
        gw.pending = [change("a", 1)]

        def taken_over(i: int) -> None:
            if i == 2:
                gw.lease_owner["a"] = "other-replica"

        rc = SlowRecomputer(slices=12, slice_s=0.05, during=taken_over)
        runner = Runner(settings.model_copy(update={"lease_ms": 300}), gw, recomputer=rc)  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            assert asyncio.run(runner.process_round()) == 1
        [lost] = [e for e in logs if e["event"] == "user.lease_lost"]
        assert lost["log_level"] == "warning" and lost["owner"] == "other-replica" and lost["lease_ms"] == 300
        # taken over after ≈ 0.15 s of a 0.6 s recompute: renewed once or twice, refused once, then no more
        assert 2 <= len(gw.renewals) <= 3, gw.renewals
        assert gw.acked == [("a", 1)] and gw.stored["a"]
        assert runner.stats.leases_lost == 1 and runner.stats.users_processed == 1

    def test_failed_renewals_are_logged_and_never_end_the_recompute(self, settings: Settings) -> None:
        """A transient failure is retried at the next period; any other (a deployment without
        worker:renewLease yet) ends the renewals. Neither fails the user."""
        gw = FakeGateway()
        gw.pending = [change("a", 1)]
        gw.renew_errors = [
            TransientGatewayError("worker:renewLease: ReadTimeout"),
            PermanentGatewayError("worker:renewLease: Could not find public function"),
        ]
        rc = SlowRecomputer(slices=12, slice_s=0.05)
        runner = Runner(settings.model_copy(update={"lease_ms": 300}), gw, recomputer=rc)  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            assert asyncio.run(runner.process_round()) == 1
        failures = [(e["transient"], e["error"]) for e in logs if e["event"] == "user.lease_renewal_failed"]
        assert failures == [
            (True, "worker:renewLease: ReadTimeout"),
            (False, "worker:renewLease: Could not find public function"),
        ]
        assert len(gw.renewals) == 2  # the second failure ended them
        assert gw.acked == [("a", 1)] and gw.failed == [] and runner.stats.users_failed == 0
