"""Incremental states of topic_engagement and topic_discovery (see ``worker.aggregation.incremental.core``).

Pure: no I/O. Both types are per-topic counts: the appended views add to them, distinct videos and
channels per topic through ``LastSeen`` (kinds ``topic_video``, ``topic_channel``, ``channel``).
Binge views are the one count an append can change for earlier views: the slice's last session may
grow into a binge session, so its views are kept apart per topic until a later session closes it.
"""

from __future__ import annotations

import numpy as np

from worker.aggregation.common import Output, code_counts
from worker.aggregation.frame import IntArray
from worker.aggregation.incremental.core import IncrementalState, RenderContext, SliceTail, StableCodes
from worker.aggregation.incremental.shared import SliceShared
from worker.aggregation.options import AggregationOptions
from worker.aggregation.slices import Slice
from worker.aggregation.topics import (
    DISCOVERY_HABITUAL_VIEWS,
    DISCOVERY_NEW_CHANNELS,
    DISCOVERY_NEW_VIEWS,
    DISCOVERY_VIEWS,
    ENGAGEMENT_BINGE,
    ENGAGEMENT_SHORTS,
    ENGAGEMENT_UNIQUE_CHANNELS,
    ENGAGEMENT_UNIQUE_VIDEOS,
    ENGAGEMENT_VIDEO_VIEWS,
    ENGAGEMENT_VIEWS,
    discovery_counts,
    engagement_counts,
    topic_discovery_data,
    topic_engagement_data,
)

__all__ = ["INCREMENTAL", "TopicDiscoveryState", "TopicEngagementState"]

_PY_INT_BYTES = 32
"""Rough size of a Python int attribute (object plus slot), for ``nbytes``."""


class TopicEngagementState:
    """``topic_engagement``: per-topic counts, binge views of closed sessions apart from the last session's.

    Attributes:
        counts: Int64 (6, T), rows ``ENGAGEMENT_*`` of ``worker.aggregation.topics``; the binge row
            holds the views of binge sessions *before* the slice's last session only.
        last_counts: Views per topic of the slice's last session, int64 (T,).
        last_views: Views of the last session (untopiced ones included; 0 when the slice is empty).
        last_first_ms: Instant of its first view, epoch ms UTC.
        last_ms: Instant of its last view (= the slice's last view), epoch ms UTC.
        total: Views of the slice.
        options: Thresholds (``AggregationOptions.is_binge``).
    """

    __slots__ = (
        "counts",
        "last_counts",
        "last_views",
        "last_first_ms",
        "last_ms",
        "total",
        "options",
    )

    def __init__(
        self,
        counts: IntArray,
        last_counts: IntArray,
        last: tuple[int, int, int],
        total: int,
        options: AggregationOptions,
    ) -> None:
        self.counts = counts
        self.last_counts = last_counts
        self.last_views, self.last_first_ms, self.last_ms = last
        self.total = total
        self.options = options

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> TopicEngagementState:
        """Build the state of the whole slice (no codes kept: distinct counts come from ``LastSeen``)."""
        counts = engagement_counts(view)
        k = counts.shape[1]
        opts = view.options
        if view.n == 0:
            return cls(counts, np.zeros(k, dtype=np.int64), (0, 0, 0), 0, opts)
        ses = view.sessions
        start = int(ses.starts[-1])
        last_counts = code_counts(view.topic[start:], k)
        if bool(ses.binge[-1]):
            counts[ENGAGEMENT_BINGE] -= last_counts
        last = (int(ses.views[-1]), int(view.ts[start]), int(view.ts[-1]))
        return cls(counts, last_counts, last, view.n, opts)

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views; close the sessions they end (the previous last one among them)."""
        n = tail.n
        if n == 0:
            return
        k = self.counts.shape[1]
        topic = tail.topic
        floor = tail.window_floor
        c = self.counts
        c[ENGAGEMENT_VIEWS] += code_counts(topic, k)
        c[ENGAGEMENT_VIDEO_VIEWS] += code_counts(topic[tail.video >= 0], k)
        c[ENGAGEMENT_UNIQUE_VIDEOS] += code_counts(topic[tail.last_seen("topic_video") < floor], k)
        c[ENGAGEMENT_UNIQUE_CHANNELS] += code_counts(topic[tail.last_seen("topic_channel") < floor], k)
        c[ENGAGEMENT_SHORTS] += code_counts(topic[tail.shorts], k)
        # the appended views' sessions, in order: the first continues the previous last one when it joins
        ts = tail.ts
        session = tail.session
        starts = np.flatnonzero(np.concatenate(([True], session[1:] != session[:-1])))
        appended = np.diff(np.append(starts, n))  # appended views per session
        views = appended.copy()
        first_ms = ts[starts]
        last_ms = ts[np.append(starts[1:], n) - 1]
        joins = tail.joins_last
        if joins:
            views[0] += self.last_views
            first_ms[0] = self.last_first_ms
        elif self.last_views and self.options.is_binge(self.last_views, self.last_ms - self.last_first_ms):
            c[ENGAGEMENT_BINGE] += self.last_counts  # the previous last session is closed as it was
        binge = self.options.is_binge(views, last_ms - first_ms)
        closed = int(starts[-1])  # appended views before the new last session
        if closed:
            in_binge = np.repeat(binge[:-1], appended[:-1])
            c[ENGAGEMENT_BINGE] += code_counts(topic[:closed][in_binge], k)
            if joins and bool(binge[0]):  # the previous last session, closed as a binge session
                c[ENGAGEMENT_BINGE] += self.last_counts
        last_counts = code_counts(topic[closed:], k)
        if joins and not closed:
            last_counts += self.last_counts
        self.last_counts = last_counts
        self.last_views, self.last_first_ms, self.last_ms = int(views[-1]), int(first_ms[-1]), int(ts[-1])
        self.total += n

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``topic_engagement`` output."""
        counts = self.counts.copy()
        if self.last_views and self.options.is_binge(self.last_views, self.last_ms - self.last_first_ms):
            counts[ENGAGEMENT_BINGE] += self.last_counts
        return topic_engagement_data(ctx.frame.topic_slugs, counts, self.total), "window"

    @property
    def nbytes(self) -> int:
        """Return the bytes held (two small arrays and a few Python ints)."""
        return int(self.counts.nbytes + self.last_counts.nbytes) + 6 * _PY_INT_BYTES


