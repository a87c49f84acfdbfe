"""Line framing of one connection's input, with length limits and flow control, and
the STARTTLS switch that drops whatever was pipelined behind the command.

Every front end reads commands the same way: bytes accumulate in one buffer; a line
ends at LF (a CR before it is dropped); a line longer than the limit is reported once
and the rest of it, up to its LF, is skipped, so the tail of an over-long line is
never run as a command.  Raw reads (IMAP literals, SMTP DATA chunks) take bytes from
the same buffer, so switching between lines and raw data never loses or reorders
input.  While a command waits on a Deferred its successors stay buffered (replies
keep their order); past ``max_buffered`` bytes the transport is paused so a client
cannot grow the buffer without bound.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

log = Logger(namespace="mailsuite.frontend")


class _TooLong:
    def __repr__(self) -> str:
        return "TOO_LONG"


TOO_LONG: Any = _TooLong()  # next_line()'s answer for a line over the limit


class LineBuffer:
    """The buffered input of one connection; see the module docstring.

    ``max_line`` bounds a line without its CRLF; ``max_buffered`` is how much input may
    wait while a command runs before the transport is paused."""

    __slots__ = ("buf", "max_line", "max_buffered", "_skipping", "paused", "head")

    def __init__(self, max_line: int, max_buffered: int) -> None:
        self.buf = bytearray()
        self.max_line = max_line
        self.max_buffered = max_buffered
        self._skipping = False  # inside the tail of an over-long line
        self.paused = False
        self.head = b""  # the start of the last over-long line (IMAP answers its tag)

    def __len__(self) -> int:
        return len(self.buf)

    def __bool__(self) -> bool:
        return bool(self.buf)

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next_line(self) -> Any:
        """The next line (bytes, without CR LF), None if no whole line is buffered, or
        TOO_LONG once for a line over ``max_line`` (the rest of it is then skipped)."""
        buf = self.buf
        while True:
            i = buf.find(b"\n")
            if i < 0:
                # Room for the CRLF: a line of exactly max_line may still be whole.
                if len(buf) > self.max_line + 2:
                    if not self._skipping:
                        self.head = bytes(buf[:200])
                    buf.clear()
                    if not self._skipping:
                        self._skipping = True
                        return TOO_LONG
                return None
            line = bytes(buf[:i])
            del buf[: i + 1]
            if self._skipping:
                self._skipping = False
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line:
                self.head = line[:200]
                return TOO_LONG
            return line

    def take(self, n: int) -> bytes:
        """Up to ``n`` raw bytes (a literal's next part)."""
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def take_all(self) -> bytes:
        """Every buffered byte (DATA is parsed in chunks by its own reader)."""
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def unread(self, data: bytes) -> None:
        """Put back bytes a raw reader did not consume (what follows the end of DATA)."""
        if data:
            self.buf[:0] = data

    def discard(self) -> int:
        """Drop everything buffered; returns how many bytes that was."""
        n = len(self.buf)
        self.buf.clear()
        self._skipping = False
        return n

    def hold(self, transport: Any, busy: bool) -> None:
        """Pause reading while ``busy`` and more than ``max_buffered`` bytes wait;
        resume otherwise.  Call after each round of processing."""
        want = busy and len(self.buf) > self.max_buffered
        if want != self.paused and transport is not None:
            self.paused = want
            (transport.pauseProducing if want else transport.resumeProducing)()


def start_tls(transport: Any, context: Any, buffer: LineBuffer, proto: str, ip: str) -> None:
    """Switch ``transport`` to TLS after the protocol's go-ahead answer was written.

    Bytes the client pipelined behind STARTTLS/STLS arrived in plaintext: run inside
    the TLS session they would let a man in the middle inject commands
    (CVE-2011-0411 class; RFC 3207 4.2, RFC 2595 3.1), so they are dropped."""
    n = buffer.discard()
    if n:
        log.warn("{proto}: [{ip}] discarded {n} bytes pipelined after STARTTLS", proto=proto, ip=ip, n=n)
    transport.startTLS(context)
