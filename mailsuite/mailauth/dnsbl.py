"""DNS block lists and allow lists for SMTP clients (RFC 5782).

``[smtp] dnsbl`` zones are asked for ``<reversed client IP>.<zone>`` (A record; IPv6
by nibbles): an answer in 127.0.0.0/8 means listed, and the zone's TXT record at the
same name is the reason given to the client.  Answers in 127.255.255.0/24 are the
lists' error codes (query refused, rate limited), not listings.  A client on any
``[smtp] dnswl`` zone is never refused.  Lookups go through the suite resolver (its
cache answers repeat connections); a list that cannot be asked (timeout, SERVFAIL)
counts as not listing the client, with a log line: a broken list must not stop mail.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Interface, implementer

from mailsuite.dns.resolver import DNSError, NotFound

log = Logger()


@dataclass(frozen=True)
class Listing:
    zone: str
    code: str  # the A answer, e.g. 127.0.0.2
    reason: str  # the TXT answer, or ""

    def reply_text(self, ip: str) -> str:
        text = f"Service unavailable; client [{ip}] blocked using {self.zone}"
        return text + (f"; {self.reason}" if self.reason else "")


class IClientCheck(Interface):
    def check(ip: str) -> "defer.Deferred[Listing | None]":
        """The block list entry that refuses ``ip``, or None."""


def reverse_name(ip: str) -> str | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.version == 4:
        return ".".join(reversed(str(addr).split(".")))
    return ".".join(reversed(addr.exploded.replace(":", "")))


def _listed(codes: list[str]) -> list[str]:
    out = []
    for c in codes:
        try:
            a = ipaddress.ip_address(c)
        except ValueError:
            continue
        if a in ipaddress.ip_network("127.0.0.0/8") and a not in ipaddress.ip_network("127.255.255.0/24"):
            out.append(c)
    return out


@implementer(IClientCheck)
class DNSBL:
    def __init__(self, resolver: Any, blocklists: tuple[str, ...], allowlists: tuple[str, ...] = ()) -> None:
        self.resolver = resolver
        self.blocklists = tuple(z.lower().strip(".") for z in blocklists)
        self.allowlists = tuple(z.lower().strip(".") for z in allowlists)

    def check(self, ip: str) -> defer.Deferred[Listing | None]:
        return defer.ensureDeferred(self._check(ip))

    async def _codes(self, name: str, zone: str) -> list[str]:
        try:
            return _listed(await self.resolver.a(name))
        except NotFound:
            return []
        except DNSError as e:
            log.warn("dnsbl: {zone} not answering ({e}); treated as not listed", zone=zone, e=str(e))
            return []

    async def _check(self, ip: str) -> Listing | None:
        rev = reverse_name(ip)
        if rev is None or not self.blocklists:
            return None
        zones = self.allowlists + self.blocklists
        found = await defer.gatherResults([defer.ensureDeferred(self._codes(f"{rev}.{z}", z)) for z in zones])
        allowed = found[: len(self.allowlists)]
        if any(allowed):
            return None
        for zone, codes in zip(self.blocklists, found[len(self.allowlists):]):
            if codes:
                try:
                    txt = await self.resolver.txt(f"{rev}.{zone}")
                    reason = txt[0].decode("utf-8", "replace")[:200] if txt else ""
                except DNSError:
                    reason = ""
                return Listing(zone, codes[0], reason)
        return None
