"""Unit tests of worker.cache on L1 alone (no Redis)."""

from __future__ import annotations

import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.cache import (
    L1_ENTRY_OVERHEAD_BYTES,
    CacheStats,
    PartitionCache,
    PartitionKey,
    generation_key,
)

USER = "https://issuer.example|user-1"
OTHER = "https://issuer.example|user-2"


def key(month: int, user: str = USER, tz: str = "Europe/Paris", version: int = 1) -> PartitionKey:
    return PartitionKey(user_id=user, month=month, time_zone=tz, definition_version=version)


def entry_size(k: PartitionKey, payload_len: int) -> int:
    return payload_len + k.l1_overhead_bytes()


class TestPartitionKey:
    def test_redis_key_is_stable_and_hides_the_user_id(self) -> None:
        """The key is deterministic, printable ASCII, and holds a 32-hex hash instead of the id."""
        k = key(24288)
        first = k.redis_key("p")
        assert first == key(24288).redis_key("p")
        assert USER not in first and "user-1" not in first
        assert re.fullmatch(r"p:\{[0-9a-f]{32}\}:v1:Europe%2FParis:24288", first)

    @pytest.mark.parametrize(
        "other",
        [
            key(24289),
            key(24288, user=OTHER),
            key(24288, tz="Europe/Berlin"),
            key(24288, version=2),
        ],
    )
    def test_every_field_changes_the_redis_key(self, other: PartitionKey) -> None:
        """Keys differing in any field map to different Redis keys."""
        assert other.redis_key("p") != key(24288).redis_key("p")

    def test_generation_key_shares_the_user_hash_tag(self) -> None:
        """The generation counter and the entries of a user share the same cluster hash tag."""
        tag = re.search(r"\{[0-9a-f]{32}\}", key(1).redis_key("p"))
        assert tag is not None
        assert generation_key("p", USER) == f"p:{tag.group(0)}:gen"
        assert generation_key("p", OTHER) != generation_key("p", USER)

    @pytest.mark.parametrize("prefix", ["", "a{b", "a}b", "a b", "a\nb"])
    def test_invalid_prefix_is_rejected(self, prefix: str) -> None:
        """Empty prefixes and prefixes with braces or whitespace raise ValueError."""
        with pytest.raises(ValueError):
            key(1).redis_key(prefix)
        with pytest.raises(ValueError):
            generation_key(prefix, USER)

    @pytest.mark.parametrize(
        ("user", "month", "tz", "version"),
        [("", 1, "UTC", 1), ("u", -1, "UTC", 1), ("u", 1, "", 1), ("u", 1, "UTC", -1)],
    )
    def test_invalid_fields_are_rejected(self, user: str, month: int, tz: str, version: int) -> None:
        """Empty ids or zones and negative months or versions raise ValueError."""
        with pytest.raises(ValueError):
            PartitionKey(user_id=user, month=month, time_zone=tz, definition_version=version)

    def test_overhead_counts_key_strings(self) -> None:
        """The L1 overhead estimate is the fixed overhead plus the UTF-8 key strings."""
        k = PartitionKey(user_id="é", month=1, time_zone="UTC", definition_version=0)
        assert k.l1_overhead_bytes() == L1_ENTRY_OVERHEAD_BYTES + 2 + 3


class TestConstruction:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_bytes": 0},
            {"max_bytes": 1000, "l2_ttl_s": 0},
            {"max_bytes": 1000, "l2_timeout_s": 0},
            {"max_bytes": 1000, "l2_retry_after_s": -1},
            {"max_bytes": 1000, "key_prefix": "a{b"},
        ],
    )
    def test_out_of_range_settings_are_rejected(self, kwargs: dict[str, int | str]) -> None:
        """Non-positive bounds and invalid prefixes raise ValueError at construction."""
        with pytest.raises(ValueError):
            PartitionCache(**kwargs)  # type: ignore[arg-type]

    def test_new_cache_has_zeroed_stats(self) -> None:
        """A new cache reports all counters at zero."""
        assert PartitionCache(max_bytes=1000).stats() == CacheStats(0, 0, 0, 0, 0, 0, 0)


