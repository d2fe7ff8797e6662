"""JSON export rules: record kinds, ids, locales, per-entry rejections and whole-file errors."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from worker.takeout import ParseResult, Rejection, TakeoutFormatError, parse_takeout_bytes, parse_takeout_file

CHANNEL = "UCa1b2c3d4e5f6g7h8i9j0kA"
VID = "Qx7Lm2Np9Ta"


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "header": "YouTube",
        "title": "Watched How Tides Work",
        "titleUrl": f"https://www.youtube.com/watch?v={VID}",
        "subtitles": [{"name": "Ocean Notes", "url": f"https://www.youtube.com/channel/{CHANNEL}"}],
        "time": "2024-01-05T22:15:32.104Z",
        "products": ["YouTube"],
        "activityControls": ["YouTube watch history"],
    }
    for key, value in fields.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def parse(*records: Any) -> ParseResult:
    return parse_takeout_bytes(json.dumps(list(records)).encode(), name="watch-history.json")


def zip_bytes(members: dict[str, str]) -> bytes:
    """A deflated zip archive of text members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def declare_size(data: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size that a one-member archive declares (local header and central directory)."""
    out = bytearray(data)
    local, central = out.index(b"PK\x03\x04"), out.index(b"PK\x01\x02")
    out[local + 22 : local + 26] = struct.pack("<I", size)
    out[central + 24 : central + 28] = struct.pack("<I", size)
    return bytes(out)


class TestViews:
    def test_plain_watch(self) -> None:
        """A watch gives id, stripped title, channel id and name, ms instant."""
        result = parse(record())
        (view,) = result.views
        assert view.video_id == VID
        assert view.title == "How Tides Work"
        assert view.channel_id == CHANNEL and view.channel_name == "Ocean Notes"
        assert view.watched_at_ms == 1704492932104
        assert view.kind == "watch" and view.product == "youtube"

    def test_gson_escapes_are_decoded(self) -> None:
        """\\u003d, \\u0026 and \\u0027 in the raw text are undone by the JSON decoder."""
        raw = (
            '[{"header": "YouTube", "title": "Watched Tom\\u0027s Q\\u0026A", '
            '"titleUrl": "https://www.youtube.com/watch?v\\u003dQx7Lm2Np9Ta", '
            '"time": "2024-01-05T22:15:32Z"}]'
        )
        (view,) = parse_takeout_bytes(raw.encode(), name="x.json").views
        assert view.title == "Tom's Q&A" and view.video_id == VID
        assert view.watched_at_ms == 1704492932000

    @pytest.mark.parametrize(
        ("time", "expected"),
        [
            ("2020-01-01T13:11:02Z", 1577884262000),
            ("2020-01-01T13:11:02.5Z", 1577884262500),
            ("2020-01-01T13:11:02.123456Z", 1577884262123),
            ("2020-01-01T14:11:02.000+01:00", 1577884262000),
        ],
    )
    def test_times_with_and_without_milliseconds(self, time: str, expected: int) -> None:
        """Instants parse with or without a fraction, with Z or an offset."""
        assert parse(record(time=time)).views[0].watched_at_ms == expected

    @pytest.mark.parametrize(
        ("url", "video_id", "shorts"),
        [
            (f"https://youtu.be/{VID}", VID, False),
            (f"https://www.youtube.com/shorts/{VID}", VID, True),
            (f"https://www.youtube.com/live/{VID}?si=x", VID, False),
            (f"http://m.youtube.com/watch?feature=share&v={VID}&t=10", VID, False),
            ("https://www.youtube.com/watch?v=-e8Nfjl_AKk", "-e8Nfjl_AKk", False),
        ],
    )
    def test_url_forms(self, url: str, video_id: str, shorts: bool) -> None:
        """Ids come from watch?v=, youtu.be/, /shorts/ and /live/; /shorts/ sets the shorts flag."""
        (view,) = parse(record(titleUrl=url)).views
        assert view.video_id == video_id
        assert ("shorts" in view.flags) is shorts

    def test_shorts_hashtag_in_title(self) -> None:
        """'#shorts' in the title flags a Short even with a watch?v= URL."""
        assert parse(record(title="Watched Cat jumps #Shorts")).views[0].flags == frozenset({"shorts"})

    def test_music_by_header_or_host(self) -> None:
        """The 'YouTube Music' header or the music.youtube.com host makes a youtube_music view."""
        by_header = parse(record(header="YouTube Music")).views[0]
        by_host = parse(record(titleUrl=f"https://music.youtube.com/watch?v={VID}")).views[0]
        assert by_header.product == by_host.product == "youtube_music"

    def test_title_is_url(self) -> None:
        """'Watched <url>' without subtitles → title None, flag title_unknown, id kept."""
        url = f"https://www.youtube.com/watch?v={VID}"
        (view,) = parse(record(title=f"Watched {url}", titleUrl=url, subtitles=None)).views
        assert view.title is None and view.video_id == VID and view.channel_id is None
        assert view.flags == frozenset({"title_unknown"})

    def test_removed_and_blank_id_are_removed(self) -> None:
        """The removed-video title without a URL and a watch URL with an empty v are kind removed."""
        result = parse(
            record(title="Watched a video that has been removed", titleUrl=None, subtitles=None),
            record(titleUrl="https://www.youtube.com/watch?v="),
        )
        assert [v.kind for v in result.views] == ["removed", "removed"]
        assert all(v.video_id is None and v.title is None and v.channel_id is None for v in result.views)

    def test_channel_only_from_a_channel_url(self) -> None:
        """Subtitles without a /channel/UC… url give no channel."""
        (view,) = parse(record(subtitles=[{"name": "Someone", "url": "https://www.youtube.com/@someone"}])).views
        assert view.channel_id is None and view.channel_name is None

    @pytest.mark.parametrize(
        ("title", "expected"),
        [
            ("Wie Gezeiten funktionieren angesehen", "Wie Gezeiten funktionieren"),
            ("Vous avez regardé Les marées", "Les marées"),
            ("Je hebt naar Getijden gekeken", "Getijden"),
            ("潮の仕組み を視聴しました", "潮の仕組み"),
            ("Has visto Las mareas", "Las mareas"),
            ("Gezeiten erklärt (unbekannte Sprache)", "Gezeiten erklärt (unbekannte Sprache)"),
        ],
    )
    def test_localized_verbs(self, title: str, expected: str) -> None:
        """Known verbs are stripped (prefix, suffix or both); an unknown locale keeps the full title."""
        (view,) = parse(record(title=title)).views
        assert view.title == expected and view.video_id == VID


class TestNonViews:
    def test_kinds(self) -> None:
        """Ads (en and ja markers), ad clicks, posts, visits, stories and other activity are counted."""
        ads = [{"name": "From Google Ads"}]
        result = parse(
            record(details=ads, subtitles=None),
            record(details=[{"name": "Google 広告から"}], subtitles=None),
            record(title="Visited https://ads.example", titleUrl="https://www.google.com/url?q=x", details=ads),
            record(title="Viewed Hello", titleUrl="https://www.youtube.com/post/UgkxAbc"),
            record(
                title="Visited YouTube Music",
                titleUrl=None,
                subtitles=[{"name": "Temperature: Warm"}, {"name": "Weather: Partly cloudy"}],
            ),
            record(title="チャンネル のストーリーを視聴しました", titleUrl=None, subtitles=None),
            record(title="Searched for tides", titleUrl="https://www.youtube.com/results?search_query=tides"),
            record(title="Liked How Tides Work"),
        )
        assert result.views == []
        assert result.non_views == {"ad": 2, "ad_click": 1, "post": 1, "visit": 1, "story": 1, "other": 2}
        assert result.total_entries == 8
        assert result.first_ms is None and result.last_ms is None


class TestRejections:
    @pytest.mark.parametrize("offset", ["+99:00", "-99:99", "+24:00", "+9999", "+14:01", "+05:60"])
    def test_offset_no_zone_has_rejects_the_entry(self, offset: str) -> None:
        """An offset past ±14:00 or with 60 minutes is damaged: the entry is rejected on its time, not
        imported days off; the real extremes pass."""
        result = parse(record(time=f"2024-01-01T00:00:00{offset}"), record(time="2024-01-01T00:00:00+14:00"))
        assert [(r.index, r.field) for r in result.rejected] == [(0, "time")]
        assert "is no UTC offset (at most ±14:00)" in result.rejected[0].reason
        assert [v.watched_at_ms for v in result.views] == [1_704_067_200_000 - 14 * 3_600_000]

    def test_bad_entries_are_rejected_and_others_kept(self) -> None:
        """Each bad entry becomes a Rejection with its index and field; good entries still parse."""
        result = parse(
            record(),
            record(time=None),
            record(time="yesterday"),
            record(time="2024-02-30T10:00:00Z"),
            "not an object",
            record(titleUrl=12),
            record(subtitles="Ocean Notes"),
            record(title=None),
            record(time=1704492932),
            record(time="2024-01-06T10:00:00Z"),
        )
        assert [v.watched_at_ms for v in result.views] == [1704492932104, 1704535200000]
        assert [(r.index, r.field) for r in result.rejected] == [
            (1, "time"),
            (2, "time"),
            (3, "time"),
            (4, "entry"),
            (5, "titleUrl"),
            (6, "subtitles"),
            (7, "title"),
            (8, "time"),
        ]
        assert result.rejected[0] == Rejection(1, "time", "missing")
        assert str(result.rejected[0]) == "entry 1: time: missing"
        assert "yesterday" in result.rejected[1].reason
        assert result.total_entries == 10
        assert "entry 4" in str(result.rejected[3])

    def test_wrong_types_are_named_as_json_types(self) -> None:
        """A value of the wrong type is named as the file spells it (null, number, ...), never as Python's NoneType."""
        result = parse(
            record(),
            None,
            record(title=["Tides"]),
            record(header=7),
            record(subtitles=[{"name": 5, "url": f"https://www.youtube.com/channel/{CHANNEL}"}]),
            record(time=True),
            record(details={"name": "From Google Ads"}),
        )
        assert [str(r) for r in result.rejected] == [
            "entry 1: entry: expected an object, got a JSON null",
            "entry 2: title: expected a string, got a JSON array",
            "entry 3: header: expected a string, got a JSON number",
            "entry 4: subtitles[0].name: expected a string, got a JSON number",
            "entry 5: time: expected an ISO 8601 string, got a JSON boolean",
            "entry 6: details: expected an array of objects, got a JSON object",
        ]

    def test_channel_fields_of_the_wrong_type_reject_their_entry_alike(self) -> None:
        """A channel url of the wrong type is rejected naming subtitles[0].url, as a wrong-typed name is, whatever
        the other field holds; it is not dropped with the view kept without its channel."""
        result = parse(
            record(subtitles=[{"name": "Ocean Notes", "url": 3}]),
            record(subtitles=[{"name": 5, "url": "https://www.youtube.com/@someone"}]),
            record(subtitles=[{"name": "Ocean Notes", "url": ["https://www.youtube.com/channel/" + CHANNEL]}]),
            record(subtitles=[{"name": "Ocean Notes", "url": None}]),
            record(),
        )
        assert [str(r) for r in result.rejected] == [
            "entry 0: subtitles[0].url: expected a string, got a JSON number",
            "entry 1: subtitles[0].name: expected a string, got a JSON number",
            "entry 2: subtitles[0].url: expected a string, got a JSON array",
        ]
        assert [(v.channel_id, v.channel_name) for v in result.views] == [(None, None), (CHANNEL, "Ocean Notes")]


class TestLoneSurrogates:
    """A JSON escape of half a UTF-16 pair (``"\\ud83d"``) decodes to a string that cannot be encoded as UTF-8."""

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"title": "Watched \ud83d Tides"}, "title"),
            ({"titleUrl": f"https://www.youtube.com/watch?v={VID}&t=\udc00"}, "titleUrl"),
            ({"header": "YouTube\ud83d"}, "header"),
            (
                {"subtitles": [{"name": "Ocean \ud83d", "url": f"https://www.youtube.com/channel/{CHANNEL}"}]},
                "subtitles[0].name",
            ),
            (
                {"subtitles": [{"name": "Ocean", "url": f"https://www.youtube.com/channel/{CHANNEL}\udfff"}]},
                "subtitles[0].url",
            ),
            ({"details": [{"name": "From Google Ads\ud800"}]}, "details[0].name"),
            ({"products": ["YouTube", "\udbff"]}, "products[1]"),
            ({"description": "\ud83d"}, "description"),
        ],
    )
    def test_rejects_its_entry_naming_the_field(self, fields: dict[str, Any], field: str) -> None:
        """Any string of the entry, used or not, rejects that entry alone with its path; the others are read."""
        result = parse(record(), record(**fields), record(time="2024-01-06T10:00:00Z"))
        assert [(r.index, r.field) for r in result.rejected] == [(1, field)]
        assert "lone UTF-16 surrogate \\u" in result.rejected[0].reason
        assert "the text is damaged" in result.rejected[0].reason
        assert len(result.views) == 2 and result.total_entries == 3

    def test_reason_names_the_surrogate_its_offset_and_the_value_escaped(self) -> None:
        """The message shows the damaged value with the half character escaped, printable on any terminal."""
        result = parse(record(title="Watched \ud83d Tides"))
        assert str(result.rejected[0]) == (
            "entry 0: title: lone UTF-16 surrogate \\ud83d at offset 8 (half of a character; the text is"
            " damaged): 'Watched \\ud83d Tides'"
        )
        str(result.rejected[0]).encode("utf-8")  # the message itself can be printed

    def test_a_whole_pair_is_one_character(self) -> None:
        """An escaped pair (an emoji, as Takeout writes non-BMP characters) is read as its character."""
        data = (
            b'[{"header": "YouTube", "title": "Watched \\ud83d\\ude00 Tides", "titleUrl": "https://www.youtube.com/watch?v='
            + VID.encode()
            + b'", "time": "2024-01-05T22:15:32Z"}]'
        )
        result = parse_takeout_bytes(data, name="f")
        assert result.rejected == [] and result.views[0].title == "\U0001f600 Tides"

    def test_legacy_layout(self) -> None:
        """Legacy 2016 entries are checked the same way, fields named by their path."""
        entry = {
            "kind": "youtube#playlistItem",
            "snippet": {"publishedAt": "2016-06-01T00:00:00Z", "title": "Old \ud83d"},
            "contentDetails": {"videoId": VID},
        }
        result = parse(entry)
        assert [(r.index, r.field) for r in result.rejected] == [(0, "snippet.title")]

    def test_checker_reports_it(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """python -m worker.takeout lists the rejection as import does, and the file still has views to import."""
        from worker.takeout.__main__ import main

        path = tmp_path / "h.json"
        path.write_text(json.dumps([record(), record(title="Watched \ud83d")]), encoding="utf-8")
        assert main([str(path)]) == 0
        out = capsys.readouterr().out
        assert "2 entries, 1 view, " in out and "  rejected: entry 1: title: lone UTF-16 surrogate \\ud83d" in out


class TestMalformedWatchUrls:
    """A watch entry whose URL is present but malformed is rejected, not read as a removed video."""

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            (
                "http://example.com/x",
                "not a YouTube or YouTube Music watch URL with a video id: 'http://example.com/x'",
            ),
            ("https://www.youtube.com/watch", "not a YouTube or YouTube Music watch URL"),
            ("https://www.youtube.com/watch?list=PL1", "not a YouTube or YouTube Music watch URL"),
            ("https://www.youtube.com/channel/UCa1b2c3d4e5f6g7h8i9j0kA", "not a YouTube or YouTube Music watch URL"),
            ("", "not a YouTube or YouTube Music watch URL with a video id: ''"),
            ("https://www.youtube.com/watch?v=abc", "watch URL without a valid video id"),
            (f"https://music.youtube.com/watch?v={VID}xyz", "watch URL without a valid video id"),
            ("https://youtu.be/", "watch URL without a valid video id"),
            ("https://www.youtube.com/shorts/?feature=share", "watch URL without a valid video id"),
        ],
    )
    def test_rejected_with_index_field_and_value(self, url: str, reason: str) -> None:
        """The entry is rejected with its index, field titleUrl and the URL; the entries around it are kept."""
        result = parse(record(), record(titleUrl=url), record(time="2024-01-06T10:00:00Z"))
        assert [v.kind for v in result.views] == ["watch", "watch"]
        assert sum(result.non_views.values()) == 0
        (rejection,) = result.rejected
        assert (rejection.index, rejection.field) == (1, "titleUrl")
        assert reason in rejection.reason
        assert result.total_entries == 3

    def test_removed_title_with_a_foreign_url_is_rejected(self) -> None:
        """The removed-video title does not excuse a URL that is not a watch URL."""
        result = parse(record(title="Watched a video that has been removed", titleUrl="http://example.com/x"))
        assert result.views == [] and [(r.index, r.field) for r in result.rejected] == [(0, "titleUrl")]

    def test_long_url_is_shortened(self) -> None:
        """The quoted URL is cut to 60 characters, the cut marked with an ellipsis."""
        url = "https://www.youtube.com/watch?v=" + "x" * 500
        (rejection,) = parse(record(titleUrl=url)).rejected
        quoted = rejection.reason.split(": ", 1)[1]
        assert quoted == repr(url[:59] + "…")

    @pytest.mark.parametrize(
        "url", ["https://www.youtube.com/watch?v=", "http://m.youtube.com/watch?feature=share&v=&t=3"]
    )
    def test_documented_removed_shapes_stay_removed_views(self, url: str) -> None:
        """No titleUrl, and a watch URL with an empty v (takeout-formats.md §3), are removed views."""
        result = parse(
            record(title="Watched a video that has been removed", titleUrl=None, subtitles=None),
            record(titleUrl=url, subtitles=None),
        )
        assert [v.kind for v in result.views] == ["removed", "removed"] and result.rejected == []

    def test_video_shaped_url_is_checked_whatever_the_verb(self) -> None:
        """A watch-shaped URL with a bad id rejects the entry even when the title's locale is unknown."""
        result = parse(record(title="Obejrzałeś Pływy", titleUrl="https://youtu.be/abc"))
        assert result.views == [] and [(r.index, r.field) for r in result.rejected] == [(0, "titleUrl")]

    def test_non_views_with_other_urls_are_not_rejected(self) -> None:
        """Ads, ad clicks, posts and activity of an unknown verb keep their kinds whatever their URL."""
        result = parse(
            record(details=[{"name": "From Google Ads"}], titleUrl="https://ads.example.com/x"),
            record(title="Watched Volvo Cars", titleUrl="https://www.google.com/url?q=https://ads.example"),
            record(title="Viewed Hello", titleUrl="https://www.youtube.com/post/UgkxAbc"),
            record(title="Recherché marées", titleUrl="https://www.youtube.com/results?search_query=mar"),
        )
        assert result.rejected == [] and result.views == []
        assert result.non_views == {"ad": 1, "ad_click": 1, "post": 1, "visit": 0, "story": 0, "other": 1}


