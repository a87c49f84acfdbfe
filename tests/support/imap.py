"""Helpers for the IMAP end-to-end tests: a shared server with many accounts, raw
sessions that read exact responses, and message delivery over SMTP."""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket
import ssl
import zlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.server import Server, make_server
from tests.support.sockets import LineClient

PASSWORD = "imap-test-pw"
N_USERS = 60


def imap_users(n: int = N_USERS) -> dict[str, str]:
    users = {f"u{i}@example.test": PASSWORD for i in range(n)}
    users["alice@example.test"] = "alice-pw"
    return users


def start_imap_server(root: Path, **overrides: Any) -> Server:
    server = {"hostname": "mail.example.test", "data_dir": "data", "domains": ["example.test", "other.test"],
              "allow_plaintext_auth": True}
    server.update(overrides.pop("server", {}))
    imap = {"idle_check_interval": 0.5}
    imap.update(overrides.pop("imap", {}))
    srv = make_server(root, users=overrides.pop("users", imap_users()), server=server, imap=imap, **overrides)
    srv.start()
    return srv


class Accounts:
    """Hands each test its own fresh account on a shared server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.next = 0

    def take(self) -> str:
        if self.next >= N_USERS:
            pytest.skip("out of test accounts")
        name = f"u{self.next}@example.test"
        self.next += 1
        return name


def deliver(server: Server, to: str, message: bytes, sender: str = "sender@remote.test") -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.sendmail(sender, [to], message)


def login(server: Server, user: str) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    m.login(user, PASSWORD if user.startswith("u") else "alice-pw")
    return m


class Raw(LineClient):
    """A raw IMAP connection: send exact bytes, read exact responses."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0, tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="mail.example.test")
        super().__init__(sock)
        self.n = 0
        self.greeting = self.line()

    def response(self, tag: bytes) -> tuple[list[bytes], bytes]:
        """Untagged lines (literals inlined) and the tagged line."""
        lines = []
        while True:
            line = self.line()
            m = re.search(rb"\{(\d+)\}$", line)
            while m:
                line += b"\r\n" + self.read_exact(int(m.group(1)))
                rest = self.line()
                line += rest
                m = re.search(rb"\{(\d+)\}$", rest)
            if line.startswith(tag + b" "):
                return lines, line
            lines.append(line)

    def cmd(self, text: bytes) -> tuple[list[bytes], bytes]:
        self.n += 1
        tag = b"t%d" % self.n
        self.send(tag + b" " + text + b"\r\n")
        return self.response(tag)

    def login(self, user: str, password: str = PASSWORD) -> None:
        _, tagged = self.cmd(b"LOGIN " + user.encode() + b" " + password.encode())
        assert b" OK " in tagged, tagged


def raw_session(server: Server, user: str, password: str = PASSWORD) -> Raw:
    """A logged-in :class:`Raw` session on the server's plain IMAP port."""
    r = Raw(server.ports["imap"])
    r.login(user, password)
    return r


def ok(r: Raw, command: bytes) -> list[bytes]:
    """Send ``command``; its untagged lines, after checking it ended OK."""
    untagged, tagged = r.cmd(command)
    assert re.match(rb"t\d+ OK", tagged), (command, tagged)
    return untagged


def response_code(lines: list[bytes], name: bytes) -> int:
    """The number of the first ``[NAME n]`` response code in ``lines``."""
    for line in lines:
        m = re.search(rb"\[" + name + rb" (\d+)\]", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no [{name.decode()}] in {lines}")


def message(n: int) -> bytes:
    """A small distinct message ("note n")."""
    return f"From: a{n}@remote.test\r\nSubject: note {n}\r\n\r\nbody {n}\r\n".encode()


def running_imap_server(tmp_path_factory: pytest.TempPathFactory, name: str = "imap", **overrides: Any) -> Iterator[Server]:
    """Body of a module-scoped server fixture with its own settings (``yield from``
    it): started, stopped at the end, and its log checked for tracebacks."""
    srv = start_imap_server(tmp_path_factory.mktemp(name) / "srv", **overrides)
    try:
        yield srv
    finally:
        srv.stop()
    assert imap_tracebacks(srv.log()) == []


@pytest.fixture(scope="module")
def imap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from running_imap_server(tmp_path_factory)


@pytest.fixture(scope="module")
def accounts(imap_server: Server) -> Accounts:
    return Accounts(imap_server)


def imap_tracebacks(log: str) -> list[str]:
    """Log entries of the IMAP code (or of connections it runs) that carry a traceback."""
    entries: list[str] = []
    for line in log.splitlines():
        if line.startswith("\t") and entries:
            entries[-1] += "\n" + line
        else:
            entries.append(line)
    return [e for e in entries if "Traceback" in e and ("mailsuite.imap" in e or "imap/" in e)]


imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))  # imaplib knows no COMPRESS (RFC 4978)


class _Deflate:
    """imaplib with COMPRESS=DEFLATE (RFC 4978): ``compress()`` sends the command and,
    after its OK, deflates what it sends (a sync flush per command) and inflates what
    it reads.  ``raw_in``/``plain_in`` count the octets read before and after inflating."""

    _zin: Any = None
    _zout: Any = None
    raw_in = 0
    plain_in = 0

    def compress(self) -> tuple[str, list[Any]]:
        typ, data = self._simple_command("COMPRESS", "DEFLATE")  # type: ignore[attr-defined]
        if typ == "OK" and self._zin is None:
            self._zin = zlib.decompressobj(-15)
            self._zout = zlib.compressobj(6, zlib.DEFLATED, -15)
            self._plain = bytearray()
        return typ, data

    def send(self, data: bytes) -> None:
        if self._zout is not None:
            data = self._zout.compress(data) + self._zout.flush(zlib.Z_SYNC_FLUSH)
        super().send(data)  # type: ignore[misc]

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)  # type: ignore[attr-defined]
        if not chunk:
            raise imaplib.IMAP4.abort("socket error: EOF")
        self.raw_in += len(chunk)
        out = self._zin.decompress(chunk)
        self.plain_in += len(out)
        self._plain += out

    def read(self, size: int) -> bytes:
        if self._zin is None:
            return super().read(size)  # type: ignore[misc]
        while len(self._plain) < size:
            self._fill()
        data = bytes(self._plain[:size])
        del self._plain[:size]
        return data

    def readline(self) -> bytes:
        if self._zin is None:
            return super().readline()  # type: ignore[misc]
        while b"\n" not in self._plain:
            self._fill()
        i = self._plain.index(b"\n") + 1
        data = bytes(self._plain[:i])
        del self._plain[:i]
        return data


class DeflateIMAP4(_Deflate, imaplib.IMAP4):
    pass


class DeflateIMAP4_SSL(_Deflate, imaplib.IMAP4_SSL):
    pass
