"""Test support code: the local Convex-compatible backend as a subprocess (`backend.LocalBackend`)."""

from tests.support.backend import BackendStartError, LocalBackend

__all__ = ["BackendStartError", "LocalBackend"]
