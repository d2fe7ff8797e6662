"""Engine state carried from one recompute of a user's growing history to the next. Pure: no I/O.

The costliest derived structure of a filter base is its session pairs (every channel pair of every
session, sorted: ``Slice.base_session_pairs``, which channel_metrics and channel_relationships
derive their co-sessions from). When the next frame is the previous one with views appended after
its last view (``worker.aggregation.partition.extend_frame``), every session but the previous last
one is unchanged, so the pairs are extended (:func:`~worker.aggregation.slices.extend_session_pairs`)
instead of generated and sorted again; the results are identical.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np

from worker.aggregation.frame import Frame, IntArray
from worker.aggregation.incremental.base import BaseEntry
from worker.aggregation.incremental.core import StableCodes
from worker.aggregation.options import AggregationOptions
from worker.aggregation.slices import Slice, _session_pairs, _SessionPairs, extend_session_pairs

__all__ = ["DerivedState", "BaseKey"]

BaseKey: TypeAlias = tuple[str, tuple[str, ...], tuple[str, ...]]
"""A filter base: (product, topics, channels), as :func:`~worker.aggregation.filters.group_by_base` groups."""


@dataclass(frozen=True, slots=True)
class _BasePairs:
    """A base's session pairs, computed over the frame of epoch ``epoch``."""

    epoch: int
    frame_size: int
    channel_ids: tuple[str, ...]
    options: AggregationOptions
    base_size: int
    last_session: int
    last_start: int
    pairs: _SessionPairs
    nbytes: int


@dataclass
class DerivedState:
    """Session pairs of each filter base of one user's frame, kept with the frame between recomputes.

    A state belongs to one frame (``frame``), the one the engine computes on with it. It starts
    cold (after a full merge of the month partitions) and retains nothing, so a full recompute's
    peak memory is unchanged; :meth:`extended` gives the state of the frame an append produced, which
    retains each base's pairs as they are computed, and extends the pairs of the state before it.
    Entries are immutable and shared between a state and the one extended from it; the state
    itself is thread-safe (the engine runs in worker threads).

    Attributes:
        frame: The frame the state belongs to (the engine ignores the state for any other frame).
        epoch: Appends since the cold state.
    """

    frame: Frame
    epoch: int = 0
    _entries: dict[BaseKey, _BasePairs] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    bases: dict[BaseKey, BaseEntry] = field(default_factory=dict, repr=False)
    """Incremental states per filter base (``worker.aggregation.incremental``), shared along the chain
    of extended states and updated in place by the recompute of the newest one."""
    incremental: bool = True
    """Whether the engine may build incremental states with this state (see :meth:`drop_incremental`)."""
    _previous: tuple[Frame, StableCodes, int] | None = field(default=None, repr=False)
    parent_serial: int | None = None
    """``Frame.serial`` of the frame this state's frame was extended from (None for a cold state)."""
    _codes: tuple[StableCodes, int] | None = field(default=None, repr=False)

    @classmethod
    def cold(cls, frame: Frame) -> DerivedState:
        """Return the state of a frame merged from partitions: nothing to reuse, nothing retained."""
        return cls(frame)

    def extended(self, grown: Frame) -> DerivedState:
        """Return the state of ``grown``, this state's frame with views appended after its last view.

        ``grown`` must come from ``extend_frame(self.frame, …)``: its first ``self.frame.size`` rows
        are this frame's rows (channel codes possibly renumbered by new ids sorting among them).
        """
        with self._lock:
            entries = {k: e for k, e in self._entries.items() if e.epoch == self.epoch}
            previous = None if self._codes is None else (self.frame, *self._codes)
        return DerivedState(
            grown,
            self.epoch + 1,
            entries,
            bases=self.bases,
            incremental=self.incremental,
            _previous=previous,
            parent_serial=self.frame.serial,
        )

    def drop_incremental(self) -> None:
        """Forget the incremental states and build none with this state or any extended from it.

        For a history whose states do not fit the frame cache's bound: appends then recompute every
        type on the extended frame, reusing the session pairs. A full merge starts a new state.
        """
        with self._lock:
            self.bases.clear()
            self.incremental = False

    def codes(self) -> tuple[StableCodes, int]:
        """Return the stable codes of this frame and their origin (the epoch they were the frame's own).

        Extended from the previous state's codes when it computed them, else the frame's own codes
        (a new origin: states of another origin are rebuilt).
        """
        with self._lock:
            if self._codes is None:
                if self._previous is not None:
                    frame, codes, origin = self._previous
                    self._codes = (codes.extended(frame, self.frame), origin)
                else:
                    self._codes = (StableCodes.identity(self.frame), self.epoch)
                self._previous = None  # the previous frame is not kept alive by this state
            return self._codes

    @property
    def nbytes(self) -> int:
        """Return the bytes held by the retained pairs."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values()) + sum(b.nbytes for b in self.bases.values())

    def session_pairs(self, key: BaseKey, view: Slice) -> _SessionPairs | None:
        """Return ``view``'s base session pairs (``Slice.base_session_pairs``), reusing retained ones.

        Args:
            key: The view's filter base.
            view: A slice of ``self.frame`` for that base.

        Returns:
            As ``_session_pairs`` over the base (None: the pairs do not fit the packed form): the
            retained pairs of this frame, else the previous frame's extended, else computed.
        """
        frame, options = view.frame, view.options
        n_channels = len(frame.channel_ids)
        cap = options.max_channels_per_session
        with self._lock:
            entry = self._entries.get(key) if view.frame is self.frame else None
        if entry is not None and entry.options == options and entry.epoch == self.epoch:
            return entry.pairs
        base = view.base
        sessions = view.base_sessions
        pairs: _SessionPairs | None = None
        if (
            entry is not None
            and entry.options == options
            and entry.epoch == self.epoch - 1
            and int(np.searchsorted(base, entry.frame_size)) == entry.base_size
        ):
            pairs = extend_session_pairs(
                entry.pairs,
                last_session=entry.last_session,
                last_start=entry.last_start,
                channel=view.base_channel,
                sessions=sessions,
                remap=_remap(entry.channel_ids, frame.channel_ids),
                old_channels=len(entry.channel_ids),
                n_channels=n_channels,
                cap=cap,
            )
        if pairs is None:
            pairs = _session_pairs(view.base_channel, sessions, n_channels, cap)
        if pairs is not None and sessions.count and self.epoch > 0 and view.frame is self.frame:
            kept = _BasePairs(
                epoch=self.epoch,
                frame_size=frame.size,
                channel_ids=frame.channel_ids,
                options=options,
                base_size=int(base.size),
                last_session=sessions.count - 1,
                last_start=int(sessions.starts[-1]),
                pairs=pairs,
                nbytes=sum(int(getattr(pairs, name).nbytes) for name in _SessionPairs.__slots__),
            )
            with self._lock:
                self._entries[key] = kept
        return pairs


def _remap(old: tuple[str, ...], new: tuple[str, ...]) -> IntArray | None:
    """Return the new code of each old channel code (increasing: both tables are sorted), None if equal."""
    if old is new or old == new:
        return None
    code_of = {c: i for i, c in enumerate(new)}
    return np.array([code_of[c] for c in old], dtype=np.int64)