class TopicDiscoveryState:
    """``topic_discovery``: views, new-channel views, habitual-channel views and distinct new channels.

    Whether a channel is new depends on its first view over the whole history (all products), which
    an append never moves for a channel already seen, and on the state's day (``recent_start_ms``),
    which is fixed: each view is classified once, when it is appended.

    Attributes:
        counts: Int64 (4, T + 1), rows ``DISCOVERY_*`` of ``worker.aggregation.topics``, columns the
            topics then the whole slice.
        recent_start_ms: First instant of the "last ``recent_days`` days" window, epoch ms UTC.
    """

    __slots__ = ("counts", "recent_start_ms")

    def __init__(self, counts: IntArray, recent_start_ms: int) -> None:
        self.counts = counts
        self.recent_start_ms = recent_start_ms

    @classmethod
    def from_slice(cls, view: Slice, codes: StableCodes, shared: SliceShared | None = None) -> TopicDiscoveryState:
        """Build the state of the whole slice (no codes kept: distinct counts come from ``LastSeen``)."""
        return cls(discovery_counts(view), int(view.clock.recent_start_ms))

    def extend(self, tail: SliceTail) -> None:
        """Add the appended views."""
        n = tail.n
        if n == 0:
            return
        frame = tail.base.frame
        channel = frame.channel[tail.base.rows[tail.first :]]  # frame codes (first views are per frame code)
        has = channel >= 0
        is_new = np.zeros(n, dtype=np.bool_)
        is_new[has] = frame.channel_first_ms[channel[has]] >= self.recent_start_ms
        habitual = has & ~is_new
        floor = tail.window_floor
        new_channel = is_new & (tail.last_seen("channel") < floor)
        new_topic_channel = is_new & (tail.last_seen("topic_channel") < floor)
        c = self.counts
        k = c.shape[1] - 1
        topic = tail.topic
        c[DISCOVERY_VIEWS, :k] += code_counts(topic, k)
        c[DISCOVERY_NEW_VIEWS, :k] += code_counts(topic[is_new], k)
        c[DISCOVERY_HABITUAL_VIEWS, :k] += code_counts(topic[habitual], k)
        c[DISCOVERY_NEW_CHANNELS, :k] += code_counts(topic[new_topic_channel], k)
        overall = (n, np.count_nonzero(is_new), np.count_nonzero(habitual), np.count_nonzero(new_channel))
        c[:, k] += np.array(overall, dtype=np.int64)

    def render(self, ctx: RenderContext) -> Output:
        """Return the ``topic_discovery`` output."""
        slugs = ctx.frame.topic_slugs
        return topic_discovery_data(slugs, self.counts, ctx.options.recent_days, ctx.clock.recent_start_ms), "day"

    @property
    def nbytes(self) -> int:
        """Return the bytes held (one small array and a Python int)."""
        return int(self.counts.nbytes) + _PY_INT_BYTES


INCREMENTAL: dict[str, type[IncrementalState]] = {
    "topic_engagement": TopicEngagementState,
    "topic_discovery": TopicDiscoveryState,
}
"""Aggregation type → its incremental state class."""
