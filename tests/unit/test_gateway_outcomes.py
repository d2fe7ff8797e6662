"""ConvexGateway.ack_changes and fail_changes: the call each makes and how it reads the answer.

The mutation is replaced by a recorder; the backend side is covered by convex/worker.test.ts and end to
end by tests/integration/test_failures.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from tests.support.gateways import AnsweringGateway
from worker.models import AckOutcome, FailOutcome

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
