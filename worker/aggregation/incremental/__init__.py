"""Append fast path of the aggregation engine (docs/aggregations.md › Incremental maintenance).

``REGISTRY`` maps each aggregation type with an incremental implementation to its state class;
types missing from it are computed over the whole slice on every recompute.
"""

from __future__ import annotations

from worker.aggregation.incremental import channels, counts, engagement, evolution, relationships, sessions, topics
from worker.aggregation.incremental.core import IncrementalState

__all__ = ["REGISTRY"]

REGISTRY: dict[str, type[IncrementalState]] = {
    **counts.INCREMENTAL,
    **topics.INCREMENTAL,
    **sessions.INCREMENTAL,
    **channels.INCREMENTAL,
    **relationships.INCREMENTAL,
    **evolution.INCREMENTAL,
    **engagement.INCREMENTAL,
}
