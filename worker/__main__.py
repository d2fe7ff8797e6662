"""Command line: python -m worker run | import | recompute | demo | healthcheck | dead-letters list|retry.

Exit codes: 0 success (run also after SIGTERM or SIGINT: its graceful stop), 1 runtime failure,
2 configuration or input error, 128 + the signal's number when another command is interrupted
(130 for SIGINT, 143 for SIGTERM).
"""

# This docstring is the --help text, and so are the commands' docstrings: Typer shows them as they
# are written, so they hold no reST markup (no ``literals``).

from __future__ import annotations

import signal
import sys

_COMMAND = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
"""The command named on the command line (``run``, ``import``, ...), as far as it can be told this early."""


def _exit_on_early_signal(signum: int, frame: object) -> None:
    """SIGINT (Ctrl-C) or SIGTERM before a command takes over signals (during imports and start-up).

    ``run`` exits 0 without a word: nothing to finish, either signal is its graceful stop. Any other
    command exits 128 + the signal's number (130, 143), as an interrupted command does, with one line
    saying that it had not started. Never a traceback (Python's own SIGINT handling would print one).
    """
    if _COMMAND == "run":
        sys.exit(0)
    sys.stderr.write(f"error: interrupted by {signal.Signals(signum).name} before the command started\n")
    sys.exit(128 + signum)


def _exit_on_signals_before_commands() -> None:
    """Install :func:`_exit_on_early_signal` for SIGINT and SIGTERM (again after an event loop restored its own)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_on_early_signal)


_exit_on_signals_before_commands()

import asyncio  # noqa: E402 - after the early signal handlers on purpose
import contextlib  # noqa: E402
import math  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Coroutine, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Any, TypeVar  # noqa: E402

import structlog  # noqa: E402
import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402

from worker.allocator import configure_gc, configure_malloc  # noqa: E402
from worker.config import (  # noqa: E402
    DEFAULT_HEARTBEAT_FILE,
    KEY_VARIABLES,
    Settings,
    check_deployment_url,
    clean_secret,
    deployment_variable,
    env_setting,
    load_settings,
    unknown_variables,
)
from worker.errors import (  # noqa: E402
    AuthenticationError,
    ConfigError,
    GatewayError,
    ImportFailedError,
    ImportInterruptedError,
    PermanentGatewayError,
    WorkerError,
    plural,
    printable,
)
from worker.logs import configure_logging  # noqa: E402
from worker.models import MAX_USER_ID_LENGTH, utf16_length  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True, soft_wrap=True)  # one message, one line: never wrapped at 80 columns
results = Console(soft_wrap=True)
"""Standard output, for what a command produces (the import summary); messages and progress go to ``console``."""

DEMO_SAMPLE = Path(__file__).resolve().parent / "data" / "demo-watch-history.json"
DEMO_SUBJECT = "demo-user"
DEMO_KEEP_RUNNING_TOKEN_TTL_S = 24 * 3600
"""Lifetime of the demo user's token printed by ``demo --keep-running``, seconds."""
DEMO_GONE = "the demo's backend kept its data in memory and has stopped; run the demo again to start over"
"""What is left after an interrupted or failed demo: nothing to import into again."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: MESSAGE`` and return the exit; the message is plain text (``[old]`` in a path is kept)."""
    console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    return typer.Exit(code)


T = TypeVar("T")


class _Interrupted(Exception):
    """SIGINT or SIGTERM ended a command other than ``run``.

    Attributes:
        signum: The signal's number.
        detail: What was done before (an import's committed batches), or "".
        during_import: Whether an import was under way (its batches are then in ``detail``).
    """

    def __init__(self, signum: int, detail: str = "", *, during_import: bool = False) -> None:
        super().__init__(signum, detail)
        self.signum = signum
        self.detail = detail
        self.during_import = during_import

    def exit(self, what: str, *, when: str = "", detail: str | None = None) -> typer.Exit:
        """Print the one-line message and return the exit (128 + the signal's number).

        Args:
            what: The command (``import``, ``demo``).
            when: What it was doing (``while reading FILE``), or "".
            detail: What was done, instead of :attr:`detail`.
        """
        name = signal.Signals(self.signum).name
        detail = self.detail if detail is None else detail
        message = f"{what} interrupted by {name}" + (f" {when}" if when else "") + (f": {detail}" if detail else "")
        return _fail(message, 128 + self.signum)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise _Interrupted(signum)


