"""Terminal rendering of a dashboard read through the public ``dashboard:getDashboard`` query."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

_SHADES = " .:-=+*#%@"
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _num(value: Any) -> str:
    """Format a Convex number: integral floats without the trailing ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _by_type(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {agg["type"]: agg for agg in dashboard.get("aggregations", [])}


def _utc(ms: float | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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
        console.print("[bold]Monthly views[/] (last 12 months)")
        for month in trend[-12:]:
            bar = "█" * round(40 * month["views"] / peak)
            console.print(f"  {month['month']}  {bar} {_num(month['views'])}")

    top = aggs.get("top_channels", {}).get("data", {})
    if top.get("channels"):
        table = Table(title="Top channels")
        for col in ("#", "channel", "views", "share"):
            table.add_column(col)
        for ch in top["channels"][:10]:
            table.add_row(
                _num(ch["rank"]), str(ch.get("channelName") or ch["channelId"]), _num(ch["views"]),
                f"{100 * ch['share']:.1f}%",
            )
        console.print(table)

    topics = aggs.get("topics_leaderboard", {}).get("data", {}).get("topics", [])
    if topics:
        console.print(
            "[bold]Topics[/]  " + ", ".join(f"{t['topic']} {100 * t['share']:.0f}%" for t in topics[:8])
        )

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
