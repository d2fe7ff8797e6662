"""The command line as an operator uses it: clear one-line errors and exit codes, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_pipeline import run_worker
from tests.support.backend import REPO_ROOT, LocalBackend, free_port
from worker.gateway import ConvexGateway
from worker.models import WatchEvent

pytestmark = pytest.mark.integration


TEST_HEARTBEAT_FILE = str(Path(tempfile.gettempdir()) / f"watch-worker-cli-tests-{os.getpid()}.heartbeat")
"""Heartbeat file of the workers these tests start without naming one: never the host's default, which
a worker or another test run on this host may hold (``run`` refuses a file another worker holds)."""


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``CONVEX_*``/``WORKER_*`` variable, plus ``extra``.

    ``WORKER_HEARTBEAT_FILE`` is :data:`TEST_HEARTBEAT_FILE` unless ``extra`` sets it (in any case).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEX_", "WORKER_"))}
    if not any(name.upper() == "WORKER_HEARTBEAT_FILE" for name in extra):
        env["WORKER_HEARTBEAT_FILE"] = TEST_HEARTBEAT_FILE
    return {**env, **extra}


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Yield ``proc``; kill it on the way out if it is still running (a failed assertion, a timeout)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def start_cli(*args: str, env: dict[str, str], merge_stderr: bool = False) -> subprocess.Popen[str]:
    """Start ``python -m worker ARGS`` from the repository root with pipes for its output."""
    return subprocess.Popen(
        [sys.executable, "-m", "worker", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
    )


class LineReader:
    """Lines of a process's stdout, read by a thread, waited for with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()  # None: end of output
        self._seen: list[str] = []
        assert proc.stdout is not None
        self._stdout = proc.stdout
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self._stdout:
            self._lines.put(line)
        self._lines.put(None)

    def next_event(self, name: str, timeout_s: float = 30) -> dict[str, Any]:
        """Return the next JSON log line whose ``event`` is ``name``, skipping the others."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {name} within {timeout_s} s; output:\n{self.text()}"
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, f"the process ended without {name}; output:\n{self.text()}"
            self._seen.append(line)
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    return event

    def finish(self) -> str:
        """Once the process has exited: read the rest, close its stdout, return everything it wrote."""
        self._thread.join(10)
        self._stdout.close()
        return self.text()

    def text(self) -> str:
        """Everything read so far."""
        while not self._lines.empty():
            line = self._lines.get()
            if line is not None:
                self._seen.append(line)
        return "".join(self._seen)


UNREACHABLE = {"CONVEX_URL": "http://127.0.0.1:9", "CONVEX_ADMIN_KEY": "k"}
"""A deployment nothing listens on (port 9, discard) and a key: for errors found before or at connecting."""


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=REPO_ROOT,
        env=cli_env(**{"COLUMNS": "200", **(env or {})}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class TestHelp:
    COMMANDS = ("", "run", "import", "demo", "healthcheck", "dead-letters", "dead-letters list", "dead-letters retry")

    @pytest.mark.parametrize("command", COMMANDS)
    def test_help_shows_no_markup(self, command: str) -> None:
        """--help prints the docstrings as written: they hold no reST literals (``x``) that would show as backticks."""
        res = run_cli(*command.split(), "--help")
        assert res.returncode == 0, res.stderr
        assert "Usage: python -m worker" in res.stdout
        assert "`" not in res.stdout, res.stdout


class TestRun:
    def test_missing_configuration_is_named(self) -> None:
        """Without CONVEX_URL and a key the worker exits 2 naming both variables."""
        res = run_cli("run")
        assert res.returncode == 2
        assert "CONVEX_URL is not set" in res.stderr and "CONVEX_ADMIN_KEY" in res.stderr
        assert "Traceback" not in res.stderr + res.stdout

    def test_unknown_worker_variables_are_warned_about(self) -> None:
        """A misspelt WORKER_* name is named once with the closest setting; start-up goes on (here to the missing URL)."""
        res = run_cli("run", env={"WORKER_PAGESIZE": "100", "WORKER_THREADS": "4"})
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert lines == [
            "warning: WORKER_PAGESIZE is not a setting and is ignored; did you mean WORKER_PAGE_SIZE?",
            "warning: WORKER_THREADS is not a setting and is ignored (settings: README.md, worker/config.py)",
            lines[-1],
        ]
        assert lines[-1].startswith("error: CONVEX_URL is not set")

    def test_unknown_name_with_a_line_break_is_warned_about_on_one_line(self) -> None:
        """A variable named "WORKER_LEASE_MS<LF>" (a stray newline in an env file): one warning line, escaped."""
        res = run_cli("run", env={"WORKER_LEASE_MS\n": "1000", "WORKER_LEASE_MS": "abc"})
        assert res.returncode == 2
        assert res.stderr.splitlines()[0] == (
            "warning: WORKER_LEASE_MS\\n is not a setting and is ignored; did you mean WORKER_LEASE_MS?"
        )

    def test_variable_names_are_case_insensitive(self) -> None:
        """Lower-case names are settings as well: a lower-case typo is warned about, a bad value named as spelt."""
        res = run_cli("run", env={"worker_pagesize": "100", "worker_lease_ms": "abc"})
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert lines[0] == "warning: worker_pagesize is not a setting and is ignored; did you mean WORKER_PAGE_SIZE?"
        assert "worker_lease_ms is invalid" in lines[-1]

    @pytest.mark.parametrize(
        ("variable", "value", "message"),
        [
            (
                "WORKER_LEASE_MS",
                "3600001",
                "WORKER_LEASE_MS is invalid: must be 1-3600000 ms (the deployment grants leases of 1 ms to 1 h),"
                " got 3600001",
            ),
            ("WORKER_WORKER_ID", "w" * 300, "WORKER_WORKER_ID is invalid: must be 1-256 characters, got 300"),
            ("WORKER_POLL_INTERVAL_S", "inf", "WORKER_POLL_INTERVAL_S is invalid: Input should be a finite number"),
            # a longer debounce would break the freshness target by itself; more attempts retry for hours
            (
                "WORKER_DEBOUNCE_MS",
                "60001",
                "WORKER_DEBOUNCE_MS is invalid: Input should be less than or equal to 60000",
            ),
            ("WORKER_MAX_ATTEMPTS", "101", "WORKER_MAX_ATTEMPTS is invalid: Input should be less than or equal to 100"),
            # mallopt takes a C int: a larger value used to be cut silently
            (
                "WORKER_MALLOC_ARENA_MAX",
                "99999999999999999999",
                "WORKER_MALLOC_ARENA_MAX is invalid: Input should be less than or equal to 1024",
            ),
        ],
    )
    def test_values_the_deployment_would_refuse_later_exit_2_at_start(
        self, variable: str, value: str, message: str
    ) -> None:
        """Refused before any connection attempt (the URL here answers nothing), with one line."""
        env = {"CONVEX_URL": f"http://127.0.0.1:{free_port()}", "CONVEX_ADMIN_KEY": "k", variable: value}
        res = run_cli("run", env=env, timeout=60)
        assert res.returncode == 2
        assert res.stderr.splitlines() == [f"error: {message}"]
        assert res.stdout == ""

    def test_heartbeat_file_that_is_a_directory_is_refused(self, tmp_path: Path) -> None:
        """WORKER_HEARTBEAT_FILE=/tmp would be "touched" (a directory's time changes) and locked as /tmp.lock."""
        env = {"CONVEX_URL": f"http://127.0.0.1:{free_port()}", "CONVEX_ADMIN_KEY": "k"}
        res = run_cli("run", env={**env, "WORKER_HEARTBEAT_FILE": str(tmp_path)}, timeout=60)
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            f"error: WORKER_HEARTBEAT_FILE {tmp_path} is a directory: it must name a file (e.g."
            f" {tmp_path}/watch-worker.heartbeat)"
        ]
        assert not Path(f"{tmp_path}.lock").exists()

    def test_rejected_admin_key_fails_fast(self, project_backend: LocalBackend) -> None:
        """A wrong admin key is reported at start-up (the WebSocket client alone would retry forever), once."""
        started = time.monotonic()
        res = run_cli("run", env={"CONVEX_URL": project_backend.url, "CONVEX_ADMIN_KEY": "wrong-key"}, timeout=60)
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            f"error: CONVEX_ADMIN_KEY was rejected by {project_backend.url}: BadAdminKey:"
            " The provided admin key was invalid for this instance"
        ], res.stderr
        assert time.monotonic() - started < 60
        # the variable the key came from is the one named
        res = run_cli("run", env={"CONVEX_URL": project_backend.url, "CONVEX_DEPLOY_KEY": "wrong-key"}, timeout=60)
        assert res.returncode == 2 and res.stderr.startswith("error: CONVEX_DEPLOY_KEY was rejected by "), res.stderr

    def test_key_with_a_line_break_inside_is_refused_without_showing_it(self, project_backend: LocalBackend) -> None:
        """A CR inside the key: exit 2 at once, naming the variable and the position, never the key (no retries)."""
        key = project_backend.admin_key
        res = run_cli("run", env={"CONVEX_URL": project_backend.url, "CONVEX_DEPLOY_KEY": f"{key[:12]}\r{key[12:]}"})
        assert res.returncode == 2, res.stderr
        assert res.stderr.splitlines() == [
            f"error: CONVEX_DEPLOY_KEY is invalid: character 13 of {len(key) + 1} is a carriage return (U+000D):"
            " a key or token holds no whitespace or control character (whitespace around it is ignored)"
        ]
        assert key[:12] not in res.stderr + res.stdout and key[12:] not in res.stderr + res.stdout

    def test_key_with_a_trailing_line_ending_is_used_without_it(
        self, project_backend: LocalBackend, tmp_path: Path
    ) -> None:
        """CONVEX_ADMIN_KEY=$(cat keyfile) from a file with Windows line endings: the worker starts and stops cleanly."""
        env = cli_env(
            CONVEX_URL=project_backend.url,
            CONVEX_ADMIN_KEY=project_backend.admin_key + "\r\n",
            WORKER_LOG_FORMAT="json",
            WORKER_HEARTBEAT_FILE=str(tmp_path / "hb"),
        )
        with reaped(start_cli("run", env=env, merge_stderr=True)) as proc:
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if "worker.started" in line:
                    break
            proc.send_signal(signal.SIGTERM)
            rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, "".join(lines) + rest
        output = "".join(lines) + rest
        assert "worker.started" in output and "Illegal header" not in output and "gateway.retry" not in output

    def test_empty_key_is_refused_as_set_but_empty(self, project_backend: LocalBackend) -> None:
        """CONVEX_ADMIN_KEY= with no other key variable: refused at start-up, not used as an empty key."""
        res = run_cli("run", env={"CONVEX_URL": project_backend.url, "CONVEX_ADMIN_KEY": ""})
        assert res.returncode == 2
        assert res.stderr.splitlines() == ["error: CONVEX_ADMIN_KEY is set but empty"]

    def test_aliases_with_different_values_are_refused(self, project_backend: LocalBackend) -> None:
        """CONVEX_URL and CONVEX_SELF_HOSTED_URL naming two deployments: refused naming both, whichever would win."""
        env = {
            "CONVEX_URL": project_backend.url,
            "CONVEX_SELF_HOSTED_URL": "http://127.0.0.1:9",
            "CONVEX_ADMIN_KEY": project_backend.admin_key,
        }
        res = run_cli("run", env=env)
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            "error: CONVEX_URL and CONVEX_SELF_HOSTED_URL are both set, to different values (both are read as"
            " the deployment URL): keep one"
        ]

    def test_unreachable_deployment_is_waited_for(self, tmp_path: Path) -> None:
        """A deployment not up yet does not end start-up (a container would crash-loop): every attempt is
        logged, and the worker starts once the deployment answers."""
        port = free_port()
        admin_key = "convex-local|waited-for"
        env = cli_env(
            CONVEX_URL=f"http://127.0.0.1:{port}",
            CONVEX_ADMIN_KEY=admin_key,
            WORKER_LOG_FORMAT="json",
            WORKER_MAX_BACKOFF_S="0.5",
            WORKER_HEARTBEAT_FILE=str(tmp_path / "hb"),
        )
        backend = LocalBackend(port=port, admin_key=admin_key)
        try:
            with reaped(start_cli("run", env=env, merge_stderr=True)) as proc:
                lines = LineReader(proc)
                failures = [lines.next_event("worker.connect_failed") for _ in range(2)]
                assert [e["attempt"] for e in failures] == [1, 2]
                assert f"127.0.0.1:{port}" in failures[0]["url"] and failures[0]["error"]
                assert proc.poll() is None and not (tmp_path / "hb").exists()  # not healthy while waiting
                backend.start()
                connected = lines.next_event("worker.connected")
                assert connected["attempts"] >= 3
                lines.next_event("worker.started")
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(20) == 0
                assert "Traceback" not in lines.finish()
        finally:
            backend.kill()

    @pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
    def test_signal_while_waiting_for_the_deployment_exits_0(self, sig: signal.Signals) -> None:
        """Ctrl-C or SIGTERM while the deployment is unreachable: the graceful stop, at once."""
        env = cli_env(CONVEX_URL=f"http://127.0.0.1:{free_port()}", CONVEX_ADMIN_KEY="k", WORKER_LOG_FORMAT="json")
        with reaped(start_cli("run", env=env, merge_stderr=True)) as proc:
            lines = LineReader(proc)
            lines.next_event("worker.connect_failed")
            proc.send_signal(sig)
            assert proc.wait(10) == 0
            assert "Traceback" not in lines.finish()

    def test_second_worker_on_one_heartbeat_file_is_refused(
        self, project_backend: LocalBackend, tmp_path: Path
    ) -> None:
        """Two workers touching one heartbeat file would hide a dead one: the second exits 2 naming the
        first's pid and WORKER_HEARTBEAT_FILE; with a file of its own it starts."""
        env = cli_env(
            CONVEX_URL=project_backend.url,
            CONVEX_ADMIN_KEY=project_backend.admin_key,
            WORKER_LOG_FORMAT="json",
            WORKER_HEARTBEAT_FILE=str(tmp_path / "hb"),
        )
        with reaped(start_cli("run", env=env, merge_stderr=True)) as first:
            lines = LineReader(first)
            lines.next_event("worker.started")
            second = run_cli("run", env={**env, "COLUMNS": "200"}, timeout=60)
            assert second.returncode == 2
            assert second.stderr.strip().splitlines() == [
                f"error: another worker (pid {first.pid}) is using the heartbeat file {tmp_path / 'hb'}: each worker"
                " on a host needs its own; set WORKER_HEARTBEAT_FILE (e.g. /tmp/watch-worker-2.heartbeat) and"
                " point its health check at the same file"
            ]
            own = {**env, "WORKER_HEARTBEAT_FILE": str(tmp_path / "hb-2")}
            with reaped(start_cli("run", env=own, merge_stderr=True)) as third:
                third_lines = LineReader(third)
                third_lines.next_event("worker.started")
                third.send_signal(signal.SIGTERM)
                assert third.wait(20) == 0
                third_lines.finish()
            assert first.poll() is None  # the first worker is untouched
            first.send_signal(signal.SIGTERM)
            assert first.wait(20) == 0
            lines.finish()

    def test_url_that_is_no_deployment_fails_at_once(self) -> None:
        """A URL that answers, but not as a Convex deployment of this project, is not retried: exit 2."""

        class NotConvex(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server method name
                body = b"<html>Not Found</html>"
                self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base signature
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotConvex)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            res = run_cli("run", env={"CONVEX_URL": url, "CONVEX_ADMIN_KEY": "k"}, timeout=60)
        finally:
            server.shutdown()
            server.server_close()
        assert res.returncode == 2
        assert res.stderr.strip().splitlines() == [
            f"error: cannot use the deployment at CONVEX_URL={url}/: worker:pendingChanges: HTTP 404, not JSON:"
            " <html>Not Found</html>"
        ]

    def test_sigterm_during_backend_outage_exits_promptly(self, tmp_path: Path) -> None:
        """With the deployment gone, SIGTERM still ends the worker with exit 0 (no blocking unsubscribe)."""
        backend = LocalBackend()
        backend.start()
        env = cli_env(
            CONVEX_URL=backend.url,
            CONVEX_ADMIN_KEY=backend.admin_key,
            WORKER_LOG_FORMAT="json",
            WORKER_HEARTBEAT_FILE=str(tmp_path / "hb"),
        )
        proc = start_cli("run", env=env, merge_stderr=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "worker.started" in line:
                    break
            time.sleep(0.5)  # the subscription is established
            backend.kill()
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if proc.stdout:
                proc.stdout.close()
            backend.kill()


class TestImport:
    def test_malformed_file_names_position_and_imports_nothing(
        self, project_backend: LocalBackend, tmp_path: Path
    ) -> None:
        """A truncated JSON export is refused before any batch is sent, with file and position."""
        bad = tmp_path / "watch-history.json"
        bad.write_text('[{"header": "YouTube", "title": "Watched x", "time": "2024-01-01T00:00:00Z"},\n{"hea', "utf-8")
        token = project_backend.mint_token("cli-bad-file")
        res = run_cli("import", str(bad), "--token", token, env={"CONVEX_URL": project_backend.url})
        assert res.returncode == 2
        assert "watch-history.json" in res.stderr and "line 2" in res.stderr
        assert "Traceback" not in res.stderr + res.stdout

    def test_device_is_refused_as_not_a_regular_file(self) -> None:
        """/dev/null is a device, not an export (import used to call it "no such file"): one line, exit 2."""
        res = run_cli("import", "/dev/null", "--token", "t", env={"CONVEX_URL": "http://127.0.0.1:9"})
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            "error: /dev/null: is a character device, not a regular file; give the path of the export file"
        ]

    def test_import_summary(self, project_backend: LocalBackend) -> None:
        """Importing the bundled export prints counts of views, duplicates, non-views and the date range on
        stdout (``import … > summary.txt`` keeps them), and nothing on stderr when all goes well."""
        sample = REPO_ROOT / "worker" / "data" / "demo-watch-history.json"
        token = project_backend.mint_token("cli-import")
        env = {"CONVEX_URL": project_backend.url}
        first = run_cli("import", str(sample), "--token", token, env=env)
        assert first.returncode == 0, first.stderr
        assert "imported            5000" in first.stdout and first.stderr == ""
        assert first.stdout.splitlines()[0] == "demo-watch-history.json (takeout_json): 5100 entries"
        second = run_cli("import", str(sample), "--token", token, env=env)
        assert second.returncode == 0, second.stderr
        assert "imported            0" in second.stdout
        assert "duplicates skipped  5000" in second.stdout
        assert "ad 45" in second.stdout and second.stderr == ""