def _interruptible() -> None:
    """Make SIGINT and SIGTERM raise :class:`_Interrupted` (``import`` and ``demo``; ``run`` stops gracefully).

    Outside the event loop they raise at once; inside it, :func:`_cancel_on_signals` cancels the
    running task instead, so that it unwinds and can say what it had done.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupted)


@contextlib.contextmanager
def _exit_when_interrupted(what: str, detail: Callable[[], str] | None = None) -> Iterator[None]:
    """Make SIGINT and SIGTERM end the command ``what`` with one line and exit 128 + the signal's number.

    For commands that have nothing to report but what they did (``healthcheck``, ``dead-letters``);
    run their event loops with :func:`_cancel_on_signals`.

    Args:
        what: The command, as the message names it (``dead-letters list``).
        detail: Called on interruption for what was already done (``2 dead letters … put back``), or "".
    """
    _interruptible()
    try:
        yield
    except _Interrupted as exc:
        raise exc.exit(what, detail=detail() if detail is not None else None) from None


async def _cancel_on_signals(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro``, cancelling it on SIGINT or SIGTERM.

    Raises:
        _Interrupted: after the cancelled coroutine has unwound, with the committed batches of an
            interrupted import as ``detail``.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    received: list[int] = []

    def cancel(signum: int) -> None:
        received.append(signum)
        if task is not None:
            task.cancel()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        loop.add_signal_handler(sig, cancel, sig)
    try:
        return await coro
    except ImportInterruptedError as exc:
        raise _Interrupted(received[0] if received else signal.SIGINT, str(exc), during_import=True) from None
    except asyncio.CancelledError:
        if not received:
            raise
        raise _Interrupted(received[0]) from None
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)


def _warn_unknown_variables() -> None:
    """Print one warning per ``WORKER_*`` environment variable that is no setting (ignored), with the closest one."""
    for name, suggestion in unknown_variables():
        hint = f"; did you mean {suggestion}?" if suggestion else " (settings: README.md, worker/config.py)"
        console.print(
            f"[yellow]warning:[/] {escape(printable(name))} is not a setting and is ignored{hint}", highlight=False
        )


def _key_rejected(exc: AuthenticationError) -> str:
    """Say once that the deployment rejected the admin key, naming the variable it came from and the deployment.

    ``CONVEX_ADMIN_KEY was rejected by http://127.0.0.1:3210: BadAdminKey: The provided admin key was
    invalid for this instance.`` (the variable the key was read from, :func:`deployment_variable`).
    """
    try:
        found = deployment_variable("convex_admin_key")
    except ConfigError:  # not at this point: the key was read from one variable already
        found = None
    variable = found[0] if found else KEY_VARIABLES[0]
    by = f" by {exc.url}" if exc.url else ""
    return f"{variable} was rejected{by}: {exc.reason}"


# ---------------------------------------------------------------------------------------- run


async def _run_worker(settings: Settings) -> int:
    from worker.gateway import ConvexGateway
    from worker.runner import Runner

    async with ConvexGateway(
        str(settings.convex_url),
        admin_key=settings.convex_admin_key.get_secret_value(),
        **_gateway_options(settings),
    ) as gateway:
        runner = Runner(settings, gateway)
        runner.install_signal_handlers()  # before anything slow: SIGTERM during start-up still exits 0
        try:  # an unreachable deployment is waited for (logged per attempt); a wrong key or URL is not
            connected = await runner.connect()
        except AuthenticationError as exc:
            raise ConfigError(_key_rejected(exc)) from exc
        except GatewayError as exc:
            raise ConfigError(f"cannot use the deployment at CONVEX_URL={settings.convex_url}: {exc}") from exc
        if connected:
            await runner.run()
    return 0


@app.command()
def run() -> None:
    """Run the worker until SIGTERM (configuration from the environment: CONVEX_URL, CONVEX_ADMIN_KEY, WORKER_*)."""
    _warn_unknown_variables()
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    from worker.heartbeat import claim_heartbeat_file

    try:  # before anything else: a second worker on this host's heartbeat file would hide a dead one
        heartbeat = claim_heartbeat_file(settings.heartbeat_file)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    tuned = configure_malloc(
        arena_max=settings.malloc_arena_max, mmap_threshold_bytes=settings.malloc_mmap_threshold_bytes
    )
    configure_gc(gen0_threshold=settings.gc_gen0_threshold)
    configure_logging(settings.log_format, settings.log_level)
    if not tuned:
        structlog.get_logger(__name__).warning(
            "malloc.not_tuned",
            reason="the C library has no mallopt (not glibc) or refused a value",
            arena_max=settings.malloc_arena_max,
            mmap_threshold_bytes=settings.malloc_mmap_threshold_bytes,
        )
    try:
        code = asyncio.run(_run_worker(settings))
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    finally:
        _exit_on_signals_before_commands()  # closing the loop restored Python's Ctrl-C traceback
        if heartbeat is not None:
            heartbeat.release()
    raise typer.Exit(code)


# ---------------------------------------------------------------------------------------- import


def _parse_file(path: Path) -> Any:
    """Parse the export to import, or refuse it (exit 2) before anything is sent.

    A file that cannot be read (missing, a directory or a device, damaged) is refused with its
    position. A readable file that yields no view to import (no entries at all, every entry rejected,
    or only non-views such as ads) is refused too, after the import summary (on stdout) with its
    rejections, so that an import that added nothing never exits 0.
    """
    from worker.importer import ImportSummary
    from worker.takeout import TakeoutFormatError, parse_takeout_file

    try:  # a missing path, a directory or a device is refused there too, in the checker's words
        parsed = parse_takeout_file(path)
    except TakeoutFormatError as exc:
        raise _fail(str(exc)) from None
    reason = parsed.no_view_reason()
    if reason is not None:
        _print_import_summary(path, parsed, ImportSummary())
        raise _fail(f"{path}: {reason}; nothing imported")
    return parsed


def _print_import_summary(path: Path, parsed: Any, summary: Any) -> None:
    """Print what an import did on standard output (``import … > summary.txt`` keeps it); errors stay on stderr."""
    from datetime import UTC, datetime

    def day(ms: int | None) -> str:
        return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")

    member = f": {escape(parsed.member)}" if parsed.member else ""
    entries = plural(parsed.total_entries, "entry", "entries")
    results.print(f"[bold]{escape(path.name)}[/]{member} ({parsed.source}): {entries}")
    results.print(f"  imported            {summary.imported}")
    results.print(f"  duplicates skipped  {summary.duplicates}")
    non_views = ", ".join(f"{k} {v}" for k, v in sorted(parsed.non_views.items())) or "none"
    results.print(f"  not views           {non_views}")
    results.print(f"  rejected            {len(parsed.rejected)}")
    for rej in parsed.rejected[:10]:
        results.print(f"    {escape(str(rej))}")
    if len(parsed.rejected) > 10:
        results.print(f"    … {len(parsed.rejected) - 10} more")
    results.print(f"  covered range       {day(summary.first_ms)} .. {day(summary.last_ms)} (UTC)")
    for note in parsed.notes:
        results.print(f"  note: {escape(note)}")


async def _import(
    path: Path,
    parsed: Any,
    url: str,
    *,
    admin_key: str | None,
    token: str | None,
    user_id: str | None,
    calls: dict[str, Any],
) -> Any:
    """Upload the views of ``parsed`` (from :func:`_parse_file`, read before the event loop) and print the summary.

    ``calls``: the gateway's per-call settings (:func:`_gateway_options`).

    Raises:
        ImportInterruptedError: on cancellation, saying whether a batch was in flight, and what is committed.
        ImportFailedError: a batch failed.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from worker.gateway import ConvexGateway
    from worker.importer import interrupted_between_batches, upload_events

    summary = None
    try:
        async with ConvexGateway(url, admin_key=admin_key if user_id else None, user_token=token, **calls) as gateway:
            with Progress(
                TextColumn("importing"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                disable=not console.is_terminal,  # piped: no bar, and no empty line left behind
            ) as progress:
                task = progress.add_task("import", total=len(parsed.views))
                summary = await upload_events(
                    gateway,
                    parsed.views,
                    source=parsed.source,
                    user_id=user_id,
                    on_batch=lambda n: progress.advance(task, n),
                )
    except asyncio.CancelledError:  # not during a batch (upload_events reports that one itself)
        raise interrupted_between_batches(summary) from None
    summary.non_views = dict(parsed.non_views)
    summary.rejected = [(r.index, r.field, r.reason) for r in parsed.rejected]
    _print_import_summary(path, parsed, summary)
    return summary


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="watch-history.json / .html, or a Takeout .zip")],
    user_id: Annotated[
        str | None,
        typer.Option(
            help="Operator mode: import for this user (the token identifier '<issuer>|<subject>') with the admin key."
        ),
    ] = None,
    token: Annotated[str | None, typer.Option(help="User mode: the user's JWT.", envvar="CONVEX_USER_TOKEN")] = None,
    url: Annotated[
        str | None, typer.Option(help="Deployment URL (default: CONVEX_URL or CONVEX_SELF_HOSTED_URL).")
    ] = None,
) -> None:
    """Import a Google Takeout watch history into Convex (idempotent: a re-import adds nothing)."""
    url = _deployment_url(url)
    calls = _call_settings()
    _check_user_id(user_id)
    if user_id and token:
        raise _fail(
            "pass either --user-id (operator mode) or --token (user mode), not both"
            " (--token may come from CONVEX_USER_TOKEN)"
        )
    admin_key = None
    if user_id:
        admin_key = _admin_key(
            "--user-id needs CONVEX_ADMIN_KEY (or CONVEX_SELF_HOSTED_ADMIN_KEY / CONVEX_DEPLOY_KEY)",
            "--user-id needs the admin key",
        )
    elif token:
        token = _user_token(token)
    if not user_id and not token:
        raise _fail("pass --token (user mode) or --user-id with CONVEX_ADMIN_KEY (operator mode)")
    if user_id:
        _warn_unless_token_identifier(user_id, "no signed-in user will see these views")
    from worker.importer import NOTHING_SENT

    _interruptible()
    try:  # before the event loop, whose signal handlers would only run once the parse is over
        parsed = _parse_file(file)
    except _Interrupted as exc:
        raise exc.exit("import", when=f"while reading {file}", detail=NOTHING_SENT) from None
    try:
        asyncio.run(
            _cancel_on_signals(
                _import(file, parsed, url, admin_key=admin_key, token=token, user_id=user_id, calls=calls)
            )
        )
    except _Interrupted as exc:
        raise exc.exit("import") from None
    except ImportFailedError as exc:
        raise _fail(str(exc), 2 if isinstance(exc.__cause__, PermanentGatewayError) else 1) from None
    except GatewayError as exc:
        raise _fail(str(exc), 1) from None


