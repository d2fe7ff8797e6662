"""The time zones a user may choose: the worker's ``tzdata`` list and ``convex/timeZones.ts`` agree."""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from pathlib import Path

import pytest

from worker.aggregation.timeframes import load_zone
from worker.timezones import canonical_time_zone, render_typescript, supported_time_zones, tzdata_versions

REPO_ROOT = Path(__file__).resolve().parents[2]
CONVEX_TIME_ZONES = REPO_ROOT / "convex" / "timeZones.ts"
REGENERATE = "regenerate it: .venv/bin/python -m worker.timezones --write convex/timeZones.ts"


class TestAgreement:
    def test_convex_list_is_the_workers(self) -> None:
        """convex/timeZones.ts, which settings:setTimeZone accepts, is exactly the list of the installed tzdata."""
        committed = CONVEX_TIME_ZONES.read_text(encoding="utf-8")
        listed = re.findall(r'^  "([^"]+)",$', committed, flags=re.MULTILINE)
        assert listed == list(supported_time_zones()), (
            f"convex/timeZones.ts differs from the installed tzdata; {REGENERATE}"
        )
        assert committed == render_typescript(), f"convex/timeZones.ts is not as generated; {REGENERATE}"

    def test_pyproject_requires_the_tzdata_the_list_comes_from(self) -> None:
        """A worker with an older tzdata could lack a zone the deployment accepts: the floor is the list's version."""
        version = re.search(r'^export const TZDATA_VERSION = "([^"]+)";$', CONVEX_TIME_ZONES.read_text(), re.MULTILINE)
        assert version is not None and version.group(1) == tzdata_versions()[0]
        dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        assert f"tzdata>={version.group(1)}" in dependencies

    def test_every_zone_loads_from_tzdata_alone(self) -> None:
        """Every listed zone loads without the host's zone files (a slim container has none)."""
        zoneinfo.reset_tzpath(to=[])
        try:
            for name in supported_time_zones():
                assert zoneinfo.ZoneInfo.no_cache(name).key == name
        finally:
            zoneinfo.reset_tzpath()

    def test_every_zone_loads_as_the_worker_loads_it(self) -> None:
        for name in supported_time_zones():
            assert load_zone(name).key == name


class TestCanonicalTimeZone:
    @pytest.mark.parametrize(
        ("name", "canonical"),
        [
            ("Europe/Berlin", "Europe/Berlin"),
            ("utc", "UTC"),
            ("america/new_york", "America/New_York"),
            ("Asia/Calcutta", "Asia/Calcutta"),
            ("Etc/GMT+5", "Etc/GMT+5"),
        ],
    )
    def test_listed_spelling(self, name: str, canonical: str) -> None:
        """Case is ignored and the listed spelling returned, as canonicalTimeZone in convex/settings.ts does."""
        assert canonical_time_zone(name) == canonical

    @pytest.mark.parametrize("name", ["US/Pacific-New", "Factory", "localtime", "Mars/Olympus_Mons", "", "+05:00"])
    def test_unsupported(self, name: str) -> None:
        """Names JavaScript's Intl or the host's zone files know but tzdata does not (or that name no place)."""
        assert canonical_time_zone(name) is None
