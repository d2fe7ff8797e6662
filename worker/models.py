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
