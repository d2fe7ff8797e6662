"""Shared pytest fixtures.

* ``fixture_backend`` — local backend running the small fixture functions of ``convex-local/test``.
* ``project_backend`` — local backend running the project's own functions (``convex/``).
* ``samples_dir`` — the real Takeout sample exports (``shared/data/takeout-samples``), test input only.

Both are session-scoped, start on free ports, and are killed at session end (also on failure:
``tests.support.backend`` kills every live backend at interpreter exit). A backend that cannot
start makes the test error with the backend's stderr.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backend import FIXTURE_FUNCTIONS_DIR, PROJECT_FUNCTIONS_DIR, REPO_ROOT, LocalBackend


@pytest.fixture(scope="session")
def fixture_backend() -> Iterator[LocalBackend]:
    """Local backend with the fixture functions (``convex-local/test/fixture/convex``), in memory, 1 s function limit."""
    backend = LocalBackend(FIXTURE_FUNCTIONS_DIR, extra_args=["--function-timeout-ms", "1000"])
    backend.start()
    try:
        yield backend
    finally:
        backend.kill()


@pytest.fixture(scope="session")
def project_backend() -> Iterator[LocalBackend]:
    """Local backend with the project's functions (``convex/``), in memory."""
    backend = LocalBackend(PROJECT_FUNCTIONS_DIR)
    backend.start()
    try:
        yield backend
    finally:
        backend.kill()


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """Directory of the real Takeout sample exports; a failure, not a skip, when it is missing."""
    for candidate in (
        Path(os.environ.get("TAKEOUT_SAMPLES_DIR", "/nonexistent")),
        REPO_ROOT.parent / "shared" / "data" / "takeout-samples",
    ):
        if candidate.is_dir():
            return candidate
    pytest.fail("shared/data/takeout-samples not found beside the repository (or set TAKEOUT_SAMPLES_DIR)")
