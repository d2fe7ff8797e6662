"""Domain models shared by the importer, the aggregation engine and the gateway.

Timestamps are integer epoch milliseconds, UTC. Models are immutable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final, Literal

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
        """Return the engine's key for repeated views: instant + video id, or instant + title without an id.

        The engine counts events sharing this key once. The backend deduplicates imports more coarsely,
        on the same fields with the instant truncated to the whole second (``dedupeKey`` in
        ``convex/watchEvents.ts``: the HTML and JSON exports of one view agree only to the second), so
        the views it stores never share this key either.
        """
        return f"{self.watched_at_ms}|{self.video_id or ''}|{'' if self.video_id else (self.title or '')}"


# Input limits of the backend, mirroring convex/watchEvents.ts (MIN_WATCHED_AT_MS, MAX_FUTURE_SKEW_MS,
# MAX_FIELD_LENGTH, MAX_FLAGS, checked by validateEvent). Change both sides together: an event the
# backend refuses makes it reject the whole import batch.

MIN_WATCHED_AT_MS: Final = 1_104_537_600_000
"""Earliest accepted ``watched_at_ms``: 2005-01-01T00:00:00Z (YouTube did not exist before)."""

MAX_FUTURE_SKEW_MS: Final = 24 * 60 * 60 * 1000
"""How far past the current time a ``watched_at_ms`` may be (clock skew), in ms: 1 day."""

MAX_USER_ID_LENGTH: Final = 512
"""Longest user id (token identifier) the deployment's internal functions accept, in UTF-16 code
units: ``MAX_USER_ID_LENGTH`` of convex/users.ts."""

MAX_FIELD_LENGTH: Final[Mapping[str, int]] = MappingProxyType(
    {"video_id": 64, "title": 1000, "channel_id": 128, "channel_name": 1000}
)
"""Longest accepted value per optional string field, in UTF-16 code units (JavaScript ``length``)."""

MAX_FLAGS: Final = 8
"""Most flags on one event."""


def iso_utc(ms: int) -> str:
    """Return ``ms`` as ISO 8601 UTC (``0005-01-01T00:00:00Z``), or the bare number outside the years 1–9999.

    The year always has 4 digits: ``strftime("%Y")`` drops the padding of years before 1000 on glibc
    (``5-01-01``), which is not ISO 8601 and does not read as a date.
    """
    try:
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    except OverflowError:
        return str(ms)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}Z"


LONE_SURROGATE_RE: Final = re.compile("[\ud800-\udfff]")
"""A UTF-16 surrogate code point in a ``str``: half of a character (from a JSON ``"\\ud83d"`` escape), never
encodable as UTF-8. A whole pair is decoded to one character, so any match is a lone half."""


def utf16_length(text: str) -> int:
    """Return the length of ``text`` in UTF-16 code units, as JavaScript's ``String.length`` (the deployment
    checks lengths so); a lone surrogate counts 1, as it does there."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def view_problem(event: WatchEvent, *, now_ms: int) -> tuple[str, str] | None:
    """Return why the backend would refuse ``event``, or None when it is within the limits.

    The same checks as ``validateEvent`` in ``convex/watchEvents.ts``: ``watched_at_ms`` in
    [:data:`MIN_WATCHED_AT_MS`, ``now_ms`` + :data:`MAX_FUTURE_SKEW_MS`]; optional strings never
    empty and at most :data:`MAX_FIELD_LENGTH` UTF-16 code units; at most :data:`MAX_FLAGS` flags.
    Also refused: a string holding a lone UTF-16 surrogate (``"\\ud83d"`` decoded from JSON), which
    cannot be encoded as UTF-8 and so cannot be sent at all.

    Args:
        event: The view to check.
        now_ms: Current time, epoch ms UTC. The backend uses its own clock at import time, which
            is later than a clock read before the import, so an event accepted here is accepted
            there unless the two clocks disagree by about a day.

    Returns:
        ``(field, reason)`` for the first problem found, ``field`` being the :class:`WatchEvent`
        attribute name (``"watched_at_ms"``, ``"title"``…), or None.
    """
    t = event.watched_at_ms
    latest_ms = now_ms + MAX_FUTURE_SKEW_MS
    if t < MIN_WATCHED_AT_MS:
        return "watched_at_ms", f"{iso_utc(t)} is before 2005-01-01T00:00:00Z, the earliest accepted instant"
    if t > latest_ms:
        return "watched_at_ms", f"{iso_utc(t)} is more than 1 day in the future (latest accepted {iso_utc(latest_ms)})"
    for name, limit in MAX_FIELD_LENGTH.items():
        value: str | None = getattr(event, name)
        if value is None:
            continue
        if not value:
            return name, "is empty; use None for an unknown value"
        if not value.isascii() and (lone := LONE_SURROGATE_RE.search(value)) is not None:
            surrogate = f"\\u{ord(lone.group()):04x}"
            return name, f"holds a lone UTF-16 surrogate {surrogate} at offset {lone.start()} (damaged text)"
        # A code point is at most 2 UTF-16 units, so short strings need no counting.
        if len(value) * 2 > limit and (length := utf16_length(value)) > limit:
            return name, f"is {length} characters (UTF-16 units); at most {limit} are allowed"
    if len(event.flags) > MAX_FLAGS:
        return "flags", f"has {len(event.flags)} entries; at most {MAX_FLAGS} are allowed"
    return None


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
class DeadLetter:
    """A change the worker failed on 5 times (``admin:listDeadLetters``), no longer delivered.

    Attributes:
        change: The change-log row (user, seq, kind, range, count).
        attempts: Failed attempts (5).
        error: The last failure's text (at most 2000 characters).
        created_at_ms: When the change was appended, epoch ms UTC.
        failed_at_ms: When it was dead-lettered, epoch ms UTC (None when not recorded).
    """

    change: ChangeEntry
    attempts: int
    error: str
    created_at_ms: int
    failed_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AppendedViews:
    """Views a claim of only imports carries (``worker:claimUser``'s ``appended``).

    Attributes:
        after_seq: Exclusive lower bound of the inserting changes' seqs.
        through_seq: Inclusive upper bound.
        events: The views those changes inserted that still exist, in change order
            (what ``worker:listEventsByChange`` would return for the same bounds).
    """

    after_seq: int
    through_seq: int
    events: tuple[WatchEvent, ...]


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
        appended: The views inserted by the claimed changes when all are imports of at most 1000
            views in all (saves the delta read), else None.
        retry_after_ms: When not granted: time until the holder's lease expires, ms by the
            deployment's clock (a retry backoff after failed attempts, or another replica's lease);
            None when granted, or when the deployment does not send it.
        user_created_at_ms: Creation time of the user's row (epoch ms): the incarnation of the
            user's change log (a wiped and re-imported user starts its seqs again under a new
            one); None from a deployment that does not send it.
    """

    granted: bool
    lease_owner: str | None
    lease_expires_at_ms: int | None
    time_zone: str
    last_seq: int
    changes: tuple[ChangeEntry, ...]
    interests: tuple[dict[str, object], ...] = ()
    appended: AppendedViews | None = field(default=None, repr=False)
    retry_after_ms: int | None = None
    user_created_at_ms: float | None = None

    @property
    def watermark(self) -> int:
        """Return the highest seq among the claimed changes (0 when none)."""
        return max((c.seq for c in self.changes), default=0)

    def cache_user(self, user_id: str) -> str:
        """Return the key the worker's caches file ``user_id``'s months and frame under: the user id
        and its incarnation (:attr:`user_created_at_ms`), so that the cached state of a wiped
        user, or of the same user id in another deployment sharing the Redis, is never reused."""
        if self.user_created_at_ms is None:
            return user_id
        return f"{user_id}\x00{self.user_created_at_ms!r}"


@dataclass(frozen=True, slots=True)
class LeaseRenewal:
    """Answer of ``worker:renewLease``.

    Attributes:
        renewed: True when this replica still held the user's lease and it now lasts until
            ``lease_expires_at_ms``; False when the lease is lost (another replica claimed the user
            after it expired, it was released, or it is a retry backoff).
        lease_owner: The lease's holder as it is now; None when the user has no lease.
        lease_expires_at_ms: Its expiry, epoch ms by the deployment's clock; None when no lease.
    """

    renewed: bool
    lease_owner: str | None = None
    lease_expires_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """Counts returned by ``worker:ackChanges``.

    Attributes:
        acked: Pending change rows marked done.
        superseded: The user's dead letters marked done because the acknowledged recompute covers
            them (only when ``acked`` > 0).
    """

    acked: int = 0
    superseded: int = 0


@dataclass(frozen=True, slots=True)
class FailOutcome:
    """Answer of ``worker:failChanges``.

    Attributes:
        failed: Pending change rows whose attempt count was incremented.
        dead_lettered: Of those, rows that reached the last attempt and became dead letters.
        backoff_ms: How long the deployment holds the user's lease before anyone may claim it again,
            ms (1000, 4000, 16000 or 64000); 0 when no backoff was set (every row dead-lettered,
            nothing matched, or another replica holds a live lease).
    """

    failed: int = 0
    dead_lettered: int = 0
    backoff_ms: int = 0


@dataclass(frozen=True, slots=True)
class ExpiryOutcome:
    """Counts returned by one ``worker:enqueueExpired`` call.

    Attributes:
        enqueued: Users an ``expiry`` change was appended for (their time-relative results expired).
        retired: On-demand filter sets deleted (results, set row and interest) because both the set's
            results and its interest expired.
        removed_interests: Other expired on-demand filter interests deleted (at most a bounded batch
            per call; the rest go on later calls).
    """

    enqueued: int = 0
    retired: int = 0
    removed_interests: int = 0


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
