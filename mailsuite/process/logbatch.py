"""A worker's log, sent to the parent in batches (descriptor 3).

Each event is one record as Twisted's ``jsonFileLogObserver`` writes it (``\\x1e``,
the JSON, a newline), which the parent reads (process/supervisor.py).  Written one
by one, every log line woke the parent: at C=1 (one SMTP session after another) the
parent, the worker and the client then took turns on 2 cores, and a message took
1789 us from connect to QUIT with 2 workers against 1561 us in one process (quiet
machine, medians of 1000 sessions).  Here lines wait up to ``DELAY`` in the worker
and go in one write; a warning or worse, 16 KiB of lines, a line logged from
another thread, and the reactor's shutdown send everything at once.  A worker
killed with -9 loses at most ``DELAY`` of info lines (its mail is on disk before
any 250: nothing else depends on them).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from twisted.logger import LogLevel, eventAsJSON

DELAY = 0.05
LIMIT = 16384


class BatchedLogPipe:
    """The worker's log observer, writing to ``fd`` (blocking) in batches."""

    def __init__(self, fd: int, reactor: Any, delay: float = DELAY, limit: int = LIMIT) -> None:
        self.fd = fd
        self.reactor = reactor
        self.delay = delay
        self.limit = limit
        self._lock = threading.Lock()
        self._buf: list[bytes] = []
        self._size = 0
        self._timer: Any = None
        self._reactor_thread = threading.get_ident()  # built in the thread that runs the reactor

    def __call__(self, event: dict[str, Any]) -> None:
        line = ("\x1e" + eventAsJSON(event) + "\n").encode("utf-8")
        level = event.get("log_level")
        in_reactor = threading.get_ident() == self._reactor_thread
        with self._lock:
            self._buf.append(line)
            self._size += len(line)
            urgent = (not in_reactor or self._size >= self.limit
                      or (level is not None and level >= LogLevel.warn))
            if not urgent and self._timer is None:
                self._timer = self.reactor.callLater(self.delay, self._timed)
        if urgent:
            self.flush()

    def _timed(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        with self._lock:
            data = b"".join(self._buf)
            self._buf, self._size = [], 0
            while data:
                try:
                    data = data[os.write(self.fd, data):]
                except InterruptedError:
                    continue
                except OSError:
                    return  # the parent is gone
