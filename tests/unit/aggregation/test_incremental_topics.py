"""The incremental states of topics_leaderboard, topic_evolution and topic_diversity give exactly the
results of the full functions (worker.aggregation.incremental.topics)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.aggregation.incremental_support import DAY, HOUR, MINUTE, assert_appends_match, random_views, spy_states
from worker.aggregation import EAGER_FILTER_SETS, FilterSet
from worker.aggregation.incremental import REGISTRY
from worker.aggregation.incremental import topics as inc
from worker.aggregation.options import AggregationOptions
from worker.models import Product, WatchEvent

TYPES = ["topics_leaderboard", "topic_evolution", "topic_diversity"]
START = 1_700_000_000_000  # 2023-11-14
BERLIN = ZoneInfo("Europe/Berlin")

# a music-only base, topic filters (one with a topic the views never have), channel filters
EXTRA_SETS = (
    FilterSet("All", "youtube_music", topics=("music",)),
    FilterSet("Last6M", "all", topics=("gaming", "technology")),
    FilterSet("MTD", "all", topics=("kids",)),
    FilterSet("All", "youtube", channels=("UC001", "UC0005", "UC007")),
    FilterSet("YTD", "all", channels=("UC002",)),
)
SETS = (*EAGER_FILTER_SETS, *EXTRA_SETS)


def _ms(year: int, month: int, day: int, hour: int = 12) -> int:
    return int(datetime(year, month, day, hour, tzinfo=BERLIN).timestamp() * 1000)


def _view(at: int, title: str | None, channel: str | None = "UC001", product: Product = "youtube") -> WatchEvent:
    return WatchEvent(
        watched_at_ms=at, video_id=f"v{at}", title=title, channel_id=channel, channel_name=channel, product=product
    )


@pytest.fixture
def extends(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the ``extend`` calls of the states with appended views of their slice (the fast path taken)."""
    return spy_states(monkeypatch, TYPES).appended


def _batches(rng: random.Random, first: int, steps: int, sizes: tuple[int, int]) -> list[list[WatchEvent]]:
    batches = [random_views(rng, START, first)]
    last = max([e.watched_at_ms for e in batches[0]], default=START)
    for _ in range(steps):
        batch = random_views(rng, last, rng.randrange(*sizes), channels=12, videos=60)
        batches.append(batch)
        last = max([e.watched_at_ms for e in batch], default=last)
    return batches


def test_registered() -> None:
    assert {name: REGISTRY[name] for name in TYPES} == inc.INCREMENTAL


@given(
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(2, 5),
    months_cap=st.sampled_from((1, 2, 5, 240)),
    trend_months=st.sampled_from((1, 3)),
)
@settings(max_examples=40, deadline=None)
def test_appends_equal_full_computation(seed: int, steps: int, months_cap: int, trend_months: int) -> None:
    rng = random.Random(seed)
    batches = _batches(rng, rng.randrange(0, 120), steps, (0, 25))
    last = max(e.watched_at_ms for batch in batches for e in batch) if any(batches) else START
    now = last + rng.choice((MINUTE, HOUR, 3 * DAY, 40 * DAY))
    nows = [now if rng.random() < 0.8 else now + DAY for _ in batches]
    options = AggregationOptions(months_cap=months_cap, trend_months=trend_months)
    assert assert_appends_match(batches, now_ms=nows, filter_sets=SETS, types=TYPES, options=options) > 0


def test_empty_slice_becomes_non_empty(extends: dict[str, int]) -> None:
    # states built over empty slices (no music yet; MTD of a history of earlier months), then extended
    now = _ms(2024, 3, 20)
    first = [_view(_ms(2023, 12, 10), "gaming walkthrough")]
    second = [_view(_ms(2024, 1, 10), "gaming walkthrough"), _view(_ms(2024, 2, 2), "easy pasta recipe")]
    third = [
        _view(_ms(2024, 3, 1, 1), "gaming walkthrough"),
        _view(_ms(2024, 3, 19), "home workout", None),
        _view(_ms(2024, 3, 19, 20), "official music video", product="youtube_music"),
    ]
    fourth = [_view(_ms(2024, 3, 20, 1), "untitled clip", product="youtube_music")]
    batches: list[Sequence[WatchEvent]] = [first, second, third, fourth]
    assert assert_appends_match(batches, now_ms=[now] * 4, filter_sets=SETS, types=TYPES) > 0
    assert all(extends[name] for name in TYPES)


def test_empty_history_then_views(extends: dict[str, int]) -> None:
    rng = random.Random(1)
    views = random_views(rng, START, 40)
    later = random_views(rng, views[-1].watched_at_ms, 10)
    batches: list[Sequence[WatchEvent]] = [[], views, later]
    now = later[-1].watched_at_ms + HOUR
    assert assert_appends_match(batches, now_ms=[now] * 3, filter_sets=SETS, types=TYPES) > 0
    assert all(extends[name] for name in TYPES)


def test_new_channel_sorting_among_old_ones(extends: dict[str, int]) -> None:
    rng = random.Random(3)
    batches: list[Sequence[WatchEvent]] = [random_views(rng, START, 80)]
    batches.append(random_views(rng, batches[0][-1].watched_at_ms, 10))
    last = batches[1][-1].watched_at_ms
    grown = [_view(last + (i + 1) * MINUTE, t, "UC0005") for i, t in enumerate(("gaming walkthrough",) * 3)]
    batches.append(grown)
    batches.append(random_views(rng, grown[-1].watched_at_ms, 20, channels=12))
    now = batches[-1][-1].watched_at_ms + HOUR
    assert assert_appends_match(batches, now_ms=[now] * 4, filter_sets=SETS, types=TYPES) > 0
    assert all(extends[name] for name in TYPES)


