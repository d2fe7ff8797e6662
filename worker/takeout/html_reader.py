"""Read HTML watch-history exports (``watch-history.html``), any size, in linear time.

Format notes: ``docs/takeout-formats.md`` §4. Records are found as ``content-cell … body-1`` divs
that are not ``text-right`` (so fragments without the ``outer-cell`` opening tag still parse); the
caption cell and header cell are paired with the body cell of the same record by document order
within the record, never by a global index. The document is cut at ``outer-cell`` boundaries into
slices of a few MB, each parsed with selectolax (lexbor), so memory stays bounded for exports of
tens of MB.

A cut file is refused, not read in part: a page that opens ``<html>``/``<body>`` must close them
after its last record, and the last record's ``<div>`` must be closed. A fragment of records
without the page tags (it may start inside a record) is accepted when its last record is closed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from selectolax.lexbor import LexborHTMLParser, LexborNode

from worker.errors import plural
from worker.models import WatchEvent
from worker.takeout.errors import TakeoutFormatError
from worker.takeout.html_dates import AMBIGUOUS_LABELS, DateError, parse_html_date
from worker.takeout.json_reader import build_result
from worker.takeout.result import ParseResult
from worker.takeout.rules import (
    AD_MARKERS,
    Tally,
    WatchUrlError,
    channel_url_id,
    classify_entry,
    normalize_spaces,
    title_is_url,
)

_SLICE_CHARS: Final = 4_000_000
_OUTER_MARK: Final = '<div class="outer-cell'
_SELECTOR: Final = "div.header-cell, div.content-cell"
_DIV_OPEN_RE: Final = re.compile(r"<div\b", re.IGNORECASE)
_DIV_CLOSE_RE: Final = re.compile(r"</div\s*>", re.IGNORECASE)
_PAGE_OPEN_RE: Final = re.compile(r"<(html|body)\b", re.IGNORECASE)
_FIELDS: Final = {
    "watched_at_ms": "date",
    "video_id": "body",
    "title": "body",
    "channel_id": "body",
    "channel_name": "body",
}
"""Rejection field per WatchEvent attribute: the date line, or the body cell for the rest."""


@dataclass(slots=True)
class _Line:
    text: str = ""
    links: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Record:
    header: str | None
    lines: list[_Line]
    caption: str = ""


def _body_lines(node: LexborNode) -> list[_Line]:
    """Split a body cell into ``<br>``-separated lines of text with their links."""
    lines = [_Line()]
    for child in node.iter(include_text=True):
        tag = child.tag
        if tag == "-text":
            lines[-1].text += child.text_content or ""
        elif tag == "br":
            lines.append(_Line())
        elif tag == "a":
            text = child.text(deep=True)
            lines[-1].text += text
            lines[-1].links.append((child.attributes.get("href") or "", text))
        else:
            lines.append(_Line(text=child.text(deep=True, separator="\n")))
            lines.append(_Line())
    return [line for line in lines if line.text.strip() or line.links]


def _slices(text: str) -> list[str]:
    """Cut the document at ``outer-cell`` openings into slices of about :data:`_SLICE_CHARS`."""
    slices: list[str] = []
    start = 0
    while len(text) - start > _SLICE_CHARS:
        cut = text.find(_OUTER_MARK, start + _SLICE_CHARS)
        if cut < 0:
            break
        slices.append(text[start:cut])
        start = cut
    slices.append(text[start:])
    return slices


def _records(text: str) -> Iterator[_Record]:
    """Yield the records of the document in order, one slice at a time (bounded memory)."""
    for chunk in _slices(text):
        header: str | None = None
        records: list[_Record] = []
        for node in LexborHTMLParser(chunk).css(_SELECTOR):
            classes = (node.attributes.get("class") or "").split()
            if "header-cell" in classes:
                header = normalize_spaces(node.text(deep=True)).strip()
            elif "mdl-typography--body-1" in classes and "mdl-typography--text-right" not in classes:
                records.append(_Record(header=header, lines=_body_lines(node)))
                header = None
            elif "mdl-typography--caption" in classes and records:
                records[-1].caption = node.text(deep=True, separator="\n")
        yield from records


def _is_ad(caption: str) -> bool:
    """Return whether a caption holds an ad marker (ignoring the kind of space around it)."""
    if any(marker in caption for marker in AD_MARKERS):
        return True
    return not caption.isascii() and any(marker in normalize_spaces(caption) for marker in AD_MARKERS)


def _record(record: _Record, zones: Counter[str]) -> WatchEvent | str:
    """Return the view of one record, or its non-view kind. Raises DateError/ValueError via caller."""
    lines = record.lines
    if not lines:
        raise _RecordError("body", "empty record body")
    watched_at_ms: int | None = None
    for line in reversed(lines[1:]):
        candidate = normalize_spaces(line.text).strip()
        if candidate.startswith("Watched at ") or line.links:
            continue
        try:
            parsed = parse_html_date(candidate)
        except DateError as exc:
            raise _RecordError("date", str(exc)) from None
        if parsed is not None:
            watched_at_ms, zone = parsed
            if zone is not None:
                zones[zone] += 1
            break
    if watched_at_ms is None:
        raise _RecordError("date", "no date line found in the record body")

    first = lines[0]
    verb_text = first.text
    link = first.links[0] if first.links else None
    url = link[0] if link else None
    try:
        ref = classify_entry(verb_text, url, record.header, is_ad=_is_ad(record.caption))
    except WatchUrlError as exc:
        raise _RecordError("body", f"title link: {exc}") from None
    if isinstance(ref, str):
        return ref
    if ref.kind == "removed":
        return WatchEvent(watched_at_ms=watched_at_ms, kind="removed", product=ref.product)
    product, video_id, shorts_url = ref.product, ref.video_id, ref.shorts_url
    title: str | None = link[1] if link else None
    flags: set[str] = set()
    if title is not None and title_is_url(title, url):
        title = None
        flags.add("title_unknown")
    if shorts_url or (title is not None and "#shorts" in title.lower()):
        flags.add("shorts")
    channel_id: str | None = None
    channel_name: str | None = None
    for line in lines[1:]:
        for href, name in line.links:
            channel_id = channel_url_id(href)
            if channel_id is not None:
                channel_name = name
                break
        if channel_id is not None:
            break
    return WatchEvent(
        watched_at_ms=watched_at_ms,
        kind="watch",
        product=product,
        video_id=video_id,
        title=title,
        channel_id=channel_id,
        channel_name=channel_name,
        flags=frozenset(flags),
    )


def _line_column(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rfind("\n", 0, offset)
    return f"line {line}, column {column}"


def _check_complete(text: str, name: str) -> None:
    """Raise when the document ends inside its last record or before the page's closing tags.

    Raises:
        TakeoutFormatError: with the line/column where the unclosed record starts, or of the end of
            the file when ``</body>``/``</html>`` is missing.
    """
    first = text.find("content-cell")
    if first < 0:
        return  # no records at all: reported by the caller
    last = text.rfind(_OUTER_MARK)
    if last < 0:
        # A fragment without outer-cell divs: its last record part is the last content-cell div.
        last = max(text.rfind("<div", 0, text.rfind("content-cell")), 0)
    tail = text[last:]
    if len(_DIV_CLOSE_RE.findall(tail)) < len(_DIV_OPEN_RE.findall(tail)):
        raise TakeoutFormatError(
            name,
            "the file ends inside the last record (its <div> is never closed); the file is truncated or damaged",
            _line_column(text, last),
        )
    opened = {match.lower() for match in _PAGE_OPEN_RE.findall(text, 0, first)}
    for tag in ("body", "html"):
        if tag in opened and f"</{tag}" not in tail.lower():
            raise TakeoutFormatError(
                name,
                f"the document opens <{tag}> but ends without </{tag}>; the file is truncated or damaged",
                _line_column(text, len(text)),
            )


class _RecordError(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def parse_html_text(text: str, *, name: str, now_ms: int) -> ParseResult:
    """Parse the text of an HTML export (whole page or a fragment of records).

    Args:
        text: The whole file, decoded.
        name: File name used in error messages.
        now_ms: Wall-clock time when parsing started, epoch ms UTC: views more than 1 day after it
            (or before 2005) are rejected, as the backend would refuse them.

    Returns:
        A :class:`ParseResult` with source ``"takeout_html"``; instants are whole seconds (HTML has
        no milliseconds), converted with the fixed offset of the zone label (see
        :mod:`worker.takeout.html_dates`). Uses of an ambiguous label are listed in ``notes``. Records
        without a readable date, with a title link that is not a watch URL with a video id (field
        ``body``) or outside the backend's limits are in ``rejected``.

    Raises:
        TakeoutFormatError: when the document holds no ``content-cell`` records, or is cut: it ends
            inside its last record, or opens ``<html>``/``<body>`` without closing them.
    """
    _check_complete(text, name)
    tally = Tally(now_ms, _FIELDS)
    zones: Counter[str] = Counter()
    total = 0
    for index, record in enumerate(_records(text)):
        total += 1
        try:
            tally.add(index, _record(record, zones))
        except _RecordError as exc:
            tally.reject(index, exc.field, exc.reason)
    if total == 0:
        lower = text.lower()
        cut = [tag for tag in ("html", "body") if f"<{tag}" in lower and f"</{tag}" not in lower]
        if cut:
            raise TakeoutFormatError(
                name,
                f"HTML without watch-history records that opens <{cut[0]}> but ends without </{cut[0]}>; "
                "the file is truncated before its first record or damaged",
                _line_column(text, len(text)),
            )
        raise TakeoutFormatError(name, "HTML without watch-history records (no 'content-cell … body-1' divs)")
    notes = tuple(
        f"{AMBIGUOUS_LABELS[label]} in {plural(count, 'entry', 'entries')}"
        for label, count in sorted(zones.items())
        if label in AMBIGUOUS_LABELS
    )
    return build_result("takeout_html", tally.views, tally.non_views, tally.rejected, total, notes)
