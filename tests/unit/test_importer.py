"""Import failures: one line saying what failed and, when anything was, what is committed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worker.errors import (
    AuthenticationError,
    GatewayError,
    ImportFailedError,
    ImportInterruptedError,
    PermanentGatewayError,
    TransientGatewayError,
)
from worker.importer import ImportSummary, interrupted_between_batches, upload_events
from worker.models import WatchEvent

EVENTS = [WatchEvent(watched_at_ms=1_700_000_000_000 + i, video_id="dQw4w9WgXcQ", title="v") for i in range(5)]


class FailingGateway:
    """Commits ``ok_batches`` batches, then raises ``error`` (or blocks, if None).

    The first ``stored`` events (in time order) count as duplicates, already stored; the others are inserted.
    """

    def __init__(self, ok_batches: int, error: GatewayError | None, stored: int = 0) -> None:
        self.ok_batches = ok_batches
        self.error = error
        self.stored = stored
        self.sent = 0
        self.calls = 0

    async def import_batch(self, batch: list[WatchEvent], *, source: str, user_id: str | None) -> dict[str, Any]:
        self.calls += 1
        if self.calls > self.ok_batches:
            if self.error is None:
                await asyncio.sleep(3600)
            else:
                raise self.error
        duplicates = max(0, min(len(batch), self.stored - self.sent))
        self.sent += len(batch)
        return {"inserted": len(batch) - duplicates, "duplicates": duplicates, "seq": self.calls}


def failure(ok_batches: int, error: GatewayError | None, stored: int = 0) -> ImportFailedError:
    async def go() -> None:
        gateway = FailingGateway(ok_batches, error, stored)
        await upload_events(gateway, EVENTS, source="takeout_json", batch_size=2)  # type: ignore[arg-type]

    with pytest.raises(ImportFailedError) as info:
        asyncio.run(go())
    return info.value


AUTH = AuthenticationError(
    "http://127.0.0.1:3210 rejected the admin key: BadAdminKey: The provided admin key was invalid for this instance."
)
TIMEOUT = PermanentGatewayError(
    "watchEvents:importBatch: the function ran longer than 1000 ms; its transaction was rolled back."
)


class TestImportFailures:
    def test_rejected_credentials_before_any_batch(self) -> None:
        """Nothing committed: the deployment's one sentence, without an "0 earlier batches" remark."""
        exc = failure(0, AUTH)
        assert str(exc) == str(AUTH)
        assert (exc.committed_batches, exc.inserted) == (0, 0)

    def test_rejected_credentials_after_some_batches(self) -> None:
        exc = failure(1, AUTH)
        assert exc.failure == str(AUTH)  # without what is committed (the demo's backend is gone: no re-import)
        assert str(exc).endswith(
            "invalid for this instance. 1 earlier batch (2 events sent: 2 new, 0 duplicates) is committed;"
            " importing the file again skips its events as duplicates."
        )

    def test_refused_batch_ends_in_one_period(self) -> None:
        """A backend message ending in a period is not followed by a second one."""
        first = failure(0, TIMEOUT)
        assert str(first) == (
            "batch 1 (views 0..1 in time order) was refused: watchEvents:importBatch: the function ran longer"
            " than 1000 ms; its transaction was rolled back; nothing of this batch was written."
        )
        assert first.failure == str(first)
        later = failure(2, TIMEOUT)
        assert later.failure == str(later).split(" 2 earlier batches")[0]
        assert "batch 3 (view 4 in time order) was refused" in str(later)  # a batch of one view
        assert ".." not in str(later)
        assert str(later).endswith(
            "nothing of this batch was written. 2 earlier batches (4 events sent: 4 new, 0 duplicates) are"
            " committed; importing the file again skips their events as duplicates."
        )

    def test_duplicates_count_as_committed_events(self) -> None:
        """Duplicates were sent and committed (as no-ops): the events committed are all that were sent, new or not."""
        exc = failure(2, TransientGatewayError("watchEvents:importBatch: ConnectError: refused"), stored=3)
        assert (exc.committed_batches, exc.inserted, exc.duplicates) == (2, 1, 3)
        assert str(exc).endswith(
            "failed: watchEvents:importBatch: ConnectError: refused. 2 earlier batches (4 events sent: 1 new,"
            " 3 duplicates) are committed; importing the file again skips their events as duplicates."
        )
        again = failure(1, TransientGatewayError("watchEvents:importBatch: ConnectError: refused"), stored=5)
        assert "1 earlier batch (2 events sent: 0 new, 2 duplicates) is committed;" in str(again)

    def test_unreachable_deployment_says_a_re_import_is_safe(self) -> None:
        exc = failure(0, TransientGatewayError("watchEvents:importBatch: ConnectError: refused"))
        assert str(exc) == (
            "batch 1 (views 0..1 in time order) failed: watchEvents:importBatch: ConnectError: refused."
            " No earlier batch is committed; importing the file again is safe."
        )

    def test_cancellation_says_what_is_committed(self) -> None:
        """A cancelled import (SIGINT/SIGTERM in the CLI) raises ImportInterruptedError with the committed batches."""

        async def go() -> None:
            task = asyncio.create_task(
                upload_events(FailingGateway(1, None), EVENTS, source="takeout_json", batch_size=2)  # type: ignore[arg-type]
            )
            await asyncio.sleep(0.05)
            task.cancel()
            await task

        with pytest.raises(ImportInterruptedError) as info:
            asyncio.run(go())
        assert (info.value.committed_batches, info.value.inserted) == (1, 2)
        assert info.value.failure == "batch 2 (views 2..3 in time order) may or may not be committed."
        assert str(info.value) == (
            "batch 2 (views 2..3 in time order) may or may not be committed. 1 earlier batch (2 events sent:"
            " 2 new, 0 duplicates) is committed; importing the file again skips its events as duplicates."
        )

    def test_cancellation_outside_a_batch_claims_no_batch_in_flight(self) -> None:
        """Before the first batch nothing was sent; after the last every batch is committed: no "may or may not"."""
        before = interrupted_between_batches(None)
        assert str(before) == "no batch was sent; importing the file again is safe."
        assert (before.committed_batches, before.inserted, before.duplicates) == (0, 0, 0)
        after = interrupted_between_batches(ImportSummary(imported=3, duplicates=2, batches=3))
        assert str(after) == (
            "all 3 batches are committed (5 events sent: 3 new, 2 duplicates); the import is complete."
        )
        assert (after.committed_batches, after.inserted, after.duplicates) == (3, 3, 2)
        one = interrupted_between_batches(ImportSummary(imported=1, batches=1))
        assert str(one).startswith("the only batch is committed (1 event sent: 1 new, 0 duplicates)")
