"""The thread pool for blocking work: fsync, password hashing, directory lookups.

The reactor thread never waits on these (DESIGN.md rule 2).  Running fsyncs from
several threads also lets the filesystem commit concurrent sessions together.

``mailsuite/service.py`` builds one :class:`WorkerPool` per process and passes it to
every part that blocks (store, file directory, queue, IMAP search); there is no
module-level pool.  Tests and the synchronous CLI pass :class:`InlineWorkers`, which
runs the work at once in the caller's thread.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

T = TypeVar("T")


class IWorkers(Interface):
    def run(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        """Run blocking ``f(*args, **kwargs)`` off the reactor thread; the Deferred
        fires in the reactor thread with its result or failure."""

    def statistics() -> Any:
        """Busy threads and waiting jobs (``busyWorkerCount``, ``backloggedWorkCount``,
        ``idleWorkerCount``), for the metrics."""


class _Idle:
    idleWorkerCount = busyWorkerCount = backloggedWorkCount = 0


@implementer(IWorkers)
class WorkerPool:
    """A Twisted ThreadPool of at most ``size`` threads, started on first use and
    stopped when ``reactor`` shuts down."""

    def __init__(self, reactor: Any, size: int = 16, name: str = "mailsuite-io") -> None:
        self.reactor = reactor
        self.size = size
        self.name = name
        self._pool: ThreadPool | None = None

    def run(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> "Deferred[T]":
        return deferToThreadPool(self.reactor, self._started(), f, *args, **kwargs)

    def _started(self) -> ThreadPool:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=self.size, name=self.name)
            self._pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        return self._pool

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool = None

    def statistics(self) -> Any:
        if self._pool is None:
            return _Idle()
        return self._pool._team.statistics()  # noqa: SLF001 - ThreadPool exposes no public counter


@implementer(IWorkers)
class InlineWorkers:
    """Runs the work at once in the caller's thread: for tests (Deferreds fire before
    ``run`` returns) and for the command-line tools, which have no reactor running."""

    def run(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> "Deferred[T]":
        return defer.maybeDeferred(f, *args, **kwargs)

    def statistics(self) -> Any:
        return _Idle()
