"""SPF (RFC 7208) with pyspf, its DNS answered by the suite's resolver.

pyspf evaluates recursively (include, redirect, a, mx, ptr, exists), so its lookups
cannot be fetched ahead; :func:`check` therefore runs in a worker thread and pyspf's
lookups go to ``resolver.lookup_sync`` (the shared cache, the configured servers,
the configured timeout).  pyspf reads its lookup function from the module global
``spf.DNSLookup``; it is set once, here, to :func:`_lookup`, which finds the resolver
of the calling thread in a thread-local set by :func:`check`: no resolver is a
module global.
"""

from __future__ import annotations

import threading
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
        values = resolver.lookup_sync(name, qtype)
    except NotFound:
        return []
    except DNSError as e:
        raise spf.TempError(f"DNS {e}") from None
    key = (name, qtype)
    if qtype == "TXT":
        return [(key, [v]) for v in values]
    if qtype == "MX":
        return [(key, (m.preference, m.exchange)) for m in values if isinstance(m, MX) and m.exchange]
    return [(key, v) for v in values]


spf.DNSLookup = _lookup


@dataclass(frozen=True)
class SPFResult:
    result: str  # pass fail softfail neutral none temperror permerror
    domain: str  # the identity's domain: MAIL FROM's, or HELO's for <>
    identity: str  # "mailfrom" or "helo"
    explanation: str = ""


def check(resolver: Any, ip: str, sender: str, helo: str, timeout: float = 20.0) -> tuple[SPFResult, SPFResult]:
    """(MAIL FROM result, HELO result), blocking: call in a worker thread."""
    _local.resolver = resolver
    try:
        helo_res = _one(ip, f"postmaster@{helo}", helo, "helo", timeout) if helo else SPFResult("none", "", "helo")
        if sender:
            mf = _one(ip, sender, helo, "mailfrom", timeout)
        else:
            # RFC 7208 2.4: for the null sender the MAIL FROM identity is postmaster@HELO.
            mf = SPFResult(helo_res.result, helo_res.domain, "helo", helo_res.explanation)
        return mf, helo_res
    finally:
        _local.resolver = None


def _one(ip: str, sender: str, helo: str, identity: str, timeout: float) -> SPFResult:
    domain = sender.rpartition("@")[2].lower()
    try:
        result, _code, expl = spf.query(i=ip, s=sender, h=helo, timeout=timeout).check()
    except Exception as e:  # noqa: BLE001 - pyspf raises on odd input; SPF says permerror
        return SPFResult("permerror", domain, identity, str(e))
    if result == "ambiguous":
        result = "permerror"
    return SPFResult(result, domain, identity, expl or "")
