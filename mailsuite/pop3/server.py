"""The POP3 server protocol: RFC 1939 with CAPA and response codes (RFC 2449), STLS
(RFC 2595) and AUTH PLAIN (RFC 5034), over INBOX of the Maildir store.

Written on ``twisted.internet.protocol.Protocol`` rather than as a subclass of
``twisted.mail.pop3.POP3``: the stock class would need nearly every command replaced
(research §5): it stuffs dots per 16 KiB chunk (a '.' line after a chunk boundary
ends RETR early), counts, lists and UIDLs deleted messages, has no STLS, cannot do
AUTH PLAIN, has APOP broken on Python 3, ignores the Deferred of its QUIT sync (so a
failed delete still says +OK), and crashes its error handler on str exception args.
What is reused: the reactor, TimeoutMixin, twisted.cred (the shared portal), and the
TLS transport's startTLS.

Behaviour worth knowing:

* The maildrop is INBOX, fixed at login (RFC 1939): the session keeps a reference to
  the store's published message list (no per-session copy) and the set of deleted
  message numbers.  New mail shows up at the next login.
* A second POP3 session of the same account in this process gets ``-ERR [IN-USE]``;
  IMAP sessions may use the same folder meanwhile (the store keeps them consistent;
  a message IMAP expunges gives ``-ERR`` on RETR).
* DELE only marks; QUIT (UPDATE state) expunges through the store, fsynced, and then
  answers.  A dropped connection deletes nothing.  Messages sent by RETR get \\Seen in
  the store at the end of the session, in one batch (so IMAP sees them read, as with
  Dovecot); TOP does not mark.
* UIDL is Dovecot's default form ``%08X(uid)%08X(uidvalidity)``, from the store's
  UIDs: stable across sessions and restarts, and unchanged for a Maildir migrated from
  Dovecot with its dovecot-uidlist (the store imports it).
* Before TLS (STLS, or the implicit-TLS port) USER, PASS and AUTH are refused with
  ``-ERR [AUTH]`` and not advertised, unless ``[server] allow_plaintext_auth``.
* Limits: command line length (``[pop3] max_line_length``), idle timeout
  (``idle_timeout``, 10 minutes as RFC 1939 asks), connections per IP, errors per
  connection, authentication failures (the shared throttle delays and refuses; three
  failures close the connection).
* Commands may be pipelined (CAPA PIPELINING); replies keep their order.  Lines sent
  after STLS before the handshake are discarded (command injection).
* TCP_NODELAY is set: a RETR reply otherwise waits for the client's delayed ACK.
* UTF8 (RFC 6856): advertised as ``UTF8 USER``; the command, in the AUTHORIZATION
  state, switches the session to UTF-8 mode (USER, PASS and AUTH already take UTF-8
  names).  Messages are sent as stored in both modes: no downgrade (RFC 6857) is
  done, as Dovecot does not either.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from twisted.internet import defer, interfaces, protocol, reactor
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from mailsuite import filelock
from mailsuite.frontend import (
    POP3_ANSWERS, TOO_LONG, ConnectionCounts, Credentials, LineBuffer, LoginFailed, LoginGate, Outcome,
    RequestDeadline, SASLError, SASLExchange, Slot, set_no_delay, start_tls,
)
from mailsuite.frontend import sending
from mailsuite.logtext import quoted
from mailsuite.pop3.stream import CHUNK, encode_all, iter_encoded, top_lines
from mailsuite.store.errors import MessageGone
from mailsuite.store.interface import IAccountStore, IFolder, MessageRecord

log = Logger(namespace="mailsuite.pop3")

AUTHORIZATION, TRANSACTION, UPDATE = "AUTHORIZATION", "TRANSACTION", "UPDATE"
# Messages up to this size are read and sent in one write; larger ones are streamed.
_WHOLE = 1 << 20
_MAX_BUFFERED = 1 << 16  # pipelined input held while a command runs, before pausing
_MAX_AUTH_FAILURES = 3


class IPOP3Account(Interface):
    """The POP3 avatar: whose maildrop a session opens, and how."""

    name = Attribute("the account name, local@domain")

    def open_maildrop() -> Deferred:
        """Fire with the account's INBOX as an :class:`~mailsuite.store.interface.IFolder`
        (the session closes it once)."""


@implementer(IPOP3Account)
@dataclass(frozen=True)
class POP3Account:
    """The avatar the realm builds per POP3 login, over the store's account."""

    mailbox: IAccountStore

    @property
    def name(self) -> str:
        return self.mailbox.name

    def open_maildrop(self) -> Deferred:
        return self.mailbox.open("INBOX")


