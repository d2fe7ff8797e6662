"""Check a Takeout export without importing it: ``python -m worker.takeout FILE [FILE …]``.

Prints, per file, the format (and for a zip archive the member read), the counts of views,
non-views and rejected entries, the covered range (UTC) and the parse throughput; then the notes
and the first rejections, formatted as ``python -m worker import`` prints them
(``entry 5: time: missing``). A file that ``import`` would refuse because it holds no view gets a
``nothing to import: REASON`` line with the reason ``import`` gives.

Exit codes: 0 when every file holds at least one view to import; 1 when every file was readable but
at least one holds no view (``import`` would refuse it); 2 for a usage error or when a file could
not be read (missing, a directory or a device, unreadable, or not a readable export, a damaged zip included:
:class:`~worker.takeout.errors.TakeoutFormatError`), after one ``error: PATH: reason`` line on
stderr per such file. 2 takes precedence over 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from worker.errors import plural
from worker.models import iso_utc
from worker.takeout import TakeoutFormatError, parse_takeout_file

_SHOWN_REJECTIONS = 10


def _utc(ms: int | None) -> str:
    return "-" if ms is None else iso_utc(ms)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse each file named in ``argv`` and print a summary; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m worker.takeout",
        description="Check Takeout watch-history exports (JSON, HTML or zip) without importing them.",
    )
    parser.add_argument("paths", nargs="+", metavar="FILE", help="export file to check")
    paths: list[str] = parser.parse_args(sys.argv[1:] if argv is None else list(argv)).paths
    unreadable = nothing_to_import = False
    for path in paths:
        started = time.perf_counter()
        try:
            result = parse_takeout_file(path)
        except TakeoutFormatError as exc:
            print(f"error: {exc}", file=sys.stderr)
            unreadable = True
            continue
        elapsed_s = max(time.perf_counter() - started, 1e-9)
        non_views = ", ".join(f"{kind} {count}" for kind, count in result.non_views.items() if count)
        label = f"{path}: {result.member}" if result.member else path
        print(
            f"{label}: {result.source}, {plural(result.total_entries, 'entry', 'entries')},"
            f" {plural(len(result.views), 'view')}, "
            f"non-views: {non_views or 'none'}, rejected {len(result.rejected)}, "
            f"range {_utc(result.first_ms)} .. {_utc(result.last_ms)}, "
            f"{elapsed_s:.2f} s ({result.total_entries / elapsed_s:,.0f} entries/s)"
        )
        for note in result.notes:
            print(f"  note: {note}")
        for rejection in result.rejected[:_SHOWN_REJECTIONS]:
            print(f"  rejected: {rejection}")
        if len(result.rejected) > _SHOWN_REJECTIONS:
            print(f"  … and {plural(len(result.rejected) - _SHOWN_REJECTIONS, 'more rejection')}")
        reason = result.no_view_reason()
        if reason is not None:
            print(f"  nothing to import: {reason}")
            nothing_to_import = True
    return 2 if unreadable else 1 if nothing_to_import else 0


if __name__ == "__main__":
    raise SystemExit(main())
