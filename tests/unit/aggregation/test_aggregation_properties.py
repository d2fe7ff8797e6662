"""Property tests: order independence, mergeability across partitions, valid bounded Convex values."""

from __future__ import annotations

import json
import random

from agg_support import assert_convex_value, ms, synthetic_history
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.aggregation import EAGER_FILTER_SETS, AggregationOptions, FilterSet, compute_aggregations
from worker.models import WatchEvent

NOW = ms("2024-06-15T12:00")
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

events_st = st.lists(
    st.builds(
        WatchEvent,
        watched_at_ms=st.integers(ms("2023-01-01T00:00"), ms("2024-07-01T00:00")),
        kind=st.sampled_from(["watch", "watch", "removed"]),
        product=st.sampled_from(["youtube", "youtube_music"]),
        video_id=st.sampled_from([None, "v1", "v2", "v3", "v4"]),
        title=st.sampled_from([None, "Pasta recipe", "Minecraft gameplay", "zzz"]),
        channel_id=st.sampled_from([None, "UCa", "UCb", "UCc", "UCd"]),
        channel_name=st.sampled_from([None, "Alpha", "Beta"]),
        flags=st.sampled_from([frozenset(), frozenset({"shorts"})]),
    ),
    max_size=40,
)

SETS = [
    FilterSet("All", "all"),
    FilterSet("Last6M", "youtube"),
    FilterSet("YTD", "all", topics=("food_cooking",)),
]


def _run(events: list[WatchEvent], tz: str = "Europe/Berlin") -> list[tuple[str, str, str, int | None]]:
    results = compute_aggregations(events, now_ms=NOW, time_zone=tz, filter_sets=SETS)
    return [(r.type, r.filter_key, json.dumps(r.data, sort_keys=True), r.valid_until_ms) for r in results]


class TestOrderIndependence:
    """The same multiset of events gives the same results in any order."""

    @SETTINGS
    @given(events=events_st, seed=st.integers(0, 2**32 - 1))
    def test_shuffled(self, events: list[WatchEvent], seed: int) -> None:
        """Shuffling the input changes nothing."""
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        assert _run(events) == _run(shuffled)


class TestMergeability:
    """Counts that docs/aggregations.md calls mergeable add up across a split of the history."""

    @SETTINGS
    @given(events=events_st, split=st.integers(ms("2023-01-01T00:00"), ms("2024-07-01T00:00")))
    def test_split_and_merge(self, events: list[WatchEvent], split: int) -> None:
        """monthly_trend views, heatmap cells and channel views of two halves sum to the whole."""
        events = list(
            {e.dedupe_key: e for e in events}.values()
        )  # a duplicate could straddle nothing, but keep halves disjoint
        left = [e for e in events if e.watched_at_ms < split]
        right = [e for e in events if e.watched_at_ms >= split]
        opts = AggregationOptions(top_n=100)
        types = ["monthly_trend", "day_time_heatmap", "top_channels"]

        def run(evs: list[WatchEvent]) -> dict[str, dict]:
            res = compute_aggregations(
                evs,
                now_ms=NOW,
                time_zone="America/New_York",
                filter_sets=[FilterSet("All", "all")],
                types=types,
                options=opts,
            )
            return {r.type: r.data for r in res}

        whole, a, b = run(events), run(left), run(right)

        def months(d: dict) -> dict[str, int]:
            return {m["month"]: m["views"] for m in d["monthly_trend"]["months"] if m["views"]}

        merged = months(a)
        for k, v in months(b).items():
            merged[k] = merged.get(k, 0) + v
        assert merged == months(whole)
        cells = [
            [x + y for x, y in zip(ra, rb, strict=True)]
            for ra, rb in zip(a["day_time_heatmap"]["cells"], b["day_time_heatmap"]["cells"], strict=True)
        ]
        assert cells == whole["day_time_heatmap"]["cells"]

        def channels(d: dict) -> dict[str, int]:
            return {c["channelId"]: c["views"] for c in d["top_channels"]["channels"]}

        merged_ch = channels(a)
        for k, v in channels(b).items():
            merged_ch[k] = merged_ch.get(k, 0) + v
        assert merged_ch == channels(whole)
        assert (
            a["top_channels"]["unattributedViews"] + b["top_channels"]["unattributedViews"]
            == whole["top_channels"]["unattributedViews"]
        )


class TestConvexValues:
    """Every stored result is a valid, bounded Convex value."""

    @SETTINGS
    @given(events=events_st)
    def test_random_histories(self, events: list[WatchEvent]) -> None:
        """Small random histories give valid values for every type and eager set."""
        for r in compute_aggregations(events, now_ms=NOW, time_zone="UTC", filter_sets=EAGER_FILTER_SETS[:6]):
            assert_convex_value(r.data)

    def test_large_history_under_one_mib(self) -> None:
        """A 60k-view history over 2 000 channels with maximal caps stays under 1 MiB per result."""
        events = synthetic_history(60_000, seed=7, channels=2000)
        opts = AggregationOptions(top_n=100, channel_metrics_cap=1000, pairs_cap=1000, months_cap=1200)
        results = compute_aggregations(
            events,
            now_ms=events[-1].watched_at_ms,
            time_zone="Asia/Kolkata",
            filter_sets=[FilterSet("All", "all")],
            options=opts,
        )
        for r in results:
            assert_convex_value(r.data)
            assert len(json.dumps(r.data).encode()) < 1 << 20, r.type


class TestSharedSlices:
    """Filter sets computed together share derived arrays; the results equal computing each alone."""

    @SETTINGS
    @given(events=events_st, now_day=st.integers(0, 400))
    def test_together_equals_one_at_a_time(self, events: list[WatchEvent], now_day: int) -> None:
        """The 18 eager sets in one call give the same data as 18 separate calls."""
        now = ms("2023-06-01T09:30") + now_day * 86_400_000
        together = compute_aggregations(events, now_ms=now, time_zone="Europe/Berlin", filter_sets=EAGER_FILTER_SETS)
        alone = [
            r
            for fs in EAGER_FILTER_SETS
            for r in compute_aggregations(events, now_ms=now, time_zone="Europe/Berlin", filter_sets=[fs])
        ]
        assert [(r.type, r.filter_key, r.data, r.valid_until_ms) for r in together] == [
            (r.type, r.filter_key, r.data, r.valid_until_ms) for r in alone
        ]
