"""The shared twisted.cred portal: a checker over the directory and a realm.

Every protocol (SMTP AUTH, IMAP, POP3) logs in through :func:`make_portal`; all of them
hand over ``IUsernamePassword`` credentials (LOGIN, PLAIN and USER/PASS are all
UsernamePassword subclasses), so one checker serves them all.  The avatar id is the
account's canonical name (``local@domain``, str).

The realm is extended by each protocol: it registers a factory that turns an Account
into that protocol's avatar (``realm.register(IAccount, factory)``).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from zope.interface import implementer

from mailsuite.directory.interface import Account, IDirectory


@implementer(ICredentialsChecker)
class DirectoryChecker:
    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, directory: IDirectory) -> None:
        self.directory = directory

    def requestAvatarId(self, creds: credentials.IUsernamePassword) -> defer.Deferred:
        def text(v: bytes | str) -> str:
            return v.decode("utf-8") if isinstance(v, bytes) else v

        try:
            login, password = text(creds.username), text(creds.password)
        except UnicodeDecodeError:
            return defer.fail(error.UnauthorizedLogin("Authentication failed"))
        # Empty passwords never reach a backend: an LDAP simple bind with an empty
        # password is an "unauthenticated bind" that succeeds (RFC 4513 5.1.2).
        if not login or not password or "\x00" in login:
            return defer.fail(error.UnauthorizedLogin("Authentication failed"))
        return self.directory.authenticate(login, password).addCallback(lambda acct: acct.name)


@implementer(IRealm)
class MailRealm:
    """Builds per-protocol avatars for an authenticated account."""

    def __init__(self, directory: IDirectory) -> None:
        self.directory = directory
        self._factories: list[tuple[Any, Callable[[Account], Any]]] = []

    def register(self, interface: Any, factory: Callable[[Account], Any]) -> None:
        """``factory(account)`` returns an avatar providing ``interface`` (or a Deferred)."""
        self._factories.append((interface, factory))

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> defer.Deferred:
        name = avatarId.decode() if isinstance(avatarId, bytes) else avatarId
        if not isinstance(name, str):
            return defer.fail(NotImplementedError("anonymous access is not offered"))
        for iface in interfaces:
            for known, factory in self._factories:
                if iface is known:
                    d = self.directory.account(name)

                    def build(acct: Account | None, iface: Any = iface, factory: Any = factory) -> Any:
                        if acct is None:
                            raise error.UnauthorizedLogin("Account vanished")
                        return defer.maybeDeferred(factory, acct).addCallback(
                            lambda avatar: (iface, avatar, getattr(avatar, "logout", lambda: None))
                        )

                    return d.addCallback(build)
        return defer.fail(NotImplementedError(f"no avatar for {interfaces!r}"))


def make_portal(directory: IDirectory) -> tuple[Portal, MailRealm]:
    realm = MailRealm(directory)
    return Portal(realm, [DirectoryChecker(directory)]), realm
