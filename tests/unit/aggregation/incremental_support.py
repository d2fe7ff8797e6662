"""Drive the engine's append fast path the way the worker does, and compare with a full computation."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from worker.aggregation import EAGER_FILTER_SETS, FilterSet, compute_aggregations, compute_from_frame
from worker.aggregation.derived import DerivedState
from worker.aggregation.filters import group_by_base
from worker.aggregation.frame import Frame
from worker.aggregation.incremental import REGISTRY
from worker.aggregation.incremental.core import SliceTail
from worker.aggregation.options import AggregationOptions
from worker.aggregation.partition import build_month_partitions, extend_frame, merge_partitions
from worker.aggregation.timeframes import load_zone
from worker.models import WatchEvent


@dataclass
class StateCalls:
    """What the incremental states of some types did, per type (a test proves the fast path ran).

    Attributes:
        built: ``from_slice`` calls.
        sizes: The slice's appended views at each ``extend`` call, in call order.
        appended: ``extend`` calls with at least one appended view of the slice.
        joined: ``extend`` calls whose first appended view continued the slice's last session.
    """

    built: Counter[str] = field(default_factory=Counter)
    sizes: defaultdict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    appended: Counter[str] = field(default_factory=Counter)
    joined: Counter[str] = field(default_factory=Counter)


def spy_states(monkeypatch: pytest.MonkeyPatch, types: Iterable[str]) -> StateCalls:
    """Record the builds and extensions of the states of ``types`` (undone with ``monkeypatch``)."""
    calls = StateCalls()
    for name in types:
        cls = REGISTRY[name]
        build, extend = cls.from_slice.__func__, cls.extend  # type: ignore[attr-defined]

        def counted_build(
            state_cls: Any, view: Any, codes: Any, shared: Any = None, _build: Any = build, _name: str = name
        ) -> Any:
            calls.built[_name] += 1
            return _build(state_cls, view, codes, shared)

        def counted_extend(state: Any, tail: SliceTail, _extend: Any = extend, _name: str = name) -> None:
            calls.sizes[_name].append(tail.n)
            calls.appended[_name] += 1 if tail.n else 0
            calls.joined[_name] += 1 if tail.joins_last else 0
            _extend(state, tail)

        monkeypatch.setattr(cls, "from_slice", classmethod(counted_build))
        monkeypatch.setattr(cls, "extend", counted_extend)
    return calls


MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# titles that classify into topics (worker/aggregation/taxonomy.json keywords) or into none
TITLES = (
    "official music video",
    "gaming walkthrough",
    "python programming tutorial",
    "easy pasta recipe",
    "football highlights",
    "stand up comedy",
    "home workout",
    "untitled clip",
    "vlog 12",
    None,
)


def random_views(
    rng: random.Random,
    start_ms: int,
    n: int,
    *,
    channels: int = 8,
    videos: int = 40,
    prefix: str = "v",
    renames: bool = True,
) -> list[WatchEvent]:
    """Return ``n`` views after ``start_ms`` (strictly), time-ordered: mostly session-length gaps,
    sometimes hours, days or weeks; rewatched videos, channel-less, removed, music and Shorts views.
    A channel's name is one of three (a rename) with ``renames``, always the same without."""
    out: list[WatchEvent] = []
    at = start_ms
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            at += rng.choice((1, 3, 7, 19, 29, 30, 31)) * MINUTE
        elif r < 0.85:
            at += rng.choice((2, 5, 11)) * HOUR
        elif r < 0.97:
            at += rng.choice((1, 3, 9)) * DAY
        else:
            at += rng.choice((20, 45, 100)) * DAY
        if rng.random() < 0.05:
            out.append(WatchEvent(watched_at_ms=at, kind="removed"))
            continue
        ch = None if rng.random() < 0.1 else f"UC{rng.randrange(channels):03d}"
        out.append(
            WatchEvent(
                watched_at_ms=at,
                video_id=f"{prefix}{rng.randrange(videos)}" if rng.random() < 0.95 else None,
                title=rng.choice(TITLES),
                channel_id=ch,
                channel_name=None
                if ch is None or rng.random() < 0.1
                else f"{ch} name {rng.randrange(3) if renames else 0}",
                product="youtube_music" if rng.random() < 0.2 else "youtube",
                flags=frozenset({"shorts"}) if rng.random() < 0.1 else frozenset(),
            )
        )
    return out


