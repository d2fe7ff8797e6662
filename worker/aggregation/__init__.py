"""Pure aggregation engine: watch events → materialized aggregates (no I/O, no clock).

Public API (docs/aggregations.md describes every definition and output shape)::

    compute_aggregations(events, *, now_ms, time_zone, filter_sets, types=None, options=None)
        -> list[AggregationResult]
    compute_from_frame(frame, *, now_ms, time_zone, filter_sets, types=None, options=None)
        -> list[AggregationResult]      # frame = merge_partitions(...) of aggregation.partition
    classify_topic(title, channel_name) -> str | None
"""

from __future__ import annotations

from worker.aggregation.engine import (
    AGGREGATION_TYPES,
    DEFINITION_VERSION,
    AggregationResult,
    compute_aggregations,
    compute_from_frame,
)
from worker.aggregation.filters import EAGER_FILTER_SETS, PRODUCTS, FilterSet
from worker.aggregation.options import AggregationOptions
from worker.aggregation.taxonomy import TAXONOMY_VERSION, TOPIC_SLUGS, classify_topic
from worker.aggregation.timeframes import TIMEFRAMES

__all__ = [
    "AGGREGATION_TYPES",
    "DEFINITION_VERSION",
    "EAGER_FILTER_SETS",
    "PRODUCTS",
    "TAXONOMY_VERSION",
    "TIMEFRAMES",
    "TOPIC_SLUGS",
    "AggregationOptions",
    "AggregationResult",
    "FilterSet",
    "classify_topic",
    "compute_aggregations",
    "compute_from_frame",
]
