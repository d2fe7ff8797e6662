"""Benchmark the aggregation engine: the full catalogue × the 18 eager filter sets.

Usage::

    .venv/bin/python benchmarks/bench_aggregation.py            # 10k and 100k views
    .venv/bin/python benchmarks/bench_aggregation.py 10000 100000 1000000
    .venv/bin/python benchmarks/bench_aggregation.py --per-type 100000

Prints CPU seconds (``time.process_time``) for a cold run (empty topic-classifier cache, as after a
worker start) and a warm run (titles already classified), the frame-building share, the largest
result (JSON bytes) and the process's peak RSS. With ``--per-type``, also the CPU of each
aggregation type computed alone over the 18 sets from a built frame (best of 3; types computed
together share derived arrays such as sessions and co-sessions, so the sum exceeds the whole).
Histories come from ``worker.synthetic`` when it is available, else from a small seeded generator
in this file.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from collections.abc import Callable

from worker.aggregation import AGGREGATION_TYPES, EAGER_FILTER_SETS, compute_aggregations, compute_from_frame
from worker.aggregation.frame import build_frame
from worker.aggregation.taxonomy import clear_classifier_caches
from worker.aggregation.timeframes import load_zone
from worker.models import WatchEvent

END_MS = 1_750_000_000_000  # 2025-06-15T15:06:40Z, fixed so runs are comparable
TIME_ZONE = "Europe/Berlin"


def _fallback_history(n: int, *, seed: int, end_ms: int) -> list[WatchEvent]:
    rng = random.Random(seed)
    words = [
        "Minecraft",
        "recipe",
        "news",
        "vlog",
        "lofi",
        "review",
        "cat",
        "workout",
        "travel",
        "stocks",
        "xyz",
    ]
    out: list[WatchEvent] = []
    t = end_ms - n * 20 * 60_000
    for i in range(n):
        t += rng.choice((30_000, 240_000, 900_000, 6 * 3_600_000)) // 3
        c = int(rng.paretovariate(1.2)) % 3000
        out.append(
            WatchEvent(
                watched_at_ms=t,
                video_id=f"v{i:010d}",
                title=f"{rng.choice(words)} {rng.choice(words)} {i}",
                channel_id=f"UC{c:022d}",
                channel_name=f"Channel {c}",
            )
        )
    return out


def _generator() -> Callable[[int], list[WatchEvent]]:
    try:
        from worker.synthetic import generate_history
    except ImportError:
        return lambda n: _fallback_history(n, seed=42, end_ms=END_MS)
    return lambda n: generate_history(n, seed=42, end_ms=END_MS, time_zone=TIME_ZONE)


def _run(events: list[WatchEvent]) -> tuple[float, int]:
    start = time.process_time()
    results = compute_aggregations(events, now_ms=END_MS, time_zone=TIME_ZONE, filter_sets=EAGER_FILTER_SETS)
    elapsed = time.process_time() - start
    largest = max(len(json.dumps(r.data).encode()) for r in results)
    return elapsed, largest


def per_type(events: list[WatchEvent]) -> None:
    """Print the CPU ms of each aggregation type computed alone over the 18 eager sets (best of 3)."""
    frame = build_frame(events, load_zone(TIME_ZONE))

    def run(types: list[str] | None) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            compute_from_frame(frame, now_ms=END_MS, time_zone=TIME_ZONE, filter_sets=EAGER_FILTER_SETS, types=types)
            best = min(best, time.process_time() - start)
        return best * 1000

    print(f"  per type, {len(events)} views (CPU ms over 18 sets, each type alone):")
    for name in AGGREGATION_TYPES:
        print(f"  {name:<24} {run([name]):>8.1f}")
    print(f"  {'all 14 together':<24} {run(None):>8.1f}")


def main(sizes: list[int], by_type: bool = False) -> None:
    """Run the benchmark for each history size and print one table row per size."""
    make = _generator()
    print(
        f"{'views':>9} {'cold CPU s':>10} {'warm CPU s':>10} {'frame s':>8} {'results':>8} "
        f"{'max KiB':>8} {'peak RSS MiB':>13}"
    )
    for n in sizes:
        events = make(n)
        clear_classifier_caches()
        cold, largest = _run(events)
        warm, _ = _run(events)
        start = time.process_time()
        build_frame(events, load_zone(TIME_ZONE))
        frame_s = time.process_time() - start
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{len(events):>9} {cold:>10.3f} {warm:>10.3f} {frame_s:>8.3f} {14 * 18:>8} "
            f"{largest / 1024:>8.1f} {peak_mib:>13.1f}"
        )
        if by_type:
            per_type(events)


def parse_args(argv: list[str]) -> tuple[list[int], bool]:
    """Return the history sizes given on the command line (default 10k and 100k views) and ``--per-type``."""
    parser = argparse.ArgumentParser(
        prog="bench_aggregation.py", description="Benchmark the aggregation engine over the 18 eager filter sets."
    )
    parser.add_argument(
        "sizes", nargs="*", type=int, metavar="VIEWS", help="history sizes in views (default: 10000 100000)"
    )
    parser.add_argument("--per-type", action="store_true", help="also print the CPU of each aggregation type")
    args = parser.parse_args(argv)
    sizes: list[int] = args.sizes
    if any(n <= 0 for n in sizes):
        parser.error("sizes must be positive")
    return sizes or [10_000, 100_000], bool(args.per_type)


if __name__ == "__main__":
    main(*parse_args(sys.argv[1:]))
