"""The proxy's side towards a backend: log in as the user, then become a pipe.

:class:`BackendClient` is a line client with ``await``-able reads; the dialogues
(:func:`imap_login`, :func:`pop3_login`, :func:`submission_login`) speak each
protocol up to the end of its login, with STARTTLS first when ``[proxy]
backend_tls`` asks for it.  :func:`splice` then joins the client's transport and the
backend's, each the producer of the other (a slow reader pauses the fast writer),
and closes both when either ends.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol

MAX_LINE = 64 * 1024


class BackendError(Exception):
    """The backend could not be reached or did not behave (temporary for the client)."""


@dataclass(frozen=True)
class Backend:
    host: str
    port: int
    tls: Any  # a client TLS context (optionsForClientTLS) or None for no STARTTLS
    timeout: float


class BackendClient(protocol.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.waiting: defer.Deferred | None = None
        self.peer: Any = None  # the client's transport once spliced
        self.closed = False
        self.lost: defer.Deferred = defer.Deferred()

    # -- the login dialogue ---------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.write(data)
            return
        self.buf += data
        if len(self.buf) > MAX_LINE and b"\r\n" not in self.buf:
            self.transport.loseConnection()
            return
        self._deliver()

    def _deliver(self) -> None:
        if self.waiting is not None and b"\n" in self.buf:
            line, _, self.buf = self.buf.partition(b"\n")
            d, self.waiting = self.waiting, None
            d.callback(line.rstrip(b"\r"))

    def read_line(self) -> defer.Deferred:
        if self.closed:
            return defer.fail(BackendError("the backend closed the connection"))
        self.waiting = defer.Deferred()
        d = self.waiting
        self._deliver()
        return d

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def start_tls(self, ctx: Any) -> None:
        self.buf = b""
        self.transport.startTLS(ctx)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True
        if self.waiting is not None:
            d, self.waiting = self.waiting, None
            d.errback(BackendError("the backend closed the connection"))
        if self.peer is not None:
            self.peer.loseConnection()
        self.lost.callback(None)


async def connect(reactor: Any, backend: Backend) -> BackendClient:
    ep = HostnameEndpoint(reactor, backend.host, backend.port, timeout=backend.timeout)
    try:
        client = await connectProtocol(ep, BackendClient())
    except Exception as e:
        raise BackendError(f"cannot connect to {backend.host}:{backend.port}: {e}") from None
    return client


async def _expect(client: BackendClient, prefix: bytes, what: str) -> bytes:
    line = await client.read_line()
    if not line.startswith(prefix):
        raise BackendError(f"{what}: {line[:200]!r}")
    return line


def _imap_string(value: bytes) -> bytes:
    if value and all(0x20 < b < 0x7F and b not in b'"\\(){%*]' for b in value):
        return b'"' + value + b'"'
    return b"{%d+}\r\n" % len(value) + value  # LITERAL+ (mailsuite and Dovecot offer it)


async def _imap_tagged(client: BackendClient, tag: bytes) -> bytes:
    while True:
        line = await client.read_line()
        if line.startswith(tag + b" "):
            return line[len(tag) + 1:]


async def imap_login(client: BackendClient, backend: Backend, user: bytes, password: bytes) -> tuple[bool, bytes]:
    """Fires with (logged in, the text of the backend's tagged answer after the tag)."""
    await _expect(client, b"* OK", "IMAP greeting")
    if backend.tls is not None:
        client.send(b"P1 STARTTLS\r\n")
        answer = await _imap_tagged(client, b"P1")
        if not answer.startswith(b"OK"):
            raise BackendError(f"STARTTLS refused: {answer[:200]!r}")
        client.start_tls(backend.tls)
    client.send(b"P2 LOGIN " + _imap_string(user) + b" " + _imap_string(password) + b"\r\n")
    answer = await _imap_tagged(client, b"P2")
    return answer.startswith(b"OK"), answer


async def pop3_login(client: BackendClient, backend: Backend, user: bytes, password: bytes) -> tuple[bool, bytes]:
    await _expect(client, b"+OK", "POP3 greeting")
    if backend.tls is not None:
        client.send(b"STLS\r\n")
        await _expect(client, b"+OK", "STLS refused")
        client.start_tls(backend.tls)
    client.send(b"USER " + user + b"\r\n")
    await _expect(client, b"+OK", "USER refused")
    client.send(b"PASS " + password + b"\r\n")
    answer = await client.read_line()
    return answer.startswith(b"+OK"), answer


async def _smtp_reply(client: BackendClient) -> tuple[int, bytes]:
    while True:
        line = await client.read_line()
        if len(line) < 3 or not line[:3].isdigit():
            raise BackendError(f"not an SMTP reply: {line[:200]!r}")
        if line[3:4] != b"-":
            return int(line[:3]), line


async def submission_login(client: BackendClient, backend: Backend, user: bytes, password: bytes,
                           helo: bytes) -> tuple[bool, bytes]:
    code, line = await _smtp_reply(client)
    if code != 220:
        raise BackendError(f"SMTP greeting: {line[:200]!r}")
    client.send(b"EHLO " + helo + b"\r\n")
    await _smtp_reply(client)
    if backend.tls is not None:
        client.send(b"STARTTLS\r\n")
        code, line = await _smtp_reply(client)
        if code != 220:
            raise BackendError(f"STARTTLS refused: {line[:200]!r}")
        client.start_tls(backend.tls)
        client.send(b"EHLO " + helo + b"\r\n")
        await _smtp_reply(client)
    client.send(b"AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + password) + b"\r\n")
    code, line = await _smtp_reply(client)
    return code == 235, line


def splice(front: Any, back: BackendClient) -> None:
    """Join the client's transport ``front`` and the backend; bytes flow both ways,
    each side pausing the other when its buffers fill."""
    back.peer = front
    front.registerProducer(back.transport, True)
    back.transport.registerProducer(front, True)
    if back.buf:
        front.write(back.buf)
        back.buf = b""
