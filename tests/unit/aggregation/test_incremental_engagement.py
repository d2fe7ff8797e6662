"""The append fast path of topic_engagement and topic_discovery equals a full computation."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.aggregation.agg_support import ms, removed, view
from tests.unit.aggregation.incremental_support import (
    DAY,
    HOUR,
    MINUTE,
    assert_appends_match,
    random_appends,
    random_views,
    spy_states,
)
from worker.aggregation import EAGER_FILTER_SETS, FilterSet, compute_aggregations, compute_from_frame
from worker.aggregation.derived import DerivedState
from worker.aggregation.incremental import REGISTRY
from worker.aggregation.incremental.engagement import TopicDiscoveryState, TopicEngagementState
from worker.aggregation.options import AggregationOptions
from worker.aggregation.partition import build_month_partitions, extend_frame, merge_partitions
from worker.aggregation.timeframes import load_zone
from worker.models import WatchEvent

TYPES = ("topic_engagement", "topic_discovery")
TZ = "Europe/Berlin"
GAMING = "gaming walkthrough"
COOKING = "easy pasta recipe"
COMEDY = "stand up comedy"
START = 1_700_000_000_000  # 2023-11-14

EXTRA_SETS = (
    FilterSet("All", "all", topics=("gaming",)),
    FilterSet("MTD", "youtube", channels=("UC001", "UC005")),
)


def at(local: str) -> int:
    """Return epoch ms of a Berlin local time."""
    return ms(local, TZ)


def run(
    batches: Sequence[Sequence[WatchEvent]],
    now: int,
    *,
    filter_sets: Sequence[FilterSet] = EAGER_FILTER_SETS,
    options: AggregationOptions | None = None,
) -> int:
    return assert_appends_match(
        batches, now_ms=[now] * len(batches), time_zone=TZ, filter_sets=filter_sets, types=TYPES, options=options
    )


def full(
    events: Sequence[WatchEvent], now: int, type_: str, fs: FilterSet, options: AggregationOptions | None = None
) -> dict[str, Any]:
    """Return one full result (to check that a scenario is the one the test means)."""
    (result,) = compute_aggregations(events, now_ms=now, time_zone=TZ, filter_sets=[fs], types=[type_], options=options)
    data: dict[str, Any] = result.data
    return data


def topic_row(data: dict[str, Any], slug: str) -> dict[str, Any]:
    (row,) = [r for r in data["topics"] if r["topic"] == slug]
    return row


@pytest.fixture
def extended(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the extends by appended views of the slice, per type (a test must go through the fast path)."""
    return spy_states(monkeypatch, TYPES).appended


def test_registered() -> None:
    assert REGISTRY["topic_engagement"] is TopicEngagementState
    assert REGISTRY["topic_discovery"] is TopicDiscoveryState


@given(
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(2, 5),
    binge_views=st.integers(1, 7),
    binge_span=st.sampled_from((0, 10 * MINUTE, 45 * MINUTE, 2 * HOUR)),
    gap=st.sampled_from((5 * MINUTE, 30 * MINUTE, 3 * HOUR)),
    recent_days=st.sampled_from((1, 3, 30, 200)),
)
@settings(max_examples=60, deadline=None)
def test_appends_equal_full_computation(
    seed: int, steps: int, binge_views: int, binge_span: int, gap: int, recent_days: int
) -> None:
    rng = random.Random(seed)
    batches, last = random_appends(rng, START, steps, first=100)
    options = AggregationOptions(
        session_gap_ms=gap, binge_min_views=binge_views, binge_min_span_ms=binge_span, recent_days=recent_days
    )
    now = last + rng.choice((MINUTE, HOUR, 3 * DAY))
    nows = [now if rng.random() < 0.9 else now + DAY for _ in batches]
    sets = (*EAGER_FILTER_SETS, *EXTRA_SETS)
    assert_appends_match(batches, now_ms=nows, filter_sets=sets, types=TYPES, options=options)


