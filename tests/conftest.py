"""Shared pytest fixtures.

* ``fixture_backend`` — local backend running the small fixture functions of ``convex-local/test``.
* ``project_backend`` — local backend running the project's own functions (``convex/``).

Both are session-scoped, start on free ports, and are killed at session end (also on failure:
``tests.support.backend`` kills every live backend at interpreter exit). A backend that cannot
start makes the test error with the backend's stderr.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.backend import FIXTURE_FUNCTIONS_DIR, PROJECT_FUNCTIONS_DIR, LocalBackend


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
