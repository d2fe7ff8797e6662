"""channel_metrics on the append fast path (ChannelMetricsState) equals the full computation."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
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
from worker.aggregation import EAGER_FILTER_SETS, FilterSet, compute_aggregations, compute_from_frame
from worker.aggregation.derived import DerivedState
from worker.aggregation.engine import _base_indices
from worker.aggregation.frame import Frame
from worker.aggregation.incremental import REGISTRY
from worker.aggregation.incremental import channels as incremental_channels
from worker.aggregation.incremental.channels import ChannelMetricsState
from worker.aggregation.incremental.core import KeyCounts
from worker.aggregation.options import AggregationOptions
from worker.aggregation.partition import build_month_partitions, extend_frame, merge_partitions
from worker.aggregation.slices import Slice
from worker.aggregation.timeframes import load_zone, make_clock, resolve_window
from worker.models import WatchEvent

TYPE = "channel_metrics"
START = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
DEC_2023 = 1_701_385_200_000  # 2023-12-01 00:00 Europe/Berlin
ZONE = "Europe/Berlin"


def _view(at: int, channel: str | None, *, music: bool = False) -> WatchEvent:
    return WatchEvent(
        watched_at_ms=at,
        video_id=f"v{at % 97}",
        title="official music video" if music else "gaming walkthrough",
        channel_id=channel,
        channel_name=None if channel is None else f"{channel} name",
        product="youtube_music" if music else "youtube",
    )


def _session(
    at: int, channels: Sequence[str | None], *, gap: int = 5 * MINUTE, music: bool = False
) -> list[WatchEvent]:
    """Return one view per entry of ``channels``, ``gap`` apart from ``at`` on (one session for gaps ≤ 30 min)."""
    return [_view(at + i * gap, ch, music=music) for i, ch in enumerate(channels)]


def _listed(results: Sequence[Any], key: str) -> list[dict[str, Any]]:
    for r in results:
        if r.type == TYPE and r.filter_key == key:
            rows: list[dict[str, Any]] = r.data["channels"]
            return rows
    raise AssertionError(f"no {TYPE} result for {key}")


def _final(batches: Sequence[Sequence[WatchEvent]], now_ms: int, options: AggregationOptions | None = None) -> Any:
    events = [e for batch in batches for e in batch]
    return compute_aggregations(
        events, now_ms=now_ms, time_zone=ZONE, filter_sets=EAGER_FILTER_SETS, types=[TYPE], options=options
    )


def test_registered() -> None:
    assert REGISTRY[TYPE] is ChannelMetricsState


@given(
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 6),
    cap=st.sampled_from((1, 2, 3, 100)),
    per=st.sampled_from((0, 1, 2, 3)),
    max_channels=st.sampled_from((2, 3, 20)),
    gap_minutes=st.sampled_from((30, 180)),
    channels=st.sampled_from((3, 12, 40)),
    renames=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_appends_equal_full_computation(
    seed: int, steps: int, cap: int, per: int, max_channels: int, gap_minutes: int, channels: int, renames: bool
) -> None:
    """Without renames, rows of channels an append does not touch are carried over from the last render."""
    rng = random.Random(seed)
    options = AggregationOptions(
        channel_metrics_cap=cap,
        co_watched_per_channel=per,
        max_channels_per_session=max_channels,
        session_gap_ms=gap_minutes * MINUTE,
    )
    start = START - rng.choice((0, 40, 200)) * DAY
    batches, last = random_appends(
        rng, start, steps, first=120, channels=channels, later_channels=channels + 4, renames=renames
    )
    now = last + rng.choice((MINUTE, HOUR, 3 * DAY))
    nows = [now if rng.random() < 0.85 else now + DAY for _ in batches]
    assert assert_appends_match(batches, now_ms=nows, types=[TYPE], options=options, repeat=False) > 0


def test_fast_path_extends_the_state(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_states(monkeypatch, [TYPE])
    rng = random.Random(3)
    batches = [random_views(rng, START, 80)]
    for _ in range(3):
        batches.append(random_views(rng, batches[-1][-1].watched_at_ms, 10, channels=10))
    now = batches[-1][-1].watched_at_ms + HOUR
    assert_appends_match(batches, now_ms=[now] * 4, types=[TYPE])
    # built at the first append (18 sets), extended at the two next ones
    assert calls.built[TYPE] == len(EAGER_FILTER_SETS)
    assert len(calls.sizes[TYPE]) == 2 * len(EAGER_FILTER_SETS)


def _frame(events: Sequence[WatchEvent]) -> Frame:
    return merge_partitions(build_month_partitions(events, load_zone(ZONE)).values())


def _slice(frame: Frame, fs: FilterSet, now_ms: int, options: AggregationOptions) -> Slice:
    clock = make_clock(now_ms, load_zone(ZONE), options.recent_days)
    window = resolve_window(fs.timeframe, clock)
    base = _base_indices(frame, fs)
    start = 0 if window.start_ms is None else int(np.searchsorted(frame.ts[base], window.start_ms))
    return Slice(frame, base[start:], base, clock, window, options)


@pytest.mark.parametrize("seed", range(6))
def test_extended_state_equals_the_state_of_the_whole_slice(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pair counts, the last session's channels and every channel's partners (listed or not) after appends
    equal those built from the whole slice: a wrong partner list of an unlisted channel shows here
    before the channel is ever listed."""
    monkeypatch.setattr(incremental_channels, "_NARROW_MAX", 6)  # channels go wide at their 7th view
    monkeypatch.setattr(KeyCounts, "SIDE_MIN", 2)  # pair counts merge their side table often
    rng = random.Random(seed)
    options = AggregationOptions(co_watched_per_channel=2, max_channels_per_session=3, channel_metrics_cap=3)
    zone = load_zone(ZONE)
    events = random_views(rng, START, 150, channels=20)
    frame = _frame(events)
    state = DerivedState.cold(frame)
    now = START + 400 * DAY
    for _ in range(5):
        batch = random_views(rng, events[-1].watched_at_ms, 30, channels=25)
        grown = extend_frame(frame, build_month_partitions(batch, zone).values())
        assert grown is not None
        events.extend(batch)
        state, frame = state.extended(grown), grown
        compute_from_frame(
            frame,
            now_ms=now,
            time_zone=ZONE,
            filter_sets=EAGER_FILTER_SETS,
            types=[TYPE],
            options=options,
            derived=state,
        )
    codes, _ = state.codes()
    wide = 0
    for fs in EAGER_FILTER_SETS:
        kept = state.bases[(fs.product, fs.topics, fs.channels)].slices[fs.key].states[TYPE][1]
        assert isinstance(kept, ChannelMetricsState)
        fresh = ChannelMetricsState.from_slice(_slice(frame, fs, now, options), codes)
        assert kept.pairs is not None and fresh.pairs is not None
        fresh_keys = fresh.pairs.counts.keys  # built whole: no side table
        assert kept.pairs.counts.size == fresh_keys.size
        assert kept.pairs.counts.get(fresh_keys).tolist() == fresh.pairs.counts.counts.tolist()
        assert kept.pairs.last_kept.tolist() == fresh.pairs.last_kept.tolist()
        assert kept.pairs.last_size == fresh.pairs.last_size
        assert kept.size == fresh.size and kept.listed.tolist() == fresh.listed.tolist()
        present = np.flatnonzero(fresh.slot_of >= 0)
        a, b = kept.slot_of[present], fresh.slot_of[present]
        for name in ("views", "first_ms", "last_ms", "first_month", "active", "partner"):
            assert getattr(kept, name)[a].tolist() == getattr(fresh, name)[b].tolist(), (fs.key, name)
        assert kept.histograms.rows(a).tolist() == fresh.histograms.rows(b).tolist(), fs.key
        assert kept.partner_sessions[a].tolist() == fresh.partner_sessions[b].tolist(), fs.key
        assert kept.nbytes > 0
        wide += kept.histograms.wide_count
    assert wide > 0