# ---------------------------------------------------------------------------------------- demo


async def _demo(
    file: Path, parsed: Any, settings: Settings, token: str, *, time_zone: str, keep_running: bool, log_format: str
) -> None:
    from worker.gateway import ConvexGateway
    from worker.runner import Runner

    calls = _gateway_options(settings)
    async with ConvexGateway(str(settings.convex_url), user_token=token, **calls) as user_gateway:
        await user_gateway.mutation("settings:setTimeZone", {"timeZone": time_zone})
    console.print(f"user time zone: {time_zone}")
    started = time.perf_counter()
    await _import(file, parsed, str(settings.convex_url), admin_key=None, token=token, user_id=None, calls=calls)
    import_s = time.perf_counter() - started
    async with ConvexGateway(
        str(settings.convex_url), admin_key=settings.convex_admin_key.get_secret_value(), **calls
    ) as gateway:
        await gateway.validate_credentials()
        runner = Runner(settings, gateway)
        started = time.perf_counter()
        stats = await runner.run_until_idle()
        worker_s = time.perf_counter() - started
    async with ConvexGateway(str(settings.convex_url), user_token=token, **calls) as user_gateway:
        dashboard = await user_gateway.dashboard()
    from worker.report import print_dashboard

    print_dashboard(dashboard, console=Console())
    console.print(
        f"import {import_s:.1f} s, worker {worker_s:.1f} s "
        f"({plural(stats.users_processed, 'user')}, {plural(stats.results_written, 'result')} written)"
    )
    if keep_running:
        url, key = settings.convex_url, settings.convex_admin_key.get_secret_value()
        hours = DEMO_KEEP_RUNNING_TOKEN_TTL_S // 3600
        console.print(
            f"backend at {url}; worker keeps running (Ctrl-C to stop). From another shell:\n"
            f"  export CONVEX_URL={shlex.quote(str(url))} CONVEX_ADMIN_KEY={shlex.quote(key)}\n"
            f"  export CONVEX_USER_TOKEN={shlex.quote(token)}  # the demo user ({DEMO_SUBJECT}), valid {hours} h\n"
            "  python -m worker import FILE  # more views for the demo user; this worker recomputes them\n"
            "(the worker's info logs follow: batch.processed per recomputed user)",
            markup=False,
            highlight=False,
        )
        configure_logging("console" if log_format == "console" else "json", "info", stream=sys.stderr)
        async with ConvexGateway(
            str(settings.convex_url), admin_key=settings.convex_admin_key.get_secret_value(), **calls
        ) as gateway:
            runner = Runner(settings, gateway)
            runner.install_signal_handlers()
            await runner.run()


