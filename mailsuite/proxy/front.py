"""The proxy's side towards the client: greet, offer STARTTLS, take the login, then
hand the session to the user's backend.

Each front speaks only what a client needs before it is logged in (IMAP: CAPABILITY,
NOOP, ID, STARTTLS, LOGIN, AUTHENTICATE, LOGOUT; POP3: CAPA, STLS, USER/PASS, AUTH,
QUIT; submission: EHLO/HELO, STARTTLS, AUTH, NOOP, RSET, QUIT).  The login goes
through the front-end base like every listener's (SASL decoding, the throttle, the
cred portal, one answer per outcome), so a proxy is no softer a target than a
backend.  The account's backend is its ``host`` from the directory (``[proxy]
host_attribute``), else ``[proxy] default_host``.  The proxy logs in there with the
same credentials and, once the backend says yes, answers the client and splices the
two connections: every later byte passes through unread.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import Interface

from mailsuite.frontend import (
    IMAP_ANSWERS, POP3_ANSWERS, SMTP_ANSWERS, TOO_LONG, ConnectionCounts, Credentials, LineBuffer, LoginFailed,
    LoginGate, Outcome, SASLError, SASLExchange, set_no_delay, start_tls,
)
from mailsuite.proxy import backend as bk

log = Logger(namespace="mailsuite.proxy")

PRE_AUTH_TIMEOUT = 60
MAX_LINE = 8192


class IProxyAccount(Interface):
    """The avatar of a proxy login: the directory's Account (its ``host``)."""


@dataclass(frozen=True)
class FrontConfig:
    hostname: str
    gate: LoginGate
    tls_context: Any  # server context for STARTTLS, or None
    allow_plaintext_auth: bool
    backend: Callable[[str], bk.Backend | None]  # host name from the account -> Backend
    max_connections_per_ip: int = 20


