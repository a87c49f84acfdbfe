"""A tiny authoritative DNS server for relay tests: ``python tests/dns_server.py PORT ZONE.json``.

Built on twisted.names.server with a custom authority.  The zone file maps names to
records: ``{"partner.test": {"MX": [[10, "mx1.partner.test"]]}, "mx1.partner.test":
{"A": ["127.0.0.1"], "AAAA": ["::1"]}, "broken.test": {"SERVFAIL": true},
"slow.test": {"TIMEOUT": true}}``.  A name not in the file is NXDOMAIN; a name without
records of the asked type gets an empty answer.  ``[0, ""]`` is a null MX.  The zone
file is read again on every query, so a test can change it while the server runs.
Prints "ready" once listening on 127.0.0.1:PORT (UDP and TCP).
"""

from __future__ import annotations

import json
import sys

from twisted.internet import defer, reactor
from twisted.names import common, dns, error, server


class ZoneAuthority(common.ResolverBase):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def _lookup(self, name, cls, type, timeout):  # type: ignore[no-untyped-def]
        with open(self.path) as f:
            zone = json.load(f)
        key = name.decode().lower().rstrip(".")
        entry = zone.get(key)
        if entry is None:
            return defer.fail(error.DomainError(key))
        if entry.get("SERVFAIL"):
            return defer.fail(RuntimeError(f"SERVFAIL {key}"))  # not a DomainError: answered SERVFAIL
        if entry.get("TIMEOUT"):
            return defer.Deferred()  # never answers
        answers = []
        if type == dns.MX:
            for pref, host in entry.get("MX", []):
                answers.append(dns.RRHeader(name, dns.MX, dns.IN, 60, dns.Record_MX(pref, host.encode(), ttl=60)))
        elif type == dns.A:
            for ip in entry.get("A", []):
                answers.append(dns.RRHeader(name, dns.A, dns.IN, 60, dns.Record_A(ip, ttl=60)))
        elif type == dns.AAAA:
            for ip in entry.get("AAAA", []):
                answers.append(dns.RRHeader(name, dns.AAAA, dns.IN, 60, dns.Record_AAAA(ip, ttl=60)))
        return defer.succeed((answers, [], []))


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    factory = server.DNSServerFactory(authorities=[ZoneAuthority(path)])
    factory.noisy = False
    proto = dns.DNSDatagramProtocol(factory)
    proto.noisy = False
    reactor.listenUDP(port, proto, interface="127.0.0.1")
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    print("ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