@app.command()
def demo(
    file: Annotated[
        Path | None, typer.Argument(help="Your own Takeout export; default: the bundled synthetic sample.")
    ] = None,
    time_zone: Annotated[
        str | None,
        typer.Option(help="The user's IANA time zone; default Europe/Berlin for the bundled sample, else UTC."),
    ] = None,
    keep_running: Annotated[bool, typer.Option(help="Keep backend and worker running afterwards.")] = False,
    log_format: Annotated[str, typer.Option(help="Worker log format: console, json.")] = "console",
) -> None:
    """Start the local backend, import an export, run the worker until fresh, print the dashboard.

    Run it from a checkout of the project (scripts/demo.sh): the local backend is not part of the installed package.
    """
    from worker.devbackend import BackendStartError, BackendUnavailableError, LocalBackend, check_can_start

    _warn_unknown_variables()
    try:  # after pip install . the backend and the functions are not there: say so before anything else
        check_can_start()
    except BackendUnavailableError as exc:
        raise _fail(f"demo: {exc}") from None
    path = file or DEMO_SAMPLE
    if time_zone is not None:  # refused here as settings:setTimeZone would refuse it, before the backend starts
        from worker.timezones import canonical_time_zone

        canonical = canonical_time_zone(time_zone)
        if canonical is None:
            raise _fail(f"--time-zone {time_zone!r} is not an IANA time zone the worker supports (e.g. Europe/Berlin)")
        time_zone = canonical  # utc → UTC, as settings:setTimeZone stores it
    if log_format not in ("console", "json"):
        raise _fail(f"--log-format {log_format!r}: expected console or json")
    _call_settings()  # the WORKER_* settings are refused as run refuses them, before the backend starts
    _interruptible()
    try:
        parsed = _parse_file(path)  # a file that cannot be read is refused before the backend starts
    except _Interrupted as exc:
        raise exc.exit("demo", when=f"while reading {path}, before the backend started") from None
    configure_logging("console" if log_format == "console" else "json", "warning", stream=sys.stderr)
    console.print("[bold]starting the local Convex backend[/] (npx convex-local)")
    try:
        with LocalBackend() as backend:
            settings = load_settings(
                convex_url=backend.url,
                convex_admin_key=backend.admin_key,
                worker_id="demo-worker",
                heartbeat_file=None,
            )
            configure_gc(gen0_threshold=settings.gc_gen0_threshold)
            token = backend.mint_token(
                DEMO_SUBJECT, ttl_seconds=DEMO_KEEP_RUNNING_TOKEN_TTL_S if keep_running else 3600
            )
            zone = time_zone or ("Europe/Berlin" if file is None else "UTC")
            asyncio.run(
                _cancel_on_signals(
                    _demo(
                        path, parsed, settings, token, time_zone=zone, keep_running=keep_running, log_format=log_format
                    )
                )
            )
    except _Interrupted as exc:  # the in-memory backend is gone: no re-import, whatever was committed
        raise exc.exit("demo", when="during the import" if exc.during_import else "", detail=DEMO_GONE) from None
    except BackendStartError as exc:
        raise _fail(str(exc), 1) from None
    except ImportFailedError as exc:
        code = 2 if isinstance(exc.__cause__, PermanentGatewayError) else 1
        raise _fail(f"{exc.failure} {DEMO_GONE[:1].upper()}{DEMO_GONE[1:]}.", code) from None
    except (GatewayError, ConfigError) as exc:
        raise _fail(str(exc), 1) from None


