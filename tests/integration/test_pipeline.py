"""End to end over the local Convex backend: Takeout import → change log → worker → public queries.

Expected values are computed here independently of the aggregation engine (plain datetime/zoneinfo
over the parsed views), and compared with what the React-facing queries return.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.support.backend import REPO_ROOT, LocalBackend
from worker.config import load_settings
from worker.errors import PermanentGatewayError
from worker.gateway import ConvexGateway
from worker.importer import upload_events
from worker.models import WatchEvent
from worker.runner import Runner
from worker.synthetic import generate_history, write_takeout_html, write_takeout_json
from worker.takeout import parse_takeout_file

pytestmark = pytest.mark.integration

SAMPLES = [
    ("vidvidex_watch-history.json", "Europe/Berlin"),
    ("lemmingscode_watch-history-excerpt_en-AU.html", "Australia/Sydney"),
    ("yutotakano_watch-history.json", "Asia/Tokyo"),
]
ALL = {"timeframe": "All", "product": "all"}


# ------------------------------------------------------------------------------------------ helpers


def expected_counts(views: Sequence[WatchEvent], tz: str) -> dict[str, Any]:
    """Compute the slice's headline numbers without the aggregation engine."""
    zone = ZoneInfo(tz)
    local = [datetime.fromtimestamp(v.watched_at_ms / 1000, zone) for v in views]
    months = Counter(d.strftime("%Y-%m") for d in local)
    heat = [[0] * 24 for _ in range(7)]
    for d in local:
        heat[d.weekday()][d.hour] += 1
    channels = Counter(v.channel_id for v in views if v.channel_id)
    return {
        "views": len(views),
        "uniqueVideos": len({v.video_id for v in views if v.video_id}),
        "uniqueChannels": len(channels),
        "activeDays": len({d.date() for d in local}),
        "months": months,
        "heatmap": heat,
        "channels": channels,
    }


def as_int(value: Any) -> int:
    assert float(value).is_integer(), value
    return int(value)


async def import_as_user(backend: LocalBackend, subject: str, views: Sequence[WatchEvent], tz: str) -> str:
    token = backend.mint_token(subject)
    async with ConvexGateway(backend.url, user_token=token) as gw:
        await gw.mutation("settings:setTimeZone", {"timeZone": tz})
        await upload_events(gw, views, source="takeout_json")
    return token


async def run_worker(backend: LocalBackend, worker_id: str = "test-worker") -> Any:
    settings = load_settings(
        convex_url=backend.url, convex_admin_key=backend.admin_key, worker_id=worker_id, heartbeat_file=None
    )
    async with ConvexGateway(backend.url, admin_key=backend.admin_key) as gw:
        return await Runner(settings, gw).run_until_idle()


async def dashboard(backend: LocalBackend, token: str, filters: dict[str, Any] | None = None) -> Any:
    async with ConvexGateway(backend.url, user_token=token) as gw:
        return await gw.query("dashboard:getDashboard", {"filters": filters or ALL})


def by_type(dash: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["type"]: a for a in dash["aggregations"]}


def assert_matches(dash: dict[str, Any], exp: dict[str, Any]) -> None:
    aggs = by_type(dash)
    kpi = aggs["kpi"]["data"]
    for key in ("views", "uniqueVideos", "uniqueChannels", "activeDays"):
        assert as_int(kpi[key]) == exp[key], key
    trend = {m["month"]: as_int(m["views"]) for m in aggs["monthly_trend"]["data"]["months"]}
    assert {k: v for k, v in trend.items() if v} == dict(exp["months"])
    cells = [[as_int(c) for c in row] for row in aggs["day_time_heatmap"]["data"]["cells"]]
    assert cells == exp["heatmap"]
    top = aggs["top_channels"]["data"]["channels"]
    want = sorted(exp["channels"].items(), key=lambda kv: (-kv[1], kv[0]))[: len(top)]
    assert [(c["channelId"], as_int(c["views"])) for c in top] == want


# ------------------------------------------------------------------------------------------ tests


