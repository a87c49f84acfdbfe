"""The one DNS resolver of the suite: asynchronous answers with a shared cache.

Why dnspython in a thread pool and not ``twisted.names.client`` (research/
wave2-libraries.md §6): twisted.names has no client cache, no TLSA type and cannot ask
for or report the AD bit (DANE needs it), and SPF evaluation (pyspf) recurses through
include/redirect so it must run in a thread and look names up *synchronously* there.
dnspython gives typed records (TLSA included), the AD flag, a thread-safe, bounded LRU
cache that honours TTLs, and per-server ports.  So one dnspython ``Resolver`` serves
both callers through the same cache:

* reactor code calls the Deferred methods (``txt``, ``mx``, ``a``, ``aaaa``, ``ptr``,
  ``tlsa``).  A cached answer is returned from the reactor thread at once (no thread
  hop); a miss runs the blocking query in this resolver's own ``ThreadPool`` (not the
  suite's worker pool, so a slow name server never starves fsyncs, and a worker thread
  running pyspf that waits on DNS can never deadlock waiting for a free worker).  Equal
  questions asked while one is in flight share its answer.
* code already in a thread (pyspf, dkimpy's ``dnsfunc``) calls ``lookup_sync``.

Errors: :class:`NotFound` (NXDOMAIN or a name that cannot exist: permanent) and
:class:`TemporaryDNSError` (timeout, SERVFAIL, refusal: try later).  A name that
exists without records of the asked type answers an empty list (NODATA).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.reversename
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.names import hosts
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer


class DNSError(Exception):
    """A lookup that gave no usable answer; ``name`` and ``rtype`` say which."""

    temporary = True

    def __init__(self, name: str, rtype: str, reason: str) -> None:
        super().__init__(f"{reason} for name={name} type={rtype}")
        self.name, self.rtype, self.reason = name, rtype, reason


class NotFound(DNSError):
    """NXDOMAIN (or a name that cannot exist): a permanent answer.  ``expires``: when
    the cached negative answer expires (``time.time()`` scale), None if not cached."""

    temporary = False
    expires: float | None = None


class TemporaryDNSError(DNSError):
    """Timeout, SERVFAIL, REFUSED, no reachable server: ask again later."""


class DNSTimeout(TemporaryDNSError):
    pass


@dataclass(frozen=True)
class MX:
    preference: int
    exchange: str  # lower case, no final dot; "" for a null MX (RFC 7505)


@dataclass(frozen=True)
class TLSA:
    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True)
class TLSAAnswer:
    records: tuple[TLSA, ...]
    # The server set AD: it validated the answer with DNSSEC.  Only meaningful when
    # the configured server is a validating resolver on a trusted path (localhost).
    authentic: bool


class IResolver(Interface):
    """What the rest of the suite asks of DNS.  Deferred methods fire in the reactor
    thread with the converted answer or fail with a :class:`DNSError`."""

    def txt(name: str) -> "defer.Deferred[list[bytes]]":
        """Each TXT record's strings joined (a 2048-bit DKIM key arrives whole)."""

    def mx(name: str) -> "defer.Deferred[list[MX]]":
        """MX records sorted by preference."""

    def a(name: str) -> "defer.Deferred[list[str]]":
        """IPv4 addresses (the hosts file first)."""

    def aaaa(name: str) -> "defer.Deferred[list[str]]":
        """IPv6 addresses (the hosts file first)."""

    def ptr(ip: str) -> "defer.Deferred[list[str]]":
        """Names of an IP address (reverse lookup)."""

    def tlsa(name: str) -> "defer.Deferred[TLSAAnswer]":
        """TLSA records (RFC 6698) and whether the server vouched for them (AD)."""

    def lookup_sync(name: str, rtype: str) -> Any:
        """The same answers, blocking: only for code already running in a thread."""


