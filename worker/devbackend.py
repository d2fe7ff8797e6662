"""Start, stop and kill the project's local Convex-compatible backend (``convex-local/``).

Used by the demo command, the tests and the benchmarks; production never uses it (the worker then
points ``CONVEX_URL`` at a real deployment). The backend is a Node process
(``node convex-local/bin/convex-local.mjs``) that prints ``convex-local ready url=<url> adminKey=<key>``
once it accepts requests. ``LocalBackend`` waits for that line (with a timeout), keeps the port stable
across ``restart()`` so connected clients can reconnect, and kills the whole process group on
``stop()``/``kill()``/interpreter exit.

The backend, the project's Convex functions and their npm packages belong to the repository checkout:
a package installed with ``pip install .`` has none of them beside it, so :func:`missing_parts` says
what is missing and :meth:`LocalBackend.start` refuses with that instead of a Node stack trace.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import weakref
from collections import deque
from pathlib import Path

from worker.errors import WorkerError

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = REPO_ROOT / "convex-local" / "bin" / "convex-local.mjs"
FIXTURE_FUNCTIONS_DIR = REPO_ROOT / "convex-local" / "test" / "fixture" / "convex"
PROJECT_FUNCTIONS_DIR = REPO_ROOT / "convex"

_live: weakref.WeakSet[LocalBackend] = weakref.WeakSet()


class BackendStartError(WorkerError):
    """The backend did not print its ready line in time (message includes its stderr)."""


class BackendUnavailableError(BackendStartError):
    """The backend cannot be started here: a part it needs is missing (the message names each one)."""


def missing_parts(functions_dir: str | os.PathLike[str] = PROJECT_FUNCTIONS_DIR) -> list[str]:
    """Return what starting the local backend needs and cannot find, each with where it was looked for.

    Empty in a checkout set up by ``scripts/install.sh``. After a plain ``pip install .`` the backend
    (``convex-local/``), the functions (``convex/``) and the npm packages are missing: they are not
    part of the Python package.
    """
    functions = Path(functions_dir)
    missing: list[str] = []
    if not BIN.is_file():
        missing.append(f"the local Convex backend ({BIN})")
    if not (functions / "_generated").is_dir():  # beside an installed package, convex/ is the Python client
        missing.append(f"the Convex functions ({functions})")
    if shutil.which("node") is None:
        missing.append("Node.js 20 or later (no node on PATH)")
    elif BIN.is_file() and not (REPO_ROOT / "node_modules").is_dir():
        missing.append(f"the npm packages ({REPO_ROOT / 'node_modules'}: run npm ci or scripts/install.sh)")
    return missing


def check_can_start(functions_dir: str | os.PathLike[str] = PROJECT_FUNCTIONS_DIR) -> None:
    """Raise when the local backend cannot be started from here.

    Raises:
        BackendUnavailableError: one message naming every missing part and, when the package is not
            in a checkout, how to run from one.
    """
    missing = missing_parts(functions_dir)
    if not missing:
        return
    parts = missing[0] if len(missing) == 1 else ", ".join(missing[:-1]) + " and " + missing[-1]
    message = f"the local backend cannot start here: missing {parts}"
    if not BIN.is_file():
        message += (
            f". They come with a checkout of this project, not with the installed package ({REPO_ROOT / 'worker'});"
            " run it from a checkout: scripts/demo.sh (it installs what it needs)"
        )
    raise BackendUnavailableError(message)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBackend:
    """A local backend process.

    Args:
        functions_dir: directory with ``schema.ts``, modules and ``_generated/``.
        data_dir: persistence directory (data survives ``restart()``/``kill()``); None = in memory.
        port: HTTP/WebSocket port; None picks a free one (kept across restarts).
        admin_key: admin key; None generates a random one (kept across restarts).
        site_port: port for HTTP actions; None picks a free one when ``http.ts`` exists.
        startup_timeout_s: how long to wait for the ready line.
        extra_args: more CLI flags, e.g. ``["--function-timeout-ms", "500"]``.
    """

    def __init__(
        self,
        functions_dir: str | os.PathLike[str] = PROJECT_FUNCTIONS_DIR,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        admin_key: str | None = None,
        site_port: int | None = None,
        startup_timeout_s: float = 60.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.functions_dir = Path(functions_dir).resolve()
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.port = port or free_port()
        self._admin_key = admin_key or f"convex-local|{secrets.token_hex(16)}"
        has_http = any((self.functions_dir / f).exists() for f in ("http.ts", "http.js"))
        self.site_port = site_port or (free_port() if has_http else None)
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = list(extra_args or [])
        self._proc: subprocess.Popen[str] | None = None
        self._pumps: list[threading.Thread] = []
        self._stderr_tail: deque[str] = deque(maxlen=200)
        self._stdout_tail: deque[str] = deque(maxlen=50)
        _live.add(self)

    # -- properties -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Deployment URL, e.g. ``http://127.0.0.1:3210`` (what clients are given)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def site_url(self) -> str | None:
        """Base URL of HTTP actions, or None when the functions have no ``http.ts``."""
        return f"http://127.0.0.1:{self.site_port}" if self.site_port else None

    @property
    def admin_key(self) -> str:
        """Admin key accepted by the backend (``Authorization: Convex <key>``, ``set_admin_auth``)."""
        return self._admin_key

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def stderr_tail(self) -> str:
        """Last lines the backend wrote to stderr (for diagnostics)."""
        return "".join(self._stderr_tail)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> LocalBackend:
        """Start the process and wait for its ready line.

        Raises:
            BackendUnavailableError: a part it needs is missing (see :func:`missing_parts`).
            BackendStartError: the process exited or did not become ready within
                ``startup_timeout_s``; the message carries its stderr.
        """
        if self.running:
            return self
        check_can_start(self.functions_dir)
        cmd = [
            "node",
            str(BIN),
            "--port",
            str(self.port),
            "--admin-key",
            self._admin_key,
            "--functions",
            str(self.functions_dir),
        ]
        if self.site_port:
            cmd += ["--site-port", str(self.site_port)]
        if self.data_dir is not None:
            cmd += ["--data-dir", str(self.data_dir)]
        cmd += self.extra_args
        self._stderr_tail.clear()
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._proc = proc
        ready = threading.Event()

        def pump_stdout() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self._stdout_tail.append(line)
                if line.startswith("convex-local ready "):
                    ready.set()

        def pump_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self._stderr_tail.append(line)

        self._pumps = [
            threading.Thread(target=pump_stdout, daemon=True),
            threading.Thread(target=pump_stderr, daemon=True),
        ]
        for t in self._pumps:
            t.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not ready.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                reason = (
                    f"exited with code {proc.returncode}"
                    if proc.poll() is not None
                    else f"not ready after {self.startup_timeout_s:.0f} s"
                )
                self.kill()
                raise BackendStartError(
                    f"local backend ({' '.join(cmd)}) {reason}.\n"
                    f"--- stderr ---\n{self.stderr_tail}\n--- stdout ---\n{''.join(self._stdout_tail)}"
                )
        return self

    def _terminate(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop with SIGTERM (clean shutdown); SIGKILL if it does not exit within ``timeout_s``."""
        proc = self._proc
        if proc is None:
            return
        self._terminate(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._terminate(signal.SIGKILL)
            proc.wait(5)
        self._reap()

    def _reap(self) -> None:
        proc = self._proc
        self._proc = None
        if proc is None:
            return
        for t in self._pumps:
            t.join(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def kill(self) -> None:
        """Kill with SIGKILL (simulates a crash); persisted data must survive."""
        proc = self._proc
        if proc is None:
            return
        self._terminate(signal.SIGKILL)
        proc.wait(5)
        self._reap()

    def restart(self, *, hard: bool = False) -> LocalBackend:
        """Stop (SIGTERM, or SIGKILL when ``hard``) and start again on the same port and key."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    # -- helpers ----------------------------------------------------------------------------
    def mint_token(self, subject: str, *, ttl_seconds: int = 3600, claims: dict[str, object] | None = None) -> str:
        """Return an RS256 JWT for ``subject``, signed by the backend (identity ``convex-local|<subject>``).

        Raises:
            BackendStartError: the backend refused (message includes status and body).
        """
        body = json.dumps({"subject": subject, "ttlSeconds": ttl_seconds, "claims": claims or {}}).encode()
        req = urllib.request.Request(
            f"{self.url}/_local/token",
            data=body,
            headers={"Authorization": f"Convex {self._admin_key}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return str(json.loads(resp.read())["token"])
        except urllib.error.HTTPError as e:
            raise BackendStartError(f"token request failed: {e.code} {e.read().decode(errors='replace')}") from e

    def __enter__(self) -> LocalBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _kill_all() -> None:
    for backend in list(_live):
        backend._terminate(signal.SIGKILL)