def test_last_session_grows_into_a_binge_session_by_views(extended: dict[str, int]) -> None:
    opts = AggregationOptions(binge_min_views=5)
    old = [view(at("2024-01-02T10:00"), "UC1", title=GAMING)]
    # the slice's last session: 4 views (3 gaming, 1 cooking), not a binge session yet
    start = at("2024-01-10T20:00")
    session = [view(start + i * 10 * MINUTE, "UC1", title=GAMING if i < 3 else COOKING) for i in range(4)]
    grow = [view(start + 40 * MINUTE, "UC2", title=COMEDY)]  # the fifth view: the whole session is a binge
    now = at("2024-01-20T12:00")
    fs = FilterSet("All", "all")
    before = full([*old, *session], now, "topic_engagement", fs, opts)
    after = full([*old, *session, *grow], now, "topic_engagement", fs, opts)
    assert topic_row(before, "gaming")["bingeShare"] == 0.0
    assert topic_row(after, "gaming")["bingeShare"] == 0.75  # the earlier views became binge views
    assert topic_row(after, "food_cooking")["bingeShare"] == 1.0
    assert run([old, session, grow], now, options=opts) > 0
    assert extended["topic_engagement"] > 0


def test_last_session_grows_into_a_binge_session_by_span(extended: dict[str, int]) -> None:
    opts = AggregationOptions(binge_min_views=100, binge_min_span_ms=2 * HOUR)
    start = at("2024-01-10T20:00")
    old = [view(start - 3 * DAY, "UC1", title=GAMING)]
    session = [view(start + i * 29 * MINUTE, "UC1", title=GAMING) for i in range(4)]  # span 87 min
    grow = [view(start + 116 * MINUTE, "UC1", title=GAMING), view(start + 125 * MINUTE, "UC3", title=COMEDY)]
    later = [view(start + 2 * DAY, "UC1", title=GAMING)]  # closes the binge session
    now = at("2024-01-20T12:00")
    fs = FilterSet("All", "all")
    assert (
        topic_row(full([*old, *session, *grow], now, "topic_engagement", fs, opts), "gaming")["bingeShare"] == 0.833333
    )
    assert run([old, session, grow, later], now, options=opts) > 0
    assert extended["topic_engagement"] > 0


def test_sessions_closed_and_opened_by_one_append(extended: dict[str, int]) -> None:
    opts = AggregationOptions(binge_min_views=3)
    start = at("2024-01-10T08:00")
    first = [view(start - 5 * DAY, "UC1", title=GAMING)]
    last_two = [view(start, "UC1", title=GAMING), view(start + 5 * MINUTE, "UC2", title=COOKING)]
    # joins the last session (3 views: binge), a break, a binge session, a break, a lone view
    append = [
        view(start + 10 * MINUTE, "UC1", title=COMEDY),
        *[view(start + 3 * HOUR + i * MINUTE, "UC2", title=COOKING) for i in range(3)],
        view(start + 9 * HOUR, "UC3", title=GAMING),
    ]
    # starts a new session: the lone view's session is closed as it was (not a binge session)
    then = [view(start + 20 * HOUR, "UC3", title=GAMING), view(start + 20 * HOUR + MINUTE, "UC3", title=GAMING)]
    # grows the last session to a binge one, then a binge session is closed by a new one
    more = [
        view(start + 20 * HOUR + 2 * MINUTE, "UC1", title=GAMING),
        *[view(start + 30 * HOUR + i * MINUTE, "UC4", title=GAMING) for i in range(4)],
        view(start + 40 * HOUR, None, title=COMEDY),
    ]
    now = at("2024-01-20T12:00")
    assert run([first, last_two, append, then, more], now, options=opts) > 0
    assert extended["topic_engagement"] >= 3


def test_binge_session_closed_by_an_append_that_does_not_join(extended: dict[str, int]) -> None:
    opts = AggregationOptions(binge_min_views=2)
    start = at("2024-01-10T08:00")
    first = [view(start - DAY, "UC1", title=GAMING)]
    binge = [view(start, "UC1", title=GAMING), view(start + MINUTE, "UC1", title=COOKING)]
    apart = [view(start + 5 * HOUR, "UC2", title=GAMING)]
    now = at("2024-01-20T12:00")
    data = full([*first, *binge, *apart], now, "topic_engagement", FilterSet("All", "all"), opts)
    assert topic_row(data, "food_cooking")["bingeShare"] == 1.0
    assert topic_row(data, "gaming")["bingeShare"] == 0.333333
    assert run([first, binge, apart], now, options=opts) > 0
    assert extended["topic_engagement"] > 0


