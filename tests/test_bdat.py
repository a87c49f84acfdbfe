"""CHUNKING and BINARYMIME (RFC 3030) on the SMTP listeners: BDAT chunks mixed with
PIPELINING, the same limits as DATA, every chunk's octets consumed even when its
transaction failed, BINARYMIME bodies stored as received.

swaks has no BDAT option (checked with ``swaks --help``: its ``--pipe`` talks to a
spawned program, ``--pipeline`` is PIPELINING), and smtplib has no BDAT either, so
these tests talk SMTP over raw sockets; the relay tests use our own outbound client
and a second mailsuite as peers (tests/test_bdat_relay.py)."""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.support.server import Server
from tests.support.waiting import wait_for


class Client:
    def __init__(self, port: int, tls: bool = False) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
        self.sock = sock
        self.f = sock.makefile("rb")
        self.reply()  # greeting

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        lines = [self.f.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(self.f.readline())
        assert lines[-1], "connection closed"
        return b"".join(lines)

    def replies(self, n: int) -> list[bytes]:
        return [self.reply() for _ in range(n)]

    def cmd(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        return self.f.readline() == b""

    def close(self) -> None:
        self.f.close()  # the file holds the socket open otherwise
        self.sock.close()


def bdat(data: bytes, last: bool = False) -> bytes:
    return b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data


@pytest.fixture
def client(server: Server):  # type: ignore[no-untyped-def]
    c = Client(server.ports["smtp"])
    assert c.cmd(b"EHLO client.test").startswith(b"250")
    yield c
    c.close()


def test_chunking_and_binarymime_are_offered_on_mx_and_submission(server: Server) -> None:
    for port, tls in ((server.ports["smtp"], False), (server.ports["submission"], False),
                      (server.ports["submissions"], True)):
        c = Client(port, tls)
        ehlo = c.cmd(b"EHLO client.test")
        assert b"250-CHUNKING" in ehlo and b"BINARYMIME" in ehlo and b"PIPELINING" in ehlo
        c.close()


def test_one_last_chunk_delivers_the_message_with_lf_line_ends(server: Server, client: Client) -> None:
    body = b"Subject: bdat\r\n\r\nline one\r\n.dot stays as it is\r\n"
    client.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n" + bdat(body, last=True))
    mail, rcpt, last = client.replies(3)
    assert mail.startswith(b"250") and rcpt.startswith(b"250")
    assert last.startswith(b"250 2.0.0 Ok: queued as")
    (msg,) = server.messages("alice@example.test")
    assert msg.endswith(b"Subject: bdat\n\nline one\n.dot stays as it is\n")  # no dot-unstuffing in BDAT


def test_pipelined_chunks_split_anywhere_even_inside_crlf(server: Server, client: Client) -> None:
    body = b"Subject: split\r\n\r\n" + b"".join(b"line %d\r\n" % i for i in range(2000))
    cuts = [0, 7, 8, 16, 17, 5000, 5001, 12345, len(body)]  # CR|LF split at 16/17
    chunks = [body[a:b] for a, b in zip(cuts, cuts[1:])]
    wire = b"MAIL FROM:<x@remote.test> BODY=8BITMIME\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
    wire += b"".join(bdat(c) for c in chunks) + bdat(b"", last=True)
    client.send(wire)  # one write: all commands and chunks pipelined
    replies = client.replies(3 + len(chunks) + 1)
    assert all(r.startswith(b"250") for r in replies), replies
    assert replies[3].startswith(b"250 2.0.0 %d octets received" % len(chunks[0]))
    assert b"queued as" in replies[-1]
    (msg,) = server.messages("alice@example.test")
    assert msg.endswith(body.replace(b"\r\n", b"\n"))
    assert server.messages("bob@example.test") == [msg.replace(b"alice@", b"bob@", 1)] or len(server.messages("bob@example.test")) == 1


def test_chunk_of_a_failed_transaction_is_read_not_run_as_commands(server: Server, client: Client) -> None:
    # No MAIL: the chunk is refused, but its bytes (which look like commands) are skipped.
    sneaky = b"RCPT TO:<alice@example.test>\r\nQUIT\r\n"
    client.send(bdat(sneaky))
    assert client.reply().startswith(b"503 5.5.1")
    assert client.cmd(b"NOOP").startswith(b"250")
    client.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<nobody@example.test>\r\n" + bdat(sneaky, last=True))
    mail, rcpt, last = client.replies(3)
    assert rcpt.startswith(b"550") and last.startswith(b"554 5.5.1")
    assert client.cmd(b"NOOP").startswith(b"250")
    assert server.messages("alice@example.test") == []


def test_size_limit_counts_all_chunks_and_later_chunks_are_still_consumed(server_factory) -> None:
    srv = server_factory("small", smtp={"max_message_size": 10_000}).start()
    c = Client(srv.ports["smtp"])
    c.cmd(b"EHLO client.test")
    piece = b"x" * 70 + b"\r\n"
    c.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
           + bdat(piece * 100) + bdat(piece * 100) + bdat(b"QUIT\r\n" * 10) + bdat(b"end\r\n", last=True))
    replies = c.replies(6)
    assert replies[2].startswith(b"250")  # 7,200 octets: fine so far
    assert replies[3].startswith(b"552 5.3.4")  # 14,400: over the limit
    assert replies[4].startswith(b"552 5.3.4") and replies[5].startswith(b"552 5.3.4")
    # The transaction is over; the session goes on (the QUITs in the chunk were data).
    c.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n" + bdat(b"Subject: ok\r\n\r\nx\r\n", True))
    assert all(r.startswith(b"250") for r in c.replies(3))
    assert len(srv.messages("alice@example.test")) == 1
    c.close()


def test_line_length_limit_applies_to_text_but_not_to_binarymime(server: Server, client: Client) -> None:
    long_line = b"Subject: long\r\n\r\n" + b"y" * 1500 + b"\r\n"
    client.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n" + bdat(long_line, last=True))
    assert client.replies(3)[2].startswith(b"500 5.5.2")
    client.send(b"MAIL FROM:<x@remote.test> BODY=BINARYMIME\r\nRCPT TO:<alice@example.test>\r\n"
                + bdat(long_line, last=True))
    assert client.replies(3)[2].startswith(b"250")
    assert len(server.messages("alice@example.test")) == 1


def test_binarymime_body_is_stored_as_received_and_needs_bdat(server: Server, client: Client) -> None:
    binary = bytes(range(256)).replace(b"\r", b"").replace(b"\n", b"") * 4
    body = (b"Subject: binary\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\n" + binary + b"\r\n")
    client.send(b"MAIL FROM:<x@remote.test> BODY=BINARYMIME\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    mail, rcpt, data = client.replies(3)
    assert data.startswith(b"503 5.5.1")  # RFC 3030 3: BINARYMIME only with BDAT
    client.send(bdat(body[:100]) + bdat(body[100:], last=True))
    assert all(r.startswith(b"250") for r in client.replies(2))
    (msg,) = server.messages("alice@example.test")
    assert msg.endswith(body.replace(b"\r\n", b"\n")) and b"\x00\x01\x02" in msg


def test_data_after_bdat_and_bdat_after_rset(server: Server, client: Client) -> None:
    client.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n" + bdat(b"Subject: a\r\n"))
    assert all(r.startswith(b"250") for r in client.replies(3))
    assert client.cmd(b"DATA").startswith(b"503 5.5.1")
    assert client.cmd(b"RSET").startswith(b"250")
    client.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n" + bdat(b"Subject: b\r\n\r\nb\r\n", True))
    assert all(r.startswith(b"250") for r in client.replies(3))
    (msg,) = server.messages("alice@example.test")
    assert b"Subject: b" in msg and b"Subject: a" not in msg


def test_bdat_without_a_size_closes_the_connection(client: Client) -> None:
    assert client.cmd(b"BDAT lots").startswith(b"501 5.5.4")
    assert client.closed()


def test_bdat_zero_last_ends_the_message(server: Server, client: Client) -> None:
    client.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
                + bdat(b"Subject: zero\r\n\r\nz\r\n") + b"BDAT 0 LAST\r\n")
    assert all(r.startswith(b"250") for r in client.replies(4))
    (msg,) = server.messages("alice@example.test")
    assert msg.endswith(b"Subject: zero\n\nz\n")


def test_disconnect_in_mid_chunk_discards_the_message(server: Server, client: Client) -> None:
    client.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT 1000 LAST\r\nSubject: half")
    client.replies(2)
    client.close()
    wait_for(lambda: "disconnected during DATA" in server.log(), 10, "the discard", server)
    assert server.messages("alice@example.test") == []