class TestImportInterrupted:
    @pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
    def test_signal_exits_non_zero_with_what_is_committed(
        self, project_backend: LocalBackend, tmp_path: Path, sig: signal.Signals, code: int
    ) -> None:
        """SIGTERM/SIGINT mid-import: exit 128 + signal with one line naming the committed batches (not exit 0)."""
        from worker.synthetic import generate_history, write_takeout_json

        export = tmp_path / "watch-history.json"
        write_takeout_json(generate_history(40_000, seed=3, end_ms=1_780_000_000_000), export, seed=3)
        user = f"convex-local|cli-interrupted-{sig.name.lower()}"
        env = cli_env(CONVEX_URL=project_backend.url, CONVEX_ADMIN_KEY=project_backend.admin_key)
        with reaped(start_cli("import", str(export), "--user-id", user, env=env)) as proc:
            deadline = time.monotonic() + 60
            while user not in asyncio.run(pending_users(project_backend)):  # a first batch is committed
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == code, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith(f"error: import interrupted by {sig.name}: batch ")
        assert " may or may not be committed. " in lines[0], stderr
        assert " earlier batch" in lines[0] and " events sent: " in lines[0] and " new, " in lines[0], stderr
        assert lines[0].endswith(" committed; importing the file again skips their events as duplicates.") or (
            lines[0].endswith(" committed; importing the file again skips its events as duplicates.")
        ), stderr
        assert "Traceback" not in stderr

    @pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
    def test_signal_while_reading_says_nothing_was_sent(
        self, project_backend: LocalBackend, large_export: Path, sig: signal.Signals, code: int
    ) -> None:
        """Interrupted while the file is parsed: no batch was in flight, so none "may or may not be committed"."""
        user = f"cli-interrupted-reading-{sig.name.lower()}"  # no '|': the warning says the command has started
        env = cli_env(CONVEX_URL=project_backend.url, CONVEX_ADMIN_KEY=project_backend.admin_key)
        with reaped(start_cli("import", str(large_export), "--user-id", user, env=env)) as proc:
            assert proc.stderr is not None
            assert proc.stderr.readline().startswith(f"warning: --user-id '{user}' is not a token identifier")
            time.sleep(0.3)  # reading: parsing 200 000 entries takes seconds
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == code, stderr
        assert stderr.strip().splitlines() == [
            f"error: import interrupted by {sig.name} while reading {large_export}: no batch was sent;"
            " importing the file again is safe."
        ]
        assert user not in asyncio.run(pending_users(project_backend))


