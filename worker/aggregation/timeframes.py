"""Local-time calendar arithmetic and timeframe windows. Pure: no I/O, no clock (``now_ms`` is an input).

Conventions used across the engine:

* ``epoch day``: number of local calendar days since 1970-01-01 (local date ordinal, int).
* ``month index``: ``year * 12 + (month - 1)`` of a local date (e.g. 2024-03 → 24290).
* The start of a local day/month is its first existing instant: local midnight, or the end of
  the DST gap when midnight does not exist (``zoneinfo`` with ``fold=0`` gives exactly that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "TIMEFRAMES",
    "Timeframe",
    "Clock",
    "Window",
    "load_zone",
    "make_clock",
    "resolve_window",
    "offset_ms_at",
    "day_start_ms",
    "month_start_ms",
    "month_label",
    "EPOCH_ORDINAL",
    "DAY_MS",
    "HOUR_MS",
    "MINUTE_MS",
]

Timeframe = Literal["MTD", "QTD", "YTD", "Last6M", "Last12M", "All"]
TIMEFRAMES: tuple[Timeframe, ...] = ("MTD", "QTD", "YTD", "Last6M", "Last12M", "All")

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_ONE_MS = timedelta(milliseconds=1)
MIN_MS = 0
"""Earliest accepted instant (1970-01-01T00:00Z)."""
MAX_MS = 253_402_214_400_000 - 1
"""Latest accepted instant (9999-12-30T23:59:59.999Z; a day short of the datetime limit, for offsets)."""
MAX_NOW_MS = 253_370_678_400_000 - 1
"""Latest accepted ``now`` (9998-12-30T23:59:59.999Z): a year short of ``MAX_MS``, so that every
window boundary a result reports (next midnight, month, quarter and year start) is a date too."""


def load_zone(time_zone: str) -> ZoneInfo:
    """Return the ``ZoneInfo`` for an IANA name.

    Raises:
        ValueError: ``time_zone`` is not a known IANA zone (message names ``time_zone``).
    """
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"time_zone: unknown IANA time zone {time_zone!r}") from exc


def check_instant(name: str, value_ms: int) -> None:
    """Raise ValueError naming ``name`` unless ``MIN_MS <= value_ms <= MAX_MS``."""
    if not MIN_MS <= value_ms <= MAX_MS:
        raise ValueError(f"{name}: {value_ms} ms is outside the supported range [{MIN_MS}, {MAX_MS}]")


def offset_ms_at(instant_ms: int, zone: ZoneInfo) -> int:
    """Return the zone's UTC offset (ms, local − UTC) in force at an instant (epoch ms UTC)."""
    local = datetime.fromtimestamp(instant_ms // 1000, tz=zone)
    offset = local.utcoffset()
    return 0 if offset is None else offset // _ONE_MS


def day_start_ms(epoch_day: int, zone: ZoneInfo) -> int:
    """Return the first instant (epoch ms UTC) of a local calendar day, DST-correct."""
    d = date.fromordinal(epoch_day + EPOCH_ORDINAL)
    offset = datetime(d.year, d.month, d.day, tzinfo=zone).utcoffset()
    return epoch_day * DAY_MS - (0 if offset is None else offset // _ONE_MS)


def month_first_day(month_index: int) -> int:
    """Return the epoch day of the first day of a month index."""
    return date(month_index // 12, month_index % 12 + 1, 1).toordinal() - EPOCH_ORDINAL


def month_start_ms(month_index: int, zone: ZoneInfo) -> int:
    """Return the first instant (epoch ms UTC) of a local calendar month."""
    return day_start_ms(month_first_day(month_index), zone)


def month_label(month_index: int) -> str:
    """Return ``"YYYY-MM"`` for a month index."""
    return f"{month_index // 12:04d}-{month_index % 12 + 1:02d}"


def shift_year_back(epoch_day: int) -> int:
    """Return the same calendar date one year earlier (29 Feb → 28 Feb), as an epoch day."""
    d = date.fromordinal(epoch_day + EPOCH_ORDINAL)
    day = 28 if (d.month == 2 and d.day == 29) else d.day
    return date(d.year - 1, d.month, day).toordinal() - EPOCH_ORDINAL


@dataclass(frozen=True, slots=True)
class Clock:
    """The instant of computation, in the user's zone.

    Attributes:
        now_ms: The instant (epoch ms UTC).
        zone: The user's zone.
        today: Local epoch day of ``now_ms``.
        month: Local month index of ``now_ms``.
        next_midnight_ms: First instant of the next local day (epoch ms UTC).
        next_month_ms: First instant of the next local month (epoch ms UTC).
        recent_start_ms: First instant of the local day 29 days before today: the
            "last 30 days" window is ``[recent_start_ms, +inf)`` (30 local days including today).
    """

    now_ms: int
    zone: ZoneInfo
    today: int
    month: int
    next_midnight_ms: int
    next_month_ms: int
    recent_start_ms: int


def make_clock(now_ms: int, zone: ZoneInfo, recent_days: int = 30) -> Clock:
    """Build the ``Clock`` for ``now_ms`` (epoch ms UTC) in ``zone``.

    Raises:
        ValueError: ``now_ms`` outside ``MIN_MS`` … ``MAX_NOW_MS`` (message names ``now_ms``).
    """
    check_instant("now_ms", now_ms)
    if now_ms > MAX_NOW_MS:
        raise ValueError(f"now_ms: {now_ms} ms is after the latest supported now, {MAX_NOW_MS} (9998-12-30)")
    local_ms = now_ms + offset_ms_at(now_ms, zone)
    today = local_ms // DAY_MS
    d = date.fromordinal(today + EPOCH_ORDINAL)
    month = d.year * 12 + d.month - 1
    return Clock(
        now_ms=now_ms,
        zone=zone,
        today=today,
        month=month,
        next_midnight_ms=day_start_ms(today + 1, zone),
        next_month_ms=month_start_ms(month + 1, zone),
        recent_start_ms=day_start_ms(today - (recent_days - 1), zone),
    )


@dataclass(frozen=True, slots=True)
class Window:
    """A resolved timeframe.

    Attributes:
        timeframe: The timeframe name.
        start_month: First local month index included, or None for ``All``.
        start_ms: First instant included (epoch ms UTC), or None for ``All``. The window is
            ``[start_ms, +inf)``: views after ``now`` (clock skew) are included in every timeframe.
        next_change_ms: First instant at which the window start moves (epoch ms UTC), or None for ``All``.
    """

    timeframe: Timeframe
    start_month: int | None
    start_ms: int | None
    next_change_ms: int | None


def resolve_window(timeframe: Timeframe, clock: Clock) -> Window:
    """Resolve a timeframe against the clock.

    MTD starts at the current local month, QTD at the current calendar quarter (Jan/Apr/Jul/Oct),
    YTD at January, Last6M at the current month − 5 and Last12M at the current month − 11
    (month-aligned: the current partial month plus 5 resp. 11 whole previous months).
    """
    m = clock.month
    if timeframe == "All":
        return Window(timeframe, None, None, None)
    if timeframe == "MTD":
        start, change = m, m + 1
    elif timeframe == "QTD":
        start = m - (m % 12) % 3
        change = start + 3
    elif timeframe == "YTD":
        start = m - m % 12
        change = start + 12
    elif timeframe == "Last6M":
        start, change = m - 5, m + 1
    elif timeframe == "Last12M":
        start, change = m - 11, m + 1
    else:  # pragma: no cover - guarded by FilterSet validation
        raise ValueError(f"timeframe: unknown timeframe {timeframe!r}")
    return Window(timeframe, start, month_start_ms(start, clock.zone), month_start_ms(change, clock.zone))
