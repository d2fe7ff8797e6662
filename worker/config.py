"""Worker settings, read once from the environment (the only reader of environment variables).

Standard Convex variable names are accepted for the deployment (``CONVEX_URL`` or
``CONVEX_SELF_HOSTED_URL``; ``CONVEX_ADMIN_KEY``, ``CONVEX_SELF_HOSTED_ADMIN_KEY`` or
``CONVEX_DEPLOY_KEY``); the worker's own knobs use the ``WORKER_`` prefix.
"""

from __future__ import annotations

import difflib
import os
import socket
import unicodedata
from collections.abc import Mapping
from typing import Literal

from pydantic import AliasChoices, Field, HttpUrl, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError
from worker.models import utf16_length

URL_VARIABLES = ("CONVEX_URL", "CONVEX_SELF_HOSTED_URL")
"""Environment variables read for the deployment URL, first match wins."""
KEY_VARIABLES = ("CONVEX_ADMIN_KEY", "CONVEX_SELF_HOSTED_ADMIN_KEY", "CONVEX_DEPLOY_KEY")
"""Environment variables read for the admin/deploy key, first match wins."""
DEFAULT_HEARTBEAT_FILE = "/tmp/watch-worker.heartbeat"
"""Heartbeat file of ``run`` and ``healthcheck`` when ``WORKER_HEARTBEAT_FILE`` is not set: one per host
(a container runs one replica, its health check in the same container). ``run`` refuses to start while
another live worker holds it (:mod:`worker.heartbeat`)."""

MAX_LEASE_MS = 3_600_000
"""Longest lease the deployment grants, ms (1 h): ``MAX_LEASE_MS`` in ``convex/worker.ts``, which refuses
a longer ``leaseMs`` at every claim. ``WORKER_LEASE_MS`` is checked against it at start-up."""
MAX_WORKER_ID_LENGTH = 256
"""Longest worker id the deployment accepts, in UTF-16 code units as JavaScript counts a string's
length (characters, but for those outside the Basic Multilingual Plane, which count 2):
``MAX_WORKER_ID_LENGTH`` in ``convex/worker.ts``, which refuses a longer or empty ``workerId`` at every
call. ``WORKER_WORKER_ID`` is checked against it at start-up."""
ALIASES: Mapping[str, tuple[str, ...]] = {
    "convex_url": (*URL_VARIABLES, "WORKER_CONVEX_URL"),
    "convex_admin_key": (*KEY_VARIABLES, "WORKER_CONVEX_ADMIN_KEY"),
}
"""Every environment variable read for the deployment URL and for the key, in the order they are tried.

Each group names one setting: two of its variables set (non-blank) to different values are refused
(:func:`conflicting_spellings`), and a blank one counts as unset, so that it cannot hide the next.
"""
_ALIAS_MEANING: Mapping[str, str] = {"convex_url": "the deployment URL", "convex_admin_key": "the admin key"}
_GROUP_OF: Mapping[str, str] = {name: field for field, names in ALIASES.items() for name in names}

ASCII_WHITESPACE = " \t\n\r\x0b\x0c"
"""Characters stripped from both ends of a key or token (``str.strip()`` would strip Unicode spaces too)."""

