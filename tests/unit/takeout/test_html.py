"""HTML export rules: date lines and zone labels, record layouts, per-record rejections."""

from __future__ import annotations

import pytest

from worker.takeout import TakeoutFormatError, parse_takeout_bytes
from worker.takeout.html_dates import DateError, parse_html_date

VID = "Qx7Lm2Np9Ta"
CHANNEL = "UCa1b2c3d4e5f6g7h8i9j0kA"


def cell(body: str, caption: str = "<b>Products:</b><br>&emsp;YouTube<br>", header: str = "YouTube") -> str:
    return (
        '<div class="outer-cell mdl-cell mdl-cell--12-col mdl-shadow--2dp"><div class="mdl-grid">'
        '<div class="header-cell mdl-cell mdl-cell--12-col">'
        f'<p class="mdl-typography--title">{header}<br></p></div>'
        f'<div class="content-cell mdl-cell mdl-cell--6-col mdl-typography--body-1">{body}</div>'
        '<div class="content-cell mdl-cell mdl-cell--6-col mdl-typography--body-1 '
        'mdl-typography--text-right"></div>'
        '<div class="content-cell mdl-cell mdl-cell--12-col mdl-typography--caption">'
        f"{caption}</div></div></div>"
    )


def watched(date: str, title: str = "Tides &amp; Waves", channel: bool = True) -> str:
    body = f'Watched\u00a0<a href="https://www.youtube.com/watch?v={VID}">{title}</a><br>'
    if channel:
        body += f'<a href="https://www.youtube.com/channel/{CHANNEL}">Ocean Notes</a><br>'
    return body + date


def page(*cells: str) -> bytes:
    return (
        '<html><head><style>p{}</style></head><body><div class="mdl-grid">' + "".join(cells) + "</div></body></html>"
    ).encode()


class TestDateLines:
    @pytest.mark.parametrize(
        ("line", "iso_utc"),
        [
            ("Aug 15, 2025, 11:04:01\u202fAM CDT", "2025-08-15T16:04:01"),
            ("Jan 25, 2019, 8:23:48 AM GMT", "2019-01-25T08:23:48"),
            ("May 22, 2019, 2:19:17 PM EST", "2019-05-22T19:19:17"),
            ("Dec 1, 2019, 12:05:00 AM UTC", "2019-12-01T00:05:00"),
            ("Dec 1, 2019, 12:05:00 PM UTC", "2019-12-01T12:05:00"),
            ("Jun 23, 2015, 2:43:45 PM", "2015-06-23T14:43:45"),
            ("29 Nov 2021, 18:06:16 AEDT", "2021-11-29T07:06:16"),
            ("20 Apr 2021, 19:31:55 AEDT", "2021-04-20T08:31:55"),
            ("30 Sept 2021, 00:36:52 AEDT", "2021-09-29T13:36:52"),
            ("14 Dec 2019, 15:06:51 CET", "2019-12-14T14:06:51"),
            ("01.09.2022, 21:08:12 MESZ", "2022-09-01T19:08:12"),
            ("01.12.2022, 21:08:12 MEZ", "2022-12-01T20:08:12"),
            ("15 jun 2026, 20:30:41 CEST", "2026-06-15T18:30:41"),
            ("13 ago 2026, 20:30:26 CEST", "2026-08-13T18:30:26"),
            ("3 mrt 2026, 20:30:26 CET", "2026-03-03T19:30:26"),
            ("2024/01/04 10:00:00 JST", "2024-01-04T01:00:00"),
            ("2010-11-10 19:49:05 UTC", "2010-11-10T19:49:05"),
            ("Mar 3, 2024, 9:00:00\u00a0PM GMT+03:00", "2024-03-03T18:00:00"),
            ("Mar 3, 2024, 9:00:00 PM GMT-5", "2024-03-04T02:00:00"),
            ("Mar 3, 2024, 9:00:00 PM IST", "2024-03-03T15:30:00"),
        ],
    )
    def test_formats_and_fixed_offsets(self, line: str, iso_utc: str) -> None:
        """Each locale's date line converts with the label's fixed offset (no DST lookup)."""
        from datetime import UTC, datetime

        expected = int(datetime.fromisoformat(iso_utc).replace(tzinfo=UTC).timestamp() * 1000)
        parsed = parse_html_date(line)
        assert parsed is not None and parsed[0] == expected

    @pytest.mark.parametrize("label", ["GMT+99:99", "GMT+24", "GMT-15", "GMT+14:01", "UTC+05:60"])
    def test_offsets_no_zone_has_are_refused(self, label: str) -> None:
        """Past ±14:00 (Pacific/Kiritimati) or with 60 minutes: damaged, refused rather than moving the view by days."""
        with pytest.raises(DateError, match="is no UTC offset"):
            parse_html_date(f"Aug 15, 2025, 11:04:01 AM {label}")
        assert parse_html_date("Aug 15, 2025, 11:04:01 PM GMT+14") is not None
        assert parse_html_date("Aug 15, 2025, 11:04:01 PM GMT-12:00") is not None

    @pytest.mark.parametrize("line", ["Watched at 11:42\u202fPM", "Ocean Notes", "", "Episode 12, 2024"])
    def test_not_dates(self, line: str) -> None:
        """Lines that are not dates return None."""
        assert parse_html_date(line) is None

    @pytest.mark.parametrize("line", ["Aug 15, 2025, 11:04:01 AM XYZT", "Foo 15, 2025, 11:04:01 AM UTC"])
    def test_date_shaped_but_unknown(self, line: str) -> None:
        """An unknown zone label or month name raises DateError naming it."""
        with pytest.raises(DateError, match="unknown"):
            parse_html_date(line)