class TestRealSamples:
    @pytest.mark.parametrize(("name", "tz"), SAMPLES)
    def test_import_recompute_and_read(
        self, project_backend: LocalBackend, samples_dir: Path, name: str, tz: str
    ) -> None:
        """A real export goes in; the public dashboard equals an independent computation."""
        parsed = parse_takeout_file(samples_dir / name)
        assert parsed.views, "sample has no views"
        subject = f"sample-{name}"

        async def scenario() -> Any:
            token = await import_as_user(project_backend, subject, parsed.views, tz)
            stats = await run_worker(project_backend)
            assert stats.users_failed == 0, stats.last_error
            return await dashboard(project_backend, token)

        dash = asyncio.run(scenario())
        assert dash["freshness"]["stale"] is False
        assert_matches(dash, expected_counts(parsed.views, tz))


class TestChangeSemantics:
    def test_reimport_adds_nothing_and_keeps_results(self, project_backend: LocalBackend) -> None:
        """Importing the same events twice inserts nothing, appends no change and leaves results alone."""
        views = generate_history(400, seed=11, end_ms=1_790_000_000_000, time_zone="UTC", years=0.5)

        async def scenario() -> None:
            token = await import_as_user(project_backend, "reimport", views, "UTC")
            await run_worker(project_backend)
            first = await dashboard(project_backend, token)
            async with ConvexGateway(project_backend.url, user_token=token) as gw:
                again = await upload_events(gw, views, source="synthetic")
                settings_before = await gw.query("settings:get")
            assert again.imported == 0 and again.duplicates == len(views)
            assert again.last_seq is None
            stats = await run_worker(project_backend)
            assert stats.users_processed == 0
            second = await dashboard(project_backend, token)
            assert second["freshness"]["watermark"] == first["freshness"]["watermark"]
            assert settings_before["lastSeq"] == first["freshness"]["lastSeq"]
            assert by_type(second)["kpi"]["data"] == by_type(first)["kpi"]["data"]

        asyncio.run(scenario())

    @pytest.mark.parametrize("first", ["json", "html"])
    def test_json_and_html_exports_of_one_history_count_each_view_once(
        self, project_backend: LocalBackend, tmp_path: Path, first: str
    ) -> None:
        """The HTML export (whole seconds) and the JSON export (milliseconds) of the same history, imported
        one after the other in either order: the second adds nothing and the dashboard counts each view once."""
        views = generate_history(300, seed=14, end_ms=1_790_000_000_000, time_zone="UTC", years=0.5)
        assert any(v.watched_at_ms % 1000 for v in views)
        write_takeout_json(views, tmp_path / "watch-history.json", seed=14)
        write_takeout_html(views, tmp_path / "watch-history.html", seed=14, zone_label="UTC")
        exports = {kind: parse_takeout_file(tmp_path / f"watch-history.{kind}") for kind in ("json", "html")}
        assert len(exports["json"].views) == len(exports["html"].views) == len(views)
        second = "html" if first == "json" else "json"

        async def scenario() -> tuple[Any, Any]:
            token = project_backend.mint_token(f"both-formats-{first}")
            async with ConvexGateway(project_backend.url, user_token=token) as gw:
                await upload_events(gw, exports[first].views, source=exports[first].source)
                again = await upload_events(gw, exports[second].views, source=exports[second].source)
            await run_worker(project_backend)
            return again, await dashboard(project_backend, token)

        again, dash = asyncio.run(scenario())
        assert (again.imported, again.duplicates) == (0, len(views))
        assert as_int(by_type(dash)["kpi"]["data"]["views"]) == len(views)

    def test_delete_range_shrinks_aggregations(self, project_backend: LocalBackend) -> None:
        """Deleting one month removes exactly its views from every count."""
        views = generate_history(600, seed=12, end_ms=1_790_000_000_000, time_zone="UTC", years=1.0)
        zone = ZoneInfo("UTC")
        month = datetime.fromtimestamp(views[len(views) // 2].watched_at_ms / 1000, zone).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        nxt = month.replace(year=month.year + (month.month == 12), month=month.month % 12 + 1)
        lo, hi = int(month.timestamp() * 1000), int(nxt.timestamp() * 1000) - 1
        kept = [v for v in views if not lo <= v.watched_at_ms <= hi]
        assert len(kept) < len(views)

        async def scenario() -> Any:
            token = await import_as_user(project_backend, "delete-range", views, "UTC")
            await run_worker(project_backend)
            async with ConvexGateway(project_backend.url, user_token=token) as gw:
                deleted = 0
                while True:
                    res = await gw.mutation("watchEvents:deleteRange", {"fromMs": lo, "toMs": hi})
                    deleted += as_int(res["deleted"])
                    if not res["hasMore"]:
                        break
            assert deleted == len(views) - len(kept)
            await run_worker(project_backend)
            return await dashboard(project_backend, token)

        dash = asyncio.run(scenario())
        assert_matches(dash, expected_counts(kept, "UTC"))

    def test_two_quick_imports_give_one_consistent_result(self, project_backend: LocalBackend) -> None:
        """Two imports committed before the worker runs are coalesced into one recompute of both."""
        views = generate_history(500, seed=13, end_ms=1_790_000_000_000, time_zone="UTC", years=0.5)
        first, second = views[::2], views[1::2]

        async def scenario() -> Any:
            token = await import_as_user(project_backend, "two-imports", first, "UTC")
            async with ConvexGateway(project_backend.url, user_token=token) as gw:
                await upload_events(gw, second, source="synthetic")
            stats = await run_worker(project_backend)
            assert stats.users_processed == 1
            return await dashboard(project_backend, token)

        dash = asyncio.run(scenario())
        assert dash["freshness"]["watermark"] == dash["freshness"]["lastSeq"]
        assert_matches(dash, expected_counts(views, "UTC"))

    def test_time_zones_are_the_ones_the_worker_loads(self, project_backend: LocalBackend) -> None:
        """A zone JavaScript knows but the worker cannot load is refused when it is set, instead of failing
        every recompute until the changes are dead letters; an alias the worker loads is recomputed."""
        views = generate_history(50, seed=15, end_ms=1_790_000_000_000, time_zone="UTC", years=0.2)

        async def scenario() -> tuple[PermanentGatewayError, Any, Any]:
            token = await import_as_user(project_backend, "zones", views, "UTC")
            async with ConvexGateway(project_backend.url, user_token=token) as gw:
                with pytest.raises(PermanentGatewayError) as refused:
                    await gw.mutation("settings:setTimeZone", {"timeZone": "US/Pacific-New"})
                await gw.mutation("settings:setTimeZone", {"timeZone": "asia/calcutta"})
                state = await gw.query("settings:get")
            stats = await run_worker(project_backend)
            return refused.value, state, stats

        refused, state, stats = asyncio.run(scenario())
        assert refused.code == "INVALID_TIME_ZONE" and "US/Pacific-New" in str(refused)
        assert state["timeZone"] == "Asia/Calcutta"
        assert stats.users_failed == 0 and stats.users_processed == 1

    def test_manual_trigger_recomputes(self, project_backend: LocalBackend) -> None:
        """dashboard:requestRecompute appends a change that the worker consumes with a newer result."""
        views = generate_history(100, seed=14, end_ms=1_790_000_000_000, time_zone="UTC", years=0.2)

        async def scenario() -> None:
            token = await import_as_user(project_backend, "manual", views, "UTC")
            await run_worker(project_backend)
            before = await dashboard(project_backend, token)
            async with ConvexGateway(project_backend.url, user_token=token) as gw:
                res = await gw.mutation("dashboard:requestRecompute", {})
            assert res["seq"] > before["freshness"]["watermark"]
            pending = await dashboard(project_backend, token)
            assert pending["freshness"]["stale"] is True
            await run_worker(project_backend)
            after = await dashboard(project_backend, token)
            assert after["freshness"]["watermark"] == res["seq"]
            assert after["freshness"]["stale"] is False
            assert after["freshness"]["computedAtMs"] >= before["freshness"]["computedAtMs"]

        asyncio.run(scenario())


class TestIsolation:
    def test_other_identity_sees_nothing(self, project_backend: LocalBackend) -> None:
        """A second user reads none of the first user's aggregates, whatever filter they ask for."""
        views = generate_history(200, seed=15, end_ms=1_790_000_000_000, time_zone="UTC", years=0.3)

        async def scenario() -> tuple[Any, Any, Any]:
            token_a = await import_as_user(project_backend, "owner-a", views, "UTC")
            await run_worker(project_backend)
            token_b = project_backend.mint_token("intruder-b")
            async with ConvexGateway(project_backend.url, user_token=token_b) as gw:
                dash_b = await gw.query("dashboard:getDashboard", {"filters": ALL})
                agg_b = await gw.query("dashboard:getAggregation", {"type": "kpi", "filters": ALL})
            return await dashboard(project_backend, token_a), dash_b, agg_b

        dash_a, dash_b, agg_b = asyncio.run(scenario())
        assert as_int(by_type(dash_a)["kpi"]["data"]["views"]) == len(views)
        assert agg_b is None
        assert dash_b is None or dash_b["aggregations"] == []


class TestCrashRecovery:
    @pytest.fixture
    def worker_proc(self, project_backend: LocalBackend, tmp_path: Path) -> Iterator[Any]:
        procs: list[subprocess.Popen[str]] = []

        def start() -> subprocess.Popen[str]:
            env = {
                **os.environ,
                "CONVEX_URL": project_backend.url,
                "CONVEX_ADMIN_KEY": project_backend.admin_key,
                "WORKER_WORKER_ID": f"crash-worker-{len(procs)}",
                "WORKER_LOG_FORMAT": "json",
                "WORKER_HEARTBEAT_FILE": str(tmp_path / "hb"),
                "WORKER_LEASE_MS": "2000",
                "WORKER_POLL_INTERVAL_S": "0.5",
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "run"],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            procs.append(proc)
            return proc

        yield start
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if proc.stdout:
                proc.stdout.close()

    def test_worker_killed_midway_converges(self, project_backend: LocalBackend, worker_proc: Any) -> None:
        """SIGKILL while processing, restart, and the final result equals the expected one."""
        views = generate_history(3000, seed=16, end_ms=1_790_000_000_000, time_zone="UTC", years=1.0)
        token = project_backend.mint_token("crash")
        proc = worker_proc()

        async def scenario() -> None:
            async with ConvexGateway(project_backend.url, user_token=token) as gw:
                await gw.mutation("settings:setTimeZone", {"timeZone": "UTC"})
                for start in range(0, len(views), 500):
                    await upload_events(gw, views[start : start + 500], source="synthetic")

        importer = threading.Thread(target=lambda: asyncio.run(scenario()))
        importer.start()
        assert proc.stdout is not None
        # Kill it as soon as it has processed one batch, while the import is still going on.
        for line in proc.stdout:
            if "batch.processed" in line:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        importer.join(120)
        assert not importer.is_alive()

        restarted = worker_proc()
        # its output is read aside: the SIGTERM below must reach a started worker (the dashboard can be
        # fresh already when the killed worker had coalesced the whole import into its one batch, and a
        # signal during the interpreter's own start-up ends it before any Python code runs)
        output: list[str] = []
        started = threading.Event()

        def follow() -> None:
            assert restarted.stdout is not None
            for line in restarted.stdout:
                output.append(line)
                if "worker.started" in line:
                    started.set()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        assert started.wait(60), "the restarted worker did not start:\n" + "".join(output)
        deadline = time.monotonic() + 120
        dash: Any = None
        while time.monotonic() < deadline:
            dash = asyncio.run(dashboard(project_backend, token))
            if dash and dash["aggregations"] and not dash["freshness"]["stale"]:
                break
            time.sleep(0.25)
        restarted.send_signal(signal.SIGTERM)
        code = restarted.wait(30)
        reader.join(10)
        assert code == 0, f"worker exited {code} on SIGTERM:\n" + "".join(output)
        assert dash and not dash["freshness"]["stale"], "worker did not catch up after restart"
        assert_matches(dash, expected_counts(views, "UTC"))
