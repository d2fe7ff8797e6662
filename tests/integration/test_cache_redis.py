"""Integration tests of worker.cache's L2 against a real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import mmap
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from structlog.testing import capture_logs

from worker.cache import PartitionCache, PartitionKey, generation_key

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"
USER = "https://issuer.example|integration-user"
OTHER = "https://issuer.example|integration-other"


def key(month: int, user: str = USER) -> PartitionKey:
    return PartitionKey(user_id=user, month=month, time_zone="America/New_York", definition_version=3)


def pttl_ms(raw: redis.Redis, redis_key: str) -> int:
    """Return the remaining lifetime of a key in ms (-1 persistent, -2 absent)."""
    value = raw.pttl(redis_key)
    assert isinstance(value, int)
    return value


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        client.close()
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    yield client
    client.close()


@pytest.fixture
def prefix(raw: redis.Redis) -> Iterator[str]:
    value = f"test:cache:{uuid.uuid4().hex}"
    yield value
    keys = list(raw.scan_iter(match=f"{value}:*", count=1000))
    if keys:
        raw.delete(*keys)


def replica(prefix: str, **kwargs: object) -> PartitionCache:
    return PartitionCache(max_bytes=1_000_000, redis_url=REDIS_URL, key_prefix=prefix, **kwargs)  # type: ignore[arg-type]


class TestSharedL2:
    def test_second_replica_reads_through_l2_and_promotes_to_l1(self, prefix: str) -> None:
        """A put on one replica is an L2 hit on another, then an L1 hit there."""
        with replica(prefix) as a, replica(prefix) as b:
            a.put(key(1), b"\x00state\xff", watermark=4)

            assert b.get(key(1), min_watermark=4) == b"\x00state\xff"
            assert b.get(key(1), min_watermark=4) == b"\x00state\xff"
            stats = b.stats()
            assert (stats.l2_hits, stats.l1_hits, stats.misses, stats.l1_entries) == (1, 1, 0, 1)
            assert stats.l2_errors == 0

    def test_memory_mapped_payload_is_kept_in_l1_and_shared_as_bytes(self, prefix: str) -> None:
        """A large payload in a memory map of its own is kept as that map in L1 and written to L2 as its
        bytes, which another replica reads back equal and keeps in a map of its own too; a small one
        stays bytes."""
        data = bytes(range(256)) * 1100  # 281,600 bytes: above MAPPED_MIN_BYTES
        payload = mmap.mmap(-1, len(data))
        payload[:] = data
        with replica(prefix) as a, replica(prefix) as b:
            a.put(key(1), payload, watermark=4)
            a.put(key(2), data[:1000], watermark=4)
            assert a.get(key(1), min_watermark=4) is payload
            got = b.get(key(1), min_watermark=4)
            assert isinstance(got, mmap.mmap) and got[:] == data
            assert b.get(key(1), min_watermark=4) is got  # promoted to L1 as that map
            small = b.get(key(2), min_watermark=4)
            assert isinstance(small, bytes) and small == data[:1000]

    def test_a_newer_entry_than_asked_for_is_a_miss_and_stays(self, prefix: str) -> None:
        """get with max_watermark misses an entry above it, in L1 and in L2, and keeps it for readers
        that accept it."""
        with replica(prefix) as a, replica(prefix) as b:
            a.put(key(1), b"newer", watermark=9)
            assert a.get(key(1), min_watermark=5, max_watermark=5) is None  # L1 (and L2) above the ceiling
            assert b.get(key(1), min_watermark=5, max_watermark=5) is None  # L2 above the ceiling
            assert b.stats().l1_entries == 0
            assert b.get(key(1), min_watermark=9, max_watermark=9) == b"newer"
            assert a.get(key(1), min_watermark=5) == b"newer"

    @pytest.mark.parametrize("foreign", [b"1.5", b"0x10", b"nan", b"inf", b"", b"four"])
    def test_an_entry_with_a_foreign_watermark_is_a_miss(self, raw: redis.Redis, prefix: str, foreign: bytes) -> None:
        """A watermark that is not an integer (some Lua's tonumber takes, "1.5", "0x10", "nan"; some it
        does not) makes the entry a miss, not an exception or a script error, and a put replaces it."""
        with replica(prefix) as a, replica(prefix) as b:
            a.put(key(1), b"state", watermark=4)
            raw.hset(key(1).redis_key(prefix), "w", foreign)
            assert b.get(key(1), min_watermark=0) is None
            a.put(key(2), b"other", watermark=4)
            assert b.get(key(2), min_watermark=4) == b"other"
            b.put(key(1), b"fresh", watermark=5)
            assert a.get(key(1), min_watermark=5) == b"fresh"  # b's put replaced the foreign entry
            assert a.stats().l2_errors == b.stats().l2_errors == 0

    def test_absent_key_is_a_miss(self, prefix: str) -> None:
        """A key never written is a miss on both levels."""
        with replica(prefix) as a:
            assert a.get(key(1), min_watermark=0) is None
            assert a.stats().misses == 1

    def test_redis_keys_hide_user_ids_and_expire(self, raw: redis.Redis, prefix: str) -> None:
        """Every key written carries a TTL within l2_ttl_s and none contains the user id."""
        with replica(prefix, l2_ttl_s=3600) as a:
            a.put(key(1), b"x", watermark=1)
            a.invalidate_user(USER)
            a.put(key(2), b"y", watermark=1)
        keys = [k.decode() for k in raw.scan_iter(match=f"{prefix}:*")]
        assert sorted(keys) == sorted(
            [key(1).redis_key(prefix), key(2).redis_key(prefix), generation_key(prefix, USER)]
        )
        for k in keys:
            assert "integration-user" not in k
            assert 0 < pttl_ms(raw, k) <= 3_600_000

    def test_generation_counter_outlives_entries_written_under_it(self, raw: redis.Redis, prefix: str) -> None:
        """A shorter-TTL replica never shortens the counter below a longer-TTL replica's entries."""
        with replica(prefix, l2_ttl_s=7200) as long_ttl, replica(prefix, l2_ttl_s=60) as short_ttl:
            long_ttl.invalidate_user(USER)
            long_ttl.put(key(1), b"x", watermark=1)
            short_ttl.put(key(2), b"y", watermark=1)
            short_ttl.invalidate_user(USER)
        gen_pttl_ms = pttl_ms(raw, generation_key(prefix, USER))
        entry_pttl_ms = pttl_ms(raw, key(1).redis_key(prefix))
        assert gen_pttl_ms >= entry_pttl_ms > 60_000


