"""Blocking LDAP access with ldap3: server failover, pooled connections, search-then-bind.

Everything here blocks.  It runs in the LDAP directory's own thread pool
(:mod:`mailsuite.directory.ldap`) or in the admin CLI, and never touches the reactor.

* Servers: an ldap3 ``ServerPool`` (first / round robin / random, ``active=1``,
  ``exhaust=retry_interval``), so a server that fails stays out of the rotation for a
  while and the next one is used.  ldap3 only notices servers that refuse TCP; a server
  that accepts but does not answer (overloaded, or stopped) is marked down here after an
  operation times out.
* Connections: two small pools, one bound as the service account for searches and one
  used only to bind as users (so a user's bind never changes who searches).  A
  connection that fails is thrown away and the operation retried once on a new one,
  which is how connections come back after a server restart.
* Values put into filters are escaped (:mod:`mailsuite.directory.ldap_filters`).
* Failures to reach or use the directory raise DirectoryUnavailable (temporary), never
  a "no such user": nothing is rejected permanently because LDAP is down.
"""

from __future__ import annotations

import math
import re
import ssl
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as lexc

from mailsuite.directory.interface import DirectoryUnavailable, Resolution, base_address, normalize_address
from mailsuite.directory.ldap_filters import fill, split_login
from mailsuite.idn import ascii_domain

# ServerPool sleeps POOLING_LOOP_TIMEOUT (10 s) after every round in which no server
# answered, even the last one; we want "all down" to fail at once and be retried by
# the next request instead.
ldap3.set_config_parameter("POOLING_LOOP_TIMEOUT", 0)

# Errors that say the connection (or the server) is unusable: drop it, try another.
_CONNECTION_ERRORS = (
    lexc.LDAPCommunicationError,
    lexc.LDAPStartTLSError,
    lexc.LDAPServerPoolExhaustedError,
    lexc.LDAPResponseTimeoutError,
    lexc.LDAPSocketOpenError,
    lexc.LDAPCertificateError,
    lexc.LDAPMaximumRetriesError,
    OSError,
)
# Bind results that mean "these credentials are not good" (RFC 4511 4.1.9): wrong
# password, no such DN, account locked by a password policy, or not allowed to bind.
_BIND_REFUSED = {19, 32, 34, 48, 49, 50}
# Results that mean "this server cannot serve now": try another.
_SERVER_BUSY = {51, 52}

_QUOTA = re.compile(r"^\s*(\d+)\s*([KMGT]?)B?\s*$", re.I)
_MULTIPLIERS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class _Failed(Exception):
    """A connection-level failure (already logged into ``str``); the caller may retry."""


class BadRequest(Exception):
    """The directory refused a request as malformed (a bad DN in a group, say)."""


@dataclass(frozen=True)
class Entry:
    """What mailsuite reads from one LDAP entry."""

    dn: str
    addresses: tuple[str, ...]  # lower-cased; the first is the primary address
    quota: int | None = None
    members: tuple[str, ...] = ()  # member DNs, for a group
    host: str = ""  # the backend node named by [proxy] host_attribute
    quota_messages: int | None = None  # [directory.ldap] quota_messages_attribute

    @property
    def primary(self) -> str:
        return self.addresses[0] if self.addresses else ""

    @property
    def is_group(self) -> bool:
        return bool(self.members)


def parse_quota(value: str) -> int | None:
    m = _QUOTA.match(value)
    if not m:
        return None
    return int(m.group(1)) * _MULTIPLIERS[m.group(2).upper()]


def clean_address(value: str) -> str | None:
    """An address from an attribute value, or None.  ``smtp:a@b`` (Active Directory
    proxyAddresses) gives ``a@b``; other typed values (``X500:...``, ``sip:...``) and
    values that cannot name a Maildir give None."""
    v = value.strip()
    prefix, colon, rest = v.partition(":")
    if colon and "@" not in prefix:
        if prefix.lower() != "smtp":
            return None
        v = rest.strip()
    v = normalize_address(v)
    local, at, domain = v.rpartition("@")
    if not at or not local or not domain or local.startswith(".") or domain.startswith("."):
        return None
    if any(c in v for c in "/\\\x00") or any(ord(c) < 0x21 for c in v):
        return None
    return v


def _server(url: str, tls: ldap3.Tls, connect_timeout: float) -> ldap3.Server:
    parts = urlsplit(url)
    secure = parts.scheme == "ldaps"
    return ldap3.Server(
        parts.hostname,
        port=parts.port or (636 if secure else 389),
        use_ssl=secure,
        tls=tls,
        get_info=ldap3.NONE,  # reading the schema costs a round trip per connection
        connect_timeout=connect_timeout,
    )


