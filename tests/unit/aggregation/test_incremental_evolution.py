"""The append fast path of channel_evolution gives exactly the results of a full computation."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.aggregation.incremental_support import DAY, HOUR, MINUTE, assert_appends_match, random_views, spy_states
from worker.aggregation import TIMEFRAMES, FilterSet
from worker.aggregation.incremental import evolution
from worker.aggregation.options import AggregationOptions
from worker.models import Product, WatchEvent

TYPES = ["channel_evolution"]
START = 1_700_000_000_000  # 2023-11-14
SMALL = AggregationOptions(top_n=2, months_cap=3, trend_months=1)
MUSIC = [FilterSet(timeframe, "youtube_music") for timeframe in TIMEFRAMES]


def ms(text: str) -> int:
    """Return the epoch ms of an ISO UTC instant."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def view(at: int, channel: str | None, *, video: str = "v", product: Product = "youtube") -> WatchEvent:
    return WatchEvent(
        watched_at_ms=at,
        video_id=f"{video}{at}",
        title="clip",
        channel_id=channel,
        channel_name=None if channel is None else f"{channel} name",
        product=product,
    )


def spaced(first: int, step: int, channels: Sequence[str | None], *, product: Product = "youtube") -> list[WatchEvent]:
    """Return one view per entry of ``channels``, ``step`` ms apart from ``first``."""
    return [view(first + i * step, c, product=product) for i, c in enumerate(channels)]


@pytest.fixture
def extends(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Record the state's extend calls (each test checks the fast path really ran)."""
    calls = spy_states(monkeypatch, ["channel_evolution"]).sizes["channel_evolution"]
    yield calls
    assert calls, "the fast path never extended a channel_evolution state"


def random_batches(
    rng: random.Random, steps: int, first_n: int, *, start: int = START
) -> tuple[list[list[WatchEvent]], int]:
    batches = [random_views(rng, start, first_n)]
    last = max([e.watched_at_ms for e in batches[0]], default=start)
    for _ in range(steps):
        batch = random_views(rng, last, rng.randrange(0, 25), channels=14, videos=60)
        batches.append(batch)
        last = max([e.watched_at_ms for e in batch], default=last)
    return batches, last


@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 6), small=st.booleans())
@settings(max_examples=60, deadline=None)
def test_appends_equal_full_computation(seed: int, steps: int, small: bool) -> None:
    rng = random.Random(seed)
    batches, last = random_batches(rng, steps, rng.randrange(0, 150), start=START - rng.choice((0, 90, 400)) * DAY)
    now = last + rng.choice((MINUTE, HOUR, 3 * DAY, 40 * DAY))
    nows = [now if rng.random() < 0.85 else now + DAY for _ in batches]
    assert assert_appends_match(batches, now_ms=nows, types=TYPES, options=SMALL if small else None) > 0


def test_empty_slice_becomes_non_empty(extends: list[int]) -> None:
    # the first batches are months before now: the states of the MTD/QTD slices (and of every music
    # slice) are built empty at the first append, then later appends fill them
    now = ms("2023-11-20T12:00")
    batches = [
        spaced(ms("2023-03-01T10:00"), HOUR, ["UC003", "UC001", None, "UC003"]),
        spaced(ms("2023-04-01T10:00"), HOUR, ["UC003", "UC004"]),
        spaced(ms("2023-10-30T10:00"), DAY, ["UC002", None, "UC005"], product="youtube_music"),  # two months
        spaced(ms("2023-11-02T10:00"), 7 * MINUTE, ["UC002", "UC003"]),
        spaced(ms("2023-11-07T10:00"), 7 * MINUTE, ["UC009", "UC009", "UC001"], product="youtube_music"),
    ]
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=TYPES) > 0
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=TYPES, options=SMALL) > 0


def test_empty_history_then_views(extends: list[int]) -> None:
    now = ms("2023-11-20T12:00")
    batches = [
        [],
        [view(ms("2023-11-01T10:00"), None)],  # one view without a channel: no listed channel yet
        spaced(ms("2023-11-02T10:00"), MINUTE, ["UC5"]),
        spaced(ms("2023-11-03T10:00"), MINUTE, ["UC1", "UC5"]),
    ]
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=TYPES) > 0