def parse_nameserver(value: str) -> tuple[str, int]:
    """``ip``, ``ip:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address → (ip, port);
    raises ValueError."""
    v = value.strip()
    port = 53
    if v.startswith("["):
        host, sep, rest = v[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r}: expected [address]:port")
        port_s = rest[1:]
    elif v.count(":") == 1:
        host, _, port_s = v.partition(":")
    else:
        host, port_s = v, ""
    ipaddress.ip_address(host)  # raises ValueError
    if port_s:
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ValueError(f"{value!r}: bad port")
        port = int(port_s)
    return host, port


def _name_text(n: Any) -> str:
    return n.to_text(omit_final_dot=True).lower()


def _convert_txt(answer: Any) -> list[bytes]:
    return [b"".join(rd.strings) for rd in answer] if answer.rrset is not None else []


def _convert_mx(answer: Any) -> list[MX]:
    if answer.rrset is None:
        return []
    out = [MX(rd.preference, "" if rd.exchange == dns.name.root else _name_text(rd.exchange)) for rd in answer]
    return sorted(out, key=lambda m: m.preference)


def _convert_address(answer: Any) -> list[str]:
    return [rd.address for rd in answer] if answer.rrset is not None else []


def _convert_ptr(answer: Any) -> list[str]:
    return [_name_text(rd.target) for rd in answer] if answer.rrset is not None else []


def _convert_tlsa(answer: Any) -> TLSAAnswer:
    records = tuple(TLSA(rd.usage, rd.selector, rd.mtype, rd.cert) for rd in answer) if answer.rrset is not None else ()
    return TLSAAnswer(records, bool(answer.response.flags & dns.flags.AD))


def _convert_cname(answer: Any) -> list[str]:
    return [_name_text(rd.target) for rd in answer] if answer.rrset is not None else []


def _convert_srv(answer: Any) -> list[str]:
    if answer.rrset is None:
        return []
    return [f"{rd.priority} {rd.weight} {rd.port} {_name_text(rd.target) or '.'}" for rd in answer]


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "TXT": _convert_txt,
    "MX": _convert_mx,
    "A": _convert_address,
    "AAAA": _convert_address,
    "PTR": _convert_ptr,
    "TLSA": _convert_tlsa,
    "CNAME": _convert_cname,  # for dns-check
    "SRV": _convert_srv,  # "priority weight port target", for dns-check
}