@pytest.fixture(scope="module")
def large_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSON export of 200 000 distinct views (about 60 MB), that takes seconds to parse."""
    entry = {
        "header": "YouTube",
        "title": "Watched Tides",
        "titleUrl": "https://www.youtube.com/watch?v=Qx7Lm2Np9Ta",
        "subtitles": [{"name": "Channel", "url": "https://www.youtube.com/channel/UC1234567890123456789012"}],
        "products": ["YouTube"],
    }
    entries = [
        {**entry, "time": f"2024-01-{1 + i // 10_000:02d}T00:00:{i // 1000 % 10:02d}.{i % 1000:03d}Z"}
        for i in range(200_000)
    ]
    path = tmp_path_factory.mktemp("large") / "watch-history.json"
    path.write_text(json.dumps(entries), "utf-8")
    return path


class TestImportRejections:
    WATCH = {"header": "YouTube", "title": "Watched Tides", "time": "2024-01-05T22:15:32Z"}

    def entry(self, **fields: str) -> dict[str, str]:
        return {**self.WATCH, "titleUrl": "https://www.youtube.com/watch?v=Qx7Lm2Np9Ta", **fields}

    def test_partly_rejected_import_exits_0_with_the_rejections(
        self, project_backend: LocalBackend, tmp_path: Path
    ) -> None:
        """Malformed watch URLs are listed (index, field, value) and the rest of the file is imported."""
        export = tmp_path / "watch-history.json"
        entries = [
            self.entry(),
            self.entry(titleUrl="http://example.com/x"),
            self.entry(titleUrl="https://www.youtube.com/watch?v=abc", time="2024-01-06T10:00:00Z"),
            self.entry(time="2024-01-07T10:00:00Z"),
        ]
        export.write_text(json.dumps(entries), "utf-8")
        token = project_backend.mint_token("cli-partly-rejected")
        res = run_cli("import", str(export), "--token", token, env={"CONVEX_URL": project_backend.url})
        assert res.returncode == 0, res.stderr
        assert "imported            2" in res.stdout
        assert "rejected            2" in res.stdout
        assert (
            "entry 1: titleUrl: not a YouTube or YouTube Music watch URL with a video id: 'http://example.com/x'"
            in res.stdout
        )
        assert "entry 2: titleUrl: watch URL without a valid video id" in res.stdout
        assert res.stderr == "" and "Traceback" not in res.stdout

    def test_lone_surrogate_rejects_its_entry_and_the_rest_is_imported(
        self, project_backend: LocalBackend, tmp_path: Path
    ) -> None:
        """Half a UTF-16 pair in a title or a channel name past the first batch, and an over-long channel name:
        each entry is rejected with its field, every other entry is imported (it used to stop the import after
        the first batch with a traceback), and the checker lists the same rejections."""
        channel = "https://www.youtube.com/channel/UC1234567890123456789012"
        entries: list[dict[str, object]] = [
            self.entry(time=f"2024-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(1200)
        ]
        entries[3]["subtitles"] = [{"name": "c" * 1001, "url": channel}]
        entries[700]["title"] = "Watched \ud83d Tides"
        entries[900]["subtitles"] = [{"name": "Ocean \udc00", "url": channel}]
        export = tmp_path / "watch-history.json"
        export.write_text(json.dumps(entries), "utf-8")  # ensure_ascii: the halves are written as \\ud83d escapes
        assert "\\ud83d" in export.read_text("utf-8")
        token = project_backend.mint_token("cli-lone-surrogate")
        res = run_cli("import", str(export), "--token", token, env={"CONVEX_URL": project_backend.url})
        assert res.returncode == 0, res.stderr
        assert "imported            1197" in res.stdout and "rejected            3" in res.stdout
        rejections = [line.strip() for line in res.stdout.splitlines() if line.startswith("    entry ")]
        assert rejections == [
            "entry 3: subtitles[0].name: is 1001 characters (UTF-16 units); at most 1000 are allowed",
            "entry 700: title: lone UTF-16 surrogate \\ud83d at offset 8 (half of a character; the text is damaged):"
            " 'Watched \\ud83d Tides'",
            "entry 900: subtitles[0].name: lone UTF-16 surrogate \\udc00 at offset 6 (half of a character; the text"
            " is damaged): 'Ocean \\udc00'",
        ]
        assert res.stderr == "" and "Traceback" not in res.stdout
        check = subprocess.run(
            [sys.executable, "-m", "worker.takeout", str(export)], cwd=REPO_ROOT, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        assert [line.removeprefix("  rejected: ") for line in check.stdout.splitlines()[1:]] == rejections

    @pytest.mark.parametrize(
        ("entries", "rejected", "message"),
        [
            ([], 0, "the file holds no entries; nothing imported"),
            (
                [
                    {
                        "header": "YouTube",
                        "title": "Watched Tides",
                        "titleUrl": "http://example.com/x",
                        "time": "2024-01-05T22:15:32Z",
                    },
                    {"header": "YouTube", "title": "Watched Tides", "time": "yesterday"},
                ],
                2,
                "every entry was rejected (2 of 2); nothing imported",
            ),
            (
                [
                    {
                        "header": "YouTube",
                        "title": "Watched Volvo Cars",
                        "details": [{"name": "From Google Ads"}],
                        "time": "2024-01-05T22:15:32Z",
                    },
                    {"header": "YouTube", "title": "Watched Tides", "time": "yesterday"},
                ],
                1,
                "none of its 2 entries is a view (ad 1, rejected 1); nothing imported",
            ),
            (
                [
                    {
                        "header": "YouTube",
                        "title": "Watched Volvo Cars",
                        "details": [{"name": "From Google Ads"}],
                        "time": "2024-01-05T22:15:32Z",
                    }
                ],
                0,
                "its only entry is not a view (ad 1, rejected 0); nothing imported",
            ),
        ],
    )
    def test_nothing_to_import_exits_2_after_the_summary(
        self, tmp_path: Path, entries: list[object], rejected: int, message: str
    ) -> None:
        """No entries, every entry rejected, or no view at all: the summary (stdout), then one error line
        (stderr), exit 2, nothing sent."""
        export = tmp_path / "watch-history.json"
        export.write_text(json.dumps(entries), "utf-8")
        # an unreachable deployment: the file is refused before any connection is attempted
        res = run_cli("import", str(export), "--token", "t", env={"CONVEX_URL": "http://127.0.0.1:9"})
        assert res.returncode == 2, res.stderr
        lines = res.stdout.strip().splitlines()
        assert (
            lines[0]
            == f"watch-history.json (takeout_json): {len(entries)} {'entry' if len(entries) == 1 else 'entries'}"
        )
        assert res.stderr.splitlines() == [f"error: {export}: {message}"]
        assert f"rejected            {rejected}" in res.stdout
        assert sum(line.startswith("    entry ") for line in lines) == rejected
        assert "Traceback" not in res.stderr + res.stdout

    def test_messages_show_names_as_they_are(self, tmp_path: Path) -> None:
        """Square brackets in a path or user id are printed, not taken for console markup."""
        export = tmp_path / "[old]" / "watch-history.json"
        export.parent.mkdir()
        export.write_text("[]", "utf-8")
        env = dict(UNREACHABLE)
        res = run_cli("import", str(export), "--user-id", "bob[b]", env=env)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert lines[0].startswith("warning: --user-id 'bob[b]' is not a token identifier"), lines[0]
        assert lines[-1] == f"error: {export}: the file holds no entries; nothing imported"


class TestImportZip:
    HISTORY = "Takeout/YouTube and YouTube Music/history"

    @pytest.mark.parametrize(
        "member", ["lemmingscode_watch-history-excerpt_en-AU.html", f"{HISTORY}/watch-history.html"]
    )
    def test_zipped_html_export_is_imported(
        self, project_backend: LocalBackend, samples_dir: Path, tmp_path: Path, member: str
    ) -> None:
        """A zip of the real HTML page (141 KB of CSS before the first record), flat or in Takeout's layout."""
        archive = tmp_path / "flat.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(samples_dir / "lemmingscode_watch-history-excerpt_en-AU.html", member)
        token = project_backend.mint_token(f"cli-zip-html-{member.count('/')}")
        res = run_cli("import", str(archive), "--token", token, env={"CONVEX_URL": project_backend.url})
        assert res.returncode == 0, res.stderr
        lines = res.stdout.strip().splitlines()
        assert lines[0] == f"flat.zip: {member} (takeout_html): 32 entries"
        assert "imported            32" in res.stdout and "note:" not in res.stdout

    def test_several_candidates_name_the_member_read_and_the_ignored_ones(
        self, project_backend: LocalBackend, samples_dir: Path, tmp_path: Path
    ) -> None:
        """HTML and JSON history in one zip: the JSON is imported, named, and the HTML is noted as ignored."""
        archive = tmp_path / "tk2.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(
                samples_dir / "lemmingscode_watch-history-excerpt_en-AU.html", f"{self.HISTORY}/watch-history.html"
            )
            zf.write(samples_dir / "vidvidex_watch-history.json", f"{self.HISTORY}/watch-history.json")
        token = project_backend.mint_token("cli-zip-two")
        res = run_cli("import", str(archive), "--token", token, env={"CONVEX_URL": project_backend.url})
        assert res.returncode == 0, res.stderr
        lines = res.stdout.strip().splitlines()
        assert lines[0] == f"tk2.zip: {self.HISTORY}/watch-history.json (takeout_json): 16 entries"
        assert "imported            16" in res.stdout
        assert lines[-1] == (
            f"  note: the archive holds 2 watch-history files; read {self.HISTORY}/watch-history.json,"
            f" ignored: {self.HISTORY}/watch-history.html"
        )

    def test_empty_archive_says_it_holds_no_files(self, tmp_path: Path) -> None:
        """An empty .zip is called empty (not "neither JSON nor HTML"): exit 2, one line, nothing sent."""
        archive = tmp_path / "takeout.zip"
        zipfile.ZipFile(archive, "w").close()
        res = run_cli("import", str(archive), "--token", "t", env={"CONVEX_URL": "http://127.0.0.1:9"})
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            f"error: {archive}: the zip archive is empty: it holds no files, so no watch history"
        ]

    def test_member_declaring_more_than_the_cap_is_refused(self, tmp_path: Path) -> None:
        """A member whose header declares 3.5 GiB (a zip bomb) is refused naming it, before anything is inflated."""
        member = f"{self.HISTORY}/watch-history.json"
        archive = tmp_path / "bomb.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(member, json.dumps([TestImportRejections.WATCH]))
        data = bytearray(archive.read_bytes())
        for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
            at = data.index(signature) + offset
            data[at : at + 4] = (7 * 2**29).to_bytes(4, "little")
        archive.write_bytes(bytes(data))
        res = run_cli("import", str(archive), "--token", "t", env={"CONVEX_URL": "http://127.0.0.1:9"})
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            f"error: {archive}!{member}: archive member is 3,584.0 MiB decompressed (its declared size): the limit"
            " is 1,024.0 MiB; real watch histories are a few hundred MB at most"
        ]

    @pytest.mark.parametrize("command", ["import", "demo", "worker.takeout"])
    @pytest.mark.parametrize(
        ("damage", "detail"),
        [
            (lambda b: b[:200] + b[220:], "an offset in it points before the start of the file"),
            (lambda b: b[:120] + bytes([b[120] ^ 0xFF]) + b[121:], "Error -3 while decompressing data"),
        ],
        ids=["20-bytes-dropped", "deflate-byte-flipped"],
    )
    def test_damaged_member_is_one_line_and_exit_2(
        self, samples_dir: Path, tmp_path: Path, command: str, damage: Any, detail: str
    ) -> None:
        """A zip whose history member is damaged: one error line naming archive and member, exit 2 (it was a
        100-line traceback and exit 1), from import, demo (before its backend starts) and the checker."""
        member = f"{self.HISTORY}/watch-history.json"
        archive = tmp_path / "takeout.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(samples_dir / "vidvidex_watch-history.json", member)
        archive.write_bytes(damage(archive.read_bytes()))
        if command == "worker.takeout":
            res = subprocess.run(
                [sys.executable, "-m", "worker.takeout", str(archive)], cwd=REPO_ROOT, capture_output=True, text=True
            )
        elif command == "import":
            res = run_cli("import", str(archive), "--token", "t", env={"CONVEX_URL": "http://127.0.0.1:9"})
        else:
            res = run_cli("demo", str(archive))
        assert res.returncode == 2, res.stderr
        lines = res.stderr.splitlines()
        assert len(lines) == 1, res.stderr
        assert lines[0].startswith(f"error: {archive}!{member}: cannot read archive member: damaged ("), lines[0]
        assert detail in lines[0] and lines[0].endswith("; download the export again"), lines[0]
        assert res.stdout == ""

    def test_checker_and_import_agree_on_a_file_without_views(self, tmp_path: Path) -> None:
        """The checker says 'nothing to import' with the reason import refuses the file for."""
        export = tmp_path / "watch-history.json"
        export.write_text("[]", "utf-8")
        check = subprocess.run(
            [sys.executable, "-m", "worker.takeout", str(export)], cwd=REPO_ROOT, capture_output=True, text=True
        )
        res = run_cli("import", str(export), "--token", "t", env={"CONVEX_URL": "http://127.0.0.1:9"})
        assert (check.returncode, res.returncode) == (1, 2)
        assert "  nothing to import: the file holds no entries" in check.stdout
        assert res.stderr.splitlines() == [f"error: {export}: the file holds no entries; nothing imported"]


