"""Top-k selections of the channel aggregations against straightforward references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from agg_support import synthetic_history
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.aggregation import AggregationOptions, FilterSet, compute_aggregations
from worker.aggregation.common import kth_largest


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.integers(0, 5), st.integers(0, 2**40), st.integers(-(2**40), 2**40)), min_size=1, max_size=60
    ),
    data=st.data(),
)
def test_kth_largest_equals_a_selection(values: list[int], data: st.DataObject) -> None:
    arr = np.array(values, dtype=np.int64)
    k = data.draw(st.integers(1, arr.size))
    assert kth_largest(arr, k) == int(np.sort(arr)[arr.size - k])


def test_kth_largest_refuses_k_outside_the_values() -> None:
    arr = np.array([3, 1, 2], dtype=np.int64)
    for k in (0, 4):
        try:
            kth_largest(arr, k)
        except ValueError as exc:
            assert str(k) in str(exc)
        else:
            raise AssertionError(f"k={k} accepted")


def _reference_co_watched(pairs: list[dict[str, object]], channel: str, per: int) -> list[tuple[str, int]]:
    """A channel's partners by coSessions desc, then id asc, the first ``per`` (from the full pair list)."""
    partners: list[tuple[str, int]] = []
    for p in pairs:
        if p["channelAId"] == channel:
            partners.append((str(p["channelBId"]), int(p["coSessions"])))  # type: ignore[call-overload]
        elif p["channelBId"] == channel:
            partners.append((str(p["channelAId"]), int(p["coSessions"])))  # type: ignore[call-overload]
    partners.sort(key=lambda item: (-item[1], item[0]))
    return partners[:per]


def _check_co_watched(n: int, seed: int, channels: int, per: int) -> int:
    """Compare every listed channel's coWatched with the reference; return how many lists are full."""
    # every pair listed (pairs_cap at its maximum, min_co_sessions 1): the reference sees all of them
    opts = AggregationOptions(pairs_cap=1000, min_co_sessions=1, co_watched_per_channel=per, channel_metrics_cap=1000)
    events = synthetic_history(n, seed=seed, channels=channels)
    now = max(e.watched_at_ms for e in events) + 1
    metrics, relationships = compute_aggregations(  # catalogue order
        events,
        now_ms=now,
        time_zone="UTC",
        filter_sets=[FilterSet("All", "all")],
        types=["channel_relationships", "channel_metrics"],
        options=opts,
    )
    pairs = relationships.data["pairs"]
    assert relationships.data["pairCount"] == len(pairs)  # the full list, not a truncated one
    for row in metrics.data["channels"]:
        got = [(c["channelId"], c["coSessions"]) for c in row["coWatched"]]
        assert got == _reference_co_watched(pairs, row["channelId"], per), row["channelId"]
    return sum(1 for row in metrics.data["channels"] if per and len(row["coWatched"]) == per)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), per=st.integers(0, 6), n=st.integers(20, 400), channels=st.integers(2, 25))
def test_co_watched_lists_each_channels_strongest_partners(seed: int, per: int, n: int, channels: int) -> None:
    _check_co_watched(n, seed, channels, per)


def test_co_watched_with_many_partners_of_one_session() -> None:
    # 4000 views over 40 channels: every channel has 1-session partners and at least 3 stronger ones
    assert _check_co_watched(4000, 11, 40, 3) == 40


def test_relationships_threshold_keeps_ties_in_order() -> None:
    # many pairs of one session and a few of more: the listed pairs are the strongest, ties by ids
    events = synthetic_history(3000, seed=7, channels=60)
    now = max(e.watched_at_ms for e in events) + 1
    wide, narrow = (
        compute_aggregations(
            events,
            now_ms=now,
            time_zone="UTC",
            filter_sets=[FilterSet("All", "all")],
            types=["channel_relationships"],
            options=AggregationOptions(pairs_cap=cap, min_co_sessions=1),
        )[0].data
        for cap in (1000, 7)
    )
    assert wide["pairCount"] > 7
    assert narrow["pairs"] == wide["pairs"][:7]


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(st.integers(0, 50), min_size=4, max_size=4), min_size=1, max_size=6))
def test_topic_diversity_rows_match_the_formulas(rows: list[list[int]]) -> None:
    from worker.aggregation.topics import _diversity

    got = _diversity(np.array(rows, dtype=np.int64))
    for counts, fields in zip(rows, got, strict=True):
        total = sum(counts)
        present = [c / total for c in counts if c] if total else []
        entropy = -sum(p * math.log2(p) for p in present)
        assert fields["classifiedViews"] == total
        assert fields["topicCount"] == len(present)
        assert fields["entropyBits"] == pytest.approx(entropy, abs=1e-6)
        assert fields["giniSimpson"] == pytest.approx(1 - sum(p * p for p in present) if total else 0.0, abs=1e-6)
        if len(present) >= 2:
            assert fields["evenness"] == pytest.approx(entropy / math.log2(len(present)), abs=1e-6)
        else:
            assert fields["evenness"] is None
