"""Date lines of HTML exports → epoch ms UTC, independent of the process locale.

Source: ``docs/takeout-formats.md`` §4.3. Month names come from our own table (English, German,
Dutch, Spanish; Japanese and German dates are numeric), never from ``strptime('%b')``.

Time-zone labels are read as the **fixed offset** of the label (AEDT is always +11:00, even for
dates when Sydney was on AEST), because the label is the zone at export time and the printed wall
time is consistent with that fixed offset. A date with no label is UTC. ``GMT+03:00``,
``GMT-5``, ``UTC+05:30`` are accepted.

Ambiguous labels use these defaults (the caller is told through :data:`AMBIGUOUS_LABELS`):

* ``IST`` → India Standard Time, +05:30 (not Irish Summer Time +01:00 or Israel +02:00);
* ``BST`` → British Summer Time, +01:00 (not Bangladesh +06:00);
* ``CST`` → US Central Standard Time, −06:00 (not China +08:00).
"""

from __future__ import annotations

import re
from typing import Final

from worker.takeout.rules import epoch_ms, normalize_spaces, utc_offset_ms

_H: Final = 3_600_000
_M: Final = 60_000

ZONE_OFFSETS_MS: Final[dict[str, int]] = {
    "UTC": 0,
    "GMT": 0,
    "Z": 0,
    "WET": 0,
    "WEST": _H,
    "EST": -5 * _H,
    "EDT": -4 * _H,
    "CST": -6 * _H,
    "CDT": -5 * _H,
    "MST": -7 * _H,
    "MDT": -6 * _H,
    "PST": -8 * _H,
    "PDT": -7 * _H,
    "AKST": -9 * _H,
    "AKDT": -8 * _H,
    "HST": -10 * _H,
    "AST": -4 * _H,
    "ADT": -3 * _H,
    "NST": -(3 * _H + 30 * _M),
    "NDT": -(2 * _H + 30 * _M),
    "BST": _H,
    "IST": 5 * _H + 30 * _M,
    "CET": _H,
    "CEST": 2 * _H,
    "MEZ": _H,
    "MESZ": 2 * _H,
    "EET": 2 * _H,
    "EEST": 3 * _H,
    "MSK": 3 * _H,
    "PKT": 5 * _H,
    "WIB": 7 * _H,
    "WITA": 8 * _H,
    "WIT": 9 * _H,
    "SGT": 8 * _H,
    "HKT": 8 * _H,
    "PHT": 8 * _H,
    "AWST": 8 * _H,
    "JST": 9 * _H,
    "KST": 9 * _H,
    "ACST": 9 * _H + 30 * _M,
    "ACDT": 10 * _H + 30 * _M,
    "AEST": 10 * _H,
    "AEDT": 11 * _H,
    "NZST": 12 * _H,
    "NZDT": 13 * _H,
}
"""Fixed UTC offset (ms) of each accepted zone label."""

AMBIGUOUS_LABELS: Final[dict[str, str]] = {
    "IST": "IST read as India Standard Time (UTC+05:30)",
    "BST": "BST read as British Summer Time (UTC+01:00)",
    "CST": "CST read as US Central Standard Time (UTC-06:00)",
}
"""Labels with more than one meaning, and the default chosen for each."""

MONTHS: Final[dict[str, int]] = {}
for _number, _names in enumerate(
    (
        "jan january januar januari ene enero jän jänner",
        "feb february februar februari febrero",
        "mar march mär märz maart mrt marzo",
        "apr april abr abril",
        "may mai mei mayo",
        "jun june juni junio",
        "jul july juli julio",
        "aug august augustus ago agosto",
        "sep sept september septiembre setiembre set",
        "oct october okt oktober octubre",
        "nov november noviembre",
        "dec december dez dezember dic diciembre",
    ),
    start=1,
):
    for _name in _names.split():
        MONTHS[_name] = _number