@pytest.mark.parametrize("first", ["none", "old"])
def test_empty_slice_becomes_non_empty(first: str) -> None:
    # "none": no view at all before; "old": views only long before the month (MTD, QTD… start empty)
    before = [] if first == "none" else _session(START - 300 * DAY, ["UC001", "UC002", None, "UC003"])
    batches = [
        before,
        _session(DEC_2023 + 2 * HOUR, ["UC002", None]),
        _session(DEC_2023 + 3 * HOUR, ["UC004", "UC002", "UC004", "UC001"]),
        _session(DEC_2023 + 6 * HOUR, ["UC003", "UC001"]),
    ]
    now = DEC_2023 + 20 * HOUR
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=[TYPE]) > 0
    mtd = _listed(_final(batches, now), "MTD|all||")
    assert [r["channelId"] for r in mtd] == ["UC001", "UC002", "UC004", "UC003"]
    assert [(c["channelId"], c["coSessions"]) for c in mtd[1]["coWatched"]] == [("UC001", 1), ("UC004", 1)]


def test_new_channel_whose_id_sorts_among_the_old_ones() -> None:
    options = AggregationOptions(channel_metrics_cap=3, co_watched_per_channel=2)
    batches = [
        _session(START, ["UC000", "UC004", "UC000", "UC004"])
        + _session(START + 2 * HOUR, ["UC008", "UC008", "UC004", "UC000"]),
        # UC002 (sorts between UC000 and UC004) ties UC004 and UC000 on views and partners
        _session(START + 5 * HOUR, ["UC002", "UC000", "UC002", "UC002"]),
        _session(START + 8 * HOUR, ["UC006", "UC002", "UC004"]),
    ]
    now = START + DAY
    assert assert_appends_match(batches, now_ms=[now] * len(batches), options=options, types=[TYPE]) > 0
    rows = _listed(_final(batches, now, options), "All|all||")
    assert [(r["channelId"], r["views"]) for r in rows] == [("UC000", 4), ("UC002", 4), ("UC004", 4)]
    # UC000's partners: UC004 (2 sessions), then UC002 and UC008 tie at 1 → UC002 (id order)
    assert [c["channelId"] for c in rows[0]["coWatched"]] == ["UC004", "UC002"]


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/Goose_Bay"])
def test_appends_cross_a_month_boundary(tz: str) -> None:
    rng = random.Random(11)
    batches = [random_views(rng, DEC_2023 - 70 * DAY, 60, channels=6)]
    at = DEC_2023 - 2 * DAY
    for _ in range(4):  # each batch two days later: November, then December
        batches.append(random_views(rng, max(at, batches[-1][-1].watched_at_ms), 12, channels=8))
        at += 2 * DAY
    now = at + 5 * DAY
    assert assert_appends_match(batches, now_ms=[now] * len(batches), time_zone=tz, types=[TYPE]) > 0