# ---------------------------------------------------------------------------------------- dead-letters

dead_letters_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Changes the worker failed on 5 times (dead letters): list them, deliver them again (admin key).",
)
app.add_typer(dead_letters_app, name="dead-letters")

RETRY_PAGE = 1000
"""Dead letters put back per ``admin:retryDeadLetters`` call by ``dead-letters retry``."""
MAX_DEAD_LETTER_PAGE = 1000
"""Most dead letters ``admin:listDeadLetters`` returns per call."""

UserIdOption = Annotated[
    str | None,
    typer.Option(help="Only this user's (the token identifier '<issuer>|<subject>'); default: every user's."),
]
UrlOption = Annotated[str | None, typer.Option(help="Deployment URL (default: CONVEX_URL or CONVEX_SELF_HOSTED_URL).")]


def _deployment_url(url: str | None) -> str:
    """Return ``url``, else ``CONVEX_URL`` (or its aliases), checked as a deployment URL.

    Raises:
        typer.Exit: code 2 with a one-line message naming where the URL came from (``--url`` or the
            variable) when no URL is given or it is not a valid one (also when it ends in ``/api``).
    """
    source = "--url"
    try:
        if not url:  # the variable run reads it from: CONVEX_URL or an alias, refused when they disagree
            found = deployment_variable("convex_url")
            if found is None:
                raise _fail("CONVEX_URL is not set (or pass --url)")
            source, url = found
            if not url:
                raise _fail(f"{source} is set but empty (or pass --url)")
        return check_deployment_url(url, source=source)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _admin_key(missing: str, needed_by: str) -> str:
    """Return the admin key from CONVEX_ADMIN_KEY or an alias, read and cleaned as ``run`` reads it.

    Surrounding whitespace is dropped (:func:`clean_secret`); the key itself is never printed.

    Args:
        missing: The message when no key variable is set.
        needed_by: What needs the key (``--user-id needs the admin key``), said when the variable is empty.

    Raises:
        typer.Exit: code 2 with one line when the key is not set, set but empty, invalid (whitespace or
            a control character inside), or set under two of its names with different values.
    """
    try:
        found = deployment_variable("convex_admin_key")
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if found is None:
        raise _fail(missing)
    name, value = found
    try:
        key = clean_secret(value)
    except ValueError as exc:
        raise _fail(f"{name} is invalid: {exc}") from None
    if not key:
        raise _fail(f"{name} is set but empty: {needed_by}")
    return key


