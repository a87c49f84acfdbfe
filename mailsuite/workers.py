"""The thread pool for blocking work: fsync, password hashing, directory lookups.

The reactor thread never waits on these (DESIGN.md rule 2).  Running fsyncs from
several threads also lets the filesystem commit concurrent sessions together.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

_size = 16
_pool: ThreadPool | None = None


def configure(size: int) -> None:
    """Set the pool size; takes effect if the pool has not started yet."""
    global _size
    _size = size
    if _pool is not None:
        _pool.adjustPoolsize(minthreads=0, maxthreads=size)


def pool() -> ThreadPool:
    global _pool
    if _pool is None:
        _pool = ThreadPool(minthreads=0, maxthreads=_size, name="mailsuite-io")
        _pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", _stop)  # type: ignore[attr-defined]
    return _pool


def _stop() -> None:
    global _pool
    if _pool is not None:
        _pool.stop()
        _pool = None


class _Idle:
    idleWorkerCount = busyWorkerCount = backloggedWorkCount = 0


def statistics() -> Any:
    """Busy threads and waiting jobs (``busyWorkerCount``, ``backloggedWorkCount``)."""
    if _pool is None:
        return _Idle()
    return _pool._team.statistics()  # noqa: SLF001 - ThreadPool exposes no public counter


def run(f: Callable[..., T], *args: Any, **kwargs: Any) -> "Deferred[T]":
    """Run ``f`` in the pool; the Deferred fires in the reactor thread."""
    return deferToThreadPool(reactor, pool(), f, *args, **kwargs)
