"""Entry points: detect the export format by content and dispatch to the JSON or HTML reader."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Final

from worker.takeout.errors import TakeoutFormatError
from worker.takeout.html_reader import parse_html_text
from worker.takeout.json_reader import parse_json_text
from worker.takeout.result import ParseResult

_ZIP_MAGIC: Final = b"PK\x03\x04"
_HTML_HINT_RE: Final = re.compile(r"<(?:!doctype|html|head|body|div|p|meta)\b", re.IGNORECASE)
_SNIFF_BYTES: Final = 65_536
_WATCH_HINTS: Final = (b"watch?v\\u003d", b"watch?v=", b"youtube#playlistItem", b"youtu.be/", b"/shorts/")


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TakeoutFormatError(
            name, f"not UTF-8 text ({exc.reason}); Takeout files are UTF-8", f"byte {exc.start}"
        ) from None


def _parse_text(data: bytes, name: str, now_ms: int) -> ParseResult:
    text = _decode(data, name)
    head = text[:4096].lstrip()
    if head.startswith(("[", "{")):
        return parse_json_text(text, name=name, now_ms=now_ms)
    if _HTML_HINT_RE.search(text[:_SNIFF_BYTES]) or "content-cell" in text[: _SNIFF_BYTES * 4]:
        return parse_html_text(text, name=name, now_ms=now_ms)
    if not head:
        raise TakeoutFormatError(name, "the file is empty")
    scalar = _json_scalar_kind(text)
    if scalar is not None:
        raise TakeoutFormatError(name, f"expected a JSON array of records at the top level, got a JSON {scalar}")
    raise TakeoutFormatError(name, "neither JSON nor HTML: not a watch-history export", "byte 0")


def _json_scalar_kind(text: str) -> str | None:
    """Return "null", "boolean", "number" or "string" when ``text`` is one JSON scalar, else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, int | float) else "string"


def _member_rank(info: zipfile.ZipInfo, head: bytes) -> tuple[int, int, int] | None:
    """Rank a zip member as a watch-history candidate by its content; None when it is not one."""
    lower = info.filename.lower()
    if info.is_dir() or not lower.endswith((".json", ".html", ".htm")):
        return None
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    is_json = stripped.startswith(b"[")
    is_html = b"content-cell" in head
    if not (is_json or is_html) or not any(hint in head for hint in _WATCH_HINTS):
        return None
    in_my_activity = "my activity" in lower or "myactivity" in lower
    # Prefer the YouTube history file over My Activity (which mixes searches, likes…), JSON over HTML.
    return (0 if in_my_activity else 1, 1 if is_json else 0, info.file_size)


def _parse_zip(data: bytes, name: str, now_ms: int) -> ParseResult:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise TakeoutFormatError(name, f"damaged zip archive: {exc}") from None
    with archive:
        best: tuple[tuple[int, int, int], zipfile.ZipInfo] | None = None
        for info in archive.infolist():
            try:
                with archive.open(info) as member:
                    head = member.read(_SNIFF_BYTES)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                raise TakeoutFormatError(name, f"cannot read archive member: {exc}", info.filename) from None
            rank = _member_rank(info, head)
            if rank is not None and (best is None or rank > best[0]):
                best = (rank, info)
        if best is None:
            raise TakeoutFormatError(name, "the zip archive holds no watch-history file (JSON or HTML)")
        info = best[1]
        try:
            content = archive.read(info)
        except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
            raise TakeoutFormatError(name, f"cannot read archive member: {exc}", info.filename) from None
    return _parse_text(content, f"{name}!{info.filename}", now_ms)


def parse_takeout_bytes(data: bytes, *, name: str, now_ms: int | None = None) -> ParseResult:
    """Parse a watch-history export given as bytes; the format is detected from the content.

    Accepted: the My Activity JSON array, the legacy 2016 ``youtube#playlistItem`` JSON array, the
    HTML page (or a fragment of its records), and a Takeout ``.zip`` archive holding one of those
    (chosen by content, not by the localized file name; the YouTube history file is preferred over
    ``My Activity``, JSON over HTML). Text must be UTF-8 (a BOM is allowed).

    Views are held to the backend's input limits (``worker.models.view_problem``): empty strings
    become None, and a view dated before 2005 or more than 1 day after ``now_ms``, or with an
    over-long field, is rejected rather than returned.

    Args:
        data: The file content.
        name: Name used in error messages (usually the path).
        now_ms: Current time, epoch ms UTC, for the "not in the future" limit. None (the default)
            reads the wall clock once, when parsing starts.

    Returns:
        The :class:`ParseResult`; unreadable or out-of-limit entries, and watch entries whose URL is
        present but not a watch URL with a video id (:func:`worker.takeout.rules.classify_entry`), are
        listed in ``rejected``.

    Raises:
        TakeoutFormatError: whole-file problems (not JSON/HTML, truncated JSON or HTML, top level
            not an array, unknown record structure, not UTF-8, zip without a watch-history file).
    """
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    if data.startswith(_ZIP_MAGIC):
        return _parse_zip(data, name, now_ms)
    return _parse_text(data, name, now_ms)


def parse_takeout_file(path: str | Path, *, now_ms: int | None = None) -> ParseResult:
    """Parse a watch-history export file (JSON, HTML or Takeout zip); see :func:`parse_takeout_bytes`.

    Args:
        path: The file.
        now_ms: Current time, epoch ms UTC; None reads the wall clock once, before the file is read.

    Raises:
        TakeoutFormatError: whole-file problems, including a path that is missing, is a directory
            or cannot be read.
    """
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    name = str(path)
    if Path(path).is_dir():
        raise TakeoutFormatError(name, "is a directory, not an export file")
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TakeoutFormatError(name, "cannot read the file: no such file") from None
    except OSError as exc:
        raise TakeoutFormatError(name, f"cannot read the file: {exc.strerror or exc}") from None
    return parse_takeout_bytes(data, name=name, now_ms=now_ms)
