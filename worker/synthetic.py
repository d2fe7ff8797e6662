"""Seeded synthetic watch histories and writers of Google Takeout files (JSON and HTML).

The generator gives realistic data for tests, benchmarks and the bundled demo export:
Zipf-distributed channel popularity, one theme per channel with keyword-rich titles (so a keyword
topic classifier can recognise them), a daily rhythm in the user's time zone, sessions, rewatches,
removed videos, Shorts and YouTube Music plays on ``"<Artist> - Topic"`` channels.

The writers produce Google's own layouts (``docs/takeout-formats.md`` §2 and §4), so
``worker.takeout`` reads back exactly the generated events (HTML to the second).

Command line (the bundled demo export)::

    python -m worker.synthetic --events 5000 --seed 7 --out worker/data/demo-watch-history.json
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import math
import random
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from worker.models import Product, WatchEvent
from worker.takeout.html_dates import ZONE_OFFSETS_MS

_DAY_MS: Final = 86_400_000
_YEAR_MS: Final = int(365.25 * _DAY_MS)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_MAX_CHANNELS: Final = 20_000
_MAX_ARTISTS: Final = 4_000
_MIN_YEARS: Final = 0.02

# Relative view intensity per local hour (evening peak, few night views).
_HOUR_WEIGHTS: Final = (
    0.55, 0.3, 0.15, 0.07, 0.04, 0.05, 0.18, 0.4, 0.55, 0.6, 0.65, 0.75,
    1.0, 0.95, 0.85, 0.9, 1.05, 1.35, 1.8, 2.3, 2.7, 2.6, 2.0, 1.2,
)  # fmt: skip

THEMES: Final[tuple[str, ...]] = (
    "music", "gaming", "technology", "science", "education", "news_politics", "sports",
    "food_cooking", "comedy", "fitness_health", "travel", "finance", "diy_home", "film_tv",
    "automotive", "beauty_fashion", "animals",
)  # fmt: skip
"""Themes of generated channels; ``"misc"`` channels (vlogs) have titles without a topic."""

_THEME_WEIGHTS: Final = (
    1.6, 2.0, 1.6, 0.9, 1.0, 0.9, 0.9, 0.9, 1.0, 0.6, 0.5, 0.5, 0.5, 0.8, 0.4, 0.4, 0.4,
)  # fmt: skip
_MISC_SHARE: Final = 0.06

# Per theme: (channel-name patterns, title templates, slot words). "{x}" = word from the slots,
# "{n}" = a number, "{y}" = a year.
_VOCAB: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]] = {
    "music": (
        ("{x} Music", "{x} Records", "{x} Official", "{x} Sounds"),
        (
            "{x} - Official Music Video",
            "{x} (Live at Wembley)",
            "{x} - Lyrics",
            "{x} Acoustic Cover",
            "Top 50 Songs of {y} Playlist",
            "Lofi Hip Hop Beats to Study to",
            "{x} Guitar Lesson - Chords",
            "{x} Remix (Official Audio)",
            "Piano Cover: {x}",
            "Best Jazz Music Live Concert",
        ),
        (
            "Neon Skyline",
            "Golden Hour",
            "Paper Hearts",
            "Midnight Drive",
            "Blue Summer",
            "Wildfire",
            "Silver Lining",
            "Echoes",
            "Ocean Eyes",
            "Starlight",
        ),
    ),
    "gaming": (
        ("{x} Gaming", "{x} Plays", "{x}TV", "The {x} Gamer"),
        (
            "Minecraft Hardcore Survival Ep. {n}",
            "Elden Ring Boss Guide: {x}",
            "Fortnite Season {n} Gameplay",
            "Zelda Tears of the Kingdom Walkthrough Part {n}",
            "Top 10 Games of {y}",
            "GTA 6 Trailer Reaction",
            "Speedrun World Record - {x}",
            "Minecraft Redstone Tutorial: {x}",
            "League of Legends Ranked {x} Gameplay",
            "Pokemon Nuzlocke Challenge Ep. {n}",
            "Valorant Tips for Beginners",
        ),
        ("Dragon", "Castle", "Shadow", "Pixel", "Creeper", "Nether", "Speed", "Boss", "Mage", "Arcade"),
    ),
    "technology": (
        ("{x} Tech", "{x} Reviews", "Tech with {x}", "{x} Unboxed"),
        (
            "iPhone {n} Pro review",
            "Samsung Galaxy S{n} Unboxing",
            "Best Laptop for Programming in {y}",
            "Building a Gaming PC - RTX {n}080 Build Guide",
            "Linux vs Windows: {x} Comparison",
            "Python Tutorial for Beginners - {x}",
            "The Truth About AI Chips",
            "MacBook Pro M{n} Review",
            "Smartphone Camera Test: {x}",
            "How Does a CPU Work? Software Explained",
        ),
        ("Ultra", "Budget", "Flagship", "Mini", "Pro", "Max", "Developer", "Gaming", "Battery", "Camera"),
    ),
    "science": (
        ("{x} Science", "{x} Lab", "The {x} Physicist", "{x} Space"),
        (
            "Why Black Holes Are Stranger Than You Think",
            "Quantum Physics Explained: {x}",
            "NASA Mars Rover Update - Space News",
            "The Chemistry of {x}",
            "How Evolution Shaped the {x}",
            "James Webb Telescope Discovers {x}",
            "Biology of the Human Brain - Neuroscience",
            "Astronomy: The Life Cycle of Stars",
            "This Physics Experiment Changed Science",
        ),
        ("Quasars", "Atoms", "Galaxies", "Crystals", "Neutrinos", "Cells", "Eclipses", "Volcanoes"),
    ),
    "education": (
        ("{x} Academy", "Learn with {x}", "{x} Explained", "{x} University"),
        (
            "Calculus Lecture {n}: {x}",
            "History of the Roman Empire - Documentary",
            "Learn Spanish in {n} Minutes",
            "Study With Me - {n} Hours Pomodoro",
            "Algebra Tutorial: {x}",
            "World War II Explained - History Lesson",
            "How to Write an Essay - Lesson {n}",
            "The Philosophy of {x} - Lecture",
            "Math Exam Revision: {x}",
        ),
        ("Derivatives", "Integrals", "Grammar", "Stoicism", "Geometry", "Probability", "Vectors", "Logic"),
    ),
    "news_politics": (
        ("{x} News", "{x} Report", "{x} Today", "{x} Politics"),
        (
            "Election {y}: Debate Highlights",
            "Breaking News: {x} Summit",
            "Parliament Votes on {x} Bill",
            "President Addresses the Nation on {x}",
            "World News Tonight - {x}",
            "Political Analysis: {x} Policy",
            "Government Shutdown Explained",
            "Live: Press Conference on {x}",
        ),
        ("Climate", "Budget", "Trade", "Healthcare", "Immigration", "Energy", "Security", "Tax"),
    ),
    "sports": (
        ("{x} Sports", "{x} Highlights", "{x} FC Fans", "{x} Football"),
        (
            "Champions League Highlights - {x} vs Madrid",
            "NBA Finals Game {n} Highlights",
            "Premier League Goals of the Week",
            "Formula 1 Race Highlights {y} {x} Grand Prix",
            "Tennis: Best Points of Wimbledon {y}",
            "NFL Week {n} Recap",
            "Football Transfer News: {x}",
            "Olympics {y} Athletics Final",
        ),
        ("Liverpool", "Monaco", "Bayern", "Arsenal", "Barcelona", "Silverstone", "Lakers", "Chelsea"),
    ),
    "food_cooking": (
        ("{x} Kitchen", "Cooking with {x}", "{x} Eats", "{x} Recipes"),
        (
            "Easy Chicken Curry Recipe",
            "How to Bake Sourdough Bread",
            "{x} Pasta Recipe in 15 Minutes",
            "Gordon Ramsay Style Steak Cooking",
            "Vegan {x} Recipe",
            "Best Chocolate Cake Recipe Ever",
            "Street Food Tour: {x}",
            "Meal Prep for the Week - Healthy Recipes",
            "Homemade Pizza Dough Recipe",
        ),
        ("Garlic", "Lemon", "Creamy", "Spicy", "Mushroom", "Tomato", "Ramen", "Taco"),
    ),
    "comedy": (
        ("{x} Comedy", "{x} Laughs", "The {x} Show", "{x} Sketches"),
        (
            "Stand-Up Comedy Special - {x}",
            "Funny Sketch: {x}",
            "Try Not to Laugh Challenge #{n}",
            "Best Prank Compilation {y}",
            "Comedy Roast of {x}",
            "Improv Comedy Night Ep. {n}",
            "Funniest Fails of the Week",
        ),
        ("Office", "Dad", "Wedding", "Airport", "Roommate", "Karen", "Interview", "Gym"),
    ),
    "fitness_health": (
        ("{x} Fitness", "{x} Workouts", "Fit with {x}", "{x} Yoga"),
        (
            "20 Minute Full Body Workout - No Equipment",
            "Yoga for Beginners Day {n}",
            "HIIT Cardio Workout {x}",
            "How to Build Muscle: {x} Training",
            "Healthy Diet Tips for Weight Loss",
            "Running Form Tips for {x}",
            "Morning Stretching Routine",
            "Leg Day Gym Workout",
            "Meditation for Sleep and Anxiety",
        ),
        ("Abs", "Marathon", "Core", "Strength", "Mobility", "Protein", "Pilates", "Squat"),
    ),
    "travel": (
        ("{x} Travels", "Wandering {x}", "{x} Abroad", "{x} Adventures"),
        (
            "{x} Travel Guide - Top 10 Things to Do",
            "Backpacking {x} on a Budget",
            "First Time in {x} Vlog",
            "Flight Review: Business Class to {x}",
            "Road Trip Through {x}",
            "Hidden Gems of {x} Travel",
            "Hotel Tour: Best Resort in {x}",
        ),
        ("Japan", "Iceland", "Lisbon", "Vietnam", "Peru", "Norway", "Morocco", "Tuscany"),
    ),
    "finance": (
        ("{x} Finance", "{x} Money", "{x} Invests", "The {x} Investor"),
        (
            "How to Invest in Stocks for Beginners",
            "Stock Market Crash? {x} Analysis",
            "Bitcoin Price Prediction {y}",
            "Personal Finance: Budget Like {x}",
            "Index Funds vs ETF Explained",
            "Real Estate Investing {x} Tips",
            "Inflation and Interest Rates Explained",
            "My Dividend Portfolio Update {y}",
        ),
        ("Warren", "Smart", "Frugal", "Passive Income", "Millionaire", "Retirement", "Crypto", "Savings"),
    ),
    "diy_home": (
        ("{x} Builds", "{x} Workshop", "DIY with {x}", "{x} Home"),
        (
            "DIY Kitchen Renovation on a Budget",
            "How to Build a {x} Table - Woodworking",
            "Home Improvement: Fixing a {x}",
            "Garden Makeover {y}",
            "Tiny House Build Ep. {n}",
            "How to Paint a Room Like a Pro",
            "Woodworking Project: {x} Shelf",
            "Plumbing Repair Tutorial",
        ),
        ("Walnut", "Oak", "Floating", "Leaky Tap", "Deck", "Garage", "Workbench", "Drywall"),
    ),
    "film_tv": (
        ("{x} Movies", "{x} Cinema", "{x} Reviews Film", "{x} Screen"),
        (
            "{x} Official Trailer",
            "Movie Review: {x} (No Spoilers)",
            "Marvel Theory: {x} Explained",
            "Top 10 Netflix Series of {y}",
            "Behind the Scenes of {x} - Film Making",
            "Oscars {y} Predictions",
            "Every {x} Episode Ranked",
            "Film Analysis: The Cinematography of {x}",
        ),
        ("Dune", "Batman", "Star Wars", "Succession", "Oppenheimer", "Stranger Things", "Avatar", "The Bear"),
    ),
    "automotive": (
        ("{x} Cars", "{x} Motors", "{x} Garage", "{x} Drives"),
        (
            "{x} Review - Test Drive",
            "Tesla Model {n} Long-Term Review",
            "Top Speed Run in a {x}",
            "Car Detailing: {x} Restoration",
            "Electric Car vs Petrol: {x}",
            "Formula Drift Car Build Ep. {n}",
            "Buying a Used Car? Watch This",
            "Engine Rebuild Timelapse",
        ),
        ("Porsche 911", "BMW M3", "Mustang", "Supra", "Golf GTI", "Land Cruiser", "Civic Type R", "Ferrari"),
    ),
    "beauty_fashion": (
        ("{x} Beauty", "{x} Style", "{x} Makeup", "Styled by {x}"),
        (
            "Everyday Makeup Tutorial",
            "{x} Skincare Routine",
            "Fashion Haul: {x} Outfits",
            "Get Ready With Me - {x} Look",
            "Hair Tutorial: {x} Curls",
            "Spring Fashion Trends {y}",
            "Drugstore Makeup vs High End",
            "Nail Art Design Ideas",
        ),
        ("Glowy", "Minimalist", "Vintage", "Korean", "Night Out", "Summer", "Natural", "Bold"),
    ),
    "animals": (
        ("{x} Pets", "{x} Wildlife", "{x} Animal Rescue", "{x} Paws"),
        (
            "Funny Cats Compilation {y}",
            "Dog Training Tips: {x}",
            "Puppy's First Day Home",
            "Wildlife Documentary: The {x}",
            "Rescue Kitten Update Ep. {n}",
            "Bird Watching - {x}",
            "Aquarium Fish Tank Setup",
            "Cute Animals Being Silly",
        ),
        ("Golden Retriever", "Husky", "Orca", "Snow Leopard", "Parrot", "Hedgehog", "Otter", "Kitten"),
    ),
    "misc": (
        ("{x}", "{x} Vlogs", "just {x}", "{x}'s Life"),
        (
            "we need to talk.",
            "day in my life #{n}",
            "IMG_{n}{n}",
            "this changed everything",
            "honest update",
            "ok so this happened",
            "{x} part {n}",
            "reacting to old videos",
            "Q&A - your questions answered",
            "it's finally here",
        ),
        ("Milo", "Sasha", "Jonas", "Ruby", "Theo", "Lena", "Noah", "Ivy"),
    ),
}

_FIRST_NAMES: Final = (
    "Alex", "Maya", "Leo", "Nora", "Kai", "Emma", "Finn", "Lara", "Omar", "Zoe", "Jin", "Ana",
    "Luca", "Ivy", "Sam", "Mila", "Ravi", "Elena", "Tom", "Yuki",
)  # fmt: skip
_NAME_WORDS: Final = (
    "Blue", "Nova", "Iron", "Pixel", "Urban", "Lucky", "Bright", "Silver", "Wild", "Atlas", "Echo",
    "Maple", "Cosmic", "Rapid", "Quiet", "North", "Golden", "Crimson", "Lunar", "Vivid",
)  # fmt: skip
_ARTIST_WORDS: Final = (
    "The Midnight", "Aurora", "Velvet", "Kites", "Paper", "Hollow", "Satellite", "Juniper", "Coral",
    "Neon", "Willow", "Harbor", "Static", "Violet", "Orbit", "Saint", "Ember", "Lotus",
)  # fmt: skip
_ARTIST_SUFFIX: Final = ("", " Lane", " Club", " Ray", "s", " & The Waves", " Kid", " Bloom", " Collective")
_SONG_WORDS: Final = (
    "Love", "Night", "Summer", "Fire", "Dreams", "Gold", "Rain", "Heart", "Lights", "Home", "Stay",
    "Runaway", "Forever", "Falling", "Wild", "Electric", "Holiday", "Paradise",
)  # fmt: skip

_AD_TITLES: Final = (
    "91106-67270-Var-Vid-9x16-procM-GG-EN", "Volvo Cars", "EN_D10_AW22_V2_16x9_CHOICE_RMKT.mp4",
    "Spotify Premium", "Grammarly", "NordVPN", "Audible Free Trial",
)  # fmt: skip


def _random_id(rng: random.Random, length: int, taken: set[str]) -> str:
    """Return a new id of ``length`` characters of ``[A-Za-z0-9_-]`` not yet in ``taken`` (and add it)."""
    n_bytes = (length * 6 + 7) // 8 + 2
    while True:
        value = base64.urlsafe_b64encode(rng.getrandbits(n_bytes * 8).to_bytes(n_bytes, "big")).decode()[:length]
        if value not in taken:
            taken.add(value)
            return value


def _fill(template: str, rng: random.Random, slots: Sequence[str], year_hi: int) -> str:
    out = template
    while "{x}" in out:
        out = out.replace("{x}", rng.choice(slots), 1)
    while "{n}" in out:
        out = out.replace("{n}", str(rng.randint(2, 48)), 1)
    return out.replace("{y}", str(rng.randint(year_hi - 3, year_hi)))


class _Catalog:
    """Channels, their themes and their lazily created videos (deterministic for one rng)."""

    def __init__(self, rng: random.Random, n_channels: int, n_artists: int, year_hi: int) -> None:
        self.rng = rng
        self.year_hi = year_hi
        self.video_ids: set[str] = set()
        channel_ids: set[str] = set()
        themes = [*THEMES, "misc"]
        weights = [w * (1 - _MISC_SHARE) / sum(_THEME_WEIGHTS) for w in _THEME_WEIGHTS] + [_MISC_SHARE]
        self.channels: list[tuple[str, str, str]] = []  # (id, name, theme)
        for _ in range(n_channels):
            theme = rng.choices(themes, weights)[0]
            patterns, _, slots = _VOCAB[theme]
            word = rng.choice((*_NAME_WORDS, *_FIRST_NAMES, *(s.split()[0] for s in slots)))
            name = rng.choice(patterns).replace("{x}", word)
            self.channels.append(("UC" + _random_id(rng, 22, channel_ids), name, theme))
        self.artists: list[tuple[str, str, str]] = []
        for _ in range(n_artists):
            artist = rng.choice(_ARTIST_WORDS) + rng.choice(_ARTIST_SUFFIX)
            self.artists.append(("UC" + _random_id(rng, 22, channel_ids), f"{artist} - Topic", "music"))
        self.videos: dict[tuple[int, int, int], tuple[str, str]] = {}

    def video(self, channel: int, music: bool, index: int, shorts: bool) -> tuple[str, str]:
        """Return ``(video_id, title)`` of a channel's video, creating it on first use."""
        key = (channel, 1 if music else (2 if shorts else 0), index)
        found = self.videos.get(key)
        if found is not None:
            return found
        rng = self.rng
        if music:
            title = " ".join(rng.sample(_SONG_WORDS, rng.randint(1, 3)))
        else:
            theme = self.channels[channel][2]
            _, templates, slots = _VOCAB[theme]
            title = _fill(rng.choice(templates), rng, slots, self.year_hi)
            if shorts:
                title = title.split(" - ")[0]
                if rng.random() < 0.5:
                    title += " #shorts"
        created = (_random_id(rng, 11, self.video_ids), title)
        self.videos[key] = created
        return created


