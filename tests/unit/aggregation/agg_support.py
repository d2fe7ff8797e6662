"""Shared builders and checks for the aggregation tests."""

from __future__ import annotations

import math
import random
import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from worker.aggregation import AggregationResult, FilterSet, compute_aggregations
from worker.models import WatchEvent

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ARRAY = 8192
MAX_DEPTH = 16


def ms(local: str, tz: str = "UTC", fold: int = 0) -> int:
    """Return epoch ms of a local ISO datetime in ``tz``."""
    dt = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz), fold=fold)
    return int(dt.timestamp() * 1000)


def view(
    at_ms: int,
    channel: str | None = "UCa",
    video: str | None = None,
    *,
    title: str | None = None,
    product: str = "youtube",
    name: str | None = None,
    shorts: bool = False,
) -> WatchEvent:
    """Return a watch view (video id defaults to one derived from the instant)."""
    return WatchEvent(
        watched_at_ms=at_ms,
        kind="watch",
        product=product,  # type: ignore[arg-type]
        video_id=video if video is not None else f"v{at_ms}",
        title=title,
        channel_id=channel,
        channel_name=name if name is not None else (None if channel is None else f"name-{channel}"),
        flags=frozenset({"shorts"}) if shorts else frozenset(),
    )


def removed(at_ms: int) -> WatchEvent:
    """Return a view of a removed video."""
    return WatchEvent(watched_at_ms=at_ms, kind="removed")


def compute_one(
    events: list[WatchEvent], type_: str, *, now_ms: int, tz: str = "UTC", timeframe: str = "All", **kw: Any
) -> AggregationResult:
    """Compute one aggregation type for one filter set."""
    fs = FilterSet(timeframe, kw.pop("product", "all"), **kw)  # type: ignore[arg-type]
    (result,) = compute_aggregations(events, now_ms=now_ms, time_zone=tz, filter_sets=[fs], types=[type_])
    return result


def assert_convex_value(value: Any, depth: int = 0, path: str = "$") -> None:
    """Fail unless ``value`` is a valid Convex value with camelCase-safe keys and bounded arrays."""
    assert depth <= MAX_DEPTH, f"{path}: nesting deeper than {MAX_DEPTH}"
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        assert -(2**63) <= value < 2**63, f"{path}: int out of int64 range"
        return
    if isinstance(value, float):
        assert math.isfinite(value), f"{path}: non-finite float"
        return
    if isinstance(value, list):
        assert len(value) <= MAX_ARRAY, f"{path}: array of {len(value)} > {MAX_ARRAY}"
        for i, item in enumerate(value):
            assert_convex_value(item, depth + 1, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str) and KEY_RE.match(key) and key.isascii(), f"{path}: bad key {key!r}"
            assert_convex_value(item, depth + 1, f"{path}.{key}")
        return
    raise AssertionError(f"{path}: not a Convex value: {type(value).__name__}")


def synthetic_history(n: int, *, seed: int, channels: int = 200, start_ms: int = 1_600_000_000_000) -> list[WatchEvent]:
    """Return a seeded random history of ``n`` views (sessions of a few views, gaps of hours)."""
    rng = random.Random(seed)
    titles = [
        "Minecraft let's play",
        "Pasta recipe",
        "Breaking news",
        "Vlog",
        "Lofi beats",
        "iPhone review",
        "Cat",
    ]
    out: list[WatchEvent] = []
    t = start_ms
    for _ in range(n):
        t += rng.choice((45_000, 240_000, 600_000, 5 * 3_600_000))
        r = rng.random()
        if r < 0.03:
            out.append(removed(t))
            continue
        c = rng.randrange(channels)
        out.append(
            WatchEvent(
                watched_at_ms=t,
                product="youtube_music" if r > 0.85 else "youtube",
                video_id=f"v{rng.randrange(n // 2 + 1):010d}",
                title=f"{rng.choice(titles)} {rng.randrange(100)}",
                channel_id=None if r < 0.05 else f"UC{c:08d}",
                channel_name=f"Channel {c}",
                flags=frozenset({"shorts"}) if rng.random() < 0.2 else frozenset(),
            )
        )
    return out