class SilentServer:
    """A TCP server that accepts connections and never answers: calls to it stay in flight."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.connected = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                conn, _ = self._socket.accept()
                self._held.append(conn)
                self.connected.set()

    def close(self) -> None:
        self._socket.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


class TestInterruptedStartUp:
    COMMANDS = ["run", "healthcheck", "dead-letters list", "dead-letters retry", "import watch-history.json --token t"]

    @pytest.mark.parametrize("command", COMMANDS)
    def test_ctrl_c_while_starting_is_one_line(self, command: str, silent_server: SilentServer, tmp_path: Path) -> None:
        """Ctrl-C while the command is still starting (its dependencies being imported): never a
        traceback; run stops gracefully (exit 0, no output), the others exit 130 with one line."""
        env = cli_env(
            CONVEX_URL=silent_server.url,
            CONVEX_ADMIN_KEY="k",
            WORKER_HEARTBEAT_FILE=str(tmp_path / "hb"),
            WORKER_LOG_FORMAT="json",
        )
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "worker", *command.split()],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with reaped(proc):
            assert proc.stderr is not None
            for line in proc.stderr:  # -X importtime: one line per module, once imported
                if re.search(r"\|\s*asyncio$", line):  # the first import after the CLI's signal handlers
                    break
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        lines = [line for line in stderr.splitlines() if not line.startswith("import time:")]
        if command == "run":
            assert (proc.returncode, lines) == (0, [])
        else:
            name = command.split(" watch")[0]
            assert proc.returncode == 130, stderr[-2000:]
            assert len(lines) == 1 and lines[0] in (
                "error: interrupted by SIGINT before the command started",
                f"error: {name} interrupted by SIGINT",
            ), lines

    @pytest.mark.parametrize("command", ["dead-letters list", "dead-letters retry"])
    def test_ctrl_c_during_the_call_is_one_line(self, command: str, silent_server: SilentServer) -> None:
        """Ctrl-C while the call to the deployment is in flight: one line naming the command, exit 130."""
        env = cli_env(CONVEX_URL=silent_server.url, CONVEX_ADMIN_KEY="k")
        with reaped(start_cli(*command.split(), env=env)) as proc:
            assert silent_server.connected.wait(30)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert stderr.strip().splitlines() == [f"error: {command} interrupted by SIGINT"]


class TestHealthcheck:
    def test_fresh_and_stale_heartbeat(self, tmp_path: Path) -> None:
        """The container health check passes on a recent heartbeat and fails on an old or missing one."""
        hb = tmp_path / "hb"
        env = {"WORKER_HEARTBEAT_FILE": str(hb)}
        assert run_cli("healthcheck", env=env).returncode == 1
        hb.touch()
        assert run_cli("healthcheck", env=env).returncode == 0
        old = time.time() - 600
        os.utime(hb, (old, old))
        res = run_cli("healthcheck", "--max-age-s", "90", env=env)
        assert res.returncode == 1 and "heartbeat is" in res.stderr
        res = run_cli("healthcheck", env={"WORKER_HEARTBEAT_FILE": ""})  # disabled: not the cwd's age
        assert res.returncode == 2 and "WORKER_HEARTBEAT_FILE is empty" in res.stderr

    def test_directory_is_refused_not_reported_healthy(self, tmp_path: Path) -> None:
        """A directory's modification time moves with whatever is written in it: its age says nothing (exit 2)."""
        res = run_cli("healthcheck", env={"WORKER_HEARTBEAT_FILE": str(tmp_path)})
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            f"error: WORKER_HEARTBEAT_FILE {tmp_path} is a directory: it must name a file (e.g."
            f" {tmp_path}/watch-worker.heartbeat)"
        ]

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("-5", "--max-age-s -5 is out of range (allowed: more than 0 seconds)"),
            ("0", "--max-age-s 0 is out of range (allowed: more than 0 seconds)"),
            ("nan", "--max-age-s nan is not a finite number (allowed: more than 0 seconds)"),
            ("inf", "--max-age-s inf is not a finite number (allowed: more than 0 seconds)"),
            ("soon", "--max-age-s 'soon' is not a number (allowed: more than 0 seconds)"),
        ],
    )
    def test_max_age_must_be_a_positive_number(self, tmp_path: Path, value: str, message: str) -> None:
        """0 or less would call every heartbeat stale, nan none: a one-line usage error, exit 2, whatever the file."""
        hb = tmp_path / "hb"
        hb.touch()
        res = run_cli("healthcheck", f"--max-age-s={value}", env={"WORKER_HEARTBEAT_FILE": str(hb)})
        assert res.returncode == 2
        assert res.stderr.splitlines() == [f"error: {message}"]
        assert run_cli("healthcheck", "--max-age-s", "60.5", env={"WORKER_HEARTBEAT_FILE": str(hb)}).returncode == 0

    def test_heartbeat_setting_is_read_in_any_case(self, tmp_path: Path) -> None:
        """``worker_heartbeat_file`` names the file as ``WORKER_HEARTBEAT_FILE`` does (settings are case-insensitive)."""
        hb = tmp_path / "hb"
        hb.touch()
        old = time.time() - 600
        os.utime(hb, (old, old))
        res = run_cli("healthcheck", env={"worker_heartbeat_file": str(hb)})
        assert res.returncode == 1 and "heartbeat is" in res.stderr and str(hb) in res.stderr  # not the default file