class ProxyFront(protocol.Protocol, TimeoutMixin):
    proto = ""

    def __init__(self, conf: FrontConfig, counts: ConnectionCounts, reactor: Any) -> None:
        self.conf = conf
        self.counts = counts
        self.reactor = reactor
        self.buffer = LineBuffer(MAX_LINE, 64 * 1024)
        self.tls = False
        self.busy = False
        self.spliced: bk.BackendClient | None = None
        self.slot: Any = None
        self.ip = ""
        self.sasl: SASLExchange | None = None
        self.literal: tuple[int, Callable[[bytes], None]] | None = None
        # The rest of a command after a literal goes here instead of line().
        self.line_handler: Callable[[bytes], None] | None = None

    # -- connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.ip = getattr(peer, "host", "")
        self.slot = self.counts.admit(self.ip, self.conf.max_connections_per_ip)
        if self.slot is None:
            self.too_many()
            self.transport.loseConnection()
            return
        set_no_delay(self.transport)
        self.setTimeout(PRE_AUTH_TIMEOUT)
        self.greet()

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        if self.spliced is not None:
            self.spliced.transport.loseConnection()

    def timeoutConnection(self) -> None:
        log.info("{proto}-proxy: [{ip}] timeout before login", proto=self.proto, ip=self.ip)
        self.transport.loseConnection()

    def write(self, line: bytes) -> None:
        self.transport.write(line + b"\r\n")

    def dataReceived(self, data: bytes) -> None:
        if self.spliced is not None:
            self.spliced.transport.write(data)
            return
        self.resetTimeout()
        self.buffer.feed(data)
        self._process()

    def _process(self) -> None:
        while not self.busy and self.spliced is None:
            if self.literal is not None:
                n, then = self.literal
                if len(self.buffer) < n:
                    break
                self.literal = None
                then(self.buffer.take(n))
                continue
            line = self.buffer.next_line()
            if line is None:
                break
            if line is TOO_LONG:
                self.too_long()
                continue
            if self.line_handler is not None:
                handler, self.line_handler = self.line_handler, None
                handler(line)
            elif self.sasl is not None:
                self._sasl_step(line)
            else:
                self.line(line)
        self.buffer.hold(self.transport, self.busy)

    def may_send_password(self) -> bool:
        return self.tls or self.conf.allow_plaintext_auth

    def starttls(self) -> None:
        start_tls(self.transport, self.conf.tls_context, self.buffer, self.proto, self.ip)
        self.tls = True

    # -- SASL ---------------------------------------------------------------------

    def start_sasl(self, mechanism: bytes, initial: bytes | None) -> None:
        try:
            self.sasl = SASLExchange(mechanism)
            self._sasl_next(self.sasl.start(initial))
        except SASLError as e:
            self.sasl = None
            self.refuse(e.outcome)

    def _sasl_step(self, line: bytes) -> None:
        assert self.sasl is not None
        if line.strip() == b"*":
            self.sasl = None
            self.refuse(Outcome.CANCELLED)
            return
        try:
            self._sasl_next(self.sasl.respond(line))
        except SASLError as e:
            self.sasl = None
            self.refuse(e.outcome)

    def _sasl_next(self, step: bytes | Credentials) -> None:
        if isinstance(step, Credentials):
            self.sasl = None
            self.login(step)
        else:
            self.challenge(base64.b64encode(step))

    # -- login and hand-over -------------------------------------------------------

    def login(self, creds: Credentials) -> None:
        self.busy = True
        d = defer.ensureDeferred(self._login(creds))

        def done(_: Any) -> None:
            self.busy = False
            if self.spliced is None:
                self._process()

        d.addErrback(lambda f: log.failure("{proto}-proxy: [{ip}] login failed", f, proto=self.proto, ip=self.ip))
        d.addBoth(done)

    async def _login(self, creds: Credentials) -> None:
        try:
            login = await self.conf.gate.login(self.ip, creds, IProxyAccount)
        except LoginFailed as e:
            self.refuse(e.outcome)
            return
        try:
            host = getattr(login.avatar, "host", "")
            target = self.conf.backend(host)
            if target is None:
                log.warn("{proto}-proxy: [{ip}] {user}: no backend named in the directory and no default_host",
                         proto=self.proto, ip=self.ip, user=login.name)
                self.refuse(Outcome.TEMPORARY)
                return
            try:
                client = await bk.connect(self.reactor, target)
                ok, answer = await self.backend_login(client, target, login.name.encode(), creds.password)
            except bk.BackendError as e:
                log.warn("{proto}-proxy: [{ip}] {user}: backend {host}: {why}", proto=self.proto, ip=self.ip,
                         user=login.name, host=target.host, why=str(e))
                self.refuse(Outcome.TEMPORARY)
                return
            if not ok:
                log.warn("{proto}-proxy: [{ip}] {user}: backend {host} refused the login: {answer}",
                         proto=self.proto, ip=self.ip, user=login.name, host=target.host,
                         answer=answer[:200].decode("ascii", "replace"))
                client.transport.loseConnection()
                self.refuse(Outcome.TEMPORARY)
                return
            if self.transport.disconnecting or not self.transport.connected:
                client.transport.loseConnection()
                return
            log.info("{proto}-proxy: [{ip}] {user} proxied to {host}:{port}", proto=self.proto, ip=self.ip,
                     user=login.name, host=target.host, port=target.port)
            self.logged_in(answer)
            self.setTimeout(None)
            self.spliced = client
            rest = self.buffer.take_all()
            bk.splice(self.transport, client)
            if self.buffer.paused:
                self.transport.resumeProducing()
            if rest:
                client.transport.write(rest)
        finally:
            login.logout()

    # -- per protocol ---------------------------------------------------------------
    # Abstract hooks: the IMAP, POP3 and submission fronts below each implement all of
    # them (tests/test_proxy.py drives the three); the base class is never instantiated.

    def greet(self) -> None:
        raise NotImplementedError

    def too_many(self) -> None:
        raise NotImplementedError

    def too_long(self) -> None:
        raise NotImplementedError

    def line(self, line: bytes) -> None:
        raise NotImplementedError

    def challenge(self, data: bytes) -> None:
        raise NotImplementedError

    def refuse(self, outcome: Outcome) -> None:
        raise NotImplementedError

    def logged_in(self, answer: bytes) -> None:
        raise NotImplementedError

    async def backend_login(self, client: bk.BackendClient, target: bk.Backend, user: bytes,
                            password: bytes) -> tuple[bool, bytes]:
        raise NotImplementedError


# -- IMAP ---------------------------------------------------------------------------

_ASTRING = re.compile(rb'\s*(?:"((?:[^"\\\r\n]|\\["\\])*)"|\{(\d{1,6})(\+?)\}$|([^\s(){%*"\\\]]+))')


