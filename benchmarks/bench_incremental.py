"""Full vs incremental recompute through the Recomputer's partition path (in-memory event source).

    python benchmarks/bench_incremental.py [sizes...]      # default: 10000 100000
    python benchmarks/bench_incremental.py --rss-only 1000000

For each size, one seeded ``worker.synthetic`` history (Europe/Berlin, 3 years), the whole catalogue
for the 18 eager filter sets, measured in one process:

* full: cold cache, every event read and every month partition built (CPU seconds, documents read);
* append: 100 views appended to the latest month (``append_batch``: sessions of views copying the
  channels, titles and products of the user's own views, a quarter of them rewatches), then an
  incremental recompute, twice: the first append after the full recompute ("1st append": it builds
  the engine's incremental states) and the next one ("append", the steady state of a user whose
  history grows: the states are extended by the appended views);
* delete: one old month deleted, then an incremental recompute.

CPU is ``time.process_time`` (this process; the event source's own work is included but tiny), with the
worker's garbage-collector threshold (``worker.allocator.configure_gc``, set by ``python -m worker run``).
Encoding the results for ``worker:storeAggregations`` is measured separately: the CPU to encode every
result (what the runner does after each recompute), and how many results an append changed, with the
CPU to encode only those.
Events come from an in-memory stand-in for ``worker:listEvents``: Convex transfer time is excluded.

Peak RSS is the worker's: a child process per size, with the worker's default settings (whatever
``--frame-cache-mib`` says), runs a cold full recompute whose event source reads pickled pages of
4000 events (field tuples, turned into ``WatchEvent`` objects per page as the gateway does with
Convex documents) from a temporary file one page at a time, so the history is never held whole by
the source, then the same appends as above, called as the runner calls them (the default set first,
then one filter base at a time); the peaks are ``VmHWM`` after the full recompute, after the first
two appends (which build the incremental states and the distinct-count tables) and over the later
appends alone (the peak is reset before them: ``/proc/self/clear_refs``), including the
interpreter and its imports (about 60 MiB). The child starts as
``python -m worker run`` does (``worker.allocator.configure_malloc`` and ``configure_gc`` with the
default settings) and does not import the synthetic-history generator, which the worker never
loads. A second child writes the files first. The child's CPU figures (full and appends, page
decoding excluded) are printed too: the worker's own process with its default memory bounds.
``--rss-only`` runs only the children (for large sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.aggregation.timeframes import load_zone  # noqa: E402
from worker.allocator import configure_gc, configure_malloc  # noqa: E402
from worker.cache import PartitionCache  # noqa: E402
from worker.config import load_settings  # noqa: E402
from worker.gateway import Gateway, group_result_sets  # noqa: E402
from worker.models import ChangeEntry, Claim, WatchEvent  # noqa: E402
from worker.partitions import local_month_of, month_bounds_ms  # noqa: E402
from worker.recompute import Recomputer  # noqa: E402

TZ = "Europe/Berlin"
END_MS = 1_790_000_000_000
USER = "bench-user"


@dataclass(repr=False)  # asyncio may repr coroutine arguments: never format the whole history
class MemorySource:
    """In-memory ``worker:listEvents``/``listEventsByChange`` over a sorted history; counts documents served.

    ``seqs[i]`` is the seq of the change that inserted ``events[i]``; seqs never decrease along ``events``.
    """

    events: list[WatchEvent]
    read: int = 0
    ts: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events.sort(key=lambda e: e.watched_at_ms)
        self.ts = [e.watched_at_ms for e in self.events]
        self.seqs = [1] * len(self.events)

    def append(self, new: list[WatchEvent], seq: int) -> None:
        """Add views later than every stored one, inserted by change ``seq`` (not below any stored seq)."""
        assert not self.seqs or seq >= self.seqs[-1], "seqs must not decrease"
        self.events += new
        self.ts += [e.watched_at_ms for e in new]
        self.seqs += [seq] * len(new)

    def keep(self, pred: Callable[[WatchEvent], bool]) -> None:
        """Delete every view failing ``pred``."""
        kept = [(e, s) for e, s in zip(self.events, self.seqs, strict=True) if pred(e)]
        self.events = [e for e, _ in kept]
        self.seqs = [s for _, s in kept]
        self.ts = [e.watched_at_ms for e in self.events]

    async def iter_event_pages(
        self,
        user_id: str,
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
        max_change_seq: int | None = None,
        page_size: int = 4000,
    ) -> AsyncIterator[list[WatchEvent]]:
        import bisect

        lo = 0 if from_ms is None else bisect.bisect_left(self.ts, from_ms)
        hi = len(self.ts) if to_ms is None else bisect.bisect_right(self.ts, to_ms)
        top = max_change_seq if max_change_seq is not None else 2**62
        for i in range(lo, max(hi, lo + 1), page_size):
            end = min(i + page_size, hi)
            page = [e for e, s in zip(self.events[i:end], self.seqs[i:end], strict=True) if s <= top]
            self.read += end - i  # documents the backend reads, filtered or not
            yield page

    async def iter_changed_event_pages(
        self, user_id: str, *, after_seq: int, through_seq: int, page_size: int = 4000
    ) -> AsyncIterator[list[WatchEvent]]:
        # seqs never decrease (see ``append``): a binary search, as an index on change seq would do,
        # so the source's own work stays out of the worker's CPU
        import bisect

        lo, hi = bisect.bisect_right(self.seqs, after_seq), bisect.bisect_right(self.seqs, through_seq)
        rows = self.events[lo:hi]
        for i in range(0, max(len(rows), 1), page_size):
            page = rows[i : i + page_size]
            self.read += len(page)
            yield page


@dataclass
class FileSource:
    """The history as pickled pages of field tuples in a file, read lazily, plus appended views in memory.

    ``iter_event_pages`` streams the file (a whole-history read) or scans it for a time range (a
    month read again), adding the appended views of changes up to ``max_change_seq``;
    ``iter_changed_event_pages`` serves the appended views by change seq.
    """

    path: str
    read: int = 0
    cpu_s: float = 0.0  # CPU spent decoding pages (the stand-in for Convex transfer), excluded from the worker's
    appended: list[tuple[int, list[WatchEvent]]] = field(default_factory=list)  # (seq, views) in seq order

    async def iter_event_pages(
        self,
        user_id: str,
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
        max_change_seq: int | None = None,
        page_size: int = 4000,
    ) -> AsyncIterator[list[WatchEvent]]:
        lo = -(2**62) if from_ms is None else from_ms
        hi = 2**62 if to_ms is None else to_ms
        top = 2**62 if max_change_seq is None else max_change_seq
        with open(self.path, "rb") as fh:
            while True:
                started = time.process_time()
                try:
                    rows: list[tuple[Any, ...]] = pickle.load(fh)
                except EOFError:
                    break
                page = [WatchEvent(*row) for row in rows if lo <= row[0] <= hi]
                del rows
                self.cpu_s += time.process_time() - started
                if page:
                    self.read += len(page)
                    yield page
        for seq, views in self.appended:
            page = [e for e in views if lo <= e.watched_at_ms <= hi] if seq <= top else []
            if page:
                self.read += len(page)
                yield page

    async def iter_changed_event_pages(
        self, user_id: str, *, after_seq: int, through_seq: int, page_size: int = 4000
    ) -> AsyncIterator[list[WatchEvent]]:
        for seq, views in self.appended:
            if after_seq < seq <= through_seq:
                self.read += len(views)
                yield views


def write_history(n: int, path: str, page_size: int = 4000) -> None:
    """Write the benchmark history of size n to ``path`` as pickled pages (time order), and its
    ``APPENDS`` append batches (``append_batches``) to ``path + ".appends"``."""
    from worker.synthetic import generate_history  # not in the measured child: the worker never loads it

    events = generate_history(n, seed=42, end_ms=END_MS, time_zone=TZ, years=3.0)
    events.sort(key=lambda e: e.watched_at_ms)
    with open(path, "wb") as fh:
        for i in range(0, len(events), page_size):
            rows = [
                (e.watched_at_ms, e.kind, e.product, e.video_id, e.title, e.channel_id, e.channel_name, e.flags)
                for e in events[i : i + page_size]
            ]
            pickle.dump(rows, fh, protocol=pickle.HIGHEST_PROTOCOL)
    with open(path + ".appends", "wb") as fh:
        pickle.dump(append_batches(events, n), fh, protocol=pickle.HIGHEST_PROTOCOL)


def append_batches(history: list[WatchEvent], n: int) -> list[list[WatchEvent]]:
    """Return the ``APPENDS`` batches appended to the size-n history (time-ordered ``history``), each
    spread over a fifth of what is left of its last month, later than everything before (seeded by n)."""
    zone = load_zone(TZ)
    last = history[-1].watched_at_ms
    _, hi = month_bounds_ms(local_month_of(last, zone), zone)
    rng = random.Random(n)
    out: list[list[WatchEvent]] = []
    for seq in range(2, 2 + APPENDS):
        new = append_batch(history, last, last + (hi - last) // 5, rng, f"a{seq}")
        new.sort(key=lambda e: e.watched_at_ms)
        last = new[-1].watched_at_ms
        out.append(new)
    return out


def steady_cpu(appends: list[float]) -> float:
    """Return the steady-state append CPU: the median of the appends after the first two (which build
    the incremental states and the distinct-count tables)."""
    steady = sorted(appends[2:])
    return steady[len(steady) // 2]


def kept_state_mib(rc: Recomputer) -> float:
    """Return the engine state kept with the benchmark user's frame (``DerivedState.nbytes``), MiB:
    the incremental states, or only the session pairs when the states did not fit; 0 without a frame."""
    index = rc.store.load_index(USER, TZ, min_watermark=0)
    state = rc.frames.get_state(USER, TZ, index) if index is not None else None
    return 0.0 if state is None else state.nbytes / 2**20


def measure_as_runner(rc: Recomputer, source: FileSource, c: Claim, now_ms: int) -> tuple[float, int]:
    """Recompute once as the runner does (the default set first, then one filter base at a time, each
    batch handed to a callback that drops it): (CPU s, documents read)."""

    async def drop(results: list[dict[str, Any]]) -> None:
        del results

    source.read = 0
    started = time.process_time()
    asyncio.run(rc.recompute(c, now_ms=now_ms, on_first=drop, on_batch=drop))
    return time.process_time() - started, source.read


def worker_from_file(path: str) -> dict[str, Any]:
    """The worker's own process on a page file, with its default settings: a cold full recompute, then
    the ``APPENDS`` appends (``path + ".appends"``), as the runner calls them (results handed over per
    filter base, then dropped).

    Returns worker CPU s (page decoding excluded) of the full recompute and of each append, documents
    read by the full recompute, the engine state kept after the appends (``kept_state_mib``), and
    peak RSS figures (MiB): after the full recompute (``rss``), after the first two appends
    (``rss_build``: they build the states and tables), and over the later appends alone
    (``rss_appends``, the steady state; over every append where the peak cannot be reset:
    ``rss_reset`` False).
    """
    source = FileSource(path)
    settings = load_settings(convex_url="http://127.0.0.1:9", convex_admin_key="k", heartbeat_file=None)
    # the start-up of ``python -m worker run``: the allocator tuning the shipped worker applies to itself
    configure_malloc(arena_max=settings.malloc_arena_max, mmap_threshold_bytes=settings.malloc_mmap_threshold_bytes)
    configure_gc(gen0_threshold=settings.gc_gen0_threshold)
    rc = Recomputer(cast(Gateway, source), settings, cache=PartitionCache(max_bytes=settings.cache_max_bytes))
    cpu, read = measure_as_runner(rc, source, claim(1, "import", 0, END_MS), END_MS)
    out: dict[str, Any] = {"cpu": cpu - source.cpu_s, "source_cpu": source.cpu_s, "read": read, "rss": peak_rss_mib()}
    with open(path + ".appends", "rb") as fh:
        batches: list[list[WatchEvent]] = pickle.load(fh)
    appends: list[float] = []
    for seq, batch in enumerate(batches, start=2):
        if seq == 4:  # the steady state's own peak: the first two appends build the states and tables
            out["rss_build"] = peak_rss_mib()
            out["rss_reset"] = reset_peak_rss()
        source.appended.append((seq, batch))
        before = source.cpu_s
        c = claim(seq, "import", batch[0].watched_at_ms, batch[-1].watched_at_ms, len(batch))
        cpu, _ = measure_as_runner(rc, source, c, END_MS)
        appends.append(cpu - (source.cpu_s - before))
    out["append_cpu"] = appends
    out["states_mb"] = kept_state_mib(rc)
    out["rss_appends"] = peak_rss_mib()
    return out


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux: ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """Return this process's peak RSS in MiB: ``VmHWM`` of ``/proc/self/status`` where available.

    ``ru_maxrss`` is not used on Linux: a child started by a large parent inherits the parent's value.
    """
    import resource

    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def claim(seq: int, kind: str, lo: int | None, hi: int | None, count: int = 0) -> Claim:
    change = ChangeEntry(user_id=USER, seq=seq, kind=kind, from_ms=lo, to_ms=hi, count=count)  # type: ignore[arg-type]
    return Claim(True, "bench", None, TZ, seq, (change,))


def measure(rc: Recomputer, source: MemorySource, c: Claim, now_ms: int) -> tuple[float, int, str]:
    cpu, read, plan, _ = measure_results(rc, source, c, now_ms)
    return cpu, read, plan


def measure_results(
    rc: Recomputer, source: MemorySource, c: Claim, now_ms: int
) -> tuple[float, int, str, list[dict[str, Any]]]:
    """Recompute once: (CPU s, documents read, plan reason, the results as stored)."""
    source.read = 0
    started = time.process_time()
    out = asyncio.run(rc.recompute(c, now_ms=now_ms))
    return time.process_time() - started, source.read, out.plan_reason, out.results


def encode_cpu(results: list[dict[str, Any]]) -> float:
    """CPU s the worker spends encoding ``results`` for ``worker:storeAggregations`` (canonical JSON + hash).

    Best of 3: the encoding is deterministic, the minimum is the least disturbed measurement.
    """
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        group_result_sets(results)
        best = min(best, time.process_time() - started)
    return best


def changed_results(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results of ``after`` whose data differs from the same (filter set, type) in ``before``."""
    old = {(r["filterKey"], r["type"]): r["data"] for r in before}
    return [r for r in after if old.get((r["filterKey"], r["type"])) != r["data"]]


