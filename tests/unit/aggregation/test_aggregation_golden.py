"""Golden tests: hand-computed values for small histories, per aggregation type."""

from __future__ import annotations

import pytest
from agg_support import compute_one, ms, removed, view

from worker.aggregation import AGGREGATION_TYPES, EAGER_FILTER_SETS, compute_aggregations
from worker.aggregation.channels import trend_label

MIN = 60_000


class TestKpi:
    """kpi counts views, distinct videos/channels, active local days and an estimated watch time."""

    def test_small_history(self) -> None:
        """Three views in one session plus a removed view next day give the hand-computed numbers."""
        t0 = ms("2024-05-01T10:00")
        events = [
            view(t0, "UCa", "v1"),
            view(t0 + 10 * MIN, "UCb", "v2"),
            view(t0 + 15 * MIN, "UCa", "v1"),
            removed(ms("2024-05-02T09:00")),
        ]
        data = compute_one(events, "kpi", now_ms=ms("2024-05-03T00:00")).data
        assert (data["views"], data["removedViews"], data["uniqueVideos"], data["uniqueChannels"]) == (
            4,
            1,
            2,
            2,
        )
        assert data["activeDays"] == 2
        # 10 min + 5 min (gaps) + 5 min (last of session) + 5 min (removed view, alone) = 25
        assert data["estimatedWatchTimeMinutes"] == 25.0
        assert data["firstViewMs"] == t0

    def test_year_over_year_to_date(self) -> None:
        """Month-to-date runs to the end of today (local) and compares with the same dates a year earlier."""
        tz = "Europe/Berlin"
        events = [
            view(ms("2024-03-01T00:30", tz)),
            view(ms("2024-03-15T23:00", tz)),  # later today: inside "to date"
            view(ms("2023-03-10T12:00", tz)),
            view(ms("2023-03-16T00:10", tz)),  # after the comparison span
            view(ms("2024-02-29T23:59", tz)),  # previous month
        ]
        data = compute_one(events, "kpi", now_ms=ms("2024-03-15T12:00", tz), tz=tz).data
        month, quarter, year = data["periodToDate"]
        assert month == {
            "period": "month",
            "startDate": "2024-03-01",
            "endDate": "2024-03-15",
            "previousStartDate": "2023-03-01",
            "previousEndDate": "2023-03-15",
            "views": 2,
            "previousViews": 1,
            "yoyChange": 1.0,
        }
        assert (quarter["views"], quarter["previousViews"]) == (3, 1)
        assert year["startDate"] == "2024-01-01"

    def test_yoy_null_without_previous(self) -> None:
        """The year-over-year change is null when last year's span has no views."""
        data = compute_one([view(ms("2024-03-02T10:00"))], "kpi", now_ms=ms("2024-03-05T10:00")).data
        assert data["periodToDate"][0]["yoyChange"] is None

    def test_valid_until_next_local_midnight_across_dst(self) -> None:
        """kpi expires at the next local midnight, DST-correct (Berlin spring forward 2024-03-31)."""
        tz = "Europe/Berlin"
        before = compute_one([], "kpi", now_ms=ms("2024-03-30T12:00", tz), tz=tz)
        assert before.valid_until_ms == ms("2024-03-30T23:00")  # 00:00 CET
        after = compute_one([], "kpi", now_ms=ms("2024-03-31T12:00", tz), tz=tz)
        assert after.valid_until_ms == ms("2024-03-31T22:00")  # 00:00 CEST


