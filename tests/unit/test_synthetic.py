"""Synthetic history generator and Takeout writers: determinism, realism, exact round trips."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from worker.models import WatchEvent
from worker.synthetic import generate_history, main, write_takeout_html, write_takeout_json
from worker.takeout import parse_takeout_file

END_MS = 1_794_700_800_000  # 2026-11-15T00:00:00Z
DEMO = Path(__file__).resolve().parents[2] / "worker" / "data" / "demo-watch-history.json"


@pytest.fixture(scope="module")
def history() -> list[WatchEvent]:
    return generate_history(6000, seed=11, end_ms=END_MS)


def by_time(events: list[WatchEvent]) -> list[WatchEvent]:
    return sorted(events, key=lambda e: e.watched_at_ms)


class TestDeterminism:
    def test_same_seed_same_history(self, history: list[WatchEvent]) -> None:
        """The same arguments give an identical list."""
        assert generate_history(6000, seed=11, end_ms=END_MS) == history

    def test_different_seeds_differ(self, history: list[WatchEvent]) -> None:
        """Another seed gives other instants and videos."""
        other = generate_history(6000, seed=12, end_ms=END_MS)
        assert [e.watched_at_ms for e in other] != [e.watched_at_ms for e in history]
        assert {e.video_id for e in other} != {e.video_id for e in history}


class TestShape:
    def test_count_order_and_range(self, history: list[WatchEvent]) -> None:
        """Exactly n views, strictly increasing instants, within ~3 years before end_ms."""
        times = [e.watched_at_ms for e in history]
        assert len(history) == 6000
        assert all(a < b for a, b in zip(times, times[1:], strict=False))
        assert times[-1] < END_MS
        assert times[0] >= END_MS - int(3.0 * 365.25 * 86_400_000)

    def test_ids(self, history: list[WatchEvent]) -> None:
        """Video ids are 11 chars of [A-Za-z0-9_-]; channel ids UC + 22."""
        for event in history:
            if event.kind == "removed":
                assert event.video_id is None and event.title is None and event.channel_id is None
                continue
            assert event.video_id is not None and re.fullmatch(r"[A-Za-z0-9_-]{11}", event.video_id)
            if event.channel_id is not None:
                assert re.fullmatch(r"UC[A-Za-z0-9_-]{22}", event.channel_id)

    def test_shares(self, history: list[WatchEvent]) -> None:
        """Music ~15 %, removed ~2 %, shorts ~3 %, rewatches present, Topic channels for music."""
        n = len(history)
        music = [e for e in history if e.product == "youtube_music"]
        assert 0.09 < len(music) / n < 0.21
        assert all(e.channel_name.endswith(" - Topic") for e in music if e.channel_name)
        assert 0.01 < sum(e.kind == "removed" for e in history) / n < 0.03
        assert 0.015 < sum("shorts" in e.flags for e in history) / n < 0.045
        videos = Counter(e.video_id for e in history if e.video_id)
        assert sum(c - 1 for c in videos.values()) > 0.05 * n

    def test_zipf_channels(self, history: list[WatchEvent]) -> None:
        """Channel popularity is skewed: the top channel has many times the median's views."""
        counts = sorted(Counter(e.channel_id for e in history if e.channel_id).values(), reverse=True)
        assert counts[0] > 10 * counts[len(counts) // 2]

    def test_daily_rhythm_in_local_time(self, history: list[WatchEvent]) -> None:
        """Evenings (18–23 h Berlin) get far more views than nights (2–5 h)."""
        zone = ZoneInfo("Europe/Berlin")
        hours = Counter(datetime.fromtimestamp(e.watched_at_ms / 1000, zone).hour for e in history)
        evening = sum(hours[h] for h in range(18, 24))
        night = sum(hours[h] for h in range(2, 6))
        assert evening > 8 * night

    def test_sessions(self, history: list[WatchEvent]) -> None:
        """Most gaps are minutes (within a session); many are hours (between sessions)."""
        gaps = [b.watched_at_ms - a.watched_at_ms for a, b in zip(history, history[1:], strict=False)]
        short = sum(g < 30 * 60_000 for g in gaps) / len(gaps)
        long = sum(g > 3 * 3_600_000 for g in gaps) / len(gaps)
        assert 0.5 < short < 0.85 and long > 0.1

    def test_arguments_validated(self) -> None:
        """Bad arguments raise ValueError; zero events gives an empty list."""
        assert generate_history(0, seed=1, end_ms=END_MS) == []
        for kwargs in ({"n_events": -1}, {"years": 0.001}, {"music_share": 1.5}, {"time_zone": "Mars/Base"}):
            args = {"n_events": 10, "seed": 1, "end_ms": END_MS, **kwargs}
            with pytest.raises(ValueError):
                generate_history(**args)  # type: ignore[arg-type]


class TestRoundTrip:
    def test_json(self, history: list[WatchEvent], tmp_path: Path) -> None:
        """Writing Takeout JSON and parsing it back gives exactly the generated views."""
        path = tmp_path / "watch-history.json"
        counts = write_takeout_json(history, path, seed=11)
        result = parse_takeout_file(path)
        assert result.rejected == []
        assert by_time(result.views) == history
        assert {k: result.non_views[k] for k in counts} == counts
        assert sum(counts.values()) > 0 and result.non_views["other"] == 0
        raw = path.read_text(encoding="utf-8")
        assert "\\u003d" in raw and "watch?v=" not in raw
        assert re.search(r'"time": "[0-9T:-]+Z"', raw)  # some instants without milliseconds
        assert raw.startswith('[{\n  "header": ')

    def test_html_to_the_second(self, history: list[WatchEvent], tmp_path: Path) -> None:
        """Writing Takeout HTML and parsing it back gives the views, instants truncated to seconds."""
        path = tmp_path / "watch-history.html"
        counts = write_takeout_html(history, path, seed=11, zone_label="CET")
        result = parse_takeout_file(path)
        assert result.rejected == []
        expected = [dataclasses.replace(e, watched_at_ms=e.watched_at_ms // 1000 * 1000) for e in history]
        assert by_time(result.views) == expected
        assert {k: result.non_views[k] for k in counts} == counts
        assert "\u202fPM CET" in path.read_text(encoding="utf-8")

    def test_views_only(self, tmp_path: Path) -> None:
        """extra_non_views=False writes views only."""
        events = generate_history(200, seed=3, end_ms=END_MS)
        path = tmp_path / "h.json"
        assert sum(write_takeout_json(events, path, seed=3, extra_non_views=False).values()) == 0
        assert parse_takeout_file(path).total_entries == 200


class TestDemoExport:
    def test_bundled_file_matches_the_command(self, tmp_path: Path) -> None:
        """The committed demo export is what the documented command produces, and parses cleanly."""
        out = tmp_path / "demo.json"
        assert main(["--events", "5000", "--seed", "7", "--out", str(out)]) == 0
        assert out.read_bytes() == DEMO.read_bytes()
        assert DEMO.stat().st_size <= 2_500_000
        result = parse_takeout_file(DEMO)
        assert len(result.views) == 5000 and result.rejected == []
        assert result.last_ms is not None and result.first_ms is not None
        assert result.last_ms < END_MS
        span_days = (result.last_ms - result.first_ms) / 86_400_000
        assert 700 < span_days < 731
        assert datetime.fromtimestamp(result.last_ms / 1000, UTC).year == 2026