class TestLru:
    def test_least_recently_used_entry_is_evicted_first(self) -> None:
        """A get refreshes an entry, so the oldest untouched entry is the one evicted."""
        k1, k2, k3, k4 = key(1), key(2), key(3), key(4)
        cache = PartitionCache(max_bytes=3 * entry_size(k1, 100))
        for k in (k1, k2, k3):
            cache.put(k, b"x" * 100, watermark=1)
        assert cache.get(k1, min_watermark=0) == b"x" * 100
        cache.put(k4, b"y" * 100, watermark=1)

        assert cache.get(k2, min_watermark=0) is None
        for k in (k1, k3, k4):
            assert cache.get(k, min_watermark=0) is not None
        stats = cache.stats()
        assert stats.evictions == 1
        assert stats.l1_entries == 3

    def test_large_put_evicts_as_many_entries_as_needed(self) -> None:
        """A put evicts oldest entries until the new one fits."""
        small = [key(m) for m in range(4)]
        cache = PartitionCache(max_bytes=4 * entry_size(small[0], 100))
        for k in small:
            cache.put(k, b"s" * 100, watermark=1)
        big = key(99)
        cache.put(big, b"b" * (2 * entry_size(small[0], 100) - big.l1_overhead_bytes()), watermark=1)

        assert [cache.get(k, min_watermark=0) is not None for k in small] == [False, False, True, True]
        assert cache.get(big, min_watermark=0) is not None
        assert cache.stats().evictions == 2

    @settings(max_examples=60, deadline=None)
    @given(
        max_bytes=st.integers(min_value=1, max_value=5000),
        ops=st.lists(
            st.tuples(st.integers(0, 30), st.integers(0, 2000), st.integers(0, 5)),
            min_size=1,
            max_size=200,
        ),
    )
    def test_byte_bound_holds_after_any_sequence_of_puts(self, max_bytes: int, ops: list[tuple[int, int, int]]) -> None:
        """After every put, L1 size stays within max_bytes and equals the sum of its entries."""
        cache = PartitionCache(max_bytes=max_bytes)
        for month, size, watermark in ops:
            cache.put(key(month), b"z" * size, watermark=watermark)
            stats = cache.stats()
            assert 0 <= stats.l1_bytes <= max_bytes
        present = [k for k in {key(m) for m, _, _ in ops} if cache.get(k, min_watermark=0) is not None]
        final = cache.stats()
        assert final.l1_entries == len(present)
        assert final.l1_bytes == sum(entry_size(k, len(cache.get(k, min_watermark=0) or b"")) for k in present)


class TestOversize:
    def test_entry_larger_than_budget_is_not_cached(self) -> None:
        """A payload whose entry exceeds max_bytes is not stored and evicts nothing."""
        small, huge = key(1), key(2)
        cache = PartitionCache(max_bytes=entry_size(small, 10) + 50)
        cache.put(small, b"s" * 10, watermark=1)
        cache.put(huge, b"h" * (entry_size(small, 10) + 51), watermark=1)

        assert cache.get(huge, min_watermark=0) is None
        assert cache.get(small, min_watermark=0) == b"s" * 10
        assert cache.stats().evictions == 0

    def test_exact_fit_is_cached(self) -> None:
        """An entry exactly as large as max_bytes is kept."""
        k = key(1)
        cache = PartitionCache(max_bytes=entry_size(k, 64))
        cache.put(k, b"e" * 64, watermark=1)
        assert cache.get(k, min_watermark=0) == b"e" * 64
        assert cache.stats().l1_bytes == entry_size(k, 64)

    def test_oversize_newer_state_drops_the_older_entry(self) -> None:
        """An oversize payload with a newer watermark drops the key's older L1 entry."""
        k = key(1)
        cache = PartitionCache(max_bytes=entry_size(k, 10))
        cache.put(k, b"o" * 10, watermark=1)
        cache.put(k, b"n" * 11, watermark=2)
        assert cache.get(k, min_watermark=0) is None
        assert cache.stats().l1_bytes == 0


