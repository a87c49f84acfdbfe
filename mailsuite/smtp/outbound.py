"""The outbound SMTP client: one connection to one peer, carrying one or more messages.

Why not twisted.mail.smtp.ESMTPSender (research/twisted-mail.md §2): its dot-stuffing
misses a "." at the start of each 16 KiB chunk (a message can smuggle a second one
through us), a failed STARTTLS handshake never falls back to plaintext (twisted#10334),
it keeps response bytes buffered behind the 220 to STARTTLS, sends no SIZE and does no
PIPELINING, retries instantly on its own, and carries one message per connection.  This
client keeps Twisted's transport, endpoints and TLS (startTLS with service-identity
verification) and does the SMTP dialogue itself with Deferreds:

* every reply wait has its own timeout (greeting and commands: ``command_timeout``,
  the reply after the final dot and a stalled body write: ``data_timeout``);
* MAIL, every RCPT and DATA go in one write when the peer offers PIPELINING;
* the body (LF line ends on disk) is sent in chunks with CRLF and dot-stuffing carried
  across chunk boundaries; to a peer that offers CHUNKING it goes as BDAT chunks
  instead (RFC 3030: no stuffing, no end marker to scan for), pipelined when the peer
  offers PIPELINING, and a BINARYMIME body goes only that way (else 5.6.3);
* results are per recipient; the caller decides retry or bounce from the codes.
"""

from __future__ import annotations

import base64
import collections
import re
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, interfaces
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite.idn import ascii_address
from mailsuite.smtp.dsnparams import xtext_encode
from mailsuite.tls import tls_description

