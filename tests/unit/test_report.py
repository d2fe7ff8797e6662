"""Terminal rendering of dead letters (``python -m worker dead-letters list``) and of the demo's dashboard."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from worker.models import ChangeEntry, DeadLetter
from worker.report import print_dashboard, print_dead_letters

DAY_MS = 86_400_000
T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC


def letter(user: str, seq: int, error: str, *, kind: str = "import", whole: bool = False) -> DeadLetter:
    change = ChangeEntry(
        user_id=user,
        seq=seq,
        kind=kind,  # type: ignore[arg-type]
        from_ms=None if whole else T0,
        to_ms=None if whole else T0 + 3 * DAY_MS,
        count=40,
    )
    return DeadLetter(change=change, attempts=5, error=error, created_at_ms=T0, failed_at_ms=T0 + DAY_MS)


def render(
    rows: list[DeadLetter],
    *,
    width: int,
    limit: int = 100,
    more: bool | None = False,
    user_id: str | None = None,
    as_table: bool | None = None,
    terminal: bool = False,
) -> str:
    console = Console(width=width, file=io.StringIO(), force_terminal=terminal, color_system=None)
    print_dead_letters(rows, limit=limit, more=more, user_id=user_id, console=console, as_table=as_table)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


ALICE_ERROR = "ValueError: bad document\nTraceback (most recent call last): ..."
ROWS = [
    letter("convex-local|alice", 1, ALICE_ERROR),
    letter("convex-local|alice", 2, ALICE_ERROR),
    letter("convex-local|bob", 7, "KeyError: 'channelId'", kind="timezone", whole=True),
]


class TestPrintDeadLetters:
    def test_table_one_line_per_row_and_each_error_once(self) -> None:
        """Rows of one failed recompute share their error: it is printed once, under a reference."""
        text = render(ROWS, width=120, as_table=True)
        lines = text.splitlines()
        alice = [line.split() for line in lines if line.strip().startswith("convex-local|alice")]
        assert alice[0] == [
            "convex-local|alice",
            "1",
            "import",
            "2023-11-14",
            "..",
            "2023-11-17",
            "40",
            "2023-11-15",
            "22:13",
            "#1",
        ]
        assert alice[1][1] == "2" and alice[1][-1] == "#1"
        bob = next(line.split() for line in lines if line.strip().startswith("convex-local|bob"))
        assert bob[2:5] == ["timezone", "whole", "history"] and bob[-1] == "#2"
        assert any(line.split()[-1:] == ["error"] for line in lines)  # the header, whole
        assert text.count("ValueError: bad document") == 1 and "Traceback" not in text  # first line only
        assert "  #2  KeyError: 'channelId'" in text
        assert "3 dead letters of 2 users" in text
        assert "showing the first" not in text
        assert "after fixing the cause: python -m worker dead-letters retry\n" in text

    def test_lines_when_not_a_terminal_whatever_the_width(self) -> None:
        """Piped (not a terminal), every dead letter is one key=value line, in full even at 60 columns."""
        for width in (60, 80, 200):
            text = render(ROWS, width=width)
            lines = text.splitlines()
            assert lines[0] == "Dead letters: changes the worker failed on 5 times, no longer delivered"
            assert lines[1:4] == [
                "user=convex-local|alice seq=1 kind=import range=2023-11-14..2023-11-17 count=40"
                " failed_at=2023-11-15T22:13Z error=#1",
                "user=convex-local|alice seq=2 kind=import range=2023-11-14..2023-11-17 count=40"
                " failed_at=2023-11-15T22:13Z error=#1",
                "user=convex-local|bob seq=7 kind=timezone range=whole-history count=40"
                " failed_at=2023-11-15T22:13Z error=#2",
            ]
            assert lines[4:6] == ["last errors:", "  #1  ValueError: bad document"]
            retry = "after fixing the cause: python -m worker dead-letters retry --user-id 'convex-local|alice'"
            assert retry in render(ROWS[:1], width=width, user_id="convex-local|alice").splitlines()

    def test_terminal_gets_the_table_only_when_it_fits(self) -> None:
        """On a terminal the table is used when wide enough for it in full; narrower, the lines are."""
        user = "https://issuer.example|user_2abcDEFghiJKL"
        wide = render([letter(user, 12, "boom")], width=120, terminal=True)
        assert any(line.split()[:3] == [user, "12", "import"] for line in wide.splitlines()), wide
        narrow = render([letter(user, 12, "boom")], width=80, terminal=True)
        assert f"user={user} seq=12 kind=import range=2023-11-14..2023-11-17" in narrow, narrow
        assert "───" not in narrow

    def test_only_a_fuller_list_says_more_exist(self) -> None:
        """The hint about a larger --limit appears when more exist, never when the page holds them all."""
        user = "convex-local|alice"
        rows = [letter(user, 1, "boom")]
        text = render(rows, width=120, limit=1, more=False, user_id=user)
        assert f"Dead letters of {user}" in text and "showing the first" not in text
        assert "\n1 dead letter of 1 user\n" in text  # the count in the singular
        text = render(rows, width=120, limit=1, more=True, user_id=user)
        assert "showing the first 1: more exist; pass a larger --limit (up to 1000) or --user-id" in text
        assert f"python -m worker dead-letters retry --user-id '{user}'" in text
        text = render(rows, width=120, limit=1, more=None)
        assert "showing the first 1 (the most one call returns); more may exist" in text
        assert render([], width=120, user_id=user).strip() == f"no dead letters of {user}"


class TestPrintDashboard:
    @pytest.mark.parametrize(
        ("months", "heading"),
        [
            (["2016-10"], "Monthly views (2016-10)"),
            ([f"2023-{m:02d}" for m in range(1, 13)] + ["2024-01"], "Monthly views (2023-02 to 2024-01)"),
        ],
    )
    def test_monthly_views_name_the_months_shown(self, months: list[str], heading: str) -> None:
        """A one-month history shows one month under its own name, not under "last 12 months"."""
        trend = {"months": [{"month": m, "views": 3} for m in months]}
        dashboard = {"aggregations": [{"type": "monthly_trend", "data": trend}], "freshness": {}}
        console = Console(width=100, file=io.StringIO(), color_system=None)
        print_dashboard(dashboard, console=console)
        assert isinstance(console.file, io.StringIO)
        lines = console.file.getvalue().splitlines()
        assert heading in lines
        assert [line.split()[0] for line in lines[lines.index(heading) + 1 :] if line.startswith("  20")] == months[
            -12:
        ]