def test_new_channel_sorting_among_old_ones_ties_by_id(extends: list[int]) -> None:
    # UC2 and UC4 tie at 2 views; UC3 (a new id between them) reaches 2 views: it must rank between
    first = spaced(ms("2023-10-01T10:00"), HOUR, ["UC4", "UC2", "UC4", "UC2", "UC5"])
    now = ms("2023-11-20T12:00")
    batches = [
        first,
        spaced(ms("2023-11-01T10:00"), MINUTE, ["UC3"]),
        spaced(ms("2023-11-02T10:00"), MINUTE, ["UC3", "UC1"]),  # UC3 ties UC2 and UC4: id order UC2 < UC3 < UC4
        spaced(ms("2023-11-03T10:00"), MINUTE, ["UC1", "UC0"]),  # UC1 ties too: it now leads the ties
    ]
    for options in (AggregationOptions(top_n=2), AggregationOptions(top_n=3), None):
        assert assert_appends_match(batches, now_ms=[now] * 4, types=TYPES, options=options) > 0


def test_appends_crossing_month_boundaries(extends: list[int]) -> None:
    rng = random.Random(11)
    first = random_views(rng, ms("2023-08-01T00:00"), 80)
    last = first[-1].watched_at_ms
    batches: list[list[WatchEvent]] = [first]
    for _ in range(6):  # ~10 days per batch: every batch or so enters a new month
        batch = spaced(last + 3 * DAY, 2 * DAY, [f"UC{rng.randrange(9)}" for _ in range(4)])
        batches.append(batch)
        last = batch[-1].watched_at_ms
    # now before the last appends (views in later months than the current one: no trend window) and after
    for now in (ms("2023-09-20T12:00"), last + HOUR):
        assert assert_appends_match(batches, now_ms=[now] * len(batches), types=TYPES, options=SMALL) > 0
        assert assert_appends_match(batches, now_ms=[now] * len(batches), types=TYPES) > 0


def test_small_caps_truncate_channels_and_months(extends: list[int]) -> None:
    rng = random.Random(5)
    batches, last = random_batches(rng, 6, 200, start=START - 300 * DAY)
    options = AggregationOptions(top_n=1, months_cap=1, trend_months=2, trend_ratio=0.0)
    assert assert_appends_match(batches, now_ms=[last + HOUR] * len(batches), types=TYPES, options=options) > 0
    assert assert_appends_match(batches, now_ms=[last + HOUR] * len(batches), types=TYPES, options=SMALL) > 0


def test_months_cap_moves_the_axis_start(extends: list[int]) -> None:
    # months_cap 3: every month-crossing append drops the oldest month of the axis
    first = spaced(ms("2023-01-10T10:00"), 20 * DAY, ["UC1", "UC2", "UC1", "UC3", "UC2"])
    batches = [first] + [spaced(ms(f"2023-{m:02d}-10T10:00"), HOUR, ["UC2", "UC4", "UC1"]) for m in (5, 6, 7, 8)]
    assert assert_appends_match(batches, now_ms=[ms("2023-08-20T00:00")] * 5, types=TYPES, options=SMALL) > 0


def test_music_only_base(extends: list[int]) -> None:
    rng = random.Random(3)
    batches, last = random_batches(rng, 5, 120)
    music = [
        [view(e.watched_at_ms, e.channel_id, product="youtube_music") for e in b if e.channel_id] for b in batches[1:]
    ]
    nows = [last + HOUR] * len(batches)
    assert assert_appends_match([batches[0], *music], now_ms=nows, types=TYPES, filter_sets=MUSIC) > 0
    assert assert_appends_match([batches[0], *music], now_ms=nows, types=TYPES, filter_sets=MUSIC, options=SMALL) > 0


