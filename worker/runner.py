"""The worker loop: catch up, subscribe, coalesce per user, recompute, store, acknowledge.

One replica processes one user at a time. Replicas share work through Convex itself: a user is
processed only by the holder of its lease (``worker:claimUser``), and every write is guarded by the
change-log watermark, so two replicas (or a retry after an unknown outcome) can never make a result
go backwards.

Life cycle of a round:

1. read the pending change rows (``worker:pendingChanges``) and coalesce them per user, oldest first;
2. for each user: claim the lease (skip the user if another replica holds it), read the pending rows
   up to ``lastSeq`` — the **watermark** of this round — recompute the affected aggregates, store
   them with that watermark, acknowledge the rows with ``seq ≤ watermark`` (which releases the lease);
3. rows that arrived meanwhile have a higher seq, stay pending and start the next round.

A user whose recompute raises is recorded with ``worker:failChanges``: its rows stay pending with one
more attempt (dead-lettered at the fifth) and the deployment turns its lease into a **backoff** of 1,
4, 16 then 64 s that no replica, this one included, can claim before it ends. That includes a
transient error (a timeout, a 5xx) still failing after the gateway's own retries once the user is
claimed: a user whose reads keep timing out is backed off like any other failing user while the round
goes on with the others. Only when ``failChanges`` cannot reach the deployment either does the round
end, leaving the rows untouched (the deployment is down for every user; the lease runs out). A claim that is not
granted (backoff, or another replica's lease) skips the user; the denial says when the lease ends
(``retryAfterMs``) and the loop wakes then to claim it again (or at the next push or poll, whichever
comes first), so a backed-off user costs one claim per wake-up, never a busy loop, and changes that
arrive during the backoff are processed with the retry once it ends.

While a user is processed, two tasks on the event loop keep the replica's claims alive: one touches
the heartbeat file every :data:`HEARTBEAT_EVERY_S` (the recompute runs in worker threads, so a long one
does not make a live worker look dead, while a stuck event loop still stops the touches), the other
renews the user's lease every third of ``lease_ms`` (``worker:renewLease``), so a recompute that outlasts
the lease does not let another replica claim the user and do the same work again. A renewal that finds
the lease lost is logged (``user.lease_lost``) and the recompute goes on: its store is still guarded by
the watermark and its acknowledgement by the change rows, so the results stay correct.

The WebSocket subscription to ``worker:pendingChanges`` only wakes the loop; ``poll_interval_s`` is
the fallback when it is silent. SIGTERM/SIGINT finish the current user and end the loop (exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from cachetools import LRUCache
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from worker.config import Settings
from worker.errors import GatewayError, TransientGatewayError
from worker.gateway import Gateway
from worker.models import ChangeEntry, FailOutcome, StoreOutcome

if TYPE_CHECKING:
    from worker.recompute import Recomputer

log = structlog.get_logger(__name__)

HEARTBEAT_EVERY_S = 15.0
"""Longest time between heartbeat touches while the loop is idle or processing users (a task on the event
loop touches it during each user, however long its recompute), seconds (the container health check
allows 90 s: ``python -m worker healthcheck --max-age-s 90``)."""

LEASE_RENEWALS_PER_LEASE = 3
"""While a user is processed its lease is renewed every ``lease_ms / LEASE_RENEWALS_PER_LEASE``: a
renewal that fails (the deployment unreachable for a while) still leaves two more before the lease ends."""

CONNECT_FIRST_WAIT_S = 1.0
"""Wait after the first failed start-up connection attempt, seconds; it doubles after each further
failure, up to ``settings.max_backoff_s``."""

RETRY_SLACK_S = 0.05
"""Added to a denied claim's ``retryAfterMs`` before the user is claimed again, seconds. The wait
starts when the denial arrives, after the deployment measured it, so it never ends before the lease
by the deployment's clock; the slack covers the rounding to whole milliseconds."""


def wall_clock_ms() -> int:
    """Return the current time, epoch milliseconds UTC."""
    return time.time_ns() // 1_000_000


def coalesce_by_user(changes: list[ChangeEntry]) -> list[str]:
    """Return the distinct users of ``changes`` in order of first appearance (oldest change first)."""
    return list(dict.fromkeys(c.user_id for c in changes))


