"""Read JSON watch-history exports: the My Activity layout and the legacy 2016 playlist-item layout.

Format notes: ``docs/takeout-formats.md`` §2 (fields), §2.1 (legacy 2016), §3 (record kinds), §5 (locales).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from worker.errors import shorten
from worker.models import LONE_SURROGATE_RE, Kind, Product, WatchEvent
from worker.takeout.errors import TakeoutFormatError
from worker.takeout.result import ParseResult, Rejection
from worker.takeout.rules import (
    AD_MARKERS,
    VIDEO_ID_RE,
    Tally,
    WatchUrlError,
    channel_url_id,
    classify_entry,
    epoch_ms,
    strip_watch_verb,
    title_is_url,
    utc_offset_ms,
)

_ISO_RE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?(Z|[+-]\d{2}:?\d{2})")
_ACTIVITY_KEYS: Final = frozenset({"header", "title", "time", "titleUrl", "products"})
_LEGACY_KIND: Final = "youtube#playlistItem"
_LEGACY_REMOVED_TITLES: Final = frozenset({"Deleted video", "Private video"})
_ACTIVITY_FIELDS: Final = {
    "watched_at_ms": "time",
    "video_id": "titleUrl",
    "title": "title",
    "channel_id": "subtitles[0].url",
    "channel_name": "subtitles[0].name",
}
"""Rejection field per WatchEvent attribute: the JSON path it is read from (the channel comes from the
first ``subtitles`` object)."""
_LEGACY_FIELDS: Final = {
    "watched_at_ms": "snippet.publishedAt",
    "video_id": "contentDetails.videoId",
    "title": "snippet.title",
}


_SURROGATE_ESCAPE_RE: Final = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F]"
)
"""A JSON escape of a lone UTF-16 surrogate: a high half (``\\ud83d``) not followed by a low one, or a low
half not preceded by a high one; the only way a decoded string can hold one. Takeout escapes every emoji
as a whole pair, which this does not match, so an ordinary export is never walked entry by entry."""


class _EntryError(Exception):
    """One entry is unreadable; becomes a Rejection."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def json_int(literal: str) -> int | float:
    """Return the value of a JSON integer literal (``json.loads``' ``parse_int``).

    A literal longer than Python converts to ``int`` (``sys.get_int_max_str_digits``: 4300 digits
    by default) becomes an infinite float instead of raising a ``ValueError`` that names neither the
    file nor the entry. No Takeout field is a number, so only its type matters: a field that must
    be a string or an array still rejects its entry, and an unknown field is ignored as before.
    """
    try:
        return int(literal)
    except ValueError:
        return float("-inf") if literal.startswith("-") else float("inf")