def random_appends(
    rng: random.Random,
    start_ms: int,
    steps: int,
    *,
    first: int,
    size: int = 25,
    channels: int = 8,
    later_channels: int = 12,
    videos: int = 60,
    renames: bool = True,
) -> tuple[list[list[WatchEvent]], int]:
    """Return a random history and appends to it: a first batch of 0…``first``−1 views after
    ``start_ms`` (``channels`` channels), then ``steps`` batches of 0…``size``−1 views each, every one
    after the previous ones (``later_channels`` channels: new ids join, sorting among the old ones),
    and the last instant (``start_ms`` when there is no view). ``renames``: as :func:`random_views`."""
    batches = [random_views(rng, start_ms, rng.randrange(0, first), channels=channels, renames=renames)]
    last = max([e.watched_at_ms for e in batches[0]], default=start_ms)
    for _ in range(steps):
        batch = random_views(rng, last, rng.randrange(0, size), channels=later_channels, videos=videos, renames=renames)
        batches.append(batch)
        last = max([e.watched_at_ms for e in batch], default=last)
    return batches, last


def _frame(events: Sequence[WatchEvent], tz: str) -> Frame:
    return merge_partitions(build_month_partitions(events, load_zone(tz)).values())


def _index(results: Sequence[Any]) -> dict[tuple[str, str], tuple[Any, Any]]:
    return {(r.filter_key, r.type): (r.data, r.valid_until_ms) for r in results}


def assert_appends_match(
    batches: Sequence[Sequence[WatchEvent]],
    *,
    now_ms: Sequence[int],
    time_zone: str = "Europe/Berlin",
    filter_sets: Sequence[FilterSet] = EAGER_FILTER_SETS,
    types: Sequence[str] | None = None,
    options: AggregationOptions | None = None,
    repeat: bool = True,
) -> int:
    """Feed ``batches[0]`` as a full merge, then each later batch as an append, as the worker does.

    Each batch must come strictly after the previous ones (an append ``extend_frame`` accepts).
    After every step the engine's results (with the state carried along, ``now_ms[i]`` as now)
    must equal ``compute_aggregations`` over all views so far. With ``repeat`` every step is
    computed a second time on the same frame (an expiry or filter change: no new views).

    Returns:
        How many results were compared.
    """
    zone = load_zone(time_zone)
    events = list(batches[0])
    frame = _frame(events, time_zone)
    state = DerivedState.cold(frame)
    compared = 0
    for step, batch in enumerate(batches):
        if step:
            grown = extend_frame(frame, build_month_partitions(batch, zone).values())
            assert grown is not None, f"batch {step} does not come after the previous ones"
            events.extend(batch)
            state = state.extended(grown) if grown is not frame else state
            frame = grown
        for attempt in range(2 if repeat else 1):
            # as the worker's recompute calls the engine: the first set alone, then base by base
            # (the repeat: all sets in one call)
            batches_of_sets = [list(filter_sets)] if attempt else _runner_batches(filter_sets)
            got = [
                r
                for sets in batches_of_sets
                for r in compute_from_frame(
                    frame,
                    now_ms=now_ms[step],
                    time_zone=time_zone,
                    filter_sets=sets,
                    types=types,
                    options=options,
                    derived=state,
                )
            ]
            want = compute_aggregations(
                events,
                now_ms=now_ms[step],
                time_zone=time_zone,
                filter_sets=filter_sets,
                types=types,
                options=options,
            )
            got_i, want_i = _index(got), _index(want)
            assert sorted(got_i) == sorted(want_i) and len(got) == len(want)
            for key, expected in want_i.items():
                assert got_i[key] == expected, _diff(step, key, got_i[key], expected)
                compared += 1
    return compared


def _runner_batches(filter_sets: Sequence[FilterSet]) -> list[list[FilterSet]]:
    if not filter_sets:
        return [[]]
    return [[filter_sets[0]], *group_by_base(filter_sets[1:])]


def _diff(step: int, key: tuple[str, str], got: Any, want: Any) -> str:
    lines = [f"step {step}, filter set {key[0]!r}, type {key[1]!r}:"]
    g, w = got[0], want[0]
    if got[1] != want[1]:
        lines.append(f"  validUntil {got[1]} != {want[1]}")
    if isinstance(g, dict) and isinstance(w, dict):
        for field in sorted(set(g) | set(w)):
            if g.get(field) != w.get(field):
                lines.append(
                    f"  {field}: got {str(g.get(field))[:400]}\n  {' ' * len(field)}  want {str(w.get(field))[:400]}"
                )
    return "\n".join(lines)
