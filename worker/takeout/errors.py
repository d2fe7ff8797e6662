"""Errors raised by the Takeout parser for problems with a whole file.

Problems with a single entry never raise: they become a
:class:`worker.takeout.result.Rejection` in the parse result.
"""

from __future__ import annotations

from worker.errors import printable


class TakeoutFormatError(Exception):
    """The file as a whole is not a readable watch-history export.

    Raised for: bytes that are neither JSON nor HTML, truncated or invalid JSON, a JSON top
    level that is not an array, an array whose entries match no known record layout, HTML
    without activity cells, text that is not UTF-8, a ``.zip`` file that is not a zip archive, a
    damaged zip archive or member (whatever :mod:`zipfile` raised), an encrypted member, an empty
    zip archive or one without a watch-history file, a zip member that decompresses past the size
    limit, and a path that is missing, a directory or a device, or cannot be read. The message is
    one line: control characters of the path, the position (a member name) and the reason are
    escaped, in the attributes too.

    Attributes:
        path: Name of the file (or ``archive.zip!member``) the problem was found in.
        position: Where in the file, in words (``"line 3, column 17"``, ``"byte 1024"``,
            ``"entry 0"``), or None when the problem concerns the whole file.
        reason: The problem without the location prefix.
    """

    def __init__(self, path: str, reason: str, position: str | None = None) -> None:
        self.path = printable(path)
        self.position = None if position is None else printable(position)
        self.reason = printable(reason)
        where = f"{self.path} ({self.position})" if self.position else self.path
        super().__init__(f"{where}: {self.reason}")
