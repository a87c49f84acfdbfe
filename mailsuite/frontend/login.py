"""Login with throttle: the one glue between the cred portal and the auth throttle
(auth/throttle.py), used by SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3 USER/PASS/AUTH
and ManageSieve.

``LoginGate(portal, throttle, proto).login(ip, credentials, interface)``:

1. asks the throttle first: during a cool-down the password is not even checked
   (``LoginFailed(REFUSED)``), and after recent failures the answer is delayed;
2. checks the credentials through the portal, for the avatar ``interface``;
3. a wrong login or password is counted by the throttle (which writes the fail2ban
   line) and fails with ``LoginFailed(INVALID)``; ``refused_now`` then says whether
   this failure started a cool-down (SMTP closes, for instance);
4. the directory being unreachable, or any fault of ours, fails with
   ``LoginFailed(TEMPORARY)``: not counted, the client keeps its password;
5. a good password with an authorization identity (SASL PLAIN's authzid) naming
   anybody but the authenticated user fails with ``LoginFailed(AUTHZ)``: nobody here
   may act for another user (RFC 4616 2).  The authzid may name the user by the
   login it used or by its canonical account name;
6. success clears the throttle's failures for this login and fires with a
   :class:`Login`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from twisted.cred import credentials as cred_credentials, error as cred_error
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsuite.frontend.answers import Outcome
from mailsuite.frontend.sasl import Credentials
from mailsuite.logtext import quoted

log = Logger(namespace="mailsuite.frontend")


@dataclass(frozen=True)
class Login:
    """An authenticated session's account: ``name`` is the canonical account name."""

    name: str
    avatar: Any
    logout: Callable[[], None]


class LoginFailed(Exception):
    """The login did not succeed; ``outcome`` picks the protocol's answer."""

    def __init__(self, outcome: Outcome, refused_now: bool = False) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome
        self.refused_now = refused_now


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


class LoginGate:
    """See the module docstring.  ``throttle`` may be None (tests, tools)."""

    def __init__(self, portal: Any, throttle: Any, proto: str) -> None:
        self.portal = portal
        self.throttle = throttle
        self.proto = proto

    def login(self, ip: str, creds: Credentials, interface: Any) -> defer.Deferred:
        login = _text(creds.authcid)
        throttle = self.throttle
        d = throttle.before_auth(ip, login) if throttle is not None else defer.succeed(None)

        def check(_: Any) -> defer.Deferred:
            up = cred_credentials.UsernamePassword(creds.authcid, creds.password)
            return self.portal.login(up, None, interface)

        def cooling_down(f: Failure) -> None:
            from mailsuite.auth.throttle import AuthRefused

            f.trap(AuthRefused)
            log.info("{proto}: [{ip}] login {user} refused during a cool-down ({why})", proto=self.proto,
                     ip=ip, user=quoted(login, 64), why=str(f.value))
            raise LoginFailed(Outcome.REFUSED)

        def ok(result: tuple[Any, Any, Callable[[], None]]) -> Login:
            _iface, avatar, logout = result
            name = getattr(avatar, "name", None) or login
            authzid = _text(creds.authzid)
            if authzid and authzid.lower() not in (login.lower(), name.lower()):
                logout()
                log.info("{proto}: [{ip}] {user} may not act as {authz}; refused", proto=self.proto, ip=ip,
                         user=name, authz=quoted(authzid, 64))
                raise LoginFailed(Outcome.AUTHZ)
            if throttle is not None:
                throttle.auth_succeeded(ip, login, proto=self.proto)
            return Login(name, avatar, logout)

        def failed(f: Failure) -> None:
            from mailsuite.directory.interface import DirectoryUnavailable

            if f.check(LoginFailed):
                return f  # type: ignore[return-value]
            if f.check(cred_error.UnauthorizedLogin, cred_error.UnhandledCredentials):
                if throttle is None:
                    log.info("{proto}: [{ip}] authentication failed for {user}", proto=self.proto, ip=ip,
                             user=quoted(login, 64))
                    raise LoginFailed(Outcome.INVALID)
                throttle.auth_failed(ip, login, proto=self.proto)
                raise LoginFailed(Outcome.INVALID, refused_now=throttle.is_refused(ip, login))
            if f.check(DirectoryUnavailable):
                log.warn("{proto}: [{ip}] directory unavailable: {e}", proto=self.proto, ip=ip,
                         e=f.getErrorMessage())
            else:
                # A fault of ours, not a wrong password: temporary, and not counted.
                log.failure("{proto}: [{ip}] authentication error", f, proto=self.proto, ip=ip)
            raise LoginFailed(Outcome.TEMPORARY)

        d.addCallbacks(check, cooling_down)
        d.addCallbacks(ok, failed)
        return d
