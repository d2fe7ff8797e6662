"""monthly_trend and top_channels on the append fast path equal a full computation."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.aggregation.incremental_support import (
    DAY,
    HOUR,
    MINUTE,
    assert_appends_match,
    random_appends,
    random_views,
    spy_states,
)
from worker.aggregation import EAGER_FILTER_SETS, FilterSet, compute_aggregations
from worker.aggregation.incremental import REGISTRY
from worker.aggregation.incremental.counts import MonthlyTrendState, TopChannelsState
from worker.aggregation.options import AggregationOptions
from worker.models import WatchEvent

TYPES = ["monthly_trend", "top_channels"]
START = 1_700_000_000_000  # 2023-11-14
BERLIN = "Europe/Berlin"


def _ms(tz: str, year: int, month: int, day: int, hour: int, minute: int) -> int:
    """Return the instant of a local wall-clock time in ``tz``, epoch ms UTC."""
    return int(datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def _view(
    at: int, channel: str | None, video: str = "vid", *, music: bool = False, name: str | None = None
) -> WatchEvent:
    return WatchEvent(
        watched_at_ms=at,
        video_id=video,
        title="a clip",
        channel_id=channel,
        channel_name=name if name is not None else (None if channel is None else f"{channel} name"),
        product="youtube_music" if music else "youtube",
    )


@pytest.fixture
def appended(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Record, per type, the appended slice views of every ``extend`` (proves the fast path ran)."""
    return spy_states(monkeypatch, ["monthly_trend", "top_channels"]).sizes


def _data(events: Sequence[WatchEvent], now: int, fs: FilterSet, name: str, **kw: Any) -> dict[str, Any]:
    results = compute_aggregations(
        events, now_ms=now, time_zone=kw.pop("tz", BERLIN), filter_sets=[fs], types=[name], **kw
    )
    data: dict[str, Any] = results[0].data
    return data


def test_registered() -> None:
    assert REGISTRY["monthly_trend"] is MonthlyTrendState
    assert REGISTRY["top_channels"] is TopChannelsState


@given(
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 6),
    months_cap=st.sampled_from([1, 2, 3, 240]),
    top_n=st.sampled_from([1, 2, 3, 10]),
    tz=st.sampled_from([BERLIN, "America/Goose_Bay", "Australia/Lord_Howe"]),
)
@settings(max_examples=60, deadline=None)
def test_random_appends_equal_full_computation(seed: int, steps: int, months_cap: int, top_n: int, tz: str) -> None:
    rng = random.Random(seed)
    # new channels and videos (ids sorting among the old ones) join as the history grows
    start = START - rng.choice((0, 40, 200)) * DAY
    batches, last = random_appends(rng, start, steps, first=80, size=30, channels=6, later_channels=rng.choice((6, 14)))
    now = last + rng.choice((MINUTE, HOUR, 2 * DAY))
    opts = AggregationOptions(months_cap=months_cap, top_n=top_n)
    assert assert_appends_match(batches, now_ms=[now] * len(batches), time_zone=tz, types=TYPES, options=opts) > 0


def test_empty_slice_becomes_non_empty(appended: dict[str, list[int]]) -> None:
    now = _ms(BERLIN, 2024, 5, 20, 12, 0)
    old = [_view(_ms(BERLIN, 2023, 1, 3, 10, 0), "UC1")]  # before every window but All
    music = [_view(_ms(BERLIN, 2024, 5, 2, 10, 0), "UC2", "m1", music=True)]  # first music view, in MTD
    later = [_view(_ms(BERLIN, 2024, 5, 3, 10, 0), "UC3", "v2"), _view(_ms(BERLIN, 2024, 5, 3, 10, 5), None, "v3")]
    no_channel = [
        _view(_ms(BERLIN, 2024, 5, 4, 9, 0), None, "v4"),
        WatchEvent(_ms(BERLIN, 2024, 5, 4, 9, 1), "removed"),
    ]
    batches = [[], old, music, later, no_channel]
    assert assert_appends_match(batches, now_ms=[now] * 5, types=TYPES) > 0
    # MTD slices (and every music slice) were empty until an append: extended from empty states
    assert any(n > 0 for n in appended["monthly_trend"]) and any(n > 0 for n in appended["top_channels"])
    events = [e for b in batches for e in b]
    top = _data(events, now, FilterSet("MTD", "all"), "top_channels")
    assert (top["totalViews"], top["attributedViews"], top["channelCount"]) == (5, 2, 2)
    trend = _data(events, now, FilterSet("All", "all"), "monthly_trend")
    assert [m["month"] for m in trend["months"]][:2] == ["2023-01", "2023-02"] and len(trend["months"]) == 17


