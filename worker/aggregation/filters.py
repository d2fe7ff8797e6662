"""Filter sets and their canonical key (docs/architecture.md, "Filters and their canonical key").

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from worker.aggregation.frame import PRODUCT_CODES, BoolArray, Frame
from worker.aggregation.timeframes import TIMEFRAMES, Timeframe
from worker.models import utf16_length

__all__ = [
    "PRODUCTS",
    "ProductFilter",
    "FilterSet",
    "EAGER_FILTER_SETS",
    "MAX_FILTER_VALUES",
    "MAX_FILTER_VALUE_LENGTH",
    "group_by_base",
]

ProductFilter = Literal["all", "youtube", "youtube_music"]
PRODUCTS: tuple[ProductFilter, ...] = ("all", "youtube", "youtube_music")
_FORBIDDEN = frozenset(",|")

# The two limits below must equal MAX_FILTER_VALUES and MAX_FILTER_VALUE_LENGTH in convex/filters.ts,
# which validates what clients register (tests/unit/aggregation/test_aggregation_filters.py compares them).
MAX_FILTER_VALUES = 50
"""Most topics or channels in one filter set, counted as given (duplicates included), as Convex counts."""
MAX_FILTER_VALUE_LENGTH = 128
"""Longest topic slug or channel id, in UTF-16 code units (JavaScript's ``string.length``, what Convex
checks): a character outside the Basic Multilingual Plane counts 2."""


def _canonical(field: str, values: Iterable[Any]) -> tuple[str, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"{field}: expected a list of strings")
    items = list(values)
    if len(items) > MAX_FILTER_VALUES:
        raise ValueError(f"{field}: {len(items)} values; at most {MAX_FILTER_VALUES} are allowed")
    for value in items:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{field}: every item must be a non-empty string, got {value!r}")
        if utf16_length(value) > MAX_FILTER_VALUE_LENGTH or any(ch in _FORBIDDEN for ch in value):
            raise ValueError(
                f"{field}: item {value[:40]!r} is longer than {MAX_FILTER_VALUE_LENGTH} UTF-16 code units"
                " or contains ',' or '|'"
            )
    return tuple(sorted(set(items)))  # Python sorts str by code point, as the contract states


@dataclass(frozen=True)
class FilterSet:
    """One filter set: timeframe × product, optionally narrowed to topics and channel ids.

    Instances are canonical: ``topics`` and ``channels`` are sorted (by code point) and unique,
    so equal filters compare equal and share one ``key``.

    Attributes:
        timeframe: One of ``TIMEFRAMES``.
        product: ``"all"``, ``"youtube"`` or ``"youtube_music"``.
        topics: Topic slugs; empty = no topic filter. A view passes when its topic is in the set
            (unclassified views never pass a non-empty topic filter).
        channels: Channel ids (``UC…``); empty = no channel filter.

    Raises:
        ValueError: an invalid field (the message starts with the field name).
    """

    timeframe: Timeframe
    product: ProductFilter
    topics: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.timeframe not in TIMEFRAMES:
            raise ValueError(f"timeframe: expected one of {TIMEFRAMES}, got {self.timeframe!r}")
        if self.product not in PRODUCTS:
            raise ValueError(f"product: expected one of {PRODUCTS}, got {self.product!r}")
        object.__setattr__(self, "topics", _canonical("topics", self.topics))
        object.__setattr__(self, "channels", _canonical("channels", self.channels))

    @property
    def key(self) -> str:
        """Return the canonical filterKey ``timeframe|product|topics,…|channels,…``."""
        return f"{self.timeframe}|{self.product}|{','.join(self.topics)}|{','.join(self.channels)}"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FilterSet:
        """Build from a Convex ``filters`` object (timeframe, product, optional topics and channels).

        ``timeframe`` defaults to ``"All"`` and ``product`` to ``"all"`` when absent, as
        ``dashboard:getAggregation`` does. Lists may be in any order and contain duplicates; each
        holds at most :data:`MAX_FILTER_VALUES` values (duplicates counted) of 1 to
        :data:`MAX_FILTER_VALUE_LENGTH` UTF-16 code units without ``,`` or ``|``: the limits of
        ``normalizeFilters`` in ``convex/filters.ts``.

        Raises:
            ValueError: not a mapping, an unknown key, or an invalid field (message names the field).
        """
        if not isinstance(d, Mapping):
            raise ValueError("filters: expected an object")
        unknown = set(d) - {"timeframe", "product", "topics", "channels"}
        if unknown:
            raise ValueError(f"filters: unknown field(s) {sorted(map(str, unknown))}")
        timeframe = d.get("timeframe", "All")
        product = d.get("product", "all")
        return cls(
            timeframe=cast(Timeframe, timeframe),
            product=cast(ProductFilter, product),
            topics=tuple(_canonical("topics", d.get("topics") or ())),
            channels=tuple(_canonical("channels", d.get("channels") or ())),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the Convex ``filters`` object; ``topics``/``channels`` omitted when empty."""
        out: dict[str, Any] = {"timeframe": self.timeframe, "product": self.product}
        if self.topics:
            out["topics"] = list(self.topics)
        if self.channels:
            out["channels"] = list(self.channels)
        return out


EAGER_FILTER_SETS: tuple[FilterSet, ...] = tuple(
    FilterSet(timeframe, product) for timeframe in TIMEFRAMES for product in PRODUCTS
)
"""The 18 timeframe × product sets (no topics, no channels) that are always computed."""


def group_by_base(filter_sets: Iterable[FilterSet]) -> list[list[FilterSet]]:
    """Group distinct filter sets by base (product, topics, channels: all but the timeframe).

    Sets of one base share the filter over the whole history and its derived columns, so the engine
    computes them together. Groups and the sets in each keep first-occurrence order; a set repeated
    (same ``key``) appears once.
    """
    groups: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[FilterSet]] = {}
    seen: set[str] = set()
    for fs in filter_sets:
        if fs.key not in seen:
            seen.add(fs.key)
            groups.setdefault((fs.product, fs.topics, fs.channels), []).append(fs)
    return list(groups.values())


def filter_mask(frame: Frame, fs: FilterSet, lo: int = 0, hi: int | None = None) -> BoolArray:
    """Return which frame rows ``lo … hi−1`` (default: all) pass ``fs``'s product, topic and channel
    filters (the timeframe aside), as a bool array of ``hi − lo``."""
    hi = frame.size if hi is None else hi
    mask = np.ones(max(hi - lo, 0), dtype=np.bool_)
    if fs.product != "all":
        mask &= frame.product[lo:hi] == PRODUCT_CODES[fs.product]
    if fs.topics:
        codes = [frame.topic_slugs.index(t) for t in fs.topics if t in frame.topic_slugs]
        mask &= np.isin(frame.topic[lo:hi], np.array(codes, dtype=np.int64))
    if fs.channels:
        lookup = {c: i for i, c in enumerate(frame.channel_ids)}
        codes = [lookup[c] for c in fs.channels if c in lookup]
        mask &= np.isin(frame.channel[lo:hi], np.array(codes, dtype=np.int64))
    return mask
