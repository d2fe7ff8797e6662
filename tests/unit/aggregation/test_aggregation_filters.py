"""FilterSet canonical keys, parsing and validation; the topic classifier."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.aggregation import AGGREGATION_TYPES, EAGER_FILTER_SETS, TOPIC_SLUGS, FilterSet, classify_topic
from worker.aggregation.filters import MAX_FILTER_VALUE_LENGTH, MAX_FILTER_VALUES

CONVEX_FILTERS = Path(__file__).resolve().parents[3] / "convex" / "filters.ts"


class TestFilterSet:
    """FilterSet keys follow docs/architecture.md and do not depend on list order."""

    @pytest.mark.parametrize(
        ("filters", "key"),
        [
            ({"timeframe": "All", "product": "all"}, "All|all||"),
            ({}, "All|all||"),
            (
                {"timeframe": "Last6M", "product": "youtube_music", "topics": ["music", "gaming", "music"]},
                "Last6M|youtube_music|gaming,music|",
            ),
            (
                {"timeframe": "MTD", "product": "youtube", "channels": ["UCz", "UCa"], "topics": []},
                "MTD|youtube||UCa,UCz",
            ),
        ],
    )
    def test_keys(self, filters: dict, key: str) -> None:
        """from_dict gives the documented canonical key and round-trips through to_dict."""
        fs = FilterSet.from_dict(filters)
        assert fs.key == key
        assert FilterSet.from_dict(fs.to_dict()) == fs

    @settings(max_examples=30)
    @given(st.lists(st.sampled_from(["UCa", "UCb", "UCc", "UCd"]), max_size=8), st.randoms())
    def test_order_independent(self, channels: list[str], rnd: object) -> None:
        """Any permutation (with duplicates) of the lists yields the same key."""
        shuffled = list(channels)
        rnd.shuffle(shuffled)  # type: ignore[attr-defined]
        assert (
            FilterSet("All", "all", channels=tuple(channels)).key
            == FilterSet("All", "all", channels=tuple(shuffled)).key
        )

    @pytest.mark.parametrize(
        ("filters", "field"),
        [
            ({"timeframe": "Weekly", "product": "all"}, "timeframe"),
            ({"timeframe": "All", "product": "tiktok"}, "product"),
            ({"timeframe": "All", "product": "all", "topics": "music"}, "topics"),
            ({"timeframe": "All", "product": "all", "channels": [""]}, "channels"),
            ({"timeframe": "All", "product": "all", "channels": ["a,b"]}, "channels"),
            ({"timeframe": "All", "product": "all", "extra": 1}, "filters"),
        ],
    )
    def test_invalid(self, filters: dict, field: str) -> None:
        """Invalid input raises ValueError naming the field."""
        with pytest.raises(ValueError, match=f"^{field}"):
            FilterSet.from_dict(filters)

    @pytest.mark.parametrize("name", ["MAX_FILTER_VALUES", "MAX_FILTER_VALUE_LENGTH"])
    def test_limits_equal_the_convex_ones(self, name: str) -> None:
        """The list limits are the ones normalizeFilters in convex/filters.ts enforces for clients."""
        source = CONVEX_FILTERS.read_text(encoding="utf-8")
        match = re.search(rf"^export const {name} = (\d+);$", source, flags=re.MULTILINE)
        assert match is not None, f"{name} not found in {CONVEX_FILTERS}"
        python = {"MAX_FILTER_VALUES": MAX_FILTER_VALUES, "MAX_FILTER_VALUE_LENGTH": MAX_FILTER_VALUE_LENGTH}[name]
        assert python == int(match.group(1)), f"{name}: worker/aggregation/filters.py and convex/filters.ts differ"

    @pytest.mark.parametrize("field", ["topics", "channels"])
    def test_list_limits(self, field: str) -> None:
        """50 values of 128 characters pass; a 51st value (even a duplicate) or a 129th character is refused."""
        values = [f"{i:03d}".ljust(MAX_FILTER_VALUE_LENGTH, "x") for i in range(MAX_FILTER_VALUES)]
        assert len(getattr(FilterSet.from_dict({field: values}), field)) == 50
        with pytest.raises(ValueError, match=f"^{field}: 51 values; at most 50 are allowed"):
            FilterSet.from_dict({field: [*values, values[0]]})
        with pytest.raises(ValueError, match=f"^{field}: item .* longer than 128 UTF-16 code units"):
            FilterSet.from_dict({field: ["y" * (MAX_FILTER_VALUE_LENGTH + 1)]})

    @pytest.mark.parametrize("field", ["topics", "channels"])
    def test_length_counts_utf16_units(self, field: str) -> None:
        """Length is counted as JavaScript (Convex) counts it: an astral character is 2 units."""
        assert getattr(FilterSet.from_dict({field: ["\U0001f600" * 64]}), field) == ("\U0001f600" * 64,)
        with pytest.raises(ValueError, match="longer than 128 UTF-16 code units"):
            FilterSet.from_dict({field: ["\U0001f600" * 64 + "x"]})  # 65 characters, 129 units
        assert getattr(FilterSet.from_dict({field: ["é" * 128]}), field) == ("é" * 128,)  # BMP: 1 unit each

    def test_catalogue(self) -> None:
        """18 eager sets with distinct keys and 14 aggregation types."""
        assert len(EAGER_FILTER_SETS) == 18 and len({fs.key for fs in EAGER_FILTER_SETS}) == 18
        assert len(AGGREGATION_TYPES) == 14


class TestClassifyTopic:
    """The keyword taxonomy matches whole words case-insensitively and never guesses."""

    @pytest.mark.parametrize(
        ("title", "channel", "topic"),
        [
            ("Minecraft Let's Play #3", None, "gaming"),
            ("Anti-Hero (Official Music Video)", "TaylorSwiftVEVO", "music"),
            ("FUSSBALL Highlights", None, "sports"),
            ("Fußball", None, "sports"),  # casefold: ß → ss both sides
            ("category theory", None, None),  # "cat" must not match inside a word
            ("zzz", "Someone", None),
            (None, None, None),
            ("Quick dinner", "Kurzgesagt – In a Nutshell", "food_cooking"),  # title (2) beats channel (1)
            ("video", "Kurzgesagt – In a Nutshell", "science"),
            ("Cat gameplay", None, "gaming"),  # tie 2–2: gaming is listed before animals
        ],
    )
    def test_examples(self, title: str | None, channel: str | None, topic: str | None) -> None:
        """Hand-checked titles map to the expected slug."""
        assert classify_topic(title, channel) == topic

    def test_slugs(self) -> None:
        """The taxonomy defines the 18 documented slugs."""
        assert len(TOPIC_SLUGS) == 18 and TOPIC_SLUGS[0] == "music"


def test_now_in_the_last_supported_year_is_refused_by_name() -> None:
    """A ``now`` whose next year start is no longer a date is refused naming now_ms; the last one works."""
    from worker.aggregation import EAGER_FILTER_SETS, compute_aggregations
    from worker.aggregation.timeframes import MAX_NOW_MS

    for tz in ("Pacific/Kiritimati", "Etc/GMT+12"):
        assert len(compute_aggregations([], now_ms=MAX_NOW_MS, time_zone=tz, filter_sets=EAGER_FILTER_SETS)) == 252
    with pytest.raises(ValueError, match=r"^now_ms: .* after the latest supported now"):
        compute_aggregations([], now_ms=MAX_NOW_MS + 1, time_zone="UTC", filter_sets=EAGER_FILTER_SETS)
