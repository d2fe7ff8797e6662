"""Domain models shared by the importer, the aggregation engine and the gateway.

Timestamps are integer epoch milliseconds, UTC. Models are immutable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["watch", "removed"]
"""A view of a known video (``watch``) or of a removed/private video whose id is unknown (``removed``)."""

Product = Literal["youtube", "youtube_music"]
Source = Literal["takeout_json", "takeout_html", "synthetic", "api"]

KINDS: tuple[Kind, ...] = ("watch", "removed")
PRODUCTS: tuple[Product, ...] = ("youtube", "youtube_music")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One view from a user's watch history.

    Attributes:
        watched_at_ms: Instant of the view, epoch milliseconds UTC.
        kind: ``"watch"`` or ``"removed"`` (removed/private video: no id, title or channel).
        product: ``"youtube"`` or ``"youtube_music"``.
        video_id: 11-character YouTube video id, or None when unknown.
        title: Video title without the "Watched " verb, or None when unknown.
        channel_id: ``UC…`` channel id, or None when the export gives no channel.
        channel_name: Channel display name (not unique, not stable), or None.
        flags: Subset of ``{"shorts", "title_unknown"}``.
    """

    watched_at_ms: int
    kind: Kind = "watch"
    product: Product = "youtube"
    video_id: str | None = None
    title: str | None = None
    channel_id: str | None = None
    channel_name: str | None = None
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def dedupe_key(self) -> str:
        """Return the key the backend deduplicates on: time + video id, or time + title without an id."""
        return f"{self.watched_at_ms}|{self.video_id or ''}|{'' if self.video_id else (self.title or '')}"


ChangeKind = Literal["import", "delete", "timezone", "manual", "expiry", "filter"]


@dataclass(frozen=True, slots=True)
class ChangeEntry:
    """One row of the change log (the outbox), as the worker sees it.

    Attributes:
        user_id: Owner of the change (the user's token identifier).
        seq: Per-user sequence number, strictly increasing from 1.
        kind: What changed.
        from_ms: Earliest affected ``watchedAtMs`` (inclusive, epoch ms UTC), None = unbounded.
        to_ms: Latest affected ``watchedAtMs`` (inclusive, epoch ms UTC), None = unbounded.
        count: Number of events affected (0 for settings and triggers).
    """

    user_id: str
    seq: int
    kind: ChangeKind
    from_ms: int | None = None
    to_ms: int | None = None
    count: int = 0

    @property
    def whole_history(self) -> bool:
        """Return True when the change can affect every aggregate of the user (no time range)."""
        return self.from_ms is None or self.to_ms is None or self.kind in ("timezone", "manual", "expiry")


@dataclass(frozen=True, slots=True)
class Claim:
    """Answer of ``worker:claimUser``.

    Attributes:
        granted: True when this replica holds the user's lease.
        lease_owner: Current lease owner (another replica when not granted).
        lease_expires_at_ms: Lease expiry, epoch ms UTC.
        time_zone: The user's IANA time zone.
        last_seq: Highest change seq assigned for the user.
        changes: Pending change rows (seq ≤ last_seq), oldest first.
        interests: Active on-demand filter sets, as Convex ``filters`` objects.
    """

    granted: bool
    lease_owner: str | None
    lease_expires_at_ms: int | None
    time_zone: str
    last_seq: int
    changes: tuple[ChangeEntry, ...]
    interests: tuple[dict[str, object], ...] = ()

    @property
    def watermark(self) -> int:
        """Return the highest seq among the claimed changes (0 when none)."""
        return max((c.seq for c in self.changes), default=0)


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """Counts returned by ``worker:storeAggregations`` (summed over calls).

    Attributes:
        written: Rows inserted or replaced.
        unchanged: Rows left as they were (same data hash), or results of a repeated store.
        skipped_stale: Results refused because newer results (or a newer definition) are stored.
        resent: Filter sets sent again with their data after a hash-only claim did not hold.
        hashes: ``(filterKey, type) → dataHash`` of every result the backend accepted; passed back
            as ``known_hashes`` next time so unchanged data is not uploaded again.
    """

    written: int = 0
    unchanged: int = 0
    skipped_stale: int = 0
    resent: int = 0
    hashes: dict[tuple[str, str], str] = field(default_factory=dict, compare=False)

    def __add__(self, other: StoreOutcome) -> StoreOutcome:
        return StoreOutcome(
            self.written + other.written,
            self.unchanged + other.unchanged,
            self.skipped_stale + other.skipped_stale,
            self.resent + other.resent,
            {**self.hashes, **other.hashes},
        )