def json_type(value: object) -> str:
    """Name the JSON type of a decoded value as the file spells it, for messages.

    Returns:
        ``"null"``, ``"boolean"``, ``"number"``, ``"string"``, ``"array"`` or ``"object"`` (Python's
        ``NoneType``, ``dict``, ... mean nothing to whoever reads the message).
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def parse_iso_ms(value: object, field: str = "time") -> int:
    """Return epoch ms (UTC) of an ISO 8601 instant with ``Z`` or an offset, with or without fraction.

    Raises:
        _EntryError: for a missing, non-string or unparseable value.
    """
    if value is None:
        raise _EntryError(field, "missing")
    if not isinstance(value, str):
        raise _EntryError(field, f"expected an ISO 8601 string, got a JSON {json_type(value)}")
    match = _ISO_RE.fullmatch(value.strip())
    if match is None:
        raise _EntryError(field, f"not an ISO 8601 instant: {value[:40]!r}")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    millis = int((frac or "0")[:3].ljust(3, "0"))
    try:
        ms = epoch_ms(int(year), int(month), int(day), int(hour), int(minute), int(second), millis)
    except ValueError as exc:
        raise _EntryError(field, f"invalid instant {value[:40]!r}: {exc}") from None
    if zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = utc_offset_ms(zone[0], digits[:2], digits[2:])
        if offset is None:
            raise _EntryError(field, f"offset {zone!r} of {value[:40]!r} is no UTC offset (at most ±14:00)")
        ms -= offset
    return ms


def _lone_surrogate(value: object, path: str) -> _EntryError | None:
    """Find the first string in ``value`` (an entry, or a part of one) that holds a lone UTF-16 surrogate.

    ``json.loads`` joins an escaped surrogate pair (``\\ud83d\\ude00``) into one character, but keeps
    a lone half (``\\ud83d``) as a surrogate code point, which cannot be encoded as UTF-8 and so can
    never be sent: such a value was cut in the middle of a character and is damaged. Every string is
    checked, object keys included, whether the entry's reader uses it or not.

    Args:
        value: The decoded JSON value.
        path: Its path in the entry, as rejections name fields (``"title"``, ``"subtitles[0].name"``);
            "" for the entry itself.

    Returns:
        The error naming the field and the position of the first lone surrogate, or None when there is none.
    """
    if isinstance(value, str):
        if value.isascii() or (match := LONE_SURROGATE_RE.search(value)) is None:
            return None
        return _EntryError(
            path or "entry",
            f"lone UTF-16 surrogate \\u{ord(match.group()):04x} at offset {match.start()} (half of a"
            f" character; the text is damaged): {shorten(value)!r}",
        )
    if isinstance(value, list):
        for index, item in enumerate(value):
            if (error := _lone_surrogate(item, f"{path}[{index}]")) is not None:
                return error
    elif isinstance(value, dict):
        for key, item in value.items():
            field = f"{path}.{key}" if path else key
            if not key.isascii() and LONE_SURROGATE_RE.search(key):
                return _EntryError(
                    path or "entry", f"a field name holds a lone UTF-16 surrogate (the text is damaged): {key!r}"
                )
            if (error := _lone_surrogate(item, field)) is not None:
                return error
    return None


def _opt_str(entry: dict[str, Any], key: str, field: str | None = None) -> str | None:
    """Return the string at ``key`` of ``entry``, or None when it is absent or null.

    Raises:
        _EntryError: the value is not a string; the field is named ``field`` (default: ``key``).
    """
    value = entry.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _EntryError(field or key, f"expected a string, got a JSON {json_type(value)}")


def _opt_objects(entry: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = entry.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _EntryError(key, f"expected an array of objects, got a JSON {json_type(value)}")
    return value


def _activity_entry(entry: object) -> WatchEvent | str:
    """Return the view of one My Activity entry, or the non-view kind it is."""
    if not isinstance(entry, dict):
        raise _EntryError("entry", f"expected an object, got a JSON {json_type(entry)}")
    header = _opt_str(entry, "header")
    title = _opt_str(entry, "title")
    url = _opt_str(entry, "titleUrl")
    subtitles = _opt_objects(entry, "subtitles")
    details = _opt_objects(entry, "details")
    watched_at_ms = parse_iso_ms(entry.get("time"))
    if title is None:
        raise _EntryError("title", "missing")

    is_ad = any(isinstance(d.get("name"), str) and d["name"] in AD_MARKERS for d in details)
    try:
        ref = classify_entry(title, url, header, is_ad=is_ad)
    except WatchUrlError as exc:
        raise _EntryError("titleUrl", str(exc)) from None
    if isinstance(ref, str):
        return ref
    if ref.kind == "removed":
        return WatchEvent(watched_at_ms=watched_at_ms, kind="removed", product=ref.product)
    assert url is not None  # a "watch" ref always comes from a video URL
    product, video_id, shorts_url = ref.product, ref.video_id, ref.shorts_url

    stripped = strip_watch_verb(title)
    text = title if stripped is None else stripped
    flags: set[str] = set()
    video_title: str | None = text
    if title_is_url(text, url):
        video_title = None
        flags.add("title_unknown")
    if shorts_url or "#shorts" in title.lower():
        flags.add("shorts")
    channel_id: str | None = None
    channel_name: str | None = None
    if subtitles:
        sub_url = _opt_str(subtitles[0], "url", "subtitles[0].url")
        sub_name = _opt_str(subtitles[0], "name", "subtitles[0].name")
        channel_id = None if sub_url is None else channel_url_id(sub_url)
        if channel_id is not None:
            channel_name = sub_name
    return WatchEvent(
        watched_at_ms=watched_at_ms,
        kind="watch",
        product=product,
        video_id=video_id,
        title=video_title,
        channel_id=channel_id,
        channel_name=channel_name,
        flags=frozenset(flags),
    )


def _legacy_entry(entry: object) -> WatchEvent | str:
    """Return the view of one legacy ``youtube#playlistItem`` entry (§2.1); channel is never known."""
    if not isinstance(entry, dict):
        raise _EntryError("entry", f"expected an object, got a JSON {json_type(entry)}")
    snippet = entry.get("snippet")
    if not isinstance(snippet, dict):
        raise _EntryError("snippet", "missing or not an object")
    details = entry.get("contentDetails")
    if not isinstance(details, dict):
        raise _EntryError("contentDetails", "missing or not an object")
    watched_at_ms = parse_iso_ms(snippet.get("publishedAt"), "snippet.publishedAt")
    title = snippet.get("title")
    if title is not None and not isinstance(title, str):
        raise _EntryError("snippet.title", f"expected a string, got a JSON {json_type(title)}")
    video_id = details.get("videoId")
    kind: Kind = "watch"
    if title in _LEGACY_REMOVED_TITLES or video_id is None or video_id == "":
        kind = "removed"
    elif not isinstance(video_id, str) or not VIDEO_ID_RE.fullmatch(video_id):
        raise _EntryError("contentDetails.videoId", f"not an 11-character video id: {video_id!r}")
    if kind == "removed":
        return WatchEvent(watched_at_ms=watched_at_ms, kind="removed")
    flags = frozenset({"shorts"}) if title and "#shorts" in title.lower() else frozenset()
    product: Product = "youtube"
    return WatchEvent(
        watched_at_ms=watched_at_ms,
        kind=kind,
        product=product,
        video_id=video_id,
        title=title or None,
        flags=flags,
    )


