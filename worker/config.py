"""Worker settings, read once from the environment (the only reader of environment variables).

Standard Convex variable names are accepted for the deployment (``CONVEX_URL`` or
``CONVEX_SELF_HOSTED_URL``; ``CONVEX_ADMIN_KEY``, ``CONVEX_SELF_HOSTED_ADMIN_KEY`` or
``CONVEX_DEPLOY_KEY``); the worker's own knobs use the ``WORKER_`` prefix.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Mapping
from typing import Literal

from pydantic import AliasChoices, Field, HttpUrl, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError

URL_VARIABLES = ("CONVEX_URL", "CONVEX_SELF_HOSTED_URL")
"""Environment variables read for the deployment URL, first match wins."""
KEY_VARIABLES = ("CONVEX_ADMIN_KEY", "CONVEX_SELF_HOSTED_ADMIN_KEY", "CONVEX_DEPLOY_KEY")
"""Environment variables read for the admin/deploy key, first match wins."""
DEFAULT_HEARTBEAT_FILE = "/tmp/watch-worker.heartbeat"
"""Heartbeat file of ``run`` and ``healthcheck`` when ``WORKER_HEARTBEAT_FILE`` is not set: one per host
(a container runs one replica, its health check in the same container). ``run`` refuses to start while
another live worker holds it (:mod:`worker.heartbeat`)."""


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Configuration of one worker replica.

    Raises:
        pydantic.ValidationError: from the constructor; use :func:`load_settings` for a
            :class:`~worker.errors.ConfigError` that names the missing or invalid variable.
    """

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore", populate_by_name=True)

    convex_url: HttpUrl = Field(
        validation_alias=AliasChoices(*URL_VARIABLES, "convex_url"),
        description="Deployment URL, e.g. https://happy-otter-123.convex.cloud or http://127.0.0.1:3210.",
    )
    convex_admin_key: SecretStr = Field(
        validation_alias=AliasChoices(*KEY_VARIABLES, "convex_admin_key"),
        description="Admin or deploy key; lets the worker call internal functions. Never logged.",
    )
    worker_id: str = Field(
        default_factory=_default_worker_id,
        description="Lease owner name of this replica; defaults to <hostname>-<pid>.",
    )
    lease_ms: int = Field(default=60_000, gt=0, description="Per-user lease duration in milliseconds.")
    debounce_ms: int = Field(
        default=0,
        ge=0,
        description=(
            "Wait after a wake-up before reading pending changes (ms). Changes committed while a user is"
            " recomputed are coalesced into its next claim anyway; set this only when writers commit"
            " bursts faster than that and each change should not start a recompute."
        ),
    )
    batch_size: int = Field(default=200, gt=0, le=1000, description="Pending change rows read per round.")
    page_size: int = Field(
        default=4000, gt=0, le=4000, description="Events per listEvents page (the backend serves at most 4000)."
    )
    store_chunk_size: int = Field(
        default=50, gt=0, le=50, description="Aggregation results per storeAggregations call (whole filter sets, ≤ 50)."
    )
    hash_memo_users: int = Field(
        default=2000,
        gt=0,
        description="Users whose stored result hashes are remembered, so unchanged results are not re-uploaded.",
    )
    poll_interval_s: float = Field(
        default=30.0, gt=0, description="Fallback poll period when the subscription is silent (seconds)."
    )
    expiry_check_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="Period of the check for expired time-relative results and filter registrations (seconds).",
    )
    request_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one HTTP call (seconds).")
    max_attempts: int = Field(default=5, gt=0, description="Attempts per call for transient failures.")
    max_backoff_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest wait between retries of a call, and between start-up connection attempts (seconds).",
    )
    heartbeat_file: str | None = Field(
        default=DEFAULT_HEARTBEAT_FILE,
        description=(
            "File the worker loop touches at least every 15 s and after each user; the container health check "
            "reads its age. One worker process per file (run refuses a file another live worker holds). "
            "Empty = none."
        ),
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto = console on a TTY, JSON otherwise."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info")
    redis_url: str | None = Field(default=None, description="Optional Redis URL for the shared partition cache (L2).")
    cache_max_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Bound of the in-memory partition cache (L1), bytes."
    )
    frame_cache_max_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=0,
        description="Bound of the in-memory cache of merged whole-history frames (extended by appends), bytes.",
    )
    malloc_arena_max: int = Field(
        default=1,
        ge=0,
        description="glibc malloc arenas of the process, set at start-up; 0 = glibc's default (8 per core).",
    )
    malloc_mmap_threshold_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=0,
        le=32 * 1024 * 1024,
        description=(
            "Allocations of at least this many bytes are mapped and unmapped on free (glibc, set at"
            " start-up), bytes; 0 = glibc's dynamic threshold."
        ),
    )
    delta_max_events: int = Field(
        default=50_000,
        ge=0,
        description="Largest append (views) read by change seq and combined with cached months; 0 = never.",
    )

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        """Accept ``DEBUG`` as well as ``debug`` (level and format names are case-insensitive)."""
        return value.lower() if isinstance(value, str) else value

    @field_validator("convex_url")
    @classmethod
    def _no_api_path(cls, value: HttpUrl) -> HttpUrl:
        """Refuse ``…/api``: every call would go to ``…/api/api/query`` and get HTTP 404."""
        _refuse_api_path(str(value))
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        """Refuse a Redis URL redis-py cannot open, at start-up instead of at the first cache access."""
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value or None