def _zipf_weights(count: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights: np.ndarray = 1.0 / np.arange(1, count + 1, dtype=np.float64) ** exponent
    rng.shuffle(weights)
    normalized: np.ndarray = weights / weights.sum()
    return normalized


def _session_times(
    n_events: int, gen: np.random.Generator, end_ms: int, zone: ZoneInfo, years: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return (sorted strictly increasing utc ms, session number per event)."""
    lengths: list[np.ndarray] = []
    total = 0
    while total < n_events:
        chunk = np.minimum(1 + gen.geometric(0.3, size=max(64, (n_events - total) // 3 + 16)) - 1, 30)
        lengths.append(chunk)
        total += int(chunk.sum())
    sizes = np.concatenate(lengths)
    cut = int(np.searchsorted(np.cumsum(sizes), n_events)) + 1
    sizes = sizes[:cut].copy()
    sizes[-1] -= int(sizes.sum()) - n_events
    n_sessions = len(sizes)

    first_day = (datetime.fromtimestamp((end_ms - years * _YEAR_MS) / 1000, UTC).astimezone(zone)).date()
    last_day = datetime.fromtimestamp(end_ms / 1000, UTC).astimezone(zone).date() - timedelta(days=2)
    n_days = max(1, (last_day - first_day).days)
    day_index = np.arange(n_days)
    ordinals = first_day.toordinal() + day_index
    weekday = (ordinals + 6) % 7  # 0 = Monday (date.weekday of ordinal 1 is Monday)
    day_weights = (0.6 + 0.8 * day_index / n_days) * np.where(weekday >= 5, 1.3, 1.0)
    day_weights /= day_weights.sum()
    offsets_ms = np.array(
        [
            int(
                datetime.combine(date.fromordinal(int(o)), datetime.min.time(), zone)
                .replace(hour=12)
                .utcoffset()
                .total_seconds()  # type: ignore[union-attr]
            )
            * 1000
            for o in ordinals
        ],
        dtype=np.int64,
    )
    hours = np.asarray(_HOUR_WEIGHTS) / sum(_HOUR_WEIGHTS)
    s_day = gen.choice(n_days, size=n_sessions, p=day_weights)
    s_hour = gen.choice(24, size=n_sessions, p=hours)
    s_local = (
        (ordinals[s_day].astype(np.int64) - _EPOCH_ORDINAL) * _DAY_MS
        + s_hour * 3_600_000
        + gen.integers(0, 3_600_000, size=n_sessions)
    )
    s_start = s_local - offsets_ms[s_day]
    session_of = np.repeat(np.arange(n_sessions), sizes)
    gaps = np.minimum(30_000 + gen.exponential(360_000, size=n_events), 1_500_000).astype(np.int64)
    starts_of_session = np.cumsum(sizes) - sizes
    gaps[starts_of_session[sizes > 0]] = 0
    cum = np.cumsum(gaps)
    times = s_start[session_of] + cum - cum[starts_of_session[session_of]]
    order = np.argsort(times, kind="stable")
    times = times[order]
    session_of = session_of[order]
    whole = gen.random(n_events) < 0.004  # a few instants without milliseconds
    times = np.where(whole, times - times % 1000, times)
    times = np.maximum.accumulate(times - np.arange(n_events)) + np.arange(n_events)
    return times, session_of


def generate_history(
    n_events: int,
    *,
    seed: int,
    end_ms: int,
    time_zone: str = "Europe/Berlin",
    years: float = 3.0,
    music_share: float = 0.15,
) -> list[WatchEvent]:
    """Generate a realistic, deterministic watch history.

    Args:
        n_events: Number of views (``watch`` + ``removed``) to generate, 0 to a few million.
        seed: Seed; the same arguments always give the same history.
        end_ms: Exclusive upper bound of the instants (epoch ms, UTC); views end about two days before.
        time_zone: IANA zone of the user; the daily rhythm (evening peak, quiet nights) and weekday
            weighting are in this zone's local time.
        years: Length of the covered period, in years of 365.25 days before ``end_ms``.
        music_share: Approximate share of views that are YouTube Music plays (whole sessions are music).

    Returns:
        Views sorted by ``watched_at_ms`` (strictly increasing, so no two share an instant): about 2 %
        ``removed`` (no id, title or channel), about 3 % flagged ``shorts``, about 1 % flagged
        ``title_unknown`` (title and channel None, as Takeout gives them), about 8 % rewatches, and
        ``music_share`` YouTube Music plays on ``"<Artist> - Topic"`` channels. Video ids are 11
        characters of ``[A-Za-z0-9_-]``, channel ids ``UC`` + 22 such characters.

    Raises:
        ValueError: for a negative ``n_events``, ``years`` < 0.02 (about a week), ``music_share``
            outside [0, 1] or an unknown ``time_zone``.
    """
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    if not years >= _MIN_YEARS:
        raise ValueError(f"years must be >= {_MIN_YEARS} (about a week), got {years}")
    if not 0.0 <= music_share <= 1.0:
        raise ValueError(f"music_share must be within [0, 1], got {music_share}")
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {time_zone!r}") from None
    if n_events == 0:
        return []
    gen = np.random.default_rng(seed)
    rng = random.Random(seed)
    times, session_of = _session_times(n_events, gen, end_ms, zone, years)

    year_hi = datetime.fromtimestamp(end_ms / 1000, UTC).year
    n_channels = max(8, min(n_events // 30, _MAX_CHANNELS))
    n_artists = max(4, min(int(n_events * music_share) // 25, _MAX_ARTISTS))
    catalog = _Catalog(rng, n_channels, n_artists, year_hi)
    channel_p = _zipf_weights(n_channels, 1.05, gen)
    artist_p = _zipf_weights(n_artists, 1.0, gen)
    expected = channel_p * n_events * (1 - music_share)
    catalog_size = np.maximum(3, np.ceil(expected * 0.7)).astype(np.int64)
    artist_size = np.maximum(3, np.ceil(artist_p * n_events * music_share * 0.25)).astype(np.int64)

    n_sessions = int(session_of.max()) + 1
    music_session = gen.random(n_sessions) < music_share
    is_music = music_session[session_of]
    pick_channel = gen.choice(n_channels, size=n_events, p=channel_p)
    pick_artist = gen.choice(n_artists, size=n_events, p=artist_p)
    video_u = gen.random(n_events) ** 1.6
    roll = gen.random(n_events)
    sticky = gen.random(n_events) < 0.35
    back = gen.integers(1, 40, size=n_events)

    events: list[WatchEvent] = []
    prev_session = -1
    prev_channel = -1
    for i in range(n_events):
        at = int(times[i])
        session = int(session_of[i])
        music = bool(is_music[i])
        product: Product = "youtube_music" if music else "youtube"
        r = float(roll[i])
        if r < 0.02:
            events.append(WatchEvent(watched_at_ms=at, kind="removed", product=product))
            continue
        if r < 0.10 and i > 0:  # rewatch of a recent view
            j = max(0, i - int(back[i]))
            source = events[j]
            if source.kind == "watch" and source.product == product:
                events.append(
                    WatchEvent(
                        watched_at_ms=at,
                        product=product,
                        video_id=source.video_id,
                        title=source.title,
                        channel_id=source.channel_id,
                        channel_name=source.channel_name,
                        flags=source.flags,
                    )
                )
                continue
        if music:
            channel = int(pick_artist[i])
            channel_id, channel_name, _ = catalog.artists[channel]
            video_id, title = catalog.video(channel, True, int(video_u[i] * artist_size[channel]), False)
            events.append(
                WatchEvent(
                    watched_at_ms=at,
                    product=product,
                    video_id=video_id,
                    title=title,
                    channel_id=channel_id,
                    channel_name=channel_name,
                )
            )
            continue
        channel = int(pick_channel[i])
        if session == prev_session and bool(sticky[i]) and prev_channel >= 0:
            channel = prev_channel
        prev_session, prev_channel = session, channel
        channel_id, channel_name, _ = catalog.channels[channel]
        shorts = 0.10 <= r < 0.13
        video_id, title = catalog.video(channel, False, int(video_u[i] * catalog_size[channel]), shorts)
        if 0.13 <= r < 0.14:
            events.append(WatchEvent(watched_at_ms=at, video_id=video_id, flags=frozenset({"title_unknown"})))
            continue
        events.append(
            WatchEvent(
                watched_at_ms=at,
                video_id=video_id,
                title=title,
                channel_id=channel_id,
                channel_name=channel_name,
                flags=frozenset({"shorts"}) if shorts else frozenset(),
            )
        )
    return events


# --------------------------------------------------------------------------------------------
# Writers


def _gson(value: str) -> str:
    """Return ``value`` as a JSON string literal escaped the way Google's Gson serializer does."""
    out = _json_dumps(value)
    return (
        out.replace("=", "\\u003d")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _json_dumps(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _iso(ms: int) -> str:
    """Return Google's instant form: ``2024-01-05T22:15:32.104Z``, or without ``.mmm`` when it is 0."""
    seconds, frac = divmod(ms, 1000)
    days, rest = divmod(seconds, 86_400)
    day = date.fromordinal(_EPOCH_ORDINAL + days)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    stamp = f"{day.isoformat()}T{hour:02d}:{minute:02d}:{second:02d}"
    return f"{stamp}.{frac:03d}Z" if frac else f"{stamp}Z"


def _video_url(event: WatchEvent) -> str:
    host = "music.youtube.com" if event.product == "youtube_music" else "www.youtube.com"
    vid = event.video_id or ""
    if "shorts" in event.flags and "#shorts" not in (event.title or "").lower():
        return f"https://www.youtube.com/shorts/{vid}"
    return f"https://{host}/watch?v={vid}"


_Row = tuple[int, str, WatchEvent | None, int]
"""(instant ms, kind, view or None, serial) — one output record."""


def _rows(events: Sequence[WatchEvent], seed: int, extra_non_views: bool) -> list[_Row]:
    """Merge views and deterministic non-views, newest first."""
    rows: list[_Row] = [(e.watched_at_ms, "view", e, i) for i, e in enumerate(events)]
    if extra_non_views and events:
        rng = random.Random(seed ^ 0x5EED)
        taken = {e.watched_at_ms for e in events}
        for serial, event in enumerate(events):
            r = rng.random()
            kind = (
                "ad" if r < 0.012
                else "ad_click" if r < 0.015
                else "post" if r < 0.019
                else "visit" if r < 0.021
                else None
            )  # fmt: skip
            if kind is None:
                continue
            at = event.watched_at_ms - rng.randint(2_000, 40_000)
            while at in taken:
                at -= 1
            taken.add(at)
            rows.append((at, kind, None, serial))
    rows.sort(key=lambda row: (row[0], row[3]), reverse=True)
    return rows


def _json_record(fields: list[tuple[str, str]]) -> str:
    return "{\n" + ",\n".join(f'  "{key}": {value}' for key, value in fields) + "\n}"


def _json_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_gson(v) for v in values) + "]"


def _json_objects(objects: Sequence[Sequence[tuple[str, str]]]) -> str:
    parts = ["{\n" + ",\n".join(f'    "{key}": {_gson(value)}' for key, value in obj) + "\n  }" for obj in objects]
    return "[" + ", ".join(parts) + "]"


_WATCH_CONTROLS: Final = ("YouTube watch history",)
_AD_CONTROLS: Final = ("Web & App Activity", "YouTube watch history")


@functools.lru_cache(maxsize=65_536)
def _subtitles_json(channel_id: str, channel_name: str) -> str:
    channel = [("name", channel_name), ("url", f"https://www.youtube.com/channel/{channel_id}")]
    return _json_objects([channel])


@functools.lru_cache(maxsize=4)
def _constant_json(kind: str) -> str:
    if kind == "header_music":
        return _gson("YouTube Music")
    if kind == "header":
        return _gson("YouTube")
    if kind == "removed":
        return _gson("Watched a video that has been removed")
    if kind == "products":
        return _json_list(["YouTube"])
    return _json_list(_WATCH_CONTROLS)


def _json_view(event: WatchEvent) -> str:
    header = _constant_json("header_music" if event.product == "youtube_music" else "header")
    fields: list[tuple[str, str]] = [("header", header)]
    if event.kind == "removed":
        fields.append(("title", _constant_json("removed")))
    else:
        url = _video_url(event)
        title = url if event.title is None else event.title
        fields += [("title", _gson(f"Watched {title}")), ("titleUrl", _gson(url))]
        if event.channel_id is not None:
            fields.append(("subtitles", _subtitles_json(event.channel_id, event.channel_name or "")))
    fields += [
        ("time", f'"{_iso(event.watched_at_ms)}"'),
        ("products", _constant_json("products")),
        ("activityControls", _constant_json("controls")),
    ]
    return _json_record(fields)


def _json_non_view(kind: str, at: int, rng: random.Random, taken: set[str]) -> str:
    time_field = ("time", _gson(_iso(at)))
    products = ("products", _json_list(["YouTube"]))
    ad_details = ("details", _json_objects([[("name", "From Google Ads")]]))
    if kind == "ad":
        url = "https://www.youtube.com/watch?v=" + _random_id(rng, 11, taken)
        return _json_record([
            ("header", _gson("YouTube")), ("title", _gson("Watched " + rng.choice(_AD_TITLES))),
            ("titleUrl", _gson(url)), time_field, products, ad_details,
            ("activityControls", _json_list(_AD_CONTROLS)),
        ])  # fmt: skip
    if kind == "ad_click":
        target = f"https://ads.example.com/click?id={rng.randint(1000, 9999)}&src=yt"
        return _json_record([
            ("header", _gson("YouTube")), ("title", _gson("Visited " + target)),
            ("titleUrl", _gson("https://www.google.com/url?q=" + target.replace("?", "%3F"))),
            time_field, products, ad_details,
            ("activityControls", _json_list((*_AD_CONTROLS, "YouTube search history"))),
        ])  # fmt: skip
    if kind == "post":
        channel = [("name", rng.choice(_NAME_WORDS) + " Community"),
                   ("url", "https://www.youtube.com/channel/UC" + _random_id(rng, 22, taken))]  # fmt: skip
        return _json_record([
            ("header", _gson("YouTube")),
            ("title", _gson("Viewed New video tomorrow! What do you want to see?\r\nVote below 👇")),
            ("titleUrl", _gson("https://www.youtube.com/post/Ugkx" + _random_id(rng, 32, taken))),
            ("subtitles", _json_objects([channel])), time_field, products,
            ("activityControls", _json_list(_WATCH_CONTROLS)),
        ])  # fmt: skip
    notes = [[("name", "Served location-based recommendations")], [("name", "Temperature: Warm")]]
    return _json_record([
        ("header", _gson("YouTube Music")), ("title", _gson("Visited YouTube Music")),
        ("subtitles", _json_objects(notes)), time_field, products,
        ("activityControls", _json_list(_WATCH_CONTROLS)),
    ])  # fmt: skip


def write_takeout_json(
    events: Sequence[WatchEvent], path: str | Path, *, seed: int, extra_non_views: bool = True
) -> dict[str, int]:
    """Write ``events`` as a Google Takeout ``watch-history.json`` in Google's exact layout.

    Layout: one array, newest first, ``[{`` … ``},{`` … ``}]`` with two-space indents, Gson-style
    escapes (``=`` → ``\\u003d``, ``&`` → ``\\u0026``, ``'`` → ``\\u0027``, ``<``/``>``), instants with
    milliseconds (without them when the millisecond part is 0), ``products`` and ``activityControls``.
    Removed views have no ``titleUrl``/``subtitles``; title-unknown views repeat the URL as the title;
    Shorts without ``#shorts`` in the title get a ``/shorts/`` URL; music plays a ``YouTube Music``
    header and a music.youtube.com URL.

    Args:
        events: Views in any order (``source`` is not written).
        path: Output file (UTF-8), overwritten.
        seed: Seed for the non-view rows.
        extra_non_views: Also write deterministic ads (~1.2 % of views), ad clicks (~0.3 %), community
            posts (~0.4 %) and "Visited YouTube Music" rows (~0.2 %), a few seconds before a view.

    Returns:
        Non-view rows written, by kind (``ad``, ``ad_click``, ``post``, ``visit``), all keys present.
    """
    rng = random.Random(seed ^ 0xAD)
    taken: set[str] = {e.video_id for e in events if e.video_id}
    counts = {"ad": 0, "ad_click": 0, "post": 0, "visit": 0}
    with Path(path).open("w", encoding="utf-8", newline="\n") as out:
        out.write("[")
        for position, (at, kind, event, _) in enumerate(_rows(events, seed, extra_non_views)):
            if position:
                out.write(",")
            if event is not None:
                out.write(_json_view(event))
            else:
                counts[kind] += 1
                out.write(_json_non_view(kind, at, rng, taken))
        out.write("]")
    return counts


_MONTH_ABBR: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_HTML_HEAD: Final = (
    '<html><head><meta charset="UTF-8"><title>My Activity History</title>'
    '<style type="text/css">.mdl-grid{display:flex;flex-wrap:wrap}.content-cell{padding:8px}</style>'
    '</head><body><div class="mdl-grid">'
)
_HTML_TAIL: Final = "</div></body></html>\n"
_OUTER_OPEN: Final = (
    '<div class="outer-cell mdl-cell mdl-cell--12-col mdl-shadow--2dp"><div class="mdl-grid">'
    '<div class="header-cell mdl-cell mdl-cell--12-col">'
    '<p class="mdl-typography--title">{header}<br></p></div>'
    '<div class="content-cell mdl-cell mdl-cell--6-col mdl-typography--body-1">'
)
_BODY_CLOSE: Final = (
    '</div><div class="content-cell mdl-cell mdl-cell--6-col mdl-typography--body-1 '
    'mdl-typography--text-right"></div><div class="content-cell mdl-cell mdl-cell--12-col '
    'mdl-typography--caption">'
)
_WHY: Final = (
    "<b>Why is this here?</b><br>\u2003This activity was saved to your Google Account because the following "
    "settings were on:&nbsp;{controls}.&nbsp;You can control these settings &nbsp;"
    '<a href="https://myaccount.google.com/activitycontrols">here</a>.'
)


def _esc(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def _us_clock(hour: int, minute: int, second: int | None = None) -> str:
    h12 = hour % 12 or 12
    clock = f"{h12}:{minute:02d}" if second is None else f"{h12}:{minute:02d}:{second:02d}"
    return f"{clock}\u202f{'PM' if hour >= 12 else 'AM'}"


def _html_date(ms: int, offset_ms: int, label: str) -> str:
    dt = datetime.fromtimestamp((ms + offset_ms) // 1000, UTC)
    clock = _us_clock(dt.hour, dt.minute, dt.second)
    return f"{_MONTH_ABBR[dt.month - 1]} {dt.day}, {dt.year}, {clock} {label}"


def _html_record(header: str, body: list[str], details: bool, controls: str) -> str:
    caption = "<b>Products:</b><br>\u2003YouTube<br>"
    if details:
        caption += "<b>Details:</b><br>\u2003From Google Ads<br>"
    caption += _WHY.format(controls=controls)
    return _OUTER_OPEN.format(header=header) + "<br>".join(body) + "<br>" + _BODY_CLOSE + caption + "</div></div></div>"


def write_takeout_html(
    events: Sequence[WatchEvent],
    path: str | Path,
    *,
    seed: int,
    zone_label: str = "CET",
    extra_non_views: bool = True,
) -> dict[str, int]:
    """Write ``events`` as a Google Takeout ``watch-history.html`` (en-US, 2023+ style).

    Each record is an ``outer-cell`` with header, body, empty ``text-right`` and caption cells, one
    record per line, newest first. Dates look like ``Aug 15, 2025, 11:04:01\\u202fAM CET``: U+202F
    before AM/PM and one fixed zone label for the whole file, whose fixed offset is applied to every
    instant (as Google does). Milliseconds are dropped. Titles and names are HTML-escaped; the verb is
    followed by ``&nbsp;``; captions use a literal U+2003. Ads carry ``Details: From Google Ads`` and a
    ``Watched at …`` line before the date.

    Args:
        events: Views in any order.
        path: Output file (UTF-8), overwritten.
        seed: Seed for the non-view rows.
        zone_label: A label of :data:`worker.takeout.html_dates.ZONE_OFFSETS_MS` (e.g. ``"CET"``, ``"UTC"``).
        extra_non_views: As in :func:`write_takeout_json` (ads, ad clicks, posts, YouTube Music visits).

    Returns:
        Non-view rows written, by kind (``ad``, ``ad_click``, ``post``, ``visit``).

    Raises:
        ValueError: for an unknown ``zone_label``.
    """
    if zone_label not in ZONE_OFFSETS_MS:
        raise ValueError(f"unknown zone label {zone_label!r}; use one of {sorted(ZONE_OFFSETS_MS)}")
    offset = ZONE_OFFSETS_MS[zone_label]
    rng = random.Random(seed ^ 0xAD)
    taken: set[str] = {e.video_id for e in events if e.video_id}
    counts = {"ad": 0, "ad_click": 0, "post": 0, "visit": 0}
    watch_controls = "YouTube watch history"
    ad_controls = "Web &amp; App Activity,&nbsp;YouTube watch history,&nbsp;YouTube search history"
    with Path(path).open("w", encoding="utf-8", newline="\n") as out:
        out.write(_HTML_HEAD + "\n")
        for at, kind, event, _ in _rows(events, seed, extra_non_views):
            stamp = _html_date(at, offset, zone_label)
            if event is not None:
                header = "YouTube Music" if event.product == "youtube_music" else "YouTube"
                if event.kind == "removed":
                    body = ["Watched a video that has been removed", stamp]
                else:
                    url = _video_url(event)
                    title = url if event.title is None else event.title
                    body = [f'Watched&nbsp;<a href="{_esc(url)}">{_esc(title)}</a>']
                    if event.channel_id is not None:
                        channel_url = f"https://www.youtube.com/channel/{event.channel_id}"
                        body.append(f'<a href="{channel_url}">{_esc(event.channel_name or "")}</a>')
                    body.append(stamp)
                out.write(_html_record(header, body, False, watch_controls) + "\n")
                continue
            counts[kind] += 1
            local = datetime.fromtimestamp((at + offset) // 1000, UTC)
            if kind == "ad":
                url = "https://www.youtube.com/watch?v=" + _random_id(rng, 11, taken)
                body = [
                    f'Watched&nbsp;<a href="{url}">{_esc(rng.choice(_AD_TITLES))}</a>',
                    "Watched at " + _us_clock(local.hour, local.minute),
                    stamp,
                ]
                out.write(_html_record("YouTube", body, True, ad_controls) + "\n")
            elif kind == "ad_click":
                target = f"https://ads.example.com/click?id={rng.randint(1000, 9999)}"
                redirect = "https://www.google.com/url?q=" + target.replace("?", "%3F")
                body = [f'Visited&nbsp;<a href="{_esc(redirect)}">{_esc(target)}</a>', stamp]
                out.write(_html_record("YouTube", body, True, ad_controls) + "\n")
            elif kind == "post":
                post = "https://www.youtube.com/post/Ugkx" + _random_id(rng, 32, taken)
                channel = "https://www.youtube.com/channel/UC" + _random_id(rng, 22, taken)
                body = [
                    f'Viewed&nbsp;<a href="{post}">New video tomorrow! What do you want to see?</a>',
                    f'<a href="{channel}">{_esc(rng.choice(_NAME_WORDS))} Community</a>',
                    stamp,
                ]
                out.write(_html_record("YouTube", body, False, watch_controls) + "\n")
            else:
                out.write(_html_record("YouTube Music", ["Visited YouTube Music", stamp], False, watch_controls) + "\n")
        out.write(_HTML_TAIL)
    return counts


# --------------------------------------------------------------------------------------------
# Command line


def _parse_instant(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return math.floor(dt.timestamp() * 1000)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate a synthetic history and write it as a Takeout file; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m worker.synthetic", description="Write a seeded synthetic Takeout watch history."
    )
    parser.add_argument("--events", type=int, default=5000, help="number of views (default 5000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--out", type=Path, required=True, help="output file (.json or .html)")
    parser.add_argument(
        "--end", type=_parse_instant, default=_parse_instant("2026-11-15T00:00:00Z"),
        help="exclusive end instant, ISO 8601 (default 2026-11-15T00:00:00Z)",
    )  # fmt: skip
    parser.add_argument("--years", type=float, default=2.0, help="covered years (default 2)")
    parser.add_argument("--time-zone", default="Europe/Berlin", help="IANA zone (default Europe/Berlin)")
    parser.add_argument("--music-share", type=float, default=0.15, help="YouTube Music share (default 0.15)")
    parser.add_argument("--format", choices=("json", "html"), default=None, help="default: from --out suffix")
    parser.add_argument("--no-extras", action="store_true", help="write views only (no ads, posts, visits)")
    args = parser.parse_args(argv)
    try:
        events = generate_history(
            args.events, seed=args.seed, end_ms=args.end, time_zone=args.time_zone,
            years=args.years, music_share=args.music_share,
        )  # fmt: skip
    except ValueError as exc:
        parser.error(str(exc))
    fmt = args.format or ("html" if args.out.suffix.lower() in (".html", ".htm") else "json")
    writer = write_takeout_html if fmt == "html" else write_takeout_json
    try:
        counts = writer(events, args.out, seed=args.seed, extra_non_views=not args.no_extras)
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    extras = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"wrote {len(events)} views ({extras}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