class TestWatermark:
    def test_stale_l2_entry_is_ignored(self, prefix: str) -> None:
        """An L2 entry below min_watermark is a miss and is not promoted."""
        with replica(prefix) as a, replica(prefix) as b:
            a.put(key(1), b"old", watermark=5)

            assert b.get(key(1), min_watermark=6) is None
            stats = b.stats()
            assert (stats.misses, stats.l2_hits, stats.l1_entries) == (1, 0, 0)
            assert b.get(key(1), min_watermark=5) == b"old"

    def test_lower_watermark_put_does_not_overwrite_higher(self, prefix: str) -> None:
        """A slower replica's older state never replaces newer state in L2."""
        with replica(prefix) as fast, replica(prefix) as slow, replica(prefix) as reader:
            fast.put(key(1), b"new", watermark=10)
            slow.put(key(1), b"old", watermark=3)

            assert reader.get(key(1), min_watermark=0) == b"new"
            assert reader.get(key(1), min_watermark=10) == b"new"

    def test_equal_watermark_put_replaces(self, prefix: str) -> None:
        """A put with the same watermark (a retry) replaces the stored payload."""
        with replica(prefix) as a, replica(prefix) as b, replica(prefix) as reader:
            a.put(key(1), b"first", watermark=7)
            b.put(key(1), b"second", watermark=7)
            assert reader.get(key(1), min_watermark=7) == b"second"

    def test_concurrent_puts_keep_the_highest_watermark(self, prefix: str) -> None:
        """Puts racing from threads of several replicas leave the highest-watermark payload."""
        caches = [replica(prefix) for _ in range(4)]
        errors: list[BaseException] = []

        def work(cache: PartitionCache, watermarks: range) -> None:
            try:
                for w in watermarks:
                    cache.put(key(1), f"state-{w}".encode(), watermark=w)
            except BaseException as exc:  # collected and re-checked in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(c, range(i, 200, 4))) for i, c in enumerate(caches)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert errors == []
        with replica(prefix) as reader:
            assert reader.get(key(1), min_watermark=199) == b"state-199"
        assert sum(c.stats().l2_errors for c in caches) == 0
        for c in caches:
            c.close()