def test_empty_slices_become_non_empty(extended: dict[str, int]) -> None:
    # no music view and nothing in the current month at first: the music and MTD slices are empty
    old = [view(at("2023-11-05T10:00") + i * HOUR, "UC1", title=GAMING) for i in range(5)]
    december = [view(at("2023-12-10T10:00"), "UC1", title=GAMING)]
    music = [
        view(at("2024-01-18T10:00") + i * 10 * MINUTE, "UC9", title="lofi beats", product="youtube_music")
        for i in range(6)
    ]
    youtube = [view(at("2024-01-19T10:00"), "UC1", title=GAMING, shorts=True)]
    now = at("2024-01-20T12:00")
    sets = [
        FilterSet("MTD", "all"),
        FilterSet("All", "youtube_music"),
        FilterSet("MTD", "youtube"),
        FilterSet("All", "all"),
    ]
    assert full(old, now, "topic_engagement", sets[1])["topics"] == []
    assert full([*old, *december], now, "topic_discovery", sets[0])["overall"]["views"] == 0
    assert run([old, december, music, youtube], now, filter_sets=sets) > 0
    assert extended["topic_engagement"] > 0 and extended["topic_discovery"] > 0


def test_new_channel_sorting_among_old_ones(extended: dict[str, int]) -> None:
    start = at("2024-01-05T10:00")
    first = [view(start - 90 * DAY, "UC100", title=GAMING), view(start - 80 * DAY, "UC300", title=GAMING)]
    second = [view(start, "UC300", title=COOKING, video="a"), view(start + MINUTE, "UC100", title=GAMING, video="b")]
    # UC200 sorts between the old ids; its video "a0" too
    third = [
        view(start + DAY, "UC200", title=GAMING, video="a0"),
        view(start + DAY + MINUTE, "UC200", title=COOKING, video="a0"),
        view(start + DAY + 2 * MINUTE, "UC100", title=GAMING, video="b"),
        view(start + DAY + 3 * MINUTE, "UC050", title=GAMING, video="a0"),
    ]
    now = at("2024-01-20T12:00")
    data = full([*first, *second, *third], now, "topic_discovery", FilterSet("All", "all"))
    assert data["overall"]["newChannels"] == 2
    assert topic_row(data, "gaming")["newChannels"] == 2
    assert topic_row(data, "food_cooking")["newChannels"] == 1
    assert run([first, second, third], now) > 0
    assert extended["topic_engagement"] > 0 and extended["topic_discovery"] > 0


def test_appends_across_a_month_start_inside_the_window(extended: dict[str, int]) -> None:
    # now is in February: the MTD window starts between the views of one append, inside a session
    first = [view(at("2023-12-20T10:00"), "UC1", title=GAMING)]
    second = [view(at("2024-01-30T10:00"), "UC2", title=GAMING)]
    third = [
        view(at("2024-01-31T23:40"), "UC2", title=GAMING, video="x"),
        view(at("2024-01-31T23:55"), "UC3", title=COOKING),
        view(at("2024-02-01T00:10"), "UC2", title=GAMING, video="x"),
        view(at("2024-02-01T00:20"), "UC3", title=COOKING, shorts=True),
    ]
    fourth = [view(at("2024-02-01T00:30") + i * MINUTE, "UC1", title=GAMING) for i in range(3)]
    now = at("2024-02-01T12:00")
    opts = AggregationOptions(binge_min_views=6)
    events = [*first, *second, *third, *fourth]
    # the session has 7 views in All, 5 in MTD (cut at the window start): a binge session in All only
    assert (
        topic_row(full(events, now, "topic_engagement", FilterSet("MTD", "all"), opts), "gaming")["bingeShare"] == 0.0
    )
    assert (
        topic_row(full(events, now, "topic_engagement", FilterSet("All", "all"), opts), "gaming")["bingeShare"]
        == 0.714286
    )
    assert run([first, second, third, fourth], now, options=opts) > 0
    assert extended["topic_engagement"] > 0


def test_appended_views_before_the_window(extended: dict[str, int]) -> None:
    # now is in March: appended January views are outside MTD/QTD (their slices get no views)
    first = [view(at("2023-06-01T10:00"), "UC1", title=GAMING)]
    second = [view(at("2024-01-10T10:00"), "UC2", title=GAMING)]
    third = [view(at("2024-01-11T10:00"), "UC3", title=COOKING), removed(at("2024-01-11T10:05"))]
    now = at("2024-03-05T12:00")
    assert run([first, second, third], now) > 0
    assert extended["topic_discovery"] > 0  # the All/YTD… slices still went through extend