@implementer(IResolver)
class Resolver:
    """Built once from ``[dns]`` (see :func:`from_config`) and passed to every user.

    ``nameservers``: ("ip[:port]", ...); empty means /etc/resolv.conf.  ``timeout``:
    seconds for a whole lookup (all tries).  ``cache_size``: answers kept (LRU; each
    expires with its TTL).  ``threads``: queries in flight at once.
    """

    def __init__(
        self,
        reactor: Any,
        nameservers: tuple[str, ...] = (),
        timeout: float = 5.0,
        cache_size: int = 10000,
        threads: int = 16,
        hosts_file: str | None = "/etc/hosts",
    ) -> None:
        self.reactor = reactor
        if nameservers:
            r = dns.resolver.Resolver(configure=False)
            r.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(s)) for s in nameservers]
        else:
            try:
                r = dns.resolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration:
                r = dns.resolver.Resolver(configure=False)
                r.nameservers = ["127.0.0.1"]
        # One try per server gets half the budget, so a server that drops a query is
        # retried once (or the next server asked) before the lookup gives up.
        r.lifetime = timeout
        r.timeout = max(0.2, timeout / 2)
        # AD in the query asks a validating resolver to report DNSSEC status
        # (RFC 6840 5.7); EDNS0 with a 1232-byte buffer avoids TCP for big TXT sets.
        r.flags = dns.flags.RD | dns.flags.AD
        r.use_edns(0, 0, 1232)
        r.cache = dns.resolver.LRUCache(max_size=max(1, cache_size))
        self._r = r
        self._hosts = FilePath(hosts_file.encode()) if hosts_file else None
        self._pool = ThreadPool(minthreads=0, maxthreads=max(1, threads), name="mailsuite-dns")
        self._started = False
        self._inflight: dict[tuple[str, str], list[defer.Deferred[Any]]] = {}
        self._lock = threading.Lock()
        # Converted cache hits, (name, rtype) -> (expires, answer, NotFound or None), in
        # front of dnspython's cache: a hit there costs a dns.name parse, the cache's
        # lock and the conversion (tens of microseconds; the mail checks ask 3-6 per
        # message).  Holds only what the cache answered, until its TTL; bounded like it.
        self._memo: dict[tuple[str, str], tuple[float, Any, NotFound | None]] = {}
        self._memo_size = max(1, cache_size)
        # Queries actually sent (cache misses), for tests and the benchmark.
        self.queries_sent = 0

    # -- life cycle ---------------------------------------------------------

    def _ensure_started(self) -> None:
        if not self._started:
            self._started = True
            self._pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        """Stop the query threads (lookups in flight finish first)."""
        if self._started:
            self._started = False
            self._pool.stop()

    # -- the asynchronous interface -----------------------------------------

    def txt(self, name: str) -> defer.Deferred[list[bytes]]:
        return self.lookup(name, "TXT")

    def mx(self, name: str) -> defer.Deferred[list[MX]]:
        return self.lookup(name, "MX")

    def a(self, name: str) -> defer.Deferred[list[str]]:
        return self.lookup(name, "A")

    def aaaa(self, name: str) -> defer.Deferred[list[str]]:
        return self.lookup(name, "AAAA")

    def ptr(self, ip: str) -> defer.Deferred[list[str]]:
        try:
            name = dns.reversename.from_address(ip).to_text()
        except (ValueError, dns.exception.SyntaxError):
            return defer.fail(NotFound(ip, "PTR", "Not an IP address"))
        return self.lookup(name, "PTR")

    def tlsa(self, name: str) -> defer.Deferred[TLSAAnswer]:
        return self.lookup(name, "TLSA")

    def lookup(self, name: str, rtype: str) -> defer.Deferred[Any]:
        """``rtype`` records of ``name``, converted as the type's method says."""
        key = (name.lower().rstrip("."), rtype)
        try:
            hit = self._from_cache(key[0], rtype)
        except DNSError as e:
            return defer.fail(e)
        if hit is not None:
            return defer.succeed(hit[0])
        waiting = self._inflight.get(key)
        d: defer.Deferred[Any] = defer.Deferred()
        if waiting is not None:
            waiting.append(d)
            return d
        self._inflight[key] = [d]
        self._ensure_started()
        q = deferToThreadPool(self.reactor, self._pool, self.lookup_sync, key[0], rtype)
        q.addBoth(self._deliver, key)
        return d

    def _deliver(self, result: Any, key: tuple[str, str]) -> None:
        for d in self._inflight.pop(key, []):
            if isinstance(result, Failure):
                d.errback(result.value if isinstance(result.value, DNSError) else result)
            else:
                d.callback(result)

    # -- the synchronous twin -----------------------------------------------

    def lookup_sync(self, name: str, rtype: str) -> Any:
        """Blocking lookup for code already in a thread; never call on the reactor."""
        return self.lookup_sync_expiring(name, rtype)[0]

    def lookup_sync_expiring(self, name: str, rtype: str) -> tuple[Any, float]:
        """:meth:`lookup_sync` and when the answer expires (``time.time()`` scale: its
        TTL; a hosts-file answer never does), for callers that cache what they derive
        from answers (SPF results).  A :class:`NotFound` carries ``expires`` too."""
        name = name.lower().rstrip(".")
        if rtype in ("A", "AAAA"):
            local = self._from_hosts(name, rtype)
            if local:
                return local, float("inf")
        hit = self._from_cache(name, rtype)
        if hit is not None:
            return hit
        with self._lock:
            self.queries_sent += 1
        try:
            answer = self._r.resolve(name + ".", rtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            e = NotFound(name, rtype, "Host not found")
            neg = self._r.cache.get((dns.name.from_text(name), dns.rdatatype.ANY, dns.rdataclass.IN))
            e.expires = neg.expiration if neg is not None else None
            raise e from None
        except dns.resolver.LifetimeTimeout:
            raise DNSTimeout(name, rtype, "Name server timeout") from None
        except dns.resolver.NoNameservers as e:
            raise TemporaryDNSError(name, rtype, _server_failure(e)) from None
        except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel, dns.name.BadEscape) as e:
            raise NotFound(name, rtype, f"Bad name ({e.__class__.__name__})") from None
        except dns.exception.DNSException as e:
            raise TemporaryDNSError(name, rtype, f"Name service error: {e}") from None
        return _CONVERT[rtype](answer), answer.expiration

    # -- helpers ------------------------------------------------------------

    def cached(self, name: str, rtype: str) -> Any:
        """The answer if the cache holds a live one (raises NotFound for a cached
        NXDOMAIN), else None: for callers on the reactor thread that can skip a
        Deferred when everything they need is cached."""
        hit = self._from_cache(name.lower().rstrip("."), rtype)
        return None if hit is None else hit[0]

    def _from_cache(self, name: str, rtype: str) -> tuple[Any, float] | None:
        """(answer, expires) if the cache holds a live one; raises NotFound on a cached
        NXDOMAIN; None on a miss.  Safe in any thread (the cache locks itself)."""
        memo = self._memo.get((name, rtype))
        if memo is not None and memo[0] > time.time():
            if memo[2] is not None:
                e = NotFound(name, rtype, memo[2].reason)
                e.expires = memo[0]
                raise e
            answer = memo[1]
            return (list(answer) if isinstance(answer, list) else answer), memo[0]  # callers may change lists
        hit = self._from_dnspython_cache(name, rtype)
        if hit is not None:
            self._remember(name, rtype, hit[1], hit[0], None)
        return hit

    def _remember(self, name: str, rtype: str, expires: float, answer: Any, error: NotFound | None) -> None:
        if len(self._memo) >= self._memo_size:
            self._memo.clear()
        self._memo[(name, rtype)] = (expires, answer, error)

    def _from_dnspython_cache(self, name: str, rtype: str) -> tuple[Any, float] | None:
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as e:
            raise NotFound(name, rtype, f"Bad name ({e.__class__.__name__})") from None
        cache = self._r.cache
        answer = cache.get((qname, dns.rdatatype.from_text(rtype), dns.rdataclass.IN))
        if answer is not None:
            return _CONVERT[rtype](answer), answer.expiration
        neg = cache.get((qname, dns.rdatatype.ANY, dns.rdataclass.IN))
        if neg is not None and neg.response.rcode() == dns.rcode.NXDOMAIN:
            e = NotFound(name, rtype, "Host not found")
            e.expires = neg.expiration
            self._remember(name, rtype, neg.expiration, None, e)
            raise e
        return None

    def _from_hosts(self, name: str, rtype: str) -> list[str]:
        if self._hosts is None:
            return []
        try:
            found = hosts.searchFileForAll(self._hosts, name.encode())
        except (OSError, UnicodeError):
            return []
        six = rtype == "AAAA"
        return [ip for ip in found if (":" in ip) == six]


def _server_failure(e: Any) -> str:
    codes = set()
    for err in getattr(e, "kwargs", {}).get("errors", []) or []:
        resp = err[-1] if err else None
        if isinstance(resp, dns.message.Message):
            codes.add(dns.rcode.to_text(resp.rcode()))
    if "SERVFAIL" in codes:
        return "Name server failure (SERVFAIL)"
    if "REFUSED" in codes:
        return "Name server refused the query"
    return "No name server answered"


def from_config(dns_cfg: Any, reactor: Any) -> Resolver:
    """The suite's resolver from a ``DNSConfig``."""
    return Resolver(
        reactor,
        nameservers=dns_cfg.nameservers,
        timeout=dns_cfg.timeout,
        cache_size=dns_cfg.cache_size,
        threads=dns_cfg.threads,
    )