class TestDemo:
    def test_demo_runs_the_whole_pipeline(self) -> None:
        """The README's main command path: backend, import, worker until fresh, dashboard printed."""
        res = run_cli("demo", timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "imported            5000" in res.stdout
        assert ", worker " in res.stderr and " s (1 user, " in res.stderr, res.stderr[-2000:]  # not "1 user(s)"
        assert "— fresh" in res.stdout
        assert "Top channels" in res.stdout

    def test_keep_running_prints_how_to_use_the_backend(self, tmp_path: Path) -> None:
        """--keep-running prints the URL, admin key and a demo-user token; pasted into a shell as printed
        (the admin key holds a '|'), they let another shell import more views as the demo user, which
        the demo's worker recomputes (its info logs show it)."""
        with reaped(start_cli("demo", "--keep-running", env=cli_env(), merge_stderr=True)) as proc:
            assert proc.stdout is not None
            exports: list[str] = []
            for line in proc.stdout:
                if line.startswith("  export "):
                    exports.append(line.strip())
                if line.startswith("  python -m worker import FILE"):
                    break
            assert len(exports) == 2, exports
            extra = tmp_path / "more.json"
            extra.write_text(
                '[{"header": "YouTube", "title": "Watched Tides", "titleUrl":'
                ' "https://www.youtube.com/watch?v=Qx7Lm2Np9Ta", "time": "2026-11-29T10:00:00Z"}]',
                encoding="utf-8",
            )
            script = "\n".join([*exports, f"{shlex.quote(sys.executable)} -m worker import {shlex.quote(str(extra))}"])
            res = subprocess.run(
                ["bash", "-c", script], cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=120
            )
            assert res.returncode == 0, res.stderr
            assert re.search(r"^\s*imported\s+1$", res.stdout, flags=re.MULTILINE), res.stdout
            watchdog = threading.Timer(120, proc.kill)  # never wait forever for the line
            watchdog.start()
            try:
                for line in proc.stdout:  # the demo's worker recomputes the user, and says so
                    if "batch.processed" in line:
                        break
            finally:
                watchdog.cancel()
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
        assert "batch.processed" in line

    def test_interrupted_demo_suggests_running_it_again(self, large_export: Path) -> None:
        """The demo's backend is in memory and stops with it: the hint is to run the demo again, not to re-import."""
        with reaped(start_cli("demo", str(large_export), env=cli_env())) as proc:
            assert proc.stderr is not None
            for line in proc.stderr:  # printed just before the import starts (400 batches: seconds)
                if line.startswith("user time zone:"):
                    break
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert stderr.strip().splitlines() == [
            "error: demo interrupted by SIGINT during the import: the demo's backend kept its data in memory"
            " and has stopped; run the demo again to start over"
        ]

    def test_time_zone_is_stored_in_its_listed_spelling(self, tmp_path: Path) -> None:
        """--time-zone utc is accepted as settings:setTimeZone accepts it, and said as it is stored: UTC."""
        export = tmp_path / "one.json"
        export.write_text(
            '[{"header": "YouTube", "title": "Watched Tides", "titleUrl":'
            ' "https://www.youtube.com/watch?v=Qx7Lm2Np9Ta", "time": "2026-11-29T10:00:00Z"}]',
            encoding="utf-8",
        )
        res = run_cli("demo", str(export), "--time-zone", "utc", timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "user time zone: UTC\n" in res.stderr, res.stderr[-2000:]

    def test_unsupported_time_zone_is_refused_before_the_backend_starts(self) -> None:
        """--time-zone is checked against the zones settings:setTimeZone accepts: one line, exit 2, no backend."""
        res = run_cli("demo", "--time-zone", "US/Pacific-New")
        assert res.returncode == 2
        assert res.stderr.strip().splitlines() == [
            "error: --time-zone 'US/Pacific-New' is not an IANA time zone the worker supports (e.g. Europe/Berlin)"
        ]
        assert "starting the local Convex backend" not in res.stdout + res.stderr

    def test_installed_package_without_a_checkout_says_what_is_missing(self, tmp_path: Path) -> None:
        """After a plain pip install the backend and the functions are not beside the package: one line
        naming them and how to run the demo instead, exit 2, nothing started (was a Node stack trace)."""
        site = tmp_path / "site"  # the package alone, as pip install . puts it in site-packages
        shutil.copytree(REPO_ROOT / "worker", site / "worker", ignore=shutil.ignore_patterns("__pycache__"))
        res = subprocess.run(
            [sys.executable, "-m", "worker", "demo"],
            cwd=tmp_path,
            env=cli_env(PYTHONPATH=str(site), COLUMNS="200"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 2
        assert res.stderr.strip().splitlines() == [
            f"error: demo: the local backend cannot start here: missing the local Convex backend"
            f" ({site / 'convex-local' / 'bin' / 'convex-local.mjs'}) and the Convex functions ({site / 'convex'})."
            f" They come with a checkout of this project, not with the installed package ({site / 'worker'});"
            " run it from a checkout: scripts/demo.sh (it installs what it needs)"
        ]
        assert "starting the local Convex backend" not in res.stdout + res.stderr

    @pytest.mark.parametrize(
        ("args", "env", "message"),
        [
            (
                ["--log-format", "xml"],
                {},
                "error: --log-format 'xml': expected console or json",
            ),
            (
                [],
                {"WORKER_GC_GEN0_THRESHOLD": "-1"},
                "error: WORKER_GC_GEN0_THRESHOLD is invalid: Input should be greater than or equal to 0",
            ),
        ],
    )
    def test_bad_option_or_setting_is_refused_before_the_backend_starts(
        self, args: list[str], env: dict[str, str], message: str
    ) -> None:
        """A --log-format the worker has not, or a WORKER_* setting run would refuse: one line, exit 2
        as run exits, no backend (a bad setting exited 1 once the backend had started)."""
        res = run_cli("demo", *args, env=env)
        assert res.returncode == 2
        assert res.stderr.strip().splitlines() == [message]
        assert "starting the local Convex backend" not in res.stdout + res.stderr

    def test_unreadable_export_is_refused_before_the_backend_starts(self, tmp_path: Path) -> None:
        """A file that is not a Takeout export: one line naming it and its position, exit 2, no backend."""
        bad = tmp_path / "notes.txt"
        bad.write_text("hello", encoding="utf-8")
        res = run_cli("demo", str(bad))
        assert res.returncode == 2 and "notes.txt (byte 0): neither JSON nor HTML" in res.stderr
        assert "starting the local Convex backend" not in res.stdout + res.stderr


class TestImportErrors:
    def test_directory_and_rejected_credentials(self, project_backend: LocalBackend, tmp_path: Path) -> None:
        """A directory is named as such; a forged token is reported as rejected credentials (exit 2)."""
        res = run_cli("import", str(tmp_path), "--token", "x", env={"CONVEX_URL": project_backend.url})
        assert res.returncode == 2 and "is a directory" in res.stderr
        sample = REPO_ROOT / "worker" / "data" / "demo-watch-history.json"
        res = run_cli("import", str(sample), "--token", "not.a.jwt", env={"CONVEX_URL": project_backend.url})
        assert res.returncode == 2
        assert res.stderr.startswith(f"error: {project_backend.url} rejected the token: ")
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr  # one line, not wrapped
        assert "Traceback" not in res.stderr

    def test_retry_warnings_go_to_stderr_not_to_the_result(self) -> None:
        """import > summary.txt and dead-letters list | awk read stdout: the gateway's retry warnings
        while the deployment does not answer are on stderr, stdout holds nothing but results."""
        sample = REPO_ROOT / "worker" / "data" / "demo-watch-history.json"
        env = {"CONVEX_URL": f"http://127.0.0.1:{free_port()}", "CONVEX_ADMIN_KEY": "k", "WORKER_MAX_ATTEMPTS": "2"}
        for args in (("import", str(sample), "--user-id", "u"), ("dead-letters", "list")):
            res = run_cli(*args, env=env, timeout=60)
            assert res.returncode != 0
            assert "gateway.retry" in res.stderr, (args, res.stderr)
            assert res.stdout == "", (args, res.stdout)

    def test_rejected_admin_key_is_one_clean_line(self, project_backend: LocalBackend) -> None:
        """A wrong admin key: the deployment's words once, no blank line, no "0 earlier batches" remark."""
        sample = REPO_ROOT / "worker" / "data" / "demo-watch-history.json"
        env = {"CONVEX_URL": project_backend.url, "CONVEX_ADMIN_KEY": "wrong-key"}
        res = run_cli("import", str(sample), "--user-id", "convex-local|cli-bad-key", env=env)
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            f"error: {project_backend.url} rejected the admin key: BadAdminKey:"
            " The provided admin key was invalid for this instance."
        ], res.stderr

    def test_invalid_url_is_refused_before_any_call(self) -> None:
        """A CONVEX_URL that is not an http(s) URL: exit 2 naming it, at once (as `run` does), no retries."""
        sample = REPO_ROOT / "worker" / "data" / "demo-watch-history.json"
        res = run_cli("import", str(sample), "--user-id", "u", env={"CONVEX_URL": "not-a-url", "CONVEX_ADMIN_KEY": "k"})
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith("error: CONVEX_URL is invalid:") and "URL" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr

    def test_url_errors_name_the_option_and_refuse_an_api_path(self) -> None:
        """An invalid --url is reported as --url; a URL ending in /api is refused with the base URL to use."""
        sample = REPO_ROOT / "worker" / "data" / "demo-watch-history.json"
        res = run_cli("import", str(sample), "--token", "t", "--url", "notaurl", env={"CONVEX_URL": "http://x"})
        assert res.returncode == 2 and res.stderr.startswith("error: --url is invalid:"), res.stderr
        res = run_cli("dead-letters", "list", "--url", "http://127.0.0.1:9/api", env={"CONVEX_ADMIN_KEY": "k"})
        assert res.returncode == 2
        assert res.stderr.strip() == (
            "error: --url is invalid: the deployment URL must not include /api (use http://127.0.0.1:9)"
        )
        res = run_cli("run", env={"CONVEX_URL": "http://127.0.0.1:9/api/", "CONVEX_ADMIN_KEY": "k"})
        assert res.returncode == 2 and "must not include /api" in res.stderr, res.stderr

    def test_key_and_url_read_as_run_reads_them(self, project_backend: LocalBackend) -> None:
        """import reads the key and URL as run does: surrounding whitespace dropped, an empty key or disagreeing
        aliases refused in one line naming the variables, never the key."""
        sample = REPO_ROOT / "worker" / "data" / "demo-watch-history.json"
        user = "convex-local|cli-key-with-newline"
        key = project_backend.admin_key
        env = {"CONVEX_URL": project_backend.url + "\n", "CONVEX_ADMIN_KEY": key + "\r\n"}
        res = run_cli("import", str(sample), "--user-id", user, env=env)
        assert res.returncode == 0, res.stderr
        assert "imported            5000" in res.stdout
        token = project_backend.mint_token("cli-token-with-newline")
        res = run_cli("import", str(sample), "--token", token + "\n", env={"CONVEX_URL": project_backend.url})
        assert res.returncode == 0, res.stderr
        cases = [
            ({"CONVEX_ADMIN_KEY": ""}, "CONVEX_ADMIN_KEY is set but empty: --user-id needs the admin key"),
            (
                {"CONVEX_ADMIN_KEY": f"{key}\n{key}"},
                f"CONVEX_ADMIN_KEY is invalid: character {len(key) + 1} of {2 * len(key) + 1} is a line feed (U+000A)",
            ),
            (
                {"CONVEX_ADMIN_KEY": key, "CONVEX_SELF_HOSTED_ADMIN_KEY": "other"},
                "CONVEX_ADMIN_KEY and CONVEX_SELF_HOSTED_ADMIN_KEY are both set, to different values",
            ),
            (
                {"CONVEX_ADMIN_KEY": key, "CONVEX_SELF_HOSTED_URL": "http://127.0.0.1:9"},
                "CONVEX_URL and CONVEX_SELF_HOSTED_URL are both set, to different values",
            ),
        ]
        for extra, message in cases:
            res = run_cli("import", str(sample), "--user-id", user, env={"CONVEX_URL": project_backend.url, **extra})
            assert res.returncode == 2, (extra, res.stderr)
            (line,) = res.stderr.splitlines()
            assert line.startswith(f"error: {message}"), line
            assert key not in line
        res = run_cli("import", str(sample), "--token", "ab\rcd", env={"CONVEX_URL": project_backend.url})
        assert res.returncode == 2 and res.stderr.startswith(
            "error: --token is invalid: character 3 of 5 is a carriage"
        )

    def test_user_id_and_token_together_are_refused(self) -> None:
        """Operator and user mode at once (the token may come from CONVEX_USER_TOKEN): exit 2, nothing sent."""
        sample = REPO_ROOT / "worker" / "data" / "demo-watch-history.json"
        env = {**UNREACHABLE, "CONVEX_USER_TOKEN": "t"}
        res = run_cli("import", str(sample), "--user-id", "convex-local|dave", env=env)
        assert res.returncode == 2 and "not both" in res.stderr, res.stderr

    def test_operator_mode_accepts_the_standard_key_names(self, project_backend: LocalBackend) -> None:
        """CONVEX_SELF_HOSTED_URL and CONVEX_DEPLOY_KEY work for import as they do for run."""
        sample = REPO_ROOT / "worker" / "data" / "demo-watch-history.json"
        env = {"CONVEX_SELF_HOSTED_URL": project_backend.url, "CONVEX_DEPLOY_KEY": project_backend.admin_key}
        res = run_cli("import", str(sample), "--user-id", "operator-imported", env=env)
        assert res.returncode == 0, res.stderr
        assert "imported            5000" in res.stdout
        # an id that no signed-in user can have is imported, with a warning naming the expected form
        assert "warning: --user-id 'operator-imported' is not a token identifier ('<issuer>|<subject>'" in res.stderr


async def dead_letter(backend: LocalBackend, user_id: str, error: str) -> int:
    """Import one view for ``user_id`` and fail its change 5 times (as a worker would): return its seq."""
    async with ConvexGateway(backend.url, admin_key=backend.admin_key) as gw:
        view = WatchEvent(watched_at_ms=1_700_000_000_000, video_id="dQw4w9WgXcQ", title="A video")
        result = await gw.import_batch([view], source="takeout_json", user_id=user_id)
        seq = int(result["seq"])
        for attempt in range(1, 6):
            await gw.mutation(
                "worker:failChanges",
                {"userId": user_id, "workerId": "cli-test", "upToSeq": seq, "error": f"{error} (attempt {attempt})"},
            )
        return seq


async def pending_users(backend: LocalBackend) -> set[str]:
    async with ConvexGateway(backend.url, admin_key=backend.admin_key) as gw:
        return {c.user_id for c in await gw.pending_changes(2000)}


class TestDeadLetters:
    def test_list_then_retry_delivers_them_again(self, project_backend: LocalBackend) -> None:
        """A dead letter is shown as a table row with its last error; retry puts it back and the worker consumes it."""
        user = "convex-local|cli-dead-letters"
        seq = asyncio.run(dead_letter(project_backend, user, "ValueError: bad document"))
        env = {"CONVEX_URL": project_backend.url, "CONVEX_ADMIN_KEY": project_backend.admin_key}

        # piped, and as narrow as 60 columns: one full line per dead letter; --limit 1 with one: no "more" hint
        listed = run_cli("dead-letters", "list", "--user-id", user, "--limit", "1", env={**env, "COLUMNS": "60"})
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0] == f"Dead letters of {user}: changes the worker failed on 5 times, no longer delivered"
        assert lines[1].startswith(f"user={user} seq={seq} kind=import range=2023-11-14..2023-11-14 count=1 failed_at=")
        assert lines[1].endswith("Z error=#1"), lines[1]
        assert "  #1  ValueError: bad document (attempt 5)" in lines  # the last error, once
        assert "1 dead letter of 1 user" in lines
        assert "showing the first" not in listed.stdout
        assert f"after fixing the cause: python -m worker dead-letters retry --user-id '{user}'" in lines

        retried = run_cli("dead-letters", "retry", "--user-id", user, env=env)
        assert retried.returncode == 0, retried.stderr
        assert f"1 dead letter of {user} put back to pending" in retried.stdout
        assert user in asyncio.run(pending_users(project_backend))
        again = run_cli("dead-letters", "list", "--user-id", user, env=env)
        assert again.returncode == 0 and f"no dead letters of {user}" in again.stdout

        stats = asyncio.run(run_worker(project_backend))
        assert stats.users_failed == 0, stats.last_error
        assert user not in asyncio.run(pending_users(project_backend))
        nothing = run_cli("dead-letters", "retry", "--user-id", user, env=env)
        assert nothing.returncode == 0 and f"no dead letters of {user} to retry" in nothing.stdout

    def test_limit_says_more_exist_only_when_they_do(self, project_backend: LocalBackend) -> None:
        """With two dead letters, --limit 1 shows one and says more exist; --limit 2 shows both without the hint."""
        env = {"CONVEX_URL": project_backend.url, "CONVEX_ADMIN_KEY": project_backend.admin_key}
        for name in ("cli-limit-a", "cli-limit-b"):
            asyncio.run(dead_letter(project_backend, f"convex-local|{name}", "RuntimeError: limit"))
        total = len(
            [ln for ln in run_cli("dead-letters", "list", env=env).stdout.splitlines() if ln.startswith("user=")]
        )
        assert total >= 2
        one = run_cli("dead-letters", "list", "--limit", "1", env=env)
        assert len([ln for ln in one.stdout.splitlines() if ln.startswith("user=")]) == 1
        assert "showing the first 1: more exist" in one.stdout
        every = run_cli("dead-letters", "list", "--limit", str(total), env=env)
        assert "showing the first" not in every.stdout

    def test_a_later_recompute_supersedes_them(self, project_backend: LocalBackend) -> None:
        """After a manual recompute of the user is acknowledged, its older dead letters are no longer listed."""
        user = "convex-local|cli-superseded"
        asyncio.run(dead_letter(project_backend, user, "RuntimeError: fixed since"))
        env = {"CONVEX_URL": project_backend.url, "CONVEX_ADMIN_KEY": project_backend.admin_key}
        assert user in run_cli("dead-letters", "list", env=env).stdout

        async def recompute() -> None:
            async with ConvexGateway(project_backend.url, admin_key=project_backend.admin_key) as gw:
                await gw.mutation("admin:requestRecompute", {"userId": user})
            stats = await run_worker(project_backend)
            assert stats.users_failed == 0, stats.last_error

        asyncio.run(recompute())
        listed = run_cli("dead-letters", "list", "--user-id", user, env=env)
        assert listed.returncode == 0 and f"no dead letters of {user}" in listed.stdout, listed.stdout

    def test_errors_are_one_line_with_exit_codes(self, project_backend: LocalBackend) -> None:
        """Missing or rejected key, a bad argument: exit 2; an unreachable deployment: exit 1; never a traceback."""
        url = project_backend.url
        cases = [
            (("list",), {"CONVEX_URL": url}, 2, "CONVEX_ADMIN_KEY is not set"),
            (
                ("retry",),
                {"CONVEX_URL": url, "CONVEX_ADMIN_KEY": "wrong-key"},
                2,
                f"CONVEX_ADMIN_KEY was rejected by {url}: BadAdminKey: The provided admin key was invalid for this"
                " instance",
            ),
            (
                ("list", "--user-id", ""),
                {"CONVEX_URL": url, "CONVEX_ADMIN_KEY": project_backend.admin_key},
                2,
                "--user-id is empty",
            ),
            (
                ("list", "--user-id", "x" * 513),
                {"CONVEX_URL": url, "CONVEX_ADMIN_KEY": project_backend.admin_key},
                2,
                "--user-id is 513 characters (UTF-16 units); a user id has at most 512",
            ),
            (
                ("list",),
                dict(UNREACHABLE),
                1,
                "cannot reach the deployment",
            ),
        ]
        for args, env, code, message in cases:
            res = run_cli("dead-letters", *args, env=env)
            assert res.returncode == code, (args, res.stderr)
            # stderr: the retry warnings of an unreachable deployment (logged while retrying), then one error line
            lines = [line for line in res.stderr.strip().splitlines() if "gateway.retry" not in line]
            assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, res.stderr)
            assert "rejected the admin key" not in res.stderr  # said once, not "was rejected: ... rejected the"
            assert "Traceback" not in res.stderr + res.stdout and res.stdout == ""

    def test_key_is_read_as_run_reads_it(self, project_backend: LocalBackend) -> None:
        """A trailing CR LF is dropped (it was retried as a transient error and exited 1, quoting the key); an empty
        key is "set but empty"; a line break inside is refused without showing the key; all exit 2 at once."""
        key = project_backend.admin_key
        ok = run_cli("dead-letters", "list", env={"CONVEX_URL": project_backend.url, "CONVEX_ADMIN_KEY": key + "\r\n"})
        assert ok.returncode == 0, ok.stderr
        assert "gateway.retry" not in ok.stdout + ok.stderr
        cases = [
            ("", "error: CONVEX_ADMIN_KEY is set but empty: dead letters need the admin key"),
            (f"{key}\r", None),  # only around the key: fine
            (f"{key[:5]}\n{key[5:]}", "error: CONVEX_ADMIN_KEY is invalid: character 6 of "),
        ]
        for value, message in cases:
            res = run_cli("dead-letters", "retry", env={"CONVEX_URL": project_backend.url, "CONVEX_ADMIN_KEY": value})
            if message is None:
                assert res.returncode == 0, res.stderr
                continue
            assert res.returncode == 2, res.stderr
            (line,) = res.stderr.splitlines()
            assert line.startswith(message) and key[5:] not in line, line

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("0", "--limit 0 is out of range (allowed: 1 to 1000)"),
            ("1001", "--limit 1001 is out of range (allowed: 1 to 1000)"),
            ("-3", "--limit -3 is out of range (allowed: 1 to 1000)"),
            ("ten", "--limit 'ten' is not a whole number (allowed: 1 to 1000)"),
        ],
    )
    def test_refused_limit_is_one_line(self, value: str, message: str) -> None:
        """A --limit outside 1-1000 or not a number: one error line naming option, value and range, exit 2, nothing sent."""
        res = run_cli("dead-letters", "list", "--limit", value, env={"CONVEX_URL": "http://127.0.0.1:9"})
        assert res.returncode == 2
        assert res.stderr.splitlines() == [f"error: {message}"]  # before the missing key, without Click's box
        assert res.stdout == ""