def _user_token(token: str) -> str:
    """Return the user's token without surrounding whitespace (:func:`clean_secret`), never printing it.

    Raises:
        typer.Exit: code 2 with one line naming ``--token`` or ``CONVEX_USER_TOKEN`` (where it came
            from) and the position of a whitespace or control character inside it.
    """
    given = any(arg == "--token" or arg.startswith("--token=") for arg in sys.argv[1:])
    try:
        return clean_secret(token)
    except ValueError as exc:
        raise _fail(f"{'--token' if given else 'CONVEX_USER_TOKEN'} is invalid: {exc}") from None


def _bounded_int(option: str, value: str, low: int, high: int) -> int:
    """Return the whole number ``value`` of ``option`` when it lies in ``low..high``.

    Read here rather than by Click, which would refuse it with a boxed usage message.

    Raises:
        typer.Exit: code 2 with one line naming the option, the value and the allowed range.
    """
    try:
        number = int(value)
    except ValueError:
        raise _fail(f"{option} {value!r} is not a whole number (allowed: {low} to {high})") from None
    if not low <= number <= high:
        raise _fail(f"{option} {number} is out of range (allowed: {low} to {high})")
    return number


def _positive_seconds(option: str, value: str) -> float:
    """Return the duration ``value`` of ``option`` in seconds when it is a finite number above 0.

    Read here rather than by Click, which would refuse a non-number with a boxed usage message and
    accept 0, a negative number, ``nan`` or ``inf``: with a limit of 0 or less every heartbeat is
    stale, and with ``nan`` none ever is.

    Raises:
        typer.Exit: code 2 with one line naming the option and the value.
    """
    try:
        number = float(value)
    except ValueError:
        raise _fail(f"{option} {value!r} is not a number (allowed: more than 0 seconds)") from None
    if not math.isfinite(number):
        raise _fail(f"{option} {value} is not a finite number (allowed: more than 0 seconds)")
    if number <= 0:
        raise _fail(f"{option} {value} is out of range (allowed: more than 0 seconds)")
    return number


def _operator_connection(url: str | None, needs_key: str) -> tuple[str, str]:
    """Return the deployment URL and admin key of an operator command, read as ``import --user-id`` reads them.

    Args:
        url: The ``--url`` option (None: from the environment).
        needs_key: What needs the admin key, for the messages (``dead letters``, ``recompute``).

    Raises:
        typer.Exit: code 2 with a one-line message when the URL or the key is missing, empty or invalid.
    """
    url = _deployment_url(url)
    admin_key = _admin_key(
        f"CONVEX_ADMIN_KEY is not set (or CONVEX_SELF_HOSTED_ADMIN_KEY / CONVEX_DEPLOY_KEY): {needs_key} the admin key",
        f"{needs_key} the admin key",
    )
    return url, admin_key


def _gateway_options(settings: Settings) -> dict[str, Any]:
    """Return the per-call settings of ``settings`` as :class:`~worker.gateway.ConvexGateway` arguments."""
    return {
        "timeout_s": settings.request_timeout_s,
        "max_attempts": settings.max_attempts,
        "max_backoff_s": settings.max_backoff_s,
    }


