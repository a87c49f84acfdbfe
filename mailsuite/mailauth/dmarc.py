"""DMARC (RFC 7489): the policy record, alignment and the disposition.

Our own module rather than ``authheaders``/``dmarc`` (research/wave2-libraries.md §3):
those check only the first DKIM signature, give ``dkim=fail`` for unsigned mail, and
use a stale PSL (publicsuffix2, 2019) that makes ``mx.foo.test``'s organisational
domain ``test``.  Here the organisational domain comes from ``publicsuffixlist``'s
packaged snapshot (no fetch at run time), and every DKIM result counts.

* :func:`fetch_record`: ``_dmarc.<From domain>``, else ``_dmarc.<organisational
  domain>`` (RFC 7489 6.6.3), through the suite's resolver; several DMARC records at
  one name count as none; a temporary DNS error is raised (the caller answers 451).
  :func:`cached_record` is the same from the resolver's cache alone, without a
  Deferred (None when an answer it needs is not cached).
* :func:`evaluate`: pass when SPF or any DKIM signature passes *and* aligns with the
  From: domain (relaxed: same organisational domain; strict: same name); else fail
  with the policy (``sp`` for a subdomain), lowered by ``pct`` sampling and ``t=y``.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any, Callable

from publicsuffixlist import PublicSuffixList

from mailsuite.dns.resolver import DNSError, NotFound

POLICIES = ("none", "quarantine", "reject")

_psl: PublicSuffixList | None = None


def psl() -> PublicSuffixList:
    """The packaged Public Suffix List, loaded once (about 50 ms)."""
    global _psl
    if _psl is None:
        _psl = PublicSuffixList()
    return _psl


@functools.lru_cache(maxsize=4096)
def org_domain(domain: str) -> str:
    """The organisational domain: the public suffix plus one label (RFC 7489 3.2);
    a name that is itself a public suffix is its own."""
    domain = domain.lower().rstrip(".")
    return psl().privatesuffix(domain) or domain


@dataclass(frozen=True)
class DMARCRecord:
    p: str
    sp: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    testing: bool = False  # t=y (DMARCbis)
    domain: str = ""  # where it was found


@functools.lru_cache(maxsize=4096)  # a record is immutable: parsed once per text
def parse_record(text: str, domain: str = "") -> DMARCRecord | None:
    """A DMARC record, or None if ``text`` is not a valid one."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        k, sep, v = part.partition("=")
        if sep:
            tags[k.strip().lower()] = v.strip()
    if tags.get("v") != "DMARC1" or not text.lstrip().startswith("v"):
        return None
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        # RFC 7489 6.6.3: a record with rua but without a valid p is treated as p=none.
        if "rua" in tags:
            p = "none"
        else:
            return None
    sp = tags.get("sp", "").lower()
    sp = sp if sp in POLICIES else p
    try:
        pct = min(100, max(0, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    return DMARCRecord(
        p=p, sp=sp,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        pct=pct, testing=tags.get("t", "").lower() == "y", domain=domain,
    )


def _dmarc_records(txts: list[bytes]) -> list[str]:
    out = []
    for t in txts:
        s = t.decode("utf-8", "replace")
        if s.replace(" ", "").lower().startswith("v=dmarc1"):
            out.append(s)
    return out


async def _records_at(resolver: Any, name: str) -> list[str]:
    try:
        txts = await resolver.txt(name)
    except NotFound:
        return []
    return _dmarc_records(txts)


def _decide(found: list[str], domain: str) -> tuple[bool, DMARCRecord | None]:
    """(final, record) for the records found at ``_dmarc.<domain>``."""
    if len(found) == 1:
        rec = parse_record(found[0], domain)
        if rec is not None:
            return True, rec
    if len(found) > 1:
        return True, None  # RFC 7489 6.6.3: several records: no DMARC
    return False, None


async def fetch_record(resolver: Any, from_domain: str) -> DMARCRecord | None:
    """The policy that applies to ``from_domain``; None if there is none.  Raises
    DNSError (temporary) when it cannot be known now."""
    org = org_domain(from_domain)
    for domain in dict.fromkeys([from_domain, org]):
        final, rec = _decide(await _records_at(resolver, f"_dmarc.{domain}"), domain)
        if final:
            return rec
    return None


MISSING = object()  # cached_record: an answer is not in the cache


def cached_record(resolver: Any, from_domain: str) -> Any:
    """:func:`fetch_record` from ``resolver.cached`` alone: the record or None, or
    :data:`MISSING` when an answer it needs is not in the cache."""
    org = org_domain(from_domain)
    for domain in dict.fromkeys([from_domain, org]):
        try:
            txts = resolver.cached(f"_dmarc.{domain}", "TXT")
        except NotFound:
            txts = []
        if txts is None:
            return MISSING
        final, rec = _decide(_dmarc_records(txts), domain)
        if final:
            return rec
    return None


def aligned(a: str, b: str, mode: str) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if not a or not b:
        return False
    return a == b if mode == "s" else org_domain(a) == org_domain(b)


@dataclass(frozen=True)
class DMARCResult:
    result: str  # pass fail none temperror permerror
    policy: str  # the published policy that applies (p or sp); "" without a record
    disposition: str  # none quarantine reject: what the receiver should do
    from_domain: str
    spf_aligned: bool = False
    dkim_aligned: bool = False


def evaluate(
    from_domain: str | None,
    record: DMARCRecord | None,
    spf_result: str,
    spf_domain: str,
    dkim_passes: list[str],
    sample: Callable[[], float] = random.random,
) -> DMARCResult:
    """Decide DMARC for a message; ``dkim_passes`` are the d= of passing signatures."""
    if from_domain is None:
        # RFC 7489 6.6.1: no single From: domain: the message cannot be judged.
        return DMARCResult("permerror", "", "none", "")
    if record is None:
        return DMARCResult("none", "", "none", from_domain)
    spf_ok = spf_result == "pass" and aligned(spf_domain, from_domain, record.aspf)
    dkim_ok = any(aligned(d, from_domain, record.adkim) for d in dkim_passes)
    policy = record.p if record.domain == from_domain else record.sp
    if spf_ok or dkim_ok:
        return DMARCResult("pass", policy, "none", from_domain, spf_ok, dkim_ok)
    disposition = policy
    if record.testing or (record.pct < 100 and sample() * 100 >= record.pct):
        # Not applied to this message: one step milder (RFC 7489 6.6.4; DMARCbis t=y).
        disposition = {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")
    return DMARCResult("fail", policy, disposition, from_domain)


__all__ = ["MISSING", "DMARCRecord", "DMARCResult", "DNSError", "aligned", "cached_record", "evaluate", "fetch_record",
           "org_domain", "parse_record"]
