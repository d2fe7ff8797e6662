"""Incremental states of the relationships family (see worker.aggregation.incremental.core). Pure: no I/O."""

from __future__ import annotations

from worker.aggregation.incremental.core import IncrementalState

__all__ = ["INCREMENTAL"]

INCREMENTAL: dict[str, type[IncrementalState]] = {}
"""Aggregation type → its incremental state class."""