def _call_settings() -> dict[str, Any]:
    """Return ``WORKER_REQUEST_TIMEOUT_S``, ``WORKER_MAX_ATTEMPTS`` and ``WORKER_MAX_BACKOFF_S`` as
    gateway arguments, for the commands that take the deployment from their own options.

    Every ``WORKER_*`` setting is validated, as ``run`` validates them.

    Raises:
        typer.Exit: code 2 with the setting's one-line error.
    """
    try:
        settings = load_settings(convex_url="http://127.0.0.1:1", convex_admin_key="unused", heartbeat_file=None)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    return _gateway_options(settings)


def _operator_call_failed(exc: GatewayError) -> typer.Exit:
    """Map a failed operator call to its one-line message and exit code.

    Rejected key, refused arguments or a deployment without these functions: 2; unreachable: 1.
    """
    if isinstance(exc, AuthenticationError):
        return _fail(_key_rejected(exc))
    if isinstance(exc, PermanentGatewayError):
        return _fail(str(exc))
    return _fail(f"cannot reach the deployment: {exc}", 1)


async def _list_dead_letters(url: str, admin_key: str, user_id: str | None, limit: int, calls: dict[str, Any]) -> Any:
    from worker.gateway import ConvexGateway

    async with ConvexGateway(url, admin_key=admin_key, **calls) as gateway:
        return await gateway.list_dead_letters(user_id=user_id, limit=limit)


async def _retry_dead_letters(
    url: str, admin_key: str, user_id: str | None, retried: list[int], calls: dict[str, Any]
) -> int:
    """Put every dead letter (of ``user_id``) back to pending; ``retried[0]`` counts them as calls commit."""
    from worker.gateway import ConvexGateway

    async with ConvexGateway(url, admin_key=admin_key, **calls) as gateway:
        while True:
            count, has_more = await gateway.retry_dead_letters(user_id=user_id, limit=RETRY_PAGE)
            retried[0] += count
            if not has_more or count == 0:
                return retried[0]


@dead_letters_app.command("list")
def dead_letters_list(
    user_id: UserIdOption = None,
    limit: Annotated[
        str, typer.Option(metavar="<int>", help=f"Most dead letters shown (1-{MAX_DEAD_LETTER_PAGE}).")
    ] = "100",
    url: UrlOption = None,
) -> None:
    """Show dead-lettered changes (user, seq, kind, range, count, when), then their last errors.

    A table on a terminal wide enough for it; piped or narrower, one key=value line per dead letter.
    """
    _check_user_id(user_id)
    with _exit_when_interrupted("dead-letters list"):
        from worker.report import print_dead_letters

        shown = _bounded_int("--limit", limit, 1, MAX_DEAD_LETTER_PAGE)
        url, admin_key = _operator_connection(url, "dead letters need")
        calls = _call_settings()
        page = min(shown + 1, MAX_DEAD_LETTER_PAGE)  # one row more than shown tells whether others exist
        try:
            rows = asyncio.run(_cancel_on_signals(_list_dead_letters(url, admin_key, user_id, page, calls)))
        except GatewayError as exc:
            raise _operator_call_failed(exc) from None
        more: bool | None = len(rows) > shown
        if shown == MAX_DEAD_LETTER_PAGE and len(rows) == shown:
            more = None  # a full page at the largest limit: others may exist
        print_dead_letters(rows[:shown], limit=shown, more=more, user_id=user_id, console=Console())


@dead_letters_app.command("retry")
def dead_letters_retry(user_id: UserIdOption = None, url: UrlOption = None) -> None:
    """Deliver dead-lettered changes again (attempts reset to 0), once their cause is fixed.

    A running worker picks them up like new changes; one that fails 5 more times is dead-lettered again.
    """
    _check_user_id(user_id)
    progress = [0]
    of_user = f" of {user_id}" if user_id else ""

    def done() -> str:
        count = progress[0]
        return (
            f"at least {plural(count, 'dead letter')}{of_user} put back to pending; run it again for the rest"
            if count
            else ""
        )

    with _exit_when_interrupted("dead-letters retry", done):
        url, admin_key = _operator_connection(url, "dead letters need")
        calls = _call_settings()
        try:
            retried = asyncio.run(_cancel_on_signals(_retry_dead_letters(url, admin_key, user_id, progress, calls)))
        except GatewayError as exc:
            raise _operator_call_failed(exc) from None
    if retried == 0:
        results.print(f"no dead letters{of_user} to retry", highlight=False, markup=False)
        return
    results.print(
        f"{plural(retried, 'dead letter')}{of_user} put back to pending; a running worker recomputes their users"
        " (a user still in a retry backoff is claimed when it ends, within 64 s)",
        highlight=False,
        markup=False,
    )


