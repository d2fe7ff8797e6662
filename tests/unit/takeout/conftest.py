"""Fixtures for the Takeout parser tests: the directory of real sample exports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[3]


def _samples_dir() -> Path | None:
    candidates = []
    if env := os.environ.get("TAKEOUT_SAMPLES_DIR"):
        candidates.append(Path(env))
    candidates += [
        _REPO_ROOT.parent / "shared" / "data" / "takeout-samples",
        _REPO_ROOT / "shared" / "data" / "takeout-samples",
        Path("/work/shared/data/takeout-samples"),
    ]
    for candidate in candidates:
        if (candidate / "rabbit_watch-history-sample-1.html").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def samples() -> Path:
    """Directory of the real Takeout sample files (test input only; never copied into the project)."""
    found = _samples_dir()
    if found is None:
        # a failure, not a skip: a run without the samples would silently drop the parser's real-file tests
        pytest.fail("real Takeout samples not found (set TAKEOUT_SAMPLES_DIR to shared/data/takeout-samples)")
    return found