_ENV_NAMES = {
    "convex_url": "CONVEX_URL",
    "CONVEX_URL": "CONVEX_URL",
    "convex_admin_key": "CONVEX_ADMIN_KEY (or CONVEX_SELF_HOSTED_ADMIN_KEY / CONVEX_DEPLOY_KEY)",
    "CONVEX_ADMIN_KEY": "CONVEX_ADMIN_KEY (or CONVEX_SELF_HOSTED_ADMIN_KEY / CONVEX_DEPLOY_KEY)",
}


def load_settings(**overrides: object) -> Settings:
    """Build :class:`Settings` from the environment plus explicit overrides.

    Args:
        **overrides: Field values that take precedence over the environment (used by the CLI).

    Returns:
        The validated settings.

    Raises:
        ConfigError: naming every missing or invalid variable, or every setting set under several
            spellings with different values (:func:`conflicting_spellings`).
    """
    conflicts = conflicting_spellings()
    if conflicts:
        raise ConfigError("; ".join(conflicts))
    # An empty CONVEX_* variable counts as unset (docker-compose files often define them empty): an
    # empty CONVEX_ADMIN_KEY must not hide CONVEX_DEPLOY_KEY, nor an empty CONVEX_URL its alias.
    for field, names in (("convex_url", URL_VARIABLES), ("convex_admin_key", KEY_VARIABLES)):
        if field not in overrides and (value := env_first(names)) is not None:
            overrides[field] = value
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            name = _ENV_NAMES.get(field) or _spelling(field if field.isupper() else f"WORKER_{field.upper()}")
            reason = str(err["msg"]).removeprefix("Value error, ")  # a validator's own words
            what = "is not set" if err["type"] == "missing" else f"is invalid: {reason}"
            problems.append(f"{name} {what}")
        raise ConfigError("; ".join(problems)) from None


def _spelling(name: str) -> str:
    """Return ``name`` as it is spelt in the environment (names are read case-insensitively), else as is."""
    if name in os.environ:
        return name
    return next((key for key in sorted(os.environ) if key.upper() == name), name)


def env_setting(name: str) -> str | None:
    """Return the environment variable ``name`` (upper case), matched case-insensitively as settings are read.

    For commands that read one setting without loading them all (``healthcheck``); None when unset.
    """
    return os.environ.get(_spelling(name))


ENV_PREFIX = "WORKER_"
"""Prefix of the worker's own settings in the environment."""


