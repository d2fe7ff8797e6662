"""Per filter base bookkeeping of the append fast path: which states extend, which are built. Pure: no I/O.

The engine asks :func:`open_base` for each filter base; the returned :class:`BaseRun` hands out each
(filter set, type) result from its incremental state — extended by the appended views when the
state describes the previous frame of the same day, built from the whole slice otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

from worker.aggregation.frame import Frame, IntArray
from worker.aggregation.incremental.core import (
    MONTH_KINDS,
    BaseMemory,
    BaseTail,
    IncrementalState,
    LastSeen,
    RenderContext,
    SliceInfo,
    SliceTail,
    StableCodes,
    _key,
    base_rows_between,
    month_buckets,
    slice_tail,
)
from worker.aggregation.incremental.shared import SHARED_ATTRIBUTES, SliceShared
from worker.aggregation.options import AggregationOptions
from worker.aggregation.timeframes import Clock, Window

if TYPE_CHECKING:
    from worker.aggregation.common import Output
    from worker.aggregation.filters import FilterSet
    from worker.aggregation.slices import Slice

__all__ = ["BaseEntry", "BaseRun", "open_base"]

IN_PROGRESS = -1
"""``BaseEntry.epoch`` while its states are being extended: an entry left so (an error) is rebuilt."""


@dataclass
class SliceEntry:
    """The states of one filter set (base × timeframe).

    ``info`` describes the slice at frame epoch ``epoch``; ``tail`` holds the views that epoch's
    append added to it (None when the entry was built from the slice at that epoch), kept so that
    states extended by a later call of the same recompute (the engine is called once per batch of
    filter sets) see the same tail. ``shared`` holds what the slice's states share (pair counts,
    views per channel), as of ``shared.epoch`` (kept equal to ``epoch``), with access to the base's
    ``memory`` (what its timeframes share).
    """

    window: Window
    info: SliceInfo
    epoch: int
    tail: SliceTail | None = None
    states: dict[str, tuple[int, IncrementalState]] = field(default_factory=dict)
    outputs: dict[str, tuple[int, Output]] = field(default_factory=dict)
    memory: BaseMemory | None = None
    shared: SliceShared = field(init=False)

    def __post_init__(self) -> None:
        self.shared = SliceShared(self.epoch, self.memory)


@dataclass
class BaseEntry:
    """The incremental states of one filter base, as of frame epoch ``epoch`` (the frame of serial
    ``frame_serial``, ``frame_size`` rows: only that very frame object is taken as described, and
    the entry does not keep it alive).

    Valid for a recompute of the same local day (``today`` in ``zone``), options and stable-code
    lineage (``codes_origin``, the epoch at which the stable codes were last the frame's own).
    ``tail`` is the append of epoch ``epoch`` (None when the entry was started at that epoch).
    """

    epoch: int
    frame_serial: int
    frame_size: int
    codes_origin: int
    zone: str
    today: int
    options: AggregationOptions
    tail: BaseTail | None = None
    memory: BaseMemory = field(default_factory=BaseMemory)
    slices: dict[str, SliceEntry] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Return the bytes held by the states (estimates for Python objects); what several states
        share (``SHARED_ATTRIBUTES``: pair counts, views per channel) counts once."""
        total = self.memory.nbytes
        shared: dict[int, int] = {}
        for s in self.slices.values():
            for _, state in s.states.values():
                total += state.nbytes
                for name in SHARED_ATTRIBUTES:
                    held = getattr(state, name, None)
                    if held is not None:
                        shared[id(held)] = held.nbytes
        return total + sum(shared.values())


@dataclass
class BaseRun:
    """One engine call's use of a base entry: results per (filter set, type), then :meth:`finish`."""

    entry: BaseEntry
    epoch: int
    frame: Frame
    codes: StableCodes
    clock: Clock
    options: AggregationOptions

    def result(
        self, fs: FilterSet, window: Window, name: str, cls: type[IncrementalState], view: Callable[[], Slice]
    ) -> Output:
        """Return type ``name``'s output for ``fs`` from its state (``view`` builds the whole slice if needed)."""
        entry, epoch = self.entry, self.epoch
        s = entry.slices.get(fs.key)
        if s is not None and s.window == window and s.epoch == epoch - 1 and entry.tail is not None:
            s.tail = slice_tail(entry.tail, s.info, window, self.options)
            s.epoch = epoch
            s.shared.advance(s.tail, epoch)
        elif s is None or s.window != window or s.epoch != epoch:
            s = entry.slices[fs.key] = SliceEntry(window, SliceInfo.of(view()), epoch, memory=entry.memory)
        held = s.states.get(name)
        kept = s.outputs.get(name)
        if held is not None and held[0] == epoch:
            state = held[1]
            if kept is not None and kept[0] == epoch:
                return kept[1]
        elif (
            held is not None
            and held[0] == epoch - 1
            and kept is not None
            and kept[0] == epoch - 1
            and entry.tail is not None
            and entry.tail.size == 0
            and not self.codes.renamed
        ):
            # nothing appended to the base and no channel renamed: the state and its output stand
            s.states[name] = (epoch, held[1])
            s.outputs[name] = (epoch, kept[1])
            return kept[1]
        elif held is not None and held[0] == epoch - 1 and s.tail is not None:
            state = held[1]
            s.states[name] = (IN_PROGRESS, state)
            state.extend(s.tail)
        else:
            state = cls.from_slice(view(), self.codes, s.shared)
        s.states[name] = (epoch, state)
        output = state.render(RenderContext(self.frame, self.codes, self.clock, window, self.options))
        s.outputs[name] = (epoch, output)
        return output

    def finish(self) -> None:
        """Mark the entry as describing this recompute's frame."""
        entry = self.entry
        if entry.tail is not None:
            # every LastSeen of the base learns the appended rows, also kinds no state asked for in
            # this call (a later call, or the next append, relies on them holding every earlier view)
            for kind in list(entry.memory.last_seen):
                entry.tail.last_seen(kind)
            for held in entry.memory.shared.values():  # likewise the types' shared per-base state
                held.sync(entry.tail)
        entry.epoch = self.epoch
        entry.frame_serial, entry.frame_size = self.frame.serial, self.frame.size


def open_base(
    bases: dict[tuple[str, tuple[str, ...], tuple[str, ...]], BaseEntry],
    fs: FilterSet,
    *,
    frame: Frame,
    epoch: int,
    codes: StableCodes,
    codes_origin: int,
    clock: Clock,
    options: AggregationOptions,
    parent_serial: int | None = None,
) -> BaseRun:
    """Return the run of ``fs``'s base for a recompute of ``frame`` (frame epoch ``epoch``).

    An entry of the previous epoch (same day, zone, options, code lineage) describing the frame
    ``frame`` was extended from (``parent_serial``: its ``Frame.serial``) is extended by the base's
    rows appended since; one of this epoch and this very frame object (an earlier engine call of
    the same recompute, or a recompute without new views) is used as is; otherwise a new entry is
    started and every state is built from its slice (two frames extended from one state, or a
    retried recompute's new frame).
    """
    key = (fs.product, fs.topics, fs.channels)
    entry = bases.get(key)
    zone = clock.zone.key
    same = (
        entry is not None
        and entry.zone == zone
        and entry.today == clock.today
        and entry.options == options
        and entry.codes_origin == codes_origin
    )
    if entry is not None and same and entry.epoch == epoch and entry.frame_serial == frame.serial:
        pass  # already describes this frame
    elif entry is not None and same and entry.epoch == epoch - 1 and entry.frame_serial == parent_serial:
        old_size = entry.frame_size
        entry.tail = BaseTail(
            frame=frame,
            codes=codes,
            rows=base_rows_between(frame, fs, old_size, frame.size),
            memory=entry.memory,
            fs=fs,
            zone=clock.zone,
            before=old_size,
            _build=_builder(frame, fs, codes, old_size, clock.zone),
        )
        entry.epoch = IN_PROGRESS
        entry.frame_serial, entry.frame_size = frame.serial, frame.size
        run = BaseRun(entry, epoch, frame, codes, clock, options)
        return run
    else:
        entry = bases[key] = BaseEntry(epoch, frame.serial, frame.size, codes_origin, zone, clock.today, options)
    return BaseRun(entry, epoch, frame, codes, clock, options)


def _builder(frame: Frame, fs: FilterSet, codes: StableCodes, size: int, zone: ZoneInfo) -> Callable[[str], LastSeen]:
    """Return a builder of a base's ``LastSeen`` over its rows before the append (frame rows < ``size``)."""

    def build(kind: str) -> LastSeen:
        rows: IntArray = base_rows_between(frame, fs, 0, size)
        if kind in MONTH_KINDS and rows.size:
            # appended views are later than every row: their local month is at least the last one's
            # minus one (a clock turned back across the first of a month), so keys of earlier
            # months are never asked for again (an entry lives one local day)
            month = frame.month[rows]
            rows = rows[month >= int(month.max()) - 1]
        keys = _key(
            kind,
            codes.stable_video(frame.video[rows]),
            codes.stable_channel(frame.channel[rows]),
            frame.topic[rows].astype(np.int64),
            frame.month[rows].astype(np.int64),
            frame.day[rows].astype(np.int64),
        )
        return LastSeen(keys, month_buckets(frame.ts[rows], frame.month[rows], zone))

    return build