def test_window_start_between_appended_views(extends: list[int]) -> None:
    # the appended batch straddles the current month's start (MTD) and the quarter's (QTD)
    first = spaced(ms("2023-08-20T10:00"), DAY, ["UC1", "UC2", "UC1", "UC2", "UC3"])
    straddling = spaced(ms("2023-09-29T10:00"), DAY, ["UC3", "UC3", "UC4", "UC2", "UC4", "UC4"])
    later = spaced(ms("2023-10-10T10:00"), HOUR, ["UC2", "UC5"])
    now = ms("2023-10-12T00:00")
    batches = [first, straddling, later]
    assert assert_appends_match(batches, now_ms=[now] * 3, types=TYPES) > 0
    assert assert_appends_match(batches, now_ms=[now] * 3, types=TYPES, options=SMALL) > 0


def test_channel_and_topic_filters(extends: list[int]) -> None:
    rng = random.Random(17)
    batches, last = random_batches(rng, 5, 150)
    sets = [FilterSet(tf, "all", channels=("UC001", "UC004", "UC011")) for tf in TIMEFRAMES]
    sets += [FilterSet(tf, "youtube", topics=("gaming", "music")) for tf in ("All", "MTD")]
    assert assert_appends_match(batches, now_ms=[last + HOUR] * len(batches), types=TYPES, filter_sets=sets) > 0


def test_compaction_of_appended_months(extends: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    # merge the appended (channel, month) counts on every append, with a truncated axis
    monkeypatch.setattr(evolution, "_COMPACT_MIN_PAIRS", 0)
    rng = random.Random(23)
    batches, last = random_batches(rng, 8, 100, start=START - 200 * DAY)
    grown = [spaced(last + 30 * DAY * (i + 1), 5 * DAY, ["UC001", "UC002", "UC013"]) for i in range(3)]
    last = grown[-1][-1].watched_at_ms
    nows = [last + HOUR] * (len(batches) + len(grown))
    assert assert_appends_match([*batches, *grown], now_ms=nows, types=TYPES, options=SMALL) > 0
    assert assert_appends_match([*batches, *grown], now_ms=nows, types=TYPES) > 0


def test_local_month_going_back_at_a_dst_end(extends: list[int]) -> None:
    # Goose Bay left DST at 00:01 local on 2009-11-01: a view at 00:00:30 (November) is followed by
    # views at 23:0x on 31 October: the slice's first month moves back, a channel's first view is in
    # the later month
    nov = ms("2009-11-01T03:00:00")  # 00:00 local; the clock goes back at 03:01 UTC
    batches = [
        [view(nov, "UC2")],
        [view(nov + 30_000, "UC3")],  # the states are built at the first append: still November
        [view(nov + 2 * MINUTE, "UC1"), view(nov + 4 * MINUTE, "UC2")],  # 31 October, 23:01 on
        [view(nov + 40 * MINUTE, "UC1")],
    ]
    now = ms("2009-11-20T12:00")
    for options in (None, AggregationOptions(months_cap=1, trend_months=1)):
        assert (
            assert_appends_match(batches, now_ms=[now] * 4, time_zone="America/Goose_Bay", types=TYPES, options=options)
            > 0
        )


def test_nbytes_counts_the_appended_months() -> None:
    """The base's monthly views count the appended (channel, month) entries held in dicts."""
    from worker.aggregation.incremental.core import StableCodes
    from worker.aggregation.partition import build_month_partitions, merge_partitions
    from worker.aggregation.slices import Slice
    from worker.aggregation.timeframes import load_zone, make_clock, resolve_window

    zone = load_zone("UTC")
    frame = merge_partitions(build_month_partitions(spaced(START, HOUR, ["UC1", "UC2", "UC1"]), zone).values())
    clock = make_clock(START + DAY, zone)
    rows = np.arange(frame.size, dtype=np.int64)
    whole = Slice(frame, rows, rows, clock, resolve_window("All", clock), AggregationOptions(), start=0)
    months = evolution.ChannelMonths(whole, StableCodes.identity(frame))
    held = months.nbytes
    assert held >= 3 * 2 * 4
    months.added, months.added_pairs = {1: {5: 2, 6: 1}}, 2
    assert months.nbytes > held + 2 * 64
