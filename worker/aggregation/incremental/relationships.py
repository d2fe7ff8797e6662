"""Incremental states of the relationships family (see worker.aggregation.incremental.core). Pure: no I/O."""

from __future__ import annotations

import numpy as np

from worker.aggregation.channels import listed_pairs, relationships_data
from worker.aggregation.common import Output
from worker.aggregation.frame import IntArray
from worker.aggregation.incremental.core import (
    IncrementalState,
    RenderContext,
    SliceTail,
    StableCodes,
    grown,
)
from worker.aggregation.incremental.pairs import PAIR_BOUND, PairDelta, SessionPairs
from worker.aggregation.incremental.shared import SliceShared
from worker.aggregation.slices import Slice

__all__ = ["INCREMENTAL", "RelationshipsState"]


class RelationshipsState:
    """``channel_relationships``: session counts, per-channel sessions and the listed pairs.

    An append changes only the slice's last session (when the first appended view continues it: it
    may gain channels, never lose its first ``max_channels_per_session``) and adds sessions, so every
    count only grows: the listed pairs after an append are the best of the listed pairs before and
    the pairs whose count changed (a pair that did not change stays below every earlier listed pair,
    which kept or raised its count; channel id order among existing channels never changes). The
    per-pair session counts are the slice's (:class:`SessionPairs`, shared with ``channel_metrics``).

    Attributes:
        min_co: ``min_co_sessions``.
        pairs_cap: ``pairs_cap``.
        sessions: Sessions of the slice.
        multi: Sessions with ≥ 2 distinct channels.
        capped: Sessions with more than ``max_channels_per_session`` distinct channels.
        sessions_with: Sessions holding each stable channel code (after the per-session cap) (C,), int64.
        pairs: Sessions holding each pair, and the last session's channels (the slice's, shared).
        pair_count: Pairs with ≥ ``min_co`` sessions.
        top_keys: Keys of the listed pairs, in output order (coSessions desc, then A id, B id asc) (k,).
        top_counts: Their sessions (k,), int64.
    """

    def __init__(
        self,
        min_co: int,
        pairs_cap: int,
        counts: tuple[int, int, int, int],
        sessions_with: IntArray,
        pairs: SessionPairs,
        top: tuple[IntArray, IntArray],
    ) -> None:
        self.min_co, self.pairs_cap = min_co, pairs_cap
        self.sessions, self.multi, self.capped, self.pair_count = counts
        self.sessions_with = sessions_with
        self.pairs = pairs
        self.top_keys, self.top_counts = top

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> RelationshipsState:
        """Build the state of the whole slice (its co-sessions, translated to stable codes)."""
        opts = view.options
        co = view.co_sessions
        sa, sb = codes.stable_channel(co.pair_a), codes.stable_channel(co.pair_b)
        pair_count, listed = listed_pairs(co.pair_sessions, opts)
        top = (
            np.minimum(sa[listed], sb[listed]) * PAIR_BOUND + np.maximum(sa[listed], sb[listed]),
            co.pair_sessions[listed].astype(np.int64),
        )
        del sa, sb
        sessions_with = np.zeros(codes.channels, dtype=np.int64)
        sessions_with[codes.channel] = co.sessions_with
        pairs = (shared or SliceShared(0)).pairs_of(view, codes)
        counts = (view.sessions.count, co.multi_channel_sessions, co.capped_sessions, pair_count)
        return cls(opts.min_co_sessions, opts.pairs_cap, counts, sessions_with, pairs, top)

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views: the grown last session's new pairs and the new sessions' pairs."""
        if tail.n == 0:
            return
        codes = tail.base.codes
        self.sessions_with = grown(self.sessions_with, codes.channels, 0)
        self.sessions = int(tail.session[-1]) + 1
        delta = self.pairs.add(tail)
        self.multi += delta.multi
        self.capped += delta.capped
        np.add.at(self.sessions_with, delta.fresh, 1)  # the appended channels only, not every channel
        self._list(delta, codes)

    def _list(self, delta: PairDelta, codes: StableCodes) -> None:
        """Count the pairs reaching ``min_co`` and merge the grown ones into the listed pairs."""
        if delta.keys.size == 0:
            return
        self.pair_count += int(np.count_nonzero((delta.before < self.min_co) & (delta.after >= self.min_co)))
        # the listed pairs: the best of the previous ones and the changed ones that reach min_co
        changed = delta.after >= self.min_co
        cand = np.unique(np.concatenate((self.top_keys, delta.keys[changed])))
        cnt = self.pairs.counts.get(cand)
        fa, fb = codes.channel_code[cand // PAIR_BOUND], codes.channel_code[cand % PAIR_BOUND]
        order = np.lexsort((np.maximum(fa, fb), np.minimum(fa, fb), -cnt))[: self.pairs_cap]
        self.top_keys, self.top_counts = cand[order], cnt[order]

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``channel_relationships`` output."""
        low, high = self.top_keys // PAIR_BOUND, self.top_keys % PAIR_BOUND
        fl, fh = ctx.codes.channel_code[low], ctx.codes.channel_code[high]
        c = self.top_counts
        union = self.sessions_with[low] + self.sessions_with[high] - c
        counts = (self.sessions, self.multi, self.capped, self.pair_count)
        data = relationships_data(ctx.frame, ctx.options, counts, np.minimum(fl, fh), np.maximum(fl, fh), c, union)
        return data, "window"

    @property
    def nbytes(self) -> int:
        """Return the bytes held (not the pair counts: the slice's, counted with it)."""
        arrays = (self.sessions_with, self.top_keys, self.top_counts)
        return sum(int(x.nbytes) for x in arrays) + 256


INCREMENTAL: dict[str, type[IncrementalState]] = {"channel_relationships": RelationshipsState}
"""Aggregation type → its incremental state class."""
