"""What the incremental states of one slice share, extended once per append. Pure: no I/O.

Several types need the same counts of a slice: the co-session pair counts
(:class:`~worker.aggregation.incremental.pairs.SessionPairs`: channel_metrics and
channel_relationships) and the views per channel (:class:`ChannelViews`: top_channels,
viewing_patterns and channel_evolution). One copy per slice serves them all: built once from the
slice, extended by the first state that gets an append's tail (the others get the same delta), and
counted once in the states' memory (``BaseEntry.nbytes``).
"""

from __future__ import annotations

import numpy as np

from worker.aggregation.frame import Int32Array, IntArray
from worker.aggregation.incremental.core import BaseMemory, SliceTail, StableCodes, grown
from worker.aggregation.incremental.pairs import SessionPairs
from worker.aggregation.slices import Slice

__all__ = ["SHARED_ATTRIBUTES", "ChannelViews", "SliceShared"]

SHARED_ATTRIBUTES = ("pairs", "channel_views")
"""Attributes through which a state holds what its slice shares (counted once per object)."""

_OBJECT_BYTES = 256
"""Rough bytes of the object with its few Python ints (besides its arrays)."""
_NONE: IntArray = np.zeros(0, dtype=np.int64)
"""No channel viewed (never written to)."""


class ChannelViews:
    """Views of a slice per stable channel code.

    Attributes:
        views: Views per stable channel code (capacity ≥ the codes, grown with spare room), int32.
        attributed: Views of the slice with a channel.
        channel_count: Channels with at least one view in the slice.
        epoch: The slice epoch the counts describe (see :class:`SliceShared`).
    """

    __slots__ = ("views", "attributed", "channel_count", "epoch", "_tail", "_viewed")

    def __init__(self, views: Int32Array, attributed: int, channel_count: int, epoch: int) -> None:
        self.views = views
        self.attributed = attributed
        self.channel_count = channel_count
        self.epoch = epoch
        self._tail: SliceTail | None = None
        self._viewed: IntArray = _NONE

    @classmethod
    def of(cls, view: Slice, codes: StableCodes, epoch: int) -> ChannelViews:
        """Return the views per channel of a whole slice (``view.channel_views``, in stable codes)."""
        per_code = view.channel_views
        views = np.zeros(codes.channels, dtype=np.int32)
        views[codes.channel] = per_code
        return cls(views, int(per_code.sum()), int(np.count_nonzero(per_code)), epoch)

    @property
    def nbytes(self) -> int:
        """Return the bytes held."""
        return _OBJECT_BYTES + int(self.views.nbytes)

    def add(self, tail: SliceTail) -> IntArray:
        """Count the appended views; return the stable codes of the channels they viewed, ascending
        (k,), int64. The same tail again returns the same codes (see ``SessionPairs.add``)."""
        if tail is self._tail:
            return self._viewed
        ch = tail.channel
        ch = ch[ch >= 0]
        viewed = _NONE
        if ch.size:
            viewed, added = np.unique(ch, return_counts=True)
            self.views = grown(self.views, int(viewed[-1]) + 1, 0)
            self.channel_count += int(np.count_nonzero(self.views[viewed] == 0))
            self.views[viewed] += added.astype(np.int32)
            self.attributed += int(ch.size)
        self._tail, self._viewed = tail, viewed
        self.epoch += 1
        return viewed


class SliceShared:
    """What the states of one slice share, kept with the slice's entry (see ``base.SliceEntry``).

    Attributes:
        epoch: The slice epoch (frame epoch) the entry describes, set by the framework.
        memory: What the filter base's states share (all timeframes), None for a slice of its own (tests).
        pairs: The slice's pair counts, or None before a state asked for them.
        channel_views: The slice's views per channel, or None before a state asked for them.
    """

    __slots__ = ("epoch", "memory", "pairs", "channel_views")

    def __init__(self, epoch: int, memory: BaseMemory | None = None) -> None:
        self.epoch = epoch
        self.memory = memory
        self.pairs: SessionPairs | None = None
        self.channel_views: ChannelViews | None = None

    def advance(self, tail: SliceTail, epoch: int) -> None:
        """Move to slice epoch ``epoch`` (the framework's call when the slice gets ``tail``): shared
        counts of the previous epoch still describe the slice when the tail is empty (no state adds
        an empty tail); otherwise the first state extended adds it."""
        if tail.n == 0:
            for held in (self.pairs, self.channel_views):
                if held is not None and held.epoch == self.epoch:
                    held.epoch = epoch
        self.epoch = epoch

    def pairs_of(self, view: Slice, codes: StableCodes) -> SessionPairs:
        """Return pair counts describing ``view`` (the slice at ``epoch``): the ones another state
        built or extended to this epoch, or new ones built from the slice (kept for the others)."""
        if self.pairs is None or self.pairs.epoch != self.epoch:
            self.pairs = SessionPairs.of(view, codes, self.epoch)
        return self.pairs

    def channel_views_of(self, view: Slice, codes: StableCodes) -> ChannelViews:
        """Return views per channel describing ``view`` (the slice at ``epoch``), like :meth:`pairs_of`."""
        if self.channel_views is None or self.channel_views.epoch != self.epoch:
            self.channel_views = ChannelViews.of(view, codes, self.epoch)
        return self.channel_views