class TestCallSettings:
    @pytest.mark.parametrize(
        "args",
        [
            ("import", str(REPO_ROOT / "worker" / "data" / "demo-watch-history.json"), "--user-id", "x|y"),
            ("recompute", "--user-id", "x|y"),
            ("dead-letters", "list"),
            ("dead-letters", "retry"),
        ],
    )
    def test_every_command_takes_the_call_settings(self, args: tuple[str, ...]) -> None:
        """WORKER_MAX_ATTEMPTS (and the timeout and backoff beside it) apply to the operator commands as to
        run: one attempt means no retry before the unreachable deployment is reported; an invalid value
        is refused by name, exit 2, before any call."""
        res = run_cli(*args, env={**UNREACHABLE, "WORKER_MAX_ATTEMPTS": "1"})
        assert res.returncode == 1, res.stderr
        assert "gateway.retry" not in res.stderr and "Traceback" not in res.stderr
        assert "ConnectError" in res.stderr or "cannot reach the deployment" in res.stderr, res.stderr
        res = run_cli(*args, env={**UNREACHABLE, "WORKER_MAX_ATTEMPTS": "0"})
        assert res.returncode == 2
        assert res.stderr.strip().splitlines()[-1] == (
            "error: WORKER_MAX_ATTEMPTS is invalid: Input should be greater than 0"
        )

    def test_default_attempts_retry_an_unreachable_deployment(self) -> None:
        """The counterpart: with the default 5 attempts the same call is retried (logged) first."""
        res = run_cli("recompute", "--user-id", "x|y", env={**UNREACHABLE, "WORKER_MAX_BACKOFF_S": "0.05"})
        assert res.returncode == 1 and "gateway.retry" in res.stderr, res.stderr


