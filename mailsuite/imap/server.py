"""The IMAP4rev1 and IMAP4rev2 server protocol: framing, literals, states, and the command handlers.

Why our own protocol on ``twisted.internet.protocol.Protocol`` and not a subclass of
``twisted.mail.imap4.IMAP4Server`` (research/twisted-mail.md §4, DESIGN.md): the
stock server has no expunge notification for other sessions (their sequence numbers
drift), sends no UIDNEXT/PERMANENTFLAGS/UNSEEN at SELECT, never sets \\Seen on
BODY[] fetches, echoes and ignores partial ``<a.b>``, parses no LITERAL+ (the literal
bytes are then run as commands), takes no literals in SEARCH, has no size limit on
APPEND literals, no UIDPLUS/MOVE/UNSELECT/ID/ENABLE/SPECIAL-USE, several str/bytes
bugs that turn NO into BAD or drop the connection, and a dispatch table that must be
re-bound per state for every override.  Fixing that would replace nearly every method
while keeping its fragile structure, so we keep Twisted's sound parts (the reactor
transport, ``startTLS``, ``TimeoutMixin``, cred portals, endpoints) and write the IMAP
state machine here, with a per-session view over the shared store folder
(:mod:`mailsuite.imap.selected`) that owns its sequence-number map.

Framing: commands are read line by line; a line ending in ``{n}`` / ``{n+}`` announces
a literal, whose size is checked against the limit of that command *before* any of it
is read (APPENDLIMIT for APPEND, a small limit for everything else) and which is
collected as bytes; the command is parsed (parser.py) once complete.  One command runs
at a time: while it waits on a Deferred, pipelined input stays buffered (and the
transport is paused past a bound), so responses keep their order.
"""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from mailsuite import fsutil
from mailsuite.frontend import (
    IMAP_ANSWERS, TOO_LONG, ConnectionCounts, Credentials, LineBuffer, LoginFailed, LoginGate, Outcome,
    RequestDeadline, SASLError, SASLExchange, Slot, ack_now, set_no_delay, start_tls,
)
from mailsuite.frontend import sending
from mailsuite.imap import compress
from mailsuite.imap import parser as P
from mailsuite.logtext import printable, quoted
from mailsuite.imap import wire
from mailsuite.imap.account import IMAPAccount
from mailsuite.imap.commands import MailboxCommands, QuotaCommands
from mailsuite.imap.condstore import CondstoreCommands
from mailsuite.imap.errors import Bad, No
from mailsuite.imap.rev2 import Rev2Commands
from mailsuite.imap.selected import SelectedMailbox
from mailsuite.imap.sort import SortCommands
from mailsuite.imap.thread import ThreadCommands

log = Logger(namespace="mailsuite.imap")

MAX_BUFFERED = 256 * 1024  # pipelined input held while a command runs
# A command other than APPEND holds its line and every literal in memory until it is
# complete: all of it together may take [imap] max_line_length bytes once logged in
# (as Dovecot's imap_max_line_length), this much before (LOGIN's two literals fit).
# One command is collected at a time, so this also bounds a connection (issue 16
# finding 4: 256 literals of 64 KiB each were allowed per command).
PREAUTH_COMMAND = 8 * 1024
MAX_LITERALS = 256
SPOOL_THRESHOLD = 1024 * 1024  # APPEND literals above this go to a file while they arrive


class SpooledLiteral:
    """An APPEND literal written to a file in the spool folder as it arrives.  ``len()``
    is its size (the parser checks it); the file is removed by :meth:`discard`, which
    the protocol calls when the command ends or the client goes away."""

    def __init__(self, folder: Path, size: int) -> None:
        fd, name = tempfile.mkstemp(prefix="append.", dir=folder)
        self.path = Path(name)
        self.file: Any = os.fdopen(fd, "wb")
        self.size = size

    def __len__(self) -> int:
        return self.size

    def write(self, data: bytes | bytearray) -> None:
        self.file.write(data)

    def finish(self) -> None:
        self.file.close()

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class IIMAPAccount(Interface):
    """What IMAP asks the realm for: an :class:`mailsuite.imap.account.IMAPAccount`."""


