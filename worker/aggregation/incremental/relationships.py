"""Incremental states of the relationships family (see worker.aggregation.incremental.core). Pure: no I/O."""

from __future__ import annotations

import numpy as np

from worker.aggregation.channels import listed_pairs, relationships_data
from worker.aggregation.common import Output
from worker.aggregation.frame import IntArray
from worker.aggregation.incremental.core import (
    IncrementalState,
    KeyCounts,
    RenderContext,
    SliceTail,
    StableCodes,
    grown,
)
from worker.aggregation.slices import Slice, _session_channels

__all__ = ["INCREMENTAL", "RelationshipsState"]

_PAIR_BOUND = 1 << 31
"""Pair key = ``low * _PAIR_BOUND + high`` in stable channel codes (both < 2^31: the key fits an int64)."""


class RelationshipsState:
    """``channel_relationships``: session counts, per-channel sessions and per-pair co-sessions.

    An append changes only the slice's last session (when the first appended view continues it: it
    may gain channels, never lose its first ``max_channels_per_session``) and adds sessions, so every
    count only grows: the listed pairs after an append are the best of the listed pairs before and
    the pairs whose count changed (a pair that did not change stays below every earlier listed pair,
    which kept or raised its count; channel id order among existing channels never changes).

    Attributes:
        cap: ``max_channels_per_session``.
        min_co: ``min_co_sessions``.
        pairs_cap: ``pairs_cap``.
        sessions: Sessions of the slice.
        multi: Sessions with ≥ 2 distinct channels.
        capped: Sessions with more than ``cap`` distinct channels.
        sessions_with: Sessions holding each stable channel code (after the per-session cap) (C,), int64.
        pairs: Sessions holding each pair, by key ``low * 2^31 + high`` (stable codes) (p pairs).
        pair_count: Pairs with ≥ ``min_co`` sessions.
        top_keys: Keys of the listed pairs, in output order (coSessions desc, then A id, B id asc) (k,).
        top_counts: Their sessions (k,), int64.
        last_kept: Distinct stable channels of the slice's last session in order of first view,
            at most ``cap`` (all of them unless ``last_size > cap``), int64.
        last_size: Distinct channels of the slice's last session (before the cap).
    """

    def __init__(
        self,
        cap: int,
        min_co: int,
        pairs_cap: int,
        counts: tuple[int, int, int, int],
        sessions_with: IntArray,
        keys: IntArray,
        pair_counts: IntArray,
        top: tuple[IntArray, IntArray],
        last: tuple[IntArray, int],
    ) -> None:
        self.cap, self.min_co, self.pairs_cap = cap, min_co, pairs_cap
        self.sessions, self.multi, self.capped, self.pair_count = counts
        self.sessions_with = sessions_with
        self.pairs = KeyCounts(keys, pair_counts)
        self.top_keys, self.top_counts = top
        self.last_kept, self.last_size = last

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes) -> RelationshipsState:
        """Build the state of the whole slice (its co-sessions, translated to stable codes)."""
        opts = view.options
        cap = opts.max_channels_per_session
        co = view.co_sessions
        sa, sb = codes.stable_channel(co.pair_a), codes.stable_channel(co.pair_b)
        keys = np.minimum(sa, sb) * _PAIR_BOUND + np.maximum(sa, sb)
        del sa, sb
        pair_count, listed = listed_pairs(co.pair_sessions, opts)
        top = (keys[listed], co.pair_sessions[listed].astype(np.int64))
        order = np.argsort(keys)
        keys = keys[order]
        pair_counts = co.pair_sessions[order]
        del order
        sessions_with = np.zeros(codes.channels, dtype=np.int64)
        sessions_with[codes.channel] = co.sessions_with
        ses = view.sessions
        last: tuple[IntArray, int] = (np.zeros(0, dtype=np.int64), 0)
        if ses.count:
            ch = view.channel[int(ses.starts[-1]) :]
            _, kept, sizes = _session_channels(ch, np.zeros(ch.size, dtype=np.int32), codes.channels, cap)
            if sizes.size:
                last = (codes.stable_channel(kept), int(sizes[0]))
        counts = (ses.count, co.multi_channel_sessions, co.capped_sessions, pair_count)
        return cls(cap, opts.min_co_sessions, opts.pairs_cap, counts, sessions_with, keys, pair_counts, top, last)

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views: the grown last session's new pairs and the new sessions' pairs."""
        if tail.n == 0:
            return
        codes = tail.base.codes
        self.sessions_with = grown(self.sessions_with, codes.channels, 0)
        ch, sid = tail.channel, tail.session
        last = self.sessions - 1  # the slice's last session before the append
        final = int(sid[-1])  # the last one after
        self.sessions = final + 1
        joined = tail.joins_last
        if joined and self.last_size > self.cap:  # its kept channels are final: its views change nothing
            skip = int(np.searchsorted(sid, last, side="right"))
            ch, sid = ch[skip:], sid[skip:]
            joined = False
        prefix = self.last_kept.size if joined else 0
        if prefix:  # the last session's channels so far, as views in their order of first view
            ch = np.concatenate((self.last_kept, ch))
            sid = np.concatenate((np.full(prefix, last, dtype=np.int64), sid))
        number, kept, sizes = _session_channels(ch, sid.astype(np.int32), codes.channels, self.cap)
        if number.size == 0:
            if final != last:
                self.last_kept, self.last_size = np.zeros(0, dtype=np.int64), 0
            return
        kept = kept.astype(np.int64)
        kept_sizes = np.minimum(sizes, self.cap)
        old_kept = np.zeros(number.size, dtype=np.int64)  # channels of each session counted before
        old_size = np.zeros(number.size, dtype=np.int64)
        if joined and int(number[0]) == last:
            old_kept[0], old_size[0] = prefix, self.last_size
        self.multi += int(np.count_nonzero(sizes >= 2)) - int(np.count_nonzero(old_size >= 2))
        self.capped += int(np.count_nonzero(sizes > self.cap))  # a joined session was not capped (see above)
        # each kept channel not counted before pairs with every channel before it in its session
        group_start = np.cumsum(kept_sizes) - kept_sizes
        start_of = np.repeat(group_start, kept_sizes)
        position = np.arange(kept.size, dtype=np.int64) - start_of
        fresh = position >= np.repeat(old_kept, kept_sizes)
        np.add.at(self.sessions_with, kept[fresh], 1)  # the appended channels only, not every channel
        partners = np.where(fresh, position, 0)
        right = np.repeat(np.arange(kept.size, dtype=np.int64), partners)
        left = np.repeat(start_of, partners) + np.arange(right.size, dtype=np.int64)
        left -= np.repeat(np.cumsum(partners) - partners, partners)
        a, b = kept[left], kept[right]
        self._add_pairs(np.minimum(a, b) * _PAIR_BOUND + np.maximum(a, b), codes)
        if int(number[-1]) == final:
            self.last_kept, self.last_size = kept[int(group_start[-1]) :], int(sizes[-1])
        elif final != last:
            self.last_kept, self.last_size = np.zeros(0, dtype=np.int64), 0

    def _add_pairs(self, new_keys: IntArray, codes: StableCodes) -> None:
        """Add one session to each pair of ``new_keys`` (one entry per session holding it)."""
        if new_keys.size == 0:
            return
        uk, add = np.unique(new_keys, return_counts=True)
        before = self.pairs.add(uk, add)
        after = before + add
        self.pair_count += int(np.count_nonzero((before < self.min_co) & (after >= self.min_co)))
        # the listed pairs: the best of the previous ones and the changed ones that reach min_co
        changed = after >= self.min_co
        cand = np.unique(np.concatenate((self.top_keys, uk[changed])))
        cnt = self.pairs.get(cand)
        fa, fb = codes.channel_code[cand // _PAIR_BOUND], codes.channel_code[cand % _PAIR_BOUND]
        order = np.lexsort((np.maximum(fa, fb), np.minimum(fa, fb), -cnt))[: self.pairs_cap]
        self.top_keys, self.top_counts = cand[order], cnt[order]

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``channel_relationships`` output."""
        low, high = self.top_keys // _PAIR_BOUND, self.top_keys % _PAIR_BOUND
        fl, fh = ctx.codes.channel_code[low], ctx.codes.channel_code[high]
        c = self.top_counts
        union = self.sessions_with[low] + self.sessions_with[high] - c
        counts = (self.sessions, self.multi, self.capped, self.pair_count)
        data = relationships_data(ctx.frame, ctx.options, counts, np.minimum(fl, fh), np.maximum(fl, fh), c, union)
        return data, "window"

    @property
    def nbytes(self) -> int:
        """Return the bytes held (pairs: 16 bytes each)."""
        arrays = (self.sessions_with, self.top_keys, self.top_counts, self.last_kept)
        return sum(int(x.nbytes) for x in arrays) + self.pairs.nbytes + 256


INCREMENTAL: dict[str, type[IncrementalState]] = {"channel_relationships": RelationshipsState}
"""Aggregation type → its incremental state class."""
