"""The ESMTP server protocol, for the MX role and for submission.

Why not twisted.mail.smtp.ESMTP: its IMessage API hands the body over line by line to
one object per recipient, its validators cannot be asynchronous without reordering
pipelined replies (twisted#8126), an over-long DATA line makes it run the rest of the
body as commands, it keeps plaintext pipelined behind STARTTLS (CVE-2011-0411 class) and
has no SIZE, PIPELINING or enhanced status codes (research/twisted-mail.md §1).  This
protocol keeps Twisted's pieces that are sound (the reactor transport, TimeoutMixin,
cred portals, startTLS) and does the SMTP state machine itself:

* one command at a time: while a command waits on a Deferred (directory lookup,
  fsync), further pipelined input stays buffered, so replies keep their order;
* DATA is parsed in chunks by :class:`DataReader` and streamed to a file;
* BDAT (RFC 3030 CHUNKING, with BINARYMIME) reads exactly the announced octets of each
  chunk, also for a chunk whose transaction already failed (else its bytes would run
  as commands), streams them through :class:`ChunkReader` into the same file and
  checks, and answers the LAST chunk like the end of DATA;
* 250 after DATA (or BDAT LAST) only once the sink (:class:`mailsuite.handoff.IMessageSink`, the one
  thing this package knows of delivery) says the message is durable.

Submission (RFC 6409, RFC 8314) is the same protocol with ``submission=True``: AUTH
PLAIN/LOGIN through the portal, only once TLS is up unless allow_plaintext_auth, and
before MAIL; failures go through the shared auth throttle (auth/throttle.py); the
header block is watched as it streams (smtp/headers.py) for the From: check and to
add a missing Message-ID and Date.  STARTTLS throws away anything pipelined behind it
and a handshake that does not finish in ``tls.handshake_timeout`` is aborted.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Callable

from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from mailsuite.frontend import (
    SMTP_ANSWERS, TOO_LONG, ConnectionCounts, Credentials, LineBuffer, LoginFailed, LoginGate, Outcome,
    RequestDeadline, SASLError, SASLExchange, Slot, set_no_delay, start_tls,
)
from mailsuite.frontend import sending
from mailsuite.metrics import NULL as NULL_METRICS
from mailsuite.handoff import (NO_SPACE_STATUS, NO_SPACE_TEXT, Envelope, IMessageSink, IncomingMessage,
                               PermanentFailure, TemporaryFailure, is_disk_full, new_queue_id)
from mailsuite.logtext import escaped, printable, quoted
from mailsuite.idn import ascii_address
from mailsuite.smtp import dsnparams
from mailsuite.smtp.address import BadPath, parse_path
from mailsuite.smtp.data import ChunkReader, DataReader
from mailsuite.smtp.headers import HeaderScanner
from mailsuite.smtp.policy import Policy, Session
from mailsuite.smtp.reply import Reply
from mailsuite.tls import tls_description

log = Logger(namespace="mailsuite.smtp")

MAX_COMMAND_LINE = 1000  # octets with CRLF: RFC 5321 4.5.3.1.4 (512) plus room for params
MAX_BUFFERED = 64 * 1024  # pipelined input held while a command waits


def _ascii_or_as_is(address: str) -> str:
    try:
        return ascii_address(address)
    except ValueError:
        return address


class ISMTPAvatar(Interface):
    """What SMTP AUTH asks the realm for: the Account (its ``name`` is all we need)."""


@dataclass
class SMTPFactoryConfig:
    """Everything one listener's protocols share (one per listener role)."""

    hostname: str
    service: Any  # SMTPConfig or SubmissionConfig
    policy: Policy
    dispatcher: IMessageSink  # takes accepted messages (delivery.dispatch.Dispatcher)
    incoming_dir: Path
    portal: Portal | None = None
    tls_context: Any = None  # a context factory, or None when TLS is not configured
    implicit_tls: bool = False
    submission: bool = False
    allow_plaintext_auth: bool = False
    offer_auth: bool = True
    throttle: Any = None  # auth.throttle.AuthThrottle; None: no failure counting
    handshake_timeout: float = 30.0
    add_missing_headers: bool = False  # Message-ID and Date (submission)
    # DNS block lists (mailsuite.mailauth.dnsbl.IClientCheck): asked when a client
    # outside relay_networks connects; a listed client is refused at the greeting
    # ("connect") or at each RCPT except to postmaster@ ("rcpt").
    client_check: Any = None
    client_check_at: str = "connect"
    metrics: Any = NULL_METRICS


def _local_error(error: BaseException | None) -> Reply:
    """Our own failure to take a message: 452 4.3.1 when the disk is full (the client
    keeps it and retries), else 451 4.3.0; never 5xx."""
    if is_disk_full(error):
        return Reply(452, NO_SPACE_STATUS, NO_SPACE_TEXT)
    return Reply(451, "4.3.0", "Error: local error in processing")


def _answer(outcome: Outcome) -> Reply:
    return Reply(*SMTP_ANSWERS[outcome])