@pytest.mark.parametrize("months_cap", [1, 2, 3, 240])
def test_appends_crossing_month_boundaries_with_small_caps(extends: dict[str, int], months_cap: int) -> None:
    # each append opens new months (one jumps further than the cap), so the month axis moves and drops rows
    titles = ("gaming walkthrough", "easy pasta recipe", "stand up comedy", "untitled clip")
    batches: list[Sequence[WatchEvent]] = [[_view(_ms(2023, 9, 28), titles[0]), _view(_ms(2023, 9, 30), titles[1])]]
    for month, day in ((10, 1), (10, 31), (11, 2), (12, 31), (4, 1)):
        year = 2024 if month == 4 else 2023
        batches.append([_view(_ms(year, month, day, h), titles[(h + month) % 4]) for h in (9, 10, 11, 23)])
    now = _ms(2024, 4, 3)
    options = AggregationOptions(months_cap=months_cap, trend_months=1)
    assert assert_appends_match(batches, now_ms=[now] * 6, filter_sets=SETS, types=TYPES, options=options) > 0
    assert all(extends[name] for name in TYPES)


def test_ties_are_ordered_like_the_full_functions(extends: dict[str, int]) -> None:
    # equal views per topic, equal window views: the order falls back to the slug; then one overtakes
    now = _ms(2024, 5, 20)
    base = [_view(_ms(2024, 5, 1 + i), t) for i, t in enumerate(("stand up comedy", "gaming walkthrough"))]
    first = [_view(_ms(2024, 5, 9), "football highlights")]
    tie = [_view(_ms(2024, 5, 10), "easy pasta recipe"), _view(_ms(2024, 5, 11), "home workout")]
    overtake = [_view(_ms(2024, 5, 12 + i), "stand up comedy") for i in range(2)]
    options = AggregationOptions(months_cap=1)
    batches: list[Sequence[WatchEvent]] = [base, first, tie, overtake]
    assert assert_appends_match(batches, now_ms=[now] * 4, filter_sets=SETS, types=TYPES, options=options) > 0
    assert all(extends[name] for name in TYPES)


def test_music_only_base(extends: dict[str, int]) -> None:
    rng = random.Random(11)
    batches: list[Sequence[WatchEvent]] = []
    last = START
    for n in (200, 60, 60):
        batch = [e for e in random_views(rng, last, n) if e.product == "youtube_music"]
        batches.append(batch)
        last = batch[-1].watched_at_ms
    sets = [FilterSet(t, "youtube_music") for t in ("All", "MTD", "Last12M")]
    options = AggregationOptions(months_cap=2)
    assert assert_appends_match(batches, now_ms=[last + HOUR] * 3, filter_sets=sets, types=TYPES, options=options)
    assert all(extends[name] for name in TYPES)


def test_window_start_between_appended_views(extends: dict[str, int]) -> None:
    # one append spans the MTD/QTD/Last6M starts and the leaderboard's previous window: some views count
    # only in the base's comparison and trend windows, the others in the slice too
    now = _ms(2024, 7, 2)
    history = [_view(_ms(2024, 1, 5 + i), "gaming walkthrough") for i in range(3)]
    spanning = [
        _view(_ms(2024, 5, 30), "easy pasta recipe"),
        _view(_ms(2024, 6, 1, 0), "gaming walkthrough"),
        _view(_ms(2024, 6, 30, 23), "stand up comedy"),
        _view(_ms(2024, 7, 1, 0), "stand up comedy"),
        _view(_ms(2024, 7, 1, 9), "easy pasta recipe"),
    ]
    # (states are built on the first append, extended from the second on)
    before = [_view(_ms(2024, 2, 1), "easy pasta recipe")]
    batches: list[Sequence[WatchEvent]] = [history, before, spanning, [_view(_ms(2024, 7, 2, 1), "home workout")]]
    options = AggregationOptions(trend_months=1)
    assert assert_appends_match(batches, now_ms=[now] * 4, filter_sets=SETS, types=TYPES, options=options) > 0
    assert all(extends[name] for name in TYPES)


def test_diversity_rows_use_the_full_functions_floats() -> None:
    # the state's monthly matrix is the full function's (same integers, C order): equal floats, not close ones
    rng = random.Random(5)
    counts = inc.MonthTopicCounts(np.zeros(18, dtype=np.int64), None, None, 0, np.zeros((0, 18), np.int64), 240)
    months = np.array(sorted(rng.randrange(600, 610) for _ in range(500)), dtype=np.int64)
    topics = np.array([rng.randrange(-1, 18) for _ in range(500)], dtype=np.int64)
    for lo in range(0, 500, 37):
        counts.add(months[lo : lo + 37], topics[lo : lo + 37])
    axis = counts.axis()
    matrix = counts.matrix(axis)
    assert matrix.flags.c_contiguous and matrix.dtype == np.int64
    sel = topics >= 0
    want = np.bincount((months[sel] - axis.first) * 18 + topics[sel], minlength=axis.size * 18).reshape(-1, 18)
    assert np.array_equal(matrix, want)
    assert np.array_equal(counts.views, np.bincount(topics[sel], minlength=18))