def _layout(entries: list[Any], name: str) -> str:
    """Return ``"activity"`` or ``"legacy"`` from the first object entries, or raise."""
    for index, entry in enumerate(entries[:50]):
        if not isinstance(entry, dict):
            continue
        if entry.get("kind") == _LEGACY_KIND:
            return "legacy"
        if _ACTIVITY_KEYS & entry.keys():
            return "activity"
        raise TakeoutFormatError(
            name,
            "unknown record structure: expected My Activity records ({header, title, time, …}) "
            f"or legacy youtube#playlistItem objects, found keys {sorted(entry.keys())[:8]}",
            f"entry {index}",
        )
    if not entries:
        return "activity"
    raise TakeoutFormatError(name, "the array holds no objects; not a watch-history export", "entry 0")


def parse_json_text(text: str, *, name: str, now_ms: int) -> ParseResult:
    """Parse the text of a JSON export (My Activity layout or legacy 2016 layout).

    Args:
        text: The whole file, decoded.
        name: File name used in error messages.
        now_ms: Wall-clock time when parsing started, epoch ms UTC: views more than 1 day after it
            (or before 2005) are rejected, as the backend would refuse them.

    Returns:
        A :class:`ParseResult` with source ``"takeout_json"``; unreadable entries (including any
        entry with a string that holds a lone UTF-16 surrogate, see :func:`_lone_surrogate`), watch
        entries whose ``titleUrl`` is not a watch URL with a video id, and views outside the
        backend's limits (``worker.models.view_problem``) are in ``rejected``; empty strings are None.

    Raises:
        TakeoutFormatError: invalid or truncated JSON (position = line/column), a top level
            that is not an array, or entries of an unknown layout.
    """
    try:
        data = json.loads(text, parse_int=json_int)
    except json.JSONDecodeError as exc:
        raise TakeoutFormatError(
            name,
            f"invalid JSON ({exc.msg}); the file may be truncated or damaged",
            f"line {exc.lineno}, column {exc.colno}",
        ) from None
    except RecursionError:
        raise TakeoutFormatError(name, "JSON nested too deeply") from None
    if not isinstance(data, list):
        raise TakeoutFormatError(
            name, f"expected a JSON array of records at the top level, got a JSON {json_type(data)}"
        )
    legacy = _layout(data, name) == "legacy"
    reader = _legacy_entry if legacy else _activity_entry
    fields = _LEGACY_FIELDS if legacy else _ACTIVITY_FIELDS
    tally = Tally(now_ms, fields)
    check_surrogates = _SURROGATE_ESCAPE_RE.search(text) is not None
    for index, entry in enumerate(data):
        try:
            if check_surrogates and (damaged := _lone_surrogate(entry, "")) is not None:
                raise damaged
            tally.add(index, reader(entry))
        except _EntryError as exc:
            tally.reject(index, exc.field, exc.reason)
    return build_result("takeout_json", tally.views, tally.non_views, tally.rejected, len(data))


def build_result(
    source: Any,
    views: list[WatchEvent],
    non_views: dict[str, int],
    rejected: list[Rejection],
    total: int,
    notes: tuple[str, ...] = (),
) -> ParseResult:
    """Assemble a :class:`ParseResult`, computing the covered range of ``views``."""
    first_ms = min((v.watched_at_ms for v in views), default=None)
    last_ms = max((v.watched_at_ms for v in views), default=None)
    return ParseResult(
        source=source,
        views=views,
        non_views=non_views,
        rejected=rejected,
        total_entries=total,
        first_ms=first_ms,
        last_ms=last_ms,
        notes=notes,
    )
