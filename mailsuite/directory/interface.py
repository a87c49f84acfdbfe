"""The directory interface every backend implements, and the records it returns.

Callers (the cred checker, SMTP policy, the realm) see only this.  Every method returns
a Deferred because a backend (LDAP) may have to leave the reactor thread; a backend
that cannot answer *now* fails with DirectoryUnavailable, which every protocol turns
into a temporary error (4xx, NO [UNAVAILABLE], -ERR [SYS/TEMP]).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


class DirectoryUnavailable(Exception):
    """The directory cannot answer right now (LDAP down, file unreadable): try later."""


@dataclass(frozen=True)
class Account:
    """A mailbox owner.  ``name`` is the canonical login, ``local@domain`` in lower case,
    and names the Maildir ``<data_dir>/mail/<domain>/<local>``."""

    name: str
    quota: int | None = None  # bytes; None means no quota
    host: str = ""  # the backend node of this user, for the proxy ([proxy] host_attribute)
    quota_messages: int | None = None  # most messages the account may store; None: no limit

    @property
    def local(self) -> str:
        return self.name.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.name.rpartition("@")[2]


@dataclass(frozen=True)
class Resolution:
    """What an address delivers to: local accounts and external addresses."""

    mailboxes: tuple[str, ...] = ()  # Account.name values
    forwards: tuple[str, ...] = ()  # addresses outside our domains

    def __bool__(self) -> bool:
        return bool(self.mailboxes or self.forwards)


def normalize_address(address: str) -> str:
    """Lower-case the domain; local parts compare case-insensitively here as in
    Postfix/Dovecot defaults, so the whole address is lower-cased (UTF-8 local parts
    too, RFC 6531).  An IDN domain takes its U-label form, so an account or alias
    written with either form of the domain is found under both."""
    from mailsuite.idn import canonical_address

    return canonical_address(address.strip().lower())


def base_address(address: str, delimiters: str) -> str | None:
    """``bob+lists@example.org`` → ``bob@example.org`` when "+" is one of
    ``delimiters`` (each character is one, as in Postfix's recipient_delimiter); the
    extension starts at the first of them.  None when the address has none."""
    local, at, domain = address.rpartition("@")
    cut = min((i for i in (local.find(c) for c in delimiters) if i > 0), default=-1)
    if cut < 0:
        return None
    return f"{local[:cut]}{at}{domain}"


class IDirectory(Interface):
    """Accounts, addresses, aliases and passwords."""

    domains = Attribute("tuple of local domain names (lower case, U-labels: mailsuite.idn)")

    def authenticate(login: str, password: str) -> Deferred:
        """Fire with the Account for a correct login/password, fail with
        twisted.cred.error.UnauthorizedLogin otherwise (the same way for an unknown
        login and a wrong password), or with DirectoryUnavailable."""

    def resolve(address: str) -> Deferred:
        """Fire with the Resolution for an address in a local domain, or None if the
        address is unknown; fail with DirectoryUnavailable."""

    def account(name: str) -> Deferred:
        """Fire with the Account named ``name`` (a login or address), or None."""

    def sender_addresses(account: str) -> Deferred:
        """Fire with the tuple of addresses ``account`` may use as envelope sender and
        From: (its own address, its aliases)."""