class TestRecords:
    def test_watch_with_trailing_br_and_entities(self) -> None:
        """Title and channel are unescaped once; a trailing <br> after the date is fine."""
        result = parse_takeout_bytes(page(cell(watched("Aug 15, 2025, 11:04:01\u202fAM CDT<br>"))), name="h")
        (view,) = result.views
        assert view.title == "Tides & Waves" and view.video_id == VID
        assert view.channel_id == CHANNEL and view.channel_name == "Ocean Notes"
        assert view.watched_at_ms == 1755273841000

    def test_date_is_found_by_pattern_not_position(self) -> None:
        """A <p> block after the date does not hide it; 'Watched at' lines are skipped."""
        body = watched("Watched at 11:42 PM<br>Aug 14, 2025, 11:42:22 PM CDT<br><p>Some AI note</p>")
        (view,) = parse_takeout_bytes(page(cell(body)), name="h").views
        assert view.watched_at_ms == 1755232942000

    def test_ad_by_details_section(self) -> None:
        """'From Google Ads' in the caption of the same record marks an ad."""
        caption = "<b>Products:</b><br>&emsp;YouTube<br><b>Details:</b><br>&emsp;From Google Ads<br>"
        result = parse_takeout_bytes(
            page(
                cell(watched("Aug 14, 2025, 11:42:22 PM CDT", channel=False), caption),
                cell(watched("Aug 14, 2025, 1:00:00 PM CDT")),
            ),
            name="h",
        )
        assert result.non_views["ad"] == 1 and len(result.views) == 1

    def test_kinds_music_removed_post_visit(self) -> None:
        """Music header, removed text, 'Viewed' post and 'Visited YouTube Music' rows."""
        date = "Jan 2, 2024, 10:00:00 AM UTC"
        result = parse_takeout_bytes(
            page(
                cell(watched(date), header="YouTube Music"),
                cell(f"Watched a video that has been removed<br>{date}"),
                cell(f'Viewed\u00a0<a href="https://www.youtube.com/post/UgkxA">Hi</a><br>{date}'),
                cell(f"Visited YouTube Music<br>{date}", header="YouTube Music"),
                cell(
                    f'Watched <a href="https://www.youtube.com/shorts/{VID}">https://www.youtube.com/shorts/{VID}</a><br>{date}'
                ),
            ),
            name="h",
        )
        assert [v.kind for v in result.views] == ["watch", "removed", "watch"]
        assert result.views[0].product == "youtube_music"
        assert result.views[2].flags == frozenset({"shorts", "title_unknown"})
        assert result.non_views["post"] == 1 and result.non_views["visit"] == 1

    def test_bad_records_rejected_others_kept(self) -> None:
        """A record without a date or with an unknown zone is rejected with its index."""
        result = parse_takeout_bytes(
            page(
                cell(watched("Jan 2, 2024, 10:00:00 AM UTC")),
                cell(watched("no date here")),
                cell(watched("Jan 2, 2024, 10:00:00 AM QQQ")),
                cell(watched("Jan 3, 2024, 10:00:00 AM UTC")),
            ),
            name="h",
        )
        assert len(result.views) == 2
        assert [(r.index, r.field) for r in result.rejected] == [(1, "date"), (2, "date")]
        assert "QQQ" in result.rejected[1].reason

    @pytest.mark.parametrize(
        ("href", "reason"),
        [
            (
                "http://example.com/x",
                "title link: not a YouTube or YouTube Music watch URL with a video id: 'http://example.com/x'",
            ),
            ("https://www.youtube.com/watch?v=abc", "title link: watch URL without a valid video id"),
        ],
    )
    def test_malformed_watch_link_is_rejected(self, href: str, reason: str) -> None:
        """A 'Watched' link that is not a watch URL with an id rejects the record (field body); others are kept."""
        date = "Jan 2, 2024, 10:00:00 AM UTC"
        result = parse_takeout_bytes(
            page(
                cell(watched(date)),
                cell(f'Watched\u00a0<a href="{href}">Tides</a><br>{date}'),
                cell(
                    f'Watched\u00a0<a href="https://www.youtube.com/watch?v=">https://www.youtube.com/watch?v=</a><br>{date}'
                ),
                cell(f"Watched a video that has been removed<br>{date}"),
            ),
            name="h",
        )
        assert [v.kind for v in result.views] == ["watch", "removed", "removed"]
        (rejection,) = result.rejected
        assert (rejection.index, rejection.field) == (1, "body")
        assert reason in rejection.reason

    def test_ambiguous_label_is_reported(self) -> None:
        """An ambiguous label (IST) uses the documented default and says so in notes."""
        result = parse_takeout_bytes(page(cell(watched("Jan 2, 2024, 10:00:00 AM IST"))), name="h")
        assert result.views[0].watched_at_ms == 1704169800000
        assert result.notes == ("IST read as India Standard Time (UTC+05:30) in 1 entry",)