# ---------------------------------------------------------------------------------------- recompute


async def _request_recompute(url: str, admin_key: str, user_id: str, calls: dict[str, Any]) -> int:
    from worker.gateway import ConvexGateway

    async with ConvexGateway(url, admin_key=admin_key, **calls) as gateway:
        return await gateway.request_recompute(user_id)


def _check_user_id(user_id: str | None) -> None:
    """Refuse a ``--user-id`` that no signed-in user can have (one line, exit 2): empty or blank,
    with spaces around it (stored as typed, it would name another user), with a control
    character (a line break…), or longer than the deployment accepts (``MAX_USER_ID_LENGTH``)."""
    if user_id is None:
        return
    if not user_id.strip():
        raise _fail("--user-id is empty: pass the user's token identifier '<issuer>|<subject>'")
    if user_id != user_id.strip():
        raise _fail(f"--user-id {printable(repr(user_id))} has spaces around it; pass the identifier alone")
    if printable(user_id) != user_id:
        raise _fail(f"--user-id {printable(repr(user_id))} holds a control character; pass the identifier alone")
    if (length := utf16_length(user_id)) > MAX_USER_ID_LENGTH:
        raise _fail(f"--user-id is {length} characters (UTF-16 units); a user id has at most {MAX_USER_ID_LENGTH}")


def _warn_unless_token_identifier(user_id: str, consequence: str) -> None:
    """Warn (stderr) when ``user_id`` does not look like a token identifier ``<issuer>|<subject>``."""
    if "|" not in user_id:
        console.print(
            f"[yellow]warning:[/] --user-id {escape(repr(user_id))} is not a token identifier ('<issuer>|<subject>',"
            f" e.g. {escape(repr('convex-local|' + user_id))}): {consequence}",
            soft_wrap=True,
        )


@app.command()
def recompute(
    user_id: Annotated[str, typer.Option("--user-id", help="The user (the token identifier '<issuer>|<subject>').")],
    url: UrlOption = None,
) -> None:
    """Ask for a recompute of one user's whole history (the manual trigger, admin:requestRecompute).

    Appends a "manual" change to the change log; a running worker recomputes the user from all of its
    views and stores the results, as after any change.
    """
    _check_user_id(user_id)
    _warn_unless_token_identifier(user_id, "no signed-in user's views are stored under it")
    with _exit_when_interrupted("recompute"):
        url, admin_key = _operator_connection(url, "recompute needs")
        calls = _call_settings()
        try:
            seq = asyncio.run(_cancel_on_signals(_request_recompute(url, admin_key, user_id, calls)))
        except GatewayError as exc:
            raise _operator_call_failed(exc) from None
    results.print(
        f"recompute of {user_id} requested (change {seq}); a running worker picks it up",
        highlight=False,
        markup=False,
    )


# ---------------------------------------------------------------------------------------- healthcheck


@app.command()
def healthcheck(
    max_age_s: Annotated[
        str, typer.Option(metavar="<float>", help="Largest heartbeat age that counts as healthy (s, > 0).")
    ] = "90",
) -> None:
    """Exit 0 when the worker loop touched its heartbeat file (WORKER_HEARTBEAT_FILE) within --max-age-s seconds."""
    with _exit_when_interrupted("healthcheck"):
        limit_s = _positive_seconds("--max-age-s", max_age_s)
        name = env_setting("WORKER_HEARTBEAT_FILE")  # any case, as the worker reads its settings
        if name is None:
            name = DEFAULT_HEARTBEAT_FILE  # the same default as run's
        if not name:
            raise _fail("WORKER_HEARTBEAT_FILE is empty (heartbeat disabled): nothing to check", 2)
        from worker.heartbeat import check_heartbeat_path

        try:
            check_heartbeat_path(name)  # a directory's age says nothing about the worker
        except ConfigError as exc:
            raise _fail(str(exc), 2) from None
        path = Path(name)
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            raise _fail(f"no heartbeat file at {path}", 1) from None
        if age > limit_s:
            raise _fail(f"heartbeat is {age:.0f} s old (limit {limit_s:g} s): {path}", 1)
    raise typer.Exit(0)


def main() -> None:
    """Entry point of the ``watch-worker`` script."""
    # warnings of the commands whose stdout is their result (gateway retries of import, dead-letters)
    # go to stderr; run configures its own logging (stdout) from its settings
    configure_logging("auto", "warning", stream=sys.stderr)
    try:
        app()
    except WorkerError as exc:  # anything not mapped above still gets a one-line message
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