FLOOR_EVENTS = 200
"""Size of the history whose append measures the catalogue's fixed cost (see ``floor_cpu``)."""


def floor_cpu() -> float:
    """CPU s of the steady-state 100-view append to a 200-view history (best of 3 runs of ``run``).

    With almost no history, this is what extending and rendering the 252 results costs by itself:
    the least an append can cost while every result of the filter bases it touches is rebuilt.
    """
    return min(float(run(FLOOR_EVENTS)["append_cpu"]) for _ in range(3))


APPEND_VIEWS = 100
MIN_EVENTS = 100
"""Smallest history measured: ``append_batch`` draws its models from 64 of the history's views."""
APPENDS = 5
"""Appends measured in a row: the 1st builds the engine's incremental states, the 2nd is their first
extension (it also builds the distinct-count tables), the others are the steady state (median)."""


def append_batch(
    history: list[WatchEvent], start_ms: int, stop_ms: int, rng: random.Random, tag: str
) -> list[WatchEvent]:
    """Return ``APPEND_VIEWS`` views in ``(start_ms, stop_ms)`` that look like the user's own.

    Sessions of 3–8 views 2–9 minutes apart, spread evenly over the span; each view copies the
    channel, title and product of a random view of ``history`` (the user keeps watching the
    channels and topics they watch); one in four rewatches that view's video, the others are new
    videos (ids ``<tag>…``). A session is one product, like the synthetic history's.
    """
    sizes: list[int] = []
    while sum(sizes) < APPEND_VIEWS:
        sizes.append(min(rng.randint(3, 8), APPEND_VIEWS - sum(sizes)))
    slot = (stop_ms - start_ms) // len(sizes)
    out: list[WatchEvent] = []
    for k, size in enumerate(sizes):
        at = start_ms + k * slot + rng.randrange(1, max(2, slot // 4))
        music = rng.random() < 0.15
        pool = [e for e in rng.sample(history, 64) if e.kind == "watch" and (e.product == "youtube_music") == music]
        for _ in range(size):
            model = rng.choice(pool or [e for e in history[-64:] if e.kind == "watch"])
            video = model.video_id if rng.random() < 0.25 else f"{tag}{len(out):08d}"
            out.append(replace(model, watched_at_ms=at, video_id=video))
            at += rng.randint(2, 9) * 60_000
    return out


def run(n: int, full_only: bool = False, frame_cache_mib: int | None = None) -> dict[str, Any]:
    from worker.synthetic import generate_history

    events = generate_history(n, seed=42, end_ms=END_MS, time_zone=TZ, years=3.0)
    source = MemorySource(events)
    extra = {} if frame_cache_mib is None else {"frame_cache_max_bytes": frame_cache_mib * 2**20}
    settings = load_settings(convex_url="http://127.0.0.1:9", convex_admin_key="k", heartbeat_file=None, **extra)
    cache = PartitionCache(max_bytes=512 * 1024 * 1024)
    rc = Recomputer(cast(Gateway, source), settings, cache=cache)
    zone = load_zone(TZ)
    now = END_MS
    row: dict[str, Any] = {"n": n}
    row["full_cpu"], row["full_read"], _, full_results = measure_results(rc, source, claim(1, "import", 0, END_MS), now)
    row["results"] = len(full_results)
    row["encode_all_cpu"] = encode_cpu(full_results)
    row["cache_mb"] = cache.stats().l1_bytes / 2**20
    if full_only:
        return row
    appends: list[tuple[float, int, str, list[dict[str, Any]]]] = []
    for seq, new in enumerate(append_batches(list(source.events), n), start=2):
        source.append(new, seq)
        c = claim(seq, "import", new[0].watched_at_ms, new[-1].watched_at_ms, len(new))
        appends.append(measure_results(rc, source, c, now))
    row["first_append_cpu"], row["second_append_cpu"] = appends[0][0], appends[1][0]
    row["append_cpu"] = steady_cpu([a[0] for a in appends])
    row["append_read"], row["append_plan"] = appends[-1][1], appends[-1][2]
    row["states_mb"] = kept_state_mib(rc)
    changed = changed_results(appends[-2][3], appends[-1][3])
    row["append_changed"] = len(changed)
    row["encode_changed_cpu"] = encode_cpu(changed)
    old_lo, old_hi = month_bounds_ms(local_month_of(source.ts[0], zone) + 3, zone)
    source.keep(lambda e: not old_lo <= e.watched_at_ms <= old_hi)
    row["delete_cpu"], row["delete_read"], row["delete_plan"] = measure(
        rc, source, claim(2 + APPENDS, "delete", old_lo, old_hi), now
    )
    return row


def peak_rss(n: int, frame_cache_mib: int | None = None) -> dict[str, Any]:
    """Write a size-n history to a page file (one child), run the worker on it (another: ``worker_from_file``,
    with ``WORKER_FRAME_CACHE_MAX_BYTES`` set from ``frame_cache_mib`` when given)."""
    here = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "history.pages")
        prelude = f"import sys, json; sys.path.insert(0, {here!r}); import bench_incremental as b; "
        subprocess.run([sys.executable, "-c", prelude + f"b.write_history({n}, {path!r})"], check=True)
        code = prelude + f"print(json.dumps(b.worker_from_file({path!r})))"
        env = dict(os.environ)
        if frame_cache_mib is not None:
            env["WORKER_FRAME_CACHE_MAX_BYTES"] = str(frame_cache_mib * 2**20)
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def ratio(full: int, part: int) -> str:
    """Return ``full / part`` formatted, or "0 read" when nothing had to be read (no finite ratio)."""
    return "0 read" if part == 0 else f"{full / part:.1f}"


def parse_args(argv: list[str]) -> tuple[list[int], bool, int | None]:
    """Return ``(sizes, rss_only, frame_cache_mib)`` from the command line (default sizes 10k and 100k events)."""
    parser = argparse.ArgumentParser(
        prog="bench_incremental.py", description="Full vs incremental recompute through the partition path."
    )
    parser.add_argument(
        "sizes", nargs="*", type=int, metavar="EVENTS", help="history sizes in events (default: 10000 100000)"
    )
    parser.add_argument(
        "--rss-only", action="store_true", help="only measure the peak RSS in a child process (for large sizes)"
    )
    parser.add_argument(
        "--frame-cache-mib",
        type=int,
        default=None,
        metavar="MIB",
        help="WORKER_FRAME_CACHE_MAX_BYTES in MiB (default: the worker's): the frame and its incremental states",
    )
    args = parser.parse_args(argv)
    sizes: list[int] = args.sizes
    if any(n < MIN_EVENTS for n in sizes):
        parser.error(f"sizes must be at least {MIN_EVENTS} (the appended views copy the history's own)")
    if args.frame_cache_mib is not None and args.frame_cache_mib < 0:
        parser.error("--frame-cache-mib must not be negative")
    return sizes or [10_000, 100_000], bool(args.rss_only), args.frame_cache_mib


def print_worker_rows(workers: dict[int, dict[str, Any]]) -> None:
    """Print the worker-process measurements (``worker_from_file``) per size."""
    print("Worker process with the worker's settings (the defaults, WORKER_* from the environment and the frame")
    print("cache above; pages read from a file, decoding them excluded), called as the runner calls it: full")
    print("recompute, then the same appends. Peak RSS (VmHWM): of the full recompute, of the first two appends")
    print("(they build the states) and of the later appends alone (steady)")
    header = (
        f"{'events':>9} {'full s':>7} {'read':>8} {'RSS MiB':>7} | {'1st app s':>9} {'2nd app s':>9} {'append s':>8}"
        f" {'cpu x':>6} {'stateMiB':>8} {'RSS 1-2':>7} {'steady':>7}"
    )
    print(header)
    print("-" * len(header))
    for n, w in workers.items():
        cpu = w["append_cpu"]
        steady = steady_cpu(cpu)
        print(
            f"{n:>9} {w['cpu']:>7.3f} {int(w['read']):>8} {w['rss']:>7.1f} | {cpu[0]:>9.3f} {cpu[1]:>9.3f}"
            f" {steady:>8.3f} {w['cpu'] / steady:>6.1f} {w['states_mb']:>8.1f} {w['rss_build']:>7.1f}"
            f" {w['rss_appends']:>7.1f}{'' if w['rss_reset'] else ' (peak not reset: over every append)'}"
        )


def main(argv: list[str]) -> int:
    sizes, rss_only, frame_cache_mib = parse_args(argv)
    budget = load_settings(convex_url="http://127.0.0.1:9", convex_admin_key="k", heartbeat_file=None)
    mib = frame_cache_mib if frame_cache_mib is not None else budget.frame_cache_max_bytes // 2**20
    print("Recomputer partition path, 14 types x 18 eager filter sets")
    print(f"frame cache (frames + incremental states): {mib} MiB")
    if rss_only:
        print_worker_rows({n: peak_rss(n, frame_cache_mib) for n in sizes})
        return 0
    configure_gc(gen0_threshold=budget.gc_gen0_threshold)  # as python -m worker run does at start-up
    print("In-process, in-memory event source (Convex transfer excluded; CPU = time.process_time; RSS = the")
    print("worker-process peak of the full recompute, below)")
    header = (
        f"{'events':>9} {'full s':>7} {'read':>8} {'RSS MiB':>7} {'cacheMiB':>8} | {'1st app s':>9} {'2nd app s':>9}"
        f" {'append s':>8} {'read':>6} {'cpu x':>6} {'read x':>7} {'stateMiB':>8} |"
        f" {'del s':>6} {'read':>6} {'cpu x':>6} {'read x':>7}"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    workers: dict[int, dict[str, Any]] = {}
    for n in sizes:
        r = run(n, frame_cache_mib=frame_cache_mib)
        rows.append(r)
        workers[n] = peak_rss(n, frame_cache_mib)
        rss = workers[n]["rss"]
        print(
            f"{n:>9} {r['full_cpu']:>7.3f} {r['full_read']:>8} {rss:>7.1f} {r['cache_mb']:>8.1f} |"
            f" {r['first_append_cpu']:>9.3f} {r['second_append_cpu']:>9.3f} {r['append_cpu']:>8.3f}"
            f" {r['append_read']:>6} {r['full_cpu'] / r['append_cpu']:>6.1f}"
            f" {r['full_read'] / max(r['append_read'], 1):>7.1f} {r['states_mb']:>8.1f} |"
            f" {r['delete_cpu']:>6.3f} {r['delete_read']:>6} {r['full_cpu'] / r['delete_cpu']:>6.1f}"
            f" {ratio(int(r['full_read']), int(r['delete_read'])):>7}   ({r['append_plan']}, {r['delete_plan']})"
        )
    print()
    print("Storing (not in the CPU above): the runner encodes every result for worker:storeAggregations")
    print("(canonical JSON + hash, best of 3) and uploads only those whose hash changed; after the append:")
    print(f"{'events':>9} {'results':>7} {'all s':>7} | {'changed':>7} {'changed s':>9} {'full ÷':>7}")
    for r in rows:
        print(
            f"{r['n']:>9} {r['results']:>7} {r['encode_all_cpu']:>7.3f} | {r['append_changed']:>7}"
            f" {r['encode_changed_cpu']:>9.4f} {r['full_cpu'] / r['encode_changed_cpu']:>7.1f}"
        )
    print()
    print_worker_rows(workers)
    floor = floor_cpu()
    print()
    print(f"Fixed cost: the same append to a {FLOOR_EVENTS}-view history takes {floor:.4f} s (best of 3): producing")
    print("the results by itself. Full recompute ÷ that cost, the best append ratio reachable while every")
    print("result of the touched filter bases is rebuilt:")
    print("   ".join(f"{r['n']}: {r['full_cpu'] / floor:.1f}x" for r in rows))
    print()
    print("A deleted month reads 0 documents (read x = 0 read): its range is read again and is empty.")
    print("cacheMiB = the L1 partition cache after the full recompute; (append plan, delete plan) at the end of")
    print("a row = the plan the append and the delete recomputes followed; full ÷ = full recompute CPU ÷ encoding the")
    print("changed results.")
    print("1st app s = the first append after the full recompute (it builds the engine's incremental states);")
    print("2nd app s = the next (their first extension, which builds the distinct-count tables); append s =")
    print("the median of the next three (steady state), which the ratios use. stateMiB = the engine state kept")
    print("with the frame after them: the incremental states, or, when they did not fit the frame cache beside")
    print("the frame, only the session pairs kept with it (appends then recompute every type on the kept frame).")
    print("cpu x / read x = full ÷ incremental (higher is better). Targets: full 100k <= 1 s CPU;")
    print("append cost <= 1/50 of full (x >= 50) in CPU and documents read; peak RSS <= 200 MB at 1M")
    print("(RSS and cache sizes are MiB: the 200 MB target is 190.7 MiB).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
