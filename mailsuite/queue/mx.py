"""Finding the addresses to deliver to: MX records, implicit MX, null MX, A/AAAA.

Replaces twisted.mail.relaymanager.MXCalculator (research/twisted-mail.md §3.3): that
one returns a single MX, resolves A records only (no IPv6), and turns a null MX into a
connection to the local host.  Here (RFC 5321 §5.1, RFC 7505):

* MX records sorted by preference, ties shuffled; no MX record → the domain itself;
* a null MX (one MX with the root as exchange) → permanent failure 556 5.1.10;
* NXDOMAIN → permanent failure; SERVFAIL, refusal and timeouts → temporary;
* every exchange's AAAA and A records, IPv6 first, tried in order by the relay.

Lookups go through the suite's one resolver (mailsuite.dns.resolver).
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from twisted.internet import defer

from mailsuite.dns.resolver import DNSError, IResolver
from mailsuite.queue.route import Destination


class RouteError(Exception):
    """No address to try.  ``permanent`` decides bounce (True) or retry (False)."""

    def __init__(self, code: int, status: str, text: str, permanent: bool) -> None:
        super().__init__(f"{code} {status} {text}")
        self.code, self.status, self.text, self.permanent = code, status, text, permanent


@dataclass(frozen=True)
class Candidate:
    host: str  # the MX (or next hop) name, for logs and TLS verification
    ip: str
    port: int


class MXResolver:
    def __init__(self, resolver: IResolver, max_addresses: int = 10) -> None:
        self.resolver = resolver
        self.max_addresses = max_addresses

    async def candidates(self, dest: Destination) -> list[Candidate]:
        """The addresses to try for ``dest`` in order; raises RouteError."""
        if dest.kind == "host":
            return await self._host_candidates([dest.host], dest.port)
        domain = dest.host
        try:
            mxs = await self.resolver.mx(domain)
        except DNSError as e:
            raise self._lookup_error(e, domain, "MX") from None
        if any(mx.exchange == "" for mx in mxs):
            raise RouteError(556, "5.1.10", f"Domain {domain} does not accept mail (null MX)", True)
        if not mxs:
            return await self._host_candidates([domain], dest.port)
        by_pref: dict[int, list[str]] = {}
        for mx in mxs:
            by_pref.setdefault(mx.preference, []).append(mx.exchange)
        names: list[str] = []
        for pref in sorted(by_pref):
            tied = by_pref[pref]
            random.shuffle(tied)
            names += [n for n in tied if n not in names]
        return await self._host_candidates(names, dest.port)

    def _lookup_error(self, e: DNSError, name: str, rtype: str) -> RouteError:
        if e.temporary:
            return RouteError(451, "4.4.3", f"{e.reason} for name={name} type={rtype}", False)
        return RouteError(550, "5.1.2", f"Host or domain name not found. Name service error for name={name} type={rtype}: Host not found", True)

    async def _host_candidates(self, names: list[str], port: int) -> list[Candidate]:
        out: list[Candidate] = []
        temporary: RouteError | None = None
        permanent: RouteError | None = None
        for name in names:
            try:
                ipaddress.ip_address(name)
                out.append(Candidate(name, name, port))
                continue
            except ValueError:
                pass
            ips, err = await self._addresses(name)
            out += [Candidate(name, ip, port) for ip in ips]
            if not ips and err is not None:
                if err.permanent:
                    permanent = permanent or err
                else:
                    temporary = temporary or err
            if len(out) >= self.max_addresses:
                break
        if out:
            return out[: self.max_addresses]
        if temporary is not None:
            raise temporary
        if permanent is not None:
            raise permanent
        raise RouteError(550, "5.4.4", f"No address found for {', '.join(names)}", True)

    async def _addresses(self, name: str) -> tuple[list[str], RouteError | None]:
        """AAAA then A addresses of ``name``, and the error if there are none."""
        results = await defer.DeferredList([self.resolver.aaaa(name), self.resolver.a(name)], consumeErrors=True)
        ips: list[str] = []
        errors: list[DNSError] = []
        for ok, value in results:
            if not ok:
                if not value.check(DNSError):
                    value.raiseException()
                errors.append(value.value)
                continue
            for ip in value:
                if ip not in ips:
                    ips.append(ip)
        if ips:
            return ips, None
        temp = [e for e in errors if e.temporary]
        if temp:
            return [], self._lookup_error(temp[0], name, "A/AAAA")
        if errors:
            return [], self._lookup_error(errors[0], name, "A/AAAA")
        return [], RouteError(550, "5.4.4", f"Host {name} has no A or AAAA record", True)
