"""Incremental states of the evolution family (see worker.aggregation.incremental.core). Pure: no I/O."""

from __future__ import annotations

import sys

import numpy as np

from worker.aggregation.channels import channel_evolution_data, recent_windows
from worker.aggregation.common import MonthAxis, Output, month_axis
from worker.aggregation.frame import Int32Array, IntArray
from worker.aggregation.incremental.core import (
    BaseMemory,
    BaseTail,
    IncrementalState,
    RenderContext,
    SliceTail,
    StableCodes,
    grown,
)
from worker.aggregation.incremental.shared import ChannelViews, SliceShared
from worker.aggregation.options import AggregationOptions
from worker.aggregation.slices import Slice

__all__ = ["INCREMENTAL", "ChannelEvolutionState", "ChannelMonths"]

_MONTH_SLOTS = 1 << 18
"""(channel, month) key = stable channel code × this + local month index (month < 2^18, see core)."""
_UNSEEN = -1
"""``first_month`` of a channel the base has no view of yet (month indices are positive)."""
_COMPACT_MIN_PAIRS = 4096
"""Appended (channel, month) counts are merged into the sorted arrays once there are more than this
many and more than a quarter of the arrays' pairs (amortized: a few merges per doubling)."""
_SMALL_DICT_BYTES = 224
"""``sys.getsizeof`` of a dict of 1–5 int entries on CPython 3.11 (estimate of each month dict)."""
SHARED_NAME = "channel_months"
"""Key of a base's :class:`ChannelMonths` in ``BaseMemory.shared``."""