class TestTruncatedFiles:
    def test_every_cut_inside_the_last_record_is_refused(self) -> None:
        """A page cut anywhere inside its last record raises TakeoutFormatError at that record's line/column."""
        first = cell(watched("Jan 2, 2024, 10:00:00 AM UTC"))
        last = cell(watched("Jan 1, 2024, 10:00:00 AM UTC"))
        data = page(first, last)
        start = len(page(first).decode()) - len("</div></body></html>")
        text = data.decode()
        for cut in range(start + len('<div class="outer-cell'), start + len(last)):
            with pytest.raises(TakeoutFormatError, match="truncated") as info:
                parse_takeout_bytes(text[:cut].encode(), name="h")
            assert info.value.position == f"line 1, column {start + 1}"

    @pytest.mark.parametrize("closing", ["", "</div>", "</div></body>"])
    def test_page_without_its_closing_tags_is_refused(self, closing: str) -> None:
        """Whole records but no </body> or </html> after them: the file was cut between records."""
        data = page(cell(watched("Jan 2, 2024, 10:00:00 AM UTC"))).removesuffix(b"</div></body></html>")
        with pytest.raises(TakeoutFormatError, match="ends without </(body|html)>") as info:
            parse_takeout_bytes(data + closing.encode(), name="h")
        assert info.value.position == f"line 1, column {len((data + closing.encode()).decode()) + 1}"

    def test_complete_page_and_fragment_are_read(self) -> None:
        """A closed page, and a fragment of closed records without page tags, both parse."""
        record = cell(watched("Jan 2, 2024, 10:00:00 AM UTC"))
        assert len(parse_takeout_bytes(page(record) + b"\n", name="h").views) == 1
        fragment = (record + "\n\n" + record + "\n").encode()
        assert len(parse_takeout_bytes(fragment, name="h").views) == 2

    def test_cut_fragment_is_refused(self) -> None:
        """A fragment (no <html>) whose last record is not closed is refused as well."""
        record = cell(watched("Jan 2, 2024, 10:00:00 AM UTC"))
        with pytest.raises(TakeoutFormatError, match="ends inside the last record"):
            parse_takeout_bytes((record + record[:-20]).encode(), name="h")
