"""Keyword-taxonomy topic classifier. Pure: no I/O beyond reading the packaged taxonomy file once.

The taxonomy lives in ``taxonomy.json`` next to this module (topic slug → title keywords and
channel keywords). Matching rules:

* Text and keywords are compared after ``str.casefold()`` (Unicode-aware case-insensitivity).
* Both are split into words = maximal runs of Unicode word characters (``\\w+``); everything
  else (spaces, punctuation, apostrophes, hyphens) separates words. A keyword of k words matches
  k consecutive words of the text, so matches are always whole words ("cat" never matches
  "category"; "stand-up" matches "stand up").
* Scanning left to right, the longest keyword starting at a word wins; matches do not overlap.
* Score of a topic = 2 × (title keyword matches) + 1 × (channel-name keyword matches). Title
  words weigh more because the title describes the video, the channel name only its
  publisher (a project choice).
* The topic with the highest score wins; a tie goes to the topic listed first in
  ``taxonomy.json`` (the file's order is the tie-break priority).
* No match at all → ``None`` (unknown, no guess).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["TOPIC_SLUGS", "TAXONOMY_VERSION", "classify_topic", "clear_classifier_caches", "MUSIC_TOPIC"]

TITLE_WEIGHT = 2
CHANNEL_WEIGHT = 1
MUSIC_TOPIC = "music"


_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class _Matcher:
    topic_of: dict[tuple[str, ...], int]
    max_words: int
    widest_from: dict[str, int]  # first word of a keyword → most words of a keyword starting with it
    single: dict[str, int]  # word starting only one-word keywords → the topic of that keyword
    multi_first: frozenset[str]  # first words of the keywords of two or more words


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _build_matcher(keywords_by_topic: list[list[str]]) -> _Matcher:
    topic_of: dict[tuple[str, ...], int] = {}
    for index, keywords in enumerate(keywords_by_topic):
        for keyword in keywords:
            words = tuple(_words(keyword))
            if not words:
                raise ValueError(f"taxonomy.json: keyword {keyword!r} has no word characters")
            if words in topic_of and topic_of[words] != index:
                raise ValueError(f"taxonomy.json: keyword {keyword!r} belongs to two topics")
            topic_of[words] = index
    widest_from: dict[str, int] = {}
    for words in topic_of:
        widest_from[words[0]] = max(widest_from.get(words[0], 0), len(words))
    single = {words[0]: index for words, index in topic_of.items() if widest_from[words[0]] == 1}
    multi_first = frozenset(word for word, widest in widest_from.items() if widest > 1)
    return _Matcher(topic_of, max((len(k) for k in topic_of), default=0), widest_from, single, multi_first)


def _load() -> tuple[int, tuple[str, ...], _Matcher, _Matcher]:
    raw: dict[str, Any] = json.loads(
        resources.files("worker.aggregation").joinpath("taxonomy.json").read_text(encoding="utf-8")
    )
    topics: list[dict[str, Any]] = raw["topics"]
    slugs = tuple(str(t["slug"]) for t in topics)
    if len(set(slugs)) != len(slugs):
        raise ValueError("taxonomy.json: duplicate topic slug")
    title = _build_matcher([list(t["titleKeywords"]) for t in topics])
    channel = _build_matcher([list(t["channelKeywords"]) for t in topics])
    return int(raw["version"]), slugs, title, channel


TAXONOMY_VERSION, TOPIC_SLUGS, _TITLE, _CHANNEL = _load()
"""TOPIC_SLUGS: every topic slug, in taxonomy (tie-break priority) order."""


def _hits(matcher: _Matcher, text: str | None) -> tuple[tuple[int, int], ...]:
    """Return ``((topic index, keyword matches), ...)`` of ``text`` under ``matcher``'s rules."""
    if not text or matcher.max_words == 0:
        return ()
    words = _words(text)
    if matcher.multi_first.isdisjoint(words):
        # no keyword of several words can start here (most texts): every match is one word
        found: dict[int, int] = {}
        for index in map(matcher.single.get, words):
            if index is not None:
                found[index] = found.get(index, 0) + 1
        return tuple(found.items())
    widest_from = matcher.widest_from
    count = len(words)
    topic_of = matcher.topic_of
    found = {}
    i = 0
    while i < count:
        widest = widest_from.get(words[i], 0)
        for width in range(min(widest, count - i), 0, -1):
            index = topic_of.get(tuple(words[i : i + width]))
            if index is not None:
                found[index] = found.get(index, 0) + 1
                i += width
                break
        else:
            i += 1
    return tuple(found.items())


@lru_cache(maxsize=16384)  # channel names repeat across a history's views: scan each name once
def _channel_hits(channel_name: str | None) -> tuple[tuple[int, int], ...]:
    return _hits(_CHANNEL, channel_name)


@lru_cache(maxsize=16384)  # a title recurs with several channel names (~4 distinct pairs per title)
def _title_hits(title: str | None) -> tuple[tuple[int, int], ...]:
    return _hits(_TITLE, title)


@lru_cache(maxsize=4096)  # few distinct hit combinations: score each once
def _best_topic(title_hits: tuple[tuple[int, int], ...], channel_hits: tuple[tuple[int, int], ...]) -> str | None:
    if not title_hits and not channel_hits:
        return None
    scores = [0] * len(TOPIC_SLUGS)
    for index, count in title_hits:
        scores[index] += TITLE_WEIGHT * count
    for index, count in channel_hits:
        scores[index] += CHANNEL_WEIGHT * count
    best = max(scores)
    if best <= 0:
        return None
    return TOPIC_SLUGS[scores.index(best)]


# Not memoized per (title, channel name) pair: the title and channel-name scans are, and the frame
# builder classifies each distinct pair of a page once. A pair memo of the size a history needs
# (~21k pairs per 100k views) would keep tens of thousands of titles read from Convex alive, scattered
# among the interpreter's small-object arenas, which then stay allocated for the process's lifetime.
def classify_topic(title: str | None, channel_name: str | None) -> str | None:
    """Return the topic slug of a video from its title and channel name, or None when unknown.

    Args:
        title: Video title (any language/case), or None.
        channel_name: Channel display name, or None.

    Returns:
        One of ``TOPIC_SLUGS``, or None when no keyword of the taxonomy matches either text.
        Deterministic: the same arguments always give the same slug (rules in the module
        docstring; tie → the topic listed first in ``taxonomy.json``).
    """
    return _best_topic(_title_hits(title), _channel_hits(channel_name))


def clear_classifier_caches() -> None:
    """Empty the classifier's memo caches (benchmarks measuring a cold start)."""
    _title_hits.cache_clear()
    _channel_hits.cache_clear()
    _best_topic.cache_clear()
