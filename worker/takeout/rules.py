"""Record rules shared by the JSON and HTML readers: URLs, ids, verbs, ad markers, instants.

Sources: ``docs/takeout-formats.md`` §3 (record kinds), §5 (localized verbs) and §6 (URLs and ids),
kept in the shared project documentation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Final, Literal

from worker.errors import shorten
from worker.models import Product, WatchEvent, view_problem
from worker.takeout.result import NON_VIEW_KINDS, Rejection

VIDEO_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{11}")
"""A YouTube video id: 11 characters of ``[A-Za-z0-9_-]`` (may start with ``-`` or ``_``)."""

CHANNEL_ID_RE: Final = re.compile(r"UC[A-Za-z0-9_-]{22}")
"""A YouTube channel id: ``UC`` + 22 characters."""

_VIDEO_URL_RE: Final = re.compile(
    r"^(?:https?://)?(?:www\.|m\.|music\.)?"
    r"(?:youtube\.com/(?:watch\?(?:[^#]*?&)?v=(?P<query>[^&#]*)|(?P<kind>shorts|live)/(?P<path>[^/?&#]*))"
    r"|youtu\.be/(?P<short>[^/?&#]*))",
    re.IGNORECASE,
)
_CHANNEL_URL_RE: Final = re.compile(
    r"^(?:https?://)?(?:www\.|m\.)?youtube\.com/channel/(UC[A-Za-z0-9_-]{22})(?:[/?#]|$)", re.IGNORECASE
)
_MUSIC_HOST_RE: Final = re.compile(r"^(?:https?://)?music\.youtube\.com(?:[/?#]|$)", re.IGNORECASE)
_POST_URL_RE: Final = re.compile(r"^(?:https?://)?(?:www\.|m\.)?youtube\.com/post/", re.IGNORECASE)
_GOOGLE_REDIRECT_RE: Final = re.compile(r"^(?:https?://)?(?:www\.)?google\.[a-z.]+/url\?", re.IGNORECASE)

AD_MARKERS: Final[frozenset[str]] = frozenset({"From Google Ads", "Google 広告から"})
"""``details`` names (JSON) / Details-section lines (HTML) marking an ad (§2 field table, §5)."""

MUSIC_HEADER: Final = "YouTube Music"

# (prefix, suffix) around the video title in a "watched" record, §5. Longer prefixes first so that
# "Så på " (nb) wins over "Så " (da).
WATCH_VERBS: Final[tuple[tuple[str, str], ...]] = (
    ("Watched ", ""),
    ("Vous avez regardé ", ""),
    ("Has visto ", ""),
    ("Hai guardato ", ""),
    ("Je hebt naar ", " gekeken"),
    ("Просмотрено видео ", ""),
    ("Obejrzano: ", ""),
    ("Tittade på ", ""),
    ("Så på ", ""),
    ("Så ", ""),
    ("تمت مشاهدة ", " ."),
    ("Angesehen: ", ""),
    ("", " angesehen"),
    ("", " adlı videoyu izlediniz"),
    ("", " 을(를) 시청했습니다."),
    ("", " を視聴しました"),
    ("", "を視聴しました"),
)

REMOVED_TITLES: Final[frozenset[str]] = frozenset(
    {"Watched a video that has been removed", "削除済みの動画を視聴しました"}
)
VISIT_PREFIXES: Final[tuple[str, ...]] = ("Visited ",)
VISIT_SUFFIXES: Final[tuple[str, ...]] = ("にアクセスしました",)
POST_PREFIXES: Final[tuple[str, ...]] = ("Viewed ",)
STORY_SUFFIXES: Final[tuple[str, ...]] = ("のストーリーを視聴しました",)
OTHER_PREFIXES: Final[tuple[str, ...]] = (
    "Searched for ",
    "Liked ",
    "Disliked ",
    "Subscribed to ",
    "Unsubscribed from ",
    "Commented on ",
    "Replied to ",
    "Shared ",
    "Saved ",
    "Used ",
    "Answered ",
    "Voted on ",
)


_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()


def normalize_spaces(text: str) -> str:
    """Return ``text`` with no-break, narrow no-break, thin and em spaces replaced by plain spaces."""
    if text.isascii():
        return text
    # str.replace is far faster than str.translate for a handful of characters.
    return text.replace("\u00a0", " ").replace("\u202f", " ").replace("\u2009", " ").replace("\u2003", " ")


def video_url_id(url: str) -> tuple[bool, str | None, bool]:
    """Read a video URL.

    Accepts ``watch?v=`` (any position of ``v``; hosts www., m., music. or none; http or https),
    ``youtu.be/ID``, ``/shorts/ID`` and ``/live/ID`` (§6).

    Returns:
        ``(is_video_url, video_id, is_shorts_url)``: ``video_id`` is None when the URL has the shape
        of a video URL but a blank or malformed id (see :func:`is_blank_watch_url` for the one such
        shape that is a removed video), and always None when ``is_video_url`` is False.
    """
    match = _VIDEO_URL_RE.match(url)
    if match is None:
        return False, None, False
    raw = match.group("query")
    if raw is None:
        raw = match.group("path")
    if raw is None:
        raw = match.group("short")
    is_shorts = (match.group("kind") or "").lower() == "shorts"
    video_id = raw if raw is not None and VIDEO_ID_RE.fullmatch(raw) else None
    return True, video_id, is_shorts


def is_blank_watch_url(url: str) -> bool:
    """Return whether the URL is a ``watch?v=`` URL whose ``v`` is empty: the removed, blank-id record of §3."""
    match = _VIDEO_URL_RE.match(url)
    return match is not None and match.group("query") == ""


def channel_url_id(url: str) -> str | None:
    """Return the ``UC…`` id of a ``youtube.com/channel/UC…`` URL, or None for any other URL."""
    match = _CHANNEL_URL_RE.match(url)
    return match.group(1) if match else None


def is_music_url(url: str) -> bool:
    """Return whether the URL is on the ``music.youtube.com`` host."""
    return _MUSIC_HOST_RE.match(url) is not None


def is_post_url(url: str) -> bool:
    """Return whether the URL is a community post (``youtube.com/post/…``)."""
    return _POST_URL_RE.match(url) is not None


def is_google_redirect(url: str) -> bool:
    """Return whether the URL is a ``google.<tld>/url?q=…`` redirect (an ad click-through)."""
    return _GOOGLE_REDIRECT_RE.match(url) is not None


def product_of(header: str | None, url: str | None) -> Product:
    """Return ``youtube_music`` for header "YouTube Music" or host music.youtube.com (§2), else youtube."""
    if header is not None and header.strip() == MUSIC_HEADER:
        return "youtube_music"
    if url is not None and is_music_url(url):
        return "youtube_music"
    return "youtube"


def strip_watch_verb(title: str) -> str | None:
    """Return the object of a localized "watched …" title, or None when no known verb matches (§5)."""
    text = normalize_spaces(title)
    for prefix, suffix in WATCH_VERBS:
        if len(text) > len(prefix) + len(suffix) and text.startswith(prefix) and text.endswith(suffix):
            inner = title[len(prefix) : len(title) - len(suffix)]
            return inner.strip(" \u00a0\u202f")
    return None


def non_view_kind(title: str) -> str | None:
    """Classify a title by its verb: ``visit``, ``post``, ``story``, ``other``, or None (watch/unknown)."""
    text = normalize_spaces(title).strip()
    if text.startswith(VISIT_PREFIXES) or text.endswith(VISIT_SUFFIXES):
        return "visit"
    if text.startswith(POST_PREFIXES):
        return "post"
    if text.endswith(STORY_SUFFIXES):
        return "story"
    if text.startswith(OTHER_PREFIXES):
        return "other"
    return None


def is_removed_title(title: str) -> bool:
    """Return whether the title is a known "watched a video that has been removed" text (§3, §5)."""
    return normalize_spaces(title).strip() in REMOVED_TITLES


def title_is_url(title: str, url: str | None) -> bool:
    """Return whether a stripped title is just the video URL (the title-unknown record of §3)."""
    if url is not None and title == url:
        return True
    lowered = title.lower()
    return lowered.startswith(("http://", "https://")) and video_url_id(title)[0]


MAX_UTC_OFFSET_MS: Final = 14 * 3_600_000
"""Largest UTC offset a time zone has, either way, in ms: +14:00 (Pacific/Kiritimati; the westmost,
Etc/GMT+12, is −12:00, per the IANA tz database). An instant whose offset is larger (``+99:00``,
``GMT+24``) is damaged, not a zone: it is refused instead of moving the view by days."""


def utc_offset_ms(sign: str, hours: str, minutes: str | None) -> int | None:
    """Return the offset ``±hh[:mm]`` in ms east of UTC, or None when it is no UTC offset (minutes
    ≥ 60, or more than :data:`MAX_UTC_OFFSET_MS`)."""
    h, m = int(hours), int(minutes or 0)
    offset = (h * 60 + m) * 60_000
    if m >= 60 or offset > MAX_UTC_OFFSET_MS:
        return None
    return offset if sign == "+" else -offset


def epoch_ms(year: int, month: int, day: int, hour: int, minute: int, second: int, millis: int = 0) -> int:
    """Return epoch milliseconds (UTC) of a proleptic Gregorian civil instant given in UTC.

    Raises:
        ValueError: when a component is out of range (month 13, Feb 30, hour 24, second 60…).
    """
    if not (0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59 and 0 <= millis <= 999):
        raise ValueError(f"time {hour:02d}:{minute:02d}:{second:02d}.{millis:03d} out of range")
    days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    return (((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + millis


@dataclass(frozen=True, slots=True)
class ViewRef:
    """What an entry's verb and URL say about a view (before title and channel are read).

    Attributes:
        kind: ``"watch"`` (a video id is known) or ``"removed"`` (removed/private or blank id).
        product: ``"youtube"`` or ``"youtube_music"`` (see :func:`product_of`).
        video_id: The 11-character id for ``"watch"``, else None.
        shorts_url: True when the URL is a ``/shorts/ID`` URL.
    """

    kind: Literal["watch", "removed"]
    product: Product
    video_id: str | None = None
    shorts_url: bool = False


class WatchUrlError(ValueError):
    """A view's watch URL is present but is not a YouTube / YouTube Music watch URL with a video id.

    The message states what is wrong and quotes the URL (shortened, see :func:`shorten`); the reader
    turns it into a :class:`~worker.takeout.result.Rejection` of the entry's URL field.
    """


def classify_entry(verb_text: str, url: str | None, header: str | None, *, is_ad: bool) -> ViewRef | str:
    """Decide what one record is, the same way for the JSON and the HTML formats.

    Rules (takeout-formats.md §3): an ad marker makes an ad (or an ad click for a ``Visited`` row or a
    Google redirect URL); a non-view verb (posts, visits, searches, ...) gives its kind. Without a URL,
    a watch verb or the removed-video title is a removed view (removed or private video, §3). With a
    URL:

    * a video URL with a valid id is a watch; a ``watch?v=`` URL with an empty ``v`` is a removed view
      (the documented blank-id record, §3); any other video-shaped URL (``watch?v=abc``, ``youtu.be/``
      without an id, an over-long id) is malformed;
    * a community post URL is a post, a Google redirect an ad click;
    * any other URL is malformed when the title claims a watch (a known watch verb or the removed-video
      title), and "other" activity otherwise (the verb of an unknown locale, e.g. a search).

    Args:
        verb_text: The record's title line, verb included (``"Watched …"``, localized).
        url: ``titleUrl`` / the first link of the body, or None when the record has none.
        header: The product card (``"YouTube"``, ``"YouTube Music"``), or None.
        is_ad: True when the record carries the "From Google Ads" detail.

    Returns:
        A :class:`ViewRef` for a view, or the non-view kind (``ad``, ``ad_click``, ``post``, ``visit``,
        ``story``, ``other``).

    Raises:
        WatchUrlError: the URL is malformed, as above; the record is neither a view nor a non-view.
    """
    if is_ad:
        if non_view_kind(verb_text) == "visit" or (url is not None and is_google_redirect(url)):
            return "ad_click"
        return "ad"
    verb_kind = non_view_kind(verb_text)
    if verb_kind is not None:
        return verb_kind
    product = product_of(header, url)
    claims_watch = is_removed_title(verb_text) or strip_watch_verb(verb_text) is not None
    if url is None:
        return ViewRef("removed", product) if claims_watch else "other"
    is_video, video_id, shorts_url = video_url_id(url)
    if is_video:
        if video_id is not None:
            return ViewRef("watch", product, video_id, shorts_url)
        if is_blank_watch_url(url):
            return ViewRef("removed", product)
        raise WatchUrlError(f"watch URL without a valid video id (11 characters of [A-Za-z0-9_-]): {shorten(url)!r}")
    if is_post_url(url):
        return "post"
    if is_google_redirect(url):
        return "ad_click"
    if claims_watch:
        raise WatchUrlError(f"not a YouTube or YouTube Music watch URL with a video id: {shorten(url)!r}")
    return "other"


def _blank(value: str | None) -> bool:
    return value is not None and not value.strip()


def admit_view(event: WatchEvent, index: int, *, now_ms: int, fields: Mapping[str, str]) -> WatchEvent | Rejection:
    """Bring one view within the backend's limits (``worker.models.view_problem``), or reject it.

    Empty or blank optional strings become None: an empty channel name means "no name", an empty
    title an unknown title (flag ``title_unknown`` on a watch). An instant outside
    [2005-01-01, ``now_ms`` + 1 day] or an over-long field rejects the entry, so that one bad entry
    never makes the backend refuse a whole import batch.

    Args:
        event: The view as read from the file.
        index: 0-based position of the entry in the file.
        now_ms: Wall-clock time taken once when parsing started, epoch ms UTC.
        fields: :class:`WatchEvent` attribute name → the file's field name used in the
            :class:`Rejection` (``"watched_at_ms"`` → ``"time"`` for JSON, ``"date"`` for HTML).

    Returns:
        The (possibly cleaned) view, or the :class:`Rejection` of the entry.
    """
    if _blank(event.video_id) or _blank(event.title) or _blank(event.channel_id) or _blank(event.channel_name):
        flags = event.flags
        if _blank(event.title) and event.kind == "watch":
            flags = flags | {"title_unknown"}
        event = replace(
            event,
            video_id=None if _blank(event.video_id) else event.video_id,
            title=None if _blank(event.title) else event.title,
            channel_id=None if _blank(event.channel_id) else event.channel_id,
            channel_name=None if _blank(event.channel_name) else event.channel_name,
            flags=flags,
        )
    problem = view_problem(event, now_ms=now_ms)
    if problem is None:
        return event
    field, reason = problem
    return Rejection(index, fields.get(field, field), reason)


@dataclass
class Tally:
    """What a reader has made of a file's entries so far: views, non-views by kind, rejections.

    Attributes:
        now_ms: Wall-clock time taken once when parsing started, epoch ms UTC (see :func:`admit_view`).
        fields: :class:`WatchEvent` attribute name → the file's field name, for rejections.
    """

    now_ms: int
    fields: Mapping[str, str]
    views: list[WatchEvent] = field(default_factory=list)
    non_views: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NON_VIEW_KINDS, 0))
    rejected: list[Rejection] = field(default_factory=list)

    def add(self, index: int, outcome: WatchEvent | str) -> None:
        """Count a non-view kind, or admit a view within the backend's limits (else reject it)."""
        if isinstance(outcome, str):
            self.non_views[outcome] += 1
            return
        admitted = admit_view(outcome, index, now_ms=self.now_ms, fields=self.fields)
        if isinstance(admitted, Rejection):
            self.rejected.append(admitted)
        else:
            self.views.append(admitted)

    def reject(self, index: int, field_name: str, reason: str) -> None:
        """Record an entry that could not be read."""
        self.rejected.append(Rejection(index, field_name, reason))