class ChannelMonths:
    """What channel_evolution needs of a filter base's whole history, shared by its timeframes.

    Every window starts at the first instant of a local month, so a slice's views in months from its
    window's start month on are the base's views in those months: one table of (channel, month)
    views per base serves the six timeframes (a slice keeps apart only its views in earlier months,
    which a clock turned back across the first of a month can put in the window, see
    :class:`ChannelEvolutionState`). The trend windows and first months are the base's anyway.

    Per stable channel code (≥ C,) arrays, int32, grown when the frame gains channels: ``recent`` /
    ``previous`` (views in the trend windows) and ``first_month`` (local month of the channel's first
    view, ``_UNSEEN`` before it). Monthly views, sparse: ``pair_key`` (P,) sorted int64 keys
    ``channel × _MONTH_SLOTS + month`` with their views ``pair_views`` (P,) int32, plus ``added``
    (channel → {month → views}) for the views appended since (merged into the arrays when it grows:
    :data:`_COMPACT_MIN_PAIRS`). Months before the base's truncated axis are dropped (no slice's axis
    starts earlier: a slice's last month is the base's).

    Synchronized with the frame by :meth:`sync` (the first state extended by an append adds it, the
    others find it added): ``frame_size`` rows of the frame of serial ``frame_serial`` are counted.
    """

    __slots__ = (
        "recent",
        "previous",
        "first_month",
        "pair_key",
        "pair_views",
        "added",
        "added_pairs",
        "month_lo",
        "month_hi",
        "windows",
        "months_cap",
        "frame_serial",
        "frame_size",
    )

    def __init__(self, view: Slice, codes: StableCodes) -> None:
        """Count the whole base of ``view`` (frame codes translated through ``codes``)."""
        opts = view.options
        n_channels = codes.channels
        self.windows = recent_windows(view)
        self.months_cap = opts.months_cap
        prev_start, recent_start, current = self.windows
        channel = codes.stable_channel(view.base_channel)
        has = channel >= 0
        bc, bm = channel[has], view.base_month[has].astype(np.int64)
        del channel, has
        self.recent: Int32Array = np.bincount(bc[(bm >= recent_start) & (bm <= current)], minlength=n_channels).astype(
            np.int32
        )
        self.previous: Int32Array = np.bincount(
            bc[(bm >= prev_start) & (bm < recent_start)], minlength=n_channels
        ).astype(np.int32)
        self.first_month: Int32Array = np.full(n_channels, _UNSEEN, dtype=np.int32)
        seen, first = np.unique(bc, return_index=True)  # first occurrence = first view (rows in time order)
        self.first_month[seen] = bm[first]
        pair_key, pair_views = np.unique(bc * _MONTH_SLOTS + bm, return_counts=True)
        del bc, bm
        base_month = view.base_month
        self.month_lo: int | None = int(base_month.min()) if base_month.size else None
        self.month_hi: int | None = int(base_month.max()) if base_month.size else None
        self.pair_key, self.pair_views = _from_axis(pair_key, pair_views.astype(np.int32), self._axis())
        self.added: dict[int, dict[int, int]] = {}
        self.added_pairs = 0
        self.frame_serial = view.frame.serial
        self.frame_size = view.frame.size

    @classmethod
    def of(cls, view: Slice, codes: StableCodes, memory: BaseMemory) -> ChannelMonths:
        """Return the base's table describing ``view``'s frame: the one kept in the base's memory, or a
        new one (kept there instead, for the other timeframes)."""
        held = memory.shared.get(SHARED_NAME)
        if (
            isinstance(held, ChannelMonths)
            and held.frame_serial == view.frame.serial
            and held.frame_size == view.frame.size
            and held.windows == recent_windows(view)
            and held.months_cap == view.options.months_cap
        ):
            return held
        made = memory.shared[SHARED_NAME] = cls(view, codes)
        return made

    @property
    def nbytes(self) -> int:
        """Return the bytes held (arrays; the appended counts' dicts estimated)."""
        arrays = (self.recent, self.previous, self.first_month, self.pair_key, self.pair_views)
        held = sum(int(a.nbytes) for a in arrays)
        # each channel's month dict estimated at CPython 3.11's size for up to 5 entries (224 bytes;
        # appends touch few months of a channel) plus 64 bytes per entry (its two ints and slot):
        # measuring every dict would cost the append more than the rest of this state
        dicts = sys.getsizeof(self.added) + _SMALL_DICT_BYTES * len(self.added)
        return held + dicts + 64 * self.added_pairs

    def sync(self, base: BaseTail) -> None:
        """Count the base's appended views, unless this append was counted already (the first state
        extended by an append adds it; ``BaseRun.finish`` syncs every table of a base at each append,
        also one whose states stood unchanged, so a table never misses an append).

        Raises:
            RuntimeError: the table describes neither the frame before the append nor the one after
                (a programming error).
        """
        if self.frame_serial == base.frame.serial:
            return  # another timeframe's state added this append
        if self.frame_size != base.before:
            raise RuntimeError(f"ChannelMonths.sync: {self.frame_size} rows counted, the append follows {base.before}")
        n_channels = base.codes.channels
        self.recent = grown(self.recent, n_channels, 0)
        self.previous = grown(self.previous, n_channels, 0)
        self.first_month = grown(self.first_month, n_channels, _UNSEEN)
        self.frame_serial, self.frame_size = base.frame.serial, base.frame.size
        if base.size == 0:
            return
        months = base.month
        lo, hi = int(months.min()), int(months.max())
        self.month_lo = lo if self.month_lo is None else min(self.month_lo, lo)
        self.month_hi = hi if self.month_hi is None else max(self.month_hi, hi)
        has = base.channel >= 0
        c, m = base.channel[has], months[has]
        if c.size == 0:
            return
        seen, first = np.unique(c, return_index=True)
        unseen = self.first_month[seen] == _UNSEEN  # channels new to the base
        self.first_month[seen[unseen]] = m[first[unseen]]
        prev_start, recent_start, current = self.windows
        np.add.at(self.recent, c[(m >= recent_start) & (m <= current)], 1)
        np.add.at(self.previous, c[(m >= prev_start) & (m < recent_start)], 1)
        keys, counts = np.unique(c * _MONTH_SLOTS + m, return_counts=True)
        for key, n in zip(keys.tolist(), counts.tolist(), strict=True):
            per = self.added.setdefault(key // _MONTH_SLOTS, {})
            month = key % _MONTH_SLOTS
            if month not in per:
                self.added_pairs += 1
            per[month] = per.get(month, 0) + n
        if self.added_pairs > max(_COMPACT_MIN_PAIRS, self.pair_key.size // 4):
            self._compact()

    def monthly(self, channels: IntArray, first: int, last: int) -> IntArray:
        """Return the views of ``channels`` (stable codes, (k,)) in months ``first … last``: (k, last − first + 1)."""
        out = np.zeros((channels.size, max(last - first + 1, 0)), dtype=np.int64)
        if out.shape[1] == 0:
            return out
        starts = np.searchsorted(self.pair_key, channels * _MONTH_SLOTS + first, side="left")
        ends = np.searchsorted(self.pair_key, channels * _MONTH_SLOTS + last, side="right")
        for i, (c, a, b) in enumerate(zip(channels.tolist(), starts.tolist(), ends.tolist(), strict=True)):
            out[i, self.pair_key[a:b] - (c * _MONTH_SLOTS + first)] = self.pair_views[a:b]
            for month, n in self.added.get(c, {}).items():
                if first <= month <= last:
                    out[i, month - first] += n
        return out

    def _axis(self) -> MonthAxis:
        return _axis(
            None if self.month_lo is None or self.month_hi is None else (self.month_lo, self.month_hi), self.months_cap
        )

    def _compact(self) -> None:
        """Merge the appended (channel, month) counts into the sorted arrays."""
        keys = [c * _MONTH_SLOTS + m for c, per in self.added.items() for m in per]
        counts = [n for per in self.added.values() for n in per.values()]
        key = np.concatenate((self.pair_key, np.array(keys, dtype=np.int64)))
        views = np.concatenate((self.pair_views, np.array(counts, dtype=np.int32)))
        order = np.argsort(key, kind="stable")
        key, views = key[order], views[order]
        start = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        self.pair_key, self.pair_views = _from_axis(key[start], np.add.reduceat(views, start), self._axis())
        self.added, self.added_pairs = {}, 0


class ChannelEvolutionState:
    """``channel_evolution``: the listed channels of a slice, over its base's :class:`ChannelMonths`.

    Holds the slice's views per channel (``channel_views``, shared with the slice's other states),
    the base's memory, whose :class:`ChannelMonths` (:attr:`months`) the base's timeframes share
    (looked up there: a state built later in the same append may have replaced it), and of its own
    the views of the slice in months before its window's start month (``early``: channel → {month →
    views}; only a clock turned back across the first of a month puts views there, see
    :class:`ChannelMonths`).

    Attributes:
        top: Stable codes of the listed channels, views desc then channel id asc (≤ top_n,).
        month_lo: First local month of the slice (None: empty slice).
        month_hi: Its last local month.
        start_month: The window's start month (None for ``All``).
    """

    def __init__(
        self,
        channel_views: ChannelViews,
        memory: BaseMemory,
        top: IntArray,
        span: tuple[int, int] | None,
        start_month: int | None,
        early: dict[int, dict[int, int]],
        options: AggregationOptions,
    ) -> None:
        self.channel_views = channel_views
        self.memory = memory
        self.top = top
        self.month_lo: int | None = None if span is None else span[0]
        self.month_hi: int | None = None if span is None else span[1]
        self.start_month = start_month
        self.early = early
        self.top_n = options.top_n
        self.months_cap = options.months_cap
        self.trend_ratio = options.trend_ratio

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> ChannelEvolutionState:
        """Build the state of the whole slice."""
        start = view.window.start_month
        early: dict[int, dict[int, int]] = {}
        if start is not None and view.n:
            channel = codes.stable_channel(view.channel)
            before = (view.month < start) & (channel >= 0)
            _count_into(early, channel[before], view.month[before].astype(np.int64))
        memory = shared.memory if shared is not None and shared.memory is not None else BaseMemory()
        ChannelMonths.of(view, codes, memory)
        return cls(
            (shared or SliceShared(0)).channel_views_of(view, codes),
            memory,
            codes.stable_channel(view.channel_ranking[: view.options.top_n]),
            (int(view.month.min()), int(view.month.max())) if view.n else None,
            start,
            early,
            view.options,
        )

    @property
    def months(self) -> ChannelMonths:
        """Return the base's monthly views (kept in its memory)."""
        months: ChannelMonths = self.memory.shared[SHARED_NAME]
        return months

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views (the base's to the shared table, the slice's to the rest)."""
        self.months.sync(tail.base)
        if tail.n == 0:
            return
        touched = self.channel_views.add(tail)
        months = tail.month
        lo, hi = int(months.min()), int(months.max())
        if self.month_lo is None or self.month_hi is None:
            self.month_lo, self.month_hi = lo, hi
        else:
            self.month_lo, self.month_hi = min(self.month_lo, lo), max(self.month_hi, hi)
        if self.start_month is not None and lo < self.start_month:
            before = (months < self.start_month) & (tail.channel >= 0)
            _count_into(self.early, tail.channel[before], months[before])
        if touched.size:
            # the listed channels can only be the listed ones or appended ones (other counts did not
            # change; a new channel id sorting among the old ones keeps the old ones' relative order)
            candidates = np.union1d(self.top, touched)
            order = np.lexsort((tail.base.codes.channel_code[candidates], -self.channel_views.views[candidates]))
            self.top = candidates[order[: self.top_n]]

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``channel_evolution`` output."""
        span = None if self.month_lo is None or self.month_hi is None else (self.month_lo, self.month_hi)
        axis = _axis(span, self.months_cap)
        top = self.top
        shared_from = axis.first if self.start_month is None else max(axis.first, self.start_month)
        monthly = np.zeros((top.size, axis.size), dtype=np.int64)
        if axis.size:
            monthly[:, shared_from - axis.first :] = self.months.monthly(top, shared_from, axis.last)
            for i, c in enumerate(top.tolist()):
                for month, n in self.early.get(c, {}).items():
                    if axis.first <= month:
                        monthly[i, month - axis.first] += n
        m = self.months
        current = m.windows[2]
        first = m.first_month[top]
        codes = top.tolist()
        return channel_evolution_data(
            [ctx.channel_id(c) for c in codes],
            [ctx.channel_name(c) for c in codes],
            self.channel_views.views[top].tolist(),
            monthly.tolist(),
            m.recent[top].tolist(),
            m.previous[top].tolist(),
            np.where(first == _UNSEEN, current, first).tolist(),
            months=axis.labels(),
            months_cap=axis.cap,
            months_truncated=axis.truncated,
            windows=m.windows,
            ranked=self.channel_views.channel_count,
            top_n=self.top_n,
            trend_ratio=self.trend_ratio,
        )

    @property
    def nbytes(self) -> int:
        """Return the bytes held (not the views per channel and the monthly views: the slice's and
        the base's, counted with them)."""
        return int(self.top.nbytes) + _SMALL_DICT_BYTES * (1 + len(self.early)) + 256


def _count_into(table: dict[int, dict[int, int]], channels: IntArray, months: IntArray) -> None:
    """Add one view per (channel, month) row to ``table`` (channel → {month → views})."""
    for c, m in zip(channels.tolist(), months.tolist(), strict=True):
        per = table.setdefault(c, {})
        per[m] = per.get(m, 0) + 1


def _axis(months: tuple[int, int] | None, cap: int) -> MonthAxis:
    """Return ``month_axis`` of a slice whose first and last months are ``months`` (None: empty)."""
    return month_axis(np.array(months if months is not None else (), dtype=np.int64), cap)


def _from_axis(key: IntArray, views: Int32Array, axis: MonthAxis) -> tuple[IntArray, Int32Array]:
    """Return the (channel, month) pairs without the months before a truncated axis."""
    if not axis.truncated:
        return key, views
    keep = key % _MONTH_SLOTS >= axis.first
    return key[keep], views[keep]


INCREMENTAL: dict[str, type[IncrementalState]] = {"channel_evolution": ChannelEvolutionState}
"""Aggregation type → its incremental state class."""
