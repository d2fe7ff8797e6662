"""Freshness end to end over the local Convex backend: import commit → updated public query result.

For each history size: start the local backend, import a seeded synthetic history for one user,
start the worker as its own process (``python -m worker run``), wait until the dashboard is fresh
(the full recompute), then commit ``--changes`` small imports one at a time and measure, for each,
the time from the mutation's commit (its HTTP response) to the moment a subscribed public query
(``dashboard:getDashboard`` for the default filter set, the React app's read path, through the
official ``convex`` client over WebSocket) yields a result whose watermark covers that change, and
to the moment every filter set is stored and the change acknowledged (``settings:get``).

Prints p50/p95/p99/max freshness lag (ms), the worker's CPU time for the initial full recompute and
per change (psutil, the worker process only), and the worker's own per-batch timings from its logs.
The local backend is a development server (convex-test underneath): its reads are table scans, so
absolute figures at 100k events are dominated by the backend, not the worker — see the backend
benchmark for its own costs.

Usage: .venv/bin/python benchmarks/bench_freshness.py [--events 10000 100000] [--changes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from convex import ConvexClient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from worker.aggregation import FilterSet, compute_aggregations  # noqa: E402
from worker.devbackend import LocalBackend  # noqa: E402
from worker.gateway import ConvexGateway  # noqa: E402
from worker.importer import upload_events  # noqa: E402
from worker.models import WatchEvent  # noqa: E402
from worker.synthetic import generate_history  # noqa: E402

DEFAULT_DASHBOARD: dict[str, Any] = {"filters": {"timeframe": "All", "product": "all"}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


class WorkerProcess:
    """``python -m worker run`` with JSON logs collected in memory."""

    def __init__(self, backend: LocalBackend) -> None:
        env = {
            **os.environ,
            "CONVEX_URL": backend.url,
            "CONVEX_ADMIN_KEY": backend.admin_key,
            "WORKER_LOG_FORMAT": "json",
            "WORKER_HEARTBEAT_FILE": "",
            "WORKER_WORKER_ID": "bench-worker",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.batches: list[dict[str, Any]] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if '"batch.processed"' in line:
                self.batches.append(json.loads(line))

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def wait_for_watermark(sub: Any, seq: float, timeout_s: float) -> None:
    """Wait until the subscribed dashboard reports a watermark ≥ ``seq`` (fresh for that change)."""

    async def loop() -> None:
        async for value in sub:
            if value is not None and (value["freshness"]["watermark"] or 0) >= seq:
                return

    await asyncio.wait_for(loop(), timeout_s)


async def wait_for_ack(sub: Any, seq: float, timeout_s: float) -> None:
    """Wait until ``settings:get`` reports ``ackedSeq`` ≥ ``seq``: every filter set stored, change acked."""

    async def loop() -> None:
        async for value in sub:
            if value is not None and value["ackedSeq"] >= seq:
                return

    await asyncio.wait_for(loop(), timeout_s)


def lag_split(batches: list[dict[str, Any]], wall: dict[int, tuple[float, float]]) -> dict[str, float]:
    """Median split of the lag of changes processed alone, from wall clocks of this host (ms).

    ``wake``: commit → the worker starts on the user (the change-log subscription's push and the
    worker's ``pendingChanges`` read); ``worker``: from there, the claim included, → default set
    stored (its ``first_stored_ms``); ``notify``: stored → the subscribed client sees it (the backend re-running
    the public query and pushing it, the client decoding it). A batch starts at its log line's
    timestamp minus ``total_ms``.
    """
    parts: dict[str, list[float]] = {"wake_ms": [], "worker_ms": [], "notify_ms": []}
    for b in batches:
        seq = int(b["watermark"])
        if seq not in wall or b.get("first_stored_ms") is None or b["changes"] != 1:
            continue
        committed, seen = wall[seq]
        start = datetime.fromisoformat(b["timestamp"]).timestamp() - b["total_ms"] / 1000
        stored = start + b["first_stored_ms"] / 1000
        parts["wake_ms"].append((start - committed) * 1000)
        parts["worker_ms"].append(b["first_stored_ms"])
        parts["notify_ms"].append((seen - stored) * 1000)
    return {k: statistics.median(v) if v else float("nan") for k, v in parts.items()}


def new_events(i: int, now_ms: int) -> list[WatchEvent]:
    base = now_ms - 3_600_000 + i * 1000
    return [
        WatchEvent(
            watched_at_ms=base + k,
            video_id=f"bench{i:03d}x{k:02d}",
            title=f"Minecraft speedrun attempt {i}-{k}",
            channel_id="UCbenchbenchbenchbench01",
            channel_name="Bench Channel",
        )
        for k in range(5)
    ]


async def dashboard_read_vs_compute_on_read(
    backend: LocalBackend, user: ConvexGateway, user_id: str, reads: int = 20
) -> tuple[float, float]:
    """Median ms of reading the stored default dashboard vs computing it on read from raw events.

    On read = page through all of the user's events (``worker:listEvents``, 4000 per call, as a
    client without pre-computation would have to) and run the aggregation engine for the default
    filter set (14 types) — in this process, so no worker is involved.
    """
    stored: list[float] = []
    for _ in range(reads):
        t = time.perf_counter()
        await user.query("dashboard:getDashboard", DEFAULT_DASHBOARD)
        stored.append((time.perf_counter() - t) * 1000)
    on_read: list[float] = []
    settings = await user.query("settings:get")
    async with ConvexGateway(backend.url, admin_key=backend.admin_key) as admin:
        for _ in range(3):
            t = time.perf_counter()
            events: list[WatchEvent] = []
            async for page in admin.iter_event_pages(user_id, page_size=4000):
                events.extend(page)
            compute_aggregations(
                events,
                now_ms=time.time_ns() // 1_000_000,
                time_zone=settings["timeZone"],
                filter_sets=[FilterSet("All", "all")],
            )
            on_read.append((time.perf_counter() - t) * 1000)
    return statistics.median(stored), statistics.median(on_read)


async def measure(n_events: int, changes: int) -> dict[str, Any]:
    now_ms = time.time_ns() // 1_000_000
    history = generate_history(n_events, seed=20261130, end_ms=now_ms - 2 * 3_600_000)
    with LocalBackend() as backend:
        token = backend.mint_token(f"bench-{n_events}")
        async with ConvexGateway(backend.url, user_token=token) as user:
            await user.mutation("settings:setTimeZone", {"timeZone": "Europe/Berlin"})
            t = time.perf_counter()
            summary = await upload_events(user, history, source="synthetic")
            import_s = time.perf_counter() - t
            client = ConvexClient(backend.url)
            client.set_auth(token)
            sub = client.subscribe("dashboard:getDashboard", DEFAULT_DASHBOARD)
            acks = client.subscribe("settings:get", {})

            worker = WorkerProcess(backend)
            try:
                cpu0, t = worker.cpu_s(), time.perf_counter()
                assert summary.last_seq is not None
                await wait_for_watermark(sub, summary.last_seq, timeout_s=1800)
                full_wall_s = time.perf_counter() - t
                # every change below is measured alone, like the ones after it: the full recompute's
                # other filter sets are stored and its changes acknowledged first
                await wait_for_ack(acks, summary.last_seq, timeout_s=1800)
                full_cpu_s = worker.cpu_s() - cpu0  # includes the worker's start-up (imports)

                lags_ms: list[float] = []
                ack_ms: list[float] = []
                wall: dict[int, tuple[float, float]] = {}  # seq -> (commit, seen), epoch s, as the worker's log
                cpu1 = worker.cpu_s()
                for i in range(changes):
                    res = await user.import_batch(new_events(i, now_ms), source="synthetic")
                    committed, committed_wall = time.perf_counter(), time.time()
                    await wait_for_watermark(sub, res["seq"], timeout_s=600)
                    lags_ms.append((time.perf_counter() - committed) * 1000)
                    wall[int(res["seq"])] = (committed_wall, time.time())
                    await wait_for_ack(acks, res["seq"], timeout_s=600)
                    ack_ms.append((time.perf_counter() - committed) * 1000)
                per_change_cpu_ms = (worker.cpu_s() - cpu1) / max(1, changes) * 1000
                read_ms, on_read_ms = await dashboard_read_vs_compute_on_read(
                    backend, user, f"convex-local|bench-{n_events}"
                )
            finally:
                worker.stop()
                sub.unsubscribe()
                acks.unsubscribe()
    first = worker.batches[0] if worker.batches else {}
    later = worker.batches[1:]
    split = lag_split(later, wall)
    return {
        **split,
        "events": n_events,
        "import_s": import_s,
        "full_wall_s": full_wall_s,
        "full_cpu_s": full_cpu_s,
        "full_compute_ms": first.get("compute_ms"),
        "full_read_ms": first.get("read_ms"),
        "p50": statistics.median(lags_ms),
        "p95": percentile(lags_ms, 95),
        "p99": percentile(lags_ms, 99),
        "max": max(lags_ms),
        "slowest": sorted(range(len(lags_ms)), key=lambda i: -lags_ms[i])[:3],
        "dashboard_read_ms": read_ms,
        "compute_on_read_ms": on_read_ms,
        "ack_p50": statistics.median(ack_ms),
        "ack_p99": percentile(ack_ms, 99),
        "changes": changes,
        "batches": len(later),
        "per_change_cpu_ms": per_change_cpu_ms,
        "mean_events_read": statistics.mean(b["events_read"] for b in later) if later else 0,
        "mean_total_ms": statistics.mean(b["total_ms"] for b in later) if later else 0,
        "mean_read_ms": statistics.mean(b["read_ms"] for b in later) if later else 0,
        "mean_compute_ms": statistics.mean(b["compute_ms"] for b in later) if later else 0,
        "mean_store_ms": statistics.mean(b["store_ms"] for b in later) if later else 0,
        "median_first_ms": statistics.median(b.get("first_stored_ms") or 0 for b in later) if later else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--changes", type=int, default=50)
    args = parser.parse_args()
    rows = [asyncio.run(measure(n, args.changes)) for n in args.events]
    print()
    print("freshness: import commit -> the default dashboard (dashboard:getDashboard, All|all||) shows the change;")
    print("all 18 sets: import commit -> every set stored and the change acknowledged (settings:get ackedSeq)")
    header = (
        f"{'events':>8} {'import s':>9} {'full wall s':>11} {'full CPU s':>10} {'compute ms':>10} "
        f"{'changes':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'CPU/change ms':>13} {'read/change':>11} {'all p50':>8} {'all p99':>8}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['events']:>8} {r['import_s']:>9.1f} {r['full_wall_s']:>11.2f} {r['full_cpu_s']:>10.2f} "
            f"{(r['full_compute_ms'] or 0):>10.0f} {r['changes']:>7} {r['p50']:>7.0f} {r['p95']:>7.0f} "
            f"{r['p99']:>7.0f} {r['max']:>7.0f} {r['per_change_cpu_ms']:>13.0f} {r['mean_events_read']:>11.0f} "
            f"{r['ack_p50']:>8.0f} {r['ack_p99']:>8.0f}"
        )
    for r in rows:
        print(f"{r['events']:>8} slowest changes (0 = first after the full recompute): {r['slowest']}")
    print("\nreading the default dashboard: stored (public query) vs computed on read from raw events")
    print(f"{'events':>8} {'stored ms':>10} {'on read ms':>11} {'ratio':>8}")
    for r in rows:
        ratio = r["compute_on_read_ms"] / r["dashboard_read_ms"]
        print(f"{r['events']:>8} {r['dashboard_read_ms']:>10.1f} {r['compute_on_read_ms']:>11.0f} {ratio:>7.0f}x")
    print("\nworker per change (from its batch.processed logs, wall ms):")
    print(
        f"{'events':>8} {'batches':>7} {'read':>7} {'compute':>8} {'store+ack':>9} {'total':>7}"
        f" {'default set stored (median)':>28}"
    )
    for r in rows:
        print(
            f"{r['events']:>8} {r['batches']:>7} {r['mean_read_ms']:>7.0f} {r['mean_compute_ms']:>8.0f} "
            f"{r['mean_store_ms']:>9.0f} {r['mean_total_ms']:>7.0f} {r['median_first_ms']:>28.0f}"
        )
    print("\nwhere the lag of one change goes (medians, wall ms; changes the worker processed alone):")
    print(f"{'events':>8} {'wake':>7} {'worker':>7} {'notify':>7}")
    for r in rows:
        print(f"{r['events']:>8} {r['wake_ms']:>7.0f} {r['worker_ms']:>7.0f} {r['notify_ms']:>7.0f}")
    print(
        "wake = commit -> the worker starts on the user; worker = claim -> default set stored;"
        " notify = stored -> the client sees it"
    )
    print(
        "\nfull wall s = worker start to the default set fresh; full CPU s = worker process CPU from start (incl."
        " interpreter start-up and imports) until every set is stored and acknowledged;"
        "\nCPU/change = worker CPU per incremental change; read/change = events read from Convex per change;"
        "\ndefault set stored = from the worker's claim to the default dashboard's set stored (its share of the lag);"
        "\nstore+ack = total - read - compute: store time not overlapped by computing the next base, and the ack."
    )


if __name__ == "__main__":
    main()
