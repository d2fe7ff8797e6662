"""The append fast path of session_analysis and viewing_patterns equals their full computation."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.aggregation.agg_support import ms
from tests.unit.aggregation.incremental_support import (
    DAY,
    HOUR,
    MINUTE,
    StateCalls,
    assert_appends_match,
    random_appends,
    random_views,
    spy_states,
)
from worker.aggregation import EAGER_FILTER_SETS, FilterSet, compute_aggregations
from worker.aggregation.engine import _BaseViews
from worker.aggregation.frame import build_frame
from worker.aggregation.incremental import REGISTRY
from worker.aggregation.incremental.core import StableCodes
from worker.aggregation.incremental.sessions import SessionAnalysisState, SortedInts, ViewingPatternsState
from worker.aggregation.options import AggregationOptions
from worker.aggregation.timeframes import load_zone, make_clock, resolve_window
from worker.models import WatchEvent

TYPES = ["session_analysis", "viewing_patterns"]
START = 1_700_000_000_000  # 2023-11-14
TZ = "Europe/Berlin"


def _view(at: int, channel: str | None = "UC100", *, video: str = "v", product: str = "youtube") -> WatchEvent:
    return WatchEvent(
        watched_at_ms=at,
        video_id=f"{video}{at % 997}",
        title="gaming walkthrough",
        channel_id=channel,
        product=product,  # type: ignore[arg-type]
    )


@pytest.fixture
def extends(monkeypatch: pytest.MonkeyPatch) -> StateCalls:
    return spy_states(monkeypatch, ["session_analysis", "viewing_patterns"])


def test_registered() -> None:
    assert REGISTRY["session_analysis"] is SessionAnalysisState
    assert REGISTRY["viewing_patterns"] is ViewingPatternsState


# -- the order-statistics structure -------------------------------------------------------------------


@given(
    initial=st.lists(st.integers(0, 30), max_size=40),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("insert"), st.lists(st.integers(0, 30), max_size=6)),
            st.tuples(st.just("replace"), st.integers(0, 1000), st.integers(0, 30)),
        ),
        max_size=30,
    ),
)
@settings(max_examples=200, deadline=None)
def test_sorted_ints_match_a_sorted_list(initial: list[int], ops: list[Any]) -> None:
    held = SortedInts(np.array(initial, dtype=np.int64))
    want = sorted(initial)
    for op in ops:
        if op[0] == "insert":
            held.insert(np.array(op[1], dtype=np.int64))
            want = sorted(want + op[1])
        elif want:
            old = want[op[1] % len(want)]
            held.replace(old, op[2])
            want.remove(old)
            want = sorted([*want, op[2]])
        assert held.buf[: held.size].tolist() == want
        if want:
            n = len(want)
            assert held.stats(sum(want)) == (sum(want), want[(n - 1) // 2], want[n // 2], want[-1])


def test_sorted_ints_refuse_to_replace_a_value_not_held() -> None:
    held = SortedInts(np.array([1, 3], dtype=np.int64))
    with pytest.raises(ValueError, match="not held"):
        held.replace(2, 5)
    assert SortedInts(np.zeros(0, dtype=np.int64)).stats(0) == (0, 0, 0, 0)


# -- appends against the full computation ------------------------------------------------------------

_options = st.builds(
    AggregationOptions,
    session_gap_ms=st.sampled_from((10 * MINUTE, 30 * MINUTE, 3 * HOUR)),
    watch_time_cap_ms=st.sampled_from((0, 5 * MINUTE, 20 * MINUTE)),
    last_view_estimate_ms=st.sampled_from((0, 5 * MINUTE)),
    binge_min_views=st.sampled_from((1, 2, 5)),
    binge_min_span_ms=st.sampled_from((0, 20 * MINUTE, 2 * HOUR)),
    pattern_min_views=st.sampled_from((1, 20)),
)


@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 6), options=_options)
@settings(max_examples=60, deadline=None)
def test_random_appends_equal_full_computation(seed: int, steps: int, options: AggregationOptions) -> None:
    rng = random.Random(seed)
    batches, last = random_appends(rng, START, steps, first=120)
    now = last + rng.choice((MINUTE, HOUR, 3 * DAY))
    nows = [now if rng.random() < 0.8 else now + DAY for _ in batches]
    assert assert_appends_match(batches, now_ms=nows, types=TYPES, options=options) > 0


def test_a_continued_last_session_moves_through_the_order_statistics(extends: StateCalls) -> None:
    # sessions of 1, 1, 3 and 3 views; then the last one grows a view at a time past every other one
    # (median, max, binge flag and estimated minutes of that one session change), then new ones follow
    first: list[WatchEvent] = []
    at = START
    for size in (1, 1, 3, 3):
        for _ in range(size):
            first.append(_view(at))
            at += 10 * MINUTE
        at += 2 * HOUR
    at -= 2 * HOUR + 10 * MINUTE  # the last view of the last session
    batches: list[list[WatchEvent]] = [first]
    for _ in range(6):
        at += 25 * MINUTE
        batches.append([_view(at)])
    at += 3 * HOUR
    batches.append([_view(at), _view(at + MINUTE), _view(at + 3 * HOUR)])  # two new sessions
    batches.append([_view(at + 3 * HOUR + 5 * MINUTE)])  # the new last one continued
    now = at + 5 * HOUR
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=TYPES) > 0
    assert extends.joined["session_analysis"] >= 7 and extends.joined["viewing_patterns"] >= 7
    whole = compute_aggregations(
        [e for b in batches for e in b],
        now_ms=now,
        time_zone=TZ,
        filter_sets=[FilterSet("All", "all")],
        types=["session_analysis"],
    )
    data = whole[0].data
    assert data["sessionCount"] == 6 and data["maxViews"] == 9 and data["medianViews"] == 2.0


def test_empty_slices_that_fill(extends: StateCalls) -> None:
    # no views at all, then only YouTube views (the music base stays empty), then music views
    at = START
    youtube = [_view(at + i * 7 * MINUTE) for i in range(5)]
    music = [_view(at + HOUR + i * 3 * MINUTE, product="youtube_music") for i in range(4)]
    later = [_view(at + 2 * DAY, "UC200", product="youtube_music"), _view(at + 2 * DAY + MINUTE)]
    batches: list[list[WatchEvent]] = [[], youtube, [], music, later]
    now = at + 3 * DAY
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=TYPES) > 0
    assert extends.appended["session_analysis"] > 0 and extends.appended["viewing_patterns"] > 0


def test_a_new_channel_sorting_among_the_old_ones_enters_the_top(extends: StateCalls) -> None:
    # six channels with tied counts (the top 5 is a tie), then a channel whose id sorts between
    # theirs overtakes them, then an old one catches up
    at = START
    first = []
    for i, ch in enumerate(("UC010", "UC030", "UC050", "UC070", "UC090", "UC110")):
        for j in range(3 + (i == 0)):
            first.append(_view(at, ch))
            at += (j + 1) * 11 * MINUTE
        at += DAY
    batches = [first]
    for k in range(6):
        at += 17 * MINUTE if k % 2 else 9 * HOUR
        batches.append([_view(at, "UC040"), _view(at + MINUTE, None), _view(at + 2 * MINUTE, "UC040")])
    at += HOUR
    batches.append([_view(at + i * MINUTE, "UC110") for i in range(12)])
    opts = AggregationOptions(pattern_min_views=1, binge_min_views=3)
    assert assert_appends_match(batches, now_ms=[at + DAY] * len(batches), types=TYPES, options=opts) > 0
    assert extends.appended["viewing_patterns"] > 0


def _month_batches(rng: random.Random, end_ms: int) -> tuple[list[list[WatchEvent]], int]:
    """Views before ``end_ms`` − 5 days, then appends up to ``end_ms`` − 10 h, one session crossing
    ``end_ms`` (a local month start), then appends after it; returns the batches and the last instant."""
    batches = [[e for e in random_views(rng, end_ms - 90 * DAY, 150) if e.watched_at_ms < end_ms - 5 * DAY]]
    at = end_ms - 5 * DAY
    for step in range(5):
        batch = []
        if step == 2:
            at = end_ms + 10 * MINUTE
            batch = [_view(end_ms - 10 * MINUTE, "UC001"), _view(at, "UC002")]
        for _ in range(rng.randrange(1, 12)):  # at most 55 h per batch
            at += rng.choice((MINUTE, 13 * MINUTE, 29 * MINUTE, 5 * HOUR))
            batch.append(_view(at, f"UC{rng.randrange(9):03d}", product=rng.choice(("youtube", "youtube_music"))))
        batches.append(batch)
    return batches, at


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_appends_across_a_month_start_inside_the_window(seed: int, extends: StateCalls) -> None:
    # "now" is in December: MTD starts between appended views, and a session crossing the month
    # start is cut there in MTD but not in the longer windows
    rng = random.Random(seed)
    december = ms("2023-12-01T00:00", TZ)
    batches, last = _month_batches(rng, december)
    filter_sets = [*EAGER_FILTER_SETS, FilterSet("MTD", "all", channels=("UC001", "UC002"))]
    assert (
        assert_appends_match(
            batches, now_ms=[last + HOUR] * len(batches), time_zone=TZ, filter_sets=filter_sets, types=TYPES
        )
        > 0
    )
    assert extends.appended["session_analysis"] > 0


def test_small_thresholds_and_ties() -> None:
    rng = random.Random(11)
    batches = [random_views(rng, START, 60, channels=6)]
    last = batches[0][-1].watched_at_ms
    for _ in range(8):
        batch = random_views(rng, last, 15, channels=7, videos=20)
        batches.append(batch)
        last = batch[-1].watched_at_ms
    opts = AggregationOptions(
        session_gap_ms=20 * MINUTE,
        watch_time_cap_ms=3 * MINUTE,
        last_view_estimate_ms=MINUTE,
        binge_min_views=2,
        binge_min_span_ms=10 * MINUTE,
        pattern_min_views=1,
    )
    assert assert_appends_match(batches, now_ms=[last + MINUTE] * len(batches), types=TYPES, options=opts) > 0


def test_music_only_base(extends: StateCalls) -> None:
    rng = random.Random(5)
    at = START
    batches: list[list[WatchEvent]] = []
    for _ in range(6):
        batch = []
        for _ in range(rng.randrange(3, 15)):
            at += rng.choice((2 * MINUTE, 20 * MINUTE, 40 * MINUTE, 3 * HOUR))
            batch.append(_view(at, f"UC{rng.randrange(4):03d}", product="youtube_music"))
        batches.append(batch)
    sets: Sequence[FilterSet] = [FilterSet(tf, "youtube_music") for tf in ("MTD", "Last12M", "All")]
    assert assert_appends_match(batches, now_ms=[at + HOUR] * len(batches), filter_sets=sets, types=TYPES) > 0
    assert extends.joined["session_analysis"] > 0


def test_states_report_their_memory() -> None:
    rng = random.Random(3)
    events = random_views(rng, START, 200, channels=30)
    zone = load_zone(TZ)
    frame = build_frame(events, zone)
    opts = AggregationOptions()
    clock = make_clock(events[-1].watched_at_ms + HOUR, zone, opts.recent_days)
    fs = FilterSet("All", "all")
    view = _BaseViews(frame, [fs], [resolve_window("All", clock)], clock, opts, None).view(0)
    codes = StableCodes.identity(frame)
    analysis = SessionAnalysisState.from_slice(view, codes)
    patterns = ViewingPatternsState.from_slice(view, codes)
    assert analysis.nbytes >= 3 * 8 * view.sessions.count
    assert patterns.nbytes >= 8 * len(frame.channel_ids)