class TestMonthlyTrend:
    """monthly_trend lists every local month between the first and the last view."""

    def test_new_year_with_empty_month(self) -> None:
        """A history crossing New Year keeps the empty December with zeros."""
        events = [
            view(ms("2023-11-05T10:00"), "UCa", "v1"),
            view(ms("2023-11-06T10:00"), "UCa", "v1"),
            view(ms("2024-01-02T10:00"), "UCb", "v2"),
        ]
        data = compute_one(events, "monthly_trend", now_ms=ms("2024-01-10T00:00")).data
        assert data["months"] == [
            {"month": "2023-11", "views": 2, "uniqueVideos": 1, "uniqueChannels": 1},
            {"month": "2023-12", "views": 0, "uniqueVideos": 0, "uniqueChannels": 0},
            {"month": "2024-01", "views": 1, "uniqueVideos": 1, "uniqueChannels": 1},
        ]
        assert data["truncated"] is False

    def test_local_month_in_new_york(self) -> None:
        """A view at 2024-02-01T03:00Z is a January view in New York (22:00 local)."""
        data = compute_one(
            [view(ms("2024-02-01T03:00"))],
            "monthly_trend",
            now_ms=ms("2024-02-10T00:00"),
            tz="America/New_York",
        ).data
        assert [m["month"] for m in data["months"]] == ["2024-01"]

    @pytest.mark.parametrize(
        ("timeframe", "expected_months"),
        [
            ("MTD", ["2024-05"]),
            ("QTD", ["2024-04", "2024-05"]),
            ("YTD", ["2024-01", "2024-02", "2024-03", "2024-04", "2024-05"]),
            ("Last6M", ["2023-12", "2024-01", "2024-02", "2024-03", "2024-04", "2024-05"]),
        ],
    )
    def test_timeframes_are_month_aligned(self, timeframe: str, expected_months: list[str]) -> None:
        """Timeframes start at local month boundaries relative to now (Last6M = current + 5 previous)."""
        events = [
            view(ms(f"{y}-{m:02d}-15T12:00")) for y, m in [(2023, 11), (2023, 12)] + [(2024, i) for i in range(1, 6)]
        ]
        data = compute_one(events, "monthly_trend", now_ms=ms("2024-05-20T00:00"), timeframe=timeframe).data
        assert [m["month"] for m in data["months"]] == expected_months


class TestTopChannels:
    """top_channels ranks by views, then channel id, and keeps channel-less views apart."""

    def test_ties_and_unattributed(self) -> None:
        """Equal views rank by id; unattributed views are not a channel; the latest name wins."""
        t = ms("2024-01-01T00:00")
        events = [
            view(t, "UCb"),
            view(t + 1, "UCb"),
            view(t + 2, "UCa", name="old"),
            view(t + 3, "UCa", name="new"),
            view(t + 4, None),
            removed(t + 5),
        ]
        data = compute_one(events, "top_channels", now_ms=t + 10).data
        assert [(c["channelId"], c["views"], c["rank"]) for c in data["channels"]] == [
            ("UCa", 2, 1),
            ("UCb", 2, 2),
        ]
        assert data["channels"][0]["channelName"] == "new"
        assert data["channels"][0]["share"] == pytest.approx(2 / 6)
        assert (data["totalViews"], data["attributedViews"], data["unattributedViews"]) == (6, 4, 2)

    def test_cap_recorded(self) -> None:
        """More channels than top_n are truncated and the cap is stored."""
        t = ms("2024-01-01T00:00")
        events = [view(t + i, f"UC{i:03d}") for i in range(12)]
        data = compute_one(events, "top_channels", now_ms=t + 100).data
        assert (len(data["channels"]), data["cap"], data["truncated"], data["channelCount"]) == (
            10,
            10,
            True,
            12,
        )


