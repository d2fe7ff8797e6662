"""Terminal rendering of dead letters (``python -m worker dead-letters list``)."""

from __future__ import annotations

import io

from rich.console import Console

from worker.models import ChangeEntry, DeadLetter
from worker.report import print_dead_letters

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


def render(rows: list[DeadLetter], *, width: int, limit: int = 100, user_id: str | None = None) -> str:
    console = Console(width=width, file=io.StringIO())
    print_dead_letters(rows, limit=limit, user_id=user_id, console=console)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


class TestPrintDeadLetters:
    def test_one_line_per_row_and_each_error_once(self) -> None:
        """Rows of one failed recompute share their error: it is printed once, under a reference."""
        rows = [
            letter("convex-local|alice", 1, "ValueError: bad document\nTraceback (most recent call last): ..."),
            letter("convex-local|alice", 2, "ValueError: bad document\nTraceback (most recent call last): ..."),
            letter("convex-local|bob", 7, "KeyError: 'channelId'", kind="timezone", whole=True),
        ]
        text = render(rows, width=120)
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
        assert text.count("ValueError: bad document") == 1 and "Traceback" not in text  # first line only
        assert "  #2  KeyError: 'channelId'" in text
        assert "3 dead letter(s) of 2 user(s)" in text
        assert "showing the first" not in text
        assert "after fixing the cause: python -m worker dead-letters retry\n" in text

    def test_narrow_terminal_wraps_cells_instead_of_cropping_them(self) -> None:
        """In 80 columns every field is still there in full (the range and the time wrap at their space)."""
        text = render([letter("https://issuer.example|user_2abcDEFghiJKL", 12, "boom")], width=80)
        assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
        for part in ("2023-11-14 ..", "2023-11-17", "2023-11-15", "22:13", "#1", "user_2abc"):
            assert part in text, text

    def test_a_full_page_says_more_may_exist_and_the_user_is_named(self) -> None:
        """With as many rows as the limit, the output says how to see the rest; --user-id is carried into the hint."""
        user = "convex-local|alice"
        text = render([letter(user, 1, "boom")], width=120, limit=1, user_id=user)
        assert f"Dead letters of {user}" in text
        assert "showing the first 1: pass a larger --limit" in text
        assert f"python -m worker dead-letters retry --user-id '{user}'" in text
        assert render([], width=120, user_id=user).strip() == f"no dead letters of {user}"
