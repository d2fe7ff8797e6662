"""The append fast path (worker.aggregation.incremental) gives exactly the results of a full computation."""

from __future__ import annotations

import random

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
)
from worker.aggregation import AGGREGATION_TYPES
from worker.aggregation.incremental import REGISTRY
from worker.aggregation.incremental.core import NO_KEY, NONE_BEFORE, KeyCounts, LastSeen
from worker.models import WatchEvent

START = 1_700_000_000_000  # 2023-11-14


def test_every_registered_type_is_in_the_catalogue() -> None:
    assert set(REGISTRY) <= set(AGGREGATION_TYPES)


@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 5))
@settings(max_examples=40, deadline=None)
def test_appends_equal_full_computation(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    batches, last = random_appends(rng, START, steps, first=120)
    now = last + rng.choice((MINUTE, HOUR, 3 * DAY))
    # mostly the same day for every step (the fast path); sometimes the day changes (states rebuilt)
    nows = [now if rng.random() < 0.8 else now + DAY for _ in batches]
    assert assert_appends_match(batches, now_ms=nows) > 0


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/Goose_Bay", "Australia/Lord_Howe"])
def test_appends_across_month_and_clock_changes(tz: str) -> None:
    rng = random.Random(7)
    batches = [random_views(rng, START - 400 * DAY, 300)]
    last = batches[0][-1].watched_at_ms
    for _ in range(8):
        batch = random_views(rng, last, 30, channels=15, videos=80)
        batches.append(batch)
        last = batch[-1].watched_at_ms
    assert assert_appends_match(batches, now_ms=[last + HOUR] * len(batches), time_zone=tz) > 0


@pytest.mark.parametrize("side_min", [1, 2, 4096])
@pytest.mark.parametrize("wide", [0, 2**32], ids=["int32-keys", "keys-past-int32"])
@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_last_seen_answers_like_a_dict(side_min: int, wide: int, seed: int) -> None:
    """``LastSeen.update`` = the previous bucket per key of a plain dict, whatever the merge threshold,
    also when appended keys no longer fit the int32 keys the table was built with."""
    rng = random.Random(seed)
    old = LastSeen.SIDE_MIN
    LastSeen.SIDE_MIN = side_min  # 1 and 2 merge the side table on almost every update
    try:
        keys0 = np.array([rng.randrange(-1, 30) for _ in range(rng.randrange(0, 50))], dtype=np.int64)
        seen = LastSeen(keys0, np.arange(keys0.size, dtype=np.int64))
        expected = {k: t for t, k in enumerate(keys0.tolist()) if k >= 0}
        t = keys0.size
        for _ in range(rng.randrange(1, 10)):
            drawn = [rng.randrange(-1, 60) for _ in range(rng.randrange(0, 12))]
            keys = np.array([k + wide if k >= 45 else k for k in drawn], dtype=np.int64)
            ts = np.arange(t, t + keys.size, dtype=np.int64)
            t += keys.size
            want = []
            for k, at in zip(keys.tolist(), ts.tolist(), strict=True):
                want.append(NO_KEY if k < 0 else expected.get(k, NONE_BEFORE))
                if k >= 0:
                    expected[k] = at
            assert seen.update(keys, ts).tolist() == want
    finally:
        LastSeen.SIDE_MIN = old


@pytest.mark.parametrize("side_min", [1, 3, 4096])
@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_key_counts_count_like_a_dict(side_min: int, seed: int) -> None:
    """``KeyCounts.add``/``get`` = a plain dict of counts, whatever the merge threshold."""
    rng = random.Random(seed)
    old = KeyCounts.SIDE_MIN
    KeyCounts.SIDE_MIN = side_min
    try:
        start = sorted(rng.sample(range(100), rng.randrange(0, 30)))
        expected = {k: rng.randrange(1, 5) for k in start}
        table = KeyCounts(np.array(start, dtype=np.int64), np.array([expected[k] for k in start], dtype=np.int64))
        for _ in range(rng.randrange(1, 10)):
            keys = sorted(rng.sample(range(120), rng.randrange(0, 15)))
            amounts = [rng.randrange(1, 4) for _ in keys]
            before = table.add(np.array(keys, dtype=np.int64), np.array(amounts, dtype=np.int64))
            assert before.tolist() == [expected.get(k, 0) for k in keys]
            for k, a in zip(keys, amounts, strict=True):
                expected[k] = expected.get(k, 0) + a
            probe = list(range(125))
            assert table.get(np.array(probe, dtype=np.int64)).tolist() == [expected.get(k, 0) for k in probe]
        assert table.size == len(expected)
    finally:
        KeyCounts.SIDE_MIN = old


def test_locating_int64_keys_in_an_int32_table_copies_no_table_and_misses_wide_keys() -> None:
    """Keys that fit the table's int32 are searched as int32 (numpy would copy the whole table to int64
    first); a key beyond int32 is never narrowed, so it cannot wrap onto an entry."""
    import tracemalloc

    from worker.aggregation.incremental.core import _locate

    table = np.arange(0, 2_000_000, 2, dtype=np.int32)  # 1M keys, 4 MiB
    keys = np.array([4, 5, 1_999_998], dtype=np.int64)
    tracemalloc.start()
    try:
        pos, hit = _locate(table, keys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pos.tolist() == [2, 3, 999_999] and hit.tolist() == [True, False, True]
    assert peak < table.nbytes // 8
    wide = np.array([6, 2**32 + 6], dtype=np.int64)  # 2**32 + 6 would wrap to 6 as an int32
    assert _locate(table, wide)[1].tolist() == [True, False]


def test_stable_codes_keep_every_old_id_and_number_new_ones_next() -> None:
    """After appends bringing ids that sort among the old ones (and a second append on top), each id
    keeps the stable code it had, new ids take the next free codes in frame order, and channel_code
    inverts the channel codes."""
    from worker.aggregation.incremental.core import StableCodes
    from worker.aggregation.partition import build_month_partitions, extend_frame, merge_partitions
    from worker.aggregation.timeframes import load_zone

    zone = load_zone("UTC")

    def view(at: int, video: str, channel: str) -> WatchEvent:
        return WatchEvent(watched_at_ms=at, video_id=video, channel_id=channel, title="t", channel_name=channel)

    first = [view(START + i * MINUTE, f"v{i * 10:04d}", f"UC{i % 5 * 10:03d}") for i in range(40)]
    frame = merge_partitions(build_month_partitions(first, zone).values())
    codes = StableCodes.identity(frame)
    stable_of = {bytes(v): int(codes.video[i]) for i, v in enumerate(frame.video_ids)}
    channel_of = {c: int(codes.channel[i]) for i, c in enumerate(frame.channel_ids)}
    at = START + 100 * MINUTE
    for batch in (["v0005", "v0399", "v0010", "v9999"], ["v0001", "v0006", "v0395"]):
        tail = [view(at + k * MINUTE, v, f"UC{int(v[1:]) % 7 * 10 + 1:03d}") for k, v in enumerate(batch)]
        at += 10 * MINUTE
        grown = extend_frame(frame, build_month_partitions(tail, zone).values())
        assert grown is not None
        codes = codes.extended(frame, grown)
        for ids, table, known in (
            (grown.video_ids, codes.video, stable_of),
            (grown.channel_ids, codes.channel, channel_of),
        ):
            fresh = [bytes(x) if isinstance(x, bytes | np.bytes_) else x for x in ids]
            new_ids = [x for x in fresh if x not in known]
            for x in new_ids:  # in frame (id) order, after every code already given
                known[x] = len(known)
            assert [int(c) for c in table] == [known[x] for x in fresh]
        assert np.array_equal(codes.channel_code[codes.channel], np.arange(len(grown.channel_ids)))
        frame = grown


def test_key_counts_hold_int32_counts_and_refuse_an_overflow_unchanged() -> None:
    """Counts are kept as int32 (12 bytes per key); a count that would pass 2^31 − 1 raises and changes nothing."""
    top = int(np.iinfo(np.int32).max)
    table = KeyCounts(np.array([3, 7], dtype=np.int64), np.array([1, top - 1], dtype=np.int64))
    assert table.counts.dtype == np.int32 and table.nbytes == 2 * 12
    assert table.add(np.array([7], dtype=np.int64), np.array([1], dtype=np.int64)).tolist() == [top - 1]
    with pytest.raises(OverflowError):
        table.add(np.array([3, 7], dtype=np.int64), np.array([5, 1], dtype=np.int64))
    assert table.get(np.array([3, 7], dtype=np.int64)).tolist() == [1, top]
    with pytest.raises(OverflowError):
        KeyCounts(np.array([1], dtype=np.int64), np.array([top + 1], dtype=np.int64))


def test_a_type_left_out_of_one_recompute_still_counts_the_views_appended_meanwhile() -> None:
    """The distinct-count memory of a base learns every append, also one computed without the type."""
    from worker.aggregation import FilterSet, compute_aggregations, compute_from_frame
    from worker.aggregation.derived import DerivedState
    from worker.aggregation.partition import build_month_partitions, extend_frame, merge_partitions
    from worker.aggregation.timeframes import load_zone

    rng = random.Random(11)
    zone = load_zone("Europe/Berlin")
    events = random_views(rng, START, 80, videos=30)
    frame = merge_partitions(build_month_partitions(events, zone).values())
    state = DerivedState.cold(frame)
    now = START + 400 * DAY
    sets = [FilterSet("All", "all")]
    for step, types in enumerate((["kpi"], ["kpi"], ["day_time_heatmap"], ["kpi"], ["kpi"])):
        batch = random_views(rng, events[-1].watched_at_ms, 12, videos=25, prefix="s")
        events += batch
        frame = extend_frame(frame, build_month_partitions(batch, zone).values())
        assert frame is not None
        state = state.extended(frame)
        got = compute_from_frame(
            frame, now_ms=now, time_zone="Europe/Berlin", filter_sets=sets, types=types, derived=state
        )
        want = compute_aggregations(events, now_ms=now, time_zone="Europe/Berlin", filter_sets=sets, types=types)
        assert [r.data for r in got] == [r.data for r in want], f"step {step}"


def test_a_local_day_repeating_after_a_later_one_is_counted_once() -> None:
    """America/Goose_Bay turned its clocks back at 00:01 local before 2011: on 2009-11-01, 03:00:30Z
    was 00:00:30 local and 03:30Z was 23:30 of 31 October again, so an appended view can fall on an
    earlier local day than the view before it. Active days and the day span count it right."""
    from worker.aggregation import FilterSet

    def at(ms: int, video: str) -> WatchEvent:
        return WatchEvent(watched_at_ms=ms, video_id=video, title="t", channel_id="UCa", channel_name="A")

    batches = [
        [at(1_257_044_430_000, "a")],  # 2009-11-01 00:00:30 local
        [at(1_257_044_445_000, "b")],  # 00:00:45 local (the 1st append builds the states)
        [at(1_257_046_200_000, "c")],  # 2009-10-31 23:30 local again (the states are extended)
        [at(1_257_046_500_000, "d")],  # 23:35 local, still 31 October
        [at(1_257_052_000_000, "e")],  # 2009-11-01 00:06:40 local: a day the slice had
    ]
    now = [1_257_053_000_000] * len(batches)  # 2009-11-01 00:23:20 local: the same day throughout
    sets = [FilterSet("All", "all"), FilterSet("MTD", "all")]
    assert assert_appends_match(batches, now_ms=now, time_zone="America/Goose_Bay", filter_sets=sets) > 0


def test_two_frames_extended_from_one_state_do_not_share_results() -> None:
    """Extending one state twice (two branches of the same frame) gives each branch its own results,
    even when the two frames match in size, last instant and table sizes."""
    from worker.aggregation import FilterSet, compute_aggregations, compute_from_frame
    from worker.aggregation.derived import DerivedState
    from worker.aggregation.partition import build_month_partitions, extend_frame, merge_partitions
    from worker.aggregation.timeframes import load_zone

    zone = load_zone("UTC")
    sets = [FilterSet("All", "all")]

    def at(ms: int, video: str, product: str) -> WatchEvent:
        return WatchEvent(
            watched_at_ms=ms,
            video_id=video,
            title="gaming walkthrough",
            channel_id="UCa",
            product=product,  # type: ignore[arg-type]
        )

    events = [at(START, "a", "youtube"), at(START + MINUTE, "b", "youtube")]
    frame = merge_partitions(build_month_partitions(events[:1], zone).values())
    parent = DerivedState.cold(frame).extended(extend_frame(frame, build_month_partitions(events[1:], zone).values()))  # type: ignore[arg-type]
    compute_from_frame(parent.frame, now_ms=START + HOUR, time_zone="UTC", filter_sets=sets, derived=parent)
    for product in ("youtube", "youtube_music"):
        branch = [at(START + 2 * MINUTE, "c", product)]
        grown = extend_frame(parent.frame, build_month_partitions(branch, zone).values())
        assert grown is not None
        got = compute_from_frame(
            grown, now_ms=START + HOUR, time_zone="UTC", filter_sets=sets, derived=parent.extended(grown)
        )
        want = compute_aggregations(events + branch, now_ms=START + HOUR, time_zone="UTC", filter_sets=sets)
        assert [r.data for r in got] == [r.data for r in want], product


def test_month_keyed_distinct_counts_hold_only_the_last_two_months() -> None:
    """(video, month) and (channel, month) keys of earlier months are never asked for again by an
    append (its views are later than every earlier one): the tables keep the last two months only,
    and the monthly distinct counts still equal a full computation."""
    from worker.aggregation import FilterSet, compute_aggregations, compute_from_frame
    from worker.aggregation.derived import DerivedState
    from worker.aggregation.partition import build_month_partitions, extend_frame, merge_partitions
    from worker.aggregation.timeframes import load_zone

    rng = random.Random(5)
    zone = load_zone("Europe/Berlin")
    events = random_views(rng, START, 400, videos=40)  # about two years
    frame = merge_partitions(build_month_partitions(events, zone).values())
    state = DerivedState.cold(frame)
    now = START + 400 * DAY
    sets = [FilterSet("All", "all")]
    for step in range(3):
        batch = random_views(rng, events[-1].watched_at_ms, 10, videos=40, prefix=f"s{step}")
        events += batch
        frame = extend_frame(frame, build_month_partitions(batch, zone).values())
        assert frame is not None
        state = state.extended(frame)
        types = ["monthly_trend", "channel_metrics"]
        got = compute_from_frame(
            frame, now_ms=now, time_zone="Europe/Berlin", filter_sets=sets, types=types, derived=state
        )
        want = compute_aggregations(events, now_ms=now, time_zone="Europe/Berlin", filter_sets=sets, types=types)
        assert [r.data for r in got] == [r.data for r in want], f"step {step}"
    (entry,) = state.bases.values()
    held = entry.memory.last_seen["video_month"]
    months = {int(k) % (1 << 18) for k in held.table.keys.tolist() + held.table.side_keys.tolist()}
    all_months = {int(m) for m in frame.month.tolist()}
    assert len(all_months) >= 6
    assert months and max(months) - min(months) <= 1, sorted(months)
    assert "channel_month" in entry.memory.last_seen


def test_month_buckets_follow_the_first_instant_of_each_month() -> None:
    """An instant's bucket is the latest local month whose first instant is not after it: its local
    month, except after a clock turned back across the first of a month (America/Goose_Bay,
    2009-11-01: 03:30Z reads 23:30 on 31 October but is after November's first instant, 03:00Z)."""
    from worker.aggregation.incremental.core import month_buckets
    from worker.aggregation.timeframes import load_zone, month_start_ms

    zone = load_zone("America/Goose_Bay")
    october, november = 2009 * 12 + 9, 2009 * 12 + 10
    assert month_start_ms(november, zone) == 1_257_044_400_000
    ts = np.array([1_257_044_399_000, 1_257_044_430_000, 1_257_046_200_000, 1_257_052_000_000], dtype=np.int64)
    local = np.array([october, november, october, november], dtype=np.int64)
    assert month_buckets(ts, local, zone).tolist() == [october, november, november, november]
