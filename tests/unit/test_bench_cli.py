"""Benchmark scripts: command-line arguments (the benchmarks themselves are not run here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("script", ["bench_aggregation.py", "bench_incremental.py"])
def test_help_prints_usage(script: str) -> None:
    """--help prints the usage with the size arguments and exits 0."""
    done = subprocess.run(
        [sys.executable, str(_BENCHMARKS / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and "Traceback" not in done.stderr


@pytest.mark.parametrize("script", ["bench_aggregation.py", "bench_incremental.py"])
def test_bad_size_is_a_usage_error(script: str) -> None:
    """A size that is not a positive integer is a usage error (exit 2), not a traceback."""
    done = subprocess.run(
        [sys.executable, str(_BENCHMARKS / script), "ten"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "invalid int value" in done.stderr and "Traceback" not in done.stderr


def test_incremental_arguments() -> None:
    """Sizes, --rss-only and --frame-cache-mib are read in any order; no sizes means 10k and 100k."""
    sys.path.insert(0, str(_BENCHMARKS))
    try:
        import bench_incremental
    finally:
        sys.path.remove(str(_BENCHMARKS))
    assert bench_incremental.parse_args(["--rss-only", "1000000"]) == ([1_000_000], True, None)
    assert bench_incremental.parse_args(["500", "--rss-only"]) == ([500], True, None)
    assert bench_incremental.parse_args([]) == ([10_000, 100_000], False, None)
    assert bench_incremental.parse_args(["--frame-cache-mib", "512", "700"]) == ([700], False, 512)
    with pytest.raises(SystemExit):  # the appended views copy 64 of the history's own
        bench_incremental.parse_args(["50"])
    with pytest.raises(SystemExit):
        bench_incremental.parse_args(["--frame-cache-mib", "-1"])


def test_rss_only_gives_the_worker_process_the_frame_cache_asked_for() -> None:
    """``--rss-only --frame-cache-mib`` reaches the worker-process child: with no frame cache it keeps
    no state, with the default one it keeps the incremental states (a small history: a few seconds)."""
    done = {
        mib: subprocess.run(
            [sys.executable, str(_BENCHMARKS / "bench_incremental.py"), "--rss-only", *mib, "400"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        for mib in ((), ("--frame-cache-mib", "0"))
    }
    states = {}
    for mib, run in done.items():
        assert run.returncode == 0, run.stderr
        row = run.stdout.strip().splitlines()[-1].split()
        assert row[0] == "400", run.stdout
        states[mib] = float(row[-3])  # stateMiB, then the two RSS peaks
    assert states[()] > 0 and states[("--frame-cache-mib", "0")] == 0
