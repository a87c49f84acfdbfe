"""The file backend of the directory: a users file and an aliases file.

users file, one account per line (like a Dovecot passwd-file)::

    alice@example.org:$2b$10$...hash...[:quota=1073741824][:quota_messages=100000]

aliases file, one alias per line (like Postfix virtual(5))::

    info@example.org: alice@example.org, bob      # bare names stay in the alias's domain
    team@example.org: alice, carol@partner.example # external addresses are forwarded
    @example.org: alice                            # catch-all: any other address there

Lookup order for a recipient (as Postfix virtual(5)): the address itself (alias or
account), the address without its extension (``bob+tag`` → ``bob``, the characters of
``[server] recipient_delimiter``), postmaster@, then the domain's catch-all.

Both files are re-read when their mtime changes, so edits (by hand or by
``mailsuite user``) apply without a restart.  The user file is rewritten atomically
(temp, fsync, rename) by :func:`write_users`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite import fsutil
from mailsuite.directory.interface import (
    Account,
    DirectoryUnavailable,
    IDirectory,
    Resolution,
    base_address,
    normalize_address,
)
from mailsuite.directory.passwords import check_password
from mailsuite.workers import IWorkers

log = Logger(namespace="mailsuite.directory")

MAX_ALIAS_DEPTH = 10


class FileFormatError(ValueError):
    pass


@dataclass(frozen=True)
class UserEntry:
    address: str
    password_hash: str
    quota: int | None = None
    host: str = ""  # the user's backend node, for [proxy]
    quota_messages: int | None = None  # most messages stored; None: no limit

    def to_line(self) -> str:
        extra = f":quota={self.quota}" if self.quota is not None else ""
        extra += f":quota_messages={self.quota_messages}" if self.quota_messages is not None else ""
        extra += f":host={self.host}" if self.host else ""
        return f"{self.address}:{self.password_hash}{extra}\n"


def parse_users(text: str, source: str = "users file") -> dict[str, UserEntry]:
    users: dict[str, UserEntry] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 2 or "@" not in parts[0]:
            raise FileFormatError(f"{source} line {n}: expected address:hash")
        address = normalize_address(parts[0])
        quota = quota_messages = None
        host = ""
        for opt in parts[2:]:
            key, _, value = opt.partition("=")
            if key == "quota" and value.isdigit():
                quota = int(value)
            elif key == "quota_messages" and value.isdigit():
                quota_messages = int(value)
            elif key == "host" and value and all(c.isalnum() or c in ".-_" for c in value):
                host = value
            elif opt:
                raise FileFormatError(f"{source} line {n}: unknown field {opt!r}")
        users[address] = UserEntry(address, parts[1], quota, host, quota_messages)
    return users


def parse_aliases(text: str, source: str = "aliases file") -> dict[str, tuple[str, ...]]:
    aliases: dict[str, tuple[str, ...]] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, targets = line.partition(":")
        name = normalize_address(name)
        if not sep or "@" not in name or name.endswith("@"):
            raise FileFormatError(f"{source} line {n}: expected alias@domain: target, ...")
        domain = name.rpartition("@")[2]
        out = []
        for t in targets.replace(",", " ").split():
            t = normalize_address(t)
            out.append(t if "@" in t else f"{t}@{domain}")
        if not out:
            raise FileFormatError(f"{source} line {n}: alias {name} has no target")
        aliases[name] = tuple(out)
    return aliases


def write_users(path: Path, users: dict[str, UserEntry]) -> None:
    """Rewrite the users file atomically, keeping it private to its owner."""
    body = "".join(users[a].to_line() for a in sorted(users))
    fsutil.atomic_write(path, body.encode("utf-8"), mode=0o600)


def read_users(path: Path) -> dict[str, UserEntry]:
    try:
        return parse_users(path.read_text("utf-8"), str(path))
    except FileNotFoundError:
        return {}


class _Watched:
    """A file parsed again whenever its mtime or size changes."""

    def __init__(self, path: Path, parser, empty):  # type: ignore[no-untyped-def]
        self.path, self.parser, self.empty = path, parser, empty
        self.stamp: tuple[int, int] | None = None
        self.value = empty

    def get(self):  # type: ignore[no-untyped-def]
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.stamp, self.value = None, self.empty
            return self.value
        except OSError as e:
            raise DirectoryUnavailable(f"cannot read {self.path}: {e.strerror}") from e
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self.stamp:
            try:
                text = self.path.read_text("utf-8")
                if text and not text.endswith("\n") and self.stamp is not None:
                    # Half written (an editor or a copy still at work, or one that
                    # died): a cut line would lock people out or drop accounts.
                    raise FileFormatError(f"{self.path}: the last line has no line end (still being written?)")
                self.value = self.parser(text, str(self.path))
            except FileFormatError as e:
                # Keep serving the last good version; an admin's typo must not stop mail.
                log.error("directory: {error}; keeping the previous version", error=str(e))
            except OSError as e:
                raise DirectoryUnavailable(f"cannot read {self.path}: {e.strerror}") from e
            self.stamp = stamp
        return self.value


@dataclass
class _AuthCache:
    """Recent successful logins, so an IMAP client opening five connections does not
    cost five bcrypt checks.  Holds a keyed SHA-256 of the password, never the password,
    and is invalidated by a changed hash in the users file."""

    ttl: float = 300.0
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    entries: dict[tuple[str, str], tuple[bytes, float]] = field(default_factory=dict)

    def _digest(self, password: str) -> bytes:
        return hmac.new(self.key, password.encode("utf-8"), hashlib.sha256).digest()

    def hit(self, login: str, stored: str, password: str) -> bool:
        entry = self.entries.get((login, stored))
        if entry is None or entry[1] < time.monotonic():
            return False
        return hmac.compare_digest(entry[0], self._digest(password))

    def remember(self, login: str, stored: str, password: str) -> None:
        if len(self.entries) > 10000:
            self.entries.clear()
        self.entries[(login, stored)] = (self._digest(password), time.monotonic() + self.ttl)


@implementer(IDirectory)
class FileDirectory:
    def __init__(
        self,
        users_file: Path,
        aliases_file: Path,
        domains: tuple[str, ...],
        postmaster: str = "",
        allow_plaintext_passwords: bool = False,
        recipient_delimiter: str = "+",
        *,
        workers: IWorkers,
    ) -> None:
        """``workers``: where password hashes are checked (bcrypt/argon2 block)."""
        self.workers = workers
        self.domains = tuple(domains)
        self.postmaster = normalize_address(postmaster) if postmaster else ""
        self.allow_plaintext = allow_plaintext_passwords
        self.delimiter = recipient_delimiter
        self._users = _Watched(users_file, parse_users, {})
        self._aliases = _Watched(aliases_file, parse_aliases, {})
        self._cache = _AuthCache()

    # -- lookups (in memory: cheap enough for the reactor thread) --------------------

    def _login_name(self, login: str) -> str:
        login = normalize_address(login)
        if "@" not in login and self.domains:
            login = f"{login}@{self.domains[0]}"
        return login

    def _entry(self, name: str) -> UserEntry | None:
        return self._users.get().get(self._login_name(name))

    def account_now(self, name: str) -> Account | None:
        e = self._entry(name)
        return Account(e.address, e.quota, e.host, e.quota_messages) if e else None

    def resolve_now(self, address: str) -> Resolution | None:
        address = normalize_address(address)
        local, _, domain = address.rpartition("@")
        if domain not in self.domains or not local:
            return None
        res = self._expand(address, 0, set())
        if res is None and self.delimiter:
            base = base_address(address, self.delimiter)
            if base is not None:
                res = self._expand(base, 0, set())
        if res is None and local == "postmaster":
            res = self._postmaster(domain)
        if res is None and f"@{domain}" in self._aliases.get():
            res = self._expand(f"@{domain}", 0, set())
        return res

    def _expand(self, address: str, depth: int, seen: set[str]) -> Resolution | None:
        users = self._users.get()
        aliases = self._aliases.get()
        if address in seen or depth > MAX_ALIAS_DEPTH:
            return Resolution()
        seen.add(address)
        targets = aliases.get(address)
        if targets is None:
            if address in users:
                return Resolution(mailboxes=(address,))
            return None
        boxes: list[str] = []
        fwds: list[str] = []
        for t in targets:
            if t == address and t in users:
                boxes.append(t)
                continue
            if t.rpartition("@")[2] not in self.domains:
                fwds.append(t)
                continue
            sub = self._expand(t, depth + 1, seen)
            if sub is None:
                log.warn("directory: alias {alias} names unknown address {target}", alias=address, target=t)
                continue
            boxes.extend(sub.mailboxes)
            fwds.extend(sub.forwards)
        return Resolution(tuple(dict.fromkeys(boxes)), tuple(dict.fromkeys(fwds)))

    def _postmaster(self, domain: str) -> Resolution | None:
        """RFC 5321 4.5.1: postmaster@ works for every local domain, alias or not."""
        users = self._users.get()
        if self.postmaster:
            res = self._expand(self.postmaster, 0, set()) if self.postmaster.rpartition("@")[2] in self.domains else Resolution(forwards=(self.postmaster,))
            if res:
                return res
        in_domain = [a for a in users if a.endswith("@" + domain)]
        pick = in_domain[0] if in_domain else next(iter(users), None)
        return Resolution(mailboxes=(pick,)) if pick else None

    def sender_addresses_now(self, account: str) -> tuple[str, ...]:
        account = self._login_name(account)
        out = [account]
        for alias in self._aliases.get():
            if alias.startswith("@"):
                continue  # a catch-all is no address to send from
            res = self._expand(alias, 0, set())
            if res and account in res.mailboxes:
                out.append(alias)
        return tuple(out)

    # -- IDirectory -----------------------------------------------------------------

    def account(self, name: str) -> defer.Deferred:
        return defer.maybeDeferred(self.account_now, name)

    def resolve(self, address: str) -> defer.Deferred:
        return defer.maybeDeferred(self.resolve_now, address)

    def sender_addresses(self, account: str) -> defer.Deferred:
        return defer.maybeDeferred(self.sender_addresses_now, account)

    def authenticate(self, login: str, password: str) -> defer.Deferred:
        try:
            entry = self._entry(login)
        except DirectoryUnavailable:
            return defer.fail()
        if entry is not None and self._cache.hit(entry.address, entry.password_hash, password):
            return defer.succeed(Account(entry.address, entry.quota, entry.host, entry.quota_messages))
        stored = entry.password_hash if entry else None
        d = self.workers.run(check_password, password, stored, self.allow_plaintext)

        def checked(ok: bool) -> Account:
            if not ok or entry is None:
                raise UnauthorizedLogin("Authentication failed")
            self._cache.remember(entry.address, entry.password_hash, password)
            return Account(entry.address, entry.quota, entry.host, entry.quota_messages)

        return d.addCallback(checked)