def test_small_caps_truncate_and_a_channel_entering_the_list_brings_its_partners() -> None:
    options = AggregationOptions(channel_metrics_cap=2, co_watched_per_channel=1, max_channels_per_session=2)
    batches = [
        _session(START, ["UC00A", "UC00A", "UC00A", "UC00B", "UC00B", "UC00B"])
        # UC00C with UC00D twice, UC00E once; a third channel in a session is over the cap
        + _session(START + 2 * HOUR, ["UC00C", "UC00D", "UC00A"])
        + _session(START + 4 * HOUR, ["UC00D", "UC00C", "UC00E"])
        + _session(START + 6 * HOUR, ["UC00E", "UC00C"]),
        # UC00C reaches 4 views and enters the list (ahead of UC00B, behind UC00A on id)
        _session(START + 9 * HOUR, ["UC00C"]),
        _session(START + 11 * HOUR, ["UC00A"]),
    ]
    now = START + DAY
    assert assert_appends_match(batches, now_ms=[now] * len(batches), options=options, types=[TYPE]) > 0
    result = _final(batches[:2], now, options)
    rows = _listed(result, "All|all||")
    assert [r["channelId"] for r in rows] == ["UC00A", "UC00C"]
    assert rows[1]["coWatched"] == [{"channelId": "UC00D", "channelName": "UC00D name", "coSessions": 2}]
    assert next(r for r in result if r.filter_key == "All|all||").data["truncated"] is True