MAX_REPLY_LINE = 2048
MAX_REPLY_LINES = 100
CHUNK = 64 * 1024
_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class PeerReply:
    code: int
    text: str  # the lines joined with a space, without the code
    lines: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """The enhanced status code the peer gave, else one derived from the code."""
        m = _STATUS.match(self.text)
        if m:
            return m.group(0)
        return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(self.code // 100, "4.0.0")

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class SessionError(Exception):
    """The session cannot go on.  ``reply`` is the peer's reply if it gave one;
    ``tls_failed`` marks a failed STARTTLS handshake (the caller may retry in plain)."""

    def __init__(self, message: str, reply: PeerReply | None = None, tls_failed: bool = False,
                 status: str = "4.4.2", permanent: bool | None = None) -> None:
        super().__init__(message)
        self.reply = reply
        self.tls_failed = tls_failed
        self._status = status
        self.permanent = reply is not None and reply.code >= 500 if permanent is None else permanent

    @property
    def status(self) -> str:
        if self.reply is None:
            return self._status
        status = self.reply.status
        # A soft failure keeps the peer's detail but must not read as permanent.
        return status if self.permanent or status[0] != "5" else "4" + status[1:]


@implementer(interfaces.IHandshakeListener, interfaces.IPushProducer)
class ClientProtocol(Protocol):
    """Reads replies and hands each to the oldest waiter; nothing else."""

    def __init__(self) -> None:
        self._buf = b""
        self._lines: list[tuple[int, str]] = []
        self._replies: collections.deque[PeerReply] = collections.deque()
        self._waiters: collections.deque[tuple[defer.Deferred, Any]] = collections.deque()
        self.lost: Failure | None = None
        self.error: str = ""
        self.handshake_done = False
        self.tls_started = False
        self._paused = False
        self._resume: defer.Deferred | None = None

    # -- transport events ----------------------------------------------------------

    def connectionMade(self) -> None:
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        self.transport.registerProducer(self, True)

    def handshakeCompleted(self) -> None:
        self.handshake_done = True

    def dataReceived(self, data: bytes) -> None:
        if self.lost is not None or self.error:
            return
        self._buf += data
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > MAX_REPLY_LINE:
                    self._protocol_error("reply line too long")
                return
            line, self._buf = self._buf[:i].rstrip(b"\r"), self._buf[i + 1 :]
            if len(line) > MAX_REPLY_LINE:
                self._protocol_error("reply line too long")
                return
            if not self._line(line):
                return

    def _line(self, raw: bytes) -> bool:
        text = raw.decode("utf-8", "replace")
        if len(text) < 3 or not text[:3].isdigit() or text[0] not in "12345" or (len(text) > 3 and text[3] not in " -"):
            self._protocol_error(f"garbled reply {text[:80]!r}")
            return False
        code = int(text[:3])
        if self._lines and self._lines[0][0] != code:
            self._protocol_error("reply lines with different codes")
            return False
        self._lines.append((code, text[4:].strip()))
        if len(self._lines) > MAX_REPLY_LINES:
            self._protocol_error("reply with too many lines")
            return False
        if len(text) > 3 and text[3] == "-":
            return True
        lines = tuple(t for _c, t in self._lines)
        reply = PeerReply(code, " ".join(t for t in lines if t), lines)
        self._lines = []
        if self._waiters:
            d, timer = self._waiters.popleft()
            if timer.active():
                timer.cancel()
            d.callback(reply)
        else:
            self._replies.append(reply)
        return True

    def _protocol_error(self, why: str) -> None:
        self.error = why
        self._fail_waiters(SessionError(f"protocol error: {why}"))
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = reason
        if self.tls_started and not self.handshake_done:
            err = SessionError(f"TLS handshake failed: {_reason_text(reason)}", tls_failed=True, status="4.7.5")
        else:
            err = SessionError(f"lost connection: {_reason_text(reason)}")
        self._fail_waiters(err)
        if self._resume is not None:
            d, self._resume = self._resume, None
            d.errback(err)

    def _fail_waiters(self, err: Exception) -> None:
        while self._waiters:
            d, timer = self._waiters.popleft()
            if timer.active():
                timer.cancel()
            d.errback(err)

    # -- producer (back-pressure while sending a body) ------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._resume is not None:
            d, self._resume = self._resume, None
            d.callback(None)

    def stopProducing(self) -> None:
        pass

    def writable(self) -> defer.Deferred:
        if not self._paused:
            return defer.succeed(None)
        if self.lost is not None:
            return defer.fail(SessionError("lost connection"))
        self._resume = defer.Deferred()
        return self._resume

    # -- the API the session uses ---------------------------------------------------

    def send(self, line: str | bytes) -> None:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.transport.write(line + b"\r\n")

    def expect(self, timeout: float, what: str) -> defer.Deferred:
        """The next reply; fails with SessionError on timeout or loss."""
        if self._replies:
            return defer.succeed(self._replies.popleft())
        if self.lost is not None or self.error:
            return defer.fail(SessionError(f"lost connection: {self.error or _reason_text(self.lost)}"))
        from twisted.internet import reactor

        d: defer.Deferred = defer.Deferred()

        def expired() -> None:
            entry = next((w for w in self._waiters if w[0] is d), None)
            if entry is not None:
                self._waiters.remove(entry)
            self.error = f"timeout waiting for {what}"
            d.errback(SessionError(f"conversation timed out waiting for {what}", status="4.4.2"))
            self._fail_waiters(SessionError(f"conversation timed out waiting for {what}"))
            self.transport.abortConnection()

        self._waiters.append((d, reactor.callLater(timeout, expired)))
        return d

    def buffered(self) -> bool:
        return bool(self._buf or self._lines or self._replies)


def _reason_text(reason: Failure | None) -> str:
    if reason is None:
        return "connection closed"
    v = reason.value
    text = str(v) or type(v).__name__
    return text.replace("\n", " ")[:200]


AFTER_CR: Any = "after CR"  # stuff()'s state: a line just ended with a CR


def stuff(chunk: bytes, state: Any) -> tuple[bytes, Any]:
    """One chunk of an LF body as wire bytes: CRLF line ends and every line that starts
    with "." doubled, including a line that starts exactly at the chunk boundary.
    ``state`` is True at the start of the body; pass back what the previous call
    returned (true at a line start).

    No bare CR or LF ever reaches the wire (issue 16 finding 5): a CR not followed by
    LF would let a peer that ends DATA at ``<CR>.<CR>`` take the rest of our message
    as a second one, sent with our reputation.  So a bare CR ends a line like LF and
    CR LF do, before the dot-stuffing, which then doubles a "." line after it."""
    if state is AFTER_CR and chunk[:1] == b"\n":
        chunk = chunk[1:]  # the LF of a CR LF split by the chunk boundary
    if not chunk:
        return b"", state
    at_line_start = bool(state)
    ends_with_cr = chunk[-1:] == b"\r"
    if b"\r" in chunk:
        chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    out = chunk.replace(b"\n.", b"\n..")
    if at_line_start and out[:1] == b".":
        out = b"." + out
    return out.replace(b"\n", b"\r\n"), AFTER_CR if ends_with_cr else chunk[-1:] == b"\n"


class ClientFactory(Factory):
    protocol = ClientProtocol
    noisy = False


@dataclass
class Timeouts:
    connect: float = 30
    command: float = 300
    data: float = 600


@dataclass
class Transaction:
    """What one message needs from a session."""

    sender: str
    recipients: list[str]
    body_path: str
    size: int  # LF octets on disk
    lines: int
    data: bytes | None = None  # the body, when it is still in memory
    smtputf8: bool = False  # the message cannot travel without SMTPUTF8 (RFC 6531)
    body_type: str = ""  # BODY= as received: "", "8BITMIME" or "BINARYMIME"
    ret: str = ""  # RFC 3461 RET and ENVID, passed on to a peer that offers DSN
    envid: str = ""
    rcpt_dsn: dict[str, tuple[str, str]] = field(default_factory=dict)  # address -> (NOTIFY, ORCPT)
    requiretls: bool = False  # RFC 8689: only over verified TLS to a host offering REQUIRETLS


@dataclass
class TransactionResult:
    replies: dict[str, PeerReply] = field(default_factory=dict)  # per recipient


class Session:
    """An established, greeted (and possibly TLS-protected, authenticated) connection."""

    def __init__(self, proto: ClientProtocol, host: str, ip: str, port: int, timeouts: Timeouts) -> None:
        self.proto = proto
        self.host, self.ip, self.port = host, ip, port
        self.timeouts = timeouts
        self.extensions: dict[str, str] = {}
        self.tls = ""
        self.messages = 0
        self.dirty = False  # a transaction was left half done; RSET before the next
        self.in_data = False  # the current message's body has started to go out
        self.greeting: PeerReply | None = None

    @property
    def relay(self) -> str:
        return f"{self.host}[{self.ip}]:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proto.lost is None and not self.proto.error

    async def _cmd(self, line: str, what: str, timeout: float | None = None) -> PeerReply:
        self.proto.send(line)
        return await self.proto.expect(timeout or self.timeouts.command, what)

    # -- opening ------------------------------------------------------------------------

    async def greet(self, hostname: str) -> None:
        self.greeting = await self.proto.expect(self.timeouts.command, "greeting")
        if self.greeting.code != 220:
            self.close()
            # Deferred even for 5xx, as Postfix's smtp_skip_5xx_greeting: a host that
            # will not talk now says nothing final about the recipients.
            raise SessionError(f"host {self.relay} refused to talk to me: {self.greeting}", self.greeting,
                               permanent=False)
        await self.ehlo(hostname)

    async def ehlo(self, hostname: str) -> None:
        reply = await self._cmd(f"EHLO {hostname}", "EHLO reply")
        if reply.code == 250:
            self.extensions = _parse_extensions(reply)
            return
        if reply.code >= 500:
            reply = await self._cmd(f"HELO {hostname}", "HELO reply")
            if reply.code == 250:
                self.extensions = {}
                return
        self.close()
        raise SessionError(f"host {self.relay} said {reply} (in reply to EHLO/HELO)", reply)

    async def starttls(self, hostname: str, options: Any) -> bool:
        """Upgrade to TLS.  False if the peer declined STARTTLS (the session stays
        usable in plain); raises SessionError(tls_failed=True) if the handshake failed
        (the connection is gone)."""
        reply = await self._cmd("STARTTLS", "STARTTLS reply")
        if reply.code != 220:
            return False
        if self.proto.buffered():
            # Bytes after the 220 came in plaintext and would be read as if protected
            # (response injection, research/twisted-mail.md §2.3).
            self.close()
            raise SessionError("protocol error: data after 220 to STARTTLS")
        self.proto.tls_started = True
        self.proto.transport.startTLS(options)
        reply = await self._cmd(f"EHLO {hostname}", "EHLO reply after STARTTLS")
        if reply.code != 250:
            self.close()
            raise SessionError(f"host {self.relay} said {reply} (in reply to EHLO after STARTTLS)", reply)
        self.extensions = _parse_extensions(reply)
        self.tls = tls_description(self.proto.transport) or "TLS"
        return True

    async def auth(self, username: str, password: str) -> None:
        mechs = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechs:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            reply = await self._cmd(f"AUTH PLAIN {token}", "AUTH reply")
        elif "LOGIN" in mechs:
            reply = await self._cmd("AUTH LOGIN", "AUTH reply")
            if reply.code == 334:
                reply = await self._cmd(base64.b64encode(username.encode()).decode(), "AUTH reply")
            if reply.code == 334:
                reply = await self._cmd(base64.b64encode(password.encode()).decode(), "AUTH reply")
        else:
            raise SessionError(f"host {self.relay} offers no AUTH PLAIN or LOGIN", status="4.7.0")
        if reply.code != 235:
            self.close()
            # Deferred, not bounced, even for 5xx: a wrong password is ours to fix.
            raise SessionError(f"SASL authentication failed; server {self.relay} said: {reply}", status="4.7.0")

    # -- a message ----------------------------------------------------------------------

    async def send(self, tx: Transaction) -> TransactionResult:
        """One mail transaction; per-recipient replies.  Raises SessionError when the
        connection fails before any recipient has a final answer."""
        result = TransactionResult()
        self.in_data = False
        wire_size = tx.size + tx.lines
        limit = self.extensions.get("SIZE", "")
        if limit.isdigit() and int(limit) > 0 and wire_size > int(limit):
            reply = PeerReply(552, f"5.3.4 Message size exceeds fixed limit of {limit} octets of {self.relay}")
            result.replies = {r: reply for r in tx.recipients}
            return result
        chunking = "CHUNKING" in self.extensions
        binary = tx.body_type == "BINARYMIME"
        if binary and not (chunking and "BINARYMIME" in self.extensions):
            # RFC 3030 3: a binary body cannot go by DATA; we do not convert it.
            reply = PeerReply(554, f"5.6.3 Conversion required but not supported: host {self.relay} "
                                   "does not offer BINARYMIME")
            result.replies = {r: reply for r in tx.recipients}
            return result
        if tx.smtputf8 and "SMTPUTF8" not in self.extensions:
            # RFC 6531 3.2: no silent downgrade; the message goes back to its sender.
            reply = PeerReply(553, f"5.6.7 SMTPUTF8 is required, but was not offered by host {self.relay}")
            result.replies = {r: reply for r in tx.recipients}
            return result
        if self.dirty:
            reply = await self._cmd("RSET", "RSET reply")
            if reply.code != 250:
                raise SessionError(f"host {self.relay} said {reply} (in reply to RSET)", reply)
            self.dirty = False
        self.messages += 1
        mail = f"MAIL FROM:<{_wire_address(tx.sender)}>"
        if "SIZE" in self.extensions:
            mail += f" SIZE={wire_size}"
        if binary:
            mail += " BODY=BINARYMIME"
        elif "8BITMIME" in self.extensions:
            mail += " BODY=8BITMIME"
        if tx.smtputf8:
            mail += " SMTPUTF8"
        if tx.requiretls and "REQUIRETLS" in self.extensions:
            mail += " REQUIRETLS"
        dsn = "DSN" in self.extensions
        if dsn and tx.ret:
            mail += f" RET={tx.ret}"
        if dsn and tx.envid:
            mail += f" ENVID={xtext_encode(tx.envid)}"
        pipelining = "PIPELINING" in self.extensions
        proto = self.proto
        if chunking:
            return await self._send_chunked(tx, mail, pipelining, result, dsn)
        if pipelining:
            proto.transport.write(
                "".join([mail + "\r\n"] + [f"{_rcpt_line(r, tx, dsn)}\r\n" for r in tx.recipients]
                        + ["DATA\r\n"]).encode("utf-8")
            )
            mail_reply = await proto.expect(self.timeouts.command, "MAIL reply")
            rcpt_replies = [await proto.expect(self.timeouts.command, "RCPT reply") for _ in tx.recipients]
            data_reply = await proto.expect(self.timeouts.command, "DATA reply")
        else:
            proto.send(mail)
            mail_reply = await proto.expect(self.timeouts.command, "MAIL reply")
            rcpt_replies = []
            data_reply = None
            if mail_reply.code == 250:
                for r in tx.recipients:
                    rcpt_replies.append(await self._cmd(_rcpt_line(r, tx, dsn), "RCPT reply"))
                if any(x.code // 100 == 2 for x in rcpt_replies):
                    data_reply = await self._cmd("DATA", "DATA reply")
        if mail_reply.code != 250:
            self.dirty = True
            if data_reply is not None and data_reply.code == 354:
                await self._abort_data()
            result.replies = {r: mail_reply for r in tx.recipients}
            return result
        accepted = _accepted(tx, rcpt_replies, result)
        if not accepted:
            self.dirty = True
            if data_reply is not None and data_reply.code == 354:
                await self._abort_data()
            return result
        assert data_reply is not None
        if data_reply.code != 354:
            self.dirty = True
            for r in accepted:
                result.replies[r] = data_reply
            return result
        self.in_data = True
        await self._send_body(tx)
        final = await proto.expect(self.timeouts.data, "end of data reply")
        for r in accepted:
            result.replies[r] = final
        return result

    async def _send_chunked(self, tx: Transaction, mail: str, pipelining: bool,
                            result: TransactionResult, dsn: bool) -> TransactionResult:
        """MAIL and RCPTs (pipelined when offered), then the body as BDAT chunks."""
        proto = self.proto
        rcpt_lines = [_rcpt_line(r, tx, dsn) for r in tx.recipients]
        if pipelining:
            proto.transport.write("".join(line + "\r\n" for line in [mail] + rcpt_lines).encode("utf-8"))
            mail_reply = await proto.expect(self.timeouts.command, "MAIL reply")
            rcpt_replies = [await proto.expect(self.timeouts.command, "RCPT reply") for _ in tx.recipients]
        else:
            mail_reply = await self._cmd(mail, "MAIL reply")
            rcpt_replies = []
            if mail_reply.code == 250:
                for line in rcpt_lines:
                    rcpt_replies.append(await self._cmd(line, "RCPT reply"))
        if mail_reply.code != 250:
            self.dirty = True
            result.replies = {r: mail_reply for r in tx.recipients}
            return result
        accepted = _accepted(tx, rcpt_replies, result)
        if not accepted:
            self.dirty = True
            return result
        self.in_data = True
        final = await self._send_bdat(tx, pipelining)
        if final.code != 250:
            self.dirty = True
        for r in accepted:
            result.replies[r] = final
        return result

    async def _send_bdat(self, tx: Transaction, pipelining: bool) -> PeerReply:
        """The body as BDAT chunks (CRLF line ends, nothing stuffed); the reply that
        decides: the first that is not 250, else the one to the LAST chunk."""
        from twisted.internet import reactor

        proto = self.proto
        if tx.data is not None:
            out = tx.data.replace(b"\n", b"\r\n")
            proto.transport.write(b"BDAT %d LAST\r\n" % len(out) + out)
            return await proto.expect(self.timeouts.data, "reply to BDAT LAST")
        pending = 0
        failed: PeerReply | None = None
        timer = reactor.callLater(self.timeouts.data, self._stalled)
        try:
            with open(tx.body_path, "rb") as f:
                while True:
                    chunk = f.read(CHUNK)
                    if not chunk:
                        break
                    out = chunk.replace(b"\n", b"\r\n")
                    proto.transport.write(b"BDAT %d\r\n" % len(out) + out)
                    pending += 1
                    timer.reset(self.timeouts.data)
                    if not pipelining:
                        # RFC 3030 4.2: without PIPELINING each chunk waits for its reply.
                        reply = await proto.expect(self.timeouts.data, "reply to BDAT")
                        pending -= 1
                        if reply.code != 250:
                            failed = reply
                            break
                    await proto.writable()
            proto.transport.write(b"BDAT 0 LAST\r\n")
            pending += 1
        finally:
            if timer.active():
                timer.cancel()
        last: PeerReply | None = None
        for _ in range(pending):
            last = await proto.expect(self.timeouts.data, "reply to BDAT")
            if last.code != 250 and failed is None:
                failed = last
        assert last is not None
        return failed or last

    async def _abort_data(self) -> None:
        # A peer that said 354 although no recipient was accepted: an empty message
        # ends the transaction; its reply is ignored.
        self.proto.send(b".")
        await self.proto.expect(self.timeouts.data, "end of data reply")

    async def _send_body(self, tx: Transaction) -> None:
        from twisted.internet import reactor

        proto = self.proto
        if tx.data is not None:
            # In memory: one write with the final dot (the transport buffers it; a
            # stalled peer is caught by the wait for the final reply).
            out, _ = stuff(tx.data, True)
            proto.transport.write(out + (b".\r\n" if tx.data[-1:] in (b"\n", b"\r", b"") else b"\r\n.\r\n"))
            return
        timer = reactor.callLater(self.timeouts.data, self._stalled)
        try:
            at_start = True
            last = b""
            with open(tx.body_path, "rb") as f:
                while True:
                    # Page-cache reads of 64 KiB are short; the wait is on the peer.
                    chunk = f.read(CHUNK)
                    if not chunk:
                        break
                    out, at_start = stuff(chunk, at_start)
                    proto.transport.write(out)
                    last = chunk[-1:]
                    timer.reset(self.timeouts.data)
                    await proto.writable()
            proto.transport.write(b".\r\n" if last in (b"\n", b"\r", b"") else b"\r\n.\r\n")
        finally:
            if timer.active():
                timer.cancel()

    def _stalled(self) -> None:
        self.proto.error = "timeout sending message body"
        self.proto.transport.abortConnection()

    def close(self) -> None:
        if self.proto.lost is None:
            self.proto.transport.loseConnection()

    async def quit(self) -> None:
        if not self.alive:
            return
        try:
            self.proto.send("QUIT")
            await self.proto.expect(min(self.timeouts.command, 10), "QUIT reply")
        except SessionError:
            pass
        self.close()


def _accepted(tx: Transaction, rcpt_replies: list[PeerReply], result: TransactionResult) -> list[str]:
    """The recipients the peer took; the refused ones get their reply in ``result``."""
    for r, x in zip(tx.recipients, rcpt_replies):
        if x.code // 100 != 2:
            result.replies[r] = x
    return [r for r, x in zip(tx.recipients, rcpt_replies) if x.code // 100 == 2]


def _rcpt_line(address: str, tx: Transaction, dsn: bool) -> str:
    """RCPT TO with the recipient's NOTIFY and ORCPT when the peer offers DSN."""
    line = f"RCPT TO:<{_wire_address(address)}>"
    notify, original = tx.rcpt_dsn.get(address, ("", "")) if dsn else ("", "")
    if notify:
        line += f" NOTIFY={notify}"
    if original:
        addr_type, _, addr = original.partition(";")
        line += f" ORCPT={addr_type};{xtext_encode(addr)}"
    return line


def _wire_address(address: str) -> str:
    """The address as it goes to a peer: the domain in A-labels (RFC 6531 3.2)."""
    try:
        return ascii_address(address)
    except ValueError:  # checked on the way in; an old spool entry goes as it is
        return address


def _parse_extensions(reply: PeerReply) -> dict[str, str]:
    # The first line is the peer's name; each further line is "KEYWORD params".
    exts: dict[str, str] = {}
    for line in reply.lines[1:]:
        parts = line.split(None, 1)
        if parts:
            exts[parts[0].upper()] = parts[1] if len(parts) > 1 else ""
    return exts