class TestRecompute:
    def test_manual_trigger_appends_a_change_the_worker_consumes(self, project_backend: LocalBackend) -> None:
        """recompute --user-id appends a "manual" change (its seq printed); a running worker consumes it."""
        user = "convex-local|cli-recompute"
        env = {"CONVEX_URL": project_backend.url, "CONVEX_ADMIN_KEY": project_backend.admin_key}
        res = run_cli("recompute", "--user-id", user, env=env)
        assert res.returncode == 0, res.stderr
        match = re.fullmatch(
            rf"recompute of {re.escape(user)} requested \(change (\d+)\); a running worker picks it up\n", res.stdout
        )
        assert match is not None, res.stdout
        assert user in asyncio.run(pending_users(project_backend))
        stats = asyncio.run(run_worker(project_backend))
        assert stats.users_failed == 0, stats.last_error
        assert user not in asyncio.run(pending_users(project_backend))

    def test_rejected_key_and_missing_user_id(self, project_backend: LocalBackend) -> None:
        res = run_cli(
            "recompute",
            "--user-id",
            "convex-local|x",
            env={"CONVEX_URL": project_backend.url, "CONVEX_ADMIN_KEY": "wrong"},
        )
        assert res.returncode == 2
        assert res.stderr.startswith(f"error: CONVEX_ADMIN_KEY was rejected by {project_backend.url}"), res.stderr
        res = run_cli("recompute", env={"CONVEX_URL": project_backend.url, "CONVEX_ADMIN_KEY": "k"})
        assert res.returncode == 2 and "--user-id" in res.stderr

    @pytest.mark.parametrize(
        ("args", "needs"),
        [(("recompute", "--user-id", "a|b"), "recompute needs"), (("dead-letters", "list"), "dead letters need")],
    )
    def test_missing_or_empty_key_names_the_command(self, args: tuple[str, ...], needs: str) -> None:
        """The message says what needs the key (recompute said 'dead letters need the admin key')."""
        res = run_cli(*args, env={"CONVEX_URL": "http://127.0.0.1:9", "CONVEX_ADMIN_KEY": ""})
        assert res.returncode == 2
        assert res.stderr.strip() == f"error: CONVEX_ADMIN_KEY is set but empty: {needs} the admin key"
        res = run_cli(*args, env={"CONVEX_URL": "http://127.0.0.1:9"})
        assert res.returncode == 2
        assert res.stderr.strip() == (
            "error: CONVEX_ADMIN_KEY is not set (or CONVEX_SELF_HOSTED_ADMIN_KEY / CONVEX_DEPLOY_KEY):"
            f" {needs} the admin key"
        )

    @pytest.mark.parametrize("command", ["recompute", "import"])
    def test_blank_user_id_is_one_line(self, command: str, tmp_path: Path) -> None:
        """An empty --user-id is refused by name (not as a missing one), before any connection."""
        args = (
            [command, "--user-id", " "]
            if command == "recompute"
            else [command, str(tmp_path / "h.json"), "--user-id", ""]
        )
        res = run_cli(*args, env=dict(UNREACHABLE))
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            "error: --user-id is empty: pass the user's token identifier '<issuer>|<subject>'"
        ]
        assert res.stdout == ""

    @pytest.mark.parametrize("command", [["recompute"], ["dead-letters", "list"], ["dead-letters", "retry"]])
    @pytest.mark.parametrize(
        ("user_id", "problem"),
        [(" convex-local|a ", "has spaces around it"), ("convex-local|a\nb", "holds a control character")],
    )
    def test_user_id_no_signed_in_user_can_have_is_one_line(
        self, command: list[str], user_id: str, problem: str
    ) -> None:
        """Spaces around the id (another user, as stored) or a control character: refused, one line."""
        res = run_cli(*command, "--user-id", user_id, env=dict(UNREACHABLE))
        assert res.returncode == 2
        (line,) = res.stderr.splitlines()
        assert line.startswith("error: --user-id ") and problem in line, line
        assert res.stdout == ""

    def test_user_id_that_is_not_a_token_identifier_is_warned_about(self) -> None:
        """recompute --user-id without '<issuer>|' warns on stderr, as import does, then goes on."""
        res = run_cli(
            "recompute",
            "--user-id",
            "alice",
            env=dict(UNREACHABLE),
            timeout=60,
        )
        assert "warning: --user-id 'alice' is not a token identifier" in res.stderr
        assert res.stdout == ""  # the unreachable deployment: an error, no result line
