"""Start and stop the project's local Convex-compatible backend (``npx convex-local``) from Python.

Used by the demo command and by the tests. Production never uses it: the worker then points
``CONVEX_URL`` at a real deployment.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

import httpx

from worker.errors import WorkerError

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_RE = re.compile(r"convex-local ready url=(?P<url>\S+) adminKey=(?P<key>\S+)")


class BackendStartError(WorkerError):
    """The local backend did not print its ready line in time; the message carries its output."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBackend:
    """A ``convex-local`` child process.

    Args:
        functions_dir: Folder with ``schema.ts`` and the Convex modules (default: the project's ``convex/``).
        data_dir: Persist committed transactions there; None keeps everything in memory.
        port: TCP port; a free one when None.
        admin_key: Admin key; a random one when None.
        repo_root: Folder with ``node_modules`` (where ``npx convex-local`` resolves).
    """

    def __init__(
        self,
        *,
        functions_dir: Path | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
        admin_key: str | None = None,
        repo_root: Path = REPO_ROOT,
    ) -> None:
        self.repo_root = repo_root
        self.functions_dir = functions_dir or repo_root / "convex"
        self.data_dir = data_dir
        self.port = port or free_port()
        self.admin_key = admin_key or f"local-{secrets.token_hex(16)}"
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[str] | None = None
        self._output: deque[str] = deque(maxlen=200)
        self._ready = threading.Event()

    def __enter__(self) -> LocalBackend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Return True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the process and wait for its ready line.

        Raises:
            BackendStartError: it exited or did not become ready within ``timeout_s`` seconds.
        """
        cmd = [
            "npx",
            "--no-install",
            "convex-local",
            "--port",
            str(self.port),
            "--admin-key",
            self.admin_key,
            "--functions",
            str(self.functions_dir),
        ]
        if self.data_dir is not None:
            cmd += ["--data-dir", str(self.data_dir)]
        self._ready.clear()
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.repo_root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            start_new_session=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                output = "\n".join(self._output)
                self.stop()
                raise BackendStartError(f"convex-local did not start ({' '.join(cmd)}):\n{output}")

    def _pump(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            self._output.append(line.rstrip())
            if READY_RE.search(line):
                self._ready.set()

    def output(self) -> str:
        """Return the last lines the process printed."""
        return "\n".join(self._output)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Send SIGTERM to the process group and wait; SIGKILL if it does not exit in time."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL the process group (crash simulation)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self) -> None:
        """Stop and start again on the same port, admin key and data directory."""
        self.stop()
        self.start()

    def mint_token(self, subject: str) -> str:
        """Return a development JWT for ``subject``, signed by the backend's own key.

        Raises:
            BackendStartError: the backend refused (it is not running or the key is wrong).
        """
        response = httpx.post(
            f"{self.url}/_local/token",
            json={"subject": subject},
            headers={"Authorization": f"Convex {self.admin_key}"},
            timeout=10,
        )
        if response.status_code != 200:
            raise BackendStartError(f"token minting failed: HTTP {response.status_code} {response.text}")
        return str(response.json()["token"])
