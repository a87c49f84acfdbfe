"""A worker's log reaches the parent in batches: info lines wait at most DELAY,
a warning, a full batch, a line from another thread and a flush send everything
at once, in the order it was logged."""

from __future__ import annotations

import json
import os
import threading

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger

from mailsuite.process.logbatch import BatchedLogPipe


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    clock = Clock()
    yield BatchedLogPipe(w, clock, delay=0.05, limit=4096), clock, r
    os.close(r)
    os.close(w)


def received(fd: int) -> list[str]:
    """The messages written so far, as the parent would parse them."""
    try:
        data = os.read(fd, 1 << 20)
    except BlockingIOError:
        return []
    records = data.decode("utf-8").split("\x1e")
    return [json.loads(rec)["log_format"] for rec in records if rec]


def log_to(observer) -> Logger:
    return Logger(namespace="test.logbatch", observer=observer)


def test_info_lines_wait_for_the_delay_then_go_together_in_order(pipe):
    observer, clock, r = pipe
    log = log_to(observer)
    for i in range(3):
        log.info(f"line {i}")
    assert received(r) == []
    clock.advance(0.049)
    assert received(r) == []
    clock.advance(0.002)
    assert received(r) == ["line 0", "line 1", "line 2"]


def test_a_warning_sends_everything_at_once(pipe):
    observer, clock, r = pipe
    log = log_to(observer)
    log.info("before")
    log.warn("trouble")
    assert received(r) == ["before", "trouble"]
    clock.advance(1)
    assert received(r) == []


def test_a_full_batch_goes_at_once(pipe):
    observer, clock, r = pipe
    log = log_to(observer)
    for i in range(30):  # about 15 KB: within the pipe's buffer, over the 4 KiB limit
        log.info(f"line {i:03d} " + "x" * 40)
    got = received(r)
    assert len(got) >= 5 and got[0].startswith("line 000")
    clock.advance(1)
    got += received(r)
    assert got == [f"line {i:03d} " + "x" * 40 for i in range(30)]


def test_a_line_from_another_thread_goes_at_once(pipe):
    observer, clock, r = pipe
    log = log_to(observer)
    log.info("reactor line")
    t = threading.Thread(target=lambda: log.info("thread line"))
    t.start()
    t.join()
    assert received(r) == ["reactor line", "thread line"]


def test_flush_at_shutdown_sends_what_waits(pipe):
    observer, clock, r = pipe
    log_to(observer).info("last words")
    observer.flush()
    assert received(r) == ["last words"]


def test_a_gone_parent_does_not_break_the_worker(pipe):
    observer, clock, r = pipe
    log = log_to(observer)
    r2, w2 = os.pipe()
    os.close(r2)
    observer.fd = w2
    log.error("nobody listens")  # EPIPE is swallowed (SIGPIPE is ignored by Python)
    os.close(w2)
