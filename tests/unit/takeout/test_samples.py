"""Parse the real Takeout exports in shared/data/takeout-samples and check the documented values."""

from __future__ import annotations

import io
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
