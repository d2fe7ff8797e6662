"""The store protocol against the real backend: hash-only claims, refusal of a wrong claim, resend."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.integration.test_pipeline import import_as_user
from tests.support.backend import LocalBackend
from worker.aggregation import FilterSet, compute_aggregations
from worker.gateway import ConvexGateway, data_hash
from worker.recompute import result_to_convex
from worker.synthetic import generate_history

pytestmark = pytest.mark.integration

SETS = [FilterSet("All", "all"), FilterSet("All", "youtube"), FilterSet("Last6M", "all")]


def results_for(views: Any, now_ms: int) -> list[dict[str, Any]]:
    return [result_to_convex(r) for r in compute_aggregations(views, now_ms=now_ms, time_zone="UTC", filter_sets=SETS)]


def test_unchanged_results_travel_as_hashes_and_a_wrong_claim_is_resent(project_backend: LocalBackend) -> None:
    """Known hashes skip the upload; a claim the backend cannot confirm makes the set travel again in full."""
    now_ms = time.time_ns() // 1_000_000
    views = generate_history(300, seed=21, end_ms=now_ms - 3_600_000, time_zone="UTC", years=0.5)
    first = results_for(views, now_ms)
    second = results_for(views[:-10], now_ms)  # different data for most types
    user = "convex-local|store-protocol"

    async def scenario() -> tuple[Any, Any, Any, Any]:
        token = await import_as_user(project_backend, "store-protocol", views, "UTC")
        async with ConvexGateway(project_backend.url, admin_key=project_backend.admin_key) as gw:
            full = await gw.store_aggregations(user, watermark=1, computed_at_ms=now_ms, results=first)
            again = await gw.store_aggregations(
                user, watermark=1, computed_at_ms=now_ms + 1, results=first, known_hashes=full.hashes
            )
            # Claim that `second` is stored although `first` is: every differing set is refused, then resent.
            claimed = {(r["filterKey"], r["type"]): data_hash(r["data"]) for r in second}
            wrong = await gw.store_aggregations(
                user, watermark=1, computed_at_ms=now_ms + 2, results=second, known_hashes=claimed
            )
        async with ConvexGateway(project_backend.url, user_token=token) as reader:
            stored = await reader.query(
                "dashboard:getAggregation", {"type": "kpi", "filters": {"timeframe": "All", "product": "all"}}
            )
        return full, again, wrong, stored

    full, again, wrong, stored = asyncio.run(scenario())
    assert full.written == len(first) and full.resent == 0
    assert again.written == 0 and again.unchanged == len(first) and again.resent == 0
    assert wrong.resent >= 1
    assert wrong.written > 0 and wrong.skipped_stale == 0
    assert set(wrong.hashes) == {(r["filterKey"], r["type"]) for r in second}
    expected_kpi = next(r["data"] for r in second if r["type"] == "kpi" and r["filterKey"] == "All|all||")
    assert stored["data"]["views"] == expected_kpi["views"]
    assert stored["data"] == expected_kpi  # numbers come back as floats: compare values, not JSON text