def test_last_session_grows_past_the_channel_cap() -> None:
    options = AggregationOptions(max_channels_per_session=3, co_watched_per_channel=3)
    gap = 10 * MINUTE
    at = START
    batches = [_session(at, ["UC001", None, "UC002"], gap=gap)]
    # the same session goes on in every batch: a third channel joins, then the cap is reached
    for channels in (["UC001", "UC003"], ["UC004", "UC002", "UC005"], [None], ["UC006", "UC003"]):
        at = batches[-1][-1].watched_at_ms + gap
        batches.append(_session(at, channels, gap=gap))
    # a new session, then one without channels, then channels joining it
    batches.append(_session(batches[-1][-1].watched_at_ms + 3 * HOUR, ["UC004", "UC001"], gap=gap))
    batches.append(_session(batches[-1][-1].watched_at_ms + 3 * HOUR, [None, None], gap=gap))
    batches.append(_session(batches[-1][-1].watched_at_ms + gap, ["UC005", "UC006", "UC001"], gap=gap))
    now = batches[-1][-1].watched_at_ms + HOUR
    assert assert_appends_match(batches, now_ms=[now] * len(batches), options=options, types=[TYPE]) > 0
    rows = {r["channelId"]: r for r in _listed(_final(batches, now, options), "All|all||")}
    partners = {ch: {c["channelId"]: c["coSessions"] for c in row["coWatched"]} for ch, row in rows.items()}
    # the first session lists UC001, UC002, UC003 only; the last one UC005, UC006, UC001
    assert partners["UC003"] == {"UC001": 1, "UC002": 1}
    assert partners["UC005"] == {"UC001": 1, "UC006": 1}
    assert partners["UC001"] == {"UC002": 1, "UC003": 1, "UC004": 1}


def test_music_only_base() -> None:
    rng = random.Random(5)
    music = [
        _session(START, ["UC001", "UC002", "UC001"], music=True),
        _session(START + HOUR, ["UC003", "UC002"], music=True),
        _session(START + 3 * HOUR, ["UC001", "UC004", "UC003"], music=True),
    ]
    # only music (the youtube base stays empty), then youtube views appended to an empty base
    batches: list[list[WatchEvent]] = [*music, random_views(rng, START + 5 * HOUR, 20, channels=5)]
    now = START + 2 * DAY
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=[TYPE]) > 0
    rows = _listed(_final(batches[:3], now), "All|youtube_music||")
    assert rows[0]["channelId"] == "UC001" and rows[0]["views"] == 3
    assert _listed(_final(batches[:3], now), "All|youtube||") == []


def test_window_start_between_appended_views() -> None:
    # one base session runs across the month start: the MTD slice cuts it there, so the views
    # before midnight belong to All but not to MTD; the next batch continues the cut session
    batches = [
        _session(START - 50 * DAY, ["UC001", "UC002"]),
        _session(DEC_2023 - 20 * MINUTE, ["UC003", "UC001", "UC002", "UC004", "UC003"], gap=10 * MINUTE),
        _session(DEC_2023 + 30 * MINUTE, ["UC001", "UC004"], gap=10 * MINUTE),
    ]
    now = DEC_2023 + 5 * HOUR
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=[TYPE]) > 0
    mtd = {r["channelId"]: r for r in _listed(_final(batches, now), "MTD|all||")}
    assert {c["channelId"]: c["coSessions"] for c in mtd["UC004"]["coWatched"]} == {"UC001": 1, "UC002": 1, "UC003": 1}
    assert "UC003" in mtd and mtd["UC003"]["views"] == 1


def test_peak_ties_and_ratios_over_appends() -> None:
    # the same channel at 11:xx and 21:xx local alternately: peaks tie, then one hour takes over
    day = START + 2 * HOUR  # 2023-11-15 01:13 Berlin
    batches = [
        [_view(day + 10 * HOUR, "UC001"), _view(day + 20 * HOUR, "UC001")],
        [_view(day + DAY + 20 * HOUR, "UC001")],
        [_view(day + 2 * DAY + 10 * HOUR, "UC001"), _view(day + 2 * DAY + 10 * HOUR + MINUTE, "UC001")],
    ]
    now = day + 3 * DAY
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=[TYPE]) > 0
    row = _listed(_final(batches, now), "All|all||")[0]
    assert (row["peakHour"], row["views"], row["activeMonths"]) == (11, 5, 1)