def test_discovery_uses_the_whole_history_of_every_product(extended: dict[str, int]) -> None:
    now = at("2024-03-01T12:00")  # recent window: from 2024-01-31 (30 local days)
    first = [
        view(at("2023-12-01T10:00"), "UCold", title="lofi beats", product="youtube_music"),  # habitual
        view(at("2024-02-10T10:00"), "UCnew", title="lofi beats", product="youtube_music"),  # new
    ]
    second = [view(at("2024-02-20T10:00"), "UCyt", title=GAMING)]
    third = [
        view(at("2024-02-25T10:00"), "UCold", title=GAMING),  # new to the youtube base, yet habitual
        view(at("2024-02-25T10:05"), "UCnew", title=GAMING),
        view(at("2024-02-25T10:10"), "UCyt", title=GAMING),
        view(at("2024-02-25T10:15"), "UCfresh", title=COOKING),
        view(at("2024-02-25T10:20"), None, title=GAMING),
        removed(at("2024-02-25T10:25")),
    ]
    fs = FilterSet("All", "youtube")
    data = full([*first, *second, *third], now, "topic_discovery", fs)
    assert data["overall"] == {
        "views": 7,
        "newChannelViews": 4,
        "habitualChannelViews": 1,
        "unattributedViews": 2,
        "newChannelShare": 0.8,
        "newChannels": 3,
    }
    sets = [fs, FilterSet("All", "all"), FilterSet("MTD", "youtube"), FilterSet("All", "youtube_music")]
    assert run([first, second, third], now, filter_sets=sets) > 0
    assert extended["topic_discovery"] > 0


def test_discovery_with_one_recent_day_and_ties(extended: dict[str, int]) -> None:
    # recent_days=1: only channels first seen today are new; topics tie on views (order by code)
    opts = AggregationOptions(recent_days=1, binge_min_views=2)
    now = at("2024-01-20T18:00")
    first = [view(at("2024-01-19T10:00"), "UC1", title=GAMING), view(at("2024-01-19T11:00"), "UC2", title=COOKING)]
    second = [view(at("2024-01-19T23:59"), "UC3", title=COMEDY)]
    third = [
        view(at("2024-01-20T00:00"), "UC4", title=GAMING),  # first seen at the recent window's first instant
        view(at("2024-01-20T00:01"), "UC3", title=COMEDY),
        view(at("2024-01-20T00:02"), "UC5", title=COOKING),
        view(at("2024-01-20T09:00"), "UC4", title=COMEDY),
    ]
    data = full([*first, *second, *third], now, "topic_discovery", FilterSet("All", "all"), opts)
    assert [(r["topic"], r["views"]) for r in data["topics"]] == [("comedy", 3), ("gaming", 2), ("food_cooking", 2)]
    assert data["overall"]["newChannels"] == 2
    assert run([first, second, third], now, options=opts) > 0
    assert extended["topic_discovery"] > 0


def test_states_hold_no_history() -> None:
    """A state's size does not depend on the history (a few per-topic counts)."""
    zone = load_zone(TZ)
    sizes: dict[int, set[int]] = {}
    for n in (10, 2000):
        rng = random.Random(3)
        events = random_views(rng, START, n)
        frame = merge_partitions(build_month_partitions(events, zone).values())
        derived = DerivedState.cold(frame)
        more = random_views(rng, events[-1].watched_at_ms, 6)
        held = sizes[n] = set()
        for batch in (more[:3], more[3:]):
            grown = extend_frame(frame, build_month_partitions(batch, zone).values())
            assert grown is not None
            derived, frame = derived.extended(grown), grown
            compute_from_frame(
                frame,
                now_ms=more[-1].watched_at_ms,
                time_zone=TZ,
                filter_sets=EAGER_FILTER_SETS,
                types=TYPES,
                derived=derived,
            )
        for entry in derived.bases.values():
            for s in entry.slices.values():
                held.update(state.nbytes for _, state in s.states.values())
    assert sizes[10] == sizes[2000] and 0 < max(sizes[10]) < 2048