class TestDayTimeHeatmap:
    """day_time_heatmap counts views by local ISO weekday (Monday = 0) and local hour, DST-correct."""

    @pytest.mark.parametrize(
        ("utc", "tz", "weekday", "hour"),
        [
            ("2024-03-31T00:30", "Europe/Berlin", 6, 1),  # 01:30 CET, before the gap
            ("2024-03-31T01:30", "Europe/Berlin", 6, 3),  # 03:30 CEST, after the gap
            ("2024-10-27T00:30", "Europe/Berlin", 6, 2),  # 02:30 CEST (first pass)
            ("2024-10-27T01:30", "Europe/Berlin", 6, 2),  # 02:30 CET (second pass)
            ("2024-03-10T07:30", "America/New_York", 6, 3),  # 03:30 EDT
            ("2024-11-03T06:30", "America/New_York", 6, 1),  # 01:30 EST (second pass)
            ("2024-01-01T00:00", "UTC", 0, 0),  # a Monday
        ],
    )
    def test_dst_cells(self, utc: str, tz: str, weekday: int, hour: int) -> None:
        """One view lands in the hand-computed local cell."""
        data = compute_one([view(ms(utc))], "day_time_heatmap", now_ms=ms("2025-01-01T00:00"), tz=tz).data
        assert data["cells"][weekday][hour] == 1
        assert (data["peakWeekday"], data["peakHour"], data["totalViews"]) == (weekday, hour, 1)

    def test_empty(self) -> None:
        """An empty history gives a zero grid and null peaks."""
        data = compute_one([], "day_time_heatmap", now_ms=ms("2024-01-01T00:00")).data
        assert data["cells"] == [[0] * 24 for _ in range(7)]
        assert data["peakHour"] is None


class TestSessions:
    """session_analysis splits views at gaps over 30 minutes and flags binge sessions."""

    def test_two_sessions(self) -> None:
        """Views at 0, 10, 20 min and 3 h form sessions of 3 and 1 views."""
        t = ms("2024-01-01T08:00")
        events = [view(t), view(t + 10 * MIN), view(t + 20 * MIN), view(t + 180 * MIN)]
        data = compute_one(events, "session_analysis", now_ms=t + 500 * MIN).data
        assert data["sessionCount"] == 2
        assert (data["meanViews"], data["medianViews"], data["maxViews"]) == (2.0, 2.0, 3.0)
        assert (data["maxSpanMinutes"], data["meanSpanMinutes"]) == (20.0, 10.0)
        assert data["maxEstimatedMinutes"] == 25.0  # 10 + 10 + 5
        assert data["bingeSessions"] == 0
        assert data["sessionsByStartHour"][8] == 1 and data["sessionsByStartHour"][11] == 1

    def test_binge_by_views_and_span(self) -> None:
        """Five views in a row, or a session spanning two hours, is a binge."""
        t = ms("2024-01-01T08:00")
        five = [view(t + i * MIN) for i in range(5)]
        long = [view(t + 600 * MIN + i * 30 * MIN) for i in range(5)]  # 5 views too, spanning 2 h
        three_long = [view(t + 2000 * MIN + i * 30 * MIN) for i in (0, 1, 2, 3)]  # 90 min, 4 views
        data = compute_one(five + long + three_long, "session_analysis", now_ms=t + 3000 * MIN).data
        assert (data["sessionCount"], data["bingeSessions"], data["bingeViews"]) == (3, 2, 10)

    def test_empty(self) -> None:
        """No views: zero sessions, null statistics."""
        data = compute_one([], "session_analysis", now_ms=0)
        assert data.data["sessionCount"] == 0 and data.data["meanViews"] is None


class TestViewingPatterns:
    """viewing_patterns labels carry their value, threshold and evidence."""

    def test_night_owl(self) -> None:
        """Twenty views at 23:00 on weekdays make a night owl but not an early bird."""
        events = [view(ms(f"2024-01-{d:02d}T23:00")) for d in range(1, 21)]
        data = compute_one(events, "viewing_patterns", now_ms=ms("2024-02-01T00:00")).data
        labels = {lab["label"]: lab for lab in data["labels"]}
        assert labels["night_owl"]["matched"] and labels["night_owl"]["value"] == 1.0
        assert not labels["early_bird"]["matched"]
        assert labels["loyalist"]["matched"]  # one channel holds every view

    def test_insufficient_data(self) -> None:
        """Below the minimum views nothing matches."""
        data = compute_one([view(ms("2024-01-01T23:00"))], "viewing_patterns", now_ms=ms("2024-02-01T00:00")).data
        assert data["insufficientData"] and not any(lab["matched"] for lab in data["labels"])