_CHARACTER_NAMES: Mapping[str, str] = {
    "\n": "line feed (U+000A)",
    "\r": "carriage return (U+000D)",
    "\t": "tab (U+0009)",
    " ": "space (U+0020)",
    "\x00": "NUL (U+0000)",
}


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Configuration of one worker replica.

    Raises:
        pydantic.ValidationError: from the constructor; use :func:`load_settings` for a
            :class:`~worker.errors.ConfigError` that names the missing or invalid variable.
    """

    # allow_inf_nan=False: inf, 1e400 and nan are refused for every real-number setting (an infinite poll
    # interval or timeout would never fire; nan is no duration at all)
    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore", populate_by_name=True, allow_inf_nan=False)

    convex_url: HttpUrl = Field(
        validation_alias=AliasChoices(*URL_VARIABLES, "convex_url"),
        description="Deployment URL, e.g. https://happy-otter-123.convex.cloud or http://127.0.0.1:3210.",
    )
    convex_admin_key: SecretStr = Field(
        validation_alias=AliasChoices(*KEY_VARIABLES, "convex_admin_key"),
        description=(
            "Admin or deploy key; lets the worker call internal functions. Never logged. Leading and trailing"
            " ASCII whitespace is ignored (a newline or CR left by $(cat keyfile)); whitespace or a control"
            " character inside the key is refused, naming its position, never the key."
        ),
    )
    worker_id: str = Field(
        default_factory=_default_worker_id,
        description=(
            f"Lease owner name of this replica, 1-{MAX_WORKER_ID_LENGTH} characters; defaults to <hostname>-<pid>."
        ),
    )
    lease_ms: int = Field(
        default=60_000,
        description=(
            f"Per-user lease duration in milliseconds, 1-{MAX_LEASE_MS}; renewed every third of it while the user"
            " is recomputed."
        ),
    )
    debounce_ms: int = Field(
        default=0,
        ge=0,
        le=60_000,
        description=(
            "Wait after a wake-up before reading pending changes (ms, at most 60000: longer would"
            " break the freshness target by itself). Changes committed while a user is recomputed are"
            " coalesced into its next claim anyway; set this only when writers commit bursts faster"
            " than that and each change should not start a recompute."
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
    max_user_s: float = Field(
        default=900.0,
        gt=0,
        description=(
            "Longest a replica vouches for one user's recompute (seconds): past it the heartbeat is no longer"
            " touched and the lease no longer renewed, so a recompute stuck in a thread ends in an unhealthy"
            " container and lets another replica claim the user. A cold 1M-view recompute takes about a minute."
        ),
    )
    max_attempts: int = Field(
        default=5, gt=0, le=100, description="Attempts per call for transient failures (at most 100)."
    )
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
        description=(
            "Bound of the in-memory cache of merged whole-history frames and the engine's incremental states"
            " kept with them (both extended by appends), bytes."
        ),
    )
    malloc_arena_max: int = Field(
        default=1,
        ge=0,
        le=1024,
        description=(
            "glibc malloc arenas of the process, set at start-up (at most 1024); 0 = glibc's default (8 per core)."
        ),
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
    gc_gen0_threshold: int = Field(
        default=50_000,
        ge=0,
        le=10_000_000,
        description=(
            "Container allocations between young garbage collections (Python's gc threshold 0, set at"
            " start-up); 0 = CPython's default (700)."
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

    @field_validator("lease_ms")
    @classmethod
    def _lease_bounds(cls, value: int) -> int:
        """Refuse a lease the deployment would refuse at every claim (``worker:claimUser``: 1 ms to 1 h)."""
        if not 1 <= value <= MAX_LEASE_MS:
            raise ValueError(f"must be 1-{MAX_LEASE_MS} ms (the deployment grants leases of 1 ms to 1 h), got {value}")
        return value

    @field_validator("worker_id")
    @classmethod
    def _worker_id_length(cls, value: str) -> str:
        """Refuse a worker id the deployment would refuse at every claim: empty, or longer than it accepts."""
        length = utf16_length(value)
        if length == 0:
            raise ValueError(
                f"an empty id names no replica: set 1-{MAX_WORKER_ID_LENGTH} characters, or unset it for the"
                " default <host>-<pid>"
            )
        if length > MAX_WORKER_ID_LENGTH:
            raise ValueError(f"must be 1-{MAX_WORKER_ID_LENGTH} characters, got {length}")
        if not value.strip():
            raise ValueError("only whitespace: it names no replica in the logs and leases")
        bad = next((i for i, ch in enumerate(value) if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")), None)
        if bad is not None:
            raise ValueError(
                f"character {bad + 1} is a control character (U+{ord(value[bad]):04X}): an id is one printable line"
            )
        return value

    @field_validator("convex_admin_key", mode="before")
    @classmethod
    def _clean_key(cls, value: object) -> object:
        """Strip surrounding ASCII whitespace; refuse a blank key or one with whitespace or control characters inside.

        The key goes into an HTTP header, where a CR or LF is illegal: left in, every call would fail
        with an error quoting the header, key included.
        """
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            cleaned = clean_secret(value)
            if not cleaned:
                raise ValueError("is empty")
            return cleaned
        return value

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

    The deployment URL and key are read from the first non-blank variable of their :data:`ALIASES`
    group; a group whose variables are all blank is refused as "set but empty".

    Args:
        **overrides: Field values that take precedence over the environment (used by the CLI).

    Returns:
        The validated settings.

    Raises:
        ConfigError: naming every missing, empty or invalid variable (never a key's value), or every
            setting set under several spellings or aliases with different values (:func:`conflicting_spellings`).
    """
    conflicts = conflicting_spellings(skip=tuple(field for field in ALIASES if field in overrides))
    if conflicts:
        raise ConfigError("; ".join(conflicts))
    # An empty CONVEX_* variable counts as unset (docker-compose files often define them empty): an
    # empty CONVEX_ADMIN_KEY must not hide CONVEX_DEPLOY_KEY, nor an empty CONVEX_URL its alias.
    sources: dict[str, str] = {}
    blank: set[str] = set()
    for field in ALIASES:
        if field in overrides or (found := deployment_variable(field)) is None:
            continue
        sources[field], value = found
        overrides[field] = value
        if not value.strip(ASCII_WHITESPACE):
            blank.add(field)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            if field in blank:
                problems.append(f"{sources[field]} is set but empty")
                continue
            name = (
                sources.get(field)
                or _ENV_NAMES.get(field)
                or _spelling(field if field.isupper() else f"WORKER_{field.upper()}")
            )
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


