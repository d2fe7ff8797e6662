"""ConvexGateway.ack_changes, fail_changes and renew_lease: the call each makes and how it reads the answer.

The mutation is replaced by a recorder; the backend side is covered by convex/worker.test.ts and end to
end by tests/integration/test_failures.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from tests.support.gateways import AnsweringGateway
from worker.models import AckOutcome, FailOutcome, LeaseRenewal

T = TypeVar("T")


def call(answer: dict[str, Any], fn: Callable[[AnsweringGateway], Awaitable[T]]) -> tuple[T, list[Any]]:
    async def run() -> tuple[T, list[Any]]:
        gw = AnsweringGateway(answer)
        try:
            return await fn(gw), gw.calls
        finally:
            await gw.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"acked": 3.0, "superseded": 2.0}, AckOutcome(acked=3, superseded=2)),  # numbers arrive as floats
        ({"acked": 1.0}, AckOutcome(acked=1)),  # a deployment from before dead letters were superseded
    ],
)
def test_ack_reads_acked_and_superseded(answer: dict[str, Any], expected: AckOutcome) -> None:
    """Both counts become ints of an AckOutcome; a count the backend does not send is 0."""
    outcome, calls = call(answer, lambda gw: gw.ack_changes("u1", "w1", 7))
    assert outcome == expected
    assert calls == [("worker:ackChanges", {"userId": "u1", "workerId": "w1", "upToSeq": 7})]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"failed": 2.0, "deadLettered": 0.0, "backoffMs": 16000.0}, FailOutcome(failed=2, backoff_ms=16000)),
        ({"failed": 1.0, "deadLettered": 1.0, "backoffMs": 0.0}, FailOutcome(failed=1, dead_lettered=1)),
        ({"failed": 1.0}, FailOutcome(failed=1)),  # a deployment from before the backoff existed
    ],
)
def test_fail_reads_the_backoff(answer: dict[str, Any], expected: FailOutcome) -> None:
    """The rows failed, dead-lettered and the backoff (ms) become a FailOutcome; missing counts are 0."""
    outcome, calls = call(answer, lambda gw: gw.fail_changes("u1", "w1", 7, "E" * 3000))
    assert outcome == expected
    assert calls == [("worker:failChanges", {"userId": "u1", "workerId": "w1", "upToSeq": 7, "error": "E" * 2000})]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {"renewed": True, "leaseOwner": "w1", "leaseExpiresAtMs": 1_800_000_060_000.0},
            LeaseRenewal(renewed=True, lease_owner="w1", lease_expires_at_ms=1_800_000_060_000),
        ),
        (
            {"renewed": False, "leaseOwner": "w2", "leaseExpiresAtMs": 1_800_000_000_500.0},
            LeaseRenewal(renewed=False, lease_owner="w2", lease_expires_at_ms=1_800_000_000_500),
        ),
        ({"renewed": False}, LeaseRenewal(renewed=False)),  # no lease at all (released)
    ],
)
def test_renew_reads_whether_the_lease_is_still_ours(answer: dict[str, Any], expected: LeaseRenewal) -> None:
    """The answer becomes a LeaseRenewal (the expiry an int); the call names the user, the worker and the lease."""
    outcome, calls = call(answer, lambda gw: gw.renew_lease("u1", "w1", 60_000))
    assert outcome == expected
    assert calls == [("worker:renewLease", {"userId": "u1", "workerId": "w1", "leaseMs": 60_000})]
