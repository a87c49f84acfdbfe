"""SMTP clients for the tests: a raw line client (to send exactly the bytes a test
needs, bad input included), smtplib shortcuts for submission, and a swaks runner."""

from __future__ import annotations

import base64
import shutil
import smtplib
import socket
import subprocess

from tests.support.server import Server
from tests.support.sockets import LineClient
from tests.support.tls import HOST, client_context


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def plain(user: str, password: str, authzid: str = "") -> str:
    return b64(f"{authzid}\0{user}\0{password}")


class Raw(LineClient):
    """SMTP over a plain socket (from ``source`` if given), upgraded to TLS on demand;
    replies as (code, text), the lines of a multi-line reply joined by newlines."""

    def __init__(self, port: int, implicit_tls: bool = False, timeout: float = 10.0, source: str | None = None) -> None:
        sock = socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0) if source else None)
        super().__init__(client_context().wrap_socket(sock) if implicit_tls else sock)
        self.greeting = self.reply()

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self.line().decode()
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, text: str | bytes) -> tuple[int, str]:
        self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.reply()

    def starttls(self) -> None:
        assert self.cmd("STARTTLS")[0] == 220
        self.sock = client_context().wrap_socket(self.sock)


def submit_session(server: Server, user: str = "alice@example.test", password: str = "alice-pw") -> smtplib.SMTP:
    """An smtplib session on 587, after STARTTLS and AUTH PLAIN."""
    s = smtplib.SMTP(HOST, server.ports["submission"], timeout=10)
    s.starttls(context=client_context())
    s.ehlo()
    s.auth("PLAIN", lambda challenge=None: f"\0{user}\0{password}")
    return s


def message(sender: str, to: str, subject: str = "hi", extra: str = "") -> bytes:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}\r\nhello\r\n".encode()


def swaks(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    assert shutil.which("swaks"), "swaks is not installed"
    return subprocess.run(["swaks", "--server", HOST, "--timeout", "10", *args],
                          capture_output=True, timeout=timeout, text=True)
