"""The ManageSieve server protocol (RFC 5804) over the users' script directories.

Protocol + TimeoutMixin on the front-end base (``mailsuite.frontend``): its per-IP
connection count, SASL decoder (PLAIN, LOGIN) and login-with-throttle through the
shared cred portal, and its failure-to-answer mapping (``MANAGESIEVE_ANSWERS``).  The
framing is this protocol's own (``wire.py``): arguments may be literals, so a command
is not a line.  Scripts are read and written through
:class:`mailsuite.sieve.scripts.UserScripts` in the worker pool.

Behaviour worth knowing:

* Logins (SASL PLAIN and LOGIN) only after STARTTLS or on an implicit-TLS listener,
  unless ``[server] allow_plaintext_auth``; before that the SASL capability is empty.
  After STARTTLS the server sends its capabilities again (RFC 5804 2.2); bytes the
  client pipelined after STARTTLS are discarded (command injection).
* PUTSCRIPT and CHECKSCRIPT compile the script and answer ``NO "line L: ..."`` for a
  bad one; ``[managesieve] max_scripts`` and ``max_script_size`` give
  ``NO (QUOTA/MAXSCRIPTS)`` / ``NO (QUOTA/MAXSIZE)``, also for HAVESPACE.  A literal
  bigger than the limit is skipped, not buffered.
* Limits: line length, idle timeouts before and after login, a deadline per request
  stretched by a minimum data rate (a trickling upload is closed), connections per IP,
  errors per connection (then BYE), three failed logins (then BYE); input pipelined
  behind a running command pauses the connection beyond 64 KiB.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from mailsuite.frontend import (
    MANAGESIEVE_ANSWERS, ConnectionCounts, Credentials, LoginFailed, LoginGate, Outcome, RequestDeadline, SASLError,
    SASLExchange, Slot, ack_now, set_no_delay,
)
from mailsuite.managesieve.wire import LiteralTooBig, ParseError, parse_command, quote
from mailsuite.sieve.grammar import EXTENSIONS, compile_script
from mailsuite.sieve.interpreter import MAX_REDIRECTS
from mailsuite.sieve.parser import SieveSyntaxError
from mailsuite.sieve.scripts import BadScriptName, UserScripts, check_name
from mailsuite.store.maildir import account_dir

log = Logger(namespace="mailsuite.managesieve")

_MAX_AUTH_FAILURES = 3
_CLOSE_GRACE = 5  # seconds a closing connection may take before it is aborted
_MAX_BUFFERED = 1 << 16  # pipelined input held while a command runs, before pausing
_SIEVE_CAPS = " ".join(e for e in EXTENSIONS if not e.startswith("comparator-i;") or e.endswith("numeric"))


class IManageSieveAccount(Interface):
    name = Attribute("the account name, local@domain")


@implementer(IManageSieveAccount)
@dataclass(frozen=True)
class ManageSieveAccount:
    name: str


@dataclass
class ManageSieveConfigBundle:
    hostname: str
    service: Any  # config.ManageSieveConfig
    mail_dir: Any
    portal: Any
    throttle: Any
    tls_context: Any
    implicit_tls: bool
    allow_plaintext_auth: bool
    workers: Any  # mailsuite.workers.IWorkers: script files are read and written there
    on_change: Callable[[str], None] | None = None  # an account's scripts changed (delivery's cache)


class ManageSieveFactory(protocol.Factory):
    noisy = False

    def __init__(self, conf: ManageSieveConfigBundle, connections: ConnectionCounts) -> None:
        self.conf = conf
        self.connections = connections
        self.logins = LoginGate(conf.portal, conf.throttle, "managesieve")

    def buildProtocol(self, addr: Any) -> "ManageSieveServer":
        p = ManageSieveServer(self.conf)
        p.factory = self
        return p


class _No(Exception):
    """A command handler's ``NO [(code)] "text"`` answer."""

    def __init__(self, text: str, code: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class ManageSieveServer(protocol.Protocol, TimeoutMixin):
    factory: ManageSieveFactory

    def __init__(self, conf: ManageSieveConfigBundle) -> None:
        self.conf = conf
        self.svc = conf.service
        self.tls = conf.implicit_tls
        self.ip = ""
        self.account: str | None = None
        self._logout: Callable[[], None] | None = None
        self._buffer = b""
        self._skip = 0  # octets of an oversized literal still to be thrown away
        self._skip_then: Callable[[], None] | None = None
        self._busy = False
        self._closing = False
        self._errors = 0
        self._auth_failures = 0
        self._sasl: SASLExchange | None = None
        self._slot: Slot | None = None
        self._skip_line = False
        self._paused = False
        self._pace = RequestDeadline(self.svc.request_deadline, self.svc.min_data_rate, self._too_slow)

    # -- connection -------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.ip = getattr(self.transport.getPeer(), "host", "") or ""
        set_no_delay(self.transport)
        self._slot = self.factory.connections.admit(self.ip, self.svc.max_connections_per_ip)
        if self._slot is None:
            log.warn("managesieve: connection from [{ip}] refused: too many connections", ip=self.ip)
            self._send(b'BYE (TRYLATER) "Too many connections from your address."')
            self._close()
            return
        self.setTimeout(self.svc.login_timeout)
        self._write(self._capabilities() + b'OK "mailsuite ManageSieve ready."\r\n')

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.setTimeout(None)
        self._pace.stop()
        self._closing = True
        if self._slot is not None:
            self._slot.release()
            self._slot = None
        if self._logout is not None:
            self._logout()
            self._logout = None

    def timeoutConnection(self) -> None:
        if self._closing:
            # A TLS close waits for the client's close_notify; a client that never
            # sends it (or never closes) does not keep its slot.
            self.transport.abortConnection()
            return
        log.info("managesieve: [{ip}] idle timeout", ip=self.ip)
        self._send(b'BYE "Disconnected for inactivity."')
        self._close()

    def _close(self) -> None:
        self._closing = True
        self.transport.loseConnection()
        self.setTimeout(_CLOSE_GRACE)

    def _send(self, line: bytes) -> None:
        self._write(line + b"\r\n")

    def _write(self, data: bytes) -> None:
        if not self._closing:
            self.transport.write(data)

    def _ok(self, text: str = "", code: str = "") -> None:
        self._send(b"OK" + (b" (" + code.encode() + b")" if code else b"") + (b" " + quote(text) if text else b""))

    def _no(self, text: str, code: str = "") -> None:
        self._send(b"NO" + (b" (" + code.encode() + b")" if code else b"") + b" " + quote(text))

    # -- input ------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        self._pace.received(len(data))
        self._buffer += data
        self._process()

    def _process(self) -> None:
        self._process_commands()
        if self._closing:
            self._pace.stop()
            return
        # Input pipelined behind a running command waits in the kernel, not here.
        if self._busy and len(self._buffer) > _MAX_BUFFERED and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        elif self._paused and not self._busy:
            self._paused = False
            self.transport.resumeProducing()
        # A request is open while the client owes us the rest of it (not while we work).
        owed = not self._busy and (bool(self._buffer) or self._skip > 0)
        self._pace.open(owed)
        if owed and self._buffer:
            # Part of a command (a literal, its CRLF still to come): ACK it now, or a
            # Nagle-bound client waits 40 ms for our delayed ACK (frontend.connections.ack_now).
            ack_now(self.transport)

    def _too_slow(self) -> None:
        """The request deadline passed (frontend/pacing.py): a trickling client."""
        log.info("managesieve: [{ip}] request not received within the request deadline ({n}s + 1s per "
                 "{rate} bytes); closing", ip=self.ip, n=self.svc.request_deadline, rate=self.svc.min_data_rate)
        self._send(b'BYE "Request too slow."')
        self._close()

    def _process_commands(self) -> None:
        while not self._busy and not self._closing and self._buffer:
            if self._skip:
                n = min(self._skip, len(self._buffer))
                self._buffer = self._buffer[n:]
                self._skip -= n
                if self._skip:
                    return
                # The rest of the command line after the literal goes too.
                nl = self._buffer.find(b"\n")
                if nl < 0:
                    self._skip = 0
                    self._skip_line = True
                    return
                self._buffer = self._buffer[nl + 1:]
                if self._skip_then is not None:
                    then, self._skip_then = self._skip_then, None
                    then()
                continue
            if self._skip_line:
                nl = self._buffer.find(b"\n")
                if nl < 0:
                    self._buffer = b""
                    return
                self._buffer = self._buffer[nl + 1:]
                self._skip_line = False
                if self._skip_then is not None:
                    then, self._skip_then = self._skip_then, None
                    then()
                continue
            if self._sasl is not None:
                nl = self._buffer.find(b"\n")
                if nl < 0:
                    if len(self._buffer) > self.svc.max_line_length:
                        self._buffer = b""
                        self._sasl = None
                        self._bad("Line too long.")
                    return
            try:
                parsed = parse_command(self._buffer, self.svc.max_script_size if self.account else 8192,
                                       self.svc.max_line_length) if self._sasl is None else \
                    self._sasl_line()
            except LiteralTooBig as e:
                self._buffer = self._buffer[e.skip_from:]
                self._skip = e.size
                self._skip_then = lambda: self._no(
                    f"Script is larger than {self.svc.max_script_size} bytes.", "QUOTA/MAXSIZE")
                continue
            except ParseError as e:
                nl = self._buffer.find(b"\n")
                self._buffer = self._buffer[nl + 1:] if nl >= 0 else b""
                if nl < 0:
                    self._skip_line = True
                self._bad(f"Syntax error: {e}.")
                continue
            if parsed is None:
                return
            tokens, used = parsed
            self._buffer = self._buffer[used:]
            self._dispatch(tokens)

    def _sasl_line(self) -> tuple[list[bytes | int], int] | None:
        """A SASL response: a quoted string or literal on its own line."""
        parsed = parse_command(b"X " + self._buffer, 8192, self.svc.max_line_length)
        if parsed is None:
            return None
        tokens, used = parsed
        return [b"\0SASL"] + tokens[1:], used - 2

    def _bad(self, text: str) -> None:
        log.info("managesieve: [{ip}] {user}: {text}", ip=self.ip, user=self.account or "-", text=text)
        self._no(text)
        self._errors += 1
        if self._errors >= self.svc.max_errors:
            log.warn("managesieve: [{ip}] too many errors; closing", ip=self.ip)
            self._send(b'BYE "Too many errors."')
            self._close()

    def _dispatch(self, tokens: list[bytes | int]) -> None:
        name = tokens[0]
        args = tokens[1:]
        if name == b"\0SASL":
            exchange, self._sasl = self._sasl, None
            assert exchange is not None
            if len(args) != 1 or not isinstance(args[0], bytes):
                self._bad("Expected a base64 string.")
                return
            self._run(lambda a: self._sasl_step(exchange, lambda: exchange.respond(a[0])), args)
            return
        handler = getattr(self, "do_" + name.decode("ascii"), None)  # type: ignore[union-attr]
        if handler is None:
            self._bad(f"Unknown command {name.decode('ascii', 'replace')[:40]}.")  # type: ignore[union-attr]
            return
        if name not in _BEFORE_LOGIN and self.account is None:
            self._bad("Log in first.")
            return
        if name in _BEFORE_LOGIN_ONLY and self.account is not None:
            self._bad("Already logged in.")
            return
        self._run(handler, args)

    def _run(self, handler: Callable[[list], Any], args: list) -> None:
        try:
            result = handler(args)
        except _No as e:
            self._bad(e.text) if not e.code else self._no(e.text, e.code)
            return
        except Exception:
            log.failure("managesieve: command failed")
            self._no("Internal error.", "TRYLATER")
            return
        if isinstance(result, defer.Deferred):
            self._busy = True

            def failed(f: Failure) -> None:
                if f.check(_No):
                    self._no(f.value.text, f.value.code)
                    return
                log.failure("managesieve: command failed", f)
                self._no("Internal error.", "TRYLATER")

            def done(_: Any) -> None:
                self._busy = False
                if not self._closing:
                    self._process()

            result.addErrback(failed).addBoth(done)

    # -- arguments --------------------------------------------------------------------

    @staticmethod
    def _strings(args: list, n: int, names: str) -> list[str]:
        if len(args) != n or not all(isinstance(a, bytes) for a in args):
            raise _No(f"Expected {names}.")
        try:
            return [a.decode("utf-8") for a in args]
        except UnicodeDecodeError:
            raise _No("Arguments must be UTF-8.") from None

    @staticmethod
    def _name(value: str) -> str:
        try:
            return check_name(value)
        except BadScriptName:
            raise _No(f"Invalid script name {value[:64]!r}.") from None

    def _changed(self, _: Any = None) -> None:
        if self.conf.on_change is not None and self.account is not None:
            self.conf.on_change(self.account)

    def _scripts(self) -> UserScripts:
        assert self.account is not None
        return UserScripts(account_dir(self.conf.mail_dir, self.account))

    # -- not authenticated ------------------------------------------------------------

    def _auth_allowed(self) -> bool:
        return self.tls or self.conf.allow_plaintext_auth

    def _capabilities(self) -> bytes:
        lines = [
            b'"IMPLEMENTATION" "mailsuite ManageSieve"',
            b'"SASL" "' + (b"PLAIN LOGIN" if self._auth_allowed() and self.account is None else b"") + b'"',
            b'"SIEVE" ' + quote(_SIEVE_CAPS),
            b'"MAXREDIRECTS" "%d"' % MAX_REDIRECTS,
            b'"VERSION" "1.0"',
        ]
        if not self.tls and self.conf.tls_context is not None and self.account is None:
            lines.insert(2, b'"STARTTLS"')
        if self.account is not None:
            lines.append(b'"OWNER" ' + quote(self.account))
        return b"".join(line + b"\r\n" for line in lines)

    def do_CAPABILITY(self, args: list) -> None:
        if args:
            raise _No("CAPABILITY takes no arguments.")
        self._write(self._capabilities())
        self._ok("Capability completed.")

    def do_STARTTLS(self, args: list) -> None:
        if args:
            raise _No("STARTTLS takes no arguments.")
        if self.tls:
            raise _No("TLS is already active.")
        if self.conf.tls_context is None:
            raise _No("TLS is not available.")
        self._ok("Begin TLS negotiation now.")
        if self._buffer:
            log.warn("managesieve: [{ip}] discarded {n} bytes pipelined after STARTTLS", ip=self.ip,
                     n=len(self._buffer))
            self._buffer = b""
        self.transport.startTLS(self.conf.tls_context)
        self.tls = True
        # RFC 5804 2.2: capabilities again, now over TLS.
        self._write(self._capabilities() + b'OK "TLS negotiation successful."\r\n')

    def do_AUTHENTICATE(self, args: list) -> Any:
        if not self._auth_allowed():
            raise _No("Authentication needs TLS: use STARTTLS first.", "ENCRYPT-NEEDED")
        if not args or not isinstance(args[0], bytes) or len(args) > 2 or (
                len(args) == 2 and not isinstance(args[1], bytes)):
            raise _No('Expected AUTHENTICATE "mechanism" ["initial response"].')
        try:
            exchange = SASLExchange(args[0])
        except SASLError as e:
            raise _No(MANAGESIEVE_ANSWERS[e.outcome][1]) from None
        initial = args[1] if len(args) == 2 else None
        return self._sasl_step(exchange, lambda: exchange.start(initial))

    def _sasl_step(self, exchange: SASLExchange, step: Callable[[], bytes | Credentials]) -> Any:
        """One step of the exchange: a challenge (RFC 5804 2.1: a base64 string) or,
        with the credentials complete, the login."""
        try:
            result = step()
        except SASLError as e:
            code, text = MANAGESIEVE_ANSWERS[e.outcome]
            raise _No(text, code) from None
        if isinstance(result, Credentials):
            d = self.factory.logins.login(self.ip, result, IManageSieveAccount)
            return d.addCallbacks(self._authenticated, self._auth_failed)
        self._send(quote(base64.b64encode(result)))
        self._sasl = exchange
        return None

    def _auth_failed(self, failure: Failure) -> None:
        failure.trap(LoginFailed)
        if self._closing:
            return
        outcome = failure.value.outcome
        code, text = MANAGESIEVE_ANSWERS[outcome]
        if outcome is Outcome.REFUSED or failure.value.refused_now:
            self._send(b"BYE" + (b" (" + code.encode() + b")" if code else b"") + b" " + quote(text))
            self._close()
            return
        self._no(text, code)
        if outcome in (Outcome.INVALID, Outcome.AUTHZ):
            self._auth_failures += 1
            if self._auth_failures >= _MAX_AUTH_FAILURES:
                log.info("managesieve: [{ip}] {n} failed logins; closing", ip=self.ip, n=self._auth_failures)
                self._send(b'BYE "Too many failed logins."')
                self._close()

    def _authenticated(self, login: Any) -> None:
        if self._closing:
            login.logout()
            return
        self.account = login.name
        self._logout = login.logout
        self.setTimeout(self.svc.idle_timeout)
        log.info("managesieve: [{ip}] {user} logged in", ip=self.ip, user=self.account)
        self._ok("Logged in.")

    def do_UNAUTHENTICATE(self, args: list) -> None:
        if args:
            raise _No("UNAUTHENTICATE takes no arguments.")
        if self._logout is not None:
            self._logout()
            self._logout = None
        self.account = None
        self.setTimeout(self.svc.login_timeout)
        self._ok("Logged out.")

    def do_LOGOUT(self, args: list) -> None:
        self._ok("Logout completed.")
        self._close()

    def do_NOOP(self, args: list) -> None:
        if len(args) > 1 or (args and not isinstance(args[0], bytes)):
            raise _No("Expected NOOP [tag].")
        if args:
            self._send(b"OK (TAG " + quote(args[0]) + b') "Done."')
        else:
            self._ok("Done.")

    # -- authenticated ----------------------------------------------------------------

    def _in_worker(self, f: Callable[..., Any], *a: Any) -> defer.Deferred:
        return self.conf.workers.run(f, *a)

    def _check_space(self, scripts: UserScripts, name: str, size: int) -> None:
        if size > self.svc.max_script_size:
            raise _No(f"Script is larger than {self.svc.max_script_size} bytes.", "QUOTA/MAXSIZE")
        count, _ = scripts.size_used(except_name=name)
        if count >= self.svc.max_scripts:
            raise _No(f"At most {self.svc.max_scripts} scripts.", "QUOTA/MAXSCRIPTS")

    def do_HAVESPACE(self, args: list) -> defer.Deferred:
        if len(args) != 2 or not isinstance(args[0], bytes) or not isinstance(args[1], int):
            raise _No('Expected HAVESPACE "name" size.')
        name = self._name(args[0].decode("utf-8", "replace"))
        scripts = self._scripts()
        return self._in_worker(self._check_space, scripts, name, args[1]).addCallback(
            lambda _: self._ok("Putscript would succeed."))

    def do_PUTSCRIPT(self, args: list) -> defer.Deferred:
        if len(args) != 2 or not all(isinstance(a, bytes) for a in args):
            raise _No('Expected PUTSCRIPT "name" {size+} script.')
        name = self._name(args[0].decode("utf-8", "replace"))
        content: bytes = args[1]
        check = _compile(content)
        if check is not None:
            raise _No(check)
        scripts = self._scripts()

        def put() -> None:
            self._check_space(scripts, name, len(content))
            scripts.write(name, content)

        def done(_: Any) -> None:
            log.info("managesieve: {user}: script {name} stored ({n} bytes)", user=self.account, name=name,
                     n=len(content))
            self._ok("Putscript completed.")

        return self._in_worker(put).addCallback(self._changed).addCallback(done)

    def do_CHECKSCRIPT(self, args: list) -> None:
        if len(args) != 1 or not isinstance(args[0], bytes):
            raise _No("Expected CHECKSCRIPT {size+} script.")
        if len(args[0]) > self.svc.max_script_size:
            raise _No(f"Script is larger than {self.svc.max_script_size} bytes.", "QUOTA/MAXSIZE")
        check = _compile(args[0])
        if check is not None:
            raise _No(check)
        self._ok("Script is valid.")

    def do_LISTSCRIPTS(self, args: list) -> defer.Deferred:
        if args:
            raise _No("LISTSCRIPTS takes no arguments.")
        scripts = self._scripts()

        def listed(result: tuple[list[str], str | None]) -> None:
            names, active = result
            out = b"".join(quote(n) + (b" ACTIVE" if n == active else b"") + b"\r\n" for n in names)
            self._write(out)
            self._ok("Listscripts completed.")

        return self._in_worker(lambda: (scripts.names(), scripts.active())).addCallback(listed)

    def do_GETSCRIPT(self, args: list) -> defer.Deferred:
        name = self._name(self._strings(args, 1, '"name"')[0])
        scripts = self._scripts()

        def read() -> bytes:
            try:
                return scripts.read(name)
            except FileNotFoundError:
                raise _No("There is no script of that name.", "NONEXISTENT") from None

        def got(data: bytes) -> None:
            self._write(b"{%d}\r\n" % len(data) + data + b"\r\n")
            self._ok("Getscript completed.")

        return self._in_worker(read).addCallback(got)

    def do_SETACTIVE(self, args: list) -> defer.Deferred:
        value = self._strings(args, 1, '"name"')[0]
        name = self._name(value) if value else None
        scripts = self._scripts()

        def activate() -> None:
            try:
                scripts.set_active(name)
            except FileNotFoundError:
                raise _No("There is no script of that name.", "NONEXISTENT") from None

        def done(_: Any) -> None:
            log.info("managesieve: {user}: active script {name}", user=self.account, name=name or "(none)")
            self._ok("Setactive completed.")

        return self._in_worker(activate).addCallback(self._changed).addCallback(done)

    def do_DELETESCRIPT(self, args: list) -> defer.Deferred:
        name = self._name(self._strings(args, 1, '"name"')[0])
        scripts = self._scripts()

        def delete() -> None:
            if scripts.active() == name:
                raise _No("You may not delete the active script.", "ACTIVE")
            try:
                scripts.delete(name)
            except FileNotFoundError:
                raise _No("There is no script of that name.", "NONEXISTENT") from None

        return self._in_worker(delete).addCallback(self._changed).addCallback(
            lambda _: self._ok("Deletescript completed."))

    def do_RENAMESCRIPT(self, args: list) -> defer.Deferred:
        old, new = (self._name(v) for v in self._strings(args, 2, '"old name" "new name"'))
        scripts = self._scripts()

        def rename() -> None:
            try:
                scripts.rename(old, new)
            except FileNotFoundError:
                raise _No("There is no script of that name.", "NONEXISTENT") from None
            except FileExistsError:
                raise _No("A script with the new name exists already.", "ALREADYEXISTS") from None

        return self._in_worker(rename).addCallback(self._changed).addCallback(
            lambda _: self._ok("Renamescript completed."))


_BEFORE_LOGIN = {b"CAPABILITY", b"STARTTLS", b"AUTHENTICATE", b"LOGOUT", b"NOOP"}
_BEFORE_LOGIN_ONLY = {b"STARTTLS", b"AUTHENTICATE"}


def _compile(content: bytes) -> str | None:
    """None if the script is good, else the error with its line (RFC 5804 2.6)."""
    try:
        compile_script(content)
    except SieveSyntaxError as e:
        return str(e)
    return None