@pytest.mark.parametrize("narrow_max", [1, 4])
def test_hour_counts_go_wide(narrow_max: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Channels passing the uint8 bound (lowered here) move to int32 counts: at build or by an append."""
    monkeypatch.setattr(incremental_channels, "_NARROW_MAX", narrow_max)
    rng = random.Random(narrow_max)
    batches = [random_views(rng, START, 40, channels=4)]
    for _ in range(4):
        batches.append(random_views(rng, batches[-1][-1].watched_at_ms, 8, channels=6))
    now = batches[-1][-1].watched_at_ms + HOUR
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=[TYPE]) > 0


def test_a_channel_passes_255_views() -> None:
    # 200 views of UC001 at 09:xx; appends at 18:xx take it past 255 views (its counts widen), then
    # past 255 views at 18:xx alone, the peak hour
    morning = START + 10 * HOUR  # 2023-11-15 09:13 Berlin
    batches = [[_view(morning + i * DAY + j * MINUTE, "UC001") for i in range(40) for j in range(5)]]
    evening = batches[0][-1].watched_at_ms + 9 * HOUR  # 18:17
    for day, size in enumerate((40, 120, 120)):  # the state is built at the first append (240 views), then extended
        batches.append([_view(evening + day * DAY + j * 15_000, "UC001") for j in range(size)])  # 18:17 … 18:47
    now = batches[-1][-1].watched_at_ms + HOUR
    assert assert_appends_match(batches, now_ms=[now] * len(batches), types=[TYPE]) > 0
    row = _listed(_final(batches, now), "All|all||")[0]
    assert (row["views"], row["peakHour"]) == (480, 18)


def test_rows_of_untouched_channels_follow_a_rename_in_another_base() -> None:
    """A row kept from the previous render (no appended view of its channel in the base) still takes
    the channel's new name, given by a view in another base, and its partners' new names."""
    options = AggregationOptions(co_watched_per_channel=2)
    batches = [
        _session(START, ["UC001", "UC002", "UC001", "UC003"]) + _session(START + 2 * HOUR, ["UC002", "UC001"]),
        _session(START + 4 * HOUR, ["UC003"]),  # renders every youtube row; UC001 and UC002 untouched after
        # a music view of UC002 under a new name: the youtube base has no appended view of UC002
        [replace(_view(START + 6 * HOUR, "UC002", music=True), channel_name="UC002 renamed")],
        _session(START + 8 * HOUR, ["UC003"]),
    ]
    now = START + DAY
    assert assert_appends_match(batches, now_ms=[now] * len(batches), options=options, types=[TYPE]) > 0
    rows = {r["channelId"]: r for r in _listed(_final(batches, now, options), "All|youtube||")}
    assert rows["UC002"]["channelName"] == "UC002 renamed"
    assert {c["channelId"]: c["channelName"] for c in rows["UC001"]["coWatched"]}["UC002"] == "UC002 renamed"


def test_an_append_leaves_the_previous_output_unchanged() -> None:
    """Rows carried over to the next output are copies: the output stored for the previous append keeps
    its shares (the runner may still be encoding it)."""
    channels = [f"UC{i:03d}" for i in range(12)]
    events = [e for i in range(6) for e in _session(START + i * 2 * HOUR, channels[i::3] + channels[: i + 1])]
    frame = _frame(events)
    state = DerivedState.cold(frame)
    zone = load_zone(ZONE)
    now = START + DAY
    outputs = []
    for i in range(3):
        batch = _session(events[-1].watched_at_ms + HOUR, [channels[i]])  # the other rows are kept
        grown = extend_frame(frame, build_month_partitions(batch, zone).values())
        assert grown is not None
        events.extend(batch)
        state, frame = state.extended(grown), grown
        (result,) = compute_from_frame(
            frame, now_ms=now, time_zone=ZONE, filter_sets=[FilterSet("All", "all")], types=[TYPE], derived=state
        )
        outputs.append((result.data, copy.deepcopy(result.data)))
    for data, snapshot in outputs:
        assert data == snapshot
    first, last = ({r["channelId"]: r["share"] for r in data["channels"]} for data, _ in (outputs[1], outputs[2]))
    assert any(last.get(channel) != share for channel, share in first.items())  # the shares did move
