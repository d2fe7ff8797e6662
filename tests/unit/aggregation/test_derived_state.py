"""Session pairs carried between recomputes (DerivedState): extended pairs equal freshly computed ones."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from worker.aggregation import EAGER_FILTER_SETS, FilterSet, compute_from_frame, derived
from worker.aggregation.derived import DerivedState
from worker.aggregation.frame import Frame, build_frame
from worker.aggregation.options import AggregationOptions
from worker.aggregation.partition import build_month_partitions, extend_frame
from worker.aggregation.slices import Slice, _session_pairs, _SessionPairs, extend_session_pairs
from worker.aggregation.timeframes import load_zone, make_clock, resolve_window
from worker.models import WatchEvent

TZ = "Europe/Berlin"
ZONE = load_zone(TZ)
START_MS = 1_700_000_000_000
MINUTE = 60_000


def views(rng: random.Random, start_ms: int, n: int, channels: list[str]) -> list[WatchEvent]:
    """n views from ``start_ms`` on: gaps of minutes (same session) or hours (new session)."""
    out: list[WatchEvent] = []
    at = start_ms
    for i in range(n):
        at += rng.choice((2, 5, 9, 20, 25)) * MINUTE if rng.random() < 0.85 else rng.choice((2, 7, 30)) * 60 * MINUTE
        channel = rng.choice(channels) if rng.random() < 0.9 else None
        out.append(
            WatchEvent(
                watched_at_ms=at,
                video_id=f"v{rng.randrange(10**6)}",
                title=f"video {i}",
                channel_id=channel,
                channel_name=None if channel is None else f"name {channel}",
                product="youtube_music" if rng.random() < 0.2 else "youtube",
            )
        )
    return out


def grow(frame: Frame, new: list[WatchEvent]) -> Frame:
    grown = extend_frame(frame, build_month_partitions(new, ZONE).values())
    assert grown is not None
    return grown


def base_view(frame: Frame, fs: FilterSet, state: DerivedState | None = None) -> Slice:
    """The engine's slice of ``fs``'s base over the whole history (timeframe All)."""
    from worker.aggregation.engine import _base_indices

    clock = make_clock(int(frame.ts[-1]) + MINUTE, ZONE, 30)
    base = _base_indices(frame, fs)
    provider = None
    if state is not None:
        key = (fs.product, fs.topics, fs.channels)
        provider = lambda v: state.session_pairs(key, v)  # noqa: E731
    return Slice(
        frame,
        base,
        base,
        clock,
        resolve_window("All", clock),
        AggregationOptions(),
        start=0,
        derive_co_sessions=True,
        pairs_provider=provider,
    )


def assert_pairs_equal(a: _SessionPairs | None, b: _SessionPairs | None) -> None:
    assert a is not None and b is not None
    for name in _SessionPairs.__slots__:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def fresh_pairs(view: Slice) -> _SessionPairs | None:
    return _session_pairs(
        view.base_channel, view.base_sessions, len(view.frame.channel_ids), view.options.max_channels_per_session
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("product", ["all", "youtube", "youtube_music"])
def test_extended_pairs_equal_pairs_computed_from_scratch(
    seed: int, product: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    extensions: list[bool] = []

    def counted(*args: Any, **kwargs: Any) -> _SessionPairs | None:
        out = extend_session_pairs(*args, **kwargs)
        extensions.append(out is not None)
        return out

    monkeypatch.setattr(derived, "extend_session_pairs", counted)
    rng = random.Random(seed)
    channels = [f"UC{c:03d}" for c in range(0, 400, 7)]
    frame = build_frame(views(rng, START_MS, 3000, channels), ZONE)
    state = DerivedState.cold(frame)
    fs = FilterSet("All", product)
    for step in range(5):
        # new ids sorting among the old ones (codes renumbered) on some steps, continuing the last
        # session (first gap of minutes) or starting new ones, with channel-less views
        pool = channels + [f"UC{c:03d}" for c in range(3 + step, 400, 50)] if step % 2 else channels
        new = views(rng, int(frame.ts[-1]), rng.choice((1, 3, 40, 400)), pool)
        grown = grow(frame, new)
        state = state.extended(grown)
        got = base_view(grown, fs, state).base_session_pairs
        assert_pairs_equal(got, fresh_pairs(base_view(grown, fs)))
        frame = grown
    assert state.nbytes > 0  # retained after the first append, extended by the next ones
    assert extensions == [True] * 4  # the 4 appends after the first were extensions, not recomputes


def test_a_cold_state_retains_nothing_and_a_foreign_frame_is_ignored() -> None:
    rng = random.Random(7)
    frame = build_frame(views(rng, START_MS, 500, ["UCa", "UCb", "UCc"]), ZONE)
    cold = DerivedState.cold(frame)
    fs = FilterSet("All", "all")
    assert_pairs_equal(base_view(frame, fs, cold).base_session_pairs, fresh_pairs(base_view(frame, fs)))
    assert cold.nbytes == 0  # a full merge's recompute keeps its peak memory unchanged
    grown = grow(frame, views(rng, int(frame.ts[-1]), 20, ["UCa", "UCd"]))
    state = cold.extended(grown)
    other = build_frame(views(rng, START_MS, 300, ["UCz"]), ZONE)
    assert_pairs_equal(base_view(other, fs, state).base_session_pairs, fresh_pairs(base_view(other, fs)))
    assert state.nbytes == 0  # pairs of a frame that is not the state's are not kept


def test_results_with_a_carried_state_equal_results_without() -> None:
    rng = random.Random(11)
    channels = [f"UC{c:02d}" for c in range(60)]
    frame = build_frame(views(rng, START_MS, 4000, channels), ZONE)
    state = DerivedState.cold(frame)
    sets = [*EAGER_FILTER_SETS, FilterSet("All", "all", channels=("UC03", "UC10", "UC99"))]
    for step in range(3):
        frame = grow(frame, views(rng, int(frame.ts[-1]), 50 + step, [*channels, f"UC{step}5x"]))
        state = state.extended(frame)
        now_ms = int(frame.ts[-1]) + 3 * MINUTE
        # the runner's order: the default set alone, then every set (exact reuse of the retained pairs)
        for chosen in (sets[:1], sets):
            carried = compute_from_frame(frame, now_ms=now_ms, time_zone=TZ, filter_sets=chosen, derived=state)
            plain = compute_from_frame(frame, now_ms=now_ms, time_zone=TZ, filter_sets=chosen)
            assert carried == plain
