"""The pair counts one slice's channel_metrics and channel_relationships states share (SessionPairs)."""

from __future__ import annotations

import gc
import random

import numpy as np

from tests.unit.aggregation.incremental_support import DAY, random_views
from worker.aggregation import EAGER_FILTER_SETS, compute_from_frame
from worker.aggregation.derived import DerivedState
from worker.aggregation.frame import Frame
from worker.aggregation.incremental.channels import ChannelMetricsState
from worker.aggregation.incremental.core import StableCodes
from worker.aggregation.incremental.pairs import SessionPairs
from worker.aggregation.incremental.relationships import RelationshipsState
from worker.aggregation.incremental.shared import SliceShared
from worker.aggregation.options import AggregationOptions
from worker.aggregation.partition import build_month_partitions, extend_frame, merge_partitions
from worker.aggregation.slices import Slice
from worker.aggregation.timeframes import load_zone, make_clock, resolve_window
from worker.models import WatchEvent

ZONE = "Europe/Berlin"
START = 1_700_000_000_000
TYPES = ["channel_metrics", "channel_relationships"]


def _frame(events: list[WatchEvent]) -> Frame:
    return merge_partitions(build_month_partitions(events, load_zone(ZONE)).values())


def _appended(types: list[str], steps: int = 4) -> DerivedState:
    """A random history and ``steps`` appends computed with ``types``, as the worker computes them."""
    rng = random.Random(7)
    events = random_views(rng, START, 300, channels=25, renames=False)
    frame = _frame(events)
    state = DerivedState.cold(frame)
    for _ in range(steps):
        batch = random_views(rng, events[-1].watched_at_ms, 20, channels=30, renames=False)
        grown = extend_frame(frame, build_month_partitions(batch, load_zone(ZONE)).values())
        assert grown is not None
        events.extend(batch)
        state, frame = state.extended(grown), grown
        compute_from_frame(
            frame, now_ms=START + 400 * DAY, time_zone=ZONE, filter_sets=EAGER_FILTER_SETS, types=types, derived=state
        )
    return state


def test_both_states_of_a_slice_share_one_table_counted_once() -> None:
    state = _appended(TYPES)
    tables = 0
    for entry in state.bases.values():
        unique: dict[int, SessionPairs] = {}
        states_bytes = 0
        for key, s in entry.slices.items():
            metrics, relationships = s.states["channel_metrics"][1], s.states["channel_relationships"][1]
            assert isinstance(metrics, ChannelMetricsState) and isinstance(relationships, RelationshipsState)
            assert metrics.pairs is relationships.pairs is s.shared.pairs, key
            assert s.shared.pairs.epoch == s.epoch == state.epoch, key
            unique[id(metrics.pairs)] = metrics.pairs
            states_bytes += metrics.nbytes + relationships.nbytes
        assert entry.nbytes == entry.memory.nbytes + states_bytes + sum(p.nbytes for p in unique.values())
        tables += len(unique)
    assert tables == len(EAGER_FILTER_SETS)


def test_a_state_rebuilt_alone_takes_the_table_the_other_extended() -> None:
    """channel_relationships missing from one append is rebuilt at the next; the table channel_metrics
    extended meanwhile describes the slice, so the rebuilt state takes it instead of a copy."""
    state = _appended(TYPES, steps=2)
    rng = random.Random(8)
    frame = state.frame
    for types in (["channel_metrics"], TYPES):
        start = int(frame.ts.max())
        batch = random_views(rng, start, 15, channels=30, renames=False)
        grown = extend_frame(frame, build_month_partitions(batch, load_zone(ZONE)).values())
        assert grown is not None
        state, frame = state.extended(grown), grown
        compute_from_frame(
            frame, now_ms=START + 400 * DAY, time_zone=ZONE, filter_sets=EAGER_FILTER_SETS, types=types, derived=state
        )
    for entry in state.bases.values():
        for key, s in entry.slices.items():
            assert s.states["channel_metrics"][1].pairs is s.states["channel_relationships"][1].pairs, key


def test_a_table_counts_12_bytes_per_pair() -> None:
    """int64 pair keys and int32 counts: 12 bytes per pair, plus the last session's channels."""
    rng = random.Random(5)
    frame = _frame(random_views(rng, START, 400, channels=30))
    clock = make_clock(START + 400 * DAY, load_zone(ZONE), 30)
    rows = np.arange(frame.size, dtype=np.int64)
    whole = Slice(frame, rows, rows, clock, resolve_window("All", clock), AggregationOptions(), start=0)
    pairs = whole.co_sessions.pair_sessions.size
    assert pairs > 100
    table = SliceShared(0).pairs_of(whole, StableCodes.identity(frame))
    assert table.counts.size == pairs
    assert table.counts.counts.dtype == np.int32
    assert 12 * pairs <= table.nbytes <= 12 * pairs + 8 * AggregationOptions().max_channels_per_session + 1024


def test_appends_leave_no_cyclic_garbage() -> None:
    """What the fast path builds is freed by reference counting alone: the worker's raised collector
    threshold (worker.allocator.configure_gc) then changes only when cycles would be found, never what is freed."""
    rng = random.Random(11)
    events = random_views(rng, START, 400, channels=25)
    frame = _frame(events)
    state = DerivedState.cold(frame)
    gc.collect()
    gc.disable()
    try:
        found = []
        for _ in range(4):
            batch = random_views(rng, events[-1].watched_at_ms, 30, channels=30)
            grown = extend_frame(frame, build_month_partitions(batch, load_zone(ZONE)).values())
            assert grown is not None
            events.extend(batch)
            state, frame = state.extended(grown), grown
            results = compute_from_frame(
                frame, now_ms=START + 400 * DAY, time_zone=ZONE, filter_sets=EAGER_FILTER_SETS, derived=state
            )
            assert len(results) == len(EAGER_FILTER_SETS) * 14
            del results
            found.append(gc.collect())
    finally:
        gc.enable()
    assert found == [0, 0, 0, 0]
