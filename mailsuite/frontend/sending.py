"""Replies sent at once on a plain TCP connection: the one place the fronts write.

``transport.write()`` only buffers: Twisted registers write interest (``epoll_ctl``),
waits for the next ``epoll_wait`` to say the socket is writable, sends, then drops the
interest again (another ``epoll_ctl``).  SMTP, POP3 and IMAP answer each command with
one small reply while the client waits, so that is a second reactor round and two
system calls per command.  :func:`send` gives the bytes straight to the socket when the
connection is plain TCP and nothing is queued before them; whatever the kernel does
not take (a full socket buffer), every write on TLS, and every write while data is
still queued (or the transport has paused its producer) goes through
``transport.write`` as before, so the order of bytes on the wire never changes and
errors are still handled (and the connection closed) by Twisted.  A registered
producer alone does not stop a direct send: with nothing queued, what it wrote has
left already (IMAP registers itself, for flow control, on every connection).

The connection is found through the ProtocolWrappers every listener adds (the
connection counter of ``metrics.py``); a TLS connection is never written to directly:
implicit TLS is a ProtocolWrapper too (TLSMemoryBIOProtocol, where the search stops),
and after STARTTLS Twisted sets ``transport.TLS``.  Measured with
smtp-source at C=1 and bench/pop3.py (commit message of this change).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import ISSLTransport
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOProtocol


def plain_tcp(transport: Any) -> tcp.Connection | None:
    """The TCP connection under ``transport`` if the bytes reach it unchanged (no TLS
    layer, only ProtocolWrappers that pass writes through), else None."""
    t = transport
    while isinstance(t, ProtocolWrapper):
        if isinstance(t, TLSMemoryBIOProtocol) or ISSLTransport.providedBy(t):
            return None  # implicit TLS: a ProtocolWrapper too, but it encrypts
        t = t.transport
    return t if isinstance(t, tcp.Connection) else None


def send(transport: Any, raw: tcp.Connection | None, data: bytes) -> None:
    """Write ``data`` on ``transport``; ``raw`` is :func:`plain_tcp` of it, found once
    per connection (None: always buffer)."""
    if (raw is not None and not raw.TLS and raw.connected and not raw.disconnecting
            and not raw._writeDisconnecting and not raw._writeDisconnected
            and not raw.producerPaused and not raw.dataBuffer and not raw._tempDataBuffer):
        try:
            sent = raw.socket.send(data)
        except OSError:  # EAGAIN, or a reset: Twisted's write path sees it and closes
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def tcp_under(transport: Any) -> tcp.Connection | None:
    """The TCP connection under ``transport``, through every wrapper, TLS included."""
    t = transport
    for _ in range(8):
        if isinstance(t, tcp.Connection):
            return t
        t = getattr(t, "transport", None)
        if t is None:
            return None
    return None


def ack_now(transport: Any) -> None:
    """Acknowledge what was received at once (TCP_QUICKACK, Linux), for a client
    that waits for that ACK before it sends the rest of a command.

    Why: imaplib (and clients like it) sends a literal and the CRLF that ends the
    command in two writes without TCP_NODELAY; Nagle holds the CRLF until the literal
    is ACKed, and the server, with nothing to answer yet, delays that ACK for up to
    40 ms, once per APPEND: 300 APPENDs with imaplib took 13 s, 0.5 s with NODELAY
    on the client.  QUICKACK lasts only until the kernel's next decision, so it is
    set each time, and only when a command waits for its end after a literal."""
    conn = tcp_under(transport)
    if conn is None or not hasattr(socket, "TCP_QUICKACK"):
        return
    try:
        conn.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    except OSError:
        pass
