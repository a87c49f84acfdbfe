"""A tiny authoritative DNS server for tests: ``python tests/support/dns_server.py PORT ZONE.json``.

Built on twisted.names.server with a custom authority.  The zone file maps names to
records::

    {"partner.test": {"MX": [[10, "mx1.partner.test"]], "TXT": ["v=spf1 -all"]},
     "mx1.partner.test": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
     "_25._tcp.mx1.partner.test": {"TLSA": [[3, 1, 1, "ab12..."]], "AD": true},
     "1.0.0.127.in-addr.arpa": {"PTR": ["mx1.partner.test"]},
     "broken.test": {"SERVFAIL": true}, "slow.test": {"TIMEOUT": true}}

A name not in the file is NXDOMAIN; a name without records of the asked type gets
an empty answer.  ``[0, ""]`` is a null MX.  TXT values longer than 255 bytes are
sent as several strings of one record (as a 2048-bit DKIM key is published).  TLSA
is ``[usage, selector, matching type, hex data]``; ``"AD": true`` sets the
authenticated-data bit on answers for that name, as a validating resolver would.
``python tests/support/dns_server.py 53 ZONE.json 127.0.53.7`` serves port 53 of another
loopback address instead, for programs that only ask the resolv.conf servers
(opendkim-testmsg, dkimverify; see tests/test_dkim_sign.py).
A top-level ``"*DROP*": true`` makes the server ignore every query (timeouts).
The zone file is read again on every query, so a test can change it while the
server runs.  Prints "ready" once listening on 127.0.0.1:PORT (UDP and TCP).
"""

from __future__ import annotations

import json
import sys

from twisted.internet import defer, reactor
from twisted.names import common, dns, error, server

TLSA_TYPE = 52  # twisted.names has no Record_TLSA; the RDATA goes out as raw bytes


def read_zone(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _txt(value: str) -> dns.Record_TXT:
    data = value.encode()
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    return dns.Record_TXT(*chunks, ttl=60)


def _tlsa(value: list) -> dns.UnknownRecord:
    usage, selector, mtype, hexdata = value
    return dns.UnknownRecord(bytes([usage, selector, mtype]) + bytes.fromhex(hexdata), ttl=60)


def _soa(qname: bytes) -> dns.RRHeader:
    """The SOA a real server puts in the authority section of a negative answer
    (RFC 2308): resolvers cache NXDOMAIN and NODATA for its minimum (60 s); without
    it dnspython would not cache them at all.  Owned by the top-level label, which is
    an ancestor of every name asked."""
    top = qname.rstrip(b".").rpartition(b".")[2] or qname
    return dns.RRHeader(top, dns.SOA, dns.IN, 60, dns.Record_SOA(
        mname=b"ns." + top, rname=b"hostmaster." + top, serial=1, refresh=3600, retry=600,
        expire=86400, minimum=60, ttl=60), auth=True)


class ZoneAuthority(common.ResolverBase):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def _lookup(self, name, cls, type, timeout):  # type: ignore[no-untyped-def]
        zone = read_zone(self.path)
        if zone.get("*DROP*"):
            return defer.Deferred()  # never answers
        key = name.decode().lower().rstrip(".")
        entry = zone.get(key)
        if entry is None:
            return defer.fail(error.DomainError(key))
        if entry.get("SERVFAIL"):
            return defer.fail(RuntimeError(f"SERVFAIL {key}"))  # not a DomainError: answered SERVFAIL
        if entry.get("TIMEOUT"):
            return defer.Deferred()  # never answers
        makers = {
            dns.MX: ("MX", lambda v: dns.Record_MX(v[0], v[1].encode(), ttl=60)),
            dns.A: ("A", lambda v: dns.Record_A(v, ttl=60)),
            dns.AAAA: ("AAAA", lambda v: dns.Record_AAAA(v, ttl=60)),
            dns.TXT: ("TXT", _txt),
            dns.PTR: ("PTR", lambda v: dns.Record_PTR(v.encode(), ttl=60)),
            dns.CNAME: ("CNAME", lambda v: dns.Record_CNAME(v.encode(), ttl=60)),
            dns.SRV: ("SRV", lambda v: dns.Record_SRV(v[0], v[1], v[2], v[3].encode(), ttl=60)),
            TLSA_TYPE: ("TLSA", _tlsa),
        }
        answers = []
        if type in makers:
            field, make = makers[type]
            for value in entry.get(field, []):
                answers.append(dns.RRHeader(name, type, dns.IN, 60, make(value), auth=True))
        return defer.succeed((answers, [] if answers else [_soa(name)], []))


class ZoneServerFactory(server.DNSServerFactory):
    """Sets AD on answers for names the zone marks ``"AD": true``."""

    def __init__(self, path: str) -> None:
        super().__init__(authorities=[ZoneAuthority(path)])
        self.path = path

    def _responseFromMessage(self, message, **kw):  # type: ignore[no-untyped-def]
        if kw.get("rCode") == dns.ENAME and message.queries:
            kw["authority"] = [_soa(message.queries[0].name.name)]  # NXDOMAIN, cacheable
        response = super()._responseFromMessage(message, **kw)
        if message.queries:
            key = message.queries[0].name.name.decode().lower().rstrip(".")
            entry = read_zone(self.path).get(key)
            if isinstance(entry, dict) and entry.get("AD"):
                response.authenticData = True
        return response


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    factory = ZoneServerFactory(path)
    factory.noisy = False
    proto = dns.DNSDatagramProtocol(factory)
    proto.noisy = False
    reactor.listenUDP(port, proto, interface=host)
    reactor.listenTCP(port, factory, interface=host)
    print("ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
