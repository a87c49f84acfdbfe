"""TLS for the tests: client contexts, throw-away certificate authorities and chains
(made with ``cryptography``), and ``openssl s_client`` as an independent client."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"
PEM = serialization.Encoding.PEM


# -- client contexts ---------------------------------------------------------------------


def client_context() -> ssl.SSLContext:
    """A client context that does not check the (self-signed) test certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def verifying_context(cafile: Path | str) -> ssl.SSLContext:
    """A client context that trusts only ``cafile`` and checks the host name."""
    return ssl.create_default_context(cafile=str(cafile))


def trusting_context(server: Any) -> ssl.SSLContext:
    """A client context that trusts a test server's own self-signed certificate
    (issued for mail.example.test, localhost and 127.0.0.1) and nothing else."""
    return verifying_context(server.root / "tls" / "cert.pem")


# -- certificates ------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
           ca: bool, sans: list[str] = (), days: int = 2) -> x509.Certificate:  # type: ignore[assignment]
    """A certificate for ``subject`` signed by ``issuer_key``; ``sans`` may hold names and IPs."""
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = (b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    else:
        b = (b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False))
    if sans:
        names: list[x509.GeneralName] = []
        for n in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                names.append(x509.DNSName(n))
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _self_signed_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return _issue(cn, key, _name(cn), key, ca=True), key


def _write_key(path: Path, key: Any) -> None:
    path.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class TestCA:
    __test__ = False  # not a pytest test class
    ca_cert: Path
    server_cert: Path
    server_key: Path
    other_ca_cert: Path  # a CA that signed nothing here: verification must fail with it


def make_ca(folder: Path, hostnames: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ()) -> TestCA:
    """A CA and a server certificate it signed for ``hostnames`` and ``ips`` (by default
    "localhost" only, so that 127.0.0.1 is a name the certificate does not cover)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _self_signed_ca("mailsuite test CA")
    other_cert, _ = _self_signed_ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(hostnames[0], key, ca_cert.subject, ca_key, ca=False, sans=[*hostnames, *ips])
    out = TestCA(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "other-ca.pem")
    out.ca_cert.write_bytes(ca_cert.public_bytes(PEM))
    out.other_ca_cert.write_bytes(other_cert.public_bytes(PEM))
    out.server_cert.write_bytes(cert.public_bytes(PEM))
    _write_key(out.server_key, key)
    return out


def make_chain(folder: Path, leaf_cn: str = "mail.example.test", prefix: str = "") -> dict[str, Path]:
    """A root CA, an intermediate and a leaf for ``leaf_cn``; writes ``root.pem``,
    ``fullchain.pem`` (leaf + intermediate) and ``key.pem`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    root, root_key = _self_signed_ca(f"{prefix}Test Root CA")
    mid_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    mid = _issue(f"{prefix}Test Intermediate CA", mid_key, root.subject, root_key, ca=True, days=30)
    leaf = _issue(leaf_cn, leaf_key, mid.subject, mid_key, ca=False, sans=[leaf_cn, "localhost"], days=30)
    paths = {"root": folder / "root.pem", "fullchain": folder / "fullchain.pem", "key": folder / "key.pem"}
    paths["root"].write_bytes(root.public_bytes(PEM))
    paths["fullchain"].write_bytes(leaf.public_bytes(PEM) + mid.public_bytes(PEM))
    _write_key(paths["key"], leaf_key)
    return paths


# -- openssl s_client ----------------------------------------------------------------------


def s_client(port: int, *args: str, starttls: bool = False, stdin: bytes = b"QUIT\r\n",
             timeout: float = 15) -> subprocess.CompletedProcess:
    """Run ``openssl s_client`` against the server; stdout and stderr as bytes."""
    cmd = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-servername", "mail.example.test"]
    if starttls:
        cmd += ["-starttls", "smtp"]
    cmd += list(args)
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)


def peer_certificate(port: int, starttls: bool = False) -> x509.Certificate:
    """The leaf certificate the server presents to a new connection."""
    out = s_client(port, "-showcerts", starttls=starttls).stdout.decode(errors="replace")
    start = out.index("-----BEGIN CERTIFICATE-----")
    end = out.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return x509.load_pem_x509_certificate(out[start:end].encode())
