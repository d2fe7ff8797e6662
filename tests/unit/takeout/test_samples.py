"""Parse the real Takeout exports in shared/data/takeout-samples and check the documented values."""

from __future__ import annotations

import io
import re
import struct
import zipfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.takeout import TakeoutFormatError, parse_takeout_bytes, parse_takeout_file


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


class TestRabbitHtml:
    def test_record_one_is_a_view_and_record_two_an_ad(self, samples: Path) -> None:
        """A 2025 fragment without the first outer-cell tag: U+202F before AM, CDT, ad via Details."""
        result = parse_takeout_file(samples / "rabbit_watch-history-sample-1.html")
        assert result.source == "takeout_html"
        assert result.total_entries == 2
        assert result.rejected == []
        assert result.non_views["ad"] == 1
        assert len(result.views) == 1
        view = result.views[0]
        assert view.watched_at_ms == ms("2025-08-15T16:04:01Z")
        assert view.channel_id == "UCVPayYVn9c12mpDOiQsl2uQ"
        assert view.channel_name == "More or Less Podcast"
        assert view.video_id == "MKMFlUaICXs"
        assert view.title == "#112  Swift Should Buy Chrome, Not Perplexity"
        assert view.kind == "watch" and view.product == "youtube" and view.flags == frozenset()
        assert result.first_ms == result.last_ms == view.watched_at_ms

    def test_fragment_ends_with_its_last_record_closed(self, samples: Path) -> None:
        """The fragment starts mid-document and ends '</div></div></div>' with no page tags: it is not cut."""
        data = (samples / "rabbit_watch-history-sample-1.html").read_bytes()
        assert data.rstrip().endswith(b"</div></div></div>") and b"<html" not in data and b"<body" not in data
        assert parse_takeout_bytes(data, name="rabbit").total_entries == 2
        with pytest.raises(TakeoutFormatError, match="ends inside the last record"):
            parse_takeout_bytes(data.rstrip()[:-6], name="rabbit")


class TestLemmingsCodeHtml:
    def test_counts_and_title_unknown(self, samples: Path) -> None:
        """32 records, all views; 4 bare-URL titles have no title and no channel."""
        result = parse_takeout_file(samples / "lemmingscode_watch-history-excerpt_en-AU.html")
        assert result.total_entries == 32
        assert len(result.views) == 32
        assert result.rejected == []
        assert sum(result.non_views.values()) == 0
        unknown = [v for v in result.views if "title_unknown" in v.flags]
        assert len(unknown) == 4
        assert all(v.title is None and v.channel_id is None and v.video_id for v in unknown)
        assert {v.video_id for v in unknown} == {"m0dKwVpuTKg", "Tte80gYuM_w", "t4-brkNH4As", "GWupY7Qi9wQ"}

    def test_aedt_is_a_fixed_plus_eleven_even_in_winter(self, samples: Path) -> None:
        """The first and last records and an April record (Sydney on AEST then) use +11:00."""
        result = parse_takeout_file(samples / "lemmingscode_watch-history-excerpt_en-AU.html")
        assert result.views[0].watched_at_ms == ms("2021-11-29T07:06:16Z")  # 29 Nov 2021, 18:06:16 AEDT
        assert result.views[-1].watched_at_ms == ms("2021-04-20T07:44:53Z")  # 20 Apr 2021, 18:44:53 AEDT
        assert result.views[-1].title == "HTTP Crash Course & Exploration"
        assert result.first_ms == ms("2021-04-20T07:44:53Z")
        assert result.last_ms == ms("2021-11-29T07:06:16Z")

    def test_sept_month_name(self, samples: Path) -> None:
        """'30 Sept 2021, 00:36:52 AEDT' (4-letter month) → 2021-09-29T13:36:52Z; four Sept records."""
        result = parse_takeout_file(samples / "lemmingscode_watch-history-excerpt_en-AU.html")
        times = {v.watched_at_ms for v in result.views}
        assert ms("2021-09-29T13:36:52Z") in times
        september = [
            v for v in result.views if datetime.fromtimestamp(v.watched_at_ms / 1000 + 11 * 3600, UTC).month == 9
        ]
        assert len(september) == 4

    @pytest.mark.parametrize("size", [150_000, 160_000, 165_000])
    def test_truncated_copy_is_refused(self, samples: Path, size: int) -> None:
        """The first `size` bytes of the export (cut inside a record) raise with a line/column, not a partial import."""
        data = (samples / "lemmingscode_watch-history-excerpt_en-AU.html").read_bytes()[:size]
        with pytest.raises(TakeoutFormatError, match="truncated") as info:
            parse_takeout_bytes(data, name="t.html")
        assert info.value.position is not None and info.value.position.startswith("line 33, column ")

    def test_html_entities_unescaped_once(self, samples: Path) -> None:
        """'&#39;' in a title becomes an apostrophe."""
        result = parse_takeout_file(samples / "lemmingscode_watch-history-excerpt_en-AU.html")
        assert result.views[0].title == "Yarn vs NPM - You won't believe how fast it is"
        assert result.views[0].channel_name == "LearnCode.academy"