class TestChannels:
    """channel_metrics, channel_relationships and channel_evolution on small histories."""

    def sessions_history(self) -> list:
        t = ms("2024-01-01T10:00")
        hour = 60 * MIN
        return [
            view(t, "UCa"),
            view(t + MIN, "UCb"),
            view(t + 5 * hour, "UCa"),
            view(t + 5 * hour + MIN, "UCb"),
            view(t + 10 * hour, "UCa"),
            view(t + 10 * hour + MIN, "UCc"),
        ]

    def test_relationships(self) -> None:
        """Sessions {a,b}, {a,b}, {a,c}: a–b share 2 sessions, Jaccard 2 / (3 + 2 − 2)."""
        data = compute_one(self.sessions_history(), "channel_relationships", now_ms=ms("2024-01-02T00:00")).data
        assert data["pairs"] == [
            {
                "channelAId": "UCa",
                "channelAName": "name-UCa",
                "channelBId": "UCb",
                "channelBName": "name-UCb",
                "coSessions": 2,
                "jaccard": pytest.approx(2 / 3, abs=1e-6),
            }
        ]
        assert (data["sessionCount"], data["multiChannelSessions"], data["pairCount"]) == (3, 3, 1)

    def test_metrics(self) -> None:
        """Channel a: 3 views in one month, co-watched with b (2) then c (1); first seen within 30 days."""
        data = compute_one(self.sessions_history(), "channel_metrics", now_ms=ms("2024-01-02T00:00")).data
        a = data["channels"][0]
        assert (a["channelId"], a["views"], a["activeMonths"], a["loyaltyScore"]) == ("UCa", 3, 1, 1.0)
        assert [(c["channelId"], c["coSessions"]) for c in a["coWatched"]] == [("UCb", 2), ("UCc", 1)]
        assert a["isNew"] is True and a["peakHour"] == 10

    def test_not_new_after_thirty_days(self) -> None:
        """isNew turns false once the first view is older than the last 30 local days."""
        data = compute_one(self.sessions_history(), "channel_metrics", now_ms=ms("2024-03-01T00:00")).data
        assert data["channels"][0]["isNew"] is False
        assert data["channels"][0]["loyaltyScore"] == pytest.approx(1 / 3)  # Jan active of Jan–Mar

    @pytest.mark.parametrize(
        ("recent", "previous", "is_new", "label"),
        [
            (5, 0, True, "new"),
            (0, 0, False, "dormant"),
            (10, 8, False, "rising"),
            (9, 8, False, "stable"),
            (6, 8, False, "declining"),
            (3, 0, False, "rising"),
        ],
    )
    def test_trend_label(self, recent: int, previous: int, is_new: bool, label: str) -> None:
        """Trend labels follow the ±25 % rule."""
        assert trend_label(recent, previous, is_new, 0.25) == label

    def test_evolution(self) -> None:
        """Monthly series align with the months axis and the trend windows end at the current month."""
        events = [
            view(ms("2023-10-10T10:00"), "UCa"),
            view(ms("2024-01-10T10:00"), "UCa"),
            view(ms("2024-01-11T10:00"), "UCa"),
        ]
        result = compute_one(events, "channel_evolution", now_ms=ms("2024-01-20T00:00"))
        ch = result.data["channels"][0]
        assert result.data["months"] == ["2023-10", "2023-11", "2023-12", "2024-01"]
        assert ch["monthlyViews"] == [1, 0, 0, 2]
        assert (ch["recentViews"], ch["previousViews"], ch["trend"]) == (2, 1, "rising")
        assert result.valid_until_ms == ms("2024-02-01T00:00")