_PENDING = object()  # a block list answer not yet known


class SMTPServerFactory(Factory):
    noisy = False

    def __init__(self, conf: SMTPFactoryConfig, connections: ConnectionCounts | None = None) -> None:
        self.conf = conf
        # Connections per client IP; shared by the listeners of one role (587 + 465).
        self.connections = ConnectionCounts() if connections is None else connections
        self.logins = LoginGate(conf.portal, conf.throttle, "smtp")

    def buildProtocol(self, addr: Any) -> "SMTPServer":
        p = SMTPServer(self.conf, self)
        p.factory = self
        return p


@implementer(IHandshakeListener)
class SMTPServer(Protocol, TimeoutMixin):
    def __init__(self, conf: SMTPFactoryConfig, factory: SMTPServerFactory) -> None:
        self.conf = conf
        self.svc = conf.service
        self.session: Session | None = None
        self._buffer = LineBuffer(MAX_COMMAND_LINE - 2, MAX_BUFFERED)
        self._raw = None  # the plain TCP connection replies go straight to (frontend/sending.py)
        self._pace = RequestDeadline(self.svc.request_deadline, self.svc.min_data_rate, self._too_slow)
        self._busy = False
        self._closing = False
        self._errors = 0
        self._data: DataReader | None = None
        # BDAT: the transaction's reader, the octets of the current chunk still to
        # come, whether it is the LAST one, and the answer for a failed transaction.
        self._chunks: ChunkReader | None = None
        self._chunk_left = 0
        self._chunk_last = False
        self._chunk_error: Reply | None = None
        self._incoming: IncomingMessage | None = None
        self._queue_id = ""
        self._auth_step: Callable[[bytes], None] | None = None
        self._slot: Slot | None = None
        self._tls_pending = False  # a TLS handshake is under way
        self._auth_refusals = 0
        self._headers: HeaderScanner | None = None
        self._write_error: OSError | None = None  # why the message being received was dropped
        # Block list verdict: _PENDING until known, then a Listing or None.
        self._listing: Any = None
        self._listing_waiters: list[defer.Deferred] = []
        self._refused: Reply | None = None  # a 554 greeting: every command but QUIT gets 503

    # -- connection ------------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        ip = getattr(peer, "host", "") or ""
        self.session = Session(client_ip=ip, submission=self.conf.submission)
        set_no_delay(self.transport)
        self._raw = sending.plain_tcp(self.transport)
        self._slot = self.factory.connections.admit(ip, self.svc.max_connections_per_ip)
        if self._slot is None:
            log.warn("smtp: connection from [{ip}] refused: too many connections", ip=ip)
            self._send(Reply(421, "4.7.0", f"{self.conf.hostname} Too many connections from your address"))
            self.transport.loseConnection()
            self._closing = True
            return
        self.setTimeout(self.svc.command_timeout)
        if self.conf.implicit_tls:
            # Behind the handshake gate (tls.py) the handshake is already done; without
            # it, the greeting waits in the TLS layer and the handshake gets its timeout.
            self.session.tls = tls_description(self.transport) or "TLS"
            if self.session.tls == "TLS":
                self._tls_pending = True
                self.setTimeout(self.conf.handshake_timeout)
        check = self.conf.client_check
        if check is not None and not self.conf.policy.may_relay(self.session):
            self._listing = _PENDING
            d = check.check(ip)
            d.addErrback(lambda f: log.failure("smtp: block list check failed", f) and None)
            d.addCallback(self._listed)
            if self.conf.client_check_at == "connect" and self._listing is _PENDING:
                # The greeting waits for the answer (the resolver's cache makes repeat
                # clients quick); commands sent before it wait in the buffer.
                self._busy = True
                return
        self._greet()

    def _greet(self) -> None:
        listing = self._listing
        if self.conf.client_check_at == "connect" and listing not in (None, _PENDING):
            ip = self.session.client_ip if self.session else ""
            self._refused = Reply(554, "5.7.1", listing.reply_text(ip))
            log.info("smtp: [{ip}] refused at connect: {zone} ({code})", ip=ip, zone=listing.zone, code=listing.code)
            self._send(self._refused)
            return
        self._send(Reply(220, "", f"{self.conf.hostname} ESMTP mailsuite"))

    def _listed(self, listing: Any) -> None:
        self._listing = listing
        waiters, self._listing_waiters = self._listing_waiters, []
        for w in waiters:
            w.callback(listing)
        if self.conf.client_check_at == "connect" and self._busy and not self._closing and self.transport is not None:
            self._greet()
            self._resume()

    def _when_listed(self) -> defer.Deferred:
        if self._listing is not _PENDING:
            return defer.succeed(self._listing)
        d: defer.Deferred = defer.Deferred()
        self._listing_waiters.append(d)
        return d

    def handshakeCompleted(self) -> None:
        """IHandshakeListener: TLS is up (implicit TLS, or after STARTTLS)."""
        self._tls_pending = False
        if self.session is not None:
            self.session.tls = tls_description(self.transport) or "TLS"
            log.debug("smtp: [{ip}] TLS established: {tls}", ip=self.session.client_ip, tls=self.session.tls)
        if not self._closing:
            self.setTimeout(self.svc.command_timeout)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.setTimeout(None)
        self._pace.stop()
        self._closing = True
        if self._tls_pending and self.session is not None:
            log.info("smtp: [{ip}] TLS handshake failed: {why}", ip=self.session.client_ip,
                     why=reason.getErrorMessage() if reason is not None else "connection lost")
        if self._slot is not None:
            self._slot.release()
        if self._incoming is not None:
            log.info(
                "smtp: {qid}: client [{ip}] disconnected during DATA; message discarded",
                qid=self._queue_id,
                ip=self.session.client_ip if self.session else "",
            )
            self._incoming.discard()
            self._incoming = None

    def timeoutConnection(self) -> None:
        if self._tls_pending:
            # Nothing can be said to a client that never finished the handshake.
            log.info("smtp: [{ip}] TLS handshake not finished in {n}s; closed",
                     ip=self.session.client_ip if self.session else "", n=self.conf.handshake_timeout)
            self._closing = True
            self.transport.abortConnection()
            return
        log.info("smtp: timeout, closing connection from [{ip}]", ip=self.session.client_ip if self.session else "")
        self._close_timed_out()

    def _too_slow(self) -> None:
        """The request deadline passed (frontend/pacing.py): a trickling client."""
        log.info("smtp: [{ip}] {what} not received within the request deadline ({n}s + 1s per {rate} bytes); "
                 "closing", ip=self.session.client_ip if self.session else "",
                 what="message data" if self._data is not None else "command line",
                 n=self.svc.request_deadline, rate=self.svc.min_data_rate)
        self._close_timed_out()

    def _close_timed_out(self) -> None:
        self.setTimeout(None)
        self._pace.stop()
        self._send(Reply(421, "4.4.2", f"{self.conf.hostname} Error: timeout exceeded"))
        if self._incoming is not None:
            self._incoming.discard()
            self._incoming = None
        self._closing = True
        self.transport.loseConnection()

    def _send(self, reply: Reply) -> None:
        if reply.code >= 400:
            self.conf.metrics.smtp_reply("submission" if self.conf.submission else "smtp", reply.code, reply.status)
        sending.send(self.transport, self._raw, reply.lines())

    # -- input -----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        self._pace.received(len(data))
        self._buffer.feed(data)
        self._process()

    def _process(self) -> None:
        # An AUTH exchange in progress reads its next line even though AUTH is "busy".
        while (not self._busy or self._auth_step is not None) and not self._closing and self._buffer:
            if self._chunk_left:
                self._feed_chunk()
                continue
            if self._data is not None:
                self._feed_data()
                continue
            line = self._buffer.next_line()
            if line is None:
                break
            if line is TOO_LONG:
                self._command_error(Reply(500, "5.5.2", "Error: line too long"), "line too long")
                continue
            self._line(line)
        self._buffer.hold(self.transport, self._busy)
        # A request is open while the client owes us the rest of it (not while we work).
        waiting = not self._busy or self._auth_step is not None
        self._pace.open(not self._closing and waiting and (self._data is not None or bool(self._buffer)))

    def _line(self, raw: bytes) -> None:
        if self._auth_step is not None:
            step, self._auth_step = self._auth_step, None
            step(raw)
            return
        if b"\x00" in raw:
            self._command_error(Reply(500, "5.5.2", "Error: NUL character in command"), "NUL in command")
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._command_error(Reply(500, "5.5.2", "Error: invalid UTF-8 in command"), "non-UTF-8 command")
            return
        verb, _, arg = line.partition(" ")
        if self._refused is not None and verb.upper() != "QUIT":
            # RFC 5321 3.1: after a 554 greeting the server answers 503 until QUIT.
            self._command_error(Reply(503, "5.7.1", self._refused.text), "refused client")
            return
        if not line.isascii() and verb.upper() not in ("MAIL", "RCPT"):
            # RFC 6531 3.3: UTF-8 is allowed in the mailbox of MAIL and RCPT only.
            self._command_error(Reply(500, "5.5.2", "Error: non-ASCII characters in command"), "non-ASCII command")
            return
        handler = getattr(self, f"do_{verb.upper()}", None) if verb.isalpha() else None
        if handler is None:
            self._command_error(Reply(500, "5.5.2", "Error: command not recognized"), f"unknown command {quoted(verb, 20)}")
            return
        try:
            result = handler(arg.strip())
        except Reply as r:
            self._reject(r, verb.upper())
            return
        if isinstance(result, defer.Deferred):
            self._busy = True
            result.addErrback(self._command_failed, verb.upper())
            result.addBoth(self._resume)

    def _command_failed(self, f: Failure, verb: str) -> None:
        if f.check(Reply):
            self._reject(f.value, verb)
        else:
            log.failure("smtp: {verb} failed", f, verb=verb)
            self._send(Reply(451, "4.3.0", "Error: internal error, try again later"))

    def _resume(self, _: object = None) -> None:
        self._busy = False
        if self.transport is not None and not self._closing:
            self._process()

    def _reject(self, r: Reply, verb: str) -> None:
        if r.code >= 500:
            self._command_error(r, f"{verb} rejected")
        else:
            self._send(r)
            log.info("smtp: [{ip}] {verb}: {code} {status} {text}", ip=self.session.client_ip, verb=verb,
                     code=r.code, status=r.status, text=printable(r.text))

    def _command_error(self, r: Reply, why: str) -> None:
        self._errors += 1
        log.info("smtp: [{ip}] rejected: {code} {status} {text} ({why})", ip=self.session.client_ip if self.session else "",
                 code=r.code, status=r.status, text=printable(r.text), why=why)
        if self._errors > self.svc.max_errors:
            self._send(Reply(421, "4.7.0", f"{self.conf.hostname} Error: too many errors"))
            self._closing = True
            self.transport.loseConnection()
            return
        self._send(r)

    # -- commands --------------------------------------------------------------------

    def _ehlo_lines(self) -> list[str]:
        lines = [
            f"{self.conf.hostname}",
            "PIPELINING",
            f"SIZE {self.svc.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
            "CHUNKING",
            "BINARYMIME",
            "DSN",
        ]
        if self.session.tls:
            lines.append("REQUIRETLS")  # RFC 8689: offered over TLS only
        if self._can_starttls():
            lines.append("STARTTLS")
        if self._auth_offered():
            lines.append("AUTH PLAIN LOGIN")
        return lines

    def _can_starttls(self) -> bool:
        return self.conf.tls_context is not None and not self.session.tls

    def _auth_offered(self) -> bool:
        if not self.conf.offer_auth or self.conf.portal is None or self.session.auth_user:
            return False
        return bool(self.session.tls) or self.conf.allow_plaintext_auth

    def do_EHLO(self, arg: str) -> None:
        self._helo(arg, esmtp=True)

    def do_HELO(self, arg: str) -> None:
        self._helo(arg, esmtp=False)

    def _helo(self, arg: str, esmtp: bool) -> None:
        if not arg or " " in arg:
            raise Reply(501, "5.5.4", "Syntax: EHLO hostname")
        s = self.session
        s.helo, s.esmtp = arg, esmtp
        s.reset()
        self._end_data_state()
        if esmtp:
            lines = self._ehlo_lines()
            self._send(Reply(250, "", "\n".join(lines)))
        else:
            self._send(Reply(250, "", self.conf.hostname))

    def do_MAIL(self, arg: str) -> Any:
        s = self.session
        if not arg.upper().startswith("FROM:"):
            raise Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
        if s.helo is None:
            raise Reply(503, "5.5.1", "Error: send HELO/EHLO first")
        if s.sender is not None:
            raise Reply(503, "5.5.1", "Error: nested MAIL command")
        try:
            sender, params = parse_path(arg[5:], allow_null=True, utf8=True)
        except BadPath as e:
            raise Reply(501, "5.1.7", f"Bad sender address syntax: {e}") from None
        smtputf8 = "SMTPUTF8" in params
        body_type = ""
        dsn: dict[str, str] = {}
        if not sender.isascii() and not smtputf8:
            raise Reply(553, "5.6.7", "Non-ASCII addresses not permitted for that sender without SMTPUTF8")
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit():
                    raise Reply(501, "5.5.4", "Bad SIZE parameter")
                if int(value) > self.svc.max_message_size:
                    raise Reply(552, "5.3.4", "Message size exceeds fixed limit")
            elif key == "BODY":
                body_type = (value or "").upper()
                if body_type not in ("7BIT", "8BITMIME", "BINARYMIME"):
                    raise Reply(501, "5.5.4", "Bad BODY parameter")
            elif key == "AUTH":
                pass  # RFC 4954 5: accepted; we trust only our own AUTH
            elif key == "SMTPUTF8":
                if value is not None:
                    raise Reply(501, "5.5.4", "SMTPUTF8 takes no value")
            elif key == "REQUIRETLS":
                if value is not None:
                    raise Reply(501, "5.5.4", "REQUIRETLS takes no value")
                if not s.tls:
                    raise Reply(530, "5.7.10", "REQUIRETLS needs a TLS session")
                dsn["REQUIRETLS"] = "1"
            elif key in ("RET", "ENVID"):
                try:
                    dsn[key] = dsnparams.parse_ret(value) if key == "RET" else dsnparams.parse_envid(value)
                except ValueError as e:
                    raise Reply(501, "5.5.4", f"Bad {key} parameter: {e}") from None
            else:
                raise Reply(555, "5.5.4", f"Unsupported parameter {key}")
        d = self.conf.policy.check_sender(s, sender)

        def ok(_: object) -> None:
            s.sender = sender
            s.smtputf8 = smtputf8
            s.body = "" if body_type == "7BIT" else body_type
            s.ret, s.envid = dsn.get("RET", ""), dsn.get("ENVID", "")
            s.requiretls = "REQUIRETLS" in dsn
            self._chunk_error = None  # a failed BDAT without a transaction ends here
            self._send(Reply(250, "2.1.0", "Ok"))

        return d.addCallback(ok)

    def do_RCPT(self, arg: str) -> Any:
        s = self.session
        if not arg.upper().startswith("TO:"):
            raise Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
        if s.sender is None:
            raise Reply(503, "5.5.1", "Error: need MAIL command")
        try:
            rcpt, params = parse_path(arg[3:], allow_null=False, utf8=True)
        except BadPath as e:
            raise Reply(501, "5.1.3", f"Bad recipient address syntax: {e}") from None
        if not rcpt.isascii() and not s.smtputf8:
            raise Reply(553, "5.6.7", "Non-ASCII addresses not permitted for that recipient without SMTPUTF8")
        notify = original = ""
        for key, value in params.items():
            try:
                if key == "NOTIFY":
                    notify = dsnparams.parse_notify(value)
                elif key == "ORCPT":
                    original = dsnparams.parse_orcpt(value)
                else:
                    raise Reply(555, "5.5.4", f"Unsupported parameter {key}")
            except ValueError as e:
                raise Reply(501, "5.5.4", f"Bad {key} parameter: {e}") from None
        if len(s.recipients) >= self.svc.max_recipients:
            raise Reply(452, "4.5.3", "Error: too many recipients")
        if self.conf.client_check_at == "rcpt" and self._listing is not None:
            d = self._when_listed().addCallback(self._rcpt_allowed, rcpt)
            d.addCallback(lambda _: self.conf.policy.check_recipient(s, rcpt))
        else:
            d = self.conf.policy.check_recipient(s, rcpt)

        def ok(resolution: Any) -> None:
            s.recipients.append(rcpt)
            s.resolutions.append(resolution)
            if notify or original:
                s.rcpt_dsn[rcpt] = (notify, original)
            self._send(Reply(250, "2.1.5", "Ok"))

        return d.addCallback(ok)

    def _rcpt_allowed(self, listing: Any, rcpt: str) -> None:
        """A listed client may still write to postmaster (RFC 5321 4.5.1), so that a
        wrongly listed sender can reach us."""
        s = self.session
        if listing is None or (s is not None and s.auth_user) or rcpt.partition("@")[0].lower() == "postmaster":
            return
        ip = s.client_ip if s else ""
        raise Reply(554, "5.7.1", f"<{rcpt}>: {listing.reply_text(ip)}")

    def do_DATA(self, arg: str) -> None:
        s = self.session
        if arg:
            raise Reply(501, "5.5.4", "Syntax: DATA")
        if s.sender is None:
            raise Reply(503, "5.5.1", "Error: need MAIL command")
        if not s.recipients:
            raise Reply(554, "5.5.1", "Error: no valid recipients")
        if self._chunks is not None or self._chunk_error is not None:
            raise Reply(503, "5.5.1", "Error: DATA after BDAT in one transaction")
        if s.body == "BINARYMIME":
            # RFC 3030 3: a binary body has no end marker; it must come by BDAT.
            raise Reply(503, "5.5.1", "Error: BODY=BINARYMIME requires BDAT")
        self._open_message()
        self._data = DataReader(self.svc.max_message_size, self.svc.max_line_length, self.svc.bare_newline)
        self.setTimeout(self.svc.data_timeout)
        self._send(Reply(354, "", "End data with <CR><LF>.<CR><LF>"))

    def _open_message(self) -> None:
        """Start receiving a body (DATA or the first BDAT): a queue id, the incoming
        file with our Received: line, and the header watcher."""
        self._queue_id = new_queue_id()
        try:
            self._incoming = IncomingMessage(self.conf.incoming_dir, self._queue_id)
            self._incoming.write(self._received_header())
        except OSError as e:
            log.error("smtp: cannot open incoming file: {e}", e=e)
            self._incoming = None
            raise _local_error(e) from None
        # Every message's header block is watched: for the hop count (mail loops), and
        # on submission for the From: check and the fields an MSA adds.
        self._headers = (HeaderScanner(("from",), self._missing_headers) if self.conf.submission
                         else HeaderScanner(()))

    # -- BDAT (RFC 3030) -------------------------------------------------------------

    def do_BDAT(self, arg: str) -> None:
        s = self.session
        parts = arg.split()
        if not parts or not parts[0].isdigit() or len(parts[0]) > 12:
            # Without a size the chunk's end cannot be found: the stream is lost.
            self._send(Reply(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]; closing connection"))
            log.info("smtp: [{ip}] BDAT without a chunk size; closed", ip=s.client_ip)
            self._closing = True
            self.transport.loseConnection()
            return
        self._chunk_left = int(parts[0])
        self._chunk_last = len(parts) == 2 and parts[1].upper() == "LAST"
        error: Reply | None = None
        if len(parts) > 2 or (len(parts) == 2 and not self._chunk_last):
            error = Reply(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]")
        elif s.sender is None:
            error = Reply(503, "5.5.1", "Error: need MAIL command")
        elif not s.recipients:
            error = Reply(554, "5.5.1", "Error: no valid recipients")
        elif self._data is not None:
            error = Reply(503, "5.5.1", "Error: BDAT after DATA")
        elif self._chunks is None and self._chunk_error is None:
            try:
                self._open_message()
            except Reply as r:
                error = r
            else:
                self._chunks = ChunkReader(self.svc.max_message_size, self.svc.max_line_length,
                                           binary=s.body == "BINARYMIME")
        if error is not None and self._chunk_error is None:
            self._fail_chunks(error)
        self.setTimeout(self.svc.data_timeout)
        if not self._chunk_left:
            self._chunk_done()

    def _feed_chunk(self) -> None:
        take = self._buffer.take(self._chunk_left)
        self._chunk_left -= len(take)
        reader = self._chunks
        if reader is not None:
            end = not self._chunk_left and self._chunk_last
            body = reader.feed(take)
            self._store(body + reader.finish() if end else body, reader.rejected, end)
        if not self._chunk_left:
            self._chunk_done()

    def _fail_chunks(self, reply: Reply) -> None:
        """The BDAT transaction failed: its remaining chunks are read and get ``reply``."""
        self._chunk_error = reply
        self._chunks = None
        if self._incoming is not None:
            self._incoming.discard()
            self._incoming = None
        self._headers = None

    def _chunk_done(self) -> None:
        reader = self._chunks
        if reader is not None and reader.rejected and not self._chunk_last:
            self._fail_chunks(Reply(552, "5.3.4", "Error: message file too big") if reader.too_big else
                              Reply(500, "5.5.2", f"Error: message line longer than {self.svc.max_line_length} octets"))
        if self._chunk_error is not None:
            reply = self._chunk_error
            if self._chunk_last:
                self._chunk_error = None
                self.session.reset()
                self.setTimeout(self.svc.command_timeout)
            self._reject(reply, "BDAT")
            return
        assert reader is not None
        if not self._chunk_last:
            self.setTimeout(self.svc.command_timeout)
            self._send(Reply(250, "2.0.0", f"{reader.size} octets received"))
            return
        self._chunks = None
        self._end_of_data(reader)

    def do_RSET(self, arg: str) -> None:
        self.session.reset()
        self._end_data_state()
        self._send(Reply(250, "2.0.0", "Ok"))

    def do_NOOP(self, arg: str) -> None:
        self._send(Reply(250, "2.0.0", "Ok"))

    def do_VRFY(self, arg: str) -> None:
        # Answering VRFY truthfully would let anyone harvest addresses (RFC 5321 7.3).
        self._send(Reply(252, "2.0.0", "Send some mail, I'll try my best"))

    def do_HELP(self, arg: str) -> None:
        self._send(Reply(214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS AUTH"))

    def do_QUIT(self, arg: str) -> None:
        self._send(Reply(221, "2.0.0", "Bye"))
        self._closing = True
        self.transport.loseConnection()

    def do_STARTTLS(self, arg: str) -> None:
        s = self.session
        if arg:
            raise Reply(501, "5.5.4", "Syntax: STARTTLS")
        if self.conf.tls_context is None:
            raise Reply(502, "5.5.1", "Error: command not implemented")
        if s.tls:
            raise Reply(503, "5.5.1", "Error: TLS already active")
        if s.auth_user:
            raise Reply(503, "5.5.1", "Error: already authenticated")
        self._send(Reply(220, "2.0.0", "Ready to start TLS"))
        start_tls(self.transport, self.conf.tls_context, self._buffer, "smtp", s.client_ip)
        self._tls_pending = True
        self.setTimeout(self.conf.handshake_timeout)
        # RFC 3207 4.2: forget everything learnt before TLS.
        s.helo, s.esmtp, s.tls = None, False, "TLS"
        s.reset()

    # -- AUTH (RFC 4954) -------------------------------------------------------------

    def do_AUTH(self, arg: str) -> Any:
        s = self.session
        if not arg:
            raise Reply(501, "5.5.4", "Syntax: AUTH mechanism")
        if self.conf.portal is None or not self.conf.offer_auth:
            raise Reply(503, "5.5.1", "Error: authentication not enabled")
        if s.auth_user:
            raise Reply(503, "5.5.1", "Error: already authenticated")
        if s.sender is not None:
            raise Reply(503, "5.5.1", "Error: MAIL transaction in progress")
        if not s.tls and not self.conf.allow_plaintext_auth:
            raise Reply(530, "5.7.0", "Must issue a STARTTLS command first")
        mech, _, initial = arg.partition(" ")
        waiter: defer.Deferred = defer.Deferred()
        try:
            exchange = SASLExchange(mech)
            self._auth_next(exchange, exchange.start(initial.encode() if initial else None), waiter)
        except SASLError as e:
            raise _answer(e.outcome) from None
        return waiter

    def _auth_next(self, exchange: SASLExchange, step: bytes | Credentials, waiter: defer.Deferred) -> None:
        """Send the next challenge (334) or, with the credentials complete, log in."""
        if isinstance(step, Credentials):
            self._login(step, waiter)
            return

        def respond(line: bytes) -> None:
            try:
                self._auth_next(exchange, exchange.respond(line), waiter)
            except SASLError as e:
                self._auth_done(waiter, _answer(e.outcome))

        sending.send(self.transport, self._raw, b"334 " + base64.b64encode(step) + b"\r\n")
        self._auth_step = respond

    def _login(self, creds: Credentials, waiter: defer.Deferred) -> None:
        ip = self.session.client_ip

        def ok(login: Any) -> None:
            self.session.auth_user = login.name
            log.info("smtp: [{ip}] authenticated as {user}", ip=ip, user=login.name)
            self._auth_done(waiter, Reply(235, "2.7.0", "Authentication successful"))

        def bad(f: Failure) -> None:
            f.trap(LoginFailed)
            if self.transport is None or self._closing:
                if not waiter.called:
                    waiter.callback(None)
                return
            failure = f.value
            if failure.outcome is Outcome.REFUSED:
                self._auth_refusals += 1
                if self._auth_refusals > 1:
                    self._auth_close(waiter)
                    return
            elif failure.refused_now:
                self._auth_close(waiter)
                return
            self._auth_done(waiter, _answer(failure.outcome))

        self.factory.logins.login(ip, creds, ISMTPAvatar).addCallbacks(ok, bad)

    def _auth_close(self, waiter: defer.Deferred) -> None:
        """421 and close: this client keeps failing (or keeps trying while refused)."""
        self._send(Reply(421, "4.7.0", f"{self.conf.hostname} Too many authentication failures, closing connection"))
        self._closing = True
        self.transport.loseConnection()
        if not waiter.called:
            waiter.callback(None)

    def _auth_done(self, waiter: defer.Deferred, reply: Reply) -> None:
        if reply.code >= 400:
            self._errors += 1
        self._send(reply)
        if not waiter.called:
            waiter.callback(None)

    # -- DATA ------------------------------------------------------------------------

    def _received_header(self) -> bytes:
        s = self.session
        if s.tls and s.tls == "TLS":
            s.tls = tls_description(self.transport) or "TLS"
        # RFC 6531 4.3: UTF8SMTP (+S, +A) names a transaction that used SMTPUTF8.
        proto = ("UTF8SMTP" if s.smtputf8 else "ESMTP") if s.esmtp else "SMTP"
        if s.tls:
            proto += "S"
        if s.auth_user:
            proto += "A"
        tls_part = f"\n\t(using {s.tls})" if s.tls and s.tls != "TLS" else ""
        auth_part = f"\n\t(Authenticated sender: {s.auth_user})" if s.auth_user else ""
        # A-labels, so that an IDN domain alone never makes the message need SMTPUTF8.
        rcpt_part = f"\n\tfor <{_ascii_or_as_is(s.recipients[0])}>" if len(s.recipients) == 1 else ""
        text = (
            f"Received: from {s.helo} ([{s.client_ip}]){tls_part}{auth_part}\n"
            f"\tby {self.conf.hostname} (mailsuite) with {proto} id {self._queue_id}{rcpt_part};\n"
            f"\t{formatdate(localtime=True)}\n"
        )
        return text.encode("utf-8", "replace")

    def _missing_headers(self, present: frozenset[str]) -> bytes:
        """RFC 6409 8.2, 8.3: the MSA adds Message-ID and Date when they are missing."""
        if not self.conf.add_missing_headers:
            return b""
        out = ""
        if "message-id" not in present:
            out += f"Message-ID: {make_msgid(idstring=self._queue_id, domain=self.conf.hostname)}\n"
        if "date" not in present:
            out += f"Date: {formatdate(localtime=True)}\n"
        return out.encode("ascii")

    def _feed_data(self) -> None:
        assert self._data is not None
        fed = self._data.feed(self._buffer.take_all())
        self._store(fed.body, self._data.rejected, fed.finished)
        if fed.finished:
            self._buffer.unread(fed.rest)
            reader, self._data = self._data, None
            self._end_of_data(reader)

    def _store(self, body: bytes, rejected: bool, end: bool) -> None:
        """Body bytes of DATA or BDAT through the header watcher into the incoming file
        (``end``: the message is complete, the watcher adds what it holds back)."""
        if self._headers is not None and not rejected:
            body = self._headers.feed(body)
            if end:
                body += self._headers.finish()
        if body and self._incoming is not None:
            try:
                self._incoming.write(body)
            except OSError as e:
                log.error("smtp: {qid}: write failed: {e}", qid=self._queue_id, e=e)
                self._incoming.discard()
                self._incoming = None
                self._write_error = e

    def _end_data_state(self) -> None:
        self._data = None
        self._chunks = None
        self._chunk_error = None
        if self._incoming is not None:
            self._incoming.discard()
            self._incoming = None

    def _end_of_data(self, reader: DataReader | ChunkReader) -> None:
        s = self.session
        incoming, self._incoming = self._incoming, None
        self.setTimeout(self.svc.command_timeout)
        qid = self._queue_id
        assert reader is not None
        if incoming is None:
            reply = _local_error(self._write_error)
            self._write_error = None
        elif reader.too_big:
            reply = Reply(552, "5.3.4", "Error: message file too big")
        elif reader.bare_newline:
            # [smtp] bare_newline = "reject" (Postfix's smtpd_forbid_bare_newline).
            reply = Reply(550, "5.5.2", "Error: bare <CR> or <LF> received")
        elif reader.line_too_long:
            reply = Reply(500, "5.5.2", f"Error: message line longer than {self.svc.max_line_length} octets")
        elif self._headers is not None and self._headers.received >= self.svc.max_hops:
            # RFC 5321 6.3: a message that passed this many relays is looping.
            reply = Reply(554, "5.4.6", f"Too many hops ({self._headers.received} Received: lines); mail loop?")
        elif self._headers is not None and self.conf.submission:
            reply = self.conf.policy.check_from_header(s, self._headers.field_values("from"))
        else:
            reply = None
        self._headers = None
        if reply is not None:
            if incoming is not None:
                incoming.discard()
            self._log_message(qid, reader.size, f"rejected ({reply.code} {reply.status} {reply.text})")
            self._send(reply)
            s.reset()
            return
        body = incoming.finish()
        mailboxes: dict[str, str] = {}
        forwards: list[str] = []
        for rcpt, res in zip(s.recipients, s.resolutions):
            for box in res.mailboxes:
                mailboxes.setdefault(box, rcpt)
            for fwd in res.forwards:
                if fwd not in forwards:
                    forwards.append(fwd)
        env = Envelope(
            queue_id=qid,
            sender=s.sender or "",
            recipients=tuple(s.recipients),
            mailboxes=mailboxes,
            forwards=tuple(forwards),
            client_ip=s.client_ip,
            helo=s.helo or "",
            auth_user=s.auth_user,
            arrival=time.time(),
            smtputf8=s.smtputf8,
            body=s.body,
            ret=s.ret,
            envid=s.envid,
            rcpt_dsn=dict(s.rcpt_dsn),
            requiretls=s.requiretls,
        )
        s.reset()
        self._busy = True
        # No command timeout while the message is made durable: a 421 now, followed by
        # the delivery succeeding, would make the client send it again (a duplicate).
        self.setTimeout(None)
        d = self.conf.dispatcher.accept(env, body)

        def accepted(result: str) -> None:
            self.conf.policy.message_accepted(s)
            self.conf.metrics.message_received("submission" if self.conf.submission else "smtp")
            self._log_message(qid, reader.size, result, env)
            self._send(Reply(250, "2.0.0", f"Ok: queued as {qid}"))

        def failed(f: Failure) -> None:
            if f.check(PermanentFailure):
                e = f.value
                self._log_message(qid, reader.size, f"rejected ({e.status} {f.getErrorMessage()})", env)
                # RFC 5321 4.2.2: 552 is "exceeded storage allocation" (5.2.2: larger than the quota).
                code = 554 if e.status.startswith("5.3") else 552 if e.status.startswith("5.2.") else 550
                self._send(Reply(code, e.status, e.reply or "Error: message not accepted"))
                return
            if f.check(TemporaryFailure):
                status, text = f.value.status, f.value.reply
            elif is_disk_full(f.value):
                status, text = NO_SPACE_STATUS, NO_SPACE_TEXT
            else:
                log.failure("smtp: {qid}: dispatch failed", f, qid=qid)
                status, text = "4.3.0", None
            self._log_message(qid, reader.size, f"deferred ({f.getErrorMessage()})", env)
            # RFC 5321 4.2.2: 452 is "insufficient system storage"; a full mailbox
            # (4.2.2, quota) is storage the client should wait for too.
            code = 452 if status in (NO_SPACE_STATUS, "4.2.2") else 451
            self._send(Reply(code, status, text or "Error: local error in processing, try again later"))

        d.addCallbacks(accepted, failed)
        d.addBoth(self._restart_timeout)
        d.addBoth(self._resume)

    def _restart_timeout(self, result: object = None) -> object:
        if not self._closing:
            self.setTimeout(self.svc.command_timeout)
        return result

    def _log_message(self, qid: str, size: int, result: str, env: Envelope | None = None) -> None:
        s = self.session
        sender = env.sender if env else (s.sender or "")
        rcpts = env.recipients if env else tuple(s.recipients)
        log.info(
            "smtp: {qid}: client=[{ip}] from=<{sender}> to={rcpts} size={size} result={result}",
            qid=qid,
            ip=s.client_ip,
            sender=escaped(sender),
            rcpts=",".join(f"<{escaped(r)}>" for r in rcpts[:50]),
            size=size,
            result=result,
        )
