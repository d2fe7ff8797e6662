"""Google Takeout watch-history parser: JSON (current and legacy 2016), HTML and zip archives.

Usage::

    result = parse_takeout_file("watch-history.json")
    result.views        # list[WatchEvent], file order
    result.non_views    # {"ad": 3, "ad_click": 1, "post": 0, "visit": 0, "story": 0, "other": 0}
    result.rejected     # [Rejection(index, field, reason)]: unreadable, bad watch URL, outside the backend limits

Format notes and the rules applied: ``docs/takeout-formats.md`` in the shared documentation.
"""

from __future__ import annotations

from worker.takeout.errors import TakeoutFormatError
from worker.takeout.parse import parse_takeout_bytes, parse_takeout_file
from worker.takeout.result import NON_VIEW_KINDS, ParseResult, ParseSource, Rejection

__all__ = [
    "NON_VIEW_KINDS",
    "ParseResult",
    "ParseSource",
    "Rejection",
    "TakeoutFormatError",
    "parse_takeout_bytes",
    "parse_takeout_file",
]
