"""Filtered slices of a frame, with lazily computed, cached derived columns. Pure: no I/O.

A ``Slice`` is a sorted index array into a ``Frame`` (the views passing the product/topic/channel
filter and the timeframe window) plus the ``base`` index array (same filter, whole history), which
aggregations comparing against earlier periods need. Sessions and channel co-occurrence are
computed once per slice and shared by every aggregation that uses them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from worker.aggregation.common import code_counts
from worker.aggregation.frame import BoolArray, CodeArray, Frame, Int8Array, Int32Array, IntArray
from worker.aggregation.options import AggregationOptions
from worker.aggregation.timeframes import Clock, Window

__all__ = ["Slice", "Sessions", "CoSessions", "take_rows", "extend_session_pairs"]

_VIEW_DERIVED: tuple[str, ...] = (
    "ts",
    "day",
    "month",
    "weekday",
    "hour",
    "video",
    "channel",
    "topic",
    "shorts",
    "channel_views",
    "channel_ranking",
    "topic_views",
    "sessions",
    "co_sessions",
)
_BASE_DERIVED: tuple[str, ...] = (
    *(f"base_{name}" for name in _VIEW_DERIVED[:9]),
    "base_sessions",
    "base_session_pairs",
    "base_period_views",
)


_Column = TypeVar("_Column", bound=np.generic)


def take_rows(column: npt.NDArray[_Column], idx: CodeArray) -> npt.NDArray[_Column]:
    """Return ``column[idx]`` for sorted distinct indices: a view (no copy) when they are contiguous.

    Columns keep the frame's narrow dtypes; arithmetic that could leave their range widens first.
    The filter's columns over the whole history (``base_*``) are gathered once per base; a
    timeframe's columns are suffix views of them.
    """
    if idx.size and int(idx[-1]) - int(idx[0]) + 1 == idx.size:
        return column[int(idx[0]) : int(idx[-1]) + 1]
    return column[idx]


@dataclass(frozen=True)
class Sessions:
    """Sessions of a slice: maximal runs of views with gaps ≤ ``session_gap_ms``.

    Attributes:
        of_view: Session number of each view of the slice (0-based, time order) (n,).
        starts: Index (into the slice) of each session's first view (s,).
        views: Views per session (s,).
        span_ms: Last minus first view instant per session, ms (s,).
        estimated_ms: Estimated watch time per view, ms (n,) — see ``AggregationOptions``.
        binge: Whether each session is a binge session (s,).
    """

    of_view: Int32Array
    starts: IntArray
    views: IntArray
    span_ms: IntArray
    estimated_ms: Int32Array
    binge: BoolArray

    @property
    def count(self) -> int:
        """Return the number of sessions."""
        return int(self.starts.shape[0])

    @cached_property
    def estimated_session_ms(self) -> IntArray:
        """Return the estimated watch time per session, ms (s,)."""
        if self.count == 0:
            return np.zeros(0, dtype=np.int64)
        out: IntArray = np.add.reduceat(self.estimated_ms, self.starts, dtype=np.int64)
        return out


@dataclass(frozen=True, slots=True)
class CoSessions:
    """Channel co-occurrence within sessions.

    Attributes:
        sessions_with: Sessions containing each channel (C,), after the per-session channel cap.
        pair_a: Lower channel code of each co-watched pair (p,), sorted with ``pair_b``.
        pair_b: Higher channel code of each pair (p,).
        pair_sessions: Sessions containing both channels (p,).
        capped_sessions: Sessions that had more distinct channels than the cap.
        multi_channel_sessions: Sessions with ≥ 2 distinct channels.
    """

    sessions_with: IntArray
    pair_a: IntArray
    pair_b: IntArray
    pair_sessions: IntArray
    capped_sessions: int
    multi_channel_sessions: int


_PAIRS_PER_CHUNK = 1 << 18
"""Channel pairs generated at once when counting co-sessions (bounds the temporary arrays)."""


def _pair_keys(c: CodeArray, sizes: IntArray, n_channels: int, key_type: type[np.signedinteger[Any]]) -> CodeArray:
    """Return the key ``low * n_channels + high`` of every channel pair of every session.

    Args:
        c: Distinct channels of each session, sessions one after another (m,).
        sizes: Number of channels of each session (s,), summing to m.
        n_channels: Channel code bound.
        key_type: Integer type of the keys (int32 when ``n_channels²`` fits it).

    Returns:
        The keys, session by session (Σ k(k−1)/2 of them), without loops over sessions.
    """
    m = c.size
    entry = np.arange(m)
    position = entry - np.repeat(np.cumsum(sizes) - sizes, sizes)  # of each channel within its session
    partners = np.repeat(sizes, sizes) - 1 - position  # channels after it in its session
    run_start = np.cumsum(partners) - partners
    left = np.repeat(entry, partners)
    right = np.arange(left.size) - np.repeat(run_start - entry - 1, partners)
    del entry, position, run_start
    a, b = c[left].astype(key_type), c[right].astype(key_type)
    del left, right
    keys: CodeArray = np.minimum(a, b) * key_type(n_channels) + np.maximum(a, b)
    return keys


def _sum_by_key(keys: IntArray, counts: IntArray) -> tuple[IntArray, IntArray]:
    """Return the distinct keys (≥ 0), ascending, and the sum of ``counts`` (≥ 0) of each."""
    shift = max(int(counts.max()).bit_length(), 1)
    if int(keys.max()) < 2 ** (62 - shift):
        # one sort of (key, count) packed in an int64 (much faster than an argsort)
        packed = (keys << shift) | counts
        packed.sort()
        keys, counts = packed >> shift, packed & ((1 << shift) - 1)
        del packed
    else:
        order = np.argsort(keys)
        keys, counts = keys[order], counts[order]
        del order
    first = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    out_counts: IntArray = np.add.reduceat(counts, first)
    out_keys: IntArray = keys[first]
    return out_keys, out_counts


def _count_pairs(c_kept: CodeArray, starts: IntArray, sizes: IntArray, n_channels: int) -> tuple[IntArray, IntArray]:
    """Count the sessions holding each channel pair.

    Args:
        c_kept: Distinct channels of each session, sessions one after another (m,).
        starts: Offset of each session's channels in ``c_kept`` (s,).
        sizes: Number of channels of each session (s,).
        n_channels: Channel code bound; pair key = ``low * n_channels + high``.

    Returns:
        The distinct pair keys, ascending, and the number of sessions holding each. The pairs of
        runs of consecutive sessions holding about ``_PAIRS_PER_CHUNK`` pairs are generated
        together and counted per chunk (sort + run lengths), so temporaries stay bounded however
        many sessions there are; the chunks' counts are then summed per key.
    """
    key_type = np.int32 if n_channels * n_channels < 2**31 else np.int64
    pairs_end = np.cumsum(sizes * (sizes - 1) // 2)
    keys: list[IntArray] = []
    counts: list[IntArray] = []
    lo = 0
    while lo < sizes.size:
        done = int(pairs_end[lo - 1]) if lo else 0
        hi = max(int(np.searchsorted(pairs_end, done + _PAIRS_PER_CHUNK, side="right")), lo + 1)
        first, last = int(starts[lo]), int(starts[hi - 1] + sizes[hi - 1])
        chunk = _pair_keys(c_kept[first:last], sizes[lo:hi], n_channels, key_type)
        lo = hi
        if chunk.size == 0:
            continue
        chunk.sort()
        run = np.flatnonzero(np.concatenate(([True], chunk[1:] != chunk[:-1], [True])))
        keys.append(chunk[run[:-1]].astype(np.int64))
        counts.append(np.diff(run).astype(np.int64))
        del chunk, run
    if not keys:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    if len(keys) == 1:
        return keys[0], counts[0]
    return _sum_by_key(np.concatenate(keys), np.concatenate(counts))


_VIEWS_PER_CHUNK = 1 << 18
"""Views handled at once when computing sessions and co-sessions (bounds the temporary arrays)."""


def _session_channels(
    ch: CodeArray, sid: Int32Array, n_channels: int, cap: int
) -> tuple[IntArray, CodeArray, IntArray]:
    """Return the sessions holding a channel, their distinct channels (at most ``cap``) and distinct counts.

    Args:
        ch: Channel codes of consecutive views (-1 = none), whole sessions only (m,).
        sid: Session number of each view, non-decreasing (m,).
        n_channels: Channel code bound.
        cap: Most channels kept per session (the first ones to appear).

    Returns:
        The number of every session holding a channel (int64, ascending); the kept channels, sessions
        one after another, each session's in order of first appearance; and the number of distinct
        channels of each of those sessions (before the cap), int64.
    """
    has = ch >= 0
    sid = sid[has]
    ch_has = ch[has]
    del has
    # distinct (session, channel) pairs in order of first appearance: group the views by channel
    # with a stable sort (radix sort on 16-bit codes), keep each channel's first view per session
    sort_key = ch_has.astype(np.uint16) if n_channels <= 1 << 16 else ch_has
    by_channel = np.argsort(sort_key, kind="stable")
    del sort_key
    c_sorted, s_sorted = ch_has[by_channel], sid[by_channel]
    is_first = np.ones(by_channel.size, dtype=np.bool_)
    is_first[1:] = (c_sorted[1:] != c_sorted[:-1]) | (s_sorted[1:] != s_sorted[:-1])
    del c_sorted, s_sorted
    first_mask = np.zeros(by_channel.size, dtype=np.bool_)
    first_mask[by_channel[is_first]] = True
    del by_channel, is_first
    s = sid[first_mask]
    c = ch_has[first_mask]
    del sid, ch_has, first_mask
    group_start = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1]))) if s.size else np.zeros(0, np.int64)
    sizes: IntArray = np.diff(np.concatenate((group_start, [s.size]))).astype(np.int64)
    if sizes.size and int(sizes.max()) > cap:
        rank = np.arange(s.size)
        rank -= np.repeat(group_start, sizes)
        c = c[rank < cap]
    number: IntArray = s[group_start].astype(np.int64)
    return number, c, sizes


@dataclass(frozen=True, slots=True)
class _SessionPairs:
    """The distinct channels and channel pairs of every session of a base (the filter's whole history).

    The sessions of a timeframe are the base's sessions from some session on, except that the first
    one may be cut at the timeframe start; their co-sessions are derived from these arrays without
    generating or sorting the pairs again (see :meth:`Slice.co_sessions`).

    Attributes:
        group_session: Base session number of each session holding a channel, ascending (g,).
        sizes: Distinct channels of each of those sessions, before the cap (g,).
        kept: Their kept channels (at most the cap each), session after session (m,).
        kept_start: Offset of each session's channels in ``kept``, then m (g + 1,).
        pair_start: Offset of each session's pairs in generation order, then p (g + 1,).
        keys: Key ``low * C + high`` of every pair of every session, ascending (p,).
        position: Position of each pair in generation order (p,): ``keys[position >= pair_start[i]]``
            are the sorted keys of the sessions from the i-th on.
    """

    group_session: IntArray
    sizes: IntArray
    kept: CodeArray
    kept_start: IntArray
    pair_start: IntArray
    keys: CodeArray
    position: CodeArray


def _sessions(ts: IntArray, options: AggregationOptions) -> Sessions:
    """Return the sessions of the views at instants ``ts`` (non-decreasing)."""
    n = int(ts.shape[0])
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        empty_32 = np.zeros(0, dtype=np.int32)
        return Sessions(empty_32, empty, empty, empty, empty_32, np.zeros(0, dtype=np.bool_))
    # gaps, session breaks and per-view estimates chunk by chunk: int64 temporaries stay bounded
    new_session = np.empty(n - 1, dtype=np.bool_)
    # per-view estimates fit int32 (both bounds are at most a day); sums are taken in int64
    estimated = np.empty(n, dtype=np.int32)
    for lo in range(0, n - 1, _VIEWS_PER_CHUNK):
        hi = min(lo + _VIEWS_PER_CHUNK, n - 1)
        gaps = np.diff(ts[lo : hi + 1])
        breaks = new_session[lo:hi]
        np.greater(gaps, options.session_gap_ms, out=breaks)
        estimated[lo:hi] = np.where(breaks, options.last_view_estimate_ms, np.minimum(gaps, options.watch_time_cap_ms))
        del gaps, breaks
    estimated[-1] = options.last_view_estimate_ms
    of_view = np.zeros(n, dtype=np.int32)
    np.cumsum(new_session, out=of_view[1:])
    starts = np.concatenate(([0], np.flatnonzero(new_session) + 1)).astype(np.int64)
    del new_session
    ends = np.concatenate((starts[1:], [n]))
    views = ends - starts
    span_ms = ts[ends - 1] - ts[starts]
    binge = options.is_binge(views, span_ms)
    return Sessions(of_view, starts, views.astype(np.int64), span_ms, estimated, binge)


def _channels_by_session(
    ch: CodeArray, ses: Sessions, n_channels: int, cap: int
) -> tuple[IntArray, IntArray, CodeArray]:
    """Return, for each session holding a channel: its number, its distinct channel count (before the
    cap), and its first ``cap`` distinct channels (sessions one after another).

    Sessions never straddle a chunk (chunks end at session starts): per chunk of about
    ``_VIEWS_PER_CHUNK`` views, so temporaries stay bounded.
    """
    n = int(ch.shape[0])
    numbers: list[IntArray] = []
    sizes_of: list[IntArray] = []
    kept: list[CodeArray] = []
    lo = 0
    while lo < n:
        k = int(np.searchsorted(ses.starts, lo + _VIEWS_PER_CHUNK, side="left"))
        hi = int(ses.starts[k]) if k < ses.count else n
        number, c_chunk, sizes_chunk = _session_channels(ch[lo:hi], ses.of_view[lo:hi], n_channels, cap)
        numbers.append(number)
        kept.append(c_chunk)
        sizes_of.append(sizes_chunk)
        lo = hi
    if not kept:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(numbers), np.concatenate(sizes_of), np.concatenate(kept)


def _session_pairs(ch: CodeArray, ses: Sessions, n_channels: int, cap: int) -> _SessionPairs | None:
    """Return the channels and channel pairs of every session of the views with channels ``ch``.

    None when a packed pair (key and position) would not fit an int64 (millions of channels).
    """
    group_session, sizes, kept = _channels_by_session(ch, ses, n_channels, cap)
    kept_sizes = np.minimum(sizes, cap)
    kept_start = np.concatenate(([0], np.cumsum(kept_sizes))).astype(np.int64)
    pair_start = np.concatenate(([0], np.cumsum(kept_sizes * (kept_sizes - 1) // 2))).astype(np.int64)
    total = int(pair_start[-1])
    shift = max(total.bit_length(), 1)
    if (n_channels * n_channels) << shift >= 2**63:
        return None
    key_type = np.int32 if n_channels * n_channels < 2**31 else np.int64
    packed = np.empty(total, dtype=np.int64)
    lo = 0
    while lo < sizes.size:  # about _PAIRS_PER_CHUNK pairs at a time (bounded temporaries)
        hi = max(int(np.searchsorted(pair_start, pair_start[lo] + _PAIRS_PER_CHUNK, side="right")) - 1, lo + 1)
        first, last = int(pair_start[lo]), int(pair_start[hi])
        keys = _pair_keys(kept[kept_start[lo] : kept_start[hi]], kept_sizes[lo:hi], n_channels, key_type)
        chunk = packed[first:last]
        np.left_shift(keys, shift, out=chunk, dtype=np.int64)
        chunk |= np.arange(first, last)
        del keys, chunk
        lo = hi
    packed.sort()  # one sort of (key, position) packed in an int64 (much faster than an argsort)
    keys = (packed >> shift).astype(key_type)
    packed &= (1 << shift) - 1
    position: CodeArray = packed.astype(np.int32) if total < 2**31 else packed
    del packed
    return _SessionPairs(group_session, sizes, kept, kept_start, pair_start, keys, position)


def extend_session_pairs(
    old: _SessionPairs,
    *,
    last_session: int,
    last_start: int,
    channel: CodeArray,
    sessions: Sessions,
    remap: IntArray | None,
    old_channels: int,
    n_channels: int,
    cap: int,
) -> _SessionPairs | None:
    """Return the session pairs of a base that grew by views after its last one, from the old base's.

    Equal, field by field and dtype by dtype, to ``_session_pairs(channel, sessions, n_channels, cap)``
    over the grown base, without regenerating or sorting the pairs of the sessions that did not
    change: every session but the old last one is unchanged (new views come after every old view),
    so only the old last session (which the new views may extend) and the new sessions are
    generated, and their sorted pairs are merged into the kept ones (O(p) instead of O(p log p)).

    Args:
        old: The old base's pairs (``_session_pairs`` or a previous extension).
        last_session: Number of the old base's last session.
        last_start: Index (into the base) of that session's first view.
        channel: Channel codes of the grown base (n,), in the grown frame's codes.
        sessions: Sessions of the grown base (``_sessions``).
        remap: New code of each old channel code (C_old,), increasing, or None when the codes did
            not change.
        old_channels: Channel code bound of the old frame (C_old).
        n_channels: Channel code bound of the grown frame (C).
        cap: Most channels kept per session (``max_channels_per_session``).

    Returns:
        The grown base's pairs, or None when they would not fit the packed form (as
        ``_session_pairs``) or when ``sessions`` does not start a session at ``last_start``
        (not an extension of the old base: the caller computes from scratch).
    """
    if last_session >= sessions.count or int(sessions.starts[last_session]) != last_start:
        return None
    g = int(np.searchsorted(old.group_session, last_session))  # old groups kept: [0, g)
    number, c_tail, sizes_tail = _session_channels(channel[last_start:], sessions.of_view[last_start:], n_channels, cap)
    kept_tail = np.minimum(sizes_tail, cap)
    kept_old = old.kept[: int(old.kept_start[g])]
    if remap is not None:
        kept_old = remap[kept_old].astype(kept_old.dtype)
    kept_start = np.concatenate((old.kept_start[: g + 1], old.kept_start[g] + np.cumsum(kept_tail))).astype(np.int64)
    pair_start = np.concatenate(
        (old.pair_start[: g + 1], old.pair_start[g] + np.cumsum(kept_tail * (kept_tail - 1) // 2))
    ).astype(np.int64)
    total = int(pair_start[-1])
    if (n_channels * n_channels) << max(total.bit_length(), 1) >= 2**63:
        return None
    key_type = np.int32 if n_channels * n_channels < 2**31 else np.int64
    first_tail = int(old.pair_start[g])
    keep = old.position < first_tail  # the old last session's pairs are generated again below
    keys_old = old.keys[keep]
    if remap is not None:
        wide = keys_old.astype(np.int64)
        keys_old = (remap[wide // old_channels] * n_channels + remap[wide % old_channels]).astype(key_type)
        del wide
    else:
        keys_old = keys_old.astype(key_type)
    tail_keys = _pair_keys(c_tail.astype(np.int64), kept_tail, n_channels, key_type)
    order = np.argsort(tail_keys, kind="stable")  # positions ascend within a key, as in the packed sort
    tail_keys = tail_keys[order]
    tail_position = np.arange(first_tail, total, dtype=np.int64)[order]
    at = np.searchsorted(keys_old, tail_keys, side="right")  # tail positions follow every kept one
    position_type = np.int32 if total < 2**31 else np.int64
    keys: CodeArray = np.insert(keys_old, at, tail_keys)
    position: CodeArray = np.insert(old.position[keep].astype(position_type), at, tail_position.astype(position_type))
    kept = np.concatenate((kept_old, c_tail.astype(kept_old.dtype)))
    return _SessionPairs(
        group_session=np.concatenate((old.group_session[:g], number)).astype(np.int64),
        sizes=np.concatenate((old.sizes[:g], sizes_tail)).astype(np.int64),
        kept=kept,
        kept_start=kept_start,
        pair_start=pair_start,
        keys=keys,
        position=position,
    )


def _run_counts(keys: CodeArray) -> tuple[IntArray, IntArray]:
    """Return the distinct values of sorted ``keys`` and how often each occurs."""
    if keys.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    run = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1], [True])))
    return keys[run[:-1]].astype(np.int64), np.diff(run).astype(np.int64)


def _add_pairs(keys: IntArray, counts: IntArray, extra: IntArray) -> tuple[IntArray, IntArray]:
    """Return ``keys``/``counts`` (distinct keys, ascending) with one more session for each of ``extra``
    (distinct keys, ascending)."""
    at = np.searchsorted(keys, extra)
    found = at < keys.size
    found[found] = keys[at[found]] == extra[found]
    counts = counts.copy()
    counts[at[found]] += 1
    new = ~found
    return np.insert(keys, at[new], extra[new]), np.insert(counts, at[new], 1)


class Slice:
    """The views of one filter set (time-sorted), with cached derived data.

    Args:
        frame: The user's frame.
        idx: Sorted row indices of the views in the window (filter + timeframe), any signed
            integer type (the engine's are int32 when the frame has fewer than 2^31 rows).
        base: Sorted row indices of the views passing the filter over the whole history (same type).
        clock: Now, in the user's zone.
        window: The resolved timeframe.
        options: Thresholds.
        start: When given, ``idx`` is ``base[start:]`` (a timeframe is a suffix of the filter's
            history): the slice's columns are then views of the base's columns, gathered once per
            base and shared by every timeframe (see :meth:`share_derived`).
        base_ts: When given, ``frame.ts[base]`` (the instants of the base, already gathered).
        derive_co_sessions: When True (and ``start`` is given), co-sessions are derived from the
            base's sessions (:meth:`base_session_pairs`), computed once per base and shared by every
            timeframe: worth it when the base's timeframes together hold at least as many views
            as the base.
        pairs_provider: When given, :meth:`base_session_pairs` asks it for the base's pairs (it may
            reuse pairs kept from an earlier recompute: ``worker.aggregation.derived``) instead of
            computing them; it must return what ``_session_pairs`` would.
    """

    def __init__(
        self,
        frame: Frame,
        idx: CodeArray,
        base: CodeArray,
        clock: Clock,
        window: Window,
        options: AggregationOptions,
        *,
        start: int | None = None,
        base_ts: IntArray | None = None,
        derive_co_sessions: bool = False,
        pairs_provider: Callable[[Slice], _SessionPairs | None] | None = None,
    ) -> None:
        if base_ts is not None:
            self.__dict__["base_ts"] = base_ts  # already gathered by the caller: not gathered twice
        self.frame = frame
        self.idx = idx
        self.base = base
        self.start = start
        self.derive_co_sessions = derive_co_sessions and start is not None
        self.pairs_provider = pairs_provider
        self.clock = clock
        self.window = window
        self.options = options

    def share_derived(self, other: Slice) -> None:
        """Reuse the derived data already computed by ``other``, a slice of the same frame and options.

        Every cached property depends only on the frame, ``idx`` (or ``base``) and the options, never
        on the window or the clock: the ``base_*`` columns are shared when the bases are the same
        array, everything else too when ``idx`` is (two timeframes selecting the same views).
        """
        if other.frame is not self.frame or other.options != self.options or other.base is not self.base:
            return
        same_views = other.idx is self.idx and other.start == self.start
        names = _BASE_DERIVED + (_VIEW_DERIVED if same_views else ())
        for name in names:
            if name in other.__dict__:
                self.__dict__[name] = other.__dict__[name]

    @property
    def n(self) -> int:
        """Return the number of views in the slice."""
        return int(self.idx.shape[0])

    @cached_property
    def ts(self) -> IntArray:
        """Return view instants, epoch ms UTC."""
        if self.start is not None:
            return self.base_ts[self.start :]
        return take_rows(self.frame.ts, self.idx)

    @cached_property
    def day(self) -> Int32Array:
        """Return local epoch days."""
        if self.start is not None:
            return self.base_day[self.start :]
        return take_rows(self.frame.day, self.idx)

    @cached_property
    def month(self) -> Int32Array:
        """Return local month indices."""
        if self.start is not None:
            return self.base_month[self.start :]
        return take_rows(self.frame.month, self.idx)

    @cached_property
    def weekday(self) -> Int8Array:
        """Return local ISO weekdays (Monday = 0)."""
        if self.start is not None:
            return self.base_weekday[self.start :]
        return take_rows(self.frame.weekday, self.idx)

    @cached_property
    def hour(self) -> Int8Array:
        """Return local hours."""
        if self.start is not None:
            return self.base_hour[self.start :]
        return take_rows(self.frame.hour, self.idx)

    @cached_property
    def video(self) -> Int32Array:
        """Return video codes (-1 = none)."""
        if self.start is not None:
            return self.base_video[self.start :]
        return take_rows(self.frame.video, self.idx)

    @cached_property
    def channel(self) -> Int32Array:
        """Return channel codes (-1 = none)."""
        if self.start is not None:
            return self.base_channel[self.start :]
        return take_rows(self.frame.channel, self.idx)

    @cached_property
    def topic(self) -> Int8Array:
        """Return topic codes (-1 = unclassified)."""
        if self.start is not None:
            return self.base_topic[self.start :]
        return take_rows(self.frame.topic, self.idx)

    @cached_property
    def shorts(self) -> BoolArray:
        """Return the Shorts flag."""
        if self.start is not None:
            return self.base_shorts[self.start :]
        return take_rows(self.frame.shorts, self.idx)

    @cached_property
    def base_ts(self) -> IntArray:
        """Return view instants, epoch ms UTC of the filter's views over the whole history."""
        return take_rows(self.frame.ts, self.base)

    @cached_property
    def base_day(self) -> Int32Array:
        """Return local epoch days of the filter's views over the whole history."""
        return take_rows(self.frame.day, self.base)

    @cached_property
    def base_month(self) -> Int32Array:
        """Return local month indices of the filter's views over the whole history."""
        return take_rows(self.frame.month, self.base)

    @cached_property
    def base_weekday(self) -> Int8Array:
        """Return local ISO weekdays (Monday = 0) of the filter's views over the whole history."""
        return take_rows(self.frame.weekday, self.base)

    @cached_property
    def base_hour(self) -> Int8Array:
        """Return local hours of the filter's views over the whole history."""
        return take_rows(self.frame.hour, self.base)

    @cached_property
    def base_video(self) -> Int32Array:
        """Return video codes (-1 = none) of the filter's views over the whole history."""
        return take_rows(self.frame.video, self.base)

    @cached_property
    def base_channel(self) -> Int32Array:
        """Return channel codes (-1 = none) of the filter's views over the whole history."""
        return take_rows(self.frame.channel, self.base)

    @cached_property
    def base_topic(self) -> Int8Array:
        """Return topic codes (-1 = unclassified) of the filter's views over the whole history."""
        return take_rows(self.frame.topic, self.base)

    @cached_property
    def base_shorts(self) -> BoolArray:
        """Return the Shorts flag of the filter's views over the whole history."""
        return take_rows(self.frame.shorts, self.base)

    @cached_property
    def base_period_views(self) -> dict[tuple[int, int], int]:
        """Return the memo of :meth:`base_views_between`, shared by the timeframes of a base."""
        return {}

    def base_views_between(self, first_day: int, last_day: int) -> int:
        """Return the filter's views over the whole history on local days ``first_day … last_day``."""
        memo = self.base_period_views
        views = memo.get((first_day, last_day))
        if views is None:
            days = self.base_day
            views = memo[first_day, last_day] = int(np.count_nonzero((days >= first_day) & (days <= last_day)))
        return views

    @cached_property
    def channel_views(self) -> IntArray:
        """Return views per channel code (C,)."""
        ch = self.channel
        out: IntArray = np.bincount(ch[ch >= 0], minlength=len(self.frame.channel_ids)).astype(np.int64)
        return out

    @cached_property
    def topic_views(self) -> IntArray:
        """Return views per topic code (T,), unclassified views not counted."""
        return code_counts(self.topic, len(self.frame.topic_slugs))

    @cached_property
    def channel_ranking(self) -> IntArray:
        """Return channel codes with ≥ 1 view, by views desc then channel id asc."""
        views = self.channel_views
        present = np.flatnonzero(views > 0)
        order = np.lexsort((present, -views[present]))
        out: IntArray = present[order]
        return out

    @cached_property
    def sessions(self) -> Sessions:
        """Return the sessions of the slice (computed on the filtered views only)."""
        if self.start == 0:
            return self.base_sessions
        return _sessions(self.ts, self.options)

    @cached_property
    def base_sessions(self) -> Sessions:
        """Return the sessions of the filter's views over the whole history."""
        return _sessions(self.base_ts, self.options)

    @cached_property
    def base_session_pairs(self) -> _SessionPairs | None:
        """Return the channels and channel pairs of every session of the base (None: see ``_session_pairs``)."""
        if self.pairs_provider is not None:
            return self.pairs_provider(self)
        return _session_pairs(
            self.base_channel, self.base_sessions, len(self.frame.channel_ids), self.options.max_channels_per_session
        )

    @cached_property
    def co_sessions(self) -> CoSessions:
        """Return channel co-occurrence within sessions (distinct channels per session capped)."""
        n_channels = len(self.frame.channel_ids)
        cap = self.options.max_channels_per_session
        ch = self.channel
        if not (ch >= 0).any():
            empty = np.zeros(0, dtype=np.int64)
            return CoSessions(np.zeros(n_channels, dtype=np.int64), empty, empty, empty, 0, 0)
        pairs = self.base_session_pairs if self.derive_co_sessions else None
        if pairs is None:
            _, sizes, c_kept = _channels_by_session(ch, self.sessions, n_channels, cap)
            kept_sizes = np.minimum(sizes, cap)
            kept_start = np.concatenate(([0], np.cumsum(kept_sizes)[:-1]))
            sessions_with = np.bincount(c_kept, minlength=n_channels).astype(np.int64)
            pk, counts = _count_pairs(c_kept, kept_start, kept_sizes, n_channels)
        else:
            pk, counts, sessions_with, sizes = self._derived_pairs(pairs, n_channels, cap)
        return CoSessions(
            sessions_with=sessions_with,
            pair_a=(pk // n_channels).astype(np.int64),
            pair_b=(pk % n_channels).astype(np.int64),
            pair_sessions=counts.astype(np.int64),
            capped_sessions=int(np.count_nonzero(sizes > cap)),
            multi_channel_sessions=int(np.count_nonzero(sizes >= 2)),
        )

    def _derived_pairs(
        self, pairs: _SessionPairs, n_channels: int, cap: int
    ) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """Return the co-sessions of this suffix of the base from the base's session pairs.

        Returns:
            The distinct pair keys (ascending) and their session counts, the sessions holding each
            channel, and the distinct channel count of each session holding one (before the cap).
        """
        start = int(self.start or 0)
        base_ses = self.base_sessions
        session = int(base_ses.of_view[start]) if start < base_ses.of_view.size else base_ses.count
        # the base session holding the timeframe start is cut there unless it starts there
        cut = session < base_ses.count and int(base_ses.starts[session]) != start
        g0 = int(np.searchsorted(pairs.group_session, session + 1 if cut else session))
        p0 = int(pairs.pair_start[g0])
        pk, counts = _run_counts(pairs.keys if p0 == 0 else pairs.keys[pairs.position >= p0])
        kept = pairs.kept[int(pairs.kept_start[g0]) :]
        sizes = pairs.sizes[g0:]
        if cut:
            end = int(base_ses.starts[session + 1]) if session + 1 < base_ses.count else self.n + start
            ch = self.base_channel[start:end]
            _, c_cut, size_cut = _session_channels(ch, np.zeros(ch.size, dtype=np.int32), n_channels, cap)
            if size_cut.size:
                kept = np.concatenate((c_cut, kept))
                sizes = np.concatenate((size_cut, sizes))
                cut_keys = _pair_keys(c_cut, np.minimum(size_cut, cap), n_channels, np.int64)
                pk, counts = _add_pairs(pk, counts, np.sort(cut_keys))
        sessions_with = np.bincount(kept, minlength=n_channels).astype(np.int64)
        return pk, counts, sessions_with, sizes
