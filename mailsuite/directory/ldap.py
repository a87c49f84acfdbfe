"""The LDAP backend of the directory: IDirectory over :class:`LDAPClient`.

ldap3 blocks, so every LDAP call runs in this backend's OWN bounded thread pool
(``pool_size`` threads; not the shared worker pool, so a slow directory cannot hold up
fsyncs).  Around it:

* a deadline per request (``request_timeout``): the caller gets DirectoryUnavailable
  when it passes, whatever the thread is still waiting for, and a request that waited
  in the queue past its deadline is dropped unrun; at most ``max_pending`` requests
  wait, beyond that new ones fail at once.  DirectoryUnavailable is what every protocol
  turns into a temporary answer (451 4.4.3, NO [UNAVAILABLE], -ERR [SYS/TEMP]).
* caches, used only from the reactor thread: found accounts and addresses for
  ``cache_ttl``, unknown ones for ``negative_cache_ttl``; failures are never cached.
  Concurrent lookups of one key share one LDAP request.
* an auth cache: a successful login is remembered for ``auth_cache_ttl`` as
  HMAC-SHA256(per-process random key, login + password), never the password.  Why
  cache at all: a mail client opens several connections at once and polls every few
  minutes; without a cache each costs a search and a bind.  Why a keyed fast hash and
  not bcrypt: a slow hash would cost as much as the bind it saves; the key lives only in
  this process's memory, so the digests are useless without it.  A new password works
  at once (the digest differs, so LDAP is asked and the entry replaced); an old one keeps
  working until the entry expires.  Failed logins are not cached, so a user who fixes a
  typo is not locked out and LDAP's own lockout policy sees every attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Hashable

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from mailsuite.directory.interface import (
    Account,
    DirectoryUnavailable,
    IDirectory,
    normalize_address,
)
from mailsuite.directory.ldap_client import BadRequest, Entry, LDAPClient

log = Logger(namespace="mailsuite.directory")

_MISSING = object()
MAX_LOGIN = 256


class TTLCache:
    """A dict whose entries expire; ``None`` values are remembered too (negative)."""

    def __init__(self, ttl: float, negative_ttl: float, max_entries: int = 50000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.negative_ttl, self.max_entries, self.clock = ttl, negative_ttl, max_entries, clock
        self._data: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable) -> Any:
        item = self._data.get(key)
        if item is None:
            return _MISSING
        if item[0] < self.clock():
            del self._data[key]
            return _MISSING
        return item[1]

    def put(self, key: Hashable, value: Any) -> None:
        ttl = self.negative_ttl if value is None else self.ttl
        if ttl <= 0:
            return
        if len(self._data) >= self.max_entries:
            now = self.clock()
            self._data = {k: v for k, v in self._data.items() if v[0] >= now}
            if len(self._data) >= self.max_entries:
                self._data.clear()
        self._data[key] = (self.clock() + ttl, value)

    def clear(self) -> None:
        self._data.clear()


class BoundedPool:
    """Runs blocking calls in a private thread pool with a queue limit and deadlines."""

    def __init__(self, size: int, max_pending: int, timeout: float, name: str = "mailsuite-ldap") -> None:
        self.size, self.max_pending, self.timeout = size, max_pending, timeout
        self.pending = 0  # submitted and not finished (queued or running)
        self._pool = ThreadPool(minthreads=0, maxthreads=size, name=name)
        self._started = False

    def _start(self) -> None:
        self._pool.start()
        self._started = True
        self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self.stop)  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._started:
            self._started = False
            try:
                reactor.removeSystemEventTrigger(self._trigger)  # type: ignore[attr-defined]
            except (ValueError, KeyError):
                pass  # already running it
            self._pool.stop()

    def run(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        if self.pending >= self.max_pending:
            return defer.fail(DirectoryUnavailable(f"LDAP overloaded: {self.pending} requests waiting"))
        if not self._started:
            self._start()
        deadline = time.monotonic() + self.timeout

        def call() -> Any:
            if time.monotonic() > deadline:
                raise DirectoryUnavailable("LDAP request dropped: it waited past its deadline")
            return f(*args)

        self.pending += 1
        inner = deferToThreadPool(reactor, self._pool, call)  # type: ignore[arg-type]
        outer: defer.Deferred = defer.Deferred()

        def expire() -> None:
            if not outer.called:
                outer.errback(DirectoryUnavailable(f"LDAP did not answer within {self.timeout:g} s"))

        timer = reactor.callLater(self.timeout, expire)  # type: ignore[attr-defined]

        def finished(result: Any) -> None:
            self.pending -= 1
            if timer.active():
                timer.cancel()
            if not outer.called:
                outer.callback(result) if not isinstance(result, Failure) else outer.errback(result)
            elif isinstance(result, Failure) and not result.check(DirectoryUnavailable, BadRequest):
                log.failure("ldap: error after the request timed out", result)

        inner.addBoth(finished)
        return outer


@implementer(IDirectory)
class LDAPDirectory:
    def __init__(self, client: LDAPClient, cfg: Any, clock: Callable[[], float] = time.monotonic,
                 metrics: Any = None) -> None:
        from mailsuite.metrics import NULL

        self.metrics = metrics if metrics is not None else NULL
        self.client = client
        self.cfg = cfg
        self.domains = client.domains
        self.clock = clock
        self.pool = BoundedPool(cfg.pool_size, cfg.max_pending, cfg.request_timeout)
        self.cache = TTLCache(cfg.cache_ttl, cfg.negative_cache_ttl, clock=clock)
        self._auth: dict[str, tuple[bytes, Account, float]] = {}
        self._key = secrets.token_bytes(32)
        self._inflight: dict[Hashable, defer.Deferred] = {}
        self._down_since: float | None = None
        self._last_warning: tuple[str, float] = ("", 0.0)

    # -- plumbing --------------------------------------------------------------------

    def _call(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        """Run ``f`` in the pool; failures become DirectoryUnavailable, logged (at most
        one line per reason every 10 s, so an outage does not flood the log)."""

        def ok(result: Any) -> Any:
            if self._down_since is not None:
                log.info("ldap: directory answers again after {s:.1f} s", s=self.clock() - self._down_since)
                self._down_since = None
            return result

        def failed(f: Failure) -> Failure:
            if not f.check(DirectoryUnavailable):
                if f.check(BadRequest):
                    why = str(f.value)
                else:
                    log.failure("ldap: unexpected error", f)
                    why = f"internal error: {f.getErrorMessage()}"
                f = Failure(DirectoryUnavailable(why))
            reason = str(f.value)
            now = self.clock()
            if self._down_since is None:
                self._down_since = now
            last, at = self._last_warning
            if reason != last or now - at > 10:
                log.warn("ldap: directory unavailable: {reason}", reason=reason[:300])
                self._last_warning = (reason, now)
            return f

        d = self.metrics.ldap_request(getattr(f, "__name__", "request"), self.pool.run(f, *args))
        return d.addCallbacks(ok, failed)

    def _cached(self, key: Hashable, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        hit = self.cache.get(key)
        if hit is not _MISSING:
            return defer.succeed(hit)
        if key in self._inflight:
            waiter: defer.Deferred = defer.Deferred()
            self._inflight[key].addBoth(lambda r: (waiter.callback(r) if not isinstance(r, Failure) else waiter.errback(r), r)[1])
            return waiter
        d = self._call(f, *args)
        self._inflight[key] = d

        def store(result: Any) -> Any:
            self.cache.put(key, result)
            return result

        def done(result: Any) -> Any:
            self._inflight.pop(key, None)
            return result

        d.addCallback(store)
        d.addBoth(done)
        # Hand back a separate Deferred so that callers cannot alter what waiters get.
        out: defer.Deferred = defer.Deferred()
        d.addBoth(lambda r: (out.callback(r) if not isinstance(r, Failure) else out.errback(r), r)[1])
        d.addErrback(lambda f: None)
        return out

    def _digest(self, login: str, password: str) -> bytes:
        return hmac.new(self._key, login.encode("utf-8") + b"\0" + password.encode("utf-8"), hashlib.sha256).digest()

    @staticmethod
    def _account(entry: Entry) -> Account:
        return Account(entry.primary, entry.quota, entry.host, entry.quota_messages)

    def close(self) -> None:
        self.pool.stop()
        self.client.close()

    # -- IDirectory -------------------------------------------------------------------

    def authenticate(self, login: str, password: str) -> defer.Deferred:
        login = login.strip()
        # Empty passwords never reach LDAP: a simple bind with an empty password is an
        # unauthenticated bind that succeeds (RFC 4513 5.1.2).
        if not password or not login or len(login) > MAX_LOGIN or any(ord(c) < 0x20 for c in login):
            return defer.fail(UnauthorizedLogin("Authentication failed"))
        key = login.lower()
        now = self.clock()
        hit = self._auth.get(key)
        if hit is not None:
            if hit[2] >= now and hmac.compare_digest(hit[0], self._digest(key, password)):
                return defer.succeed(hit[1])
            if hit[2] < now:
                del self._auth[key]
        user = self.cache.get(("user", key))
        if user is None:  # known not to exist: no LDAP round trip for it
            return defer.fail(UnauthorizedLogin("Authentication failed"))
        d = self._call(self.client.authenticate, login, password, None if user is _MISSING else user)

        def checked(result: tuple[Entry | None, bool]) -> Account:
            entry, ok = result
            self.cache.put(("user", key), entry)
            if entry is None or not ok:
                raise UnauthorizedLogin("Authentication failed")
            account = self._account(entry)
            self.cache.put(("account", account.name), entry)
            if self.cfg.auth_cache_ttl > 0:
                if len(self._auth) > 50000:
                    self._auth.clear()
                self._auth[key] = (self._digest(key, password), account, self.clock() + self.cfg.auth_cache_ttl)
            return account

        return d.addCallback(checked)

    def resolve(self, address: str) -> defer.Deferred:
        address = normalize_address(address)
        local, _, domain = address.rpartition("@")
        if not local or domain not in self.domains:
            return defer.succeed(None)
        return self._cached(("resolve", address), self.client.resolve, address)

    def account(self, name: str) -> defer.Deferred:
        name = normalize_address(name)
        d = self._cached(("account", name), self.client.account, name)
        return d.addCallback(lambda e: self._account(e) if e is not None else None)

    def sender_addresses(self, account: str) -> defer.Deferred:
        name = normalize_address(account)
        d = self._cached(("account", name), self.client.account, name)
        return d.addCallback(lambda e: e.addresses if e is not None else ())


def read_secret(path: Path) -> str:
    """The first line of a password file, without its line end."""
    with open(path, encoding="utf-8") as f:
        return f.readline().rstrip("\r\n")


def make_client(cfg: Any, warn: Callable[[str], None] = lambda msg: None) -> LDAPClient:
    """An LDAPClient for a whole mailsuite Config (reads the bind password file)."""
    lc = cfg.directory.ldap
    password = read_secret(lc.bind_password_file) if lc.bind_password_file is not None else ""
    px = cfg.proxy
    proxying = bool(px.imap_listen or px.pop3_listen or px.submission_listen)
    return LDAPClient(lc, password, cfg.server.domains, postmaster=cfg.server.postmaster, warn=warn,
                      recipient_delimiter=cfg.server.recipient_delimiter,
                      host_attribute=px.host_attribute if proxying else "")


def make_ldap_directory(cfg: Any, metrics: Any = None) -> LDAPDirectory:
    """The directory for ``[directory] backend = "ldap"`` (called by service.py)."""

    def warn(msg: str) -> None:
        # Called from pool threads: log from the reactor thread.
        reactor.callFromThread(log.warn, "ldap: {msg}", msg=msg)  # type: ignore[attr-defined]

    client = make_client(cfg, warn)
    return LDAPDirectory(client, cfg.directory.ldap, metrics=metrics)
