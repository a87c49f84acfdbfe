"""A line-oriented client socket, the base of the raw protocol clients: exact bytes out,
CRLF lines and counted bytes in, and "did the server close?" with a deadline; and the
splitting of a byte stream into the chunks TCP might deliver."""

from __future__ import annotations

import socket


def closed(sock: socket.socket, wait: float) -> bool:
    """True if the peer closes (or resets) ``sock`` within ``wait`` seconds; whatever it
    sends before closing is read and dropped."""
    sock.settimeout(wait)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:  # socket.timeout
        return False
    except OSError:  # an abort arrives as a reset (ssl.SSLError is an OSError too)
        return True


class LineClient:
    """A connected socket with a read buffer; subclasses speak one protocol over it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by server; pending {self.buf!r}")
        self.buf += chunk

    def line(self) -> bytes:
        """The next line, without its CRLF."""
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def closed_by_server(self, wait: float = 5.0) -> bool:
        return closed(self.sock, wait)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "LineClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the positions ``cuts`` (taken modulo its length + 1), as TCP
    might deliver it; hypothesis draws the cuts."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out
