"""channel_relationships on the append fast path equals the full computation (RelationshipsState)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.aggregation.incremental_support import (
    DAY,
    HOUR,
    MINUTE,
    assert_appends_match,
    random_appends,
    spy_states,
)
from worker.aggregation import FilterSet
from worker.aggregation.incremental import REGISTRY
from worker.aggregation.incremental.relationships import RelationshipsState
from worker.aggregation.options import AggregationOptions
from worker.models import WatchEvent

TYPES = ["channel_relationships"]
START = 1_700_000_000_000  # 2023-11-14T22:13:20Z
FEB_1 = 1_706_742_000_000  # 2024-02-01T00:00 Europe/Berlin
SETS = (
    FilterSet("All", "all"),
    FilterSet("MTD", "all"),
    FilterSet("Last6M", "youtube"),
    FilterSet("YTD", "youtube_music"),
)


@pytest.fixture
def extends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The appended views of the slice at each extend of the state (the fast path ran when some are > 0)."""
    return spy_states(monkeypatch, ["channel_relationships"]).sizes["channel_relationships"]


def view(at: int, channel: str | None, *, music: bool = False, name: str | None = None) -> WatchEvent:
    """One view of a video of ``channel`` at ``at``."""
    return WatchEvent(
        watched_at_ms=at,
        video_id=f"v{at % 997}",
        title="stand up comedy",
        channel_id=channel,
        channel_name=name if name is not None or channel is None else f"{channel} name",
        product="youtube_music" if music else "youtube",
    )


def session(at: int, channels: Sequence[str | None], *, music: bool = False) -> list[WatchEvent]:
    """One session: a view of each channel in order, a minute apart, from ``at``."""
    return [view(at + i * MINUTE, c, music=music) for i, c in enumerate(channels)]


def check(batches: list[list[WatchEvent]], now: int, **kw: object) -> int:
    return assert_appends_match(batches, now_ms=[now] * len(batches), types=TYPES, **kw)  # type: ignore[arg-type]


def test_registered() -> None:
    assert REGISTRY["channel_relationships"] is RelationshipsState


@given(
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 6),
    pairs_cap=st.integers(1, 6),
    min_co=st.integers(1, 3),
    per_session=st.integers(2, 4),
)
@settings(max_examples=60, deadline=None)
def test_appends_equal_full_computation(seed: int, steps: int, pairs_cap: int, min_co: int, per_session: int) -> None:
    rng = random.Random(seed)
    options = AggregationOptions(
        pairs_cap=pairs_cap,
        min_co_sessions=min_co,
        max_channels_per_session=per_session,
        session_gap_ms=rng.choice((30, 90, 300)) * MINUTE,
    )
    channels = rng.randrange(2, 10)
    batches, last = random_appends(
        rng, START, steps, first=150, size=30, channels=channels, later_channels=rng.randrange(2, 14)
    )
    now = last + rng.choice((MINUTE, HOUR, 3 * DAY))
    assert check(batches, now, options=options, filter_sets=SETS) > 0


def test_last_session_grows_past_the_cap(extends: list[int]) -> None:
    # the last session gains channels append after append: becomes multi-channel, then capped,
    # then gains a channel that no longer counts; a later session repeats pairs (ties, truncation)
    t = START
    batches = [session(t, ["UC5"])]
    for channels in (["UC5", "UC2"], ["UC9"], ["UC1", "UC2"], ["UC7", "UC8"], []):
        t = batches[-1][-1].watched_at_ms + MINUTE
        batches.append(session(t, channels))
    t = batches[-1][-1].watched_at_ms + 5 * HOUR if batches[-1] else t + 5 * HOUR
    batches.append(session(t, ["UC9", "UC2", "UC5", "UC3"]))
    batches.append(session(t + 10 * MINUTE, ["UC9", "UC3"]))
    options = AggregationOptions(pairs_cap=2, min_co_sessions=1, max_channels_per_session=3)
    assert check(batches, t + DAY, options=options, filter_sets=(FilterSet("All", "all"),)) > 0
    assert sum(extends) > 0