def test_new_channel_sorting_among_old_ones_ties_by_id(appended: dict[str, list[int]]) -> None:
    t0 = _ms(BERLIN, 2024, 5, 2, 10, 0)
    now = _ms(BERLIN, 2024, 5, 20, 12, 0)
    first = [
        _view(t0 + i * MINUTE, ch, f"v{i}") for i, ch in enumerate(["UC0", "UC0", "UC2", "UC2", "UC4", "UC4", "UC6"])
    ]
    warm_up = [_view(t0 + 8 * MINUTE, "UC6", "v8")]  # states are built from this first append's slices
    # UC1 and UC3 are new ids between the old ones; UC1 reaches UC0/UC2's count, UC3 stays at one view
    second = [_view(t0 + (10 + i) * MINUTE, ch, f"w{i}") for i, ch in enumerate(["UC1", "UC3", "UC1"])]
    third = [_view(t0 + 30 * MINUTE, "UC6", "x"), _view(t0 + 31 * MINUTE, "UC5", "y")]
    batches = [first, warm_up, second, third]
    opts = AggregationOptions(top_n=3)
    assert assert_appends_match(batches, now_ms=[now] * 4, types=TYPES, options=opts) > 0
    assert max(appended["top_channels"]) > 0
    events = [e for b in batches for e in b]
    top = _data(events, now, FilterSet("All", "all"), "top_channels", options=opts)
    assert [c["channelId"] for c in top["channels"]] == ["UC6", "UC0", "UC1"]
    assert (top["channelCount"], top["truncated"]) == (7, True)


def test_ties_at_the_cap_change_with_appends(appended: dict[str, list[int]]) -> None:
    t0 = _ms(BERLIN, 2024, 5, 2, 10, 0)
    now = _ms(BERLIN, 2024, 5, 20, 12, 0)
    batches = [[_view(t0 + i * MINUTE, f"UC{i % 4}", f"v{i}") for i in range(8)]]  # four channels, two views each
    at = t0 + 20 * MINUTE
    # the first two (top_n = 2) after each append: UC3 UC0 | UC2 UC3 | UC3 UC0 | UC0 UC1 | UC2 UC0
    for channels in (["UC3"], ["UC2"], ["UC3", "UC0"], ["UC0", "UC1", "UC1"], ["UC2", "UC2"]):
        batches.append([_view(at + i * MINUTE, ch, "again") for i, ch in enumerate(channels)])
        at += 10 * MINUTE
    opts = AggregationOptions(top_n=2)
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=TYPES, options=opts) > 0
    assert len([n for n in appended["top_channels"] if n > 0]) >= len(batches) - 2
    top = _data([e for b in batches for e in b], now, FilterSet("All", "all"), "top_channels", options=opts)
    assert [(c["channelId"], c["views"]) for c in top["channels"]] == [("UC2", 5), ("UC0", 4)]
    assert (top["channelCount"], top["truncated"]) == (4, True)


def test_appends_cross_month_boundaries_with_a_small_months_cap(appended: dict[str, list[int]]) -> None:
    t0 = _ms(BERLIN, 2024, 1, 31, 23, 0)
    now = _ms(BERLIN, 2024, 5, 31, 23, 59)
    batches = [[_view(_ms(BERLIN, 2023, 11, 5, 9, 0), "UC1", "a"), _view(t0, "UC1", "a")]]
    # each batch crosses into the next month; the same video again in a new month is new to that month
    for month in (2, 3, 4, 5):
        end = _ms(BERLIN, 2024, month, 1, 0, 0) - 20 * MINUTE
        batches.append(
            [
                _view(end, "UC2", "a"),
                _view(_ms(BERLIN, 2024, month, 1, 0, 5), "UC1", "a"),
                _view(_ms(BERLIN, 2024, month, 1, 0, 7), "UC2", "b"),
            ]
        )
    opts = AggregationOptions(months_cap=2)
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=TYPES, options=opts) > 0
    assert any(n > 0 for n in appended["monthly_trend"])
    trend = _data([e for b in batches for e in b], now, FilterSet("All", "all"), "monthly_trend", options=opts)
    assert trend["truncated"] is True
    assert trend["months"] == [
        {"month": "2024-04", "views": 3, "uniqueVideos": 2, "uniqueChannels": 2},
        {"month": "2024-05", "views": 2, "uniqueVideos": 2, "uniqueChannels": 2},
    ]


