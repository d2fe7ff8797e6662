"""Property tests: no input, however malformed, escapes as anything but TakeoutFormatError."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.takeout import TakeoutFormatError, parse_takeout_bytes

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "header",
        "title",
        "titleUrl",
        "subtitles",
        "details",
        "time",
        "products",
        "kind",
        "snippet",
        "contentDetails",
    ]
)
_entries = st.dictionaries(_keys, _json_values, max_size=7)


def _parse_or_format_error(data: bytes) -> None:
    try:
        result = parse_takeout_bytes(data, name="fuzz")
    except TakeoutFormatError as exc:
        assert str(exc).startswith("fuzz")
        return
    accounted = len(result.views) + sum(result.non_views.values()) + len(result.rejected)
    assert accounted == result.total_entries


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    """Random bytes parse or raise TakeoutFormatError."""
    _parse_or_format_error(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(_entries, max_size=6))
def test_arbitrary_record_shapes(entries: list[dict[str, Any]]) -> None:
    """Arrays of objects with known keys and any values: every entry is a view, non-view or rejection."""
    _parse_or_format_error(json.dumps(entries).encode())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="<>/=\"' abcdivlsrhefcontent-cellbody-1Watched0123:,APM", max_size=80), max_size=6))
def test_arbitrary_markup(parts: list[str]) -> None:
    """Tag soup around content-cell divs parses or raises TakeoutFormatError."""
    body = "".join(f'<div class="content-cell mdl-typography--body-1">{p}</div>' for p in parts)
    _parse_or_format_error(("<html><body>" + body).encode())
