"""The C heap of a server process (mailsuite/heap.py): freed malloc memory goes back to
the system every 30 seconds, so the resident memory follows what is in use and does not
creep with fragmentation (issue 16's soak: RSS flat after warm-up); and Python's
collector does not walk every loaded folder's records while one command builds a
big answer."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
from twisted.internet import task
from twisted.internet.testing import MemoryReactorClock

from mailsuite import config as config_mod
from mailsuite import heap
from mailsuite.service import build_service
from tests.support.server import make_server

glibc_only = pytest.mark.skipif(heap._LIBC is None, reason="malloc_trim is glibc's")


def rss_anon_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@glibc_only
def test_trim_gives_the_free_pages_of_a_fragmented_arena_back() -> None:
    # 64 MiB of 2 KiB blocks (malloc's, not pymalloc's: over 512 bytes) allocated in
    # a thread, as the I/O pool does; one in 64 stays, so every run of free chunks
    # is pinned between two live ones and glibc's own trimming (the top of a heap
    # only) gives back nothing.
    kept: list[bytes] = []
    freed_rss: list[int] = []

    def fragment() -> None:
        blocks = [bytes(2048) + i.to_bytes(4, "big") for i in range(32768)]
        kept.extend(blocks[::64])
        del blocks
        freed_rss.append(rss_anon_kb())

    t = threading.Thread(target=fragment)
    t.start()
    t.join()
    before = freed_rss[0]
    heap.trim()
    after = rss_anon_kb()
    assert before - after > 32 * 1024, (before, after)
    assert len(kept) == 512


def test_the_trimmer_trims_every_interval_while_running() -> None:
    clock = task.Clock()
    calls: list[float] = []
    trimmer = heap.HeapTrimmer(clock, interval=60, trim=lambda: calls.append(clock.seconds()))
    trimmer.startService()
    clock.advance(59)
    assert calls == []
    for step in (1, 60, 60):
        clock.advance(step)
    assert calls == [60, 120, 180]
    trimmer.stopService()
    clock.advance(600)
    assert calls == [60, 120, 180]


@pytest.mark.parametrize("processes", [1, 2])
def test_every_server_process_runs_the_trimmer(tmp_path: Path, processes: int) -> None:
    # build_service builds the single process, the parent and each worker alike.
    srv = make_server(tmp_path, server={"processes": processes})
    srv.write_config()
    # A memory reactor: building the suite registers the store's inotify reader, which
    # on the global reactor outlived this test and failed the next trial test's
    # clean-reactor check.
    top, _suite = build_service(config_mod.load(str(srv.config_path)), MemoryReactorClock())
    trimmer = top.getServiceNamed("heap")
    assert isinstance(trimmer, heap.HeapTrimmer) and trimmer.interval == heap.TRIM_INTERVAL


def test_every_server_process_tunes_the_collector(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    srv.write_config()
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        build_service(config_mod.load(str(srv.config_path)), MemoryReactorClock())
        assert gc.get_threshold() == heap.GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)


def test_with_the_tuned_collector_a_big_answer_does_not_walk_the_old_objects() -> None:
    """What UID FETCH 1:* (FLAGS) does on a 100,000-message folder: build 100,000
    (seq, record) pairs while 100,000 records (and a server's other objects) are
    old.  With Python's defaults every other such list set off a full collection."""
    before = gc.get_threshold()
    records = [(i, f"name{i}:2,S", frozenset({"\\Seen"})) for i in range(100_000)]
    others = [{"k": [i]} for i in range(200_000)]
    gc.collect()
    try:
        heap.tune_gc()
        full_before = gc.get_stats()[2]["collections"]
        for _ in range(10):
            pairs = [(n, records[n]) for n in range(len(records))]
            del pairs
        assert gc.get_stats()[2]["collections"] - full_before <= 1
    finally:
        gc.set_threshold(*before)
        del records, others