def _discard(conn: ldap3.Connection) -> None:
    try:
        conn.strategy.close()
    except Exception:  # closing a broken socket may fail in several ways; it is gone anyway
        pass
    # ldap3's ServerPool keeps a reference to every connection ever registered.
    pool = getattr(conn, "server_pool", None)
    if pool is not None:
        pool.pool_states.pop(conn, None)


class _ConnectionPool:
    """Idle ldap3 connections of one kind, opened (and bound) on demand.

    ldap3's SYNC connections are not safe to share between threads; each thread takes
    one connection from here for one operation and gives it back."""

    def __init__(self, make: Callable[[], ldap3.Connection]) -> None:
        self._make = make
        self._idle: list[ldap3.Connection] = []
        self._lock = threading.Lock()

    def acquire(self, is_down: Callable[[Any], bool]) -> ldap3.Connection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._make()
            # A connection to a server marked down would only wait for its timeout.
            if conn.closed or is_down(conn.server):
                self.discard(conn)
                continue
            return conn

    def release(self, conn: ldap3.Connection) -> None:
        with self._lock:
            self._idle.append(conn)

    def discard(self, conn: ldap3.Connection) -> None:
        _discard(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self.discard(conn)


class LDAPClient:
    """Lookups and logins against the directory described by an LDAPConfig."""

    def __init__(
        self,
        cfg: Any,
        bind_password: str,
        domains: Iterable[str],
        postmaster: str = "",
        recipient_delimiter: str = "+",
        warn: Callable[[str], None] = lambda msg: None,
        host_attribute: str = "",
    ) -> None:
        self.host_attribute = host_attribute
        self.cfg = cfg
        self.domains = tuple(domains)
        self.postmaster = normalize_address(postmaster) if postmaster else ""
        self.delimiter = recipient_delimiter
        self.warn = warn
        self._bind_password = bind_password
        self._probe = threading.Lock()
        tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED if cfg.verify_certificates else ssl.CERT_NONE,
            ca_certs_file=str(cfg.ca_file) if cfg.ca_file is not None else None,
        )
        strategy = {"first": ldap3.FIRST, "round_robin": ldap3.ROUND_ROBIN, "random": ldap3.RANDOM}[cfg.server_strategy]
        self.servers = [_server(u, tls, cfg.connect_timeout) for u in cfg.servers]
        self.server_pool = ldap3.ServerPool(self.servers, strategy, active=1, exhaust=max(1, int(cfg.retry_interval)))
        self._search = _ConnectionPool(lambda: self._open(service=True))
        self._auth = _ConnectionPool(lambda: self._open(service=False))
        attrs = list(cfg.address_attributes) + list(cfg.member_attributes)
        if cfg.quota_attribute:
            attrs.append(cfg.quota_attribute)
        if cfg.quota_messages_attribute:
            attrs.append(cfg.quota_messages_attribute)
        if host_attribute:
            attrs.append(host_attribute)
        self._attributes = list(dict.fromkeys(attrs))

    # -- connections ---------------------------------------------------------------

    def _open(self, service: bool) -> ldap3.Connection:
        """A new connection, opened, upgraded with StartTLS if configured, and bound as
        the service account (``service``) or left anonymous (for user binds)."""
        cfg = self.cfg
        bound = service and bool(cfg.bind_dn)
        conn = ldap3.Connection(
            self.server_pool,
            user=cfg.bind_dn if bound else None,
            password=self._bind_password if bound else None,
            authentication=ldap3.SIMPLE if bound else ldap3.ANONYMOUS,
            client_strategy=ldap3.SYNC,
            auto_bind=ldap3.AUTO_BIND_NONE,
            # ldap3 also sets SO_RCVTIMEO, which takes whole seconds; the exact
            # (float) timeout is put on the socket after open().
            receive_timeout=max(1, math.ceil(cfg.timeout)),
            auto_referrals=False,  # Active Directory's referrals would send us to other hosts
            raise_exceptions=False,
            read_only=True,
            check_names=False,
        )
        try:
            try:
                conn.open(read_server_info=False)
            except lexc.LDAPServerPoolExhaustedError:
                # Every server failed within retry_interval.  Rather than refuse until
                # the interval ends, let one request at a time probe them again (others
                # meanwhile fail at once), so service resumes as soon as a server is back.
                if not self._probe.acquire(blocking=False):
                    raise
                try:
                    for st in getattr(self._pool_state(), "server_states", ()):
                        st.available = True
                    conn.open(read_server_info=False)
                finally:
                    self._probe.release()
            if conn.socket is not None:
                conn.socket.settimeout(cfg.timeout)
            if cfg.start_tls and not conn.server.ssl:
                if not conn.start_tls(read_server_info=False):
                    raise _Failed(f"StartTLS refused by {conn.server.name}: {conn.result and conn.result.get('description')}")
            if bound and not conn.bind(read_server_info=False):
                r = conn.result or {}
                raise _Failed(
                    f"service account bind as {cfg.bind_dn!r} refused by {conn.server.name}: "
                    f"{r.get('description')} {r.get('message') or ''}".rstrip()
                )
        except _CONNECTION_ERRORS as e:
            server = getattr(conn, "server", None)
            if server is not None and not isinstance(e, lexc.LDAPServerPoolExhaustedError):
                self._mark_down(server)
            _discard(conn)
            if isinstance(e, lexc.LDAPServerPoolExhaustedError):
                raise _Failed("no LDAP server answers (all failed recently)") from e
            raise _Failed(f"cannot connect to {getattr(server, 'name', '?')}: {e}") from e
        except _Failed:
            _discard(conn)
            raise
        return conn

    def _pool_state(self) -> Any:
        # single=True (the default): one state shared by every connection.
        return getattr(self.server_pool, "_pool_state", None)

    def _mark_down(self, server: Any) -> None:
        """Keep ``server`` out of the rotation for retry_interval, as ServerPool does
        itself for servers that refuse TCP (it uses these same fields)."""
        state = self._pool_state()
        for s in getattr(state, "server_states", ()):
            if s.server is server:
                s.available = False
                s.last_checked_time = datetime.now()

    def _is_down(self, server: Any) -> bool:
        state = self._pool_state()
        for s in getattr(state, "server_states", ()):
            if s.server is server:
                return not s.available and (datetime.now() - s.last_checked_time).total_seconds() < self.server_pool.exhaust
        return False

    def close(self) -> None:
        self._search.close()
        self._auth.close()

    # -- operations ----------------------------------------------------------------

    def search(
        self, base: str, filt: str, scope: str = ldap3.SUBTREE, size_limit: int = 0, attributes: list[str] | None = None
    ) -> list[tuple[str, dict[str, list[bytes]]]]:
        """Entries as (dn, {lower-case attribute: [raw values]}); [] when ``base`` does
        not exist.  Retries once on a fresh connection (the pool picks the server)."""
        last = ""
        for _attempt in range(2):
            try:
                conn = self._search.acquire(self._is_down)
            except _Failed as e:
                last = str(e)
                continue
            try:
                conn.search(
                    base, filt, scope,
                    attributes=self._attributes if attributes is None else attributes,
                    size_limit=size_limit,
                    time_limit=max(1, int(self.cfg.timeout)),
                    dereference_aliases=ldap3.DEREF_NEVER,
                )
            except _CONNECTION_ERRORS as e:
                self._mark_down(conn.server)
                self._search.discard(conn)
                last = f"{conn.server.name}: {e}"
                continue
            except lexc.LDAPException as e:
                self._search.release(conn)
                raise BadRequest(f"search {filt!r} under {base!r}: {e}") from e
            result = conn.result or {}
            response = conn.response or []
            code = result.get("result")
            if code in _SERVER_BUSY:
                self._mark_down(conn.server)
                self._search.discard(conn)
                last = f"{conn.server.name}: {result.get('description')}"
                continue
            self._search.release(conn)
            if code == 32:  # noSuchObject: the base is not there
                return []
            if code not in (0, 4):  # 4: sizeLimitExceeded, the entries so far are returned
                if code in (34, 21):  # invalidDNSyntax, invalidAttributeSyntax
                    raise BadRequest(f"search {filt!r} under {base!r}: {result.get('description')}")
                raise DirectoryUnavailable(f"LDAP search failed: {result.get('description')} {result.get('message') or ''}".rstrip())
            out = []
            for item in response:
                if item.get("type") != "searchResEntry":
                    continue  # referrals (Active Directory) are not followed
                raw = item.get("raw_attributes") or {}
                out.append((item["dn"], {str(k).lower(): list(v) for k, v in raw.items()}))
            return out
        raise DirectoryUnavailable(f"LDAP unreachable: {last}")

    def bind(self, dn: str, password: str) -> bool:
        """True if ``dn`` binds with ``password``.  Never called with an empty password
        (an empty simple bind is an unauthenticated bind that succeeds, RFC 4513 5.1.2)."""
        if not password:
            return False
        last = ""
        for _attempt in range(2):
            try:
                conn = self._auth.acquire(self._is_down)
            except _Failed as e:
                last = str(e)
                continue
            try:
                conn.user, conn.password, conn.authentication = dn, password, ldap3.SIMPLE
                ok = conn.bind(read_server_info=False)
            except _CONNECTION_ERRORS as e:
                self._mark_down(conn.server)
                self._auth.discard(conn)
                last = f"{conn.server.name}: {e}"
                continue
            except lexc.LDAPException as e:
                self._auth.discard(conn)
                raise BadRequest(f"bind as {dn!r}: {e}") from e
            finally:
                conn.password = None  # do not keep the user's password on the connection
            result = conn.result or {}
            code = result.get("result")
            if ok:
                self._auth.release(conn)
                return True
            if code in _SERVER_BUSY:
                self._mark_down(conn.server)
                self._auth.discard(conn)
                last = f"{conn.server.name}: {result.get('description')}"
                continue
            self._auth.release(conn)
            if code in _BIND_REFUSED:
                return False
            raise DirectoryUnavailable(f"LDAP bind failed: {result.get('description')} {result.get('message') or ''}".rstrip())
        raise DirectoryUnavailable(f"LDAP unreachable: {last}")

    # -- entries -------------------------------------------------------------------

    def _entry(self, dn: str, attrs: dict[str, list[bytes]]) -> Entry:
        def texts(name: str) -> list[str]:
            return [v.decode("utf-8", "replace") for v in attrs.get(name.lower(), [])]

        addresses: list[str] = []
        for name in self.cfg.address_attributes:
            for v in texts(name):
                a = clean_address(v)
                if a is not None:
                    addresses.append(a)
        quota = None
        if self.cfg.quota_attribute:
            values = texts(self.cfg.quota_attribute)
            if values:
                quota = parse_quota(values[0])
                if quota is None:
                    self.warn(f"{dn}: {self.cfg.quota_attribute} {values[0]!r} is not a size in bytes; no quota")
        quota_messages = None
        if self.cfg.quota_messages_attribute:
            values = texts(self.cfg.quota_messages_attribute)
            if values:
                if values[0].strip().isdigit():
                    quota_messages = int(values[0].strip())
                else:
                    self.warn(f"{dn}: {self.cfg.quota_messages_attribute} {values[0]!r} is not a count; no limit")
        members: list[str] = []
        for name in self.cfg.member_attributes:
            members.extend(texts(name))
        hosts = texts(self.host_attribute) if self.host_attribute else []
        return Entry(dn, tuple(dict.fromkeys(addresses)), quota, tuple(members), hosts[0].strip() if hosts else "",
                     quota_messages)

    def _entries(self, filt: str, size_limit: int = 0) -> list[Entry]:
        return [self._entry(dn, attrs) for dn, attrs in self.search(self.cfg.base_dn, filt, size_limit=size_limit)]

    def may_use_mail(self, entry: Entry, login: str = "") -> bool:
        """True if ``entry`` is in required_group (or none is configured)."""
        if not self.cfg.required_group:
            return True
        values = split_login(login or entry.primary)
        filt = fill(self.cfg.group_filter, dn=entry.dn, **values)
        try:
            # "1.1": no attributes (RFC 4511 4.5.1.8); the group's member list can be long.
            return bool(self.search(self.cfg.required_group, filt, ldap3.BASE, attributes=["1.1"]))
        except BadRequest as e:
            self.warn(f"required_group check failed: {e}")
            return False

    def user_entries(self, login: str, size_limit: int = 2) -> list[Entry]:
        """The entries user_filter finds for ``login`` (at most ``size_limit``)."""
        return self._entries(fill(self.cfg.user_filter, **split_login(login)), size_limit=size_limit)

    def address_entries(self, address: str) -> list[Entry]:
        """The entries address_filter finds for ``address``."""
        return self._address_entries(normalize_address(address))

    def find_user(self, login: str) -> Entry | None:
        """The one entry user_filter finds for ``login`` (with a primary address, and
        in required_group), or None."""
        found = self.user_entries(login)
        if len(found) != 1:
            if len(found) > 1:
                self.warn(f"login {login!r} matches several entries ({found[0].dn}, {found[1].dn}); refused")
            return None
        entry = found[0]
        if entry.is_group or not entry.primary:
            if not entry.primary:
                self.warn(f"{entry.dn}: no usable address in {', '.join(self.cfg.address_attributes)}; cannot log in")
            return None
        return entry if self.may_use_mail(entry, login) else None

    def authenticate(self, login: str, password: str, entry: Entry | None = None) -> tuple[Entry | None, bool]:
        """Search (unless ``entry`` is already known), then bind as the entry's DN."""
        if entry is None:
            entry = self.find_user(login)
            if entry is None:
                return None, False
        return entry, self.bind(entry.dn, password)

    def _address_entries(self, address: str) -> list[Entry]:
        local, _, domain = address.rpartition("@")
        found = self._entries(fill(self.cfg.address_filter, address=address, local=local, domain=domain))
        if not found and not domain.isascii():
            # An IDN domain may be stored in either form (``mail`` is IA5String in the
            # standard schema, so A-labels are the common one): try the other.
            try:
                adomain = ascii_domain(domain)
            except ValueError:
                return found
            found = self._entries(fill(self.cfg.address_filter, address=f"{local}@{adomain}", local=local,
                                       domain=adomain))
        return found

    def account(self, name: str) -> Entry | None:
        """The person entry whose primary address is ``name``, or the one user_filter
        finds for a login without @."""
        name = normalize_address(name)
        if "@" in name:
            people = [e for e in self._address_entries(name) if not e.is_group and e.primary == name]
            if len(people) == 1 and self.may_use_mail(people[0]):
                return people[0]
            return None
        return self.find_user(name)

    def sender_addresses(self, name: str) -> tuple[str, ...]:
        entry = self.account(name)
        return entry.addresses if entry is not None else ()

    def resolve(self, address: str) -> Resolution | None:
        """Where mail to ``address`` (in a local domain) goes, or None if unknown."""
        address = normalize_address(address)
        local, _, domain = address.rpartition("@")
        if not local or domain not in self.domains:
            return None
        entries = self._address_entries(address)
        base = base_address(address, self.delimiter) if self.delimiter else None
        if not entries and base is not None:
            entries = self._address_entries(base)
        if not entries and local == "postmaster" and self.postmaster:
            # RFC 5321 4.5.1: postmaster@ of every local domain must work.
            if self.postmaster.rpartition("@")[2] not in self.domains:
                return Resolution(forwards=(self.postmaster,))
            if self.postmaster != address:
                return self.resolve(self.postmaster)
        if not entries and self.cfg.catchall_filter:
            # The domain's catch-all entry, e.g. (mail=@example.org): the last resort.
            entries = self._entries(fill(self.cfg.catchall_filter, domain=domain))
            if not entries and not domain.isascii():
                try:
                    entries = self._entries(fill(self.cfg.catchall_filter, domain=ascii_domain(domain)))
                except ValueError:
                    pass
        boxes: list[str] = []
        forwards: list[str] = []
        budget = [self.cfg.max_group_members]
        seen: set[str] = set()
        for entry in entries:
            self._collect(entry, boxes, forwards, seen, budget, address)
        if not boxes and not forwards:
            return None
        return Resolution(tuple(dict.fromkeys(boxes)), tuple(dict.fromkeys(forwards)))

    def _collect(self, entry: Entry, boxes: list[str], forwards: list[str], seen: set[str], budget: list[int], via: str) -> None:
        if entry.dn.lower() in seen:
            return
        seen.add(entry.dn.lower())
        if entry.is_group:
            if not self.cfg.expand_groups:
                self.warn(f"{via}: {entry.dn} is a group and expand_groups is false; ignored")
                return
            for dn in entry.members:
                if dn.lower() in seen:
                    continue
                if budget[0] <= 0:
                    self.warn(f"{via}: more than max_group_members ({self.cfg.max_group_members}) members; the rest are skipped")
                    return
                budget[0] -= 1
                try:
                    found = self.search(dn, "(objectClass=*)", ldap3.BASE)
                except BadRequest as e:
                    self.warn(f"{via}: member {dn!r} skipped: {e}")
                    continue
                if not found:
                    self.warn(f"{via}: member {dn!r} does not exist; skipped")
                    continue
                self._collect(self._entry(*found[0]), boxes, forwards, seen, budget, via)
            return
        primary = entry.primary
        if not primary:
            self.warn(f"{via}: {entry.dn} has no usable address; skipped")
            return
        if primary.rpartition("@")[2] not in self.domains:
            forwards.append(primary)
        elif self.may_use_mail(entry):
            boxes.append(primary)
