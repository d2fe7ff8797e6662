"""Memory tuning of the worker process, applied once at start-up (``python -m worker run``, ``demo``):
glibc malloc (:func:`configure_malloc`) and Python's cyclic garbage collector (:func:`configure_gc`);
and after each recompute, the return of the heap's free pages to the system (:func:`release_free_memory`).

The recompute runs numpy work in ``asyncio.to_thread`` threads. With glibc's defaults every
thread may get its own malloc arena (up to 8 per core) and each arena keeps the memory freed in
it, and the mmap threshold grows to the size of the largest array freed (up to 32 MiB), after
which arrays of that size are carved from the arenas instead of being unmapped when freed. Both
raise the peak resident memory of a large recompute (≈ 20–30 MB at 1M views). One arena and a
fixed mmap threshold of a few MiB keep it close to the live data; arrays below the threshold (all
of them up to ≈ 500k views) still come from the heap, so CPU is not spent re-faulting fresh
mappings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from typing import Final

__all__ = ["configure_gc", "configure_malloc", "release_free_memory"]

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """Return the C library, or None where it cannot be loaded (looked up once: ``find_library``
    runs ``ldconfig -p`` in a child process)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def release_free_memory() -> bool:
    """Give the free pages inside the malloc heap back to the operating system (glibc ``malloc_trim(0)``).

    A recompute frees most of what it allocated, but freed blocks lying between blocks still in use
    (the kept frame, states and results) stay resident: glibc only trims the heap's top by itself.
    After an append to a 1M-view history that was 70–80 MiB of the worker's resident memory
    (measured with ``benchmarks/bench_incremental.py``: 297 → 226 MiB); ``malloc_trim(0)`` releases
    every free page, anywhere in the heap, in a few milliseconds (2–9 ms there). It changes no
    data, only what stays resident.

    Returns:
        True when the call was made (glibc); False where the C library has no ``malloc_trim``
        (musl, macOS). Never raises.
    """
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    trim(0)
    return True


def configure_malloc(*, arena_max: int, mmap_threshold_bytes: int) -> bool:
    """Set glibc's arena bound and mmap threshold for this process (``mallopt``).

    Call it before the worker starts threads: threads that already own an arena keep it.

    Args:
        arena_max: Largest number of malloc arenas; 0 leaves glibc's default (or ``MALLOC_ARENA_MAX``).
        mmap_threshold_bytes: Allocations of at least this many bytes get their own mapping,
            returned to the system when freed; the heap is trimmed once its free top exceeds twice
            this. 0 leaves glibc's dynamic threshold (or ``MALLOC_MMAP_THRESHOLD_``).

    Returns:
        True when every requested setting was applied; False when the C library has no
        ``mallopt`` (not glibc, e.g. musl or macOS) or refused a value. Never raises.
    """
    if arena_max <= 0 and mmap_threshold_bytes <= 0:
        return True  # nothing requested
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = True
    if arena_max > 0:
        ok &= mallopt(_M_ARENA_MAX, arena_max) == 1
    if mmap_threshold_bytes > 0:
        ok &= mallopt(_M_MMAP_THRESHOLD, mmap_threshold_bytes) == 1
        ok &= mallopt(_M_TRIM_THRESHOLD, 2 * mmap_threshold_bytes) == 1
    return bool(ok)


def configure_gc(*, gen0_threshold: int) -> None:
    """Set how many container allocations (net of frees) start a young collection (``gc.set_threshold``).

    A recompute builds tens of thousands of dicts and lists (the results: about 1.6 MB of JSON for a
    100k-view history), most of which the frame cache keeps until the next recompute. With
    CPython's default threshold of 700 each recompute runs dozens of young collections, and the
    objects they promote trigger full collections that traverse everything kept: measured at
    14 ms of a 116 ms append to a 100k-view history (``benchmarks/bench_incremental.py``; about a
    fifth of it). An append leaves no cyclic garbage (``gc.collect()`` after each of six appends with
    collection off found nothing), so collecting less often changes nothing but the time spent. The older generations
    keep CPython's thresholds (10 and 10, and a full collection only once the objects awaiting it
    exceed a quarter of the long-lived ones).

    Args:
        gen0_threshold: Allocations between young collections; 0 leaves CPython's (700 by default).
    """
    if gen0_threshold > 0:
        _, first, second = gc.get_threshold()
        gc.set_threshold(gen0_threshold, first, second)