class TestVidVidexJson:
    def test_views_rewatches_and_channels(self, samples: Path) -> None:
        """16 views of a 2021 export without activityControls; one video 3 times, one channel 13 times."""
        result = parse_takeout_file(samples / "vidvidex_watch-history.json")
        assert result.source == "takeout_json"
        assert result.total_entries == 16
        assert len(result.views) == 16
        assert result.rejected == []
        assert Counter(v.video_id for v in result.views)["shXAjhcXP58"] == 3
        assert Counter(v.channel_id for v in result.views).most_common(1) == [("UChyNJxSsIXh2KyY3VvLnI2g", 13)]
        first = result.views[0]
        assert first.watched_at_ms == ms("2021-07-31T09:32:31.471Z")
        assert first.title == "How Do Computers Remember?"
        assert first.video_id == "I0-izyq6q5s"
        assert any(v.title and "Süsser" in v.title for v in result.views)


class TestYutotakanoJson:
    def test_post_ad_and_ad_click_are_not_views(self, samples: Path) -> None:
        """6 records: 3 views, 1 community post, 1 ad without subtitles, 1 'Visited' ad click."""
        result = parse_takeout_file(samples / "yutotakano_watch-history.json")
        assert result.total_entries == 6
        assert result.non_views == {"ad": 1, "ad_click": 1, "post": 1, "visit": 0, "story": 0, "other": 0}
        assert [v.video_id for v in result.views] == ["Y6VSGTC1n1g", "CKq3ZLn_kf8", "RzPZvKSdN7g"]
        first = result.views[0]
        assert first.title == "アイヌ語の勉強法をご紹介します！"
        assert first.channel_name == "はちあ"
        assert first.channel_id == "UC6s4Xu10_laCZMuahny8kUA"
        assert first.watched_at_ms == ms("2025-01-23T15:40:16.600Z")
        assert result.first_ms == ms("2023-01-30T15:36:09.247Z")

    def test_legacy_2016_playlist_items(self, samples: Path) -> None:
        """Legacy format: id from contentDetails, time from publishedAt, the owner's channel is not used."""
        result = parse_takeout_file(samples / "yutotakano_watch-history-2016-legacy.json")
        assert result.source == "takeout_json"
        assert result.total_entries == 3
        assert [v.video_id for v in result.views] == ["3mNYrxcZ0X8", "QJ7CiqJwbBQ", "yaNYZhVZK_E"]
        assert result.views[0].watched_at_ms == ms("2016-10-06T22:03:44Z")
        assert result.views[0].title == "Pimp My Conference Room - Acer Projector, Carada Screen & More!"
        assert all(v.channel_id is None and v.channel_name is None for v in result.views)


class TestZipArchive:
    def test_finds_the_history_by_content_under_a_localized_name(self, samples: Path) -> None:
        """The watch history is picked by content; search history and My Activity are passed over."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(
                "Takeout/YouTube und YouTube Music/Verlauf/Suchverlauf.json",
                '[{"header": "YouTube", "title": "Searched for cats", '
                '"titleUrl": "https://www.youtube.com/results?search_query\\u003dcats", '
                '"time": "2024-01-01T00:00:00Z"}]',
            )
            archive.writestr("Takeout/My Activity/YouTube/MyActivity.json", "[]")
            archive.write(
                samples / "vidvidex_watch-history.json",
                "Takeout/YouTube und YouTube Music/Verlauf/Wiedergabeverlauf.json",
            )
            archive.writestr("Takeout/archive_browser.html", "<html><body>index</body></html>")
        result = parse_takeout_bytes(buffer.getvalue(), name="takeout.zip")
        assert len(result.views) == 16
        assert result.member == "Takeout/YouTube und YouTube Music/Verlauf/Wiedergabeverlauf.json"
        assert result.notes == ()


LEMMINGS_HTML = "lemmingscode_watch-history-excerpt_en-AU.html"
HISTORY_DIR = "Takeout/YouTube and YouTube Music/history"


def zip_of(members: dict[str, bytes]) -> bytes:
    """A zip archive holding ``members`` (path → content) in the given order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, content in members.items():
            archive.writestr(path, content)
    return buffer.getvalue()


