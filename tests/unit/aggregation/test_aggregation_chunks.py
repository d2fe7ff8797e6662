"""Chunked session and co-session passes give the same results at any chunk size."""

from __future__ import annotations

import pytest

from worker.aggregation import EAGER_FILTER_SETS, compute_aggregations, slices
from worker.synthetic import generate_history

NOW_MS = 1_790_000_000_000


class TestChunkBoundaries:
    @pytest.mark.parametrize(("views_per_chunk", "pairs_per_chunk"), [(1, 1), (2, 3), (37, 5), (1000, 64)])
    def test_results_do_not_depend_on_chunk_sizes(
        self, monkeypatch: pytest.MonkeyPatch, views_per_chunk: int, pairs_per_chunk: int
    ) -> None:
        """Sessions are never split across chunks: tiny chunks reproduce the default results exactly."""
        events = generate_history(3000, seed=5, end_ms=NOW_MS, time_zone="Europe/Berlin", years=1.0)
        kwargs = {"now_ms": NOW_MS, "time_zone": "Europe/Berlin", "filter_sets": EAGER_FILTER_SETS[:6]}
        expected = compute_aggregations(events, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(slices, "_VIEWS_PER_CHUNK", views_per_chunk)
        monkeypatch.setattr(slices, "_PAIRS_PER_CHUNK", pairs_per_chunk)
        assert compute_aggregations(events, **kwargs) == expected  # type: ignore[arg-type]
