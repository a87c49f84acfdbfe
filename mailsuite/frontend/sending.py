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

