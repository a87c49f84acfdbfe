"""The threads that mail authentication's CPU work runs in (DKIM signing and
verifying, SPF evaluation, ARC sealing).

Its own small pool rather than the suite's worker pool: that one is full of fsyncs
under load (each takes milliseconds to hundreds of milliseconds on a busy disk), and a
signature check queued behind them would add their latency to every message, while
the check itself needs about a millisecond of CPU.  A few threads are enough (the GIL
serialises most of the work); SPF lookups that miss the DNS cache wait in them too.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool


class AuthPool:
    def __init__(self, reactor: Any, threads: int = 4) -> None:
        self.reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=max(1, threads), name="mailsuite-auth")
        self._started = False

    def run(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        """Run ``f`` in the pool; the Deferred fires in the reactor thread."""
        if not self._started:
            self._started = True
            self._pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        return deferToThreadPool(self.reactor, self._pool, f, *args, **kwargs)

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._pool.stop()
