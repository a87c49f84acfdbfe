"""DANE for SMTP (RFC 7672): does the chain a next hop presented match its TLSA records?

Only records of a DNSSEC-validated answer (the AD bit from a validating resolver that
``[dns]`` names and ``[relay] dane = true`` trusts) get here.  Usable records are
DANE-EE(3) and DANE-TA(2) (RFC 7672 3.1: PKIX-TA(0)/PKIX-EE(1) SHOULD NOT be used for
SMTP; they are ignored), with selector 0 (whole certificate) or 1 (SubjectPublicKeyInfo)
and matching type 0 (exact), 1 (SHA-256) or 2 (SHA-512).

* DANE-EE: the server's own certificate matches; neither its names nor its dates are
  checked (RFC 7672 3.1.1).
* DANE-TA: some certificate of the presented chain matches; the chain from the
  server's certificate up to it must be signed link by link and in date, and the
  server's certificate must carry the MX host name (RFC 7672 3.1.2, 3.2.2).

The check runs on the chain after the handshake (pyOpenSSL's peer chain), before any
message is sent.  Nothing here does I/O.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

USABLE = (2, 3)


@dataclass(frozen=True)
class Match:
    ok: bool
    reason: str  # what matched, or why nothing did


def usable(records: Iterable[Any]) -> list[Any]:
    return [r for r in records if r.usage in USABLE and r.selector in (0, 1) and r.mtype in (0, 1, 2)]


def _selected(cert: x509.Certificate, selector: int) -> bytes:
    if selector == 0:
        return cert.public_bytes(Encoding.DER)
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _digest(data: bytes, mtype: int) -> bytes:
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return data


def record_matches(record: Any, cert: x509.Certificate) -> bool:
    return _digest(_selected(cert, record.selector), record.mtype) == record.data


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [a.value.lower() for a in cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
                if isinstance(a.value, str)]


def name_matches(cert: x509.Certificate, host: str) -> bool:
    host = host.lower().rstrip(".")
    for name in _names(cert):
        if name == host:
            return True
        if name.startswith("*.") and host.partition(".")[2] == name[2:] and "." in name[2:]:
            return True
    return False


def _in_date(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def verify(chain: list[x509.Certificate], records: Iterable[Any], host: str,
           now: datetime.datetime | None = None) -> Match:
    """Match the presented ``chain`` (server certificate first) against ``records``."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    recs = usable(records)
    if not chain:
        return Match(False, "no certificate presented")
    leaf = chain[0]
    for r in recs:
        if r.usage == 3 and record_matches(r, leaf):
            return Match(True, f"DANE-EE {r.usage} {r.selector} {r.mtype} matched the server certificate")
    for r in recs:
        if r.usage != 2:
            continue
        for i, ta in enumerate(chain):
            if not record_matches(r, ta):
                continue
            why = _chain_to(chain, i, host, now)
            if why:
                return Match(False, f"DANE-TA record matched certificate {i}, but {why}")
            return Match(True, f"DANE-TA {r.usage} {r.selector} {r.mtype} matched certificate {i} of the chain")
    return Match(False, "no TLSA record matches the presented certificates")


def _chain_to(chain: list[x509.Certificate], ta_index: int, host: str, now: datetime.datetime) -> str:
    """Why the chain from the leaf to ``chain[ta_index]`` does not hold; "" if it does."""
    if not name_matches(chain[0], host):
        return f"the server certificate is not for {host}"
    for j in range(ta_index):
        cert, issuer = chain[j], chain[j + 1]
        if not _in_date(cert, now):
            return f"certificate {j} is expired or not yet valid"
        try:
            cert.verify_directly_issued_by(issuer)
        except Exception:  # noqa: BLE001 - ValueError, TypeError, InvalidSignature: all mean "not signed by"
            return f"certificate {j} is not signed by certificate {j + 1}"
    return ""


def peer_chain(transport: Any) -> list[x509.Certificate]:
    """The chain a TLS transport's peer presented, as cryptography certificates."""
    handle = transport.getHandle()
    chain = handle.get_peer_cert_chain() or []
    return [c.to_cryptography() for c in chain]
