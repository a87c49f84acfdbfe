"""The C heap (glibc malloc) of a long-running server process: fewer arenas, and free
pages handed back to the system every 30 seconds.

Python's own small objects live in pymalloc's arenas, but everything over 512 bytes
(message data, file reads, OpenSSL's buffers) comes from malloc.  glibc gives each
thread that calls malloc an arena of its own, up to eight per core, and keeps the
pages of freed chunks resident: it only gives back the free space at the top of a
heap.  Under the soak (tests/test_soak.py) the workers' heaps grew that way while
the Python objects did not: in 150 s after warm-up a worker's RSS grew 10.2 MiB, its
malloc arenas 10.3 MiB, of which 7.5 MiB free chunks, while the memory traced by
tracemalloc grew 2.5 MiB (1.9 of it the interned-string table growing once).

So every server process (parent, workers, single) calls :func:`limit_arenas` when it
builds its services (threads in this program allocate under the GIL, so more arenas
buy no parallelism, only more heaps to fragment) and runs a :class:`HeapTrimmer`,
which calls ``malloc_trim(0)`` every :data:`TRIM_INTERVAL` seconds: glibc then
returns every whole free page of every arena (``madvise(MADV_DONTNEED)``), so the
RSS follows what is in use.  Neither does anything where the C library is not glibc.

Python's cyclic garbage collector is tuned too (:func:`tune_gc`).  With its default
thresholds (700, 10, 10) a young collection runs every 700 container allocations, so
the 100,000 ``(seq, record)`` pairs of one ``UID FETCH 1:* (FLAGS)`` on a 100,000-message
folder are promoted while the command builds them, and the oldest generation, which
holds every loaded folder's records, is walked again every command or two: that
command took 185 ms against Dovecot's 54, of which 100 ms were full collections
(a list of 100,000 pairs took 100 ms to build with the defaults, 10 ms with
50,000 allocations between young collections).  Cyclic garbage waits longer for its
collection; nothing else changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Any, Callable

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

log = Logger(namespace="mailsuite.heap")

M_ARENA_MAX = -8  # glibc's mallopt() parameter number
ARENAS = 2
TRIM_INTERVAL = 30.0


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):  # not glibc (musl has neither function)
        return None


_LIBC = _glibc()


def limit_arenas(n: int = ARENAS) -> bool:
    """At most ``n`` malloc arenas from now on (arenas that exist stay); False where
    it cannot be set."""
    return bool(_LIBC is not None and _LIBC.mallopt(M_ARENA_MAX, n) == 1)


# Allocations between young collections; young collections between middle ones;
# middle ones between full ones (each full one also waits until a quarter of the old
# generation is new, Python's own rule).  See the module docstring.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Collect cyclic garbage less often (see the module docstring)."""
    gc.set_threshold(*thresholds)


def trim() -> bool:
    """Give the free pages of every arena back to the system; True if any was."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


class HeapTrimmer(service.Service):
    """Calls ``trim`` every ``interval`` seconds while running (see the module
    docstring)."""

    name = "heap"

    def __init__(self, clock: Any, interval: float = TRIM_INTERVAL, trim: Callable[[], Any] = trim) -> None:
        self.clock = clock
        self.interval = interval
        self.trim = trim
        self._loop: task.LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        if _LIBC is None and self.trim is trim:
            return
        self._loop = task.LoopingCall(self.trim)
        self._loop.clock = self.clock
        d = self._loop.start(self.interval, now=False)
        d.addErrback(lambda f: log.failure("heap: malloc_trim failed", f))

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
