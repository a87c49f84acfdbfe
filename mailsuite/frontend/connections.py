"""Per-IP connection limits and TCP_NODELAY, for every listener.

One :class:`ConnectionCounts` is shared by the listeners of one role (587 and 465
together, 110 and 995 together), so a client cannot double its share by using both
ports.  ``admit(ip, limit)`` returns a :class:`Slot` the connection releases when it
closes (releasing twice is harmless), or None when the IP is at its limit.
"""

from __future__ import annotations

import socket
from typing import Any


class Slot:
    """One admitted connection's place in its IP's count."""

    __slots__ = ("_counts", "ip")

    def __init__(self, counts: "ConnectionCounts", ip: str) -> None:
        self._counts: ConnectionCounts | None = counts
        self.ip = ip

    def release(self) -> None:
        counts, self._counts = self._counts, None
        if counts is not None:
            counts._release(self.ip)


class ConnectionCounts:
    """Open connections per client IP."""

    def __init__(self) -> None:
        self.per_ip: dict[str, int] = {}

    def admit(self, ip: str, limit: int) -> Slot | None:
        n = self.per_ip.get(ip, 0)
        if n >= limit:
            return None
        self.per_ip[ip] = n + 1
        return Slot(self, ip)

    def _release(self, ip: str) -> None:
        n = self.per_ip.get(ip, 0) - 1
        if n <= 0:
            self.per_ip.pop(ip, None)
        else:
            self.per_ip[ip] = n

    def __getitem__(self, ip: str) -> int:
        return self.per_ip.get(ip, 0)


def _tcp_transport(transport: Any) -> Any:
    """The TCP transport under any TLS/gate wrappers (the one with setTcpNoDelay)."""
    for _ in range(8):
        if transport is None or hasattr(transport, "setTcpNoDelay"):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def set_no_delay(transport: Any) -> None:
    """TCP_NODELAY on the socket under any TLS/gate wrappers: without it a reply that
    follows a small write waits for the peer's delayed ACK (~40 ms, DESIGN.md)."""
    tcp = _tcp_transport(transport)
    if tcp is not None:
        try:
            tcp.setTcpNoDelay(True)
        except (OSError, socket.error):
            pass


def ack_now(transport: Any) -> None:
    """Acknowledge what was received at once (TCP_QUICKACK, Linux), for a client
    that waits for that ACK before it sends the rest of a command.

    Why: imaplib (and clients like it) sends a literal and the CRLF that ends the
    command in two writes without TCP_NODELAY; Nagle holds the CRLF until the literal
    is ACKed, and the server, with nothing to answer yet, delays that ACK for up to
    40 ms, once per APPEND: 300 APPENDs with imaplib took 13.7 s, 0.48 s with this.
    QUICKACK lasts only until the kernel's next decision, so it is set each time, and
    only when a command waits for its end."""
    tcp = _tcp_transport(transport)
    sock = getattr(tcp, "socket", None)
    if sock is None or not hasattr(socket, "TCP_QUICKACK"):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    except OSError:
        pass