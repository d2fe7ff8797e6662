"""Memory tuning applied by ``python -m worker run`` at start-up: glibc malloc and the garbage collector."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from worker.allocator import configure_gc, configure_malloc
from worker.config import load_settings


def _with_default_settings(statements: str) -> str:
    """Run ``statements`` in a fresh interpreter (the tuning is process-wide) with ``s`` = the default
    settings; return what it printed."""
    code = (
        "import gc; from worker.allocator import configure_gc, configure_malloc;"
        " from worker.config import load_settings;"
        " s = load_settings(convex_url='http://127.0.0.1:9', convex_admin_key='k'); " + statements
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


class TestConfigureMalloc:
    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
    def test_applies_the_default_settings_in_a_fresh_process(self) -> None:
        """The default arena bound and mmap threshold are accepted by glibc (run apart: they are process-wide)."""
        printed = _with_default_settings(
            "print(configure_malloc(arena_max=s.malloc_arena_max, mmap_threshold_bytes=s.malloc_mmap_threshold_bytes))"
        )
        assert printed == "True"

    def test_zero_leaves_glibc_alone(self) -> None:
        """With both knobs 0 nothing is set, which always succeeds."""
        assert configure_malloc(arena_max=0, mmap_threshold_bytes=0) is True

    def test_defaults_bound_the_process_to_one_arena_and_a_fixed_threshold(self) -> None:
        """The shipped defaults: one arena, 4 MiB threshold."""
        settings = load_settings(convex_url="http://127.0.0.1:9", convex_admin_key="k")
        assert (settings.malloc_arena_max, settings.malloc_mmap_threshold_bytes) == (1, 4 * 1024 * 1024)


class TestConfigureGc:
    def test_default_setting_raises_the_young_threshold_in_a_fresh_process(self) -> None:
        """The default raises threshold 0 and keeps the older generations' (run apart: gc is process-wide)."""
        printed = _with_default_settings(
            "before = gc.get_threshold(); configure_gc(gen0_threshold=s.gc_gen0_threshold);"
            " print(before, gc.get_threshold())"
        )
        assert printed == "(700, 10, 10) (50000, 10, 10)"

    def test_zero_leaves_the_collector_alone(self) -> None:
        before = gc.get_threshold()
        configure_gc(gen0_threshold=0)
        assert gc.get_threshold() == before


class TestReleaseFreeMemory:
    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
    def test_free_blocks_between_kept_ones_leave_the_resident_set(self) -> None:
        """64 MiB freed in 32 KiB blocks between kept ones stays resident until the call returns it
        (run apart: the heap is process-wide)."""
        code = (
            "from worker.allocator import release_free_memory\n"
            "def rss():\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith('VmRSS:'):\n"
            "            return int(line.split()[1]) // 1024\n"
            "blocks = [b'x' * 32768 for _ in range(4096)]\n"
            "kept = blocks[::2]\n"
            "del blocks\n"
            "before = rss()\n"
            "done = release_free_memory()\n"
            "print(done, before - rss(), len(kept))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
        done, released, kept = out.stdout.split()
        assert done == "True" and int(kept) == 2048
        assert int(released) >= 40, out.stdout  # of the 64 MiB freed
