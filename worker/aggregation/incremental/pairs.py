"""Co-session pair counts of one slice, shared by the channel states that need them. Pure: no I/O.

``channel_metrics`` (each channel's first co-watched partners) and ``channel_relationships`` (the
listed pairs) both count, per pair of channels, the sessions holding both. One
:class:`SessionPairs` per slice (filter base × timeframe) serves both: built once from the slice,
extended once per append (:meth:`SessionPairs.add` returns the same :class:`PairDelta` to each
state that asks for the same tail), and counted once in the state's memory. It held about 11 of the
37 MiB of incremental state of a 100k-view history when each state kept its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.aggregation.frame import IntArray
from worker.aggregation.incremental.core import KeyCounts, SliceTail, StableCodes
from worker.aggregation.slices import Slice, _session_channels

__all__ = ["PAIR_BOUND", "PairDelta", "SessionPairs"]

PAIR_BOUND = 1 << 31
"""Pair key of stable channel codes ``low < high``: ``low * 2^31 + high`` (both < 2^31: fits an int64)."""

_OBJECT_BYTES = 256
"""Rough bytes of the object with its few Python ints (besides its arrays)."""


@dataclass(frozen=True)
class PairDelta:
    """What one append changed in a slice's pair counts.

    Attributes:
        keys: The pairs whose count grew, ascending (p,), int64.
        before: Their counts before the append (p,), int64.
        after: Their counts after it (p,), int64.
        multi: Change of the sessions with ≥ 2 distinct channels (a grown last session may join them).
        capped: Sessions added with more than ``max_channels_per_session`` distinct channels.
        fresh: Stable codes of the channels the append added to a session's kept channels, one entry
            per (session, channel) (each session holding them gained one), int64.
    """

    keys: IntArray
    before: IntArray
    after: IntArray
    multi: int
    capped: int
    fresh: IntArray

    @classmethod
    def none(cls) -> PairDelta:
        """Return the delta of an append that changed no pair and no session."""
        empty = np.zeros(0, dtype=np.int64)
        return cls(empty, empty, empty, 0, 0, empty)


class SessionPairs:
    """Sessions holding each channel pair of a slice, by pair key of stable channel codes.

    Also the channels of the slice's last session, the one an append can extend: a session's
    channels are its first ``cap`` distinct channels by first view, so appended views of that
    session can only add channels at the end of its list, and the pairs they add are those of an
    added channel with an earlier one. Every earlier session is final.

    Attributes:
        cap: ``max_channels_per_session``.
        counts: Sessions holding each pair with a shared session (12 bytes per pair).
        last_kept: Stable codes of the last session's kept channels (≤ ``cap``), in order of first
            view, int64 (empty when the slice is empty or its last session has no channel).
        last_size: Distinct channels of the last session (before the cap).
        epoch: The slice epoch the counts describe (see :class:`SliceShared`).
    """

    __slots__ = ("cap", "counts", "last_kept", "last_size", "epoch", "_tail", "_delta")

    def __init__(self, cap: int, counts: KeyCounts, last: tuple[IntArray, int], epoch: int) -> None:
        self.cap = cap
        self.counts = counts
        self.last_kept, self.last_size = last
        self.epoch = epoch
        self._tail: SliceTail | None = None
        self._delta = PairDelta.none()

    @classmethod
    def of(cls, view: Slice, codes: StableCodes, epoch: int) -> SessionPairs:
        """Return the pair counts of a whole slice (``view.co_sessions``, in stable codes)."""
        cap = view.options.max_channels_per_session
        co = view.co_sessions
        a, b = codes.stable_channel(co.pair_a), codes.stable_channel(co.pair_b)
        keys = np.minimum(a, b) * PAIR_BOUND + np.maximum(a, b)
        counts = co.pair_sessions
        if keys.size > 1 and not bool((keys[1:] > keys[:-1]).all()):  # stable codes not in id order
            order = np.argsort(keys)
            keys, counts = keys[order], counts[order]
        last: tuple[IntArray, int] = (np.zeros(0, dtype=np.int64), 0)
        if view.sessions.count:
            ch = view.channel[int(view.sessions.starts[-1]) :]
            _, kept, sizes = _session_channels(ch, np.zeros(ch.size, dtype=np.int32), codes.channels, cap)
            if sizes.size:
                last = (codes.stable_channel(kept), int(sizes[0]))
        return cls(cap, KeyCounts(keys, counts), last, epoch)

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return _OBJECT_BYTES + self.counts.nbytes + int(self.last_kept.nbytes)

    def add(self, tail: SliceTail) -> PairDelta:
        """Count the sessions the appended views add to pairs; the same tail again returns the same delta.

        Each state sharing the counts passes the slice's tail of every epoch it is extended at (the
        framework hands the states of a slice one tail object per epoch), so the first call adds it
        and the others get its delta. A state that misses an epoch is rebuilt, never extended.
        """
        if tail is self._tail:
            return self._delta
        delta = self._count(tail)
        self._tail, self._delta = tail, delta
        self.epoch += 1
        return delta

    def _count(self, tail: SliceTail) -> PairDelta:
        if tail.n == 0:
            return PairDelta.none()
        cap = self.cap
        ch, sid = tail.channel, tail.session
        last = tail.sessions_before - 1  # the slice's last session before the append
        final = int(sid[-1])  # the last one after
        joined = tail.joins_last
        if joined and self.last_size > cap:  # its kept channels are final: its views change nothing
            skip = int(np.searchsorted(sid, last, side="right"))
            ch, sid = ch[skip:], sid[skip:]
            joined = False
        prefix = self.last_kept.size if joined else 0
        if prefix:  # the last session's channels so far, as views in their order of first view
            ch = np.concatenate((self.last_kept, ch))
            sid = np.concatenate((np.full(prefix, last, dtype=np.int64), sid))
        number, kept, sizes = _session_channels(ch, sid.astype(np.int32), tail.base.codes.channels, cap)
        if number.size == 0:
            if final != last:
                self.last_kept, self.last_size = np.zeros(0, dtype=np.int64), 0
            return PairDelta.none()
        kept = kept.astype(np.int64)
        kept_sizes = np.minimum(sizes, cap)
        old_kept = np.zeros(number.size, dtype=np.int64)  # channels of each session counted before
        old_size = np.zeros(number.size, dtype=np.int64)
        if joined and int(number[0]) == last:
            old_kept[0], old_size[0] = prefix, self.last_size
        multi = int(np.count_nonzero(sizes >= 2)) - int(np.count_nonzero(old_size >= 2))
        capped = int(np.count_nonzero(sizes > cap))  # a joined session was not capped (see above)
        # each kept channel not counted before pairs with every channel before it in its session
        group_start = np.cumsum(kept_sizes) - kept_sizes
        start_of = np.repeat(group_start, kept_sizes)
        position = np.arange(kept.size, dtype=np.int64) - start_of
        fresh = position >= np.repeat(old_kept, kept_sizes)
        partners = np.where(fresh, position, 0)
        right = np.repeat(np.arange(kept.size, dtype=np.int64), partners)
        left = np.repeat(start_of, partners) + np.arange(right.size, dtype=np.int64)
        left -= np.repeat(np.cumsum(partners) - partners, partners)
        a, b = kept[left], kept[right]
        if int(number[-1]) == final:
            self.last_kept, self.last_size = kept[int(group_start[-1]) :], int(sizes[-1])
        elif final != last:
            self.last_kept, self.last_size = np.zeros(0, dtype=np.int64), 0
        keys, added = np.unique(np.minimum(a, b) * PAIR_BOUND + np.maximum(a, b), return_counts=True)
        before = self.counts.add(keys, added) if keys.size else np.zeros(0, dtype=np.int64)
        return PairDelta(keys, before, before + added, multi, capped, kept[fresh])
