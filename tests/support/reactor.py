"""How long the reactor was held: for tests that prove blocking work stays off it."""

from __future__ import annotations

import time

from twisted.internet import task


class StallMeter:
    """Ticks every ``interval`` seconds on the running reactor and keeps the gaps
    between ticks; the longest gap is the longest the reactor was blocked."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.gaps: list[float] = []
        self._last = 0.0
        self._loop = task.LoopingCall(self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        self.gaps.append(now - self._last)
        self._last = now

    def start(self) -> "StallMeter":
        self._last = time.monotonic()
        self._loop.start(self.interval)
        return self

    def stop(self) -> float:
        """Stop ticking; the longest gap in seconds."""
        if self._loop.running:
            self._loop.stop()
        return max(self.gaps)
