"""SPF (RFC 7208) with pyspf, its DNS answered by the suite's resolver.

pyspf evaluates recursively (include, redirect, a, mx, ptr, exists), so its lookups
cannot be fetched ahead; :func:`check` therefore runs in a worker thread and pyspf's
lookups go to ``resolver.lookup_sync`` (the shared cache, the configured servers,
the configured timeout).  pyspf reads its lookup function from the module global
``spf.DNSLookup``; it is set once, here, to :func:`_lookup`, which finds the resolver
of the calling thread in a thread-local set by :func:`check`: no resolver is a
module global.

:class:`SPFCache` keeps results for as long as every DNS answer they came from lives
(the smallest TTL among them, at most :data:`MAX_TTL`): a sender that sends many
messages from one address is evaluated once per TTL, and a cached result is known on
the reactor thread without a trip to a pool thread.  Its key is (client IP, MAIL FROM
domain, HELO): the local part only matters to a record that uses macros (``%{l}``,
``%{s}``, ...), and results that met one are keyed by the whole address instead.  A
result that met a temporary DNS error is not kept.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import spf

from mailsuite.dns.resolver import MX, DNSError, NotFound

_local = threading.local()


def _lookup(name: str, qtype: str, strict: bool = True, timeout: float = 30) -> list[tuple[tuple[str, str], Any]]:
    resolver = getattr(_local, "resolver", None)
    if resolver is None:
        raise spf.TempError("DNS: no resolver in this thread")
    if qtype not in ("A", "AAAA", "MX", "PTR", "TXT"):
        return []  # type 99 (SPF) is obsolete (RFC 7208 3.1)
    try:
        values, expires = resolver.lookup_sync_expiring(name, qtype)
    except NotFound as e:
        _seen(e.expires, False)
        return []
    except DNSError as e:
        _seen(None, False)
        raise spf.TempError(f"DNS {e}") from None
    _seen(expires, qtype == "TXT" and any(b"%" in v for v in values))
    key = (name, qtype)
    if qtype == "TXT":
        return [(key, [v]) for v in values]
    if qtype == "MX":
        return [(key, (m.preference, m.exchange)) for m in values if isinstance(m, MX) and m.exchange]
    return [(key, v) for v in values]


def _seen(expires: float | None, macros: bool) -> None:
    """Note, for the SPF cache, when an answer used by this thread's evaluation
    expires (None: it cannot be cached) and whether a record may use macros."""
    track = getattr(_local, "track", None)
    if track is not None:
        track[0] = None if expires is None or track[0] is None else min(track[0], expires)
        track[1] = track[1] or macros


spf.DNSLookup = _lookup

MAX_TTL = 3600.0


@dataclass(frozen=True)
class SPFResult:
    result: str  # pass fail softfail neutral none temperror permerror
    domain: str  # the identity's domain: MAIL FROM's, or HELO's for <>
    identity: str  # "mailfrom" or "helo"
    explanation: str = ""


class SPFCache:
    """(MAIL FROM result, HELO result) per (client IP, MAIL FROM domain, HELO) until
    the first DNS answer they used expires; at most ``size`` entries (the oldest go).
    Safe from any thread (single dict operations under the GIL)."""

    _MACROS = "macros"  # the domain entry when the address entry must be used

    def __init__(self, size: int = 10000, clock: Any = time.time) -> None:
        self.size = size
        self.clock = clock
        self._d: dict[tuple[str, ...], tuple[float, Any]] = {}
        self.hits = 0

    @staticmethod
    def _keys(ip: str, sender: str, helo: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        domain = sender.rpartition("@")[2].lower()
        return ("d", ip, domain, helo.lower()), ("s", ip, sender, helo.lower())

    def get(self, ip: str, sender: str, helo: str) -> tuple[SPFResult, SPFResult] | None:
        by_domain, by_sender = self._keys(ip, sender, helo)
        now = self.clock()
        for key in (by_domain, by_sender):
            entry = self._d.get(key)
            if entry is None or entry[0] <= now:
                return None
            if entry[1] != self._MACROS:
                self.hits += 1
                return entry[1]  # type: ignore[no-any-return]
        return None

    def put(self, ip: str, sender: str, helo: str, results: tuple[SPFResult, SPFResult], expires: float,
            macros: bool) -> None:
        expires = min(expires, self.clock() + MAX_TTL)
        by_domain, by_sender = self._keys(ip, sender, helo)
        while len(self._d) >= self.size:
            try:
                del self._d[next(iter(self._d))]
            except (KeyError, RuntimeError, StopIteration):
                break
        if macros:
            self._d[by_domain] = (expires, self._MACROS)
            self._d[by_sender] = (expires, results)
        else:
            self._d[by_domain] = (expires, results)


def check(resolver: Any, ip: str, sender: str, helo: str, timeout: float = 20.0,
          cache: SPFCache | None = None) -> tuple[SPFResult, SPFResult]:
    """(MAIL FROM result, HELO result), blocking: call in a worker thread (or, when
    ``cache`` holds the answer, anywhere: see :meth:`SPFCache.get`)."""
    if cache is not None:
        hit = cache.get(ip, sender, helo)
        if hit is not None:
            return hit
    _local.resolver = resolver
    _local.track = track = [float("inf"), False]
    try:
        helo_res = _one(ip, f"postmaster@{helo}", helo, "helo", timeout) if helo else SPFResult("none", "", "helo")
        if sender:
            mf = _one(ip, sender, helo, "mailfrom", timeout)
        else:
            # RFC 7208 2.4: for the null sender the MAIL FROM identity is postmaster@HELO.
            mf = SPFResult(helo_res.result, helo_res.domain, "helo", helo_res.explanation)
    finally:
        _local.resolver = None
        _local.track = None
    expires, macros = track
    if cache is not None and expires is not None and "temperror" not in (mf.result, helo_res.result):
        cache.put(ip, sender, helo, (mf, helo_res), expires, macros)
    return mf, helo_res


def _one(ip: str, sender: str, helo: str, identity: str, timeout: float) -> SPFResult:
    domain = sender.rpartition("@")[2].lower()
    try:
        result, _code, expl = spf.query(i=ip, s=sender, h=helo, timeout=timeout).check()
    except Exception as e:  # noqa: BLE001 - pyspf raises on odd input; SPF says permerror
        return SPFResult("permerror", domain, identity, str(e))
    if result == "ambiguous":
        result = "permerror"
    return SPFResult(result, domain, identity, expl or "")
