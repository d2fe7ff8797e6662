"""Two-level cache of per-user, per-month partition state for incremental recomputes.

A **partition** is the intermediate state the aggregation worker keeps for one user and one local
calendar month (in the user's time zone, under one aggregation definition version): an opaque
payload that the worker serializes itself (``bytes``, or for a large one an anonymous memory map
holding the bytes, whose pages go back to the operating system when it is evicted:
:func:`~worker.aggregation.partition.partition_payload`). A change in ``changeLog`` covers a
``watchedAtMs`` range, so it invalidates only the month partitions that range touches; the worker
keeps the state of every other month between recomputes and reads from Convex only the events of
the invalidated months.

Levels:

* **L1**: in-process, bounded in bytes (payload length plus a fixed per-entry overhead
  estimate), least-recently-used eviction, guarded by a lock so it can be used from threads
  (``asyncio.to_thread``). An entry larger than the whole budget is not cached.
* **L2**: optional Redis shared by every replica. Each partition is one Redis hash
  ``{g: generation, w: watermark, p: payload}`` with a TTL (``l2_ttl_s``, 7 days by default).
  An L2 hit is promoted to L1. All reads and writes are single Lua scripts, so each is atomic.

Invalidation:

* **By watermark.** Every entry carries the watermark (the ``changeLog`` seq) its state reflects.
  ``get(key, min_watermark=w)`` treats an entry with a lower watermark as a miss, so a caller that
  knows the seq of the newest change touching a month never reads older state for it. ``put`` never
  replaces an entry that has a higher watermark (compare-and-set in the script; an equal
  watermark replaces), so a slow replica cannot overwrite newer state with older state.
* **By generation.** ``invalidate_user`` drops the user's L1 entries and ``INCR``s a per-user
  generation counter in Redis. Each L2 entry records the generation it was written under and is
  only readable while that generation is current, so every older entry of the user becomes
  unreachable at once, without ``SCAN``; it is overwritten by the next ``put`` of the same key or
  expires with its TTL. The counter's TTL is kept at least as long as that of any entry written
  under it, so when the counter expires (and restarts at 0) no entry of the user is left.

Redis keys never contain a user id: ``{prefix}:{<sha256(user_id) hex[:32]>}:...``. The braces are
a Redis Cluster hash tag, so a user's counter and entries share a slot and the scripts may touch
both.

Redis failures never break the worker: every Redis error is caught, counted in
``CacheStats.l2_errors`` and logged as ``cache.l2_error`` at most once per minute; after an error,
reads and writes skip L2 for ``l2_retry_after_s`` and run on L1 alone (invalidations still try
Redis). With ``redis_url=None`` the cache is L1 only, and the Redis client library is never
imported (it costs about 6 MB of the worker's memory).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote

import structlog
from cachetools import LRUCache

from worker.aggregation.partition import Payload, kept_payload

if TYPE_CHECKING:
    import redis

__all__ = ["CacheStats", "PartitionCache", "PartitionKey", "SizedLRU", "generation_key"]

log = structlog.get_logger(__name__)

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_L2_TTL_S: Final = 7 * 24 * 3600
"""Default lifetime of an L2 entry, in seconds (7 days)."""

DEFAULT_KEY_PREFIX: Final = "watchagg:partition"
"""Default prefix of every Redis key written by :class:`PartitionCache`."""

L1_ENTRY_OVERHEAD_BYTES: Final = 200
"""Estimated bytes an L1 entry costs beyond its payload and the strings of its key: the key and
entry objects, the LRU's link and the per-user index slot (CPython, 64-bit)."""

_L2_ERROR_LOG_INTERVAL_S: Final = 60.0
_USER_HASH_HEX_CHARS: Final = 32

# KEYS[1] generation counter, KEYS[2] entry; ARGV[1] min watermark, ARGV[2] max watermark (-1: none).
# Returns nil (miss, stale, written under an older generation, or a watermark that is not decimal
# digits: an entry no PartitionCache wrote) or {watermark, payload}.
_GET_SCRIPT: Final = """
local gen = redis.call('GET', KEYS[1]) or '0'
local e = redis.call('HMGET', KEYS[2], 'g', 'w', 'p')
if not e[1] or e[1] ~= gen or not e[2] or not e[3] then return nil end
local w = string.match(e[2], '^%d+$') and tonumber(e[2])
if not w or w < tonumber(ARGV[1]) then return nil end
if tonumber(ARGV[2]) >= 0 and w > tonumber(ARGV[2]) then return nil end
return {e[2], e[3]}
"""