class IMAPProxy(ProxyFront):
    proto = "imap"
    tag = b"*"

    def caps(self) -> bytes:
        caps = b"IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID"  # as the backends (imap/server.py)
        if not self.tls and self.conf.tls_context is not None:
            caps += b" STARTTLS"
        if self.may_send_password():
            caps += b" AUTH=PLAIN AUTH=LOGIN"
        else:
            caps += b" LOGINDISABLED"
        return caps

    def greet(self) -> None:
        self.write(b"* OK [CAPABILITY " + self.caps() + b"] " + self.conf.hostname.encode() + b" proxy ready")

    def too_many(self) -> None:
        self.write(b"* BYE [UNAVAILABLE] Too many connections from your address")

    def too_long(self) -> None:
        self.write(b"* BAD Line too long")

    def answer(self, status: bytes, text: bytes) -> None:
        self.write(self.tag + b" " + status + b" " + text)

    def line(self, line: bytes) -> None:
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0]:
            self.write(b"* BAD Missing tag or command")
            return
        self.tag = parts[0]
        cmd = parts[1].upper()
        rest = parts[2] if len(parts) > 2 else b""
        if cmd == b"CAPABILITY":
            self.write(b"* CAPABILITY " + self.caps())
            self.answer(b"OK", b"CAPABILITY completed")
        elif cmd == b"NOOP":
            self.answer(b"OK", b"NOOP completed")
        elif cmd == b"ID":
            self.write(b'* ID ("name" "mailsuite")')
            self.answer(b"OK", b"ID completed")
        elif cmd == b"LOGOUT":
            self.write(b"* BYE Logging out")
            self.answer(b"OK", b"LOGOUT completed")
            self.transport.loseConnection()
        elif cmd == b"STARTTLS":
            if self.tls or self.conf.tls_context is None:
                self.answer(b"BAD", b"STARTTLS not available")
            else:
                self.answer(b"OK", b"Begin TLS negotiation now")
                self.starttls()
        elif cmd == b"LOGIN":
            if not self.may_send_password():
                self.answer(b"NO", b"[PRIVACYREQUIRED] Use STARTTLS first")
                return
            self._login_args(rest, [])
        elif cmd == b"AUTHENTICATE":
            if not self.may_send_password():
                self.answer(b"NO", b"[PRIVACYREQUIRED] Use STARTTLS first")
                return
            mech, _, initial = rest.partition(b" ")
            self.start_sasl(mech, initial or None)
        else:
            self.answer(b"BAD", b"Log in first")

    def _login_args(self, rest: bytes, args: list[bytes]) -> None:
        while len(args) < 2:
            m = _ASTRING.match(rest)
            if not m:
                self.answer(b"BAD", b"Invalid LOGIN arguments")
                return
            if m.group(2) is not None:  # a literal ends the line; its bytes follow
                n = int(m.group(2))
                if n > 1024:
                    self.answer(b"BAD", b"Literal too long")
                    return
                if not m.group(3):
                    self.write(b"+ Ready")

                def got(data: bytes, args: list[bytes] = args) -> None:
                    args.append(data)
                    self._literal_tail(args)

                self.literal = (n, got)
                return
            value = m.group(1)
            args.append(re.sub(rb"\\(.)", rb"\1", value) if value is not None else m.group(4))
            rest = rest[m.end():]
        if rest.strip():
            self.answer(b"BAD", b"Too many LOGIN arguments")
            return
        self.login(Credentials(args[0], args[1]))

    def _literal_tail(self, args: list[bytes]) -> None:
        # After a literal, the command line continues on the next line.
        self.line_handler = lambda line: self._login_args(line, args)

    def challenge(self, data: bytes) -> None:
        self.write(b"+ " + data)

    def refuse(self, outcome: Outcome) -> None:
        status, code, text = IMAP_ANSWERS[outcome]
        self.answer(status.encode(), (f"[{code}] " if code else "").encode() + text.encode())

    def logged_in(self, answer: bytes) -> None:
        self.write(self.tag + b" " + answer)

    async def backend_login(self, client: bk.BackendClient, target: bk.Backend, user: bytes,
                            password: bytes) -> tuple[bool, bytes]:
        return await bk.imap_login(client, target, user, password)


# -- POP3 ---------------------------------------------------------------------------


