"""Finding the addresses to deliver to: MX records, implicit MX, null MX, A/AAAA.

Replaces twisted.mail.relaymanager.MXCalculator (research/twisted-mail.md §3.3): that
one returns a single MX, resolves A records only (no IPv6), and turns a null MX into a
connection to the local host.  Here (RFC 5321 §5.1, RFC 7505):

* MX records sorted by preference, ties shuffled; no MX record → the domain itself;
* a null MX (one MX with the root as exchange) → permanent failure 556 5.1.10;
* NXDOMAIN → permanent failure; SERVFAIL, refusal and timeouts → temporary;
* every exchange's AAAA and A records, IPv6 first, tried in order by the relay.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.names import client, dns, error as dns_error, hosts, resolve
from twisted.python.failure import Failure

from mailsuite.queue.route import Destination, parse_nexthop


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


def make_resolver(servers: tuple[str, ...], timeout: int) -> Any:
    """/etc/hosts first (so "localhost" works), then the configured name servers or
    those of /etc/resolv.conf, each query given up after ``timeout`` seconds."""
    if servers:
        upstream = client.Resolver(servers=[parse_nexthop(s, 53) for s in servers], timeout=(timeout,))
    else:
        upstream = client.Resolver(resolv="/etc/resolv.conf", timeout=(timeout,))
    return resolve.ResolverChain([hosts.Resolver(file=b"/etc/hosts"), upstream])


def _is_temporary(f: Any) -> bool:
    return not f.check(dns_error.DNSNameError)


def _describe(f: Any) -> str:
    if f.check(dns_error.DNSNameError):
        return "Host not found"
    if f.check(dns_error.DNSServerError):
        return "Name server failure (SERVFAIL)"
    if f.check(dns_error.DNSQueryRefusedError):
        return "Name server refused the query"
    if f.check(dns_error.DNSQueryTimeoutError, defer.TimeoutError):
        return "Name server timeout"
    return f"Name service error: {f.getErrorMessage()}"


class MXResolver:
    def __init__(self, resolver: Any, max_addresses: int = 10) -> None:
        self.resolver = resolver
        self.max_addresses = max_addresses

    async def candidates(self, dest: Destination) -> list[Candidate]:
        """The addresses to try for ``dest`` in order; raises RouteError."""
        if dest.kind == "host":
            return await self._host_candidates([dest.host], dest.port)
        domain = dest.host
        try:
            answers, _auth, _add = await self.resolver.lookupMailExchange(domain)
        except Exception:  # noqa: BLE001 - sorted into temporary/permanent below
            raise self._lookup_error(Failure(), domain, "MX") from None
        mxs = [rr.payload for rr in answers if rr.type == dns.MX]
        if any(str(mx.name) in ("", ".") for mx in mxs):
            raise RouteError(556, "5.1.10", f"Domain {domain} does not accept mail (null MX)", True)
        if not mxs:
            return await self._host_candidates([domain], dest.port)
        by_pref: dict[int, list[str]] = {}
        for mx in mxs:
            by_pref.setdefault(mx.preference, []).append(str(mx.name).lower().rstrip("."))
        names: list[str] = []
        for pref in sorted(by_pref):
            tied = by_pref[pref]
            random.shuffle(tied)
            names += [n for n in tied if n not in names]
        return await self._host_candidates(names, dest.port)

    def _lookup_error(self, f: Any, name: str, rtype: str) -> RouteError:
        if _is_temporary(f):
            return RouteError(451, "4.4.3", f"{_describe(f)} for name={name} type={rtype}", False)
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
        results = await defer.DeferredList(
            [self.resolver.lookupIPV6Address(name), self.resolver.lookupAddress(name)], consumeErrors=True
        )
        ips: list[str] = []
        errors = []
        for (ok, value), rtype in zip(results, (dns.AAAA, dns.A)):
            if not ok:
                errors.append(value)
                continue
            for rr in value[0]:
                if rr.type == rtype:
                    ip = rr.payload.dottedQuad() if rtype == dns.A else _ipv6(rr.payload.address)
                    if ip not in ips:
                        ips.append(ip)
        if ips:
            return ips, None
        temp = [f for f in errors if _is_temporary(f)]
        if temp:
            return [], self._lookup_error(temp[0], name, "A/AAAA")
        if errors:
            return [], self._lookup_error(errors[0], name, "A/AAAA")
        return [], RouteError(550, "5.4.4", f"Host {name} has no A or AAAA record", True)


def _ipv6(packed: bytes) -> str:
    return str(ipaddress.IPv6Address(packed))