@dataclass
class RunStats:
    """Counters of one runner, for tests and the demo summary."""

    rounds: int = 0
    users_processed: int = 0
    users_skipped_lease: int = 0
    lease_renewals: int = 0
    leases_lost: int = 0
    users_failed: int = 0
    changes_acked: int = 0
    dead_letters_superseded: int = 0
    results_written: int = 0
    results_unchanged: int = 0
    results_skipped_stale: int = 0
    last_error: str | None = None
    per_user_ms: list[float] = field(default_factory=list)


class Runner:
    """Long-running consumer of the change log.

    Args:
        settings: Worker settings.
        gateway: Convex access (:class:`~worker.gateway.ConvexGateway` in production).
        recomputer: Turns a claimed user into aggregation results; built from the settings when None.
        clock_ms: Source of "now" (epoch ms UTC); injectable for tests.
    """

    def __init__(
        self,
        settings: Settings,
        gateway: Gateway,
        *,
        recomputer: Recomputer | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        if recomputer is None:
            from worker.recompute import Recomputer

            recomputer = Recomputer(gateway, settings)
        self.recomputer = recomputer
        self.clock_ms = clock_ms
        self.stats = RunStats()
        # Per user: (filterKey, type) → dataHash last accepted by the backend, so unchanged results are
        # sent as hashes only. Bounded LRU; a wrong or missing memo only costs an upload.
        self._stored_hashes: LRUCache[str, dict[tuple[str, str], str]] = LRUCache(maxsize=settings.hash_memo_users)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        # The pending rows the subscription pushed last and no round has used yet: the round that
        # follows the push starts from them instead of reading ``pendingChanges`` again.
        self._pushed: list[ChangeEntry] | None = None
        self._heartbeat_warned = False
        # When the earliest lease that denied a claim ends (time.monotonic(), s): the loop wakes then.
        self._retry_at: float | None = None

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Ask the loop to finish the current user and return."""
        if not self._stop.is_set():
            log.info("worker.stopping")
        self._stop.set()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        """Route SIGTERM and SIGINT to :meth:`request_stop` (call from inside the event loop)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    # ------------------------------------------------------------------ loops

    async def connect(self) -> bool:
        """Wait until the deployment answers and accepts the admin key, retrying while it cannot be reached.

        A deployment that is not up yet (a container started before it, a network still coming up)
        is tried again and again instead of ending the process, which would only crash-loop: each
        failed attempt logs ``worker.connect_failed`` (attempt, error, ``retry_in_s``), and the waits
        grow from :data:`CONNECT_FIRST_WAIT_S` (doubling, with jitter) to ``settings.max_backoff_s``.
        :meth:`request_stop` (SIGTERM/SIGINT) ends the wait at once. The heartbeat is not touched
        meanwhile: until connected the worker is not healthy.

        Returns:
            True once the deployment answered (``worker.connected`` is logged then, with the number of
            attempts it took: 1 when the first one succeeded), False when a stop was requested first.

        Raises:
            AuthenticationError: the deployment rejected the admin key (retrying cannot help).
            PermanentGatewayError: the URL answers, but not as a deployment of this project.
        """

        def log_failure(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "worker.connect_failed",
                url=str(self.settings.convex_url),
                attempt=state.attempt_number,
                error=str(exc),
                retry_in_s=round(state.upcoming_sleep, 2),
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientGatewayError),
            stop=lambda _state: self._stop.is_set(),
            wait=wait_exponential_jitter(multiplier=CONNECT_FIRST_WAIT_S, max=self.settings.max_backoff_s, jitter=0.5),
            sleep=self._sleep_unless_stopped,
            before_sleep=log_failure,
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                if self._stop.is_set():
                    return False
                attempts += 1
                with attempt:
                    await self.gateway.validate_credentials()
        except TransientGatewayError:
            return False  # stop requested while the deployment was still unreachable
        log.info("worker.connected", url=str(self.settings.convex_url), attempts=attempts)
        return True

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a stop is requested meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def run(self) -> RunStats:
        """Process changes until :meth:`request_stop`; catch up on everything pending first.

        Returns:
            The counters of this run.
        """
        if self._stop.is_set():
            return self.stats
        log.info("worker.started", worker_id=self.settings.worker_id, url=str(self.settings.convex_url))
        watcher = asyncio.create_task(self._watch_subscription(), name="pending-subscription")
        self._wake.set()  # catch up on start
        next_expiry_check = 0.0
        try:
            while not self._stop.is_set():
                self._heartbeat()
                if time.monotonic() >= next_expiry_check:
                    await self._enqueue_expired()
                    next_expiry_check = time.monotonic() + self.settings.expiry_check_interval_s
                await self._idle(self._idle_timeout_s())
                if self._stop.is_set():
                    break
                self._wake.clear()
                if self._retry_at is not None and time.monotonic() >= self._retry_at:
                    self._retry_at = None  # due: this round claims those users again
                if self.settings.debounce_ms:
                    await self._debounce(self.settings.debounce_ms / 1000)
                    if self._stop.is_set():
                        break
                pushed, self._pushed = self._pushed, None
                try:
                    processed = await self.process_round(pushed)
                except TransientGatewayError as exc:
                    log.warning("worker.round_failed", error=str(exc))
                    await asyncio.sleep(min(self.settings.max_backoff_s, 2.0))
                    processed = 1
                if processed:
                    self._wake.set()  # more may be pending; a round with nothing to do ends the burst
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        log.info("worker.stopped", **self._stats_fields())
        return self.stats

    async def run_until_idle(self, *, max_rounds: int = 1000) -> RunStats:
        """Process rounds until no pending change is left (test and demo hook, like arq's burst mode).

        Users whose lease another replica holds, or who are in a retry backoff after a failed
        attempt, stay pending; they are not waited for.

        Returns:
            The counters of this run.
        """
        for _ in range(max_rounds):
            if self._stop.is_set():
                break
            if await self.process_round() == 0:
                break
        return self.stats

    async def process_round(self, pending: list[ChangeEntry] | None = None) -> int:
        """Run one round over the pending changes.

        Args:
            pending: Pending change rows just pushed by the subscription (a consistent snapshot of
                ``worker:pendingChanges``); None reads them. A snapshot only picks the users to claim:
                each claim returns that user's pending changes as they are then, so a row in the
                snapshot that is already acknowledged costs an empty claim, and one committed after
                it is left for the next round.

        Returns:
            Number of users whose changes were processed (acknowledged or failed) in this round.
        """
        # every line the round logs names this replica (with several, their logs may be merged)
        structlog.contextvars.bind_contextvars(worker=self.settings.worker_id)
        self.stats.rounds += 1
        if pending is None:
            pending = await self.gateway.pending_changes(self.settings.batch_size)
        done = 0
        for user_id in coalesce_by_user(pending):
            if self._stop.is_set():
                break
            if await self.process_user(user_id):
                done += 1
            self._heartbeat()  # a long round of many users is still a live loop
        return done

    async def process_user(self, user_id: str) -> bool:
        """Claim, recompute, store and acknowledge one user's pending changes.

        Meanwhile the heartbeat is touched every :data:`HEARTBEAT_EVERY_S` and, from the claim until the
        results are stored, the lease is renewed every third of ``lease_ms``
        (:meth:`_renew_lease_periodically`).

        Returns:
            True when the user's changes were consumed (acknowledged or recorded as failed), False
            when the claim was not granted (another replica's lease, or a retry backoff: the loop
            wakes when it ends) or nothing was pending.

        Raises:
            TransientGatewayError: the deployment is unreachable: the claim failed, or the user's
                recompute failed transiently and recording that failure failed as well (the changes
                stay pending, attempts unchanged). A transient failure that can be recorded is
                recorded like any other (backoff, dead letter at the fifth attempt).
        """
        started = time.perf_counter()
        structlog.contextvars.bind_contextvars(user=user_id)
        # past max_user_s neither the heartbeat nor the lease is kept alive for this user any more
        vouch_until = time.monotonic() + self.settings.max_user_s
        try:
            async with self._in_background(self._touch_heartbeat_periodically(vouch_until), "heartbeat"):
                claim = await self.gateway.claim_user(user_id, self.settings.worker_id, self.settings.lease_ms)
                if not claim.granted:
                    self.stats.users_skipped_lease += 1
                    self._note_retry(claim.retry_after_ms)
                    log.debug("user.lease_busy", owner=claim.lease_owner, retry_after_ms=claim.retry_after_ms)
                    return False
                if not claim.changes:
                    # Only releases the lease: acknowledging up to 0 consumes nothing, as nothing was stored
                    # (an ack of pending rows asserts results at its watermark; a dead letter retried since
                    # the claim must not be marked done by it).
                    await self.gateway.ack_changes(user_id, self.settings.worker_id, 0)
                    return False
                watermark = claim.watermark
                now_ms = self.clock_ms()
                stored = StoreOutcome()

                async def store(results: list[dict[str, Any]]) -> None:
                    nonlocal stored
                    stored = stored + await self.gateway.store_aggregations(
                        user_id,
                        watermark=watermark,
                        computed_at_ms=now_ms,
                        results=results,
                        chunk_size=self.settings.store_chunk_size,
                        known_hashes=self._stored_hashes.get(user_id),
                    )

                first_stored_ms: float | None = None

                async def store_first(results: list[dict[str, Any]]) -> None:
                    nonlocal first_stored_ms
                    await store(results)
                    first_stored_ms = (time.perf_counter() - started) * 1000

                try:
                    # Renewed until the results are stored; stopped before the ack or the failure record,
                    # which release the lease or turn it into a backoff.
                    async with self._in_background(
                        self._renew_lease_periodically(user_id, vouch_until), "lease-renewal"
                    ):
                        # The default dashboard's set is stored as soon as it is computed; the other sets
                        # are stored base by base while the next base is computed.
                        outcome = await self.recomputer.recompute(
                            claim, now_ms=now_ms, on_first=store_first, on_batch=store
                        )
                        if outcome.results:
                            await store(outcome.results)
                    self._remember_hashes(user_id, stored)
                    ack = await self.gateway.ack_changes(user_id, self.settings.worker_id, watermark)
                except TransientGatewayError as exc:
                    # Still failing after the gateway's retries. If the deployment answers failChanges, the
                    # failure is this user's (reads timing out on a large history, say): back it off like any
                    # failure so that it cannot hold up every round. If not, the deployment is down.
                    if not await self._record_failure(user_id, watermark, exc, transient=True):
                        raise
                    return True
                except Exception as exc:  # noqa: BLE001 - one poisoned user must not stop the feed
                    await self._record_failure(user_id, watermark, exc)
                    return True
                total_ms = (time.perf_counter() - started) * 1000
                self.stats.users_processed += 1
                self.stats.changes_acked += ack.acked
                self.stats.dead_letters_superseded += ack.superseded
                self.stats.results_written += stored.written
                self.stats.results_unchanged += stored.unchanged
                self.stats.results_skipped_stale += stored.skipped_stale
                self.stats.per_user_ms.append(total_ms)
                log.info(
                    "batch.processed",
                    watermark=watermark,
                    changes=len(claim.changes),
                    change_kinds=sorted({c.kind for c in claim.changes}),
                    types=outcome.types,
                    filter_sets=outcome.filter_sets,
                    events_read=outcome.events_read,
                    read_ms=round(outcome.read_ms, 1),
                    compute_ms=round(outcome.compute_ms, 1),
                    store_ms=round(total_ms - outcome.read_ms - outcome.compute_ms, 1),
                    total_ms=round(total_ms, 1),
                    first_stored_ms=None if first_stored_ms is None else round(first_stored_ms, 1),
                    written=stored.written,
                    unchanged=stored.unchanged,
                    skipped_stale=stored.skipped_stale,
                    resent_sets=stored.resent,
                    acked=ack.acked,
                    superseded=ack.superseded,
                )
                return True
        finally:
            structlog.contextvars.unbind_contextvars("user")

    # ------------------------------------------------------------------ helpers

    @staticmethod
    async def _stop_background(task: asyncio.Task[None]) -> None:
        """Cancel a background task (heartbeat, lease renewal) and wait for it to end."""
        task.cancel()
        # gather, not ``await task`` under a suppressed CancelledError: a cancellation of the caller
        # itself while it waits here must not be swallowed.
        await asyncio.gather(task, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _in_background(self, work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
        """Run ``work`` as a task on the event loop while the ``async with`` body runs; cancel it after."""
        task = asyncio.create_task(work, name=name)
        try:
            yield
        finally:
            await self._stop_background(task)

    async def _touch_heartbeat_periodically(self, until: float) -> None:
        """Touch the heartbeat every :data:`HEARTBEAT_EVERY_S` until cancelled or ``until`` has passed.

        A task on the event loop: while a recompute runs in worker threads it keeps the heartbeat
        fresh, and it stops with the loop, so a stuck or dead loop still goes stale. ``until``
        (``time.monotonic()`` s) is the end of ``max_user_s``: a recompute stuck in a thread past it
        is logged once (``user.overrunning``) and lets the heartbeat go stale.
        """
        while True:
            # wakes at the limit itself too, so the overrun is logged when it starts, not at a later tick
            await asyncio.sleep(min(HEARTBEAT_EVERY_S, max(until - time.monotonic(), 0.0)))
            if time.monotonic() >= until:
                log.error("user.overrunning", max_user_s=self.settings.max_user_s)
                return
            self._heartbeat()

    async def _renew_lease_periodically(self, user_id: str, until: float) -> None:
        """Renew the user's lease every ``lease_ms / LEASE_RENEWALS_PER_LEASE`` until cancelled or lost,
        and not past ``until`` (``time.monotonic()`` s, the end of ``max_user_s``).

        Never raises: a renewal that fails transiently (after the gateway's retries) is logged and
        tried again at the next period; one that finds the lease lost (another replica claimed the
        user after it expired) is logged as ``user.lease_lost`` and ends the renewals, and so does any
        other failure (a deployment without ``worker:renewLease``). The recompute goes on either way:
        its results are stored behind the watermark guard and acknowledged by change row.
        """
        every_s = self.settings.lease_ms / LEASE_RENEWALS_PER_LEASE / 1000
        while True:
            await asyncio.sleep(every_s)
            if time.monotonic() > until:
                return  # overrunning (logged by the heartbeat task): the lease is left to expire
            try:
                renewal = await self.gateway.renew_lease(user_id, self.settings.worker_id, self.settings.lease_ms)
            except TransientGatewayError as exc:
                log.warning("user.lease_renewal_failed", error=str(exc), transient=True)
                continue
            except Exception as exc:  # noqa: BLE001 - the lease only spares work; the recompute goes on
                log.warning("user.lease_renewal_failed", error=str(exc), transient=False)
                return
            if not renewal.renewed:
                self.stats.leases_lost += 1
                log.warning(
                    "user.lease_lost",
                    owner=renewal.lease_owner,
                    lease_expires_at_ms=renewal.lease_expires_at_ms,
                    lease_ms=self.settings.lease_ms,
                )
                return
            self.stats.lease_renewals += 1
            log.debug("user.lease_renewed", lease_expires_at_ms=renewal.lease_expires_at_ms)

    async def _record_failure(self, user_id: str, watermark: int, exc: Exception, *, transient: bool = False) -> bool:
        """Record a failed recompute with ``worker:failChanges`` and log it with the backoff it set.

        ``user.failed`` carries the deployment's answer: rows failed, rows dead-lettered now, and
        ``backoff_ms``, how long no replica may claim the user (0: none, e.g. all rows dead-lettered).
        When the failure itself cannot be recorded those are None and ``record_error`` says why; the
        rows then stay pending with their attempts unchanged.

        Args:
            user_id: The user whose recompute failed.
            watermark: The claimed watermark (rows with ``seq`` up to it are failed).
            exc: What the recompute raised.
            transient: ``exc`` is a transient gateway error; when ``failChanges`` fails transiently
                too, nothing is logged or counted and False is returned (the caller re-raises ``exc``).

        Returns:
            False only in the ``transient`` case above; True once the failure is logged.
        """
        error = f"{type(exc).__name__}: {exc}"
        failure: FailOutcome | None = None
        record_error: str | None = None
        try:
            failure = await self.gateway.fail_changes(user_id, self.settings.worker_id, watermark, error)
        except TransientGatewayError as record_exc:
            if transient:
                return False
            record_error = str(record_exc)
        except GatewayError as record_exc:
            record_error = str(record_exc)
        self.stats.users_failed += 1
        self.stats.last_error = error
        log.error(
            "user.failed",
            watermark=watermark,
            transient=transient,
            failed=None if failure is None else failure.failed,
            dead_lettered=None if failure is None else failure.dead_lettered,
            backoff_ms=None if failure is None else failure.backoff_ms,
            **({"record_error": record_error} if record_error is not None else {}),
            exc_info=exc,
        )
        return True

    def _note_retry(self, retry_after_ms: int | None) -> None:
        """Remember when the lease that denied a claim ends (ms from now), if sooner than one noted."""
        if retry_after_ms is None:
            return  # a deployment that does not say: the next push or poll claims the user again
        retry_at = time.monotonic() + max(retry_after_ms, 0) / 1000 + RETRY_SLACK_S
        if self._retry_at is None or retry_at < self._retry_at:
            self._retry_at = retry_at

    def _idle_timeout_s(self) -> float:
        """Longest wait for a wake-up, seconds: the poll interval, or less when a noted lease ends sooner."""
        if self._retry_at is None:
            return self.settings.poll_interval_s
        return min(self.settings.poll_interval_s, max(self._retry_at - time.monotonic(), 0.0))

    def _remember_hashes(self, user_id: str, stored: StoreOutcome) -> None:
        if stored.skipped_stale:
            self._stored_hashes.pop(user_id, None)  # newer results are stored: what they hold is unknown
            return
        self._stored_hashes[user_id] = dict(stored.hashes)  # least recently used users drop out

    async def _watch_subscription(self) -> None:
        """Set the wake event whenever the pending-change subscription yields a non-empty list."""
        while not self._stop.is_set():
            try:
                async for changes in self.gateway.subscribe_pending(self.settings.batch_size):
                    if changes:
                        self._pushed = changes
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - polling keeps the worker correct meanwhile
                log.warning("subscription.failed", error=str(exc))
                await asyncio.sleep(self.settings.max_backoff_s)

    async def _enqueue_expired(self) -> None:
        try:
            outcome = await self.gateway.enqueue_expired(self.clock_ms())
        except GatewayError as exc:
            log.warning("expiry.check_failed", error=str(exc))
            return
        if outcome.enqueued:
            log.info("expiry.enqueued", users=outcome.enqueued)
        if outcome.retired or outcome.removed_interests:
            log.info("expiry.filters_removed", sets=outcome.retired, interests=outcome.removed_interests)

    async def _idle(self, timeout_s: float) -> None:
        """Wait for a wake-up (push, stop) or ``timeout_s``, touching the heartbeat every ``HEARTBEAT_EVERY_S``.

        The loop itself touches it, so a stuck loop still goes stale, while a long poll interval does not.
        """
        await self._wait_beating(self._wake, timeout_s)

    async def _debounce(self, seconds: float) -> None:
        """Wait ``seconds`` before a round (``settings.debounce_ms``), touching the heartbeat every
        ``HEARTBEAT_EVERY_S``; return at once when a stop is requested."""
        await self._wait_beating(self._stop, seconds)

    async def _wait_beating(self, event: asyncio.Event, timeout_s: float) -> None:
        """Wait for ``event`` or ``timeout_s``, touching the heartbeat every ``HEARTBEAT_EVERY_S``."""
        deadline = time.monotonic() + timeout_s
        while not event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(left, HEARTBEAT_EVERY_S))
            self._heartbeat()

    def _heartbeat(self) -> None:
        """Touch the heartbeat file (``settings.heartbeat_file``); warn once when it cannot be written."""
        path = self.settings.heartbeat_file
        if not path:
            return
        try:
            Path(path).touch()
            os.utime(path)
        except OSError as exc:
            if not self._heartbeat_warned:
                self._heartbeat_warned = True
                log.warning("heartbeat.unwritable", path=path, error=str(exc))

    def _stats_fields(self) -> dict[str, object]:
        s = self.stats
        return {
            "rounds": s.rounds,
            "users_processed": s.users_processed,
            "users_failed": s.users_failed,
            "changes_acked": s.changes_acked,
            "dead_letters_superseded": s.dead_letters_superseded,
            "results_written": s.results_written,
        }
