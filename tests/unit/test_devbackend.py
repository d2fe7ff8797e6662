"""What the local backend needs before it can start, and how its absence is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker import devbackend
from worker.devbackend import BackendUnavailableError, LocalBackend, check_can_start, missing_parts


class TestMissingParts:
    def test_a_set_up_checkout_has_everything(self) -> None:
        assert missing_parts() == []
        check_can_start()

    def test_a_checkout_without_npm_packages(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A checkout where npm ci never ran: the npm packages are named with the command that installs them."""
        (tmp_path / "convex-local" / "bin").mkdir(parents=True)
        (tmp_path / "convex-local" / "bin" / "convex-local.mjs").touch()
        (tmp_path / "convex" / "_generated").mkdir(parents=True)
        monkeypatch.setattr(devbackend, "REPO_ROOT", tmp_path)
        monkeypatch.setattr(devbackend, "BIN", tmp_path / "convex-local" / "bin" / "convex-local.mjs")
        with pytest.raises(BackendUnavailableError) as missing:
            check_can_start(tmp_path / "convex")
        assert str(missing.value) == (
            f"the local backend cannot start here: missing the npm packages ({tmp_path / 'node_modules'}:"
            " run npm ci or scripts/install.sh)"
        )

    def test_no_node(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without Node.js nothing is started: start() refuses before spawning a process."""
        monkeypatch.setattr(devbackend.shutil, "which", lambda name: None)
        assert missing_parts() == ["Node.js 20 or later (no node on PATH)"]
        backend = LocalBackend()
        with pytest.raises(BackendUnavailableError, match="missing Node.js 20 or later"):
            backend.start()
        assert not backend.running
