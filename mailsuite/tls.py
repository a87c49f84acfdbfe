"""TLS for every listener: the certificate, the server context, its reload, and the
handshake gate of implicit-TLS listeners.

One certificate (a full-chain PEM and its key) serves every service unless a service
has its own (``[tls.<service>]``).  The context factory handed to listeners and to
STARTTLS is :class:`ReloadableContextFactory`: :meth:`reload` (called on SIGHUP)
builds a new context from the files, and new handshakes use it while established
connections keep theirs (TLSMemoryBIOFactory asks for the context per connection).
TLS 1.2 is the floor, TLS 1.2 ciphers are ``[tls] ciphers`` (ECDHE + AEAD by
default), compression is off (CertificateOptions always sets OP_NO_COMPRESSION).

A self-signed pair is generated only where the config asks for it
(``tls.generate_self_signed``), and the log says so; a self-signed certificate in use
is also named in the log at start.

:class:`HandshakeGateFactory` sits between the TLS layer of an implicit-TLS listener
and the protocol: the protocol is connected (and takes its per-IP connection slot)
only once the handshake is complete, and a handshake that fails or does not finish in
``tls.handshake_timeout`` seconds is aborted.  Twisted has no handshake timeout of
its own.
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
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLContextFactory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

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


def build_options(
    cert_path: Path, key_path: Path, min_version: str = "1.2", ciphers: str | None = None
) -> ssl.CertificateOptions:
    """CertificateOptions from a full-chain PEM and a key; raises TLSConfigError.

    ``ciphers`` is an OpenSSL cipher string for TLS 1.2 (None: Twisted's defaults)."""
    try:
        chain = _split_pem(cert_path.read_bytes())
        key_pem = key_path.read_bytes()
    except OSError as e:
        raise TLSConfigError(f"cannot read certificate or key: {e}") from e
    if not chain:
        raise TLSConfigError(f"{cert_path}: no PEM certificate found")
    try:
        # cryptography objects: pyOpenSSL deprecates its own X509/PKey in contexts.
        certs = [x509.load_pem_x509_certificate(c) for c in chain]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except Exception as e:  # ValueError, TypeError, UnsupportedAlgorithm for bad PEM
        raise TLSConfigError(f"bad certificate or key: {e}") from e
    floor = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    extra_args: dict[str, Any] = {}
    if ciphers:
        try:
            SSL.Context(SSL.TLS_METHOD).set_cipher_list(ciphers.encode("ascii"))
        except (SSL.Error, UnicodeEncodeError) as e:
            raise TLSConfigError(f"tls.ciphers: no usable cipher in {ciphers!r}: {e}") from e
        extra_args["acceptableCiphers"] = ssl.AcceptableCiphers.fromOpenSSLCipherString(ciphers)
    try:
        options = ssl.CertificateOptions(
            privateKey=key,
            certificate=certs[0],
            extraCertChain=certs[1:],
            raiseMinimumTo=floor,
            **extra_args,
        )
    except Exception as e:
        raise TLSConfigError(f"certificate and key do not match: {e}") from e
    try:
        options.getContext().set_alpn_select_callback(_alpn_select)
    except Exception as e:  # key mismatch, or no usable cipher for this key type
        raise TLSConfigError(f"cannot build a TLS context from {cert_path}: {e}") from e
    return options


def _alpn_select(conn: SSL.Connection, offered: list[bytes]) -> Any:
    """ALPN: what the protocol behind this connection speaks, if the client offered it;
    else no ALPN at all (RFC 7301 3.2 lets a server ignore it).

    Twisted 26.10's own callback answers b"" when nothing overlaps, which the current
    pyOpenSSL turns into a fatal "internal error" alert: every client that offers ALPN
    (browsers always do; some mail clients too) failed its handshake."""
    from twisted.internet._sslverify import protosFromProtocol  # noqa: PLC2701 - Twisted's own lookup

    acceptable = protosFromProtocol(conn.get_app_data(), ())
    for proto in acceptable:
        if proto in offered:
            return proto
    return SSL.NO_OVERLAPPING_PROTOCOLS


def is_self_signed(cert_path: Path) -> bool:
    """True if the first certificate in ``cert_path`` is its own issuer."""
    try:
        chain = _split_pem(cert_path.read_bytes())
        leaf = x509.load_pem_x509_certificate(chain[0])
    except (OSError, IndexError, ValueError):
        return False
    return leaf.issuer == leaf.subject


@implementer(IOpenSSLContextFactory)
class ReloadableContextFactory:
    """A server context factory whose certificate can be swapped at run time."""

    def __init__(
        self, cert_path: Path, key_path: Path, min_version: str = "1.2", ciphers: str | None = None
    ) -> None:
        self.cert_path, self.key_path, self.min_version = cert_path, key_path, min_version
        self.ciphers = ciphers
        self._options = build_options(cert_path, key_path, min_version, ciphers)
        self._context: SSL.Context = self._options.getContext()
        if is_self_signed(cert_path):
            log.warn("tls: {path} is a self-signed certificate; clients will warn", path=str(cert_path))

    def getContext(self) -> SSL.Context:
        return self._context

    def reload(self) -> bool:
        """Re-read the files; keep the old context (and log why) if they are bad."""
        try:
            options = build_options(self.cert_path, self.key_path, self.min_version, self.ciphers)
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


@implementer(IHandshakeListener)
class _HandshakeGate(ProtocolWrapper):
    """Holds the application protocol back until the TLS handshake is complete."""

    factory: "HandshakeGateFactory"

    def __init__(self, factory: "HandshakeGateFactory", wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self._timer: Any = None
        self._ip = ""
        self._open = False  # the application protocol is connected

    def makeConnection(self, transport: Any) -> None:
        # ProtocolWrapper.makeConnection would connect the application now; only the
        # bookkeeping part of it is wanted here.
        from zope.interface import directlyProvides, providedBy

        directlyProvides(self, providedBy(transport))
        self.connected = 1
        self.transport = transport
        self.factory.registerProtocol(self)
        peer = transport.getPeer()
        self._ip = getattr(peer, "host", "") or ""
        pending = self.factory.pending
        if pending.get(self._ip, 0) >= self.factory.max_pending_per_ip:
            log.info("tls: [{ip}] too many TLS handshakes in progress; closed", ip=self._ip)
            self._ip = ""
            transport.abortConnection()
            return
        pending[self._ip] = pending.get(self._ip, 0) + 1
        self._timer = self.factory.clock.callLater(self.factory.timeout, self._timed_out)

    def _release(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._ip:
            pending = self.factory.pending
            pending[self._ip] -= 1
            if pending[self._ip] <= 0:
                del pending[self._ip]
            self._ip = ""

    def _timed_out(self) -> None:
        self._timer = None
        log.info("tls: [{ip}] TLS handshake not finished in {n}s; closed", ip=self._ip, n=self.factory.timeout)
        self._release()
        self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        if self._open:
            return  # a renegotiation
        self._release()
        self._open = True
        self.wrappedProtocol.makeConnection(self)
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def dataReceived(self, data: bytes) -> None:
        if self._open:
            self.wrappedProtocol.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        if self._open:
            super().connectionLost(reason)
            return
        if self._ip:
            log.info("tls: [{ip}] TLS handshake failed: {why}", ip=self._ip, why=reason.getErrorMessage())
        self._release()
        self.factory.unregisterProtocol(self)
        self.connected = 0


class HandshakeGateFactory(WrappingFactory):
    """Wrap the factory of an implicit-TLS listener (inside TLSMemoryBIOFactory)."""

    protocol = _HandshakeGate
    noisy = False

    def __init__(self, wrapped: Any, timeout: float, max_pending_per_ip: int = 20, clock: Any = None) -> None:
        super().__init__(wrapped)
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self.timeout = timeout
        self.max_pending_per_ip = max_pending_per_ip
        self.clock = clock
        self.pending: dict[str, int] = {}
