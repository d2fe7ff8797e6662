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
        field: The field at fault, as its path in the entry (JSON: ``"time"``, ``"titleUrl"``,
            ``"subtitles[0].name"`` for the channel name, ``"snippet.title"`` in the legacy layout;
            ``"date"``/``"body"`` for HTML; ``"entry"`` when the entry itself has the wrong type).
        reason: What is wrong, in words, including the offending value when short.
    """

    index: int
    field: str
    reason: str

    def __str__(self) -> str:
        """Format as ``entry 5: time: missing``, the form both ``import`` and the checker print."""
        return f"entry {self.index}: {self.field}: {self.reason}"


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
            time-zone label read with its documented default offset, or the other watch-history
            files of a zip archive that were not read. Empty when none.
        member: For a zip archive, the path of the member that was read
            (``Takeout/YouTube and YouTube Music/history/watch-history.json``); None otherwise.
    """

    source: ParseSource
    views: list[WatchEvent]
    non_views: dict[str, int]
    rejected: list[Rejection]
    total_entries: int
    first_ms: int | None
    last_ms: int | None
    notes: tuple[str, ...] = field(default=())
    member: str | None = None

    def no_view_reason(self) -> str | None:
        """Say why the export holds no view to import; None when it holds at least one.

        Returns:
            ``"the file holds no entries"``, ``"every entry was rejected (2 of 2)"`` or
            ``"none of its 2 entries is a view (ad 1, rejected 1)"`` (``"its only entry is not a view
            (ad 1, rejected 0)"``); None when ``views`` is not empty.
        """
        if self.views:
            return None
        total, rejected = self.total_entries, len(self.rejected)
        if total == 0:
            return "the file holds no entries"
        if rejected == total:
            return f"every entry was rejected ({rejected} of {total})"
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.non_views.items()) if count)
        if total == 1:
            return f"its only entry is not a view ({kinds}, rejected {rejected})"
        return f"none of its {total} entries is a view ({kinds}, rejected {rejected})"