class TestWholeFileErrors:
    def test_truncated_json_names_line_and_column(self) -> None:
        """Truncated JSON raises TakeoutFormatError with line/column, not JSONDecodeError."""
        data = json.dumps([record(), record()], indent=2).encode()[:-40]
        with pytest.raises(TakeoutFormatError) as info:
            parse_takeout_bytes(data, name="watch-history.json")
        assert info.value.path == "watch-history.json"
        assert info.value.position is not None and info.value.position.startswith("line ")
        assert "truncated" in str(info.value)

    @pytest.mark.parametrize(
        ("data", "fragment"),
        [
            (b'{"header": "YouTube"}', "array of records at the top level, got a JSON object"),
            (b"[1, 2, 3]", "no objects"),
            (b'[{"foo": 1}]', "unknown record structure"),
            (b"hello, world", "neither JSON nor HTML"),
            (b"null\n", "array of records at the top level, got a JSON null"),
            (b'"just a string"', "got a JSON string"),
            (b"42", "got a JSON number"),
            (b"9" * 5000, "got a JSON number"),  # longer than Python converts to int
            (b"true", "got a JSON boolean"),
            (b"", "empty"),
            (b"\xff\xfe[\x00", "UTF-8"),
            (b"<html><body><p>hi</p></body></html>", "no 'content-cell"),
            (b"<html><head><style>.x{}</style></head><body><div class='header'>", "truncated before its first record"),
            (b"PK\x03\x04garbage", "zip"),
        ],
    )
    def test_not_an_export(self, data: bytes, fragment: str) -> None:
        """Whole-file problems raise TakeoutFormatError with a clear message."""
        with pytest.raises(TakeoutFormatError, match=fragment):
            parse_takeout_bytes(data, name="f")

    def test_integer_longer_than_python_converts_is_just_a_number(self) -> None:
        """A 5000-digit integer (Python refuses int() past 4300) is a JSON number like any other: in a
        field no one reads it is ignored, where a string belongs it rejects its entry only."""
        big = "9" * 5000
        unused = json.dumps([record(), record()]).replace('"products"', f'"extra": -{big}, "products"', 1)
        assert len(parse_takeout_bytes(unused.encode(), name="f").views) == 2
        in_title = json.dumps([record(), record()]).replace('"title": "Watched', f'"title": {big}, "t": "', 1)
        result = parse_takeout_bytes(in_title.encode(), name="f")
        assert len(result.views) == 1
        assert result.rejected == [Rejection(0, "title", "expected a string, got a JSON number")]

    def test_empty_array_is_an_empty_history(self) -> None:
        """'[]' is a valid export with no entries."""
        result = parse_takeout_bytes(b"[]", name="f")
        assert result.total_entries == 0 and result.views == [] and result.first_ms is None

    def test_missing_file(self, tmp_path: Path) -> None:
        """An unreadable path raises TakeoutFormatError naming it."""
        with pytest.raises(TakeoutFormatError, match="cannot read"):
            parse_takeout_file(tmp_path / "nope.json")

    def test_directory(self, tmp_path: Path) -> None:
        """A directory raises TakeoutFormatError saying it is a directory."""
        with pytest.raises(TakeoutFormatError, match="is a directory") as info:
            parse_takeout_file(tmp_path)
        assert info.value.path == str(tmp_path)

    def test_utf8_bom_accepted(self) -> None:
        """A UTF-8 byte-order mark before the array is ignored."""
        data = b"\xef\xbb\xbf" + json.dumps([record()]).encode()
        assert len(parse_takeout_bytes(data, name="f").views) == 1


