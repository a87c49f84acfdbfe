"""IMAP COMPRESS=DEFLATE (RFC 4978): raw deflate in both directions of a connection.

After the tagged OK of ``COMPRESS DEFLATE`` every byte each way is a raw deflate
stream (RFC 1951, zlib ``wbits=-15``), over TLS when TLS is on (STARTTLS or the
implicit-TLS port: compression sits above it, RFC 4978 3).

Out: :class:`DeflatingTransport` stands in for the protocol's transport; each write
(or writeSequence) is compressed and ends with a ``Z_SYNC_FLUSH`` so the client can
read every response at once (RFC 4978 4).  Everything else (loseConnection, producers,
getPeer...) goes to the transport below.

In: :class:`Inflater` turns what arrives into plain input for the protocol a chunk at
a time (at most ``CHUNK`` bytes), and stops while the protocol holds its input (a
command running and ``MAX_BUFFERED`` bytes waiting: the transport is then paused),
continuing when the protocol resumes the transport.  So the memory a connection
holds stays what it was without compression: a few KiB of compressed input that
arrived before the pause, one chunk, and the protocol's own bounded buffer.  Input
that inflates more than ``RATIO`` times beyond its first ``FLOOR`` bytes is a
decompression bomb: it is answered ``* BYE`` and the connection closed, with a log
line.  (Text mail compresses 3-10 times and base64 attachments barely at all.)
A stream that is not valid deflate closes the connection the same way.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable

from twisted.logger import Logger

log = Logger(namespace="mailsuite.imap")

CHUNK = 64 * 1024  # inflated bytes handed to the protocol at a time
FLOOR = 1024 * 1024  # inflated bytes allowed before the ratio applies
RATIO = 200  # inflated bytes per compressed byte that no real mail reaches


class DecompressionError(Exception):
    """The input is no deflate stream, or a bomb (``bomb`` is True)."""

    def __init__(self, message: str, bomb: bool = False) -> None:
        super().__init__(message)
        self.bomb = bomb


class DeflatingTransport:
    """The protocol's transport once compression is on (see the module docstring)."""

    def __init__(self, transport: Any, resumed: Callable[[], None]) -> None:
        self._transport = transport
        self._z = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._resumed = resumed
        self.bytes_in = 0  # uncompressed bytes written, for the log line at the end
        self.bytes_out = 0

    def write(self, data: bytes) -> None:
        out = self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)
        self.bytes_in += len(data)
        self.bytes_out += len(out)
        self._transport.write(out)

    def writeSequence(self, pieces: list[bytes]) -> None:
        out = [self._z.compress(p) for p in pieces]
        out.append(self._z.flush(zlib.Z_SYNC_FLUSH))
        self.bytes_in += sum(len(p) for p in pieces)
        self.bytes_out += sum(len(p) for p in out)
        self._transport.writeSequence(out)

    def resumeProducing(self) -> None:
        # The protocol takes input again: first what the Inflater held back.
        self._transport.resumeProducing()
        self._resumed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class Inflater:
    """Inflates one connection's input; see the module docstring.

    ``deliver(chunk)`` gives plain input to the protocol; ``held()`` says whether the
    protocol wants no more for now."""

    def __init__(self, deliver: Callable[[bytes], None], held: Callable[[], bool]) -> None:
        self._z = zlib.decompressobj(-15)
        self._deliver = deliver
        self._held = held
        self._pending = b""
        self._pumping = False
        self.total_in = 0
        self.total_out = 0

    def feed(self, data: bytes) -> None:
        """Compressed bytes as they arrived.  DecompressionError for a broken stream
        or a bomb."""
        self.total_in += len(data)
        self._pending += data
        self.pump()

    def pump(self) -> None:
        if self._pumping:
            return  # the loop below is running further up the stack and goes on
        self._pumping = True
        try:
            while self._pending and not self._held():
                try:
                    out = self._z.decompress(self._pending, CHUNK)
                except zlib.error as e:
                    self._pending = b""
                    raise DecompressionError(f"invalid deflate data ({e})") from None
                self._pending = self._z.unconsumed_tail
                if self._z.eof:
                    # The client ended its deflate stream (it may not: RFC 4978 has
                    # no way back to plain text): whatever follows is not ours.
                    self._pending = b""
                    if self._z.unused_data:
                        raise DecompressionError("data after the end of the deflate stream")
                self.total_out += len(out)
                if self.total_out > FLOOR + RATIO * self.total_in:
                    self._pending = b""
                    raise DecompressionError(
                        f"{self.total_in} compressed bytes inflate to more than {self.total_out}", bomb=True)
                if out:
                    self._deliver(out)
        finally:
            self._pumping = False
