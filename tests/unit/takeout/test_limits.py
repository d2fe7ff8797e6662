"""Backend input limits on parsed views: empty strings become None, out-of-range entries are rejected."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from worker.models import (
    MAX_FIELD_LENGTH,
    MAX_FUTURE_SKEW_MS,
    MAX_USER_ID_LENGTH,
    MIN_WATCHED_AT_MS,
    WatchEvent,
    view_problem,
)
from worker.takeout import ParseResult, parse_takeout_bytes

CHANNEL = "UCa1b2c3d4e5f6g7h8i9j0kA"
VID = "Qx7Lm2Np9Ta"
NOW_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
GOOD_MS = 1_704_492_932_104  # 2024-01-05T22:15:32.104Z


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "header": "YouTube",
        "title": "Watched How Tides Work",
        "titleUrl": f"https://www.youtube.com/watch?v={VID}",
        "subtitles": [{"name": "Ocean Notes", "url": f"https://www.youtube.com/channel/{CHANNEL}"}],
        "time": "2024-01-05T22:15:32.104Z",
        "products": ["YouTube"],
    }
    base.update(fields)
    return base


def parse(*records: Any, now_ms: int = NOW_MS) -> ParseResult:
    return parse_takeout_bytes(json.dumps(list(records)).encode(), name="watch-history.json", now_ms=now_ms)


def html_page(*bodies: str) -> bytes:
    cells = "".join(
        '<div class="outer-cell mdl-cell"><div class="mdl-grid">'
        '<div class="header-cell mdl-cell"><p class="mdl-typography--title">YouTube<br></p></div>'
        f'<div class="content-cell mdl-cell mdl-typography--body-1">{body}</div>'
        '<div class="content-cell mdl-cell mdl-typography--body-1 mdl-typography--text-right"></div>'
        '<div class="content-cell mdl-cell mdl-typography--caption"><b>Products:</b><br>&emsp;YouTube<br></div>'
        "</div></div>"
        for body in bodies
    )
    return f'<html><head></head><body><div class="mdl-grid">{cells}</div></body></html>'.encode()


def html_watch(date: str, title: str = "Tides", channel: str = "Ocean Notes") -> str:
    return (
        f'Watched\u00a0<a href="https://www.youtube.com/watch?v={VID}">{title}</a><br>'
        f'<a href="https://www.youtube.com/channel/{CHANNEL}">{channel}</a><br>{date}'
    )


class TestViewProblem:
    @pytest.mark.parametrize(
        ("event", "field"),
        [
            (WatchEvent(watched_at_ms=MIN_WATCHED_AT_MS), None),
            (WatchEvent(watched_at_ms=MIN_WATCHED_AT_MS - 1), "watched_at_ms"),
            (WatchEvent(watched_at_ms=NOW_MS + MAX_FUTURE_SKEW_MS), None),
            (WatchEvent(watched_at_ms=NOW_MS + MAX_FUTURE_SKEW_MS + 1), "watched_at_ms"),
            (WatchEvent(watched_at_ms=GOOD_MS, title=""), "title"),
            (WatchEvent(watched_at_ms=GOOD_MS, channel_name=""), "channel_name"),
            (WatchEvent(watched_at_ms=GOOD_MS, title="t" * 1000), None),
            (WatchEvent(watched_at_ms=GOOD_MS, title="t" * 1001), "title"),
            (WatchEvent(watched_at_ms=GOOD_MS, title="\U0001f600" * 500), None),
            (WatchEvent(watched_at_ms=GOOD_MS, title="\U0001f600" * 501), "title"),
            (WatchEvent(watched_at_ms=GOOD_MS, channel_name="c" * 1001), "channel_name"),
            (WatchEvent(watched_at_ms=GOOD_MS, channel_id="U" * 129), "channel_id"),
            (WatchEvent(watched_at_ms=GOOD_MS, video_id="v" * 65), "video_id"),
            (WatchEvent(watched_at_ms=GOOD_MS, flags=frozenset(str(i) for i in range(9))), "flags"),
            (WatchEvent(watched_at_ms=GOOD_MS, title="Tides \ud83d"), "title"),
            (WatchEvent(watched_at_ms=GOOD_MS, channel_name="\udc00"), "channel_name"),
            (WatchEvent(watched_at_ms=GOOD_MS, title="Tides \U0001f600"), None),
        ],
    )
    def test_limits_mirror_validate_event(self, event: WatchEvent, field: str | None) -> None:
        """Bounds are inclusive; lengths count UTF-16 units like JavaScript (an emoji counts 2)."""
        problem = view_problem(event, now_ms=NOW_MS)
        assert (problem[0] if problem else None) == field

    def test_limits_values(self) -> None:
        """The constants are those of convex/watchEvents.ts."""
        assert MIN_WATCHED_AT_MS == 1_104_537_600_000  # Date.UTC(2005, 0, 1)
        assert MAX_FUTURE_SKEW_MS == 86_400_000
        assert dict(MAX_FIELD_LENGTH) == {"video_id": 64, "title": 1000, "channel_id": 128, "channel_name": 1000}

    def test_user_id_limit_is_the_one_of_convex_users(self) -> None:
        """The CLI refuses a --user-id the deployment would refuse: the bound of requireUserIdArg."""
        source = (Path(__file__).resolve().parents[3] / "convex" / "users.ts").read_text(encoding="utf-8")
        match = re.search(r"^export const MAX_USER_ID_LENGTH = (\d+);$", source, flags=re.MULTILINE)
        assert match is not None, "MAX_USER_ID_LENGTH not found in convex/users.ts"
        assert int(match.group(1)) == MAX_USER_ID_LENGTH


class TestJsonLimits:
    def test_empty_channel_name_is_no_name(self) -> None:
        """subtitles[0].name "" keeps the channel id, with no name; the view is imported."""
        result = parse(record(subtitles=[{"name": "", "url": f"https://www.youtube.com/channel/{CHANNEL}"}]))
        (view,) = result.views
        assert view.channel_id == CHANNEL and view.channel_name is None
        assert result.rejected == []

    def test_empty_title_is_unknown_title(self) -> None:
        """A title that is only the verb gives title None and the title_unknown flag."""
        (view,) = parse(record(title="Watched  ")).views
        assert view.title is None and "title_unknown" in view.flags and view.video_id == VID

    def test_out_of_range_entries_rejected_others_kept(self) -> None:
        """Times before 2005 or more than a day after now, and over-long fields, reject only their entry."""
        result = parse(
            record(),
            record(time="2004-12-31T23:59:59.999Z"),
            record(time="2025-01-02T00:00:00.001Z"),
            record(title="Watched " + "t" * 1001),
            record(subtitles=[{"name": "c" * 1001, "url": f"https://www.youtube.com/channel/{CHANNEL}"}]),
            record(time="2005-01-01T00:00:00Z"),
            record(time="2025-01-02T00:00:00Z", title="Watched " + "t" * 1000),
        )
        assert [(r.index, r.field) for r in result.rejected] == [
            (1, "time"),
            (2, "time"),
            (3, "title"),
            (4, "subtitles[0].name"),
        ]
        assert "before 2005-01-01" in result.rejected[0].reason
        assert "future" in result.rejected[1].reason
        assert "1001" in result.rejected[2].reason
        assert [v.watched_at_ms for v in result.views] == [GOOD_MS, MIN_WATCHED_AT_MS, NOW_MS + MAX_FUTURE_SKEW_MS]
        assert result.total_entries == 7

    def test_channel_fields_are_named_by_their_path(self) -> None:
        """An over-long channel name is reported as subtitles[0].name, the field it is read from."""
        long_name = [{"name": "c" * 1001, "url": f"https://www.youtube.com/channel/{CHANNEL}"}]
        result = parse(record(), record(subtitles=long_name))
        assert [str(r) for r in result.rejected] == [
            "entry 1: subtitles[0].name: is 1001 characters (UTF-16 units); at most 1000 are allowed"
        ]

    @pytest.mark.parametrize(
        ("time", "shown"),
        [
            ("0005-01-01T00:00:00Z", "0005-01-01T00:00:00Z is before 2005-01-01T00:00:00Z"),
            ("0999-12-31T23:59:59Z", "0999-12-31T23:59:59Z is before 2005-01-01T00:00:00Z"),
            ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z is more than 1 day in the future"),
        ],
    )
    def test_dates_in_reasons_have_four_digit_years(self, time: str, shown: str) -> None:
        """Years before 1000 keep their zero padding in the message, as ISO 8601 writes them."""
        (rejection,) = parse(record(time=time)).rejected
        assert rejection.field == "time" and rejection.reason.startswith(shown), rejection.reason

    def test_removed_view_time_is_checked(self) -> None:
        """A removed view dated before 2005 is rejected too."""
        result = parse(
            record(title="Watched a video that has been removed", titleUrl=None, time="1970-01-01T00:00:00Z")
        )
        assert result.views == [] and [(r.index, r.field) for r in result.rejected] == [(0, "time")]

    def test_legacy_field_names(self) -> None:
        """Legacy 2016 entries name their own fields in rejections."""
        entry = {
            "kind": "youtube#playlistItem",
            "snippet": {"publishedAt": "2004-06-01T00:00:00Z", "title": "Old"},
            "contentDetails": {"videoId": VID},
        }
        result = parse(entry)
        assert [(r.index, r.field) for r in result.rejected] == [(0, "snippet.publishedAt")]

    def test_wall_clock_is_the_default_now(self) -> None:
        """Without now_ms, a view dated in 2999 is in the future."""
        data = json.dumps([record(time="2999-01-01T00:00:00Z")]).encode()
        result = parse_takeout_bytes(data, name="f")
        assert [r.field for r in result.rejected] == ["time"]


class TestHtmlLimits:
    def test_empty_title_and_channel_name(self) -> None:
        """An empty link text is an unknown title; an empty channel link text is no channel name."""
        result = parse_takeout_bytes(
            html_page(html_watch("Jan 2, 2024, 10:00:00 AM UTC", title="", channel="")), name="h", now_ms=NOW_MS
        )
        (view,) = result.views
        assert view.title is None and "title_unknown" in view.flags
        assert view.channel_id == CHANNEL and view.channel_name is None

    def test_out_of_range_entries_rejected_others_kept(self) -> None:
        """A date before 2005 or after now + 1 day, or a long title, rejects its record only."""
        result = parse_takeout_bytes(
            html_page(
                html_watch("Dec 31, 2004, 11:59:59 PM UTC"),
                html_watch("Jan 2, 2024, 10:00:00 AM UTC"),
                html_watch("Jan 3, 2025, 10:00:00 AM UTC"),
                html_watch("Jan 2, 2024, 10:00:00 AM UTC", title="t" * 1001),
            ),
            name="h",
            now_ms=NOW_MS,
        )
        assert [(r.index, r.field) for r in result.rejected] == [(0, "date"), (2, "date"), (3, "body")]
        assert len(result.views) == 1 and result.total_entries == 4