class TestZipAndCli:
    def test_zip_without_history(self) -> None:
        """A zip with no watch-history member raises TakeoutFormatError."""
        import io
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("Takeout/YouTube/subscriptions/subscriptions.csv", "Channel Id,Title\n")
        with pytest.raises(TakeoutFormatError, match="no watch-history file"):
            parse_takeout_bytes(buffer.getvalue(), name="takeout.zip")

    @pytest.mark.parametrize("folders", [(), ("Takeout/", "Takeout/YouTube/")])
    def test_empty_zip_says_it_holds_no_files(self, folders: tuple[str, ...]) -> None:
        """An archive without files (or with folders only) is called empty, not "neither JSON nor HTML"."""
        import io
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for folder in folders:
                archive.writestr(folder, "")
        with pytest.raises(TakeoutFormatError) as info:
            parse_takeout_bytes(buffer.getvalue(), name="takeout.zip")
        assert str(info.value) == "takeout.zip: the zip archive is empty: it holds no files, so no watch history"

    def test_zip_without_history_counts_its_files(self) -> None:
        """The archive's files are counted in the message, so that a wrong archive is recognised."""
        import io
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("a.csv", "x")
            archive.writestr("b.csv", "y")
        with pytest.raises(TakeoutFormatError, match="no watch-history file \\(JSON or HTML\\) among its 2 files$"):
            parse_takeout_bytes(buffer.getvalue(), name="takeout.zip")

    def test_member_past_the_size_cap_is_refused_naming_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A member that decompresses past MAX_MEMBER_BYTES is refused, with its path, instead of read whole."""
        from worker.takeout import parse as parse_module

        monkeypatch.setattr(parse_module, "MAX_MEMBER_BYTES", 4096)
        member = "Takeout/YouTube/history/watch-history.json"
        small = zip_bytes({member: json.dumps([record()] * 5)})
        assert len(parse_takeout_bytes(small, name="takeout.zip").views) == 5
        with pytest.raises(TakeoutFormatError) as info:
            parse_takeout_bytes(zip_bytes({member: json.dumps([record()] * 50)}), name="takeout.zip")
        assert info.value.path == f"takeout.zip!{member}" and info.value.position is None
        assert "decompressed" in info.value.reason and "the limit is 0.0 MiB" in info.value.reason

    def test_size_cap_is_1_gib(self) -> None:
        """Real histories are a few hundred MB of JSON at most: 1 GiB leaves room without reading a bomb whole."""
        from worker.takeout.parse import MAX_MEMBER_BYTES

        assert MAX_MEMBER_BYTES == 1024**3

    def test_declared_size_past_the_cap_is_refused_before_decompressing(self) -> None:
        """A member declaring 3.5 GiB (a zip bomb's usual shape) is refused from its header, naming it."""
        member = "Takeout/YouTube/history/watch-history.json"
        data = declare_size(zip_bytes({member: json.dumps([record()])}), 7 * 2**29)
        with pytest.raises(TakeoutFormatError) as info:
            parse_takeout_bytes(data, name="takeout.zip")
        assert str(info.value) == (
            f"takeout.zip!{member}: archive member is 3,584.0 MiB decompressed (its declared size): the limit"
            " is 1,024.0 MiB; real watch histories are a few hundred MB at most"
        )

    def test_understated_size_reads_no_further(self) -> None:
        """A header declaring fewer bytes than the member holds cannot get more read: the member is damaged."""
        member = "Takeout/YouTube/history/watch-history.json"
        data = declare_size(zip_bytes({member: json.dumps([record()] * 20)}), 100)
        with pytest.raises(TakeoutFormatError, match="cannot read archive member") as info:
            parse_takeout_bytes(data, name="takeout.zip")
        assert info.value.path == f"takeout.zip!{member}"

    def test_zip_prefers_json_over_html(self) -> None:
        """With both formats in the archive, the JSON file is read."""
        import io
        import zipfile

        html = (
            '<div class="content-cell mdl-typography--body-1">Watched <a href="https://youtu.be/'
            f'{VID}">T</a><br>Jan 2, 2024, 10:00:00 AM UTC</div>'
        )
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("Takeout/YouTube/history/watch-history.html", html)
            archive.writestr("Takeout/YouTube/history/watch-history.json", json.dumps([record(), record()]))
        result = parse_takeout_bytes(buffer.getvalue(), name="takeout.zip")
        assert result.source == "takeout_json" and len(result.views) == 2

    def test_cli_summary(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The checker prints counts and rejections (as import does), and exits 0 when every file has a view."""
        from worker.takeout.__main__ import main

        good = tmp_path / "h.json"
        good.write_text(json.dumps([record(), record(time=None)]), encoding="utf-8")
        assert main([str(good)]) == 0
        out = capsys.readouterr().out
        assert ": takeout_json, 2 entries, 1 view, " in out, out  # counts in the singular when they are 1
        assert "rejected 1" in out and "  rejected: entry 1: time: missing" in out
        assert "nothing to import" not in out
        one = tmp_path / "one.json"
        one.write_text(json.dumps([record()] + [record(time=None)] * 12), encoding="utf-8")
        assert main([str(one)]) == 0
        out = capsys.readouterr().out
        assert ": takeout_json, 13 entries, 1 view, " in out and "  … and 2 more rejections\n" in out
        one.write_text(json.dumps([record()] + [record(time=None)] * 11), encoding="utf-8")
        assert main([str(one)]) == 0
        assert "  … and 1 more rejection\n" in capsys.readouterr().out

    @pytest.mark.parametrize(
        ("entries", "reason"),
        [
            ([], "the file holds no entries"),
            ([record(time=None), record(titleUrl="http://example.com/x")], "every entry was rejected (2 of 2)"),
            (
                [record(title="Watched Volvo Cars", details=[{"name": "From Google Ads"}]), record(time=None)],
                "none of its 2 entries is a view (ad 1, rejected 1)",
            ),
            (
                [record(title="Watched Volvo Cars", details=[{"name": "From Google Ads"}])],
                "its only entry is not a view (ad 1, rejected 0)",
            ),
        ],
    )
    def test_cli_nothing_to_import_exits_1(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], entries: list[Any], reason: str
    ) -> None:
        """A readable file that import would refuse: a 'nothing to import' line with import's reason, exit 1."""
        from worker.takeout.__main__ import main

        path = tmp_path / "h.json"
        path.write_text(json.dumps(entries), encoding="utf-8")
        assert main([str(path)]) == 1
        assert f"  nothing to import: {reason}\n" in capsys.readouterr().out

    def test_cli_unreadable_file_takes_precedence(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """With one file without views and one unreadable file the exit code is 2."""
        from worker.takeout.__main__ import main

        (tmp_path / "empty.json").write_text("[]", encoding="utf-8")
        (tmp_path / "good.json").write_text(json.dumps([record()]), encoding="utf-8")
        assert main([str(tmp_path / "empty.json"), str(tmp_path / "missing.json")]) == 2
        assert main([str(tmp_path / "good.json"), str(tmp_path / "empty.json")]) == 1
        assert main([str(tmp_path / "good.json")]) == 0
        capsys.readouterr()

    def test_cli_names_the_zip_member_and_the_ignored_ones(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """For a zip the checker names the member read and notes the other candidates."""
        import zipfile

        from worker.takeout.__main__ import main

        path = tmp_path / "tk2.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("Takeout/YouTube/history/watch-history.json", json.dumps([record(), record()]))
            archive.writestr("Takeout/My Activity/YouTube/MyActivity.json", json.dumps([record()]))
        assert main([str(path)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith(f"{path}: Takeout/YouTube/history/watch-history.json: takeout_json, 2 entries")
        assert lines[1] == (
            "  note: the archive holds 2 watch-history files; read Takeout/YouTube/history/watch-history.json,"
            " ignored: Takeout/My Activity/YouTube/MyActivity.json"
        )

    @pytest.mark.parametrize(
        ("make", "message"),
        [
            (lambda d: d, "is a directory"),
            (lambda d: d / "missing.json", "no such file"),
            (lambda d: d / "bad.json", "invalid JSON"),
        ],
    )
    def test_cli_input_errors_exit_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
    ) -> None:
        """A directory, a missing file or a broken export: one error line naming the path, exit 2."""
        from worker.takeout.__main__ import main

        (tmp_path / "bad.json").write_text("[{", encoding="utf-8")
        path = make(tmp_path)
        assert main([str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {path}") and message in err[0]

    def test_cli_unreadable_file_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file that cannot be read (permissions) gives one error line and exit 2."""
        from worker.takeout.__main__ import main

        path = tmp_path / "h.json"
        path.write_text("[]", encoding="utf-8")

        def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "open", refuse)
        assert main([str(path)]) == 2
        assert capsys.readouterr().err.strip() == f"error: {path}: cannot read the file: Permission denied"

    def test_cli_usage_error_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """No file given: usage on stderr, exit 2."""
        from worker.takeout.__main__ import main

        with pytest.raises(SystemExit) as info:
            main([])
        assert info.value.code == 2 and "usage:" in capsys.readouterr().err
