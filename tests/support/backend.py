"""The local backend launcher for tests: re-exported from :mod:`worker.devbackend`."""

from __future__ import annotations

from worker.devbackend import (
    BIN,
    FIXTURE_FUNCTIONS_DIR,
    PROJECT_FUNCTIONS_DIR,
    REPO_ROOT,
    BackendStartError,
    LocalBackend,
    free_port,
)

__all__ = [
    "BIN",
    "FIXTURE_FUNCTIONS_DIR",
    "PROJECT_FUNCTIONS_DIR",
    "REPO_ROOT",
    "BackendStartError",
    "LocalBackend",
    "free_port",
]