@dataclass
class IMAPFactoryConfig:
    hostname: str
    service: Any  # IMAPConfig
    portal: Any
    tls_context: Any = None
    implicit_tls: bool = False
    allow_plaintext_auth: bool = False
    throttle: Any = None
    spool_dir: Path | None = None  # where big APPEND literals are written while they arrive


def _answer(outcome: Outcome) -> No:
    """The tagged NO or BAD for a login or SASL outcome (frontend/answers.py)."""
    kind, code, text = IMAP_ANSWERS[outcome]
    return (Bad if kind == "BAD" else No)(text, code)


class IMAPServerFactory(Factory):
    noisy = False

    def __init__(self, conf: IMAPFactoryConfig, connections: ConnectionCounts | None = None) -> None:
        self.conf = conf
        # Connections per client IP; shared by the listeners (143 and 993).
        self.connections = ConnectionCounts() if connections is None else connections
        self.logins = LoginGate(conf.portal, conf.throttle, "imap")
        self.sessions: set["IMAPServer"] = set()

    def shutdown(self) -> None:
        """Tell every client the server is going away (RFC 3501 7.1.5) and hang up."""
        for p in list(self.sessions):
            p.write(b"* BYE Server shutting down\r\n")
            p._closing = True
            p._hang_up()

    def buildProtocol(self, addr: Any) -> "IMAPServer":
        p = IMAPServer(self.conf)
        p.factory = self
        return p


