"""Result types of the Takeout parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from worker.models import WatchEvent

ParseSource = Literal["takeout_json", "takeout_html"]

NON_VIEW_KINDS: tuple[str, ...] = ("ad", "ad_click", "post", "visit", "story", "other")
"""Kinds of entry that are not views: counted in :attr:`ParseResult.non_views`, never returned as events."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """One entry that could not be read; the other entries of the file are unaffected.

    Attributes:
        index: 0-based position of the entry in file order (newest first in Google's exports).
        field: The field at fault (JSON key such as ``"time"``, ``"titleUrl"``, ``"subtitles"``;
            ``"date"``/``"body"`` for HTML; ``"entry"`` when the entry itself has the wrong type).
        reason: What is wrong, in words, including the offending value when short.
    """

    index: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"entry {self.index}, field {self.field!r}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ParseResult:
    """Everything read from one watch-history export.

    Attributes:
        source: ``"takeout_json"`` (current or legacy 2016 JSON) or ``"takeout_html"``.
        views: Views in file order (Google writes newest first): kind ``"watch"`` or ``"removed"``.
        non_views: Entries that are not views, counted by kind; every kind of
            :data:`NON_VIEW_KINDS` is present (0 when absent from the file).
        rejected: Entries that could not be read, in file order.
        total_entries: Number of entries in the file (views + non-views + rejected).
        first_ms: Earliest ``watched_at_ms`` among ``views`` (epoch ms, UTC), None without views.
        last_ms: Latest ``watched_at_ms`` among ``views`` (epoch ms, UTC), None without views.
        notes: Human-readable remarks on interpretations that were made, e.g. an ambiguous
            time-zone label read with its documented default offset. Empty when none.
    """

    source: ParseSource
    views: list[WatchEvent]
    non_views: dict[str, int]
    rejected: list[Rejection]
    total_entries: int
    first_ms: int | None
    last_ms: int | None
    notes: tuple[str, ...] = field(default=())
