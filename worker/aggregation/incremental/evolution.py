"""Incremental states of the evolution family (see worker.aggregation.incremental.core). Pure: no I/O."""

from __future__ import annotations

import sys

import numpy as np

from worker.aggregation.channels import channel_evolution_data, recent_windows
from worker.aggregation.common import MonthAxis, Output, month_axis
from worker.aggregation.frame import Int32Array, IntArray
from worker.aggregation.incremental.core import IncrementalState, RenderContext, SliceTail, StableCodes, grown
from worker.aggregation.incremental.shared import ChannelViews, SliceShared
from worker.aggregation.slices import Slice

__all__ = ["INCREMENTAL", "ChannelEvolutionState"]

_MONTH_SLOTS = 1 << 18
"""(channel, month) key = stable channel code × this + local month index (month < 2^18, see core)."""
_UNSEEN = -1
"""``first_month`` of a channel the base has no view of yet (month indices are positive)."""
_COMPACT_MIN_PAIRS = 4096
"""Appended (channel, month) counts are merged into the sorted arrays once there are more than this
many and more than a quarter of the arrays' pairs (amortized: a few merges per doubling)."""
_SMALL_DICT_BYTES = 224
"""``sys.getsizeof`` of a dict of 1–5 int entries on CPython 3.11 (estimate of each month dict)."""


