"""ConvexGateway.store_aggregations: grouping into filter sets, data hashes, packing into calls.

The mutation is replaced by a recorder; the backend side of the contract is covered by
convex/worker.test.ts and end to end by tests/integration/.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pytest

from worker.gateway import (
    ConvexGateway,
    RawJson,
    _encode_body,
    canonical_json,
    data_hash,
    group_result_sets,
    pack_result_sets,
)
from worker.models import StoreOutcome

TYPES = ["kpi", "monthly_trend", "top_channels"]


def flat(key: str, type_: str, data: Any, version: int = 1, valid_until_ms: int | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": type_, "filterKey": key, "data": data, "definitionVersion": version}
    if valid_until_ms is not None:
        doc["validUntilMs"] = valid_until_ms
    return doc


class RecordingGateway(ConvexGateway):
    """A gateway whose mutations are recorded and answered with every result written."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1", admin_key="test")
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def mutation(self, path: str, args: Mapping[str, Any] | None = None) -> Any:
        payload = dict(args or {})
        self.calls.append((path, payload))
        total = sum(len(s["results"]) for s in payload["sets"])
        return {"written": float(total), "unchanged": 0.0, "skippedStale": 0.0}


def store(results: list[dict[str, Any]], chunk_size: int) -> tuple[StoreOutcome, list[dict[str, Any]]]:
    async def run() -> tuple[StoreOutcome, list[dict[str, Any]]]:
        gw = RecordingGateway()
        try:
            outcome = await gw.store_aggregations(
                "user-1", watermark=7, computed_at_ms=1234, results=results, chunk_size=chunk_size
            )
        finally:
            await gw.aclose()
        assert all(path == "worker:storeAggregations" for path, _ in gw.calls)
        return outcome, [args for _, args in gw.calls]

    return asyncio.run(run())


def test_data_hash_is_blake2b_of_canonical_json() -> None:
    data = {"b": [1, 2, {"z": "é", "a": None}], "a": 1.5}
    expected = hashlib.blake2b('{"a":1.5,"b":[1,2,{"a":null,"z":"é"}]}'.encode(), digest_size=16).hexdigest()
    assert data_hash(data) == expected
    assert len(expected) == 32
    assert data_hash({"a": 1.5, "b": [1, 2, {"a": None, "z": "é"}]}) == expected  # key order is irrelevant
    assert data_hash({"a": 1.5, "b": [2, 1, {"a": None, "z": "é"}]}) != expected  # list order is not
    assert data_hash(json.loads(json.dumps(data))) == expected


def decoded(sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sets with each result's embedded canonical JSON text parsed back."""
    for s in sets:
        for r in s["results"]:
            assert isinstance(r["data"], RawJson)
            r["data"] = json.loads(r["data"])
    return sets


def test_groups_by_filter_key_in_first_seen_order() -> None:
    results = [
        flat("All|all||", "kpi", {"v": 1}),
        flat("MTD|all||", "kpi", {"v": 2}, valid_until_ms=99),
        flat("All|all||", "monthly_trend", []),
        flat("MTD|all||", "monthly_trend", [], valid_until_ms=None),
    ]
    sets = decoded(group_result_sets(results))
    assert [s["filterKey"] for s in sets] == ["All|all||", "MTD|all||"]
    assert sets[0] == {
        "filterKey": "All|all||",
        "definitionVersion": 1,
        "results": [
            {"type": "kpi", "data": {"v": 1}, "dataHash": data_hash({"v": 1})},
            {"type": "monthly_trend", "data": [], "dataHash": data_hash([])},
        ],
    }
    assert sets[1]["results"][0] == {
        "type": "kpi",
        "data": {"v": 2},
        "dataHash": data_hash({"v": 2}),
        "validUntilMs": 99,
    }
    assert "validUntilMs" not in sets[1]["results"][1]


def test_mixed_definition_versions_in_one_set_are_refused() -> None:
    with pytest.raises(ValueError, match="definitionVersion"):
        group_result_sets([flat("All|all||", "kpi", 1, version=1), flat("All|all||", "monthly_trend", 1, version=2)])
    # Different sets may differ.
    assert len(group_result_sets([flat("a", "kpi", 1, version=1), flat("b", "kpi", 1, version=2)])) == 2


def test_packs_whole_sets_up_to_chunk_size() -> None:
    sets = [{"filterKey": f"k{i}", "results": [{}] * n} for i, n in enumerate([14, 14, 14, 14, 60, 3])]
    batches = pack_result_sets(sets, 40)
    assert [[s["filterKey"] for s in b] for b in batches] == [["k0", "k1"], ["k2", "k3"], ["k4"], ["k5"]]
    batches = pack_result_sets(sets, 50)
    assert [[s["filterKey"] for s in b] for b in batches] == [["k0", "k1", "k2"], ["k3"], ["k4"], ["k5"]]
    assert pack_result_sets([], 40) == []
    with pytest.raises(ValueError):
        pack_result_sets(sets, 0)


def test_store_sends_each_set_whole_and_sums_outcomes() -> None:
    keys = [f"T{i}|all||" for i in range(18)]
    results = [flat(key, t, {"key": key, "type": t}) for t in TYPES for key in keys]  # interleaved sets
    outcome, calls = store(results, chunk_size=10)
    assert outcome == StoreOutcome(written=54, unchanged=0, skipped_stale=0)
    assert len(calls) == 6  # 3 sets of 3 results per call
    seen: list[str] = []
    for args in calls:
        assert args["userId"] == "user-1" and args["watermark"] == 7 and args["computedAtMs"] == 1234
        assert sum(len(s["results"]) for s in args["sets"]) <= 10
        for s in args["sets"]:
            assert [r["type"] for r in s["results"]] == TYPES
            assert all(r["dataHash"] == data_hash(json.loads(r["data"])) for r in s["results"])
            seen.append(s["filterKey"])
    assert seen == keys  # every set exactly once, never split


def test_store_of_nothing_makes_no_call() -> None:
    outcome, calls = store([], chunk_size=40)
    assert outcome == StoreOutcome() and calls == []


def test_request_body_embeds_canonical_data_verbatim() -> None:
    """The wire body carries each result's canonical JSON text once, and parses to the same values."""
    data = {"z": [1, 2.5, None], "a": "é \u0000raw0000000000000000:0\u0000"}
    sets = group_result_sets([flat("All|all||", "kpi", data)])
    body = _encode_body("worker:storeAggregations", {"userId": "u\x00raw00:0\x00", "sets": sets})
    text = body.decode("utf-8")
    assert canonical_json(data) in text
    parsed = json.loads(text)
    assert parsed["path"] == "worker:storeAggregations"
    assert parsed["args"]["userId"] == "u\x00raw00:0\x00"
    assert parsed["args"]["sets"][0]["results"][0]["data"] == data


def test_non_finite_numbers_are_refused() -> None:
    """NaN is not JSON: a result holding one is refused before anything is sent."""
    with pytest.raises(ValueError):
        group_result_sets([flat("All|all||", "kpi", {"share": float("nan")})])