class MaildropLocks:
    """Accounts with a POP3 session in the TRANSACTION state (RFC 1939: exclusive).

    An flock on ``mailsuite-pop3.lock`` in the account's Maildir, so that a session in
    another worker process, or on another node sharing the mail tree, finds the
    maildrop in use too; a process killed with -9 releases it with its descriptors.
    Taking it is one open() and a non-blocking flock, quick enough for the reactor.
    """

    LOCK_NAME = "mailsuite-pop3.lock"

    def __init__(self, account_dir: Callable[[str], Path]) -> None:
        self.account_dir = account_dir
        self._held: dict[str, int] = {}

    def acquire(self, account: str) -> bool:
        if account in self._held:
            return False
        try:
            fd = filelock.try_lock(self.account_dir(account) / self.LOCK_NAME)
        except OSError as e:
            log.error("pop3: {user}: cannot take the maildrop lock: {why}", user=account, why=e)
            return False
        if fd is None:
            return False
        self._held[account] = fd
        return True

    def release(self, account: str) -> None:
        fd = self._held.pop(account, None)
        if fd is not None:
            filelock.unlock(fd)


@dataclass(frozen=True)
class POP3FactoryConfig:
    hostname: str
    service: Any  # config.POP3Config
    portal: Any
    throttle: Any  # auth.throttle.AuthThrottle or None
    tls_context: Any  # None when no certificate
    implicit_tls: bool
    allow_plaintext_auth: bool


class POP3ServerFactory(protocol.Factory):
    noisy = False

    def __init__(self, conf: POP3FactoryConfig, connections: ConnectionCounts, locks: MaildropLocks) -> None:
        self.conf = conf
        self.connections = connections  # per client IP, shared by 110 and 995
        self.locks = locks
        self.logins = LoginGate(conf.portal, conf.throttle, "pop3")

    def buildProtocol(self, addr: Any) -> "POP3Server":
        p = POP3Server(self.conf)
        p.factory = self
        return p


class _Reply(Exception):
    """Raised by a command handler to answer ``-ERR <text>``."""


def uidl_of(uid: int, uidvalidity: int) -> str:
    return f"{uid:08X}{uidvalidity:08X}"


@implementer(interfaces.IPullProducer)
class _MessageProducer:
    """Streams one large message (RETR) to the transport as it drains."""

    def __init__(self, proto: "POP3Server", f: Any, head: bytes) -> None:
        self.proto = proto
        self.f = f
        self.head = head
        self.chunks = iter_encoded(f, CHUNK)
        self.done: defer.Deferred = defer.Deferred()
        self.finished = False

    def start(self) -> defer.Deferred:
        self.proto.transport.registerProducer(self, False)
        return self.done

    def resumeProducing(self) -> None:
        if self.finished:
            return
        if self.head:
            data, self.head = self.head, b""
            self.proto.transport.write(data)
            return
        try:
            chunk = next(self.chunks)
        except StopIteration:
            self._finish(b".\r\n")
            return
        except OSError as e:
            log.error("pop3: reading a message failed: {e}", e=e)
            self.proto.transport.abortConnection()
            self._finish(None)
            return
        self.proto.transport.write(chunk)
        self.proto.resetTimeout()

    def _finish(self, tail: bytes | None) -> None:
        self.finished = True
        self.f.close()
        if tail is not None:
            self.proto.transport.write(tail)
        self.proto.transport.unregisterProducer()
        self.done.callback(tail is not None)

    def stopProducing(self) -> None:
        if not self.finished:
            self.finished = True
            self.f.close()
            self.done.callback(False)