def test_new_channel_sorting_among_old_ones_ties(extends: list[int]) -> None:
    # (UCa, UCb0), (UCb0, UCd) and (UCc, UCd) tie: the new id UCb0 sorts between UCa and UCc, its
    # stable code after theirs
    t = START
    first = session(t, ["UCd", "UCa"]) + session(t + 3 * HOUR, ["UCc", "UCd"]) + session(t + 6 * HOUR, ["UCa", "UCd"])
    first += session(t + 9 * HOUR, ["UCc", "UCd"])
    batches = [first, session(t + 15 * HOUR, ["UCa"])]  # the states are built on the first append
    t += DAY
    batches.append(session(t, ["UCd", "UCb0"]) + session(t + 3 * HOUR, ["UCb0", "UCd", "UCa"]))
    batches.append(session(t + 6 * HOUR, ["UCa", "UCb0", "UCc"]))
    for cap in (1, 2, 3, 10):
        options = AggregationOptions(pairs_cap=cap, min_co_sessions=2)
        assert check(batches, t + 2 * DAY, options=options, filter_sets=(FilterSet("All", "all"),)) > 0
    assert sum(extends) > 0


def test_empty_slice_becomes_non_empty(extends: list[int]) -> None:
    # nothing in the music base, then music sessions; nothing in MTD (old views), then views
    old = session(START - 60 * DAY, ["UC1", "UC2"]) + session(START - 59 * DAY, ["UC1", "UC2"])
    t = START
    batches = [old, session(t, ["UC3", "UC1"], music=True), session(t + 2 * HOUR, ["UC1", "UC3", "UC2"], music=True)]
    batches.append(session(t + 2 * HOUR + 5 * MINUTE, ["UC2", "UC3"], music=True))
    sets = (FilterSet("All", "youtube_music"), FilterSet("MTD", "all"), FilterSet("All", "youtube"))
    assert check(batches, t + DAY, options=AggregationOptions(min_co_sessions=1), filter_sets=sets) > 0
    assert sum(extends) > 0


def test_music_only_base(extends: list[int]) -> None:
    # only music views (the youtube base is empty): sessions of a few channels, continued by appends
    rng = random.Random(3)
    at, batches = START, []
    for size in (60, 7, 12, 5, 9, 15, 6):
        batch = []
        for _ in range(size):
            at += rng.choice((1, 4, 9, 25)) * MINUTE if rng.random() < 0.8 else rng.choice((2, 7)) * HOUR
            batch.append(view(at, rng.choice(("UCm1", "UCm2", "UCm3", "UCm4", "UCm5", None)), music=True))
        batches.append(batch)
    sets = (FilterSet("All", "youtube_music"), FilterSet("Last6M", "all"), FilterSet("All", "youtube"))
    for options in (AggregationOptions(pairs_cap=3, max_channels_per_session=2), AggregationOptions(pairs_cap=4)):
        assert check(batches, at + HOUR, options=options, filter_sets=sets) > 0
    assert sum(extends) > 0


def test_appends_across_month_start_and_window_start(extends: list[int]) -> None:
    # one session runs across the month start (MTD's window start), appended in pieces: the MTD
    # slice's first session is cut at the month start, the All slice's is not
    t = FEB_1 - 40 * MINUTE
    batches = [session(t - 2 * DAY, ["UC1", "UC2", "UC3"]) + session(t, ["UC1", "UC2"])]
    batches.append(session(t + 20 * MINUTE, ["UC3", "UC1", "UC4"]))  # across 00:00
    batches.append(session(t + 45 * MINUTE, ["UC2", "UC4", "UC1"]))
    batches.append(session(t + 3 * HOUR, ["UC4", "UC2"]) + session(t + 9 * HOUR, ["UC4", "UC1", "UC2"]))
    sets = (FilterSet("All", "all"), FilterSet("MTD", "all"), FilterSet("YTD", "all"))
    for options in (AggregationOptions(min_co_sessions=1, pairs_cap=2), AggregationOptions(max_channels_per_session=2)):
        assert check(batches, t + DAY, options=options, filter_sets=sets) > 0
    assert sum(extends) > 0


def test_channel_less_views_and_sessions(extends: list[int]) -> None:
    t = START
    batches = [session(t, [None, "UC1"]), session(t + 2 * MINUTE, [None, None])]
    batches.append(session(t + 5 * HOUR, [None]) + session(t + 10 * HOUR, ["UC2", None, "UC1"]))
    batches.append(session(t + 10 * HOUR + 4 * MINUTE, ["UC1", "UC3"]))
    # a new last session without a channel (after one with channels), then continued with channels
    batches.append(session(t + 20 * HOUR, ["UC1", "UC2"]) + session(t + 25 * HOUR, [None]))
    batches.append(session(t + 25 * HOUR + 3 * MINUTE, ["UC3", "UC2"]))
    # the same when the append holds no channel at all
    batches.append(session(t + 30 * HOUR, [None]))
    batches.append(session(t + 30 * HOUR + 3 * MINUTE, ["UC1", "UC3"]))
    assert check(batches, t + 2 * DAY, options=AggregationOptions(min_co_sessions=1)) > 0
    assert sum(extends) > 0
