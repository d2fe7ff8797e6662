"""One worker process per heartbeat file: the lock ``run`` takes at start-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.config import DEFAULT_HEARTBEAT_FILE, load_settings
from worker.heartbeat import HeartbeatInUseError, HeartbeatPathError, check_heartbeat_path, claim_heartbeat_file


class TestClaimHeartbeatFile:
    def test_second_claim_is_refused_until_the_first_is_released(self, tmp_path: Path) -> None:
        """While one worker holds the file, another is refused with the holder's pid and what to set instead."""
        path = str(tmp_path / "hb")
        first = claim_heartbeat_file(path)
        assert first is not None
        with pytest.raises(HeartbeatInUseError) as refused:
            claim_heartbeat_file(path)
        message = str(refused.value)
        assert f"another worker (pid {os.getpid()}) is using the heartbeat file {path}" in message
        assert "WORKER_HEARTBEAT_FILE" in message
        first.release()
        first.release()  # idempotent
        again = claim_heartbeat_file(path)
        assert again is not None
        again.release()

    def test_other_files_are_independent(self, tmp_path: Path) -> None:
        one = claim_heartbeat_file(str(tmp_path / "hb-1"))
        two = claim_heartbeat_file(str(tmp_path / "hb-2"))
        assert one is not None and two is not None
        one.release()
        two.release()

    def test_claiming_does_not_touch_the_heartbeat(self, tmp_path: Path) -> None:
        """The lock is a file of its own: the heartbeat stays missing (unhealthy) until the loop touches it."""
        path = tmp_path / "hb"
        lock = claim_heartbeat_file(str(path))
        assert lock is not None
        assert not path.exists() and Path(lock.lock_path).read_text() == f"{os.getpid()}\n"
        lock.release()

    @pytest.mark.parametrize("path", [None, ""])
    def test_no_heartbeat_claims_nothing(self, path: str | None) -> None:
        assert claim_heartbeat_file(path) is None

    def test_unwritable_directory_claims_nothing(self) -> None:
        """The worker then reports the heartbeat as unwritable, as it always did (/proc refuses new
        files even to root)."""
        assert claim_heartbeat_file("/proc/watch-worker.heartbeat") is None

    def test_missing_directory_is_refused(self, tmp_path: Path) -> None:
        """No heartbeat could ever be written there, nor the lock taken: refused at start, as a directory is."""
        path = tmp_path / "missing-dir" / "hb"
        with pytest.raises(HeartbeatPathError) as refused:
            claim_heartbeat_file(str(path))
        assert str(refused.value) == (
            f"WORKER_HEARTBEAT_FILE {path}: its directory {path.parent} does not exist; create it or name a"
            " file in an existing directory (e.g. /tmp/watch-worker.heartbeat)"
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == []

    def test_directory_is_refused_and_nothing_is_created_beside_it(self, tmp_path: Path) -> None:
        """WORKER_HEARTBEAT_FILE=/tmp: touching a directory succeeds, so it would pass for a heartbeat; refused."""
        directory = tmp_path / "dir"
        directory.mkdir()
        message = f"WORKER_HEARTBEAT_FILE {directory} is a directory: it must name a file (e.g. {directory}/watch-worker.heartbeat)"
        with pytest.raises(HeartbeatPathError) as refused:
            claim_heartbeat_file(str(directory))
        assert str(refused.value) == message
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]  # no dir.lock
        link = tmp_path / "link"
        link.symlink_to(directory)
        with pytest.raises(HeartbeatPathError):
            check_heartbeat_path(str(link))
        check_heartbeat_path(str(directory / "hb"))  # a file in it is fine, existing or not

    def test_run_and_healthcheck_share_the_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("WORKER_HEARTBEAT_FILE", raising=False)
        assert load_settings(convex_url="http://127.0.0.1:9", convex_admin_key="k").heartbeat_file == (
            DEFAULT_HEARTBEAT_FILE
        )