class ChannelEvolutionState:
    """``channel_evolution``: per-channel counts, the listed channels and the (channel, month) views.

    The slice's views per channel (``channel_views``, shared with its other states) and per stable
    channel code (≥ C,) arrays, int32, grown when the frame gains channels: ``recent`` / ``previous``
    (base views, whole history, in the trend windows) and ``first_month`` (local month of the
    channel's first base view, ``_UNSEEN`` before it).

    Monthly views of every channel of the slice, sparse: ``pair_key`` (P,) sorted int64 keys
    ``channel × _MONTH_SLOTS + month`` with their views ``pair_views`` (P,) int32, built from the slice,
    plus ``added`` (channel → {month → views}) for the views appended since (merged into the arrays
    when it grows: :data:`_COMPACT_MIN_PAIRS`). Months before a truncated axis are dropped (the axis
    start never moves back: its last month only grows).

    Attributes:
        top: Stable codes of the listed channels, views desc then channel id asc (≤ top_n,).
        month_lo: First local month of the slice (None: empty slice).
        month_hi: Its last local month.
        windows: (previous start, recent start, current) month indices of the trend windows.
    """

    def __init__(
        self,
        channel_views: ChannelViews,
        recent: Int32Array,
        previous: Int32Array,
        first_month: Int32Array,
        top: IntArray,
        months: tuple[int, int] | None,
        pairs: tuple[IntArray, Int32Array],
        windows: tuple[int, int, int],
        top_n: int,
        months_cap: int,
        trend_ratio: float,
    ) -> None:
        self.channel_views = channel_views
        self.recent = recent
        self.previous = previous
        self.first_month = first_month
        self.top = top
        self.month_lo: int | None = None if months is None else months[0]
        self.month_hi: int | None = None if months is None else months[1]
        self.pair_key, self.pair_views = pairs
        self.added: dict[int, dict[int, int]] = {}
        self.added_pairs = 0
        self.windows = windows
        self.top_n = top_n
        self.months_cap = months_cap
        self.trend_ratio = trend_ratio

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> ChannelEvolutionState:
        """Build the state of the whole slice."""
        opts = view.options
        n_channels = codes.channels
        windows = recent_windows(view)
        prev_start, recent_start, current = windows
        channel = codes.stable_channel(view.channel)
        has = channel >= 0
        c, m = channel[has], view.month[has].astype(np.int64)
        del channel, has
        pair_key, pair_views = np.unique(c * _MONTH_SLOTS + m, return_counts=True)
        del c, m
        months = (int(view.month.min()), int(view.month.max())) if view.n else None
        axis = _axis(months, opts.months_cap)
        pair_key, pair_views = _from_axis(pair_key, pair_views.astype(np.int32), axis)
        # trend windows and first months on the filter over the whole history
        channel = codes.stable_channel(view.base_channel)
        has = channel >= 0
        bc, bm = channel[has], view.base_month[has].astype(np.int64)
        del channel, has
        recent = np.bincount(bc[(bm >= recent_start) & (bm <= current)], minlength=n_channels).astype(np.int32)
        previous = np.bincount(bc[(bm >= prev_start) & (bm < recent_start)], minlength=n_channels).astype(np.int32)
        first_month = np.full(n_channels, _UNSEEN, dtype=np.int32)
        seen, first = np.unique(bc, return_index=True)  # first occurrence = first view (rows in time order)
        first_month[seen] = bm[first]
        return cls(
            (shared or SliceShared(0)).channel_views_of(view, codes),
            recent,
            previous,
            first_month,
            codes.stable_channel(view.channel_ranking[: opts.top_n]),
            months,
            (pair_key, pair_views),
            windows,
            opts.top_n,
            opts.months_cap,
            opts.trend_ratio,
        )

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views (base rows for the trend windows, slice rows for the rest)."""
        base = tail.base
        self._grow(base.codes.channels)
        if base.size:
            has = base.channel >= 0
            c, m = base.channel[has], base.month[has]
            if c.size:
                seen, first = np.unique(c, return_index=True)
                unseen = self.first_month[seen] == _UNSEEN  # channels new to the base
                self.first_month[seen[unseen]] = m[first[unseen]]
                prev_start, recent_start, current = self.windows
                np.add.at(self.recent, c[(m >= recent_start) & (m <= current)], 1)
                np.add.at(self.previous, c[(m >= prev_start) & (m < recent_start)], 1)
        if tail.n == 0:
            return
        touched = self.channel_views.add(tail).viewed
        months = tail.month
        lo, hi = int(months.min()), int(months.max())
        if self.month_lo is None or self.month_hi is None:
            self.month_lo, self.month_hi = lo, hi
        else:
            self.month_lo, self.month_hi = min(self.month_lo, lo), max(self.month_hi, hi)
        has = tail.channel >= 0
        if not has.any():
            return
        keys, counts = np.unique(tail.channel[has] * _MONTH_SLOTS + months[has], return_counts=True)
        for key, n in zip(keys.tolist(), counts.tolist(), strict=True):
            per = self.added.setdefault(key // _MONTH_SLOTS, {})
            month = key % _MONTH_SLOTS
            if month not in per:
                self.added_pairs += 1
            per[month] = per.get(month, 0) + n
        # the listed channels can only be the listed ones or appended ones (other counts did not change;
        # a new channel id sorting among the old ones keeps the old ones' relative order)
        candidates = np.union1d(self.top, touched)
        order = np.lexsort((base.codes.channel_code[candidates], -self.channel_views.views[candidates]))
        self.top = candidates[order[: self.top_n]]
        if self.added_pairs > max(_COMPACT_MIN_PAIRS, self.pair_key.size // 4):
            self._compact()

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``channel_evolution`` output."""
        axis = _axis(self._months(), self.months_cap)
        top = self.top
        width = axis.size
        starts = np.searchsorted(self.pair_key, top * _MONTH_SLOTS + axis.first, side="left")
        ends = np.searchsorted(self.pair_key, top * _MONTH_SLOTS + axis.last, side="right")
        monthly: list[list[int]] = []
        for c, a, b in zip(top.tolist(), starts.tolist(), ends.tolist(), strict=True):
            row = np.zeros(width, dtype=np.int64)
            row[self.pair_key[a:b] - (c * _MONTH_SLOTS + axis.first)] = self.pair_views[a:b]
            for month, n in self.added.get(c, {}).items():
                if month >= axis.first:
                    row[month - axis.first] += n
            monthly.append(row.tolist())
        current = self.windows[2]
        first = self.first_month[top]
        codes = top.tolist()
        return channel_evolution_data(
            [ctx.channel_id(c) for c in codes],
            [ctx.channel_name(c) for c in codes],
            self.channel_views.views[top].tolist(),
            monthly,
            self.recent[top].tolist(),
            self.previous[top].tolist(),
            np.where(first == _UNSEEN, current, first).tolist(),
            months=axis.labels(),
            months_cap=axis.cap,
            months_truncated=axis.truncated,
            windows=self.windows,
            ranked=self.channel_views.channel_count,
            top_n=self.top_n,
            trend_ratio=self.trend_ratio,
        )

    @property
    def nbytes(self) -> int:
        """Return the bytes held (arrays; the appended counts' dicts estimated; not the views per
        channel: the slice's, counted with it)."""
        arrays = (self.recent, self.previous, self.first_month, self.top, self.pair_key, self.pair_views)
        held = sum(int(a.nbytes) for a in arrays)
        # each channel's month dict estimated at CPython 3.11's size for up to 5 entries (224 bytes;
        # appends touch few months of a channel) plus 64 bytes per entry (its two ints and slot):
        # measuring every dict would cost the append more than the rest of this state
        dicts = sys.getsizeof(self.added) + _SMALL_DICT_BYTES * len(self.added)
        return held + dicts + 64 * self.added_pairs

    def _months(self) -> tuple[int, int] | None:
        if self.month_lo is None or self.month_hi is None:
            return None
        return self.month_lo, self.month_hi

    def _grow(self, n_channels: int) -> None:
        """Make the per-channel arrays hold ``n_channels`` stable codes (new channels: no views yet).

        They grow with spare capacity (:func:`~worker.aggregation.incremental.core.grown`), so a run
        of appends each bringing a new channel does not copy them every time (extra entries: no views).
        """
        self.recent = grown(self.recent, n_channels, 0)
        self.previous = grown(self.previous, n_channels, 0)
        self.first_month = grown(self.first_month, n_channels, _UNSEEN)

    def _compact(self) -> None:
        """Merge the appended (channel, month) counts into the sorted arrays."""
        keys = [c * _MONTH_SLOTS + m for c, per in self.added.items() for m in per]
        counts = [n for per in self.added.values() for n in per.values()]
        key = np.concatenate((self.pair_key, np.array(keys, dtype=np.int64)))
        views = np.concatenate((self.pair_views, np.array(counts, dtype=np.int32)))
        order = np.argsort(key, kind="stable")
        key, views = key[order], views[order]
        start = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        self.pair_key, self.pair_views = _from_axis(
            key[start], np.add.reduceat(views, start), _axis(self._months(), self.months_cap)
        )
        self.added, self.added_pairs = {}, 0


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
