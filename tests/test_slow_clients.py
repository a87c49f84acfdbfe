"""Slow clients time out (issue 16 finding 9): a client that sends one byte a second
never falls silent long enough for an idle timeout, so each request (a command line,
a message's DATA, an IMAP literal) has a deadline stretched by a minimum data rate
(frontend/pacing.py).  The limits are small here: 2 s plus 1 s per 5 bytes."""

from __future__ import annotations

import socket
import time
from typing import Iterator

import pytest

from tests.support.server import Server, started

LIMITS = {"request_deadline": 2, "min_data_rate": 5}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(tmp_path_factory.mktemp("slow") / "srv", server={"allow_plaintext_auth": True},
                       smtp=dict(LIMITS), submission=dict(LIMITS), imap=dict(LIMITS), pop3=dict(LIMITS))


class Trickle:
    """A raw connection that sends one byte per ``interval`` seconds."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def reply(self) -> bytes:
        """One SMTP reply, multi-line or not: its last line."""
        while True:
            line = self.file.readline()
            if line[3:4] != b"-":
                return line

    def trickle(self, data: bytes, interval: float = 1.0) -> tuple[float, bytes]:
        """Send ``data`` byte by byte until the server answers or closes; returns the
        seconds it took and what the server said."""
        t0 = time.monotonic()
        self.sock.settimeout(interval)
        got = b""
        for i in range(len(data)):
            try:
                self.sock.sendall(data[i:i + 1])
            except OSError:
                break
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            got += chunk
            if not chunk or got.endswith(b"\n"):
                break
        self.sock.settimeout(5)
        try:
            while not got.endswith(b"\n"):
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        return time.monotonic() - t0, got

    def closed(self) -> bool:
        self.sock.settimeout(5)
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def test_an_smtp_command_sent_one_byte_a_second_times_out(srv: Server) -> None:
    c = Trickle(srv.ports["smtp"])
    took, said = c.trickle(b"EHLO a-very-slow-client.example.test\r\n")
    assert said.startswith(b"421 4.4.2"), said
    assert 2 <= took < 6  # 2 s + a few bytes / 5, not the 300 s idle timeout
    assert c.closed()
    assert "command line not received within the request deadline" in srv.log()


def test_smtp_data_sent_one_byte_a_second_times_out_and_nothing_is_kept(srv: Server) -> None:
    c = Trickle(srv.ports["smtp"])
    for cmd in (b"EHLO client.test\r\n", b"MAIL FROM:<a@remote.test>\r\n", b"RCPT TO:<alice@example.test>\r\n",
                b"DATA\r\n"):
        c.send(cmd)
        assert c.reply()[:1] in b"23"
    took, said = c.trickle(b"Subject: slow\r\n\r\n" + b"x" * 60)
    assert said.startswith(b"421 4.4.2"), said
    assert 2 <= took < 8
    assert c.closed()
    time.sleep(0.2)
    assert srv.messages("alice@example.test") == []
    assert "message data not received within the request deadline" in srv.log()


def test_an_honest_client_pausing_between_commands_is_not_affected(srv: Server) -> None:
    """Silence between commands is the idle timeout's business, not the deadline's."""
    c = Trickle(srv.ports["submission"])
    c.send(b"EHLO client.test\r\n")
    c.reply()
    time.sleep(3)  # longer than request_deadline
    c.send(b"NOOP\r\n")
    assert c.line().startswith(b"250")
    c.close()


def test_an_imap_command_sent_one_byte_a_second_times_out(srv: Server) -> None:
    c = Trickle(srv.ports["imap"])
    took, said = c.trickle(b"a LOGIN alice@example.test alice-pw\r\n")
    assert said.startswith(b"* BYE"), said
    assert 2 <= took < 6
    assert c.closed()


def test_an_imap_literal_sent_one_byte_a_second_times_out(srv: Server) -> None:
    c = Trickle(srv.ports["imap"])
    c.send(b"a LOGIN alice@example.test alice-pw\r\n")
    while not c.line().startswith(b"a OK"):
        pass
    c.send(b"b APPEND INBOX {200}\r\n")
    assert c.line().startswith(b"+")
    took, said = c.trickle(b"Subject: slow\r\n\r\n" + b"x" * 180)
    assert said.startswith(b"* BYE"), said
    assert 2 <= took < 12  # 2 s + (the APPEND line + what came) / 5
    assert srv.messages("alice@example.test") == []


def test_a_pop3_command_sent_one_byte_a_second_times_out(srv: Server) -> None:
    c = Trickle(srv.ports["pop3"])
    took, said = c.trickle(b"USER alice@example.test\r\n")
    assert said.startswith(b"-ERR"), said
    assert 2 <= took < 6
    assert c.closed()
