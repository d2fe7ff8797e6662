"""Incremental states of the sessions family (see worker.aggregation.incremental.core). Pure: no I/O.

An append changes the slice's sessions in two ways only: the first appended views may continue the
slice's last session (``SliceTail.joins_last``: its views, span, estimated watch time and binge flag
change, its start does not), and the other appended views form new sessions after it. No other
session changes, none disappears (the window start is fixed between appends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.aggregation.common import Output, unique_ints
from worker.aggregation.frame import IntArray
from worker.aggregation.incremental.core import IncrementalState, RenderContext, SliceTail, StableCodes
from worker.aggregation.incremental.shared import ChannelViews, SliceShared
from worker.aggregation.sessions import (
    LOYALIST_TOP_CHANNELS,
    OrderStats,
    PatternCounts,
    session_analysis_data,
    viewing_patterns_data,
)
from worker.aggregation.slices import Slice

__all__ = ["INCREMENTAL", "SessionAnalysisState", "SortedInts", "ViewingPatternsState"]

_INT_BYTES = 32
"""Rough size of a Python int field of a state (object plus slot), bytes."""


class SortedInts:
    """A multiset of int64 values kept sorted in a growable buffer (order statistics in O(1)).

    Updates are memory moves, never a sort: ``replace`` shifts the values between the old and the
    new position, ``insert`` rewrites those after the first insertion point.

    Attributes:
        buf: The values ascending in ``buf[:size]``, spare capacity after (capacity,).
        size: Number of values.
    """

    __slots__ = ("buf", "size")

    def __init__(self, values: IntArray) -> None:
        """Hold ``values`` (any order) (k,)."""
        self.size = int(values.size)
        self.buf: IntArray = np.empty(max(16, self.size + self.size // 4), dtype=np.int64)
        self.buf[: self.size] = np.sort(values)

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return int(self.buf.nbytes) + _INT_BYTES

    def stats(self, total: int) -> OrderStats:
        """Return the :data:`OrderStats` of the values, whose sum ``total`` the caller keeps."""
        n = self.size
        if n == 0:
            return 0, 0, 0, 0
        return total, int(self.buf[(n - 1) // 2]), int(self.buf[n // 2]), int(self.buf[n - 1])

    def replace(self, old: int, new: int) -> None:
        """Replace one occurrence of ``old`` (which must be held) by ``new``."""
        a = self.buf[: self.size]
        p = int(np.searchsorted(a, old, side="left"))
        if p >= self.size or int(a[p]) != old:
            raise ValueError(f"SortedInts.replace: {old} is not held")
        if new >= old:
            q = int(np.searchsorted(a, new, side="right")) - 1  # last position holding a value ≤ new
            a[p:q] = a[p + 1 : q + 1]
        else:
            q = int(np.searchsorted(a, new, side="left"))  # first position holding a value ≥ new
            a[q + 1 : p + 1] = a[q:p]
        a[q] = new

    def insert(self, values: IntArray) -> None:
        """Add ``values`` (any order) (k,): the held values from the first insertion point on are
        rewritten once (merged with the new ones in C)."""
        k = int(values.size)
        if k == 0:
            return
        n = self.size
        if n + k > self.buf.size:
            grown = np.empty(max(2 * self.buf.size, n + k), dtype=np.int64)
            grown[:n] = self.buf[:n]
            self.buf = grown
        v = np.sort(values)
        pos = np.searchsorted(self.buf[:n], v, side="right")
        lo = int(pos[0])
        self.buf[lo : n + k] = np.insert(self.buf[lo:n], pos - lo, v)
        self.size = n + k


@dataclass(frozen=True, slots=True)
class _TailSessions:
    """The sessions holding appended views of a slice, in order (the continued last one first when
    ``joined``), each over all of its views (not only the appended ones).

    Attributes:
        joined: Whether the first of them is the slice's previous last session, continued.
        views: Views per session (k,).
        span_ms: Last minus first view instant per session, ms (k,).
        estimated_ms: Estimated watch time per session, ms (k,) (zeros unless asked for).
        start_hours: Local hour of the first view of each new session (k − joined,).
        old_views: Views of the previous last session before the append (0 unless ``joined``).
        old_span_ms: Its span before the append, ms (0 unless ``joined``).
    """

    joined: bool
    views: IntArray
    span_ms: IntArray
    estimated_ms: IntArray
    start_hours: IntArray
    old_views: int
    old_span_ms: int


def _tail_sessions(tail: SliceTail, old_last_estimated_ms: int | None) -> _TailSessions:
    """Return the sessions holding the appended views of ``tail`` (``tail.n`` ≥ 1).

    ``old_last_estimated_ms``: the slice's last session's estimated watch time before the append
    (ms), needed for the estimates of a continued session; None: estimates are not computed.
    """
    sid = tail.session
    n = tail.n
    first = np.ones(n, dtype=np.bool_)
    np.not_equal(sid[1:], sid[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], n)
    ts = tail.ts
    views = (ends - starts).astype(np.int64)
    first_ts = ts[starts].astype(np.int64)
    span = ts[ends - 1] - first_ts
    if old_last_estimated_ms is None:
        estimated = np.zeros(starts.size, dtype=np.int64)
    else:
        estimated = np.add.reduceat(tail.estimated_ms, starts).astype(np.int64)
    joined = tail.joins_last
    old_views = old_span = 0
    if joined:
        old_views, old_first = tail.last_before
        prev_last = tail.prev_last_ts
        assert prev_last is not None  # a continued session had views
        old_span = prev_last - old_first
        views[0] += old_views
        span[0] += int(first_ts[0]) - old_first
        if old_last_estimated_ms is not None:
            estimated[0] += old_last_estimated_ms + tail.prev_last_estimate_delta_ms
    hours = tail.hour[starts[1:] if joined else starts]
    return _TailSessions(joined, views, span, estimated, hours, old_views, old_span)


class _Binge:
    """Binge sessions and the views they hold, updated by the sessions an append touches."""

    __slots__ = ("options", "sessions", "views")

    def __init__(self, view: Slice) -> None:
        ses = view.sessions
        self.options = view.options
        self.sessions = int(np.count_nonzero(ses.binge))
        self.views = int(ses.views[ses.binge].sum())

    def add(self, t: _TailSessions) -> None:
        """Count the sessions of an append (the continued one replacing its previous state)."""
        if t.joined and self.options.is_binge(t.old_views, t.old_span_ms):
            self.sessions -= 1
            self.views -= t.old_views
        binge = self.options.is_binge(t.views, t.span_ms)
        self.sessions += int(np.count_nonzero(binge))
        self.views += int(t.views[binge].sum())


class SessionAnalysisState:
    """``session_analysis``: per-session views, spans (ms) and estimated watch times (ms) as sorted
    multisets with their totals, the binge counts, the sessions per start hour (24,), and the last
    session's estimated watch time (an append continuing it changes it)."""

    def __init__(self, view: Slice) -> None:
        ses = view.sessions
        estimated = ses.estimated_session_ms
        self.count = ses.count
        self.views = view.n
        self.sorted = (SortedInts(ses.views), SortedInts(ses.span_ms), SortedInts(estimated))
        self.span_total = int(ses.span_ms.sum())
        self.estimated_total = int(estimated.sum())
        self.last_estimated_ms = int(estimated[-1]) if ses.count else 0
        self.binge = _Binge(view)
        hours = view.hour[ses.starts]
        self.by_hour: IntArray = np.bincount(hours, minlength=24).astype(np.int64)

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> SessionAnalysisState:
        """Build the state of the whole slice."""
        return cls(view)

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views (the slice's last session continued, new sessions after it)."""
        if tail.n == 0:
            return
        t = _tail_sessions(tail, self.last_estimated_ms)
        by_views, by_span, by_estimated = self.sorted
        new = 0
        if t.joined:
            by_views.replace(t.old_views, int(t.views[0]))
            by_span.replace(t.old_span_ms, int(t.span_ms[0]))
            by_estimated.replace(self.last_estimated_ms, int(t.estimated_ms[0]))
            self.span_total -= t.old_span_ms
            self.estimated_total -= self.last_estimated_ms
            new = 1
        by_views.insert(t.views[new:])
        by_span.insert(t.span_ms[new:])
        by_estimated.insert(t.estimated_ms[new:])
        self.span_total += int(t.span_ms.sum())
        self.estimated_total += int(t.estimated_ms.sum())
        self.last_estimated_ms = int(t.estimated_ms[-1])
        self.count += int(t.views.size) - new
        self.views += tail.n
        self.binge.add(t)
        self.by_hour += np.bincount(t.start_hours, minlength=24)

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``session_analysis`` output."""
        by_views, by_span, by_estimated = self.sorted
        stats = (by_views.stats(self.views), by_span.stats(self.span_total), by_estimated.stats(self.estimated_total))
        data = session_analysis_data(
            self.count, self.views, stats, self.binge.sessions, self.binge.views, self.by_hour, ctx.options
        )
        return data, "window"

    @property
    def nbytes(self) -> int:
        """Return the bytes held (three sorted buffers, the hour counts, a few Python ints)."""
        return sum(s.nbytes for s in self.sorted) + int(self.by_hour.nbytes) + 10 * _INT_BYTES


class ViewingPatternsState:
    """``viewing_patterns``: views per local hour (24,), weekend views, binge counts, active days
    with the first and last local day, and the slice's views per channel (shared with its other
    states) with the stable codes of the top channels (≤ ``LOYALIST_TOP_CHANNELS``)."""

    def __init__(self, view: Slice, codes: StableCodes, channel_views: ChannelViews) -> None:
        n = view.n
        self.views = n
        self.hours: IntArray = np.bincount(view.hour, minlength=24).astype(np.int64)
        self.weekend = int(np.count_nonzero(view.weekday >= 5))
        self.binge = _Binge(view)
        self.active_days = int(unique_ints(view.day).size)
        # min and max: a local day can repeat after a later one (a clock change back across midnight)
        self.first_day = int(view.day.min()) if n else 0
        self.last_day = int(view.day.max()) if n else 0
        self.channel_views = channel_views
        self.top: IntArray = codes.stable_channel(view.channel_ranking[:LOYALIST_TOP_CHANNELS])

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> ViewingPatternsState:
        """Build the state of the whole slice."""
        return cls(view, codes, (shared or SliceShared(0)).channel_views_of(view, codes))

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views."""
        n = tail.n
        if n == 0:
            return
        self.hours += np.bincount(tail.hour, minlength=24)
        self.weekend += int(np.count_nonzero(tail.weekday >= 5))
        self.binge.add(_tail_sessions(tail, None))
        days = tail.day
        low, high = int(days.min()), int(days.max())
        self.first_day = low if self.views == 0 else min(self.first_day, low)
        self.last_day = high if self.views == 0 else max(self.last_day, high)
        self.active_days += int(np.count_nonzero(tail.last_seen("day") < tail.window_floor))
        self.views += n
        touched = self.channel_views.add(tail)
        if touched.size:
            # counts only grow, so every channel outside the top holds at most the top's least
            # count: after an append the new top is the best of the old top and the channels appended
            candidates = np.union1d(self.top, touched)
            best = np.argsort(-self.channel_views.views[candidates], kind="stable")[:LOYALIST_TOP_CHANNELS]
            self.top = candidates[best]

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``viewing_patterns`` output."""
        counts = PatternCounts(
            views=self.views,
            hours=self.hours,
            weekend=self.weekend,
            binge_views=self.binge.views,
            binge_sessions=self.binge.sessions,
            active_days=self.active_days,
            span_days=self.last_day - self.first_day + 1 if self.views else 0,
            attributed=self.channel_views.attributed,
            channel_count=self.channel_views.channel_count,
            top_channel_views=int(self.channel_views.views[self.top].sum()),
        )
        return viewing_patterns_data(counts, ctx.options), "window"

    @property
    def nbytes(self) -> int:
        """Return the bytes held (the hour counts, a few Python ints; not the views per channel: the
        slice's, counted with it)."""
        return int(self.hours.nbytes + self.top.nbytes) + 10 * _INT_BYTES


INCREMENTAL: dict[str, type[IncrementalState]] = {
    "session_analysis": SessionAnalysisState,
    "viewing_patterns": ViewingPatternsState,
}
"""Aggregation type → its incremental state class."""
