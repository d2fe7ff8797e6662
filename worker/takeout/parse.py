"""Entry points: detect the export format by content and dispatch to the JSON or HTML reader."""

from __future__ import annotations

import errno
import io
import json
import lzma
import re
import stat
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import IO, Final

from worker.errors import plural, printable, shorten
from worker.takeout.errors import TakeoutFormatError
from worker.takeout.html_reader import parse_html_text
from worker.takeout.json_reader import json_int, json_type, parse_json_text
from worker.takeout.result import ParseResult

_ZIP_MAGIC: Final = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC: Final = b"PK\x05\x06"
"""How an archive without any member starts: its end-of-central-directory record is all there is."""
_HTML_HINT_RE: Final = re.compile(r"<(?:!doctype|html|head|body|div|p|meta)\b", re.IGNORECASE)
_SNIFF_BYTES: Final = 65_536
_WATCH_HINTS: Final = (b"watch?v\\u003d", b"watch?v=", b"youtube#playlistItem", b"youtu.be/", b"/shorts/")


def _decode(data: bytes | bytearray, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TakeoutFormatError(
            name, f"not UTF-8 text ({exc.reason}); Takeout files are UTF-8", f"byte {exc.start}"
        ) from None


def _parse_text(text: str, name: str, now_ms: int) -> ParseResult:
    """Parse a decoded JSON or HTML export; the format is told by its first characters."""
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
        value = json.loads(text, parse_int=json_int)
    except ValueError:
        return None
    return json_type(value)


_HISTORY_FILE_STEMS: Final = frozenset(
    {"watch-history", "wiedergabeverlauf", "historial-de-reproducciones", "kijkgeschiedenis"}
)
"""Documented names (without extension) of the watch-history file, lower case: en, de, es, nl."""
_MEMBER_SUFFIXES: Final = (".json", ".html", ".htm")
_SCAN_CHUNK_BYTES: Final = 65_536
_SCAN_LIMIT_BYTES: Final = 4 * 1024 * 1024
"""How far into a zip member to look for the record markers (a real HTML page has ~141 KB of CSS first)."""
_MARKER_OVERLAP: Final = max(len(marker) for marker in (b"content-cell", *_WATCH_HINTS)) - 1
_ARCHIVE_READ_ERRORS: Final = (
    zipfile.BadZipFile,  # a damaged structure, a CRC-32 that does not match, overlapping members
    zipfile.LargeZipFile,
    EOFError,  # compressed data that ends early
    OSError,  # the disk (errno set), or damaged bzip2 data
    ValueError,  # an offset before the start of the file ("negative seek value"), an undecodable member name
    zlib.error,  # damaged deflate data
    lzma.LZMAError,
    struct.error,  # a header cut short
    OverflowError,
    NotImplementedError,  # a compression method or zip version that Python cannot read
    RuntimeError,
)
"""What reading a zip archive or one of its members raises for damaged or unsupported content.

Python's :mod:`zipfile` reports damage with any of these, depending on the byte that is wrong; each
becomes one :class:`TakeoutFormatError` naming the archive (and the member)."""
_ENCRYPTED_FLAG: Final = 0x1
"""Bit 0 of a zip member's general-purpose flags: the member is encrypted."""
MAX_MEMBER_BYTES: Final = 1024**3
"""Largest decompressed size of the zip member read as the watch history, bytes (1 GiB).

The largest real watch histories are about 100-300 MB of JSON (a few hundred thousand entries;
HTML is larger per entry but holds fewer), so real exports stay well below it. A member is read whole
into memory, and a crafted archive of a few MB can inflate to many GB (a zip bomb): past this size
the member is refused, naming it, instead of exhausting the memory of the machine. The size the
archive declares is checked before reading, and the bytes are counted while they are decompressed,
so a member whose header understates its size is stopped too.
"""
_READ_CHUNK_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A zip member that may be the watch history, with the facts it is ranked by."""

    info: zipfile.ZipInfo
    has_records: bool
    named_history: bool
    in_my_activity: bool
    is_json: bool

    def rank(self) -> tuple[bool, bool, bool, bool, int, str]:
        """Sort key, best first: see :func:`_parse_zip`."""
        name = self.info.filename
        return (
            not self.has_records,
            not self.named_history,
            self.in_my_activity,
            not self.is_json,
            -self.info.file_size,
            name,
        )


def _scan_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[bool, bool]:
    """Read up to :data:`_SCAN_LIMIT_BYTES` of a member in chunks; return (is JSON, holds watch records).

    JSON means the first non-blank byte is ``[``. Watch records mean a watch URL (or legacy
    ``youtube#playlistItem``) appears, and for HTML also a ``content-cell``. Only one chunk and a few
    bytes of the previous one are held at a time, so a huge member is never read whole.
    """
    is_json: bool | None = None
    has_cell = has_hint = False
    tail = b""
    scanned = 0
    with archive.open(info) as member:
        while scanned < _SCAN_LIMIT_BYTES:
            chunk = member.read(_SCAN_CHUNK_BYTES)
            if not chunk:
                break
            scanned += len(chunk)
            if is_json is None:
                stripped = chunk.lstrip(b"\xef\xbb\xbf \t\r\n")
                if stripped:
                    is_json = stripped.startswith(b"[")
            window = tail + chunk
            has_cell = has_cell or b"content-cell" in window
            has_hint = has_hint or any(hint in window for hint in _WATCH_HINTS)
            if has_hint and (is_json or has_cell):
                break
            tail = window[-_MARKER_OVERLAP:]
    return bool(is_json), has_hint and (bool(is_json) or has_cell)


def _read_failure(exc: Exception, advice: str = "download the export again") -> str:
    """Say why an archive or a member could not be read, from what :mod:`zipfile` raised.

    Returns:
        ``damaged (Error -3 while decompressing data: …); ADVICE``, or for an error of the disk
        ``read error: Input/output error``, or for a feature :mod:`zipfile` lacks
        ``not supported here (That compression method is not supported); extract the watch-history file …``.
    """
    detail = printable(shorten(str(exc), 160)) or (
        "the compressed data ends early" if isinstance(exc, EOFError) else type(exc).__name__
    )
    if (isinstance(exc, OSError) and exc.errno == errno.EINVAL) or (isinstance(exc, ValueError) and "seek" in detail):
        detail = "an offset in it points before the start of the file"  # a seek to a negative position
    elif isinstance(exc, OSError) and exc.errno is not None:
        return f"read error: {exc.strerror or detail}"
    if isinstance(exc, NotImplementedError):
        return f"not supported here ({detail}); extract the watch-history file from the archive and give that file"
    return f"damaged ({detail}); {advice}"


def _member_path(name: str, info: zipfile.ZipInfo) -> str:
    """Return how a member is named in messages: ``archive.zip!member``, as parse errors inside it are."""
    return f"{name}!{info.filename}"


def _member_error(name: str, info: zipfile.ZipInfo, exc: Exception) -> TakeoutFormatError:
    return TakeoutFormatError(_member_path(name, info), f"cannot read archive member: {_read_failure(exc)}")


def _refuse_encrypted(info: zipfile.ZipInfo, name: str) -> None:
    """Raise when the member is encrypted: Takeout never encrypts its archives, and no password is asked for.

    Raises:
        TakeoutFormatError: path = ``archive.zip!member``.
    """
    if info.flag_bits & _ENCRYPTED_FLAG:
        raise TakeoutFormatError(
            _member_path(name, info),
            "archive member is encrypted (a password-protected zip); export again without encryption,"
            " or give the extracted file",
        )


def _is_history_name(member: str) -> bool:
    """Return whether a member's file name is a documented name of the watch-history file."""
    return PurePosixPath(member.lower()).name.rsplit(".", 1)[0] in _HISTORY_FILE_STEMS


def _candidate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> _Candidate | None:
    """Return the member as a watch-history candidate, or None when it is not one.

    A member is a candidate when it is a ``.json``/``.html``/``.htm`` file that holds watch records
    (found by content, whatever its localized name), or when its file name is a documented name of
    the watch-history file (:data:`_HISTORY_FILE_STEMS`), so that an empty or damaged history is
    reported as such rather than as missing.

    Raises:
        TakeoutFormatError: the member cannot be read (damaged, encrypted, unsupported compression).
    """
    lower = info.filename.lower()
    if info.is_dir() or not lower.endswith(_MEMBER_SUFFIXES):
        return None
    _refuse_encrypted(info, name)
    try:
        is_json, has_records = _scan_member(archive, info)
    except _ARCHIVE_READ_ERRORS as exc:
        raise _member_error(name, info, exc) from None
    named_history = _is_history_name(info.filename)
    if not has_records and not named_history:
        return None
    in_my_activity = "my activity" in lower or "myactivity" in lower
    return _Candidate(
        info,
        has_records=has_records,
        named_history=named_history,
        in_my_activity=in_my_activity,
        is_json=is_json,
    )


def _mib(size: int) -> str:
    return f"{size / 1024**2:,.1f} MiB"


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytearray:
    """Return the decompressed content of a member, at most :data:`MAX_MEMBER_BYTES` of it.

    The member is decompressed in chunks of :data:`_READ_CHUNK_BYTES` into one buffer: memory holds
    the member, never the rest of the archive.

    Raises:
        TakeoutFormatError: the member is larger than :data:`MAX_MEMBER_BYTES` (by its declared size, or
            once that many bytes have been decompressed) or cannot be read; path =
            ``archive.zip!member``.
    """
    member_path = _member_path(name, info)
    limit = f"the limit is {_mib(MAX_MEMBER_BYTES)}; real watch histories are a few hundred MB at most"
    if info.file_size > MAX_MEMBER_BYTES:
        raise TakeoutFormatError(
            member_path, f"archive member is {_mib(info.file_size)} decompressed (its declared size): {limit}"
        )
    content = bytearray()  # an encrypted member was refused as a candidate already
    try:
        with archive.open(info) as member:
            while chunk := member.read(_READ_CHUNK_BYTES):
                if len(content) + len(chunk) > MAX_MEMBER_BYTES:
                    raise TakeoutFormatError(
                        member_path, f"archive member decompresses to more than {_mib(MAX_MEMBER_BYTES)}: {limit}"
                    )
                content += chunk
    except _ARCHIVE_READ_ERRORS as exc:
        raise _member_error(name, info, exc) from None
    return content


def _parse_zip(source: IO[bytes], name: str, now_ms: int) -> ParseResult:
    """Read the watch history of a Takeout zip archive.

    The archive is read where it is (``source`` is the open file, or a buffer for bytes): only its
    list of members, the first :data:`_SCAN_LIMIT_BYTES` of each ``.json``/``.html`` member and the
    member chosen are read, so a Takeout part of many GB (with uploaded videos) costs the memory of
    its watch history alone.

    When several members are candidates (:func:`_candidate`), the choice is deterministic: a member
    whose content holds watch records before one found only by its name; a file with a documented
    name of the watch-history file (``watch-history.json``…) before any other (a copy saved under
    another name, a stray file); the YouTube history file before ``My Activity`` (which mixes
    searches, likes…); JSON before HTML; the larger file (uncompressed) first; then the path in
    code-point order. The result names the member read in :attr:`ParseResult.member` and lists the
    others in a note. A ``.json``/``.html`` member that cannot be read (damaged, encrypted) and is
    not named as the history is skipped with a note when another member is a candidate; the
    history file itself unreadable is an error.

    Raises:
        TakeoutFormatError: the archive or a member cannot be read (damaged, encrypted, unsupported),
            the archive holds no watch history, or the member is too large or not a readable export.
    """
    try:
        archive = zipfile.ZipFile(source)
    except _ARCHIVE_READ_ERRORS as exc:
        # its list of members is at the end of the file: the first part to be lost when a download stops early
        reason = _read_failure(exc, "the download may be incomplete: download the export again")
        raise TakeoutFormatError(name, f"cannot read the zip archive's list of members: {reason}") from None
    with archive:
        files = [info for info in archive.infolist() if not info.is_dir()]
        if not files:
            raise TakeoutFormatError(name, "the zip archive is empty: it holds no files, so no watch history")
        candidates: list[_Candidate] = []
        unreadable: list[TakeoutFormatError] = []
        for member in files:
            try:
                if (c := _candidate(archive, member, name)) is not None:
                    candidates.append(c)
            except TakeoutFormatError as exc:
                if _is_history_name(member.filename):
                    raise  # the history file itself is damaged or encrypted
                unreadable.append(exc)  # another file (My Activity…): what it holds is unknown
        if not candidates:
            if unreadable:
                raise unreadable[0]
            raise TakeoutFormatError(
                name,
                f"the zip archive holds no watch-history file (JSON or HTML) among its {plural(len(files), 'file')}",
            )
        candidates.sort(key=_Candidate.rank)
        info = candidates[0].info
        content = _read_member(archive, info, name)
    member_name = printable(info.filename)
    member_path = f"{name}!{member_name}"
    text = _decode(content, member_path)
    del content  # parse with the decoded text alone in memory
    result = _parse_text(text, member_path, now_ms)
    notes = result.notes
    if len(candidates) > 1:
        ignored = ", ".join(printable(c.info.filename) for c in candidates[1:])
        notes = (
            f"the archive holds {len(candidates)} watch-history files; read {member_name}, ignored: {ignored}",
            *notes,
        )
    notes = (*(f"ignored a file that cannot be read: {exc}" for exc in unreadable), *notes)
    return replace(result, member=member_name, notes=notes)


def _parse_unzipped(data: bytes, name: str, now_ms: int) -> ParseResult:
    """Parse bytes that are not a zip archive as a JSON or HTML export.

    Content decides, whatever the name; but when a file named ``*.zip`` is not a readable export
    either, the error says it is not a zip archive (an HTML page saved in place of the download,
    a damaged file) rather than why it is not JSON or HTML.

    Raises:
        TakeoutFormatError: not a readable export; for a ``.zip`` name that is not empty, the
            message is "not a zip archive" (position ``byte 0``).
    """
    try:
        return _parse_text(_decode(data, name), name, now_ms)
    except TakeoutFormatError:
        if not data or not name.lower().endswith(".zip"):
            raise
    raise TakeoutFormatError(
        name,
        "not a zip archive: it does not start with a zip signature ('PK'); the file is damaged or not"
        " the archive Takeout made",
        "byte 0",
    )


def parse_takeout_bytes(data: bytes, *, name: str, now_ms: int | None = None) -> ParseResult:
    """Parse a watch-history export given as bytes; the format is detected from the content.

    Accepted: the My Activity JSON array, the legacy 2016 ``youtube#playlistItem`` JSON array, the
    HTML page (or a fragment of its records), and a Takeout ``.zip`` archive holding one of those
    (found by content, whatever the localized file name, or by a documented file name; with several
    candidates a documented file name is preferred over any other, the YouTube history file over
    ``My Activity``, JSON over HTML, the larger over the smaller, and the member read is named in
    ``member`` and the others in a note).
    Text must be UTF-8 (a BOM is allowed).

    Views are held to the backend's input limits (``worker.models.view_problem``): empty strings
    become None, and a view dated before 2005 or more than 1 day after ``now_ms``, or with an
    over-long field, is rejected rather than returned.

    Args:
        data: The file content.
        name: Name used in error messages (usually the path); for a name ending in ``.zip`` that holds
            neither a zip archive nor a readable export, the error says it is not a zip archive.
        now_ms: Current time, epoch ms UTC, for the "not in the future" limit. None (the default)
            reads the wall clock once, when parsing starts.

    Returns:
        The :class:`ParseResult`; unreadable or out-of-limit entries, and watch entries whose URL is
        present but not a watch URL with a video id (:func:`worker.takeout.rules.classify_entry`), are
        listed in ``rejected``.

    Raises:
        TakeoutFormatError: whole-file problems (not JSON/HTML, truncated JSON or HTML, top level
            not an array, unknown record structure, not UTF-8, a ``.zip`` name on something else that
            is not an export either, a damaged zip archive or member, an encrypted member, an empty
            zip or one without a watch-history file, a zip member larger than
            :data:`MAX_MEMBER_BYTES` decompressed).
    """
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    if data.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
        return _parse_zip(io.BytesIO(data), name, now_ms)
    return _parse_unzipped(data, name, now_ms)


def _file_kind(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _cannot_read(name: str, exc: OSError) -> TakeoutFormatError:
    if isinstance(exc, FileNotFoundError):
        return TakeoutFormatError(name, "cannot read the file: no such file")
    return TakeoutFormatError(name, f"cannot read the file: {exc.strerror or exc}")


def parse_takeout_file(path: str | Path, *, now_ms: int | None = None) -> ParseResult:
    """Parse a watch-history export file (JSON, HTML or Takeout zip); see :func:`parse_takeout_bytes`.

    A zip archive is read from the file, member by member (:func:`_parse_zip`), never whole; a JSON
    or HTML file is read whole. A pipe (``<(unzip -p …)``) is read whole, whatever it holds.

    Args:
        path: The file.
        now_ms: Current time, epoch ms UTC; None reads the wall clock once, before the file is read.

    Raises:
        TakeoutFormatError: whole-file problems, including a path that is missing, is a directory,
            a device or a socket rather than a file, or cannot be read.
    """
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    name = str(path)
    try:
        mode = Path(path).stat().st_mode
    except OSError as exc:
        raise _cannot_read(name, exc) from None
    if stat.S_ISDIR(mode):
        raise TakeoutFormatError(name, "is a directory, not an export file")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise TakeoutFormatError(name, f"is a {_file_kind(mode)}, not a regular file; give the path of the export file")
    try:
        with Path(path).open("rb") as file:
            head = file.read(4)
            if not stat.S_ISREG(mode):  # a pipe: read as it comes, a zip included
                data = head + file.read()
            elif head.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
                return _parse_zip(file, name, now_ms)
            else:
                file.seek(0)
                data = file.read()
    except OSError as exc:  # opening or reading the file itself: _parse_zip reports its own read errors
        raise _cannot_read(name, exc) from None
    return parse_takeout_bytes(data, name=name, now_ms=now_ms)