class TestZippedHtmlExport:
    def test_real_page_starts_with_more_than_64_kib_of_css(self, samples: Path) -> None:
        """The premise of the tests below: the first record marker of a real page is past the first 64 KiB."""
        assert (samples / LEMMINGS_HTML).read_bytes().index(b"content-cell") > 65_536

    @pytest.mark.parametrize(
        "member",
        [
            LEMMINGS_HTML,
            f"{HISTORY_DIR}/watch-history.html",
            "Takeout/YouTube/history/watch-history.html",
            "Takeout/YouTube en YouTube Music/geschiedenis/kijkgeschiedenis.html",
            # a name no list holds (it): found by content, past the CSS
            "Takeout/YouTube e YouTube Music/cronologia/cronologia-visualizzazioni.html",
        ],
    )
    def test_html_export_in_a_zip_is_read(self, samples: Path, member: str) -> None:
        """The real HTML page, zipped flat or in a (localized) Takeout folder layout, gives its 32 views."""
        data = zip_of({member: (samples / LEMMINGS_HTML).read_bytes()})
        result = parse_takeout_bytes(data, name="flat.zip")
        assert result.source == "takeout_html"
        assert result.total_entries == 32 and len(result.views) == 32 and result.rejected == []
        assert result.member == member and result.notes == ()

    @pytest.mark.parametrize("marker", [b"content-cell", b"watch?v="])
    def test_marker_split_across_scan_chunks(self, marker: bytes) -> None:
        """A page whose only record marker straddles two 64 KiB read chunks is still found."""
        record = (
            b'<div class="content-cell mdl-typography--body-1">Watched <a href="https://www.youtube.com/watch?v='
            b'Qx7Lm2Np9Ta">T</a><br>Jan 2, 2024, 10:00:00 AM UTC</div>'
        )
        head = b"<html><head><style>"
        tail = b"</style></head><body>"
        pad = 65_536 * 3 - 4 - len(head) - len(tail) - record.index(marker)  # 4 bytes of the marker in chunk 3
        page = head + b" " * pad + tail + record + b"</body></html>"
        assert page.count(marker) == 1 and page.index(marker) == 65_536 * 3 - 4
        result = parse_takeout_bytes(zip_of({"Takeout/export/page.html": page}), name="t.zip")
        assert len(result.views) == 1 and result.member == "Takeout/export/page.html"

    def test_a_documented_name_is_a_candidate_even_when_empty(self) -> None:
        """An empty watch-history.json is read (0 entries), not reported as a missing history file."""
        result = parse_takeout_bytes(zip_of({f"{HISTORY_DIR}/watch-history.json": b"[]"}), name="t.zip")
        assert result.total_entries == 0 and result.member == f"{HISTORY_DIR}/watch-history.json"
        assert result.no_view_reason() == "the file holds no entries"

    def test_other_html_pages_are_not_candidates(self) -> None:
        """Takeout's archive browser and a search history without watch links are passed over."""
        data = zip_of(
            {
                "Takeout/archive_browser.html": b"<html><body>" + b"x" * 200_000 + b"</body></html>",
                f"{HISTORY_DIR}/search-history.html": b'<div class="content-cell">Searched for cats</div>',
            }
        )
        with pytest.raises(TakeoutFormatError, match="no watch-history file"):
            parse_takeout_bytes(data, name="t.zip")