def conflicting_spellings(environ: Mapping[str, str] | None = None, *, skip: tuple[str, ...] = ()) -> list[str]:
    """Find settings set under several spellings or aliases with different values (``WORKER_PAGE_SIZE=500``
    and ``worker_page_size=800``; ``CONVEX_URL`` and ``CONVEX_SELF_HOSTED_URL`` naming two deployments).

    Settings are read case-insensitively, and the deployment URL and key each under several names
    (:data:`ALIASES`), so which value wins would depend on the order of the environment or of the
    names: :func:`load_settings` refuses the environment instead. Spellings with the same value are
    not a conflict; for the URL and key, a blank variable counts as unset and values are compared
    without surrounding whitespace (and a URL without its trailing ``/``). No value is printed.

    Args:
        environ: The environment to check; None reads the process environment.
        skip: Alias groups to leave out (``"convex_url"``, ``"convex_admin_key"``): those given otherwise.

    Returns:
        One message per conflicting setting, naming every spelling, in name order; empty when none.
    """
    return sorted(message for group, message in _conflicts(environ).items() if group not in skip)


def _conflicts(environ: Mapping[str, str] | None) -> dict[str, str]:
    """Return the message of each conflicting setting, keyed by its alias group or its upper-case name."""
    env = os.environ if environ is None else environ
    known = set(setting_variables())
    groups: dict[str, list[str]] = {}
    for name in sorted(env):
        if name.upper() in known:
            groups.setdefault(_GROUP_OF.get(name.upper(), name.upper()), []).append(name)
    found: dict[str, str] = {}
    for group, spelt in groups.items():
        names, values = _alias_values(group, spelt, env) if group in ALIASES else (spelt, [env[n] for n in spelt])
        if len(set(values)) < 2:
            continue
        if len({name.upper() for name in names}) == 1:
            why = "names are read case-insensitively"
        else:
            why = f"{'both' if len(names) == 2 else 'all'} are read as {_ALIAS_MEANING[group]}"
        found[group] = (
            f"{', '.join(names[:-1])} and {names[-1]} are {'both' if len(names) == 2 else 'all'} set, to different"
            f" values ({why}): keep one"
        )
    return found


