"""Slow clients: a deadline per request, stretched by a minimum data rate.

The idle timeouts measure silence only, so a client sending one byte a second kept
a connection (and its buffers) forever (issue 16 finding 9).  As Postfix does with
``smtpd_per_request_deadline`` and ``smtpd_min_data_rate``, a request (a command
line, an SMTP DATA body, an IMAP literal) must arrive completely within
``deadline + bytes received / min_rate`` seconds of its first byte: a big message
over a slow but honest link gets the time its size needs, a trickle does not.

Only the client's own time counts: while the server works on a command (a directory
lookup, an fsync) with input waiting, no request is open.  A protocol calls
``received(n)`` for each chunk read and ``open(is_open)`` after each round of
processing (is a request partly received and waiting for more?); ``on_expired`` is
called once when a request overruns, and the protocol answers and closes.
``deadline = 0`` turns the check off.
"""

from __future__ import annotations

from typing import Any, Callable


class RequestDeadline:
    """See the module docstring."""

    def __init__(self, deadline: float, min_rate: float, on_expired: Callable[[], None], clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self.clock = clock
        self.deadline = deadline
        self.min_rate = min_rate
        self.on_expired = on_expired
        self._started: float | None = None  # when the open request's first byte came
        self._bytes = 0
        self._last_chunk = 0
        self._call: Any = None

    def received(self, n: int) -> None:
        if self._started is None:
            self._last_chunk = n
        else:
            self._bytes += n

    def open(self, is_open: bool) -> None:
        """After processing: is a request partly received?"""
        if not self.deadline:
            return
        if not is_open:
            self._started = None
            self._bytes = 0
            self._cancel()
            return
        if self._started is None:
            self._started = self.clock.seconds()
            self._bytes = self._last_chunk
        if self._call is None:
            self._schedule()

    def stop(self) -> None:
        self._started = None
        self._cancel()

    def _allowed_until(self) -> float:
        assert self._started is not None
        extra = self._bytes / self.min_rate if self.min_rate > 0 else 0.0
        return self._started + self.deadline + extra

    def _schedule(self) -> None:
        delay = max(0.0, self._allowed_until() - self.clock.seconds())
        self._call = self.clock.callLater(delay, self._check)

    def _check(self) -> None:
        self._call = None
        if self._started is None:
            return
        if self.clock.seconds() < self._allowed_until():
            self._schedule()  # bytes came meanwhile: the deadline moved
            return
        self._started = None
        self.on_expired()

    def _cancel(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