class TestSeveralCandidates:
    def members(self, samples: Path) -> dict[str, bytes]:
        return {
            "Takeout/My Activity/YouTube/MyActivity.json": (samples / "yutotakano_watch-history.json").read_bytes(),
            f"{HISTORY_DIR}/watch-history.html": (samples / LEMMINGS_HTML).read_bytes(),
            f"{HISTORY_DIR}/watch-history.json": (samples / "vidvidex_watch-history.json").read_bytes(),
        }

    def test_choice_is_named_and_the_others_listed(self, samples: Path) -> None:
        """The YouTube history JSON is read; the member is named and a note lists the ignored candidates."""
        result = parse_takeout_bytes(zip_of(self.members(samples)), name="tk2.zip")
        assert result.source == "takeout_json" and len(result.views) == 16
        assert result.member == f"{HISTORY_DIR}/watch-history.json"
        assert result.notes[0] == (
            f"the archive holds 3 watch-history files; read {HISTORY_DIR}/watch-history.json, ignored: "
            f"{HISTORY_DIR}/watch-history.html, Takeout/My Activity/YouTube/MyActivity.json"
        )

    def test_choice_does_not_depend_on_archive_order(self, samples: Path) -> None:
        """Members written in reverse order give the same member and the same note."""
        members = self.members(samples)
        forward = parse_takeout_bytes(zip_of(members), name="a.zip")
        backward = parse_takeout_bytes(zip_of(dict(reversed(members.items()))), name="a.zip")
        assert (backward.member, backward.notes) == (forward.member, forward.notes)

    @pytest.mark.parametrize(
        ("sizes", "chosen"),
        [((1, 2), "b"), ((2, 1), "a"), ((1, 1), "a")],
    )
    def test_equal_rank_prefers_the_larger_file_then_the_path(self, sizes: tuple[int, int], chosen: str) -> None:
        """Two JSON histories: the one with more bytes is read; on a tie, the path that sorts first."""
        entry = (
            '{"header": "YouTube", "title": "Watched T", "titleUrl": "https://www.youtube.com/watch?v\\u003d'
            'Qx7Lm2Np9Ta", "time": "2024-01-05T22:15:32Z"}'
        )
        members = {
            f"Takeout-{name}/{HISTORY_DIR[8:]}/watch-history.json": ("[" + ",".join([entry] * n) + "]").encode()
            for name, n in zip("ab", sizes, strict=True)
        }
        result = parse_takeout_bytes(zip_of(dict(reversed(members.items()))), name="t.zip")
        assert result.member is not None and result.member.startswith(f"Takeout-{chosen}/")
        assert result.total_entries == max(sizes) and "ignored: Takeout-" in result.notes[0]

    @pytest.mark.parametrize("stray", ["backup/old-copy.json", "../../evil.json", "Takeout/notes.json"])
    def test_the_documented_file_name_wins_over_a_larger_stray_history(self, stray: str) -> None:
        """A larger JSON history under another name (a copy, a member outside Takeout's folders) is
        listed as ignored; the file named watch-history.json is read."""
        entry = (
            '{"header": "YouTube", "title": "Watched T", "titleUrl": "https://www.youtube.com/watch?v\\u003d'
            'Qx7Lm2Np9Ta", "time": "2024-01-05T22:15:32Z"}'
        )
        real = f"{HISTORY_DIR}/watch-history.json"
        members = {real: f"[{entry}]".encode(), stray: ("[" + ",".join([entry] * 50) + "]").encode()}
        result = parse_takeout_bytes(zip_of(members), name="t.zip")
        assert result.member == real and result.total_entries == 1
        assert result.notes[0].endswith(f"ignored: {stray}")


def _damaged(archive: bytes, member: str) -> bytes:
    """``archive`` with one byte of ``member``'s compressed data flipped (its CRC or inflate then fails)."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        info = zf.getinfo(member)
    name_len, extra_len = struct.unpack("<HH", archive[info.header_offset + 26 : info.header_offset + 30])
    at = info.header_offset + 30 + name_len + extra_len + 2
    return archive[:at] + bytes([archive[at] ^ 0xFF]) + archive[at + 1 :]


class TestUnreadableMembers:
    ENTRY = (
        '{"header": "YouTube", "title": "Watched T", "titleUrl": "https://www.youtube.com/watch?v\\u003d'
        'Qx7Lm2Np9Ta", "time": "2024-01-05T22:15:32Z"}'
    )
    ACTIVITY = "Takeout/My Activity/YouTube/MyActivity.json"

    def test_an_unreadable_other_file_is_skipped_with_a_note(self) -> None:
        """A damaged My Activity file does not block the intact history (the history would be read anyway)."""
        real = f"{HISTORY_DIR}/watch-history.json"
        archive = zip_of(
            {real: f"[{self.ENTRY}]".encode(), self.ACTIVITY: ("[" + ",".join([self.ENTRY] * 40) + "]").encode()}
        )
        result = parse_takeout_bytes(_damaged(archive, self.ACTIVITY), name="t.zip")
        assert result.member == real and result.total_entries == 1
        assert result.notes[0].startswith(
            f"ignored a file that cannot be read: t.zip!{self.ACTIVITY}: cannot read archive member: damaged"
        )

    def test_the_history_itself_unreadable_is_an_error(self) -> None:
        """A damaged watch-history.json is reported, not replaced by another file's views."""
        real = f"{HISTORY_DIR}/watch-history.json"
        archive = zip_of(
            {real: ("[" + ",".join([self.ENTRY] * 40) + "]").encode(), self.ACTIVITY: f"[{self.ENTRY}]".encode()}
        )
        with pytest.raises(TakeoutFormatError, match=f"^t.zip!{re.escape(real)}: cannot read archive member: damaged"):
            parse_takeout_bytes(_damaged(archive, real), name="t.zip")

    def test_only_unreadable_files_is_the_first_error(self) -> None:
        archive = zip_of({self.ACTIVITY: ("[" + ",".join([self.ENTRY] * 40) + "]").encode()})
        with pytest.raises(TakeoutFormatError, match="cannot read archive member: damaged"):
            parse_takeout_bytes(_damaged(archive, self.ACTIVITY), name="t.zip")
