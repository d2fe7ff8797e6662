"""ConvexGateway.enqueue_expired: the call it makes and how it reads the answer.

The mutation is replaced by a recorder; the backend side is covered by convex/worker.test.ts and end to
end by tests/integration/test_filters_and_expiry.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.gateways import AnsweringGateway
from worker.models import ExpiryOutcome


def enqueue_expired(answer: dict[str, Any]) -> tuple[ExpiryOutcome, list[tuple[str, dict[str, Any]]]]:
    async def run() -> tuple[ExpiryOutcome, list[tuple[str, dict[str, Any]]]]:
        gw = AnsweringGateway(answer)
        try:
            return await gw.enqueue_expired(1_700_000_000_000), gw.calls
        finally:
            await gw.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # numbers arrive as floats (v.number())
        (
            {"enqueued": 2.0, "retired": 1.0, "removedInterests": 256.0},
            ExpiryOutcome(enqueued=2, retired=1, removed_interests=256),
        ),
        # a backend deployed before the cleanup counts existed
        ({"enqueued": 3.0, "retired": 0.0}, ExpiryOutcome(enqueued=3)),
        ({"enqueued": 0.0}, ExpiryOutcome()),
    ],
)
def test_reads_every_count(answer: dict[str, Any], expected: ExpiryOutcome) -> None:
    """The counts become an ExpiryOutcome of ints; counts the backend does not send are 0."""
    outcome, calls = enqueue_expired(answer)
    assert outcome == expected
    assert calls == [("worker:enqueueExpired", {"nowMs": 1_700_000_000_000})]
