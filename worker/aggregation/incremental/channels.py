"""Incremental states of the channels family (see worker.aggregation.incremental.core). Pure: no I/O.

channel_metrics: per channel of the slice, counts that appended views only add to (views, first
and last view, first month, active months, hour and weekday histograms) and, per pair of channels,
the sessions holding both (:class:`~worker.aggregation.incremental.pairs.SessionPairs`, shared with
the slice's ``channel_relationships`` state), from which each channel's first co-watched partners
are kept up to date. The rendering code that turns them into the stored shape is the full
function's own (``worker.aggregation.channels.channel_metrics_data``).

Memory (default options, the 18 eager sets of a 100k-view synthetic history, 3 775 channels):
684 612 pair counts (16 bytes each in ``KeyCounts`` when measured: 11 MB; 12 since, with int32
counts) and 29 268 channel slots (about 105 bytes each with the stable-code tables and spare
capacity: 3.1 MB), 14 MB in all; at 300k views
1.2 M pairs (19.5 MB) and 85 314 slots (9.4 MB). The pair counts are the slice's, counted once for
both states.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.aggregation.channels import ListedChannels, ListedMonths, channel_metrics_data, top_partners
from worker.aggregation.common import Output, run_positions, unique_ints
from worker.aggregation.frame import CodeArray, Int32Array, IntArray
from worker.aggregation.incremental.core import (
    IncrementalState,
    RenderContext,
    SliceTail,
    StableCodes,
    grown,
)
from worker.aggregation.incremental.pairs import PAIR_BOUND, SessionPairs
from worker.aggregation.incremental.shared import SliceShared
from worker.aggregation.slices import Slice

__all__ = ["INCREMENTAL", "ChannelMetricsState", "Histograms"]

_OBJECT_BYTES = 256
"""Rough bytes of a state object with its few Python ints (besides its arrays)."""
_INT64_MAX = int(np.iinfo(np.int64).max)
_INT32_MAX = int(np.iinfo(np.int32).max)


_NARROW_MAX = 255
"""Most views of a channel whose hour and weekday counts are kept as uint8."""


class Histograms:
    """Views per local hour and weekday of each slot: 31 counts (24 hours, then 7 weekdays, Monday first).

    Kept as uint8 (31 bytes per slot) while the slot's views are at most ``_NARROW_MAX`` (no count
    can exceed them), as int32 rows of ``wide`` once they pass it (the channels with many views:
    few of them).

    Attributes:
        narrow: Counts of the slots with at most ``_NARROW_MAX`` views (capacity, 31), uint8.
        wide: Counts of the others (w capacity, 31), int32; ``wide_count`` rows in use.
        wide_of: Row of ``wide`` of each slot, −1 for none (capacity,), int32.
    """

    __slots__ = ("narrow", "wide", "wide_of", "wide_count")

    def __init__(self, narrow: Any, wide: Int32Array, wide_of: Int32Array) -> None:
        self.narrow = narrow
        self.wide = wide
        self.wide_of = wide_of
        self.wide_count = int(wide.shape[0])

    @classmethod
    def of(cls, slot: IntArray, hour: Any, weekday: Any, views: IntArray) -> Histograms:
        """Return the counts of views of slots ``slot`` (r,) at local ``hour``/``weekday`` (r,); ``views``
        per slot (s,)."""
        size = int(views.size)
        counts = np.bincount(slot * 31 + hour, minlength=size * 31)
        counts += np.bincount(slot * 31 + 24 + weekday, minlength=size * 31)
        full = counts.reshape(size, 31)
        wide_slots = np.flatnonzero(views > _NARROW_MAX)
        wide_of = np.full(size, -1, dtype=np.int32)
        wide_of[wide_slots] = np.arange(wide_slots.size, dtype=np.int32)
        wide = full[wide_slots].astype(np.int32)
        full[wide_slots] = 0
        return cls(full.astype(np.uint8), wide, wide_of)

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return int(self.narrow.nbytes + self.wide.nbytes + self.wide_of.nbytes)

    def grow(self, size: int) -> None:
        """Make room for ``size`` slots."""
        self.narrow = grown(self.narrow, size, 0)
        self.wide_of = grown(self.wide_of, size, -1)

    def add(self, slot: IntArray, hour: IntArray, weekday: IntArray, views: IntArray) -> None:
        """Count views of slots ``slot`` (r,) at ``hour``/``weekday`` (r,); ``views`` = views per slot after them."""
        touched = np.unique(slot)
        widen = touched[(views[touched] > _NARROW_MAX) & (self.wide_of[touched] < 0)]
        if widen.size:  # their counts so far are at most _NARROW_MAX each: exact in uint8
            rows = np.arange(self.wide_count, self.wide_count + widen.size, dtype=np.int32)
            self.wide_count += int(widen.size)
            self.wide = grown(self.wide, self.wide_count, 0)
            self.wide[rows] = self.narrow[widen]
            self.narrow[widen] = 0
            self.wide_of[widen] = rows
        row = self.wide_of[slot].astype(np.int64)
        w = row >= 0
        narrow, nw = slot[~w], ~w
        np.add.at(self.narrow, (narrow, hour[nw]), 1)
        np.add.at(self.narrow, (narrow, 24 + weekday[nw]), 1)
        np.add.at(self.wide, (row[w], hour[w]), 1)
        np.add.at(self.wide, (row[w], 24 + weekday[w]), 1)

    def rows(self, slot: IntArray) -> IntArray:
        """Return the counts of slots ``slot`` (k,): (k, 31), int64."""
        out: IntArray = self.narrow[slot].astype(np.int64)
        row = self.wide_of[slot]
        w = row >= 0
        out[w] = self.wide[row[w]]
        return out


class ChannelMetricsState:
    """``channel_metrics``: per channel of the slice its counts, the listed channels and their partners.

    Channels with a view in the slice get a slot (0 … ``size`` − 1, in order of arrival) and per
    slot: views, first and last view (epoch ms UTC), first local month, active months (distinct
    local months, counted with ``LastSeen("channel_month")``), views per local hour and weekday
    (:class:`Histograms`), and
    its first ``co_watched_per_channel`` co-watched partners (coSessions desc, id asc). Counts only
    grow, so after an append the first views-desc channels are the first of (the listed ones ∪ the
    ones with appended views), and a channel's first partners the first of (its previous ones ∪ the
    partners whose pair count grew), each by the same order; a channel's partners are kept whether
    or not it is listed, so one entering the list has them at hand. The pair counts
    (:class:`~worker.aggregation.incremental.pairs.SessionPairs`, the slice's) give the count of a
    pair that grew.

    Per slot arrays have a capacity (grown by an eighth when full); ``slot_of`` maps stable channel codes
    to slots (−1: no view in the slice).
    """

    def __init__(
        self,
        *,
        cap: int,
        n: int,
        last_month: int,
        slot_of: Int32Array,
        size: int,
        views: IntArray,
        first_ms: IntArray,
        last_ms: IntArray,
        first_month: Int32Array,
        active: Int32Array,
        histograms: Histograms,
        partner: Int32Array,
        partner_sessions: Int32Array,
        listed: IntArray,
        pairs: SessionPairs | None,
    ) -> None:
        """Build from its parts.

        Args:
            cap: ``channel_metrics_cap``.
            n: Views of the slice.
            last_month: Latest local month index of its views (−2³¹ when empty).
            slot_of: Slot of each stable channel code, −1 for none (≥ C,), int32.
            size: Slots in use.
            views: Views per slot (capacity,), int64.
            first_ms: First view per slot, epoch ms UTC (capacity,), int64.
            last_ms: Last view per slot, epoch ms UTC (capacity,), int64.
            first_month: First local month index per slot (capacity,), int32.
            active: Distinct local months with a view per slot (capacity,), int32.
            histograms: Views per slot and local hour and weekday.
            partner: Stable codes of each slot's first partners, −1 padded (capacity, per), int32.
            partner_sessions: Their coSessions (capacity, per), int32.
            listed: Stable codes of the listed channels, in list order (≤ cap,), int64.
            pairs: The slice's pair counts, shared (None when no partner is listed:
                ``co_watched_per_channel`` 0).
        """
        self.cap = cap
        self.n = n
        self.last_month = last_month
        self.slot_of = slot_of
        self.size = size
        self.views = views
        self.first_ms = first_ms
        self.last_ms = last_ms
        self.first_month = first_month
        self.active = active
        self.histograms = histograms
        self.partner = partner
        self.partner_sessions = partner_sessions
        self.listed = listed
        self.pairs = pairs
        # rows of the last render by stable code, the clock and month they were rendered for, and
        # the channels whose row may have changed since (appended views, new partners)
        self._rows: dict[int, dict[str, Any]] = {}
        self._rows_for: tuple[int, int, int] | None = None
        self._touched: set[int] = set()

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> ChannelMetricsState:
        """Build the state of the whole slice."""
        opts = view.options
        per = opts.co_watched_per_channel
        present = np.flatnonzero(view.channel_views)  # frame codes, ascending
        size = int(present.size)
        slot_of_code = np.full(len(view.frame.channel_ids), -1, dtype=np.int32)
        slot_of_code[present] = np.arange(size, dtype=np.int32)
        slot_of = np.full(codes.channels, -1, dtype=np.int32)
        slot_of[codes.stable_channel(present)] = np.arange(size, dtype=np.int32)
        ch = view.channel
        has = ch >= 0
        r = slot_of_code[ch[has]].astype(np.int64)
        ts, month = view.ts[has], view.month[has].astype(np.int64)
        first_ms = np.full(size, _INT64_MAX, dtype=np.int64)
        last_ms = np.zeros(size, dtype=np.int64)
        np.minimum.at(first_ms, r, ts)
        np.maximum.at(last_ms, r, ts)
        first_month = np.full(size, _INT32_MAX, dtype=np.int32)
        np.minimum.at(first_month, r, month)
        active = np.zeros(size, dtype=np.int32)
        if r.size:
            m0 = int(month.min())
            width = int(month.max()) - m0 + 1
            active = np.bincount(unique_ints(r * width + (month - m0)) // width, minlength=size).astype(np.int32)
        views = view.channel_views[present].astype(np.int64)
        histograms = Histograms.of(r, view.hour[has], view.weekday[has], views)
        partner = np.full((size, per), -1, dtype=np.int32)
        partner_sessions = np.zeros((size, per), dtype=np.int32)
        pairs = None
        if per:
            pairs = (shared or SliceShared(0)).pairs_of(view, codes)
        if per and size:
            co = view.co_sessions
            slot, partner_code, count = top_partners(co.pair_a, co.pair_b, co.pair_sessions, slot_of_code, size, per)
            place = run_positions(slot)
            partner[slot, place] = codes.stable_channel(partner_code)
            partner_sessions[slot, place] = count
        return cls(
            cap=opts.channel_metrics_cap,
            n=view.n,
            last_month=int(view.month.max()) if view.n else -(2**31),
            slot_of=slot_of,
            size=size,
            views=views,
            first_ms=first_ms,
            last_ms=last_ms,
            first_month=first_month,
            active=active,
            histograms=histograms,
            partner=partner,
            partner_sessions=partner_sessions,
            listed=codes.stable_channel(view.channel_ranking[: opts.channel_metrics_cap]),
            pairs=pairs,
        )

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views."""
        if tail.n == 0:
            return
        self.n += tail.n
        self.last_month = max(self.last_month, int(tail.month.max()))
        codes = tail.base.codes
        ch = tail.channel
        has = np.flatnonzero(ch >= 0)
        if has.size:
            c = ch[has]
            slot = self._slots(c, codes.channels)
            np.add.at(self.views, slot, 1)
            ts = tail.ts[has]
            np.minimum.at(self.first_ms, slot, ts)
            np.maximum.at(self.last_ms, slot, ts)
            np.minimum.at(self.first_month, slot, tail.month[has])
            new_month = tail.last_seen("channel_month")[has] < tail.window_floor
            np.add.at(self.active, slot[new_month], 1)
            self.histograms.add(slot, tail.hour[has], tail.weekday[has], self.views)
            self._touched.update(np.unique(c).tolist())
            candidates = np.union1d(self.listed, c)
            order = np.lexsort((codes.channel_code[candidates], -self.views[self.slot_of[candidates]]))
            self.listed = candidates[order[: self.cap]]
        if self.pairs is not None:
            delta = self.pairs.add(tail)
            if delta.keys.size:
                self._update_partners(delta.keys, delta.after, codes.channel_code)

    def _slots(self, channels: IntArray, n_channels: int) -> IntArray:
        """Return the slots of stable channel codes (int64), giving the channels without one the next ones."""
        self.slot_of = grown(self.slot_of, n_channels, -1)
        slot = self.slot_of[channels]
        if (slot < 0).any():
            new = np.unique(channels[slot < 0])
            self.slot_of[new] = np.arange(self.size, self.size + new.size, dtype=np.int32)
            self.size += int(new.size)
            self.views = grown(self.views, self.size, 0)
            self.first_ms = grown(self.first_ms, self.size, _INT64_MAX)
            self.last_ms = grown(self.last_ms, self.size, 0)
            self.first_month = grown(self.first_month, self.size, _INT32_MAX)
            self.active = grown(self.active, self.size, 0)
            self.histograms.grow(self.size)
            self.partner = grown(self.partner, self.size, -1)
            self.partner_sessions = grown(self.partner_sessions, self.size, 0)
            slot = self.slot_of[channels]
        return slot.astype(np.int64)

    def _update_partners(self, changed: IntArray, after: IntArray, channel_code: IntArray) -> None:
        """Merge the pairs whose count grew (keys ascending, counts after) into both sides' first partners."""
        per = self.partner.shape[1]
        low, high = changed // PAIR_BOUND, changed % PAIR_BOUND
        x = np.concatenate((low, high))
        y = np.concatenate((high, low))
        count = np.concatenate((after, after))
        touched = np.unique(x)
        self._touched.update(touched.tolist())
        rows = self.slot_of[touched].astype(np.int64)
        held = self.partner[rows].ravel().astype(np.int64)
        keep = held >= 0
        x = np.concatenate((x, np.repeat(touched, per)[keep]))
        y = np.concatenate((y, held[keep]))
        count = np.concatenate((count, self.partner_sessions[rows].ravel()[keep].astype(np.int64)))
        # a partner both held and grown: keep the grown (larger) count
        order = np.lexsort((-count, y, x))
        x, y, count = x[order], y[order], count[order]
        first = np.ones(x.size, dtype=np.bool_)
        first[1:] = (x[1:] != x[:-1]) | (y[1:] != y[:-1])
        x, y, count = x[first], y[first], count[first]
        order = np.lexsort((channel_code[y], -count, x))
        x, y, count = x[order], y[order], count[order]
        place = run_positions(x)
        kept = place < per
        slots = self.slot_of[x[kept]].astype(np.int64)
        self.partner[rows] = -1
        self.partner_sessions[rows] = 0
        self.partner[slots, place[kept]] = y[kept]
        self.partner_sessions[slots, place[kept]] = count[kept]

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``channel_metrics`` output."""
        top = self.listed
        if top.size == 0:
            return channel_metrics_data(ctx, self.size, self.n, ListedChannels.none()), "day"
        slot = self.slot_of[top].astype(np.int64)
        channel_code = ctx.codes.channel_code
        partner = self.partner[slot]
        rank, place = np.nonzero(partner >= 0)  # row-major: by rank, then place
        co_watched = (
            rank.astype(np.int64),
            channel_code[partner[rank, place]],
            self.partner_sessions[slot][rank, place].astype(np.int64),
        )
        histograms = self.histograms.rows(slot)
        listed = ListedChannels(
            codes=channel_code[top],
            views=self.views[slot],
            first_ms=self.first_ms[slot],
            last_ms=self.last_ms[slot],
            months=ListedMonths(self.active[slot], self.first_month[slot], self.last_month),
            hours=histograms[:, :24],
            weekdays=histograms[:, 24:],
            co_watched=co_watched,
        )
        # A row depends on its channel's counts and partners, the names, the month (loyalty) and
        # the recent-days start (isNew); the share, on the slice's views: rows of channels without
        # appended views or new partners, rendered for the same month and clock without a rename,
        # are copied with the new share.
        rows_for = (max(ctx.clock.month, self.last_month), ctx.clock.month, ctx.clock.recent_start_ms)
        codes = top.tolist()
        if self._rows_for == rows_for and not ctx.codes.renamed:
            kept = [None if c in self._touched else self._rows.get(c) for c in codes]
        else:
            kept = [None] * len(codes)
        data = channel_metrics_data(ctx, self.size, self.n, listed, kept)
        self._rows = dict(zip(codes, data["channels"], strict=True))
        self._rows_for = rows_for
        self._touched.clear()
        return data, "day"

    @property
    def nbytes(self) -> int:
        """Return the bytes held (not the pair counts: the slice's, counted with it)."""
        arrays: tuple[CodeArray, ...] = (
            self.slot_of,
            self.views,
            self.first_ms,
            self.last_ms,
            self.first_month,
            self.active,
            self.partner,
            self.partner_sessions,
            self.listed,
        )
        return _OBJECT_BYTES + sum(int(a.nbytes) for a in arrays) + self.histograms.nbytes


INCREMENTAL: dict[str, type[IncrementalState]] = {"channel_metrics": ChannelMetricsState}
"""Aggregation type → its incremental state class."""