class TestTopics:
    """Topic aggregations on classified titles."""

    def history(self) -> list:
        t = ms("2024-01-10T10:00")
        return [
            view(t, "UCg", "g1", title="Minecraft let's play"),
            view(t + MIN, "UCg", "g1", title="Minecraft let's play", shorts=True),
            view(t + 2 * MIN, "UCf", "f1", title="Pasta recipe"),
            view(t + 3 * MIN, "UCx", "x1", title="zzz"),
            removed(t + 4 * MIN),
        ]

    def test_engagement(self) -> None:
        """Gaming: 2 views of 1 video → rewatch rate 0.5, Shorts share 0.5."""
        data = compute_one(self.history(), "topic_engagement", now_ms=ms("2024-01-20T00:00")).data
        gaming = data["topics"][0]
        assert (gaming["topic"], gaming["views"], gaming["uniqueVideos"], gaming["rewatchRate"]) == (
            "gaming",
            2,
            1,
            0.5,
        )
        assert gaming["shortsShare"] == 0.5 and gaming["bingeShare"] == 1.0
        assert data["untopicedViews"] == 2

    def test_diversity(self) -> None:
        """Two topics with 2 and 1 views: H = 0.918296 bits, evenness = H, Gini–Simpson = 4/9."""
        data = compute_one(self.history(), "topic_diversity", now_ms=ms("2024-01-20T00:00")).data
        overall = data["overall"]
        assert overall["topicCount"] == 2 and overall["classifiedViews"] == 3
        assert overall["entropyBits"] == pytest.approx(0.918296, abs=1e-6)
        assert overall["evenness"] == pytest.approx(0.918296, abs=1e-6)
        assert overall["giniSimpson"] == pytest.approx(4 / 9, abs=1e-6)

    def test_leaderboard_all_compares_last_30_days(self) -> None:
        """For All the comparison is the last 30 local days against the 30 before."""
        events = self.history() + [view(ms("2023-12-20T10:00"), "UCf", "f2", title="Pizza recipe")]
        data = compute_one(events, "topics_leaderboard", now_ms=ms("2024-01-20T12:00")).data
        rows = {r["topic"]: r for r in data["topics"]}
        assert rows["food_cooking"]["views"] == 2
        assert (rows["food_cooking"]["windowViews"], rows["food_cooking"]["previousViews"]) == (1, 1)
        assert rows["gaming"]["change"] is None
        assert data["untopicedViews"] == 2 and data["comparison"]["days"] == 30

    def test_leaderboard_mtd_equal_length(self) -> None:
        """For MTD on the 10th the previous window is the 10 days before the month start."""
        events = [
            view(ms("2024-02-05T10:00"), title="Pasta recipe"),
            view(ms("2024-01-25T10:00"), title="Pasta recipe"),
            view(ms("2024-01-10T10:00"), title="Pasta recipe"),
        ]
        data = compute_one(events, "topics_leaderboard", now_ms=ms("2024-02-10T12:00"), timeframe="MTD").data
        assert data["comparison"]["previousStartMs"] == ms("2024-01-22T00:00")
        assert data["topics"][0]["previousViews"] == 1 and data["topics"][0]["change"] == 0.0

    def test_discovery(self) -> None:
        """Channels first seen within 30 days are new; older ones habitual."""
        events = [
            view(ms("2023-06-01T10:00"), "UCf", title="Pasta recipe"),
            view(ms("2024-01-15T10:00"), "UCf", title="Pasta recipe"),
            view(ms("2024-01-16T10:00"), "UCn", title="Pizza recipe"),
        ]
        data = compute_one(events, "topic_discovery", now_ms=ms("2024-01-20T00:00")).data
        food = data["topics"][0]
        assert (food["newChannelViews"], food["habitualChannelViews"], food["newChannels"]) == (1, 2, 1)
        assert food["newChannelShare"] == pytest.approx(1 / 3, abs=1e-6)

    def test_evolution_peak_and_low(self) -> None:
        """Peak is the busiest month, low the quietest month from the topic's first month on."""
        events = [
            view(ms("2023-11-01T10:00"), title="Pasta recipe"),
            view(ms("2023-11-02T10:00"), title="Pasta recipe"),
            view(ms("2024-01-02T10:00"), title="Pasta recipe"),
        ]
        row = compute_one(events, "topic_evolution", now_ms=ms("2024-01-20T00:00")).data["topics"][0]
        assert (row["peakMonth"], row["peakViews"], row["lowMonth"], row["lowViews"]) == (
            "2023-11",
            2,
            "2023-12",
            0,
        )

    def test_topic_filter(self) -> None:
        """A topic filter keeps only views of that topic."""
        data = compute_one(self.history(), "kpi", now_ms=ms("2024-01-20T00:00"), topics=("gaming",)).data
        assert data["views"] == 2