class POP3Server(protocol.Protocol, TimeoutMixin):
    factory: POP3ServerFactory

    def __init__(self, conf: POP3FactoryConfig) -> None:
        self.conf = conf
        self.svc = conf.service
        self.state = AUTHORIZATION
        self.ip = ""
        self.tls = conf.implicit_tls
        self.utf8 = False  # the client sent UTF8 (RFC 6856)
        self._buffer = LineBuffer(conf.service.max_line_length, _MAX_BUFFERED)
        self._pace = RequestDeadline(conf.service.request_deadline, conf.service.min_data_rate, self._too_slow)
        self._busy = False
        self._processing = False
        self._closing = False
        self._slot: Slot | None = None
        self._errors = 0
        self._auth_failures = 0
        self._user: bytes | None = None
        self._sasl: Callable[[bytes], Any] | None = None  # the next step of AUTH
        self.account: str | None = None
        self._logout: Callable[[], None] | None = None
        self._folder: IFolder | None = None
        self._msgs: Sequence[MessageRecord] = ()
        self._uidvalidity = 0
        self._total = 0
        self._deleted: set[int] = set()
        self._deleted_size = 0
        self._retrieved: set[int] = set()
        self._finished = False
        self._activity = reactor.seconds()
        self._raw = None  # the plain TCP connection replies go straight to (frontend/sending.py)

    # -- connection -----------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.ip = getattr(peer, "host", "") or ""
        set_no_delay(self.transport)
        self._slot = self.factory.connections.admit(self.ip, self.svc.max_connections_per_ip)
        if self._slot is None:
            log.warn("pop3: connection from [{ip}] refused: too many connections", ip=self.ip)
            self._send(b"-ERR [SYS/TEMP] Too many connections from your address")
            self._close()
            return
        self._raw = sending.plain_tcp(self.transport)
        self.setTimeout(self.svc.idle_timeout)
        self._send(b"+OK mailsuite POP3 server ready.")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.setTimeout(None)
        self._pace.stop()
        self._closing = True
        if self._slot is not None:
            self._slot.release()
        if self.state != UPDATE:
            if self._folder is not None and self._deleted:
                log.info("pop3: {user} [{ip}] disconnected without QUIT: {n} deletion(s) not done",
                         user=self.account, ip=self.ip, n=len(self._deleted))
            self._end_session(mark_seen=True)

    def resetTimeout(self) -> None:
        # Called for every command and every chunk of a streamed message: only note
        # the time (rescheduling the DelayedCall each time costs more than a RETR's
        # file read); timeoutConnection checks it and re-arms for the rest.
        self._activity = reactor.seconds()

    def timeoutConnection(self) -> None:
        idle = reactor.seconds() - self._activity
        if idle < self.svc.idle_timeout:
            self.setTimeout(self.svc.idle_timeout - idle)
            return
        log.info("pop3: [{ip}] idle timeout", ip=self.ip)
        self._send(b"-ERR Disconnected for inactivity.")
        self._close()

    def _too_slow(self) -> None:
        """The request deadline passed (frontend/pacing.py): a trickling client."""
        log.info("pop3: [{ip}] command line not received within the request deadline ({n}s + 1s per {rate} "
                 "bytes); closing", ip=self.ip, n=self.svc.request_deadline, rate=self.svc.min_data_rate)
        self._send(b"-ERR Command too slow; closing.")
        self._close()

    def _close(self) -> None:
        self._closing = True
        self.transport.loseConnection()

    def _send(self, line: bytes) -> None:
        self._write(line + b"\r\n")

    def _write(self, data: bytes) -> None:
        """Write a whole reply, at once on plain TCP (frontend/sending.py)."""
        sending.send(self.transport, self._raw, data)

    def _end_session(self, mark_seen: bool) -> defer.Deferred:
        """Mark retrieved messages seen (if asked), close the folder, unlock; once."""
        if self._finished:
            return defer.succeed(None)
        self._finished = True
        folder, self._folder = self._folder, None
        d: defer.Deferred = defer.succeed(None)
        if folder is not None and mark_seen and self._retrieved:
            uids = [self._msgs[i].uid for i in self._retrieved]
            d.addCallback(lambda _: folder.store_flags(uids, ["\\Seen"], "+"))
            d.addErrback(lambda f: log.failure("pop3: marking messages seen failed", f))
        account = self.account

        def unlock(_: Any) -> None:
            # Unlock before the folder's index is saved, so that the client's next
            # session (often right after QUIT) finds the maildrop free.
            if account is not None and folder is not None:
                self.factory.locks.release(account)
            if self._logout is not None:
                self._logout()
                self._logout = None
            if folder is not None:
                folder.close().addErrback(lambda f: log.failure("pop3: closing the maildrop failed", f))

        return d.addBoth(unlock)

    # -- input ------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        self._pace.received(len(data))
        self._buffer.feed(data)
        self._process()

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            buffer = self._buffer
            while not self._busy and not self._closing and buffer:
                line = buffer.next_line()
                if line is None:
                    break
                if line is TOO_LONG:
                    self._bad(b"-ERR Line too long.", "line too long")
                    continue
                self._line(line)
        finally:
            self._processing = False
        if not self._closing:
            self._buffer.hold(self.transport, self._busy)
            # A request is open while the client owes us the rest of it (not while we work).
            self._pace.open(not self._busy and bool(self._buffer))
        else:
            self._pace.stop()

    def _bad(self, reply: bytes, why: str) -> None:
        """An -ERR for bad input: logged, counted, and the connection closed at the limit."""
        log.info("pop3: [{ip}] {user}: {why}", ip=self.ip, user=self.account or "-", why=why)
        self._send(reply)
        self._errors += 1
        if self._errors >= self.svc.max_errors:
            log.warn("pop3: [{ip}] too many errors; closing", ip=self.ip)
            self._send(b"-ERR Too many errors, closing.")
            self._close()

    def _line(self, line: bytes) -> None:
        if self._sasl is not None:
            step, self._sasl = self._sasl, None
            self._run(step, line)
            return
        verb, _, arg = line.partition(b" ")
        try:
            name = verb.decode("ascii").upper()
        except UnicodeDecodeError:
            name = ""
        handler = getattr(self, f"do_{name}", None) if name.isalnum() else None
        if handler is None:
            self._bad(b"-ERR Unknown command.", f"unknown command {quoted(verb, 40)}")
            return
        allowed = _STATES.get(name, ())
        if self.state not in allowed:
            self._bad(f"-ERR {name} is not allowed in the {self.state} state.".encode(),
                      f"{name} in {self.state} state")
            return
        self._run(handler, arg)

    def _run(self, handler: Callable[[bytes], Any], arg: bytes) -> None:
        try:
            result = handler(arg)
        except _Reply as e:
            self._bad(b"-ERR " + str(e).encode(), str(e))
            return
        except Exception:
            log.failure("pop3: command failed")
            self._send(b"-ERR [SYS/TEMP] Internal error.")
            return
        if isinstance(result, defer.Deferred):
            self._busy = True

            def failed(f: Failure) -> None:
                log.failure("pop3: command failed", f)
                if not self._closing:
                    self._send(b"-ERR [SYS/TEMP] Internal error.")

            def done(_: Any) -> None:
                self._busy = False
                if not self._closing:
                    self._process()

            result.addErrback(failed).addBoth(done)

    # -- helpers ------------------------------------------------------------------------

    def _auth_allowed(self) -> bool:
        return self.tls or self.conf.allow_plaintext_auth

    def _refuse_plaintext(self) -> None:
        raise _Reply("[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")

    def _number(self, arg: bytes) -> int:
        """The 0-based index of message number ``arg`` (not deleted); raises _Reply."""
        text = arg.strip()
        if not text.isdigit() or len(text) > 9:
            raise _Reply("Invalid message number.")
        n = int(text)
        if not 1 <= n <= len(self._msgs):
            raise _Reply(f"There's no message {n}.")
        if n - 1 in self._deleted:
            raise _Reply(f"Message {n} is deleted.")
        return n - 1

    def _no_args(self, arg: bytes) -> None:
        if arg.strip():
            raise _Reply("This command takes no arguments.")

    # -- AUTHORIZATION --------------------------------------------------------------------

    def do_CAPA(self, arg: bytes) -> None:
        self._no_args(arg)
        caps = [b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING"]
        if self.state == AUTHORIZATION:
            caps.append(b"AUTH-RESP-CODE")
            if self._auth_allowed():
                caps += [b"USER", b"SASL PLAIN"]
            if not self.tls and self.conf.tls_context is not None:
                caps.append(b"STLS")
        caps.append(b"UTF8 USER")
        caps.append(b"IMPLEMENTATION mailsuite")
        self._write(b"+OK Capability list follows\r\n" + b"".join(c + b"\r\n" for c in caps) + b".\r\n")

    def do_STLS(self, arg: bytes) -> None:
        self._no_args(arg)
        if self.tls:
            raise _Reply("TLS is already active.")
        if self.conf.tls_context is None:
            raise _Reply("TLS is not available on this server.")
        self._send(b"+OK Begin TLS negotiation now.")
        start_tls(self.transport, self.conf.tls_context, self._buffer, "pop3", self.ip)
        self.tls = True
        self._user = None

    def do_USER(self, arg: bytes) -> None:
        if not self._auth_allowed():
            self._refuse_plaintext()
        user = arg.strip()
        if not user or b"\x00" in user:
            raise _Reply("USER needs a user name.")
        self._user = user
        self._send(b"+OK")

    def do_PASS(self, arg: bytes) -> Any:
        if not self._auth_allowed():
            self._refuse_plaintext()
        if self._user is None:
            raise _Reply("Give USER first.")
        user, self._user = self._user, None
        # RFC 1939 7: the password may contain spaces; only the CRLF ends it.
        return self._login(Credentials(user, arg))

    def do_APOP(self, arg: bytes) -> None:
        raise _Reply("APOP is not supported.")

    def do_UTF8(self, arg: bytes) -> None:
        """RFC 6856 2: UTF-8 mode for the rest of the session."""
        self._no_args(arg)
        self.utf8 = True
        self._send(b"+OK UTF8 enabled")

    def do_AUTH(self, arg: bytes) -> Any:
        if not self._auth_allowed():
            self._refuse_plaintext()
        mech, _, initial = arg.strip().partition(b" ")
        if not mech:
            # The pre-RFC 5034 probe (fetchmail, Outlook): list the mechanisms.
            self._write(b"+OK\r\nPLAIN\r\n.\r\n")
            return None
        if mech.upper() != b"PLAIN":
            raise _Reply("Unsupported authentication mechanism.")
        exchange = SASLExchange(mech)
        return self._sasl_step(exchange, lambda: exchange.start(initial.strip() or None))

    def _sasl_step(self, exchange: SASLExchange, step: Callable[[], bytes | Credentials]) -> Any:
        """Run one step of an AUTH exchange: a challenge (``+ ``) or the login."""
        try:
            result = step()
        except SASLError as e:
            raise _Reply(POP3_ANSWERS[e.outcome][len(b"-ERR "):].decode()) from None
        if isinstance(result, Credentials):
            return self._login(result)
        self._send(b"+ " + base64.b64encode(result))
        self._sasl = lambda line: self._sasl_step(exchange, lambda: exchange.respond(line))
        return None

    def _login(self, creds: Credentials) -> defer.Deferred:
        d = self.factory.logins.login(self.ip, creds, IPOP3Account)
        return d.addCallbacks(self._authenticated, self._auth_failed)

    def _auth_failed(self, failure: Failure) -> None:
        failure.trap(LoginFailed)
        if self._closing:
            return
        outcome = failure.value.outcome
        self._send(POP3_ANSWERS[outcome])
        if outcome is Outcome.REFUSED:
            self._close()
        elif outcome is Outcome.INVALID:
            self._auth_failures += 1
            if self._auth_failures >= _MAX_AUTH_FAILURES:
                log.info("pop3: [{ip}] {n} failed logins; closing", ip=self.ip, n=self._auth_failures)
                self._close()

    def _authenticated(self, login: Any) -> Any:
        account, logout = login.name, login.logout
        if self._closing:
            logout()
            return None
        if not self.factory.locks.acquire(account):
            logout()
            log.info("pop3: [{ip}] {user}: maildrop in use", ip=self.ip, user=account)
            self._send(b"-ERR [IN-USE] Mailbox is locked by another POP3 session.")
            return None
        self.account = account
        self._logout = logout
        d = login.avatar.open_maildrop()

        def opened(folder: IFolder) -> None:
            if self._closing:
                self._folder = folder
                self._end_session(mark_seen=False)
                return
            self._folder = folder
            self._msgs = folder.messages()
            self._uidvalidity = folder.uidvalidity
            self._total = sum(r.size for r in self._msgs)
            self.state = TRANSACTION
            log.info("pop3: [{ip}] {user} logged in ({tls}), {n} messages",
                     ip=self.ip, user=account, tls="TLS" if self.tls else "plaintext", n=len(self._msgs))
            self._send(b"+OK Logged in.")

        def failed(f: Failure) -> None:
            log.failure("pop3: opening the maildrop of {user} failed", f, user=account)
            self.factory.locks.release(account)
            self.account = None
            logout()
            self._logout = None
            if not self._closing:
                self._send(b"-ERR [SYS/TEMP] Cannot open the mailbox; try again later.")

        return d.addCallbacks(opened, failed)

    def do_QUIT(self, arg: bytes) -> Any:
        if self.state == AUTHORIZATION:
            self._send(b"+OK Logging out.")
            self._close()
            return None
        self.state = UPDATE
        folder = self._folder
        deleted = sorted(self._msgs[i].uid for i in self._deleted)
        seen = [self._msgs[i].uid for i in self._retrieved if i not in self._deleted]
        self._retrieved = set()
        d: defer.Deferred = defer.succeed(None)
        if seen:
            d.addCallback(lambda _: folder.store_flags(seen, ["\\Seen"], "+"))
            d.addErrback(lambda f: log.failure("pop3: marking messages seen failed", f))
        if deleted:
            d.addCallback(lambda _: folder.expunge(deleted))

        def updated(gone: Any) -> None:
            n = len(deleted)
            log.info("pop3: [{ip}] {user} logged out, {n} deleted", ip=self.ip, user=self.account, n=n)
            self._send(f"+OK Logging out, {n} messages deleted.".encode() if n else b"+OK Logging out.")

        def failed(f: Failure) -> None:
            log.failure("pop3: deleting messages of {user} failed", f, user=self.account)
            self._end_session(mark_seen=False)
            self._send(b"-ERR [SYS/TEMP] Some deleted messages could not be removed.")

        d.addCallback(lambda _: self._end_session(mark_seen=False).addCallback(updated))
        d.addErrback(failed)
        d.addBoth(lambda _: self._close())
        return d

    # -- TRANSACTION ---------------------------------------------------------------------------

    def do_NOOP(self, arg: bytes) -> None:
        self._no_args(arg)
        self._send(b"+OK")

    def do_STAT(self, arg: bytes) -> None:
        self._no_args(arg)
        n = len(self._msgs) - len(self._deleted)
        self._send(b"+OK %d %d" % (n, self._total - self._deleted_size))

    def do_LIST(self, arg: bytes) -> None:
        if arg.strip():
            i = self._number(arg)
            self._send(b"+OK %d %d" % (i + 1, self._msgs[i].size))
            return
        n = len(self._msgs) - len(self._deleted)
        deleted = self._deleted
        lines = [b"%d %d\r\n" % (i + 1, r.size) for i, r in enumerate(self._msgs) if i not in deleted]
        self._write(b"+OK %d messages (%d octets)\r\n" % (n, self._total - self._deleted_size)
                             + b"".join(lines) + b".\r\n")

    def do_UIDL(self, arg: bytes) -> None:
        v = self._uidvalidity
        if arg.strip():
            i = self._number(arg)
            self._send(f"+OK {i + 1} {uidl_of(self._msgs[i].uid, v)}".encode())
            return
        deleted = self._deleted
        lines = [f"{i + 1} {r.uid:08X}{v:08X}\r\n" for i, r in enumerate(self._msgs) if i not in deleted]
        self._write(b"+OK\r\n" + "".join(lines).encode() + b".\r\n")

    def do_DELE(self, arg: bytes) -> None:
        i = self._number(arg)
        self._deleted.add(i)
        self._deleted_size += self._msgs[i].size
        self._send(b"+OK Marked to be deleted.")

    def do_RSET(self, arg: bytes) -> None:
        self._no_args(arg)
        self._deleted = set()
        self._deleted_size = 0
        self._send(b"+OK")

    def _open(self, i: int) -> Any:
        try:
            return self._folder.open_message(self._msgs[i].uid)
        except MessageGone:
            raise _Reply(f"Message {i + 1} was removed by another session.") from None
        except OSError as e:
            log.error("pop3: {user}: cannot read message {uid}: {e}", user=self.account, uid=self._msgs[i].uid, e=e)
            raise _Reply("[SYS/TEMP] Cannot read the message.") from None

    def do_RETR(self, arg: bytes) -> Any:
        i = self._number(arg)
        rec = self._msgs[i]
        f = self._open(i)
        head = b"+OK %d octets\r\n" % rec.size
        if rec.size <= _WHOLE:
            with f:
                data = f.read()
            self._write(head + encode_all(data) + b".\r\n")
            self._retrieved.add(i)
            return None

        def sent(complete: bool) -> None:
            if complete:
                self._retrieved.add(i)  # \Seen only for a message the client got whole

        return _MessageProducer(self, f, head).start().addCallback(sent)

    def do_TOP(self, arg: bytes) -> None:
        msg, _, lines = arg.strip().partition(b" ")
        i = self._number(msg)
        lines = lines.strip()
        if not lines.isdigit() or len(lines) > 9:
            raise _Reply("Invalid number of lines.")
        with self._open(i) as f:
            body = top_lines(f, int(lines))
        self._write(b"+OK\r\n" + body + b".\r\n")


# The states in which each command is accepted.
_STATES: dict[str, tuple[str, ...]] = {
    "CAPA": (AUTHORIZATION, TRANSACTION),
    "QUIT": (AUTHORIZATION, TRANSACTION),
    "USER": (AUTHORIZATION,),
    "PASS": (AUTHORIZATION,),
    "APOP": (AUTHORIZATION,),
    "UTF8": (AUTHORIZATION,),
    "AUTH": (AUTHORIZATION,),
    "STLS": (AUTHORIZATION,),
    "NOOP": (TRANSACTION,),
    "STAT": (TRANSACTION,),
    "LIST": (TRANSACTION,),
    "UIDL": (TRANSACTION,),
    "RETR": (TRANSACTION,),
    "DELE": (TRANSACTION,),
    "RSET": (TRANSACTION,),
    "TOP": (TRANSACTION,),
}