def setting_variables() -> tuple[str, ...]:
    """Return the environment variables read as settings: ``WORKER_<FIELD>`` per field, then the Convex names.

    ``WORKER_CONVEX_URL`` and ``WORKER_CONVEX_ADMIN_KEY`` are included: pydantic-settings reads them
    too (after the standard names), as the fields also accept their own names.
    """
    own = tuple(f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields)
    return (*own, *URL_VARIABLES, *KEY_VARIABLES)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """Find ``WORKER_*`` environment variables that are no setting (a typo such as ``WORKER_PAGESIZE``).

    Settings ignore such variables, so a misspelt one would go unnoticed. Names are compared
    case-insensitively, as settings are read. The suggestion is the setting variable whose name
    after ``WORKER_`` is closest to the unknown name's (:func:`difflib.get_close_matches`, cutoff
    0.6; ``WORKER_CONVEX_DEPLOY_KEY`` suggests ``CONVEX_DEPLOY_KEY``), else the only setting whose
    name contains it as whole words (``WORKER_ID`` suggests ``WORKER_WORKER_ID``).

    Args:
        environ: The environment to check; None reads the process environment.

    Returns:
        ``(name, suggestion)`` per unknown name, in name order, each name once; ``suggestion`` is
        None when no setting is close.
    """
    env = os.environ if environ is None else environ
    known = setting_variables()
    # The standard Convex names come last, so "CONVEX_URL" maps to itself, not to WORKER_CONVEX_URL.
    by_suffix = {name.removeprefix(ENV_PREFIX): name for name in known}
    found: list[tuple[str, str | None]] = []
    for name in sorted(set(env)):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        suffix = upper.removeprefix(ENV_PREFIX)
        close = difflib.get_close_matches(suffix, list(by_suffix), n=1, cutoff=0.6)
        if not close:
            close = [known_suffix for known_suffix in by_suffix if f"_{suffix}_" in f"_{known_suffix}_"]
        found.append((name, by_suffix[close[0]] if len(close) == 1 else None))
    return found


def conflicting_spellings(environ: Mapping[str, str] | None = None) -> list[str]:
    """Find settings set under several spellings with different values (``WORKER_PAGE_SIZE=500`` and
    ``worker_page_size=800``).

    Settings are read case-insensitively, so which spelling wins would depend on the order of the
    environment: :func:`load_settings` refuses the environment instead. Spellings with the same value
    are not a conflict.

    Args:
        environ: The environment to check; None reads the process environment.

    Returns:
        One message per conflicting setting, naming every spelling, in name order; empty when none.
    """
    env = os.environ if environ is None else environ
    known = set(setting_variables())
    spellings: dict[str, list[str]] = {}
    for name in sorted(env):
        if name.upper() in known:
            spellings.setdefault(name.upper(), []).append(name)
    return [
        f"{', '.join(names[:-1])} and {names[-1]} are {'both' if len(names) == 2 else 'all'} set, to different"
        " values (names are read case-insensitively): keep one"
        for _, names in sorted(spellings.items())
        if len({env[n] for n in names}) > 1
    ]


def env_first(names: tuple[str, ...]) -> str | None:
    """Return the value of the first of ``names`` set (non-empty) in the environment, or None."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def check_deployment_url(url: str, *, source: str = "CONVEX_URL") -> str:
    """Return ``url`` when it is a valid deployment URL (http or https, with a host), as ``CONVEX_URL`` must be.

    A URL whose path ends in ``/api`` is refused too: the gateway appends ``/api/query`` etc. itself,
    so it would call ``…/api/api/query`` and get HTTP 404 for every function.

    Args:
        url: The URL to check.
        source: Where it came from, named in the message (``CONVEX_URL``, ``--url``, ...).

    Raises:
        ConfigError: naming ``source`` and what is wrong (same wording as :func:`load_settings`).
    """
    from pydantic import TypeAdapter

    try:
        TypeAdapter(HttpUrl).validate_python(url)
    except ValidationError as exc:
        raise ConfigError(f"{source} is invalid: {exc.errors()[0]['msg']}") from None
    try:
        _refuse_api_path(url)
    except ValueError as exc:
        raise ConfigError(f"{source} is invalid: {exc}") from None
    return url


def _refuse_api_path(url: str) -> None:
    """Raise ValueError when ``url``'s path ends in ``/api`` (the deployment URL must not include it)."""
    from urllib.parse import urlsplit

    path = urlsplit(url).path.rstrip("/")
    if path == "/api" or path.endswith("/api"):
        base = url[: url.rstrip("/").rfind("/api")]
        raise ValueError(f"the deployment URL must not include /api (use {base})")