def _alias_values(field: str, names: list[str], env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Return the non-blank variables of an alias group in reading order, and their values as compared."""
    order = ALIASES[field]
    kept = sorted((n for n in names if env[n].strip(ASCII_WHITESPACE)), key=lambda n: (order.index(n.upper()), n))
    values = [env[n].strip(ASCII_WHITESPACE) for n in kept]
    if field == "convex_url":
        values = [value.rstrip("/") for value in values]
    return kept, values


def deployment_variable(field: str) -> tuple[str, str] | None:
    """Return the variable the deployment URL or key is read from, as it is spelt, and its value.

    The variables of the field's :data:`ALIASES` group are tried in order (each in any case, as
    settings are read); the first non-blank one is the answer.

    Args:
        field: ``"convex_url"`` or ``"convex_admin_key"``.

    Returns:
        ``(variable, value)``; the value is blank (``""``) when every variable of the group that is set
        is blank (the setting is set but empty); None when none is set.

    Raises:
        ConfigError: two variables of the group are set to different values, naming both.
    """
    conflict = _conflicts(None).get(field)
    if conflict is not None:
        raise ConfigError(conflict)
    first_blank: tuple[str, str] | None = None
    for name in ALIASES[field]:
        for spelling in sorted(key for key in os.environ if key.upper() == name):
            value = os.environ[spelling]
            if value.strip(ASCII_WHITESPACE):
                return spelling, value
            first_blank = first_blank or (spelling, "")
    return first_blank


def clean_secret(value: str) -> str:
    """Return an admin key or token without surrounding ASCII whitespace, or refuse it.

    ``CONVEX_ADMIN_KEY=$(cat keyfile)`` keeps a CR when the file has Windows line endings, and keys
    pasted with a newline are common: surrounding whitespace is therefore dropped silently. Anything
    else that cannot be part of a key (whitespace or a control character inside it, a non-ASCII
    character) is refused: in an HTTP header it would make every call fail with an error quoting the
    header, key included.

    Args:
        value: The key or token as given.

    Returns:
        The key without surrounding ASCII whitespace ("" for a blank value).

    Raises:
        ValueError: naming the position (1-based, in ``value``) and kind of the first bad character,
            never the value itself.
    """
    stripped = value.strip(ASCII_WHITESPACE)
    start = len(value) - len(value.lstrip(ASCII_WHITESPACE))
    for index, char in enumerate(stripped, start=start + 1):
        if char.isascii() and char.isprintable() and not char.isspace():
            continue
        where = f"character {index} of {len(value)}"
        if not char.isascii() and char.isprintable() and not char.isspace():
            raise ValueError(f"{where} is not ASCII; keys and tokens are ASCII text")
        if char in _CHARACTER_NAMES:
            kind = _CHARACTER_NAMES[char]
        else:
            kind = f"{'whitespace' if char.isspace() else 'control'} character (U+{ord(char):04X})"
        raise ValueError(
            f"{where} is a {kind}: a key or token holds no whitespace or control character"
            " (whitespace around it is ignored)"
        )
    return stripped


def check_deployment_url(url: str, *, source: str = "CONVEX_URL") -> str:
    """Return ``url`` without surrounding whitespace when it is a valid deployment URL (http or https, with a host).

    A URL whose path ends in ``/api`` is refused too: the gateway appends ``/api/query`` etc. itself,
    so it would call ``…/api/api/query`` and get HTTP 404 for every function.

    Args:
        url: The URL to check.
        source: Where it came from, named in the message (``CONVEX_URL``, ``--url``, ...).

    Raises:
        ConfigError: naming ``source`` and what is wrong (same wording as :func:`load_settings`).
    """
    from pydantic import TypeAdapter

    url = url.strip(ASCII_WHITESPACE)
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