# KEYS[1] generation counter, KEYS[2] entry; ARGV[1] watermark, ARGV[2] payload, ARGV[3] TTL (s).
# Returns 1 when written, 0 when an entry of the current generation has a higher watermark (one whose
# watermark is not decimal digits is overwritten).
_PUT_SCRIPT: Final = """
local ttl = tonumber(ARGV[3])
local gen = redis.call('GET', KEYS[1]) or '0'
local e = redis.call('HMGET', KEYS[2], 'g', 'w')
local w = e[2] and string.match(e[2], '^%d+$') and tonumber(e[2])
if e[1] == gen and w and w > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], 'g', gen, 'w', ARGV[1], 'p', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ttl * 1000)
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('PTTL', KEYS[1]) < ttl * 1000 then
  redis.call('PEXPIRE', KEYS[1], ttl * 1000)
end
return 1
"""

# KEYS[1] generation counter; ARGV[1] TTL (s). Returns the new generation.
_INVALIDATE_SCRIPT: Final = """
local ttl = tonumber(ARGV[1])
local gen = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < ttl * 1000 then redis.call('PEXPIRE', KEYS[1], ttl * 1000) end
return gen
"""


def _user_hash(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:_USER_HASH_HEX_CHARS]


def _check_prefix(prefix: str) -> None:
    if not prefix or any(c in prefix for c in "{} \t\r\n"):
        raise ValueError(f"invalid Redis key prefix {prefix!r}: empty, or contains braces or whitespace")


def generation_key(prefix: str, user_id: str) -> str:
    """Return the Redis key of a user's generation counter.

    Args:
        prefix: Key prefix shared by the cache's keys; non-empty, no braces or whitespace.
        user_id: The user's id; only its hash appears in the key.

    Returns:
        ``"{prefix}:{<user hash>}:gen"``, where the user hash is the first 32 hex digits of the
        SHA-256 of the UTF-8 user id.

    Raises:
        ValueError: ``prefix`` is empty or contains braces or whitespace.
    """
    _check_prefix(prefix)
    return f"{prefix}:{{{_user_hash(user_id)}}}:gen"