class POP3Proxy(ProxyFront):
    proto = "pop3"
    user: bytes | None = None

    def greet(self) -> None:
        self.write(b"+OK " + self.conf.hostname.encode() + b" proxy ready.")

    def too_many(self) -> None:
        self.write(b"-ERR [SYS/TEMP] Too many connections from your address.")

    def too_long(self) -> None:
        self.write(b"-ERR Line too long.")

    def line(self, line: bytes) -> None:
        cmd, _, arg = line.partition(b" ")
        cmd = cmd.upper()
        if cmd == b"CAPA":
            self.write(b"+OK Capability list follows")
            for cap in [b"USER", b"RESP-CODES", b"PIPELINING", b"TOP", b"UIDL"] + (
                    [b"STLS"] if not self.tls and self.conf.tls_context is not None else []) + (
                    [b"SASL PLAIN LOGIN"] if self.may_send_password() else []):
                self.write(cap)
            self.write(b".")
        elif cmd == b"STLS":
            if self.tls or self.conf.tls_context is None:
                self.write(b"-ERR STLS not available.")
            else:
                self.write(b"+OK Begin TLS negotiation.")
                self.starttls()
        elif cmd == b"QUIT":
            self.write(b"+OK Bye.")
            self.transport.loseConnection()
        elif cmd in (b"USER", b"PASS", b"AUTH") and not self.may_send_password():
            self.write(b"-ERR [AUTH] Plaintext authentication disallowed; use STLS first.")
        elif cmd == b"USER":
            self.user = arg
            self.write(b"+OK")
        elif cmd == b"PASS":
            if not self.user:
                self.write(b"-ERR USER first.")
                return
            user, self.user = self.user, None
            self.login(Credentials(user, arg))
        elif cmd == b"AUTH":
            mech, _, initial = arg.partition(b" ")
            self.start_sasl(mech, initial or None)
        else:
            self.write(b"-ERR Log in first.")

    def challenge(self, data: bytes) -> None:
        self.write(b"+ " + data)

    def refuse(self, outcome: Outcome) -> None:
        self.write(POP3_ANSWERS[outcome])

    def logged_in(self, answer: bytes) -> None:
        self.write(answer)

    async def backend_login(self, client: bk.BackendClient, target: bk.Backend, user: bytes,
                            password: bytes) -> tuple[bool, bytes]:
        return await bk.pop3_login(client, target, user, password)


# -- submission -----------------------------------------------------------------------


class SubmissionProxy(ProxyFront):
    proto = "submission"

    def greet(self) -> None:
        self.write(b"220 " + self.conf.hostname.encode() + b" ESMTP mailsuite proxy")

    def too_many(self) -> None:
        self.write(b"421 4.7.0 Too many connections from your address")

    def too_long(self) -> None:
        self.write(b"500 5.5.2 Line too long")

    def line(self, line: bytes) -> None:
        cmd, _, arg = line.partition(b" ")
        cmd = cmd.upper()
        if cmd == b"EHLO":
            exts = [b"PIPELINING", b"8BITMIME", b"ENHANCEDSTATUSCODES"]
            if not self.tls and self.conf.tls_context is not None:
                exts.append(b"STARTTLS")
            if self.may_send_password():
                exts.append(b"AUTH PLAIN LOGIN")
            lines = [self.conf.hostname.encode()] + exts
            for i, ext in enumerate(lines):
                self.write(b"250" + (b" " if i == len(lines) - 1 else b"-") + ext)
        elif cmd == b"HELO":
            self.write(b"250 " + self.conf.hostname.encode())
        elif cmd == b"STARTTLS":
            if self.tls or self.conf.tls_context is None:
                self.write(b"502 5.5.1 STARTTLS not available")
            else:
                self.write(b"220 2.0.0 Ready to start TLS")
                self.starttls()
        elif cmd in (b"NOOP", b"RSET"):
            self.write(b"250 2.0.0 OK")
        elif cmd == b"QUIT":
            self.write(b"221 2.0.0 Bye")
            self.transport.loseConnection()
        elif cmd == b"AUTH":
            if not self.may_send_password():
                self.write(b"530 5.7.0 Must issue a STARTTLS command first")
                return
            mech, _, initial = arg.partition(b" ")
            self.start_sasl(mech, initial or None)
        elif cmd in (b"MAIL", b"RCPT", b"DATA", b"BDAT"):
            self.write(b"530 5.7.0 Authentication required")
        else:
            self.write(b"502 5.5.1 Command not recognized")

    def challenge(self, data: bytes) -> None:
        self.write(b"334 " + data)

    def refuse(self, outcome: Outcome) -> None:
        code, ext, text = SMTP_ANSWERS[outcome]
        self.write(f"{code} {ext} {text}".encode())

    def logged_in(self, answer: bytes) -> None:
        self.write(b"235 2.7.0 Authentication successful")

    async def backend_login(self, client: bk.BackendClient, target: bk.Backend, user: bytes,
                            password: bytes) -> tuple[bool, bytes]:
        return await bk.submission_login(client, target, user, password, self.conf.hostname.encode())


class ProxyFactory(protocol.Factory):
    noisy = False

    def __init__(self, cls: type[ProxyFront], conf: FrontConfig, reactor: Any) -> None:
        self.cls = cls
        self.conf = conf
        self.reactor = reactor
        self.counts = ConnectionCounts()

    def buildProtocol(self, addr: Any) -> ProxyFront:
        p = self.cls(self.conf, self.counts, self.reactor)
        p.factory = self
        return p