def test_window_start_between_appended_views(appended: dict[str, list[int]]) -> None:
    now = _ms(BERLIN, 2024, 4, 10, 12, 0)  # MTD starts on 1 April, QTD too, YTD on 1 January
    batches = [
        [_view(_ms(BERLIN, 2023, 12, 20, 10, 0), "UC1", "a")],
        [_view(_ms(BERLIN, 2023, 12, 21, 10, 0), "UC2", "b")],  # states are built from this first append's slices
        [
            _view(_ms(BERLIN, 2023, 12, 31, 23, 50), "UC1", "a"),  # outside YTD, its video seen again inside
            _view(_ms(BERLIN, 2024, 1, 1, 0, 10), "UC1", "a"),
            _view(_ms(BERLIN, 2024, 3, 31, 23, 50), "UC2", "b"),  # outside MTD and QTD
            _view(_ms(BERLIN, 2024, 4, 1, 0, 10), "UC2", "b"),
            _view(_ms(BERLIN, 2024, 4, 1, 0, 20), "UC3", "a"),
        ],
        [_view(_ms(BERLIN, 2024, 4, 2, 9, 0), "UC2", "b")],
    ]
    assert assert_appends_match(batches, now_ms=[now] * 4, types=TYPES) > 0
    assert 2 in appended["monthly_trend"]  # MTD's slice got two of the first append's five views
    events = [e for b in batches for e in b]
    ytd = _data(events, now, FilterSet("YTD", "all"), "monthly_trend")
    assert [m["month"] for m in ytd["months"]] == ["2024-01", "2024-02", "2024-03", "2024-04"]
    assert ytd["months"][0] == {"month": "2024-01", "views": 1, "uniqueVideos": 1, "uniqueChannels": 1}


def test_music_only_base(appended: dict[str, list[int]]) -> None:
    rng = random.Random(11)
    base = [e for e in random_views(rng, START, 200, channels=10) if e.product == "youtube_music"]
    batches: list[list[WatchEvent]] = [base]
    last = base[-1].watched_at_ms
    for step in range(6):
        batch = random_views(rng, last, 12, channels=14, videos=50)
        if step % 2:  # some appends bring no music view: the music slices extend by nothing
            batch = [e for e in batch if e.product != "youtube_music"]
        batches.append(batch)
        last = batch[-1].watched_at_ms
    music = [fs for fs in EAGER_FILTER_SETS if fs.product == "youtube_music"]
    opts = AggregationOptions(top_n=3, months_cap=3)
    assert assert_appends_match(
        batches, now_ms=[last + HOUR] * len(batches), filter_sets=music, types=TYPES, options=opts
    )
    assert 0 in appended["top_channels"] and any(n > 0 for n in appended["top_channels"])


def test_local_month_going_back_at_a_fall_back_transition(appended: dict[str, list[int]]) -> None:
    # Goose Bay left DST at 00:01 on 1 November 2009: local time went back from 00:01 to 23:01 on 31 October
    tz = "America/Goose_Bay"
    transition = 1_257_044_460_000  # 2009-11-01T03:01Z
    batches = [
        [_view(transition - 30 * MINUTE, "UC1", "a")],  # 31 Oct 23:31
        [_view(transition - 30_000, "UC1", "b")],  # 1 Nov 00:00; states are built from this first append's slices
        [_view(transition + 30 * MINUTE, "UC2", "a")],  # 31 Oct 23:31 again, after a November view
        [_view(transition + 2 * HOUR, "UC2", "c")],  # 1 Nov 01:01
    ]
    now = transition + 3 * HOUR
    assert assert_appends_match(batches, now_ms=[now] * 4, time_zone=tz, types=TYPES) > 0
    assert any(n > 0 for n in appended["monthly_trend"])
    trend = _data([e for b in batches for e in b], now, FilterSet("All", "all"), "monthly_trend", tz=tz)
    assert trend["months"] == [
        {"month": "2009-10", "views": 2, "uniqueVideos": 1, "uniqueChannels": 2},
        {"month": "2009-11", "views": 2, "uniqueVideos": 2, "uniqueChannels": 2},
    ]


def test_mtd_slice_starting_with_a_later_month_than_an_appended_view(appended: dict[str, list[int]]) -> None:
    # the MTD slice (November) holds one view; the next append's local month is October: the state's
    # months widen to the left
    tz = "America/Goose_Bay"
    transition = 1_257_044_460_000
    batches = [
        [_view(transition - 10 * DAY, "UC1", "a")],
        [_view(transition - 30_000, "UC1", "b")],  # states are built from this first append's slices
        [_view(transition + 30 * MINUTE, "UC2", "a"), _view(transition + 40 * MINUTE, "UC1", "b")],
    ]
    now = transition + 3 * HOUR
    assert assert_appends_match(batches, now_ms=[now] * 3, time_zone=tz, types=TYPES) > 0
    assert 2 in appended["monthly_trend"]
