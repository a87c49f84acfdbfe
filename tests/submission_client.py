"""Client helpers for the submission, TLS and abuse tests: a raw SMTP line client
(to send exactly the bytes a test needs), smtplib shortcuts, openssl s_client and
swaks runners, and throw-away certificate authorities."""

from __future__ import annotations

import base64
import datetime
import shutil
import smtplib
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import Server, make_server

HOST = "127.0.0.1"


def client_context() -> ssl.SSLContext:
    """A client context that does not check the (self-signed) test certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def plain(user: str, password: str, authzid: str = "") -> str:
    return b64(f"{authzid}\0{user}\0{password}")


class Raw:
    """SMTP over a plain socket, upgraded to TLS on demand; replies as (code, text)."""

    def __init__(self, port: int, implicit_tls: bool = False, timeout: float = 10.0) -> None:
        self.sock: socket.socket = socket.create_connection((HOST, port), timeout=timeout)
        if implicit_tls:
            self.sock = client_context().wrap_socket(self.sock)
        self._buf = b""
        self.greeting = self.reply()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self) -> bytes:
        while b"\r\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by server; pending {self._buf!r}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self.line().decode()
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, text: str) -> tuple[int, str]:
        self.send(text + "\r\n")
        return self.reply()

    def starttls(self) -> None:
        assert self.cmd("STARTTLS")[0] == 220
        self.sock = client_context().wrap_socket(self.sock)

    def closed_by_server(self, wait: float = 5.0) -> bool:
        """True if the server closes the connection within ``wait`` seconds."""
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError, ssl.SSLEOFError):
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "Raw":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def submit_session(server: Server, user: str = "alice@example.test", password: str = "alice-pw") -> smtplib.SMTP:
    """An smtplib session on 587, after STARTTLS and AUTH PLAIN."""
    s = smtplib.SMTP(HOST, server.ports["submission"], timeout=10)
    s.starttls(context=client_context())
    s.ehlo()
    s.auth("PLAIN", lambda challenge=None: f"\0{user}\0{password}")
    return s


def message(sender: str, to: str, subject: str = "hi", extra: str = "") -> bytes:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}\r\nhello\r\n".encode()


def s_client(port: int, *args: str, starttls: bool = False, stdin: bytes = b"QUIT\r\n",
             timeout: float = 15) -> subprocess.CompletedProcess:
    """Run ``openssl s_client`` against the server; stdout and stderr as text."""
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


def swaks(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    assert shutil.which("swaks"), "swaks is not installed"
    return subprocess.run(["swaks", "--server", HOST, "--timeout", "10", *args],
                          capture_output=True, timeout=timeout, text=True)


# -- certificates ------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_chain(folder: Path, leaf_cn: str = "mail.example.test", prefix: str = "") -> dict[str, Path]:
    """A root CA, an intermediate and a leaf for ``leaf_cn``; writes ``root.pem``,
    ``fullchain.pem`` (leaf + intermediate) and ``key.pem`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, issuer: str, key, issuer_key, ca: bool, sans: list[str] | None = None):  # type: ignore[no-untyped-def]
        b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = build(f"{prefix}Test Root CA", f"{prefix}Test Root CA", root_key, root_key, True)
    mid = build(f"{prefix}Test Intermediate CA", f"{prefix}Test Root CA", mid_key, root_key, True)
    leaf = build(leaf_cn, f"{prefix}Test Intermediate CA", leaf_key, mid_key, False, [leaf_cn, "localhost"])
    paths = {"root": folder / "root.pem", "fullchain": folder / "fullchain.pem", "key": folder / "key.pem"}
    paths["root"].write_bytes(_pem(root))
    paths["fullchain"].write_bytes(_pem(leaf) + _pem(mid))
    paths["key"].write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return paths


def started(root: Path, **overrides) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """A generator for module-scoped fixtures: a started server, stopped at the end."""
    srv = make_server(root, **overrides)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