class TestGeneration:
    def test_invalidate_user_hides_older_l2_entries_from_every_replica(self, prefix: str) -> None:
        """After an invalidation, entries written before it are misses; other users are untouched."""
        with replica(prefix) as a, replica(prefix) as b, replica(prefix) as c:
            a.put(key(1), b"a1", watermark=5)
            a.put(key(2), b"a2", watermark=5)
            a.put(key(1, user=OTHER), b"o1", watermark=5)

            b.invalidate_user(USER)

            assert c.get(key(1), min_watermark=0) is None
            assert c.get(key(2), min_watermark=0) is None
            assert c.get(key(1, user=OTHER), min_watermark=0) == b"o1"

    def test_entry_of_an_older_generation_does_not_block_a_lower_watermark_put(self, prefix: str) -> None:
        """After an invalidation, a put of any watermark is stored and readable."""
        with replica(prefix) as a, replica(prefix) as b:
            a.put(key(1), b"before", watermark=50)
            a.invalidate_user(USER)
            a.put(key(1), b"after", watermark=2)

            assert b.get(key(1), min_watermark=2) == b"after"

    def test_invalidating_replica_also_drops_its_l1(self, prefix: str) -> None:
        """The replica that invalidates no longer serves the user's entries from L1."""
        with replica(prefix) as a:
            a.put(key(1), b"x", watermark=1)
            a.invalidate_user(USER)
            assert a.get(key(1), min_watermark=0) is None
            assert a.stats().l1_entries == 0


class TestRedisUnreachable:
    def test_cache_runs_on_l1_and_counts_errors(self) -> None:
        """With Redis unreachable, put/get/invalidate never raise and L1 keeps working."""
        cache = PartitionCache(
            max_bytes=10_000, redis_url=CLOSED_PORT_URL, key_prefix="test:cache:down", l2_retry_after_s=0
        )
        with capture_logs():
            cache.put(key(1), b"local", watermark=3)
            assert cache.get(key(1), min_watermark=3) == b"local"
            assert cache.get(key(2), min_watermark=0) is None
            cache.invalidate_user(USER)
        stats = cache.stats()
        assert stats.l1_hits == 1
        assert stats.misses == 1
        # put, get of key(2) and invalidate each hit the closed port; the L1 hit did not.
        assert stats.l2_errors == 3
        cache.close()

    def test_error_is_logged_at_most_once_per_minute(self) -> None:
        """Errors within a minute of the last log are counted and reported with the next log."""
        clock = FakeClock()
        cache = PartitionCache(
            max_bytes=10_000,
            redis_url=CLOSED_PORT_URL,
            key_prefix="test:cache:down",
            l2_retry_after_s=0,
            clock=clock,
        )
        with capture_logs() as logs:
            cache.get(key(1), min_watermark=0)
            clock.now_s += 10
            cache.get(key(1), min_watermark=0)
            clock.now_s += 10
            cache.put(key(1), b"x", watermark=1)
            clock.now_s += 60
            cache.get(key(2), min_watermark=0)
        events = [e for e in logs if e["event"] == "cache.l2_error"]
        assert [(e["op"], e["suppressed"], e["l2_errors"]) for e in events] == [("get", 0, 1), ("get", 2, 4)]
        assert all(e["log_level"] == "warning" and "ConnectionError" in e["error"] for e in events)
        cache.close()

    def test_l2_is_skipped_for_retry_after_s_after_an_error(self) -> None:
        """After an error, gets and puts stay on L1 until l2_retry_after_s has passed."""
        clock = FakeClock()
        cache = PartitionCache(
            max_bytes=10_000,
            redis_url=CLOSED_PORT_URL,
            key_prefix="test:cache:down",
            l2_retry_after_s=5,
            clock=clock,
        )
        with capture_logs():
            cache.get(key(1), min_watermark=0)
            clock.now_s += 4
            cache.get(key(1), min_watermark=0)
            cache.put(key(1), b"x", watermark=1)
            assert cache.stats().l2_errors == 1
            clock.now_s += 1
            cache.get(key(2), min_watermark=0)
            assert cache.stats().l2_errors == 2
        cache.close()

    def test_no_redis_url_runs_on_l1_alone(self) -> None:
        """With redis_url None, no L2 is used and no error is ever counted."""
        cache = PartitionCache(max_bytes=10_000, redis_url=None)
        cache.put(key(1), b"x", watermark=1)
        cache.invalidate_user(OTHER)
        assert cache.get(key(1), min_watermark=1) == b"x"
        assert cache.stats().l2_errors == 0
