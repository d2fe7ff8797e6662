"""Upload a parsed Takeout export to Convex in batches, with progress and a summary."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from worker.errors import (
    AuthenticationError,
    GatewayError,
    ImportFailedError,
    ImportInterruptedError,
    PermanentGatewayError,
    plural,
)
from worker.gateway import ConvexGateway
from worker.models import WatchEvent

NOTHING_SENT = "no batch was sent; importing the file again is safe."
"""What an import stopped before its first batch was sent has done (the end of the CLI's message)."""

BATCH_SIZE = 500
"""Events per ``importBatch`` mutation: well under the backend's 1000-event cap and Convex's
per-transaction limits (each event costs one index read and one write)."""


@dataclass
class ImportSummary:
    """What an import did.

    Attributes:
        imported: Events inserted (new).
        duplicates: Events skipped because the same (second, video or title) was already stored, or
            came earlier in the batch; their batches are committed all the same (the duplicates as no-ops).
        batches: Mutations committed.
        non_views: Entries of the file that are not views, by kind (ads, posts, visits, ...).
        rejected: ``(entry index, field, reason)`` of entries that could not be read.
        first_ms: Earliest view in the file, epoch ms UTC (None when empty).
        last_ms: Latest view in the file, epoch ms UTC (None when empty).
        last_seq: Change-log seq of the last batch that inserted something (None when nothing new).
    """

    imported: int = 0
    duplicates: int = 0
    batches: int = 0
    non_views: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)
    first_ms: int | None = None
    last_ms: int | None = None
    last_seq: int | None = None

    @property
    def sent(self) -> int:
        """Events of the committed batches: the new ones and the duplicates."""
        return self.imported + self.duplicates

    def rejected_reasons(self) -> Counter[str]:
        """Return rejection counts by ``field: reason``."""
        return Counter(f"{f}: {r}" for _, f, r in self.rejected)


async def upload_events(
    gateway: ConvexGateway,
    events: Sequence[WatchEvent],
    *,
    source: str,
    user_id: str | None = None,
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Upload events in batches; each batch is one transaction with its change-log row.

    Args:
        gateway: Connected gateway: with a user token (public path) or an admin key and ``user_id``.
        events: Views to import, any order.
        source: ``takeout_json``, ``takeout_html`` or ``synthetic``.
        user_id: Target user in operator mode (admin key); None acts as the token's user.
        batch_size: Events per mutation (≤ 1000).
        on_batch: Called with the number of events of each committed batch (progress bars).

    Returns:
        The summary (``non_views``/``rejected`` left empty: the parser owns those).

    Raises:
        ImportFailedError: a batch failed (its ``__cause__`` is the gateway error: permanent when the
            backend refused it, transient when the deployment could not be reached); earlier batches
            stay committed, and importing the same file again skips them as duplicates.
        ImportInterruptedError: the task was cancelled (the CLI cancels it on SIGINT/SIGTERM) while a
            batch was in flight, which may or may not be committed; same attributes, no ``__cause__``.
            (A cancellation elsewhere, when nothing is in flight: :func:`interrupted_between_batches`.)
    """
    summary = ImportSummary()
    if events:
        summary.first_ms = min(e.watched_at_ms for e in events)
        summary.last_ms = max(e.watched_at_ms for e in events)
    ordered = sorted(events, key=lambda e: e.watched_at_ms)
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start : start + batch_size]
        try:
            result = await gateway.import_batch(batch, source=source, user_id=user_id)
        except GatewayError as exc:
            raise _batch_failure(exc, summary, start, len(batch)) from exc
        except asyncio.CancelledError:  # SIGINT/SIGTERM: say what is committed instead of vanishing
            failure = f"{_where(summary, start, len(batch))} may or may not be committed."
            raise ImportInterruptedError(
                f"{failure} {_committed(summary)}",
                committed_batches=summary.batches,
                inserted=summary.imported,
                duplicates=summary.duplicates,
                failure=failure,
            ) from None
        summary.batches += 1
        summary.imported += int(result["inserted"])
        summary.duplicates += int(result["duplicates"])
        if result.get("seq") is not None:
            summary.last_seq = int(result["seq"])
        if on_batch:
            on_batch(len(batch))
    return summary


def _where(summary: ImportSummary, start: int, size: int) -> str:
    """Name the batch after the committed ones: ``batch 3 (views 1000..1499 in time order)``."""
    views = f"view {start}" if size == 1 else f"views {start}..{start + size - 1}"
    return f"batch {summary.batches + 1} ({views} in time order)"


def _committed(summary: ImportSummary) -> str:
    """Say what is committed so far, as a sentence, and that importing the file again is safe.

    ``2 earlier batches (1000 events sent: 988 new, 12 duplicates) are committed; importing the file
    again skips their events as duplicates.`` Duplicates count: their batches are committed too.
    """
    if summary.batches == 0:
        return "No earlier batch is committed; importing the file again is safe."
    batches = plural(summary.batches, "earlier batch", "earlier batches")
    are, their = ("is", "its") if summary.batches == 1 else ("are", "their")
    return f"{batches} ({_sent(summary)}) {are} committed; importing the file again skips {their} events as duplicates."


def _sent(summary: ImportSummary) -> str:
    """``1000 events sent: 988 new, 12 duplicates``: the events of the committed batches."""
    return f"{plural(summary.sent, 'event')} sent: {summary.imported} new, {plural(summary.duplicates, 'duplicate')}"


def interrupted_between_batches(summary: ImportSummary | None) -> ImportInterruptedError:
    """Describe an import cancelled while no batch was in flight: before the first one or after the last.

    Args:
        summary: What :func:`upload_events` returned, or None when it had not returned (it reports a
            cancellation during a batch itself, so none was sent).

    Returns:
        The error to raise: ``no batch was sent; importing the file again is safe.``, or that every
        batch is committed.
    """
    if summary is None or summary.batches == 0:
        return ImportInterruptedError(NOTHING_SENT, committed_batches=0, inserted=0)
    every = "the only batch is" if summary.batches == 1 else f"all {summary.batches} batches are"
    return ImportInterruptedError(
        f"{every} committed ({_sent(summary)}); the import is complete.",
        committed_batches=summary.batches,
        inserted=summary.imported,
        duplicates=summary.duplicates,
    )


def _batch_failure(exc: GatewayError, summary: ImportSummary, start: int, size: int) -> ImportFailedError:
    """Describe a failed batch: rejected credentials, a refused batch, or an unreachable deployment.

    One line; what is committed is said only when something is, except after a transient failure
    (the failed batch itself may have been committed), where it also says that a re-import is safe.
    """
    reason = str(exc).rstrip().rstrip(".")  # the backend's own messages may end in a period
    where = _where(summary, start, size)
    if isinstance(exc, AuthenticationError):
        failure = f"{reason}."
        message = f"{failure} {_committed(summary)}" if summary.batches else failure
    elif isinstance(exc, PermanentGatewayError):
        failure = f"{where} was refused: {reason}; nothing of this batch was written."
        message = f"{failure} {_committed(summary)}" if summary.batches else failure
    else:
        failure = f"{where} failed: {reason}."
        message = f"{failure} {_committed(summary)}"
    return ImportFailedError(
        message,
        committed_batches=summary.batches,
        inserted=summary.imported,
        duplicates=summary.duplicates,
        failure=failure,
    )
