"""COMPRESS=DEFLATE (RFC 4978) end to end, over real sockets.

The client is imaplib with a deflate layer (tests/support/imap.py ``DeflateIMAP4``):
after ``COMPRESS DEFLATE`` it compresses what it sends and inflates what it reads, so
every later exchange (LOGIN state commands, APPEND literals, big FETCH responses,
pipelined commands) proves the server's side of both streams.  Also over STARTTLS
and on the implicit-TLS port; a second COMPRESS is ``NO [COMPRESSIONACTIVE]``; a
decompression bomb and a broken stream get ``* BYE`` and a closed connection, with a
log line.  mbsync (isync 1.4 compresses whenever the server offers it) is in
tests/test_imap_mbsync.py.
"""

from __future__ import annotations

import os
import socket
import time
import zlib

import pytest

from tests.support.imap import PASSWORD, Accounts, DeflateIMAP4, DeflateIMAP4_SSL, Raw
from tests.support.server import Server
from tests.support.tls import trusting_context

SUBJECT = "compressible"


def message(size: int, text: bytes = b"The quick brown fox jumps over the lazy dog. ") -> bytes:
    body = (text * (size // len(text) + 1))[:size]
    lines = b"\r\n".join(body[i : i + 76] for i in range(0, len(body), 76))
    return (f"From: a@x.test\r\nTo: b@x.test\r\nSubject: {SUBJECT}\r\n\r\n").encode() + lines + b"\r\n"


@pytest.fixture
def user(accounts: Accounts) -> str:
    return accounts.take()


def compressed(server: Server, user: str) -> DeflateIMAP4:
    m = DeflateIMAP4("127.0.0.1", server.ports["imap"])
    m.login(user, PASSWORD)
    typ, data = m.compress()
    assert typ == "OK", data
    return m


def test_compress_deflate_is_advertised_once_logged_in(imap_server: Server, user: str) -> None:
    m = DeflateIMAP4("127.0.0.1", imap_server.ports["imap"])
    assert b"COMPRESS=DEFLATE" not in m.capability()[1][0]
    m.login(user, PASSWORD)
    assert b"COMPRESS=DEFLATE" in m.capability()[1][0].split()
    m.logout()


def test_a_compressed_session_does_everything_a_plain_one_does(imap_server: Server, user: str) -> None:
    m = compressed(imap_server, user)
    big = message(400_000)
    assert m.append("INBOX", None, None, big)[0] == "OK"  # a literal, deflated
    assert m.append("INBOX", "(\\Flagged)", None, message(100))[0] == "OK"
    assert m.select("INBOX") == ("OK", [b"2"])
    raw_before, plain_before = m.raw_in, m.plain_in
    typ, data = m.fetch("1", "BODY.PEEK[]")
    assert typ == "OK" and data[0][1] == big
    # The 400 kB of text came as far fewer octets on the wire.
    assert (m.raw_in - raw_before) * 10 < m.plain_in - plain_before
    assert m.search(None, "FLAGGED") == ("OK", [b"2"])
    assert m.sort("(SIZE)", "UTF-8", "ALL") == ("OK", [b"2 1"])
    assert m.noop()[0] == "OK"
    assert m.logout()[0] == "BYE"


def test_second_compress_is_no_compressionactive(imap_server: Server, user: str) -> None:
    m = compressed(imap_server, user)
    typ, data = m.compress()
    assert typ == "NO" and data[0].startswith(b"[COMPRESSIONACTIVE]")
    assert m.noop()[0] == "OK"  # still talking, still compressed
    m.logout()


def test_compress_needs_login_and_a_known_mechanism(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    _, tagged = r.cmd(b"COMPRESS DEFLATE")
    assert b" BAD " in tagged  # not before authentication (RFC 4978 3)
    r.login(user)
    for bad in (b"COMPRESS LZ4", b"COMPRESS", b"COMPRESS DEFLATE EXTRA"):
        _, tagged = r.cmd(bad)
        assert b" BAD " in tagged, (bad, tagged)
    _, tagged = r.cmd(b"NOOP")
    assert b" OK " in tagged  # refusals leave the connection uncompressed


def test_after_starttls(imap_server: Server, user: str) -> None:
    m = DeflateIMAP4("127.0.0.1", imap_server.ports["imap"])
    m.starttls(ssl_context=trusting_context(imap_server))
    m.login(user, PASSWORD)
    assert m.compress()[0] == "OK"
    assert m.append("INBOX", None, None, message(50_000))[0] == "OK"
    m.select("INBOX")
    assert m.fetch("1", "BODY.PEEK[]")[1][0][1] == message(50_000)
    m.logout()


def test_on_the_implicit_tls_port(imap_server: Server, user: str) -> None:
    m = DeflateIMAP4_SSL("127.0.0.1", imap_server.ports["imaps"], ssl_context=trusting_context(imap_server))
    m.login(user, PASSWORD)
    assert m.compress()[0] == "OK"
    assert m.append("INBOX", None, None, message(50_000))[0] == "OK"
    m.select("INBOX")
    assert m.fetch("1", "(RFC822.SIZE BODY.PEEK[])")[1][0][1] == message(50_000)
    m.logout()


def _raw_compressed(server: Server, user: str) -> tuple[Raw, "zlib._Compress", "zlib._Decompress"]:
    r = Raw(server.ports["imap"])
    r.login(user)
    _, tagged = r.cmd(b"COMPRESS DEFLATE")
    assert b" OK " in tagged
    return r, zlib.compressobj(9, zlib.DEFLATED, -15), zlib.decompressobj(-15)


def _read_all(sock: socket.socket, inflate: "zlib._Decompress", seconds: float = 20.0) -> tuple[bytes, bool]:
    """Inflated bytes until the server closes (True) or goes quiet for a while."""
    sock.settimeout(seconds)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out, True
            out += inflate.decompress(chunk)
    except (TimeoutError, socket.timeout):
        return out, False
    except ConnectionResetError:
        return out, True


def test_pipelined_commands_beyond_the_input_buffer_are_all_answered(imap_server: Server, user: str) -> None:
    # 3000 commands in one deflated burst (over 256 KiB plain: the server must pause
    # inflating while it works through them, and go on afterwards).
    r, deflate, inflate = _raw_compressed(imap_server, user)
    burst = b"".join(b"p%d NOOP\r\n" % i for i in range(3000))
    burst += b"".join(b"q%d STATUS INBOX (MESSAGES)\r\n" % i for i in range(100))
    burst += b"".join(b"n%d STATUS %s (MESSAGES)\r\n" % (i, b"x" * 3000) for i in range(100))  # 300 kB
    r.sock.sendall(deflate.compress(burst) + deflate.flush(zlib.Z_SYNC_FLUSH))
    r.sock.settimeout(30)
    got = b""
    while b"n99 NO" not in got:
        chunk = r.sock.recv(65536)
        assert chunk, got[-300:]
        got += inflate.decompress(chunk)
    assert got.count(b" OK NOOP") == 3000 and got.count(b" OK STATUS") == 100
    r.sock.sendall(deflate.compress(b"z LOGOUT\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))


def test_a_decompression_bomb_is_answered_and_the_connection_closed(imap_server: Server, user: str) -> None:
    r, deflate, inflate = _raw_compressed(imap_server, user)
    # 50 MB of one letter deflate to about 50 kB: a ratio of 1000, where mail reaches 10.
    bomb = deflate.compress(b"A" * 50_000_000) + deflate.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 100_000
    try:
        r.sock.sendall(bomb)
    except (BrokenPipeError, ConnectionResetError):
        pass
    out, closed = _read_all(r.sock, inflate)
    assert closed
    assert b"* BYE [LIMIT] Compressed input expands too much" in out
    deadline = time.monotonic() + 10
    while "decompression bomb" not in imap_server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "decompression bomb" in imap_server.log()


def test_a_broken_deflate_stream_closes_the_connection(imap_server: Server, user: str) -> None:
    r, _, inflate = _raw_compressed(imap_server, user)
    r.sock.sendall(b"\xff" * 64)  # not deflate
    out, closed = _read_all(r.sock, inflate)
    assert closed and b"* BYE" in out


def test_a_big_append_streams_through_the_inflater(imap_server: Server, user: str) -> None:
    # 3 MB of incompressible text: past the in-memory literal threshold, to the spool.
    m = compressed(imap_server, user)
    body = os.urandom(1_500_000).hex().encode()
    data = b"Subject: big\r\n\r\n" + b"\r\n".join(body[i : i + 76] for i in range(0, len(body), 76)) + b"\r\n"
    assert m.append("INBOX", None, None, data)[0] == "OK"
    m.select("INBOX")
    typ, got = m.fetch("1", "BODY.PEEK[]")
    assert got[0][1] == data
    m.logout()