_TIME: Final = (
    r"(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?"
    r"(?: ?(?P<ampm>[AaPp]\.? ?[Mm]\.?))?(?: (?P<zone>[A-Za-z]{1,5}(?:[+-]\d{1,2}(?::?\d{2})?)?))?"
)
_DATE_RES: Final = (
    # Aug 15, 2025, 11:04:01 AM CDT  (en-US)
    re.compile(r"(?P<mon>[^\W\d_]{3,})\.? (?P<d>\d{1,2}), (?P<y>\d{4}),? " + _TIME),
    # 29 Nov 2021, 18:06:16 AEDT / 15 jun 2026, 20:30:41 CEST / 13 ago 2026, …
    re.compile(r"(?P<d>\d{1,2})\.? (?P<mon>[^\W\d_]{3,})\.? (?P<y>\d{4}),? " + _TIME),
    # 01.09.2022, 21:08:12 MESZ (de)
    re.compile(r"(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4}),? " + _TIME),
    # 2024/01/04 10:00:00 JST (ja), 2010-11-10 19:49:05 UTC
    re.compile(r"(?P<y>\d{4})[/-](?P<m>\d{1,2})[/-](?P<d>\d{1,2}),? " + _TIME),
)
_OFFSET_RE: Final = re.compile(r"(?:GMT|UTC)([+-])(\d{1,2})(?::?(\d{2}))?")


class DateError(ValueError):
    """A line looks like a date but cannot be converted (unknown zone label, impossible date)."""


def zone_offset_ms(label: str | None) -> int:
    """Return the fixed offset (ms east of UTC) of a zone label; None/empty is UTC.

    Raises:
        DateError: for a label not in :data:`ZONE_OFFSETS_MS` and not of the ``GMT±hh[:mm]`` form, or
            an offset past ±14:00 or with 60 minutes or more (:data:`~worker.takeout.rules.MAX_UTC_OFFSET_MS`).
    """
    if not label:
        return 0
    upper = label.upper()
    if upper in ZONE_OFFSETS_MS:
        return ZONE_OFFSETS_MS[upper]
    match = _OFFSET_RE.fullmatch(upper)
    if match is None:
        raise DateError(f"unknown time-zone label {label!r}")
    offset = utc_offset_ms(match.group(1), match.group(2), match.group(3))
    if offset is None:
        raise DateError(f"time-zone label {label!r} is no UTC offset (at most ±14:00)")
    return offset


def parse_html_date(line: str) -> tuple[int, str | None] | None:
    """Parse one HTML date line.

    Args:
        line: A text line such as ``"Aug 15, 2025, 11:04:01\\u202fAM CDT"``.

    Returns:
        ``(epoch_ms_utc, zone_label_or_None)``, or None when the line is not a date (for example
        ``"Watched at 11:42 PM"`` or a channel name).

    Raises:
        DateError: when the line has a date shape but an unknown month, an unknown zone label or
            impossible values.
    """
    text = " ".join(normalize_spaces(line).split())
    if not text or not any(ch.isdigit() for ch in text):
        return None
    for pattern in _DATE_RES:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        groups = match.groupdict()
        if groups.get("mon") is not None:
            month = MONTHS.get(groups["mon"].lower())
            if month is None:
                raise DateError(f"unknown month name {groups['mon']!r} in {text!r}")
        else:
            month = int(groups["m"])
        hour = int(groups["h"])
        ampm = groups["ampm"]
        if ampm is not None:
            if not 1 <= hour <= 12:
                raise DateError(f"hour {hour} with {ampm} in {text!r}")
            hour = hour % 12 + (12 if ampm[0] in "Pp" else 0)
        zone = groups["zone"]
        try:
            local_ms = epoch_ms(
                int(groups["y"]), month, int(groups["d"]), hour, int(groups["mi"]), int(groups["s"] or 0)
            )
        except ValueError as exc:
            raise DateError(f"impossible date {text!r}: {exc}") from None
        return local_ms - zone_offset_ms(zone), zone.upper() if zone else None
    return None