# Commands per state: the name of the handler method.
ANY = {"CAPABILITY", "NOOP", "LOGOUT", "ID"}
NOTAUTH = ANY | {"STARTTLS", "AUTHENTICATE", "LOGIN"}
AUTH = ANY | {"SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
              "LIST", "LSUB", "STATUS", "APPEND", "NAMESPACE", "ENABLE", "IDLE",
              "GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "COMPRESS"}
SELECTED = AUTH | {"CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY",
                   "MOVE", "UID FETCH", "UID STORE", "UID SEARCH", "UID COPY", "UID MOVE",
                   "UID EXPUNGE", "SORT", "UID SORT", "THREAD", "UID THREAD"}
STATES = {"notauth": NOTAUTH, "auth": AUTH, "selected": SELECTED}
ANSWERED = object()  # a handler's result when it wrote the tagged response itself

# RFC 3501 §7.4.1: no EXPUNGE responses while these run (sequence numbers would shift
# under the client); the UID variants may send them, but we hold them back as well
# (UID EXPUNGE and MOVE report their own expunges).
NO_EXPUNGE_REPORT = {"FETCH", "STORE", "SEARCH", "UID FETCH", "UID STORE", "UID SEARCH", "SORT", "UID SORT",
                     "THREAD", "UID THREAD"}


def _auth_failed() -> None:
    raise No("Authentication failed", "AUTHENTICATIONFAILED")


@implementer(IPushProducer)
class IMAPServer(MailboxCommands, QuotaCommands, SortCommands, ThreadCommands, CondstoreCommands, Rev2Commands,
                 Protocol, TimeoutMixin):
    def __init__(self, conf: IMAPFactoryConfig) -> None:
        self.conf = conf
        self.svc = conf.service
        self.state = "notauth"
        self.tls = conf.implicit_tls
        self.account: IMAPAccount | None = None
        self.selected: SelectedMailbox | None = None
        self._logout: Callable[[], None] | None = None
        self.ip = ""
        self._slot: Slot | None = None
        self._buf = LineBuffer(conf.service.max_line_length, MAX_BUFFERED)
        self._pace = RequestDeadline(conf.service.request_deadline, conf.service.min_data_rate, self._too_slow)
        self._segs: list[bytes] = []
        self._lits: list[bytes] = []
        self._seg_total = 0
        self._lit_left = 0
        self._lit_chunks: list[bytes] = []
        self._lit_discard = False
        self._spool: SpooledLiteral | None = None  # a big APPEND literal being written
        self._append_mem = 0  # bytes of this APPEND's literals held in memory
        self._reject: bytes | None = None  # response for a command being skipped
        self._busy = False
        self._closing = False
        self._errors = 0
        self._continuation: Callable[[bytes], None] | None = None  # AUTHENTICATE / IDLE
        self.enabled: set[str] = set()
        self._inflater: compress.Inflater | None = None  # COMPRESS=DEFLATE is on (RFC 4978)

    # -- connection ----------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.ip = getattr(peer, "host", "") or ""
        set_no_delay(self.transport)
        self._slot = self.factory.connections.admit(self.ip, self.svc.max_connections_per_ip)
        if self._slot is None:
            log.warn("imap: connection from [{ip}] refused: too many connections", ip=self.ip)
            self.transport.write(b"* BYE [UNAVAILABLE] Too many connections from your address\r\n")
            self._closing = True
            self._hang_up()
            return
        self.factory.sessions.add(self)
        try:
            # We produce big FETCH responses: the transport tells us when to wait.
            self.transport.registerProducer(self, True)
        except (AttributeError, RuntimeError):
            pass
        self.setTimeout(self.svc.login_timeout)
        sending.send(self.transport, sending.plain_tcp(self.transport),
                     b"* OK [CAPABILITY " + self.capabilities() + b"] " +
                     wire.text(self.conf.hostname) + b" IMAP4rev1 mailsuite ready\r\n")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.setTimeout(None)
        self._pace.stop()
        self._closing = True
        self.factory.sessions.discard(self)
        if self._slot is not None:
            self._slot.release()
        if self._lit_left or self._segs:
            if self._segs and self._segs[0][:40].upper().find(b"APPEND") >= 0:
                log.info("imap: [{ip}] disconnected during APPEND; nothing stored", ip=self.ip)
        self._lit_chunks = []
        self._discard_spools()
        self._lits = []
        self._close_selected()
        if self._logout is not None:
            logout, self._logout = self._logout, None
            try:
                logout()
            except Exception:
                log.failure("imap: avatar logout failed")

    def timeoutConnection(self) -> None:
        log.info("imap: [{ip}] idle timeout, closing", ip=self.ip)
        self.transport.write(b"* BYE Autologout; idle for too long\r\n")
        self._closing = True
        self._hang_up()

    def _too_slow(self) -> None:
        """The request deadline passed (frontend/pacing.py): a trickling client."""
        log.info("imap: [{ip}] {what} not received within the request deadline ({n}s + 1s per {rate} bytes); "
                 "closing", ip=self.ip, what="literal" if self._lit_left else "command line",
                 n=self.svc.request_deadline, rate=self.svc.min_data_rate)
        self.write(b"* BYE Request too slow; closing\r\n")
        self._closing = True
        self._hang_up()

    # IPushProducer, for the output side: a FETCH of many or big messages waits for
    # the client to read instead of piling everything into the transport's buffer.
    _out_paused = False
    _drain_waiters: list[defer.Deferred] | None = None

    def pauseProducing(self) -> None:
        self._out_paused = True

    def resumeProducing(self) -> None:
        self._out_paused = False
        waiters, self._drain_waiters = self._drain_waiters, None
        for d in waiters or ():
            d.callback(None)

    def stopProducing(self) -> None:
        self._closing = True
        self.resumeProducing()

    def drained(self) -> defer.Deferred:
        """Fires once the transport wants more output (at once if it does now).

        A long answer (FETCH 1:* over a big folder) asks between its pieces; what the
        cork gathered goes out first, so the client reads one piece while the next
        is made.  Before, when nothing had paused the transport yet, the whole answer
        stayed in the cork and left at the end: a 35 MB FETCH 1:* (ENVELOPE) to
        imaplib took the server's 530 ms plus the client's 575 ms, one after the
        other (1240 ms)."""
        if self._corked:
            self._uncork()
            if not self._out_paused or self._closing:
                self._cork()  # still within the call that opened it: that call sends it
        if not self._out_paused or self._closing:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(d)
        return d

    def _hang_up(self) -> None:
        self._uncork()  # the last answers (BYE, the tagged OK) go out before the close
        # A registered producer keeps a TLS transport from closing: let go of it first.
        try:
            self.transport.unregisterProducer()
        except (AttributeError, RuntimeError):
            pass
        self.transport.loseConnection()

    # Output is gathered ("corked") while the server works through what the client
    # sent (_input) and while a command completes (_done/_failed, then _resume), and
    # sent in one piece at the end: straight to the socket on plain TCP when nothing
    # is queued (frontend/sending.py), else through the transport as before.  A STORE
    # answered with its untagged FETCH and the tagged OK was 2 writes into the
    # transport's buffer, an epoll_ctl to ask for writability, an epoll_wait, the
    # send and an epoll_ctl to drop the interest; now it is one send.  Outside those
    # spans (IDLE pushes, a FETCH streaming after an await) writes go to the
    # transport at once, as before.  The cork never lasts past the call that opened
    # it, so nothing waits in it across reactor turns.
    _corked: list[bytes] | None = None
    _cork_depth = 0

    def _cork(self) -> None:
        if self._corked is None:
            self._corked = []

    def _uncork(self) -> bool:
        """Send what the commands of this read wrote; whether there was anything."""
        out, self._corked = self._corked, None
        if out and self.transport is not None:
            sending.send(self.transport, sending.plain_tcp(self.transport), b"".join(out))
            return True
        return False

    def write_pieces(self, pieces: list[bytes]) -> None:
        if self.transport is not None and not self._closing:
            if self._corked is not None:
                self._corked.extend(pieces)
            else:
                self._send_now(b"".join(pieces))

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closing:
            if self._corked is not None:
                self._corked.append(data)
            else:
                self._send_now(data)

    def _send_now(self, data: bytes) -> None:
        """Outside a cork (a FETCH going on after an await, an IDLE push): straight to
        the socket as far as it takes it (frontend/sending.py).  Through the
        transport, a 1 MB body left at the next reactor turn, 128 KiB per turn:
        FETCH BODY.PEEK[] of a 1 MB message, its first byte 0.96 ms after the
        command, Dovecot's 0.22 ms."""
        sending.send(self.transport, sending.plain_tcp(self.transport), data)

    def capabilities(self) -> bytes:
        # IMAP4rev2 (RFC 9051) once the client ENABLEs it (imap/rev2.py); its LITERAL-
        # is covered by LITERAL+ (RFC 7888 4).
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "UTF8=ACCEPT"]
        if self.state == "notauth":
            if self.conf.tls_context is not None and not self.tls:
                caps.append("STARTTLS")
            if self.tls or self.conf.allow_plaintext_auth:
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")
        else:
            caps += ["NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE",
                     f"APPENDLIMIT={self.svc.append_limit}", "ESEARCH", "SEARCHRES", "STATUS=SIZE", "LIST-EXTENDED", "LIST-STATUS", "MULTIAPPEND",
                     "SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES",
                     "BINARY", "COMPRESS=DEFLATE"]
            if self.account is not None and self.account.quotas is not None:
                caps += ["QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"]
            caps += ["CONDSTORE", "QRESYNC"]  # RFC 7162: imap/condstore.py
        return " ".join(caps).encode("ascii")

    # -- input framing ---------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self._inflater is not None:
            self._inflate(data)
            return
        self._input(data)

    def _input(self, data: bytes) -> None:
        """Plain input: straight from the transport, or inflated (COMPRESS)."""
        if self._closing:
            return
        self.resetTimeout()
        self._pace.received(len(data))
        self._buf.feed(data)
        self._cork_depth += 1
        self._cork()
        try:
            self._process()
        finally:
            self._cork_depth -= 1
            if self._cork_depth == 0 and not self._uncork() and self._lits and not self._lit_left \
                    and self.transport is not None:
                # A literal is in and the command's end is still to come: ACK now, or
                # a Nagle-bound client waits 40 ms to send it (frontend.connections.ack_now).
                ack_now(self.transport)

    _processing = False
    _again = False

    def _process(self) -> None:
        # Not re-entered: a command that completes at once calls _resume, which
        # would otherwise nest a new loop per pipelined command (3000 NOOPs in one
        # read exhausted the stack: RecursionError).  A nested call asks the running
        # loop to go round again instead.
        if self._processing:
            self._again = True
            return
        self._processing = True
        try:
            while True:
                self._again = False
                buf = self._buf
                while not self._closing and buf and (not self._busy or self._continuation is not None):
                    if self._lit_left:
                        chunk = buf.take(self._lit_left)
                        if self._spool is not None:
                            self._spool.write(chunk)
                        elif not self._lit_discard:
                            self._lit_chunks.append(chunk)
                        self._lit_left -= len(chunk)
                        if self._lit_left == 0:
                            if self._spool is not None:
                                self._spool.finish()
                                self._lits.append(self._spool)  # type: ignore[arg-type]
                                self._spool = None
                            else:
                                self._lits.append(b"".join(self._lit_chunks))
                            self._lit_chunks = []
                        continue
                    line = buf.next_line()
                    if line is None:
                        break
                    if line is TOO_LONG:
                        if self._continuation is not None:
                            # An over-long AUTHENTICATE/IDLE answer: end that exchange (BAD).
                            step, self._continuation = self._continuation, None
                            step(b"*" * 2)
                            continue
                        self._line_too_long(buf.head)
                        continue
                    if self._continuation is not None:
                        step, self._continuation = self._continuation, None
                        step(line)
                        continue
                    self._line(line)
                buf.hold(self.transport, self._busy and self._continuation is None)
                # A request is open while the client owes us the rest of it (not while we work).
                waiting = not self._busy or self._continuation is not None
                self._pace.open(not self._closing and waiting and bool(buf or self._lit_left or self._segs))
                if self._inflater is not None and not buf.paused:
                    self._inflate(b"")  # compressed input held back while the buffer was full
                if not self._again:
                    break
        finally:
            self._processing = False

    def _line_too_long(self, head: bytes) -> None:
        tag = P.peek_tag_and_name(self._segs[0] if self._segs else head)[0]
        self._reset_command()
        self._bad(tag, b"Command line too long")

    def _reset_command(self) -> None:
        self._discard_spools()
        self._segs, self._lits, self._seg_total = [], [], 0
        self._append_mem = 0  # bytes of this APPEND's literals held in memory
        self._reject = None
        self._lit_discard = False

    def _line(self, line: bytes) -> None:
        self._segs.append(line)
        self._seg_total += len(line)
        if self._seg_total > self.svc.max_line_length:
            self._line_too_long(line[:200])
            return
        ann = P.literal_announcement(line)
        if ann is None:
            segs, lits, reject = self._segs, self._lits, self._reject
            if reject is None:
                self._lits = []  # handed to the command, which removes spooled files
            self._reset_command()
            if reject is not None:
                self.write(reject)
                return
            self._dispatch(segs, lits)
            return
        size, nonsync = ann
        tag, name = P.peek_tag_and_name(self._segs[0])
        if len(self._lits) >= MAX_LITERALS:
            self._reset_command()
            self._bad(tag, b"Too many literals")
            if nonsync:
                # Its bytes follow at once and cannot be told from commands: hang up.
                self.write(b"* BYE Too many literals\r\n")
                self._closing = True
                self._hang_up()
            return
        problem = self._literal_problem(tag, name, size)
        if problem is not None and self._reject is None:
            if not nonsync:
                # The client waits for "+": answer now, it sends nothing more.
                self._reset_command()
                self.write(problem)
                return
            if self.state == "notauth":
                self.write(problem + b"* BYE Literal too large\r\n")
                self._closing = True
                self._hang_up()
                return
            self._reject = problem  # read and discard the literal, answer at the end
        if self._reject is not None and not nonsync:
            # A synchronizing literal later in a command already refused: the client
            # waits for "+", so answer the refusal now; it sends nothing more.
            reject = self._reject
            self._reset_command()
            self.write(reject)
            return
        if self._reject is not None:
            self._lit_discard = True
            self._lits.append(b"")
        else:
            if name != "APPEND":
                self._seg_total += size  # held in memory until the command completes
            if name == "APPEND":
                # Big messages stream to a file instead of memory (DESIGN.md rule 3);
                # so do the later messages of a MULTIAPPEND once those held in memory
                # add up to SPOOL_THRESHOLD (up to MAX_LITERALS messages per command).
                if self.conf.spool_dir is not None and (size > SPOOL_THRESHOLD or
                                                        self._append_mem + size > SPOOL_THRESHOLD):
                    self._spool = SpooledLiteral(self.conf.spool_dir, size)
                else:
                    self._append_mem += size
            if not nonsync:
                self.write(b"+ OK\r\n")
        self._lit_left = size
        if size == 0:
            self._lits.append(b"")

    def _discard_spools(self) -> None:
        if self._spool is not None:
            self._spool.discard()
            self._spool = None
        for lit in self._lits:
            if isinstance(lit, SpooledLiteral):
                lit.discard()

    def _literal_problem(self, tag: bytes, name: str, size: int) -> bytes | None:
        if not tag:
            return b"* BAD Missing tag\r\n"
        t = tag + b" "
        if name == "APPEND":
            if self.state == "notauth":
                return t + b"BAD Not logged in\r\n"
            if size > self.svc.append_limit:
                log.info("imap: [{ip}] APPEND of {n} bytes refused (limit {lim})", ip=self.ip, n=size,
                         lim=self.svc.append_limit)
                return t + b"NO [TOOBIG] Message larger than APPENDLIMIT\r\n"
            return None
        limit = PREAUTH_COMMAND if self.state == "notauth" else self.svc.max_line_length
        if self._seg_total + size > limit:
            log.info("imap: [{ip}] {name} refused: {n} bytes of literals and line (limit {lim})", ip=self.ip,
                     name=quoted(name, 20), n=self._seg_total + size, lim=limit)
            return t + b"BAD Command too large\r\n"
        return None

    def _bad(self, tag: bytes, text: bytes) -> None:
        self._errors += 1
        log.info("imap: [{ip}] BAD {text}", ip=self.ip, text=printable(text))
        self.write((tag or b"*") + b" BAD " + text + b"\r\n")
        if self._errors >= self.svc.max_errors:
            self.write(b"* BYE Too many errors\r\n")
            self._closing = True
            self._hang_up()

    # -- dispatch ------------------------------------------------------------------

    def _dispatch(self, segs: list[bytes], lits: list[bytes]) -> None:
        try:
            cmd = P.parse_command(segs, lits)
        except P.ParseError as e:
            for lit in lits:
                if isinstance(lit, SpooledLiteral):
                    lit.discard()
            tag, name = P.peek_tag_and_name(segs[0])
            if e.tag is None and not tag:
                self._bad(b"", wire.text(str(e)))
            elif str(e).startswith(("Unknown", "Missing")):
                self._bad(e.tag or tag, wire.text(str(e)))
            else:
                self._bad(e.tag or tag, wire.text(f"{name or 'Command'}: {e}"))
            return
        if cmd.name not in STATES[self.state]:
            for lit in lits:
                if isinstance(lit, SpooledLiteral):
                    lit.discard()
            known = cmd.name in SELECTED or cmd.name in NOTAUTH
            self._bad(cmd.tag, wire.text(f"{cmd.name} not allowed now" if known else f"Unknown command {cmd.name}"))
            return
        handler = getattr(self, "do_" + cmd.name.replace(" ", "_"))
        self._busy = True
        d = defer.maybeDeferred(handler, cmd)
        d.addCallback(self._done, cmd)
        d.addErrback(self._failed, cmd)
        d.addBoth(self._resume)

    def _done(self, result: Any, cmd: P.Command) -> defer.Deferred | None:
        if self._closing or result is ANSWERED:
            return None
        self._cork()  # sent by _resume, which always follows
        text = result if isinstance(result, str) else f"{cmd.name} completed"
        if self.selected is not None:
            self.selected.report(self.write, expunges=cmd.name not in NO_EXPUNGE_REPORT)
        self.write(cmd.tag + b" OK " + wire.text(text) + b"\r\n")
        return None

    def _failed(self, f: Failure, cmd: P.Command) -> None:
        self._cork()  # sent by _resume, which always follows
        if f.check(Bad):
            self._bad(cmd.tag, f.value.line())
            return
        if f.check(No):
            log.debug("imap: [{ip}] {cmd} NO {text}", ip=self.ip, cmd=cmd.name, text=printable(str(f.value)))
            self.write(cmd.tag + b" NO " + f.value.line() + b"\r\n")
            return
        from mailsuite.directory.interface import DirectoryUnavailable

        if f.check(DirectoryUnavailable):
            self.write(cmd.tag + b" NO [UNAVAILABLE] Temporary failure, try again later\r\n")
            return
        if fsutil.is_disk_full(f.value):
            # Nothing was stored (the store writes to tmp/ and renames); the client
            # keeps the message and tries again (issue 16, "disk full").
            log.error("imap: [{ip}] {cmd} failed: disk full: {err}", ip=self.ip, cmd=cmd.name, err=str(f.value))
            self.write(cmd.tag + b" NO [UNAVAILABLE] Not enough disk space, try again later\r\n")
            return
        if f.check(OSError):
            log.error("imap: [{ip}] {cmd} failed: {err}", ip=self.ip, cmd=cmd.name, err=str(f.value))
            self.write(cmd.tag + b" NO [SERVERBUG] Temporary server failure, try again later\r\n")
            return
        log.failure("imap: [{ip}] {cmd} failed", f, ip=self.ip, cmd=cmd.name)
        self.write(cmd.tag + b" NO [SERVERBUG] Internal error; the administrator can find it in the log\r\n")

    def _resume(self, _: Any = None) -> None:
        self._busy = False
        self._continuation = None
        self._cork_depth += 1
        try:
            if not self._closing and self.transport is not None:
                self._process()
        finally:
            self._cork_depth -= 1
            if self._cork_depth == 0:
                self._uncork()

    # -- any state ---------------------------------------------------------------------

    def do_CAPABILITY(self, cmd: P.Command) -> None:
        self.write(b"* CAPABILITY " + self.capabilities() + b"\r\n")

    def do_NOOP(self, cmd: P.Command) -> defer.Deferred | None:
        if self.selected is not None:
            return self.selected.refresh()
        return None

    def do_LOGOUT(self, cmd: P.Command) -> object:
        self.write(b"* BYE Logging out\r\n" + cmd.tag + b" OK LOGOUT completed\r\n")
        self._closing = True
        self._hang_up()
        return ANSWERED

    def do_ID(self, cmd: P.Command) -> None:
        params = cmd.args["params"]
        if params:
            # Every key and value is the client's text: quoted, escaped (issue 16 finding 1).
            shown = " ".join(f"{quoted(k, 30)}={quoted(v, 60)}" for k, v in list(params.items())[:30])
            log.info("imap: [{ip}] client ID {params}", ip=self.ip, params=shown)
        self.write(b'* ID ("name" "mailsuite")\r\n')

    # -- COMPRESS=DEFLATE (RFC 4978; the layer is imap/compress.py) ----------------------

    def do_COMPRESS(self, cmd: P.Command) -> object:
        if cmd.args["mechanism"] != "DEFLATE":
            raise Bad("Unknown compression mechanism")
        if self._inflater is not None:
            raise No("DEFLATE is active already", "COMPRESSIONACTIVE")
        self.write(cmd.tag + b" OK DEFLATE active\r\n")
        self._uncork()  # the OK goes out uncompressed, before the layer is in place
        log.info("imap: [{ip}] COMPRESS=DEFLATE on", ip=self.ip)
        self._inflater = compress.Inflater(
            self._input, lambda: self._closing or self._buf.paused or len(self._buf) > MAX_BUFFERED)
        self.transport = compress.DeflatingTransport(self.transport, lambda: self._inflate(b""))
        # The client compresses from the OK on; anything already here came after it.
        pending = self._buf.take_all()
        if pending:
            self._inflate(pending)
        return ANSWERED

    def _inflate(self, data: bytes) -> None:
        try:
            if data:
                self._inflater.feed(data)  # type: ignore[union-attr]
            else:
                self._inflater.pump()  # type: ignore[union-attr]
        except compress.DecompressionError as e:
            if e.bomb:
                log.warn("imap: [{ip}] decompression bomb: {why}; closing", ip=self.ip, why=str(e))
                self.write(b"* BYE [LIMIT] Compressed input expands too much\r\n")
            else:
                log.info("imap: [{ip}] bad compressed input: {why}; closing", ip=self.ip, why=str(e))
                self.write(b"* BYE Bad compressed data\r\n")
            self._closing = True
            self._hang_up()

    # -- not authenticated ---------------------------------------------------------------

    def _plaintext_refused(self) -> bool:
        return not (self.tls or self.conf.allow_plaintext_auth)

    def do_STARTTLS(self, cmd: P.Command) -> object:
        if self.conf.tls_context is None:
            raise Bad("STARTTLS not available")
        if self.tls:
            raise Bad("TLS already active")
        self.write(cmd.tag + b" OK Begin TLS negotiation now\r\n")
        self._uncork()  # in clear, before the TLS layer
        start_tls(self.transport, self.conf.tls_context, self._buf, "imap", self.ip)
        self.tls = True
        return ANSWERED

    def do_LOGIN(self, cmd: P.Command) -> defer.Deferred:
        if self._plaintext_refused():
            raise No("LOGIN is disabled before STARTTLS", "PRIVACYREQUIRED")
        return self._authenticate(Credentials(cmd.args["user"], cmd.args["password"]))

    def do_AUTHENTICATE(self, cmd: P.Command) -> defer.Deferred:
        mech = cmd.args["mechanism"]
        if mech not in ("PLAIN", "LOGIN"):
            raise No(f"Unsupported authentication mechanism {mech[:20]}", "CANNOT")
        if self._plaintext_refused():
            raise No("Authentication is disabled before STARTTLS", "PRIVACYREQUIRED")
        waiter: defer.Deferred = defer.Deferred()

        def next_step(step: bytes | Credentials) -> None:
            if isinstance(step, Credentials):
                self._authenticate(step).chainDeferred(waiter)
                return

            def respond(line: bytes) -> None:
                try:
                    next_step(exchange.respond(line))
                except SASLError as e:
                    waiter.errback(Failure(_answer(e.outcome)))

            self._continuation = respond
            self.write(b"+ " + base64.b64encode(step) + b"\r\n")

        try:
            exchange = SASLExchange(mech)
            next_step(exchange.start(cmd.args["initial"]))
        except SASLError as e:
            raise _answer(e.outcome) from None
        return waiter

    def _authenticate(self, creds: Credentials) -> defer.Deferred:
        def ok(login: Any) -> str:
            self.account = login.avatar
            self._logout = login.logout
            self.state = "auth"
            self.setTimeout(self.svc.idle_timeout)
            log.info("imap: [{ip}] login {user}", ip=self.ip, user=login.name)
            self.write(b"* CAPABILITY " + self.capabilities() + b"\r\n")
            return "Logged in"

        def failed(f: Failure) -> Any:
            f.trap(LoginFailed)
            outcome = f.value.outcome
            if outcome is Outcome.INVALID and self.conf.throttle is None:
                # Without the shared throttle, slow every failure down on this connection.
                from twisted.internet import reactor, task

                self._errors += 1
                return task.deferLater(reactor, min(self._errors, 5), _auth_failed)
            raise _answer(outcome)

        return self.factory.logins.login(self.ip, creds, IIMAPAccount).addCallbacks(ok, failed)