class TestEdgeHistories:
    """Empty and single-view histories give complete, zeroed results."""

    def test_empty_history_all_types_all_sets(self) -> None:
        """Every type × eager set is produced for an empty history, in deterministic order."""
        results = compute_aggregations(
            [], now_ms=ms("2024-01-01T00:00"), time_zone="UTC", filter_sets=EAGER_FILTER_SETS
        )
        assert len(results) == 14 * 18
        assert [r.type for r in results[:14]] == list(AGGREGATION_TYPES)
        assert all(r.data is not None for r in results)

    def test_single_view(self) -> None:
        """One view: one session, one month, one channel."""
        results = compute_aggregations(
            [view(ms("2024-01-01T12:00"))],
            now_ms=ms("2024-01-02T00:00"),
            time_zone="UTC",
            filter_sets=EAGER_FILTER_SETS[:1],
        )
        by_type = {r.type: r.data for r in results}
        assert by_type["kpi"]["views"] == 1 and by_type["session_analysis"]["sessionCount"] == 1
        assert len(by_type["monthly_trend"]["months"]) == 1

    def test_valid_until_per_timeframe(self) -> None:
        """MTD/QTD/YTD expire at the next month/quarter/year start; All with no time-relative part never."""
        now = ms("2024-05-20T00:00", "Europe/Berlin")
        sets = [fs for fs in EAGER_FILTER_SETS if fs.product == "all"]
        results = compute_aggregations(
            [], now_ms=now, time_zone="Europe/Berlin", filter_sets=sets, types=["monthly_trend"]
        )
        got = {r.filter_key.split("|")[0]: r.valid_until_ms for r in results}
        assert got["MTD"] == ms("2024-06-01T00:00", "Europe/Berlin")
        assert got["QTD"] == ms("2024-07-01T00:00", "Europe/Berlin")
        assert got["YTD"] == ms("2025-01-01T00:00", "Europe/Berlin")
        assert got["Last6M"] == got["Last12M"] == got["MTD"]
        assert got["All"] is None

    def test_duplicates_counted_once(self) -> None:
        """Views with the same dedupe key count once."""
        t = ms("2024-01-01T00:00")
        assert compute_one([view(t, video="v1"), view(t, video="v1")], "kpi", now_ms=t).data["views"] == 1

    def test_future_views_included(self) -> None:
        """Views after now (clock skew) are inside every timeframe window."""
        now = ms("2024-01-15T00:00")
        assert compute_one([view(now + 3_600_000)], "kpi", now_ms=now, timeframe="MTD").data["views"] == 1

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"time_zone": "Mars/Olympus"}, "time_zone"),
            ({"types": ["nope"]}, "types"),
            ({"now_ms": -5}, "now_ms"),
        ],
    )
    def test_invalid_arguments(self, kwargs: dict, field: str) -> None:
        """Invalid arguments raise ValueError naming the argument."""
        args = {"now_ms": 0, "time_zone": "UTC", "filter_sets": EAGER_FILTER_SETS[:1]} | kwargs
        with pytest.raises(ValueError, match=field):
            compute_aggregations([], **args)
