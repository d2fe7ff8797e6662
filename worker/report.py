"""Terminal rendering of a dashboard read through the public ``dashboard:getDashboard`` query."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from worker.errors import plural, shorten
from worker.models import DeadLetter

_SHADES = " .:-=+*#%@"
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _num(value: Any) -> str:
    """Format a Convex number: integral floats without the trailing ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _by_type(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {agg["type"]: agg for agg in dashboard.get("aggregations", [])}


def _utc(ms: float | None, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    """Format an epoch-ms instant in UTC with ``fmt`` (``strftime``), or "-" for None."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime(fmt)


ERROR_PREVIEW_CHARS = 300
"""Characters of a dead letter's last error shown by :func:`print_dead_letters` (its first line)."""


def _error_preview(error: str) -> str:
    """The first non-empty line of ``error``, at most :data:`ERROR_PREVIEW_CHARS` characters."""
    line = next((part.strip() for part in error.splitlines() if part.strip()), "(no error text)")
    return shorten(line, ERROR_PREVIEW_CHARS)


def print_dead_letters(
    rows: list[DeadLetter],
    *,
    limit: int,
    more: bool | None = False,
    user_id: str | None = None,
    console: Console,
    as_table: bool | None = None,
) -> None:
    """Print dead letters as a table or one record per line, then their distinct last errors, then what to do next.

    One row per dead letter (user, seq, kind, affected range, count, when it was dead-lettered, and a
    reference to its error); the errors follow once each, since the rows of one failed recompute
    share the same error. The table is used only on a terminal wide enough for it (its natural width,
    about 100 columns); piped, redirected or in a narrower terminal every dead letter is one line of
    ``key=value`` fields (``user=… seq=… kind=… range=…..… count=… failed_at=…Z error=#1``), which
    no width can cut and ``grep``/``awk`` can read. No line is wrapped or cropped at the console width.

    Args:
        rows: As ``admin:listDeadLetters`` returns them (by user, then seq), at most ``limit``.
        limit: The most rows asked for.
        more: True when more dead letters exist than were shown, None when that is unknown (a full
            page at the largest limit), False when these are all.
        user_id: The user they were filtered on, or None.
        console: Where to print.
        as_table: Force the table (True) or the lines (False); None decides from ``console`` as above.
    """
    of_user = f" of {user_id}" if user_id else ""

    def line(message: str) -> None:
        console.print(message, highlight=False, markup=False, soft_wrap=True)

    if not rows:
        line(f"no dead letters{of_user}")
        return
    attempts = sorted({row.attempts for row in rows})
    times = str(attempts[0]) if len(attempts) == 1 else f"{attempts[0]}-{attempts[-1]}"
    title = f"Dead letters{of_user}: changes the worker failed on {times} times, no longer delivered"
    errors: dict[str, str] = {}  # preview -> reference, in order of first appearance
    records: list[tuple[DeadLetter, tuple[str, str] | None, str]] = []
    for row in rows:
        change = row.change
        ref = errors.setdefault(_error_preview(row.error), f"#{len(errors) + 1}")
        whole = change.from_ms is None or change.to_ms is None
        days = None if whole else (_utc(change.from_ms, "%Y-%m-%d"), _utc(change.to_ms, "%Y-%m-%d"))
        records.append((row, days, ref))

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("user", no_wrap=True)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("range (UTC)", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("failed at (UTC)", no_wrap=True)
    table.add_column("error", no_wrap=True)
    for row, days, ref in records:
        change = row.change
        span = "whole history" if days is None else f"{days[0]} .. {days[1]}"
        table.add_row(
            change.user_id,
            str(change.seq),
            change.kind,
            span,
            str(change.count),
            _utc(row.failed_at_ms, "%Y-%m-%d %H:%M"),
            ref,
        )
    if as_table is None:
        natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
        as_table = console.is_terminal and natural <= console.width

    line(title)
    if as_table:
        console.print(table, highlight=False)
    else:
        for row, days, ref in records:
            change = row.change
            span = "whole-history" if days is None else f"{days[0]}..{days[1]}"
            line(
                f"user={change.user_id} seq={change.seq} kind={change.kind} range={span} count={change.count}"
                f" failed_at={_utc(row.failed_at_ms, '%Y-%m-%dT%H:%MZ')} error={ref}"
            )
    line("last errors:")
    for preview, ref in errors.items():
        line(f"  {ref}  {preview}")
    users = len({row.change.user_id for row in rows})
    line(f"{plural(len(rows), 'dead letter')} of {plural(users, 'user')}")
    if more is None:
        line(f"showing the first {limit} (the most one call returns); more may exist: pass --user-id to narrow")
    elif more:
        line(f"showing the first {limit}: more exist; pass a larger --limit (up to 1000) or --user-id to see them")
    retry = "python -m worker dead-letters retry" + (f" --user-id '{user_id}'" if user_id else "")
    line(f"after fixing the cause: {retry}")


def print_dashboard(dashboard: dict[str, Any] | None, *, console: Console) -> None:
    """Print KPIs, freshness, monthly trend, top channels, topics, the heatmap and viewing patterns.

    Args:
        dashboard: The value of ``dashboard:getDashboard`` (None when the caller has no data).
        console: Where to print.
    """
    if not dashboard or not dashboard.get("aggregations"):
        console.print("[yellow]no aggregations stored yet for this user[/]")
        return
    aggs = _by_type(dashboard)
    fresh = dashboard.get("freshness", {})
    state = "[red]stale[/]" if fresh.get("stale") else "[green]fresh[/]"
    console.rule(f"Dashboard {dashboard.get('filterKey')} — {state}")
    console.print(
        f"computed at {_utc(fresh.get('computedAtMs'))}, watermark {_num(fresh.get('watermark'))}, "
        f"last change {_num(fresh.get('lastSeq'))}, pending changes {_num(fresh.get('pendingChanges'))}",
        soft_wrap=True,
    )

    kpi = aggs.get("kpi", {}).get("data", {})
    if kpi:
        table = Table(title="KPIs", show_header=False)
        for label, key in (
            ("views", "views"),
            ("unique videos", "uniqueVideos"),
            ("unique channels", "uniqueChannels"),
            ("active days", "activeDays"),
            ("estimated watch time (h, estimate)", "estimatedWatchTimeMinutes"),
        ):
            value = kpi.get(key)
            if key == "estimatedWatchTimeMinutes" and value is not None:
                value = f"{value / 60:.0f}"
            table.add_row(label, _num(value))
        console.print(table)

    trend = aggs.get("monthly_trend", {}).get("data", {}).get("months", [])
    if trend:
        peak = max(m["views"] for m in trend) or 1
        shown = trend[-12:]  # the latest 12 months of the series (fewer for a shorter history)
        span = shown[0]["month"] if len(shown) == 1 else f"{shown[0]['month']} to {shown[-1]['month']}"
        console.print(f"[bold]Monthly views[/] ({span})")
        for month in shown:
            bar = "█" * round(40 * month["views"] / peak)
            console.print(f"  {month['month']}  {bar} {_num(month['views'])}")

    top = aggs.get("top_channels", {}).get("data", {})
    if top.get("channels"):
        table = Table(title="Top channels")
        for col in ("#", "channel", "views", "share"):
            table.add_column(col)
        for ch in top["channels"][:10]:
            table.add_row(
                _num(ch["rank"]),
                str(ch.get("channelName") or ch["channelId"]),
                _num(ch["views"]),
                f"{100 * ch['share']:.1f}%",
            )
        console.print(table)

    topics = aggs.get("topics_leaderboard", {}).get("data", {}).get("topics", [])
    if topics:
        console.print("[bold]Topics[/]  " + ", ".join(f"{t['topic']} {100 * t['share']:.0f}%" for t in topics[:8]))

    cells = aggs.get("day_time_heatmap", {}).get("data", {}).get("cells")
    if cells:
        peak = max(max(row) for row in cells) or 1
        console.print("[bold]Day × hour[/] (user's time zone; 0h … 23h)")
        for name, row in zip(_WEEKDAYS, cells, strict=False):
            line = "".join(_SHADES[min(9, round(9 * v / peak))] * 2 for v in row)
            console.print(f"  {name} |{line}|")

    sessions = aggs.get("session_analysis", {}).get("data", {})
    if sessions:
        console.print(
            f"[bold]Sessions[/] {_num(sessions.get('sessionCount'))} "
            f"(views per session: median {_num(sessions.get('medianViews'))}, max {_num(sessions.get('maxViews'))})"
        )
    labels = aggs.get("viewing_patterns", {}).get("data", {}).get("labels", [])
    matched = [lab["label"] for lab in labels if lab.get("matched")]
    if labels:
        console.print("[bold]Viewing patterns[/] " + (", ".join(matched) or "none matched"))
