"""Thresholds of the aggregation catalogue, each with its source. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = ["AggregationOptions"]

_MINUTE_MS = 60_000


@dataclass(frozen=True)
class AggregationOptions:
    """Tunable thresholds. Defaults are the stored definitions (``DEFINITION_VERSION``).

    Attributes:
        session_gap_ms: A session is a maximal run of views whose consecutive gaps are ≤ this (ms).
            Default 30 min: the inactivity timeout conventionally used by web analytics (Google
            Analytics' default session timeout is 30 minutes).
        watch_time_cap_ms: Estimated watch time of a view = gap to the next view of the same session,
            capped at this (ms). Default 20 min: a project choice; a gap longer than the cap means
            the viewer did something else in between.
        last_view_estimate_ms: Estimated watch time of the last view of a session (no next view to
            measure against), ms. Default 5 min: a project assumption, not a measured statistic.
        binge_min_views: A session with ≥ this many views is a binge session. Default 5.
        binge_min_span_ms: … or one whose first-to-last view span is ≥ this (ms). Default 2 h.
            Both are project choices in the spirit of the common "2–6 episodes in one sitting"
            description of binge watching (Netflix/Harris Interactive survey, 2013).
        top_n: Channels listed by ``top_channels`` and followed by ``channel_evolution`` (1–100).
        channel_metrics_cap: Channels listed by ``channel_metrics`` (1–1000).
        pairs_cap: Pairs listed by ``channel_relationships`` (1–1000).
        min_co_sessions: A pair is listed by ``channel_relationships`` only with ≥ this many
            shared sessions (one shared session is noise). Default 2.
        max_channels_per_session: Distinct channels of one session considered for pairs (the
            first ones by first view); bounds the k² pair count of very long sessions. Default 20.
        co_watched_per_channel: Co-watched channels listed per channel in ``channel_metrics``. Default 3.
        recent_days: The "last N days" window (local days including today) for new channels and
            discovery. Default 30.
        months_cap: Monthly series keep at most this many most recent months. Default 240 (20 years).
        trend_months: Months in each half of the "last N vs previous N months" trend windows. Default 3.
        trend_ratio: Rising when recent ≥ previous × (1 + ratio), declining when recent ≤
            previous × (1 − ratio). Default 0.25 (project choice: ±25 %).
        pattern_min_views: Viewing-pattern labels need at least this many views. Default 20.
    """

    session_gap_ms: int = 30 * _MINUTE_MS
    watch_time_cap_ms: int = 20 * _MINUTE_MS
    last_view_estimate_ms: int = 5 * _MINUTE_MS
    binge_min_views: int = 5
    binge_min_span_ms: int = 120 * _MINUTE_MS
    top_n: int = 10
    channel_metrics_cap: int = 100
    pairs_cap: int = 50
    min_co_sessions: int = 2
    max_channels_per_session: int = 20
    co_watched_per_channel: int = 3
    recent_days: int = 30
    months_cap: int = 240
    trend_months: int = 3
    trend_ratio: float = 0.25
    pattern_min_views: int = 20

    def is_binge(self, views: Any, span_ms: Any) -> Any:
        """Return whether sessions of ``views`` views spanning ``span_ms`` ms are binge sessions:
        ``views ≥ binge_min_views`` or ``span_ms ≥ binge_min_span_ms`` (ints → bool, arrays → bool array)."""
        return (views >= self.binge_min_views) | (span_ms >= self.binge_min_span_ms)

    def __post_init__(self) -> None:
        bounds: dict[str, tuple[float, float]] = {
            "session_gap_ms": (1, 7 * 86_400_000),
            "watch_time_cap_ms": (0, 86_400_000),
            "last_view_estimate_ms": (0, 86_400_000),
            "binge_min_views": (1, 1_000_000),
            "binge_min_span_ms": (0, 7 * 86_400_000),
            "top_n": (1, 100),
            "channel_metrics_cap": (1, 1000),
            "pairs_cap": (1, 1000),
            "min_co_sessions": (1, 1_000_000),
            "max_channels_per_session": (2, 100),
            "co_watched_per_channel": (0, 20),
            "recent_days": (1, 3660),
            "months_cap": (1, 1200),
            "trend_months": (1, 24),
            "trend_ratio": (0.0, 10.0),
            "pattern_min_views": (1, 1_000_000),
        }
        for f in fields(self):
            value = getattr(self, f.name)
            low, high = bounds[f.name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"{f.name}: expected a number in [{low}, {high}], got {value!r}")
            if f.name != "trend_ratio" and not isinstance(value, int):
                raise ValueError(f"{f.name}: expected an int, got {value!r}")
