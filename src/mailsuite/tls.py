"""TLS for every listener: the certificate, the server context, and its reload.

One certificate (a full-chain PEM and its key) serves every service.  The context
factory handed to listeners and to STARTTLS is :class:`ReloadableContextFactory`:
:meth:`reload` (called on SIGHUP) builds a new context from the files, and new
handshakes use it while established connections keep theirs.  TLS 1.2 is the floor;
compression is off (CertificateOptions always sets OP_NO_COMPRESSION).

A self-signed pair is generated only where the config asks for it
(``tls.generate_self_signed``), and the log says so.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.logger import Logger
from zope.interface import implementer
from twisted.internet.interfaces import IOpenSSLContextFactory

log = Logger(namespace="mailsuite.tls")


class TLSConfigError(Exception):
    pass


def generate_self_signed(cert_path: Path, key_path: Path, hostname: str) -> None:
    """Write a self-signed certificate for ``hostname`` (and localhost) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                    x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _split_pem(data: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    out = []
    for part in data.split(marker)[:-1]:
        start = part.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            out.append(part[start:] + marker + b"\n")
    return out


def build_options(cert_path: Path, key_path: Path, min_version: str = "1.2") -> ssl.CertificateOptions:
    """CertificateOptions from a full-chain PEM and a key; raises TLSConfigError."""
    try:
        chain = _split_pem(cert_path.read_bytes())
        key_pem = key_path.read_bytes()
    except OSError as e:
        raise TLSConfigError(f"cannot read certificate or key: {e}") from e
    if not chain:
        raise TLSConfigError(f"{cert_path}: no PEM certificate found")
    try:
        leaf = ssl.PrivateCertificate.loadPEM(chain[0] + key_pem)
        extra = [ssl.Certificate.loadPEM(c).original for c in chain[1:]]
    except Exception as e:  # pyOpenSSL raises several types for bad PEM
        raise TLSConfigError(f"bad certificate or key: {e}") from e
    floor = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    try:
        return ssl.CertificateOptions(
            privateKey=leaf.privateKey.original,
            certificate=leaf.original,
            extraCertChain=extra,
            raiseMinimumTo=floor,
        )
    except Exception as e:
        raise TLSConfigError(f"certificate and key do not match: {e}") from e


@implementer(IOpenSSLContextFactory)
class ReloadableContextFactory:
    """A server context factory whose certificate can be swapped at run time."""

    def __init__(self, cert_path: Path, key_path: Path, min_version: str = "1.2") -> None:
        self.cert_path, self.key_path, self.min_version = cert_path, key_path, min_version
        self._options = build_options(cert_path, key_path, min_version)
        self._context: SSL.Context = self._options.getContext()

    def getContext(self) -> SSL.Context:
        return self._context

    def reload(self) -> bool:
        """Re-read the files; keep the old context (and log why) if they are bad."""
        try:
            options = build_options(self.cert_path, self.key_path, self.min_version)
            context = options.getContext()
        except TLSConfigError as e:
            log.error("tls: reload failed, keeping the current certificate: {e}", e=str(e))
            return False
        self._options, self._context = options, context
        log.info("tls: certificate reloaded from {path}", path=str(self.cert_path))
        return True


def tls_description(transport: Any) -> str:
    """'TLSv1.3 TLS_AES_256_GCM_SHA384' for a transport with TLS up, else ''."""
    conn = None
    for candidate in (transport, getattr(transport, "transport", None)):
        if candidate is None:
            continue
        handle = getattr(candidate, "getHandle", None)
        h = handle() if handle else None
        if isinstance(h, SSL.Connection):
            conn = h
            break
        proto = getattr(candidate, "protocol", None)
        h = getattr(proto, "_tlsConnection", None)
        if isinstance(h, SSL.Connection):
            conn = h
            break
    if conn is None:
        return ""
    try:
        version = conn.get_protocol_version_name()
        cipher = conn.get_cipher_name()
    except SSL.Error:
        return ""
    if not cipher or version == "Unknown":
        return ""
    return f"{version} {cipher}"