class TestWatermark:
    def test_entry_below_min_watermark_is_a_miss(self) -> None:
        """get treats an entry older than min_watermark as a miss and drops it."""
        k = key(1)
        cache = PartitionCache(max_bytes=10_000)
        cache.put(k, b"state", watermark=5)

        assert cache.get(k, min_watermark=6) is None
        assert cache.get(k, min_watermark=0) is None
        stats = cache.stats()
        assert (stats.l1_hits, stats.misses, stats.l1_entries, stats.l1_bytes) == (0, 2, 0, 0)

    def test_entry_at_or_above_min_watermark_is_a_hit(self) -> None:
        """get returns an entry whose watermark equals or exceeds min_watermark."""
        k = key(1)
        cache = PartitionCache(max_bytes=10_000)
        cache.put(k, b"state", watermark=5)
        assert cache.get(k, min_watermark=5) == b"state"
        assert cache.get(k, min_watermark=3) == b"state"
        assert cache.stats().l1_hits == 2

    def test_lower_watermark_put_does_not_overwrite(self) -> None:
        """A put older than the stored entry is ignored; an equal watermark replaces it."""
        k = key(1)
        cache = PartitionCache(max_bytes=10_000)
        cache.put(k, b"new", watermark=9)
        cache.put(k, b"old", watermark=3)
        assert cache.get(k, min_watermark=0) == b"new"
        cache.put(k, b"retry", watermark=9)
        assert cache.get(k, min_watermark=9) == b"retry"
        assert cache.stats().l1_bytes == entry_size(k, len(b"retry"))

    def test_negative_watermark_is_rejected(self) -> None:
        """put raises ValueError for a negative watermark."""
        with pytest.raises(ValueError):
            PartitionCache(max_bytes=1000).put(key(1), b"x", watermark=-1)


class TestInvalidateUser:
    def test_drops_only_that_users_entries(self) -> None:
        """invalidate_user removes every L1 entry of the user and keeps other users'."""
        cache = PartitionCache(max_bytes=100_000)
        mine = [key(1), key(2, tz="UTC"), key(3, version=7)]
        theirs = key(1, user=OTHER)
        for k in mine:
            cache.put(k, b"m" * 10, watermark=1)
        cache.put(theirs, b"t" * 10, watermark=1)

        cache.invalidate_user(USER)

        assert all(cache.get(k, min_watermark=0) is None for k in mine)
        assert cache.get(theirs, min_watermark=0) == b"t" * 10
        stats = cache.stats()
        assert stats.l1_entries == 1
        assert stats.l1_bytes == entry_size(theirs, 10)
        assert stats.evictions == 0

    def test_user_can_be_cached_again_after_invalidation(self) -> None:
        """After invalidation a put of any watermark is stored again."""
        cache = PartitionCache(max_bytes=10_000)
        cache.put(key(1), b"a", watermark=8)
        cache.invalidate_user(USER)
        cache.put(key(1), b"b", watermark=2)
        assert cache.get(key(1), min_watermark=2) == b"b"

    def test_unknown_user_is_a_no_op(self) -> None:
        """Invalidating a user with no entries changes nothing."""
        cache = PartitionCache(max_bytes=10_000)
        cache.put(key(1), b"a", watermark=1)
        cache.invalidate_user("nobody")
        assert cache.stats().l1_entries == 1


class TestConcurrency:
    def test_threads_keep_the_byte_accounting_consistent(self) -> None:
        """Concurrent puts, gets and invalidations leave size and entries consistent."""
        cache = PartitionCache(max_bytes=20 * entry_size(key(0), 100))
        users = [f"user-{i}" for i in range(4)]
        errors: list[BaseException] = []

        def work(seed: int) -> None:
            try:
                for i in range(500):
                    user = users[(seed + i) % len(users)]
                    k = key(i % 40, user=user)
                    cache.put(k, b"p" * (i % 150), watermark=i)
                    cache.get(k, min_watermark=i // 2)
                    if i % 97 == 0:
                        cache.invalidate_user(user)
            except BaseException as exc:  # collected and re-checked in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert errors == []
        stats = cache.stats()
        assert stats.l1_bytes <= 20 * entry_size(key(0), 100)
        present = [
            (k, p)
            for k in (key(m, user=u) for u in users for m in range(40))
            if (p := cache.get(k, min_watermark=0)) is not None
        ]
        assert stats.l1_entries == len(present)
        assert stats.l1_bytes == sum(entry_size(k, len(p)) for k, p in present)