@dataclass(frozen=True, slots=True)
class PartitionKey:
    """Identity of one partition: a user's state for one local month under one definition.

    Attributes:
        user_id: The user's id (``users.userId``). Never written to Redis in clear.
        month: Local month index ``year * 12 + (month - 1)`` in ``time_zone`` (January 2024 is
            ``24288``); ``>= 0``.
        time_zone: IANA time zone the month boundaries are computed in (``"Europe/Paris"``).
        definition_version: Version of the aggregation definitions the state was built with;
            ``>= 0``. Bumping it makes every older entry unreachable.

    Raises:
        ValueError: ``user_id`` or ``time_zone`` is empty, or ``month``/``definition_version``
            is negative.
    """

    user_id: str
    month: int
    time_zone: str
    definition_version: int

    def __post_init__(self) -> None:
        if not self.user_id:
            raise ValueError("user_id must not be empty")
        if not self.time_zone:
            raise ValueError("time_zone must not be empty")
        if self.month < 0:
            raise ValueError(f"month must be >= 0, got {self.month}")
        if self.definition_version < 0:
            raise ValueError(f"definition_version must be >= 0, got {self.definition_version}")

    def redis_key(self, prefix: str) -> str:
        """Return the stable Redis key of this partition.

        Args:
            prefix: Key prefix shared by the cache's keys; non-empty, no braces or whitespace.

        Returns:
            ``"{prefix}:{<user hash>}:v{definition_version}:{time zone}:{month}"``: the user hash
            is the first 32 hex digits of the SHA-256 of the UTF-8 user id (the user id never
            appears), the time zone is percent-encoded (``Europe%2FParis``), and the braces make
            the user hash a Redis Cluster hash tag. Printable ASCII only.

        Raises:
            ValueError: ``prefix`` is empty or contains braces or whitespace.
        """
        _check_prefix(prefix)
        tz = quote(self.time_zone, safe="")
        return f"{prefix}:{{{_user_hash(self.user_id)}}}:v{self.definition_version}:{tz}:{self.month}"

    def l1_overhead_bytes(self) -> int:
        """Return the estimated L1 cost of this key and its entry, excluding the payload, in bytes."""
        return L1_ENTRY_OVERHEAD_BYTES + len(self.user_id.encode("utf-8")) + len(self.time_zone.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters of a :class:`PartitionCache` since it was created.

    Attributes:
        l1_hits: ``get`` calls answered by L1.
        l2_hits: ``get`` calls answered by L2 (and promoted to L1).
        misses: ``get`` calls answered by neither (absent, stale or unreachable).
        l1_bytes: Current L1 size in bytes (payloads plus the per-entry overhead estimate).
        l1_entries: Current number of L1 entries.
        evictions: L1 entries evicted to stay within ``max_bytes`` (not counting invalidations
            or replacements).
        l2_errors: Redis operations that failed (connection, timeout, server error).
    """

    l1_hits: int
    l2_hits: int
    misses: int
    l1_bytes: int
    l1_entries: int
    evictions: int
    l2_errors: int


@dataclass(slots=True)
class _L1Entry:
    watermark: int
    payload: Payload
    size_bytes: int


class SizedLRU(LRUCache[K, V]):
    """``cachetools.LRUCache`` bounded by the summed sizes of its values, reporting evictions.

    Storing a value larger than the whole bound keeps nothing (and drops an older value of the key)
    instead of raising. Not thread-safe: callers hold their own lock.

    Args:
        max_bytes: Bound on the summed sizes; ``>= 0``.
        size_of: Size of a value, in bytes.
        on_evict: Called with each key evicted to make room (not for explicit ``pop``).
    """

    def __init__(
        self, max_bytes: int, size_of: Callable[[V], int], on_evict: Callable[[K], None] | None = None
    ) -> None:
        super().__init__(maxsize=max_bytes, getsizeof=size_of)
        self._on_evict = on_evict

    def popitem(self) -> tuple[K, V]:
        key, value = super().popitem()
        if self._on_evict is not None:
            self._on_evict(key)
        return key, value

    def store(self, key: K, value: V) -> bool:
        """Store ``value`` (evicting least recently used entries); False when it cannot fit at all."""
        self.pop(key, None)
        if self.getsizeof(value) > self.maxsize:
            return False
        self[key] = value
        return True


class PartitionCache:
    """Two-level (in-process LRU + optional Redis) cache of partition payloads.

    Thread-safe. Redis calls run outside the L1 lock. Never raises on Redis failures.

    Args:
        max_bytes: L1 budget in bytes, counting each entry as its payload length plus
            :meth:`PartitionKey.l1_overhead_bytes`; ``> 0``.
        redis_url: ``redis://`` / ``rediss://`` / ``unix://`` URL of the shared L2, or ``None``
            to run on L1 alone. No connection is made until the first operation.
        key_prefix: Prefix of every Redis key; non-empty, no braces or whitespace. Replicas
            sharing entries must use the same prefix.
        l2_ttl_s: Lifetime of an L2 entry in seconds, reset on each write; ``> 0``.
        l2_timeout_s: Socket connect and read timeout of Redis calls in seconds; ``> 0``.
            Failed calls are not retried.
        l2_retry_after_s: After a Redis error, how long ``get``/``put`` skip L2, in seconds;
            ``>= 0``.
        clock: Monotonic clock in seconds, for the error-log interval and the L2 back-off.

    Raises:
        ValueError: A bound is out of range, ``key_prefix`` is invalid, or ``redis_url`` is
            malformed.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        redis_url: str | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        l2_ttl_s: int = DEFAULT_L2_TTL_S,
        l2_timeout_s: float = 0.5,
        l2_retry_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        if l2_ttl_s <= 0:
            raise ValueError(f"l2_ttl_s must be > 0, got {l2_ttl_s}")
        if l2_timeout_s <= 0:
            raise ValueError(f"l2_timeout_s must be > 0, got {l2_timeout_s}")
        if l2_retry_after_s < 0:
            raise ValueError(f"l2_retry_after_s must be >= 0, got {l2_retry_after_s}")
        _check_prefix(key_prefix)
        self._max_bytes = max_bytes
        self._prefix = key_prefix
        self._l2_ttl_s = l2_ttl_s
        self._l2_retry_after_s = l2_retry_after_s
        self._clock = clock

        self._lock = threading.Lock()
        self._l1: SizedLRU[PartitionKey, _L1Entry] = SizedLRU(max_bytes, lambda e: e.size_bytes, self._l1_evicted)
        self._l1_by_user: dict[str, set[PartitionKey]] = {}
        self._l1_hits = 0
        self._l2_hits = 0
        self._misses = 0
        self._evictions = 0
        self._l2_errors = 0
        self._l2_skip_until: float | None = None
        self._last_error_log: float | None = None
        self._suppressed_errors = 0

        self._redis: redis.Redis | None = None
        self._l2_failures: tuple[type[Exception], ...] = ()
        self._get_script: Any = None
        self._put_script: Any = None
        self._invalidate_script: Any = None
        if redis_url is not None:
            import redis  # only with an L2: an L1-only worker never loads the client
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self._l2_failures = (redis.RedisError, OSError)
            client = redis.Redis.from_url(
                redis_url,
                socket_timeout=l2_timeout_s,
                socket_connect_timeout=l2_timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
            self._redis = client
            self._get_script = client.register_script(_GET_SCRIPT)
            self._put_script = client.register_script(_PUT_SCRIPT)
            self._invalidate_script = client.register_script(_INVALIDATE_SCRIPT)

    # -- public API ---------------------------------------------------------------------------

    def get(self, key: PartitionKey, *, min_watermark: int, max_watermark: int | None = None) -> Payload | None:
        """Return the payload of a partition whose watermark is at least ``min_watermark`` (and at
        most ``max_watermark`` when given).

        Looks in L1, then in L2; an L2 hit is copied into L1. An entry with a lower watermark
        counts as a miss (and is dropped from L1); one above ``max_watermark`` is a miss too (and
        kept: it is newer).

        Args:
            key: The partition.
            min_watermark: Lowest acceptable watermark (``changeLog`` seq), usually the seq of
                the newest change whose range touches this month.
            max_watermark: Highest acceptable watermark; ``min_watermark`` too to accept exactly
                one build (a month the partition index records at that watermark).

        Returns:
            The payload as stored (an L2 hit as ``bytes``, or in a memory map of its own from
            ``MAPPED_MIN_BYTES`` on), or ``None`` on a miss (absent, stale, newer than wanted,
            invalidated, or L2 unreachable).
        """
        with self._lock:
            entry = self._l1.get(key)  # a hit becomes the most recently used
            if entry is not None:
                if entry.watermark < min_watermark:
                    self._l1_remove(key)
                elif max_watermark is None or entry.watermark <= max_watermark:
                    self._l1_hits += 1
                    return entry.payload

        found = self._l2_get(key, min_watermark, max_watermark)
        with self._lock:
            if found is None:
                self._misses += 1
                return None
            watermark, payload = found
            self._l2_hits += 1
            kept = kept_payload(payload)  # a large one in a map of its own, as the writing replica keeps it
            self._l1_store(key, kept, watermark)
            return kept

    def put(self, key: PartitionKey, payload: Payload, *, watermark: int) -> None:
        """Store a partition's payload in L1 and L2 unless a newer one is already there.

        In each level, an existing entry with a higher watermark is kept (an equal watermark is
        replaced). A payload larger than ``max_bytes`` is not kept in L1 (an older L1 entry of
        the key is dropped) but is still written to L2.

        Args:
            key: The partition.
            payload: The serialized state, any length (Redis limits a value to 512 MiB); L1 keeps
                this object.
            watermark: The ``changeLog`` seq the state reflects; ``>= 0``.

        Raises:
            ValueError: ``watermark`` is negative.
        """
        if watermark < 0:
            raise ValueError(f"watermark must be >= 0, got {watermark}")
        with self._lock:
            self._l1_store(key, payload, watermark)
        self._l2_put(key, payload, watermark)

    def invalidate_user(self, user_id: str) -> None:
        """Make every cached partition of a user unreachable, in L1 and L2.

        Drops the user's L1 entries and increments the user's L2 generation counter (also while
        ``get``/``put`` are skipping L2 after an error). Other replicas' L1 entries are not
        reached: they stay readable there until evicted, so callers rely on ``min_watermark``
        for correctness across replicas. A ``put`` running concurrently may land after the
        invalidation.

        Args:
            user_id: The user's id.
        """
        with self._lock:
            for key in list(self._l1_by_user.get(user_id, ())):
                self._l1_remove(key)
        if self._redis is None:
            return
        try:
            self._invalidate_script(keys=[generation_key(self._prefix, user_id)], args=[self._l2_ttl_s])
        except self._l2_failures as exc:
            self._record_l2_error("invalidate", exc)

    def stats(self) -> CacheStats:
        """Return a snapshot of the counters and the current L1 size."""
        with self._lock:
            return CacheStats(
                l1_hits=self._l1_hits,
                l2_hits=self._l2_hits,
                misses=self._misses,
                l1_bytes=int(self._l1.currsize),
                l1_entries=len(self._l1),
                evictions=self._evictions,
                l2_errors=self._l2_errors,
            )

    def close(self) -> None:
        """Close the Redis connections (L1 stays usable; later L2 calls reconnect)."""
        if self._redis is not None:
            self._redis.close()

    def __enter__(self) -> PartitionCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- L1 (caller holds the lock) -----------------------------------------------------------

    def _l1_store(self, key: PartitionKey, payload: Payload, watermark: int) -> None:
        old = self._l1.get(key)
        if old is not None and old.watermark > watermark:
            return
        entry = _L1Entry(watermark=watermark, payload=payload, size_bytes=len(payload) + key.l1_overhead_bytes())
        if self._l1.store(key, entry):
            self._l1_by_user.setdefault(key.user_id, set()).add(key)
        else:
            self._forget_user_key(key)

    def _l1_remove(self, key: PartitionKey) -> None:
        self._l1.pop(key, None)
        self._forget_user_key(key)

    def _l1_evicted(self, key: PartitionKey) -> None:
        self._evictions += 1
        self._forget_user_key(key)

    def _forget_user_key(self, key: PartitionKey) -> None:
        keys = self._l1_by_user.get(key.user_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._l1_by_user[key.user_id]

    # -- L2 -----------------------------------------------------------------------------------

    def _l2_available(self) -> bool:
        if self._redis is None:
            return False
        with self._lock:
            return self._l2_skip_until is None or self._clock() >= self._l2_skip_until

    def _l2_keys(self, key: PartitionKey) -> list[str]:
        return [generation_key(self._prefix, key.user_id), key.redis_key(self._prefix)]

    def _l2_get(self, key: PartitionKey, min_watermark: int, max_watermark: int | None) -> tuple[int, bytes] | None:
        if not self._l2_available():
            return None
        try:
            ceiling = -1 if max_watermark is None else max_watermark
            reply = self._get_script(keys=self._l2_keys(key), args=[min_watermark, ceiling])
        except self._l2_failures as exc:
            self._record_l2_error("get", exc)
            return None
        if reply is None:
            return None
        watermark_raw, payload = reply
        try:  # the script compares with Lua's tonumber, which also takes "1.5", "0x10" or "nan"
            watermark = int(watermark_raw)
        except (TypeError, ValueError):
            return None  # an entry no PartitionCache wrote: a miss
        return watermark, bytes(payload)

    def _l2_put(self, key: PartitionKey, payload: Payload, watermark: int) -> None:
        if not self._l2_available():
            return
        value = payload if isinstance(payload, bytes) else memoryview(payload)  # redis-py sends bytes or memoryview
        try:
            self._put_script(keys=self._l2_keys(key), args=[watermark, value, self._l2_ttl_s])
        except self._l2_failures as exc:
            self._record_l2_error("put", exc)

    def _record_l2_error(self, op: str, exc: Exception) -> None:
        with self._lock:
            now = self._clock()
            self._l2_errors += 1
            self._l2_skip_until = now + self._l2_retry_after_s
            if self._last_error_log is not None and now - self._last_error_log < _L2_ERROR_LOG_INTERVAL_S:
                self._suppressed_errors += 1
                return
            suppressed = self._suppressed_errors
            self._suppressed_errors = 0
            self._last_error_log = now
            total = self._l2_errors
        log.warning(
            "cache.l2_error",
            op=op,
            error=f"{type(exc).__name__}: {exc}",
            suppressed=suppressed,
            l2_errors=total,
            retry_after_s=self._l2_retry_after_s,
        )
