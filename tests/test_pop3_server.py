"""POP3 end to end with poplib against the real server: RFC 1939 commands, CAPA,
STLS / implicit TLS, AUTH PLAIN, UPDATE-state deletion, locking, limits, bad input."""

from __future__ import annotations

import base64
import os
import poplib
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.server import Server
from tests.support.pop3 import PASSWORD, fresh_user, login, put, raw, start_pop3_server
from tests.support.tls import client_context

MSG = b"From: a@remote.test\nSubject: hello\n\nline one\n.dot line\n..two dots\nlast\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_pop3_server(tmp_path_factory.mktemp("pop3"))
    try:
        yield server
    finally:
        server.stop()


def wire(text: bytes) -> bytes:
    return text.replace(b"\n", b"\r\n")


def test_greeting_and_capa_before_tls_offer_stls_but_no_login(srv: Server) -> None:
    p = poplib.POP3("127.0.0.1", srv.ports["pop3"], timeout=10)
    assert p.getwelcome().startswith(b"+OK")
    caps = p.capa()
    assert {"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS"} <= set(caps)
    assert "USER" not in caps and "SASL" not in caps and "APOP" not in caps
    assert b"<" not in p.getwelcome()  # no APOP timestamp
    p.quit()


def test_user_and_auth_before_tls_are_refused_with_a_reason(srv: Server) -> None:
    p = poplib.POP3("127.0.0.1", srv.ports["pop3"], timeout=10)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Plaintext authentication disallowed"):
        p.user(fresh_user())
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p._shortcmd("AUTH PLAIN " + base64.b64encode(b"\0u1@example.test\0" + PASSWORD.encode()).decode())
    p.quit()


def test_capa_after_stls_offers_user_and_sasl_plain(srv: Server) -> None:
    p = poplib.POP3("127.0.0.1", srv.ports["pop3"], timeout=10)
    p.stls(client_context())
    caps = p.capa()
    assert "USER" in caps and caps["SASL"] == ["PLAIN"] and "STLS" not in caps
    p.quit()


def test_user_pass_over_stls(srv: Server) -> None:
    user = fresh_user()
    put(srv, user, MSG)
    p = login(srv, user, implicit=False)
    assert p.stat() == (1, len(wire(MSG)))
    p.quit()


def test_user_pass_over_implicit_tls(srv: Server) -> None:
    user = fresh_user()
    put(srv, user, MSG)
    p = login(srv, user, implicit=True)
    assert p.stat() == (1, len(wire(MSG)))
    p.quit()


def test_auth_plain_with_initial_response(srv: Server) -> None:
    user = fresh_user()
    p = poplib.POP3_SSL("127.0.0.1", srv.ports["pop3s"], context=client_context(), timeout=10)
    token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    assert p._shortcmd(f"AUTH PLAIN {token}").startswith(b"+OK")
    assert p.stat() == (0, 0)
    p.quit()


def test_auth_plain_with_continuation_and_cancel(srv: Server) -> None:
    user = fresh_user()
    s, f = raw(srv)
    s.sendall(b"AUTH PLAIN\r\n")
    assert f.readline() == b"+ \r\n"
    s.sendall(b"*\r\n")
    assert f.readline().startswith(b"-ERR")
    s.sendall(b"AUTH PLAIN\r\n")
    assert f.readline() == b"+ \r\n"
    s.sendall(base64.b64encode(f"{user}\0{user}\0{PASSWORD}".encode()) + b"\r\n")
    assert f.readline().startswith(b"+OK")
    s.sendall(b"QUIT\r\n")
    assert f.readline().startswith(b"+OK")
    s.close()


def test_auth_without_mechanism_lists_plain(srv: Server) -> None:
    s, f = raw(srv)
    s.sendall(b"AUTH\r\n")
    assert [f.readline() for _ in range(3)] == [b"+OK\r\n", b"PLAIN\r\n", b".\r\n"]
    s.close()


def test_wrong_password_gets_auth_code(srv: Server) -> None:
    p = poplib.POP3_SSL("127.0.0.1", srv.ports["pop3s"], context=client_context(), timeout=10)
    p.user(fresh_user())
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed"):
        p.pass_("wrong")
    p.quit()


def test_repeated_auth_failures_slow_down(srv: Server) -> None:
    user = fresh_user()
    p = poplib.POP3_SSL("127.0.0.1", srv.ports["pop3s"], context=client_context(), timeout=10)
    timings = []
    for _ in range(3):
        p.user(user)
        started = time.monotonic()
        with pytest.raises(poplib.error_proto):
            p.pass_("wrong")
        timings.append(time.monotonic() - started)
    assert timings[2] >= 0.5 > timings[0]


def test_three_auth_failures_close_the_connection(srv: Server) -> None:
    s, f = raw(srv)
    for _ in range(3):
        s.sendall(b"USER nobody@example.test\r\nPASS bad\r\n")
        assert f.readline() == b"+OK\r\n"
        assert f.readline().startswith(b"-ERR [AUTH]")
    assert f.readline() == b""
    s.close()


def test_stat_list_uidl_retr_top(srv: Server) -> None:
    user = fresh_user()
    put(srv, user, MSG)
    put(srv, user, b"Subject: two\n\nsecond\n")
    p = login(srv, user)
    assert p.stat() == (2, len(wire(MSG)) + len(wire(b"Subject: two\n\nsecond\n")))
    resp, lines, _ = p.list()
    assert lines == [b"1 %d" % len(wire(MSG)), b"2 %d" % len(wire(b"Subject: two\n\nsecond\n"))]
    assert p.list(2).split()[1:] == [b"2", b"%d" % len(wire(b"Subject: two\n\nsecond\n"))]
    _, uidls, _ = p.uidl()
    assert len(uidls) == 2 and uidls[0].split()[0] == b"1"
    assert p.uidl(1).split()[2] == uidls[0].split()[1]
    resp, lines, octets = p.retr(1)
    assert resp == b"+OK %d octets" % len(wire(MSG))
    assert lines == MSG.rstrip(b"\n").split(b"\n")  # poplib removes the stuffed dots
    _, top, _ = p.top(1, 1)
    assert top == [b"From: a@remote.test", b"Subject: hello", b"", b"line one"]
    p.quit()


def test_uidl_is_stable_across_sessions_and_restarts(tmp_path: Path) -> None:
    server = start_pop3_server(tmp_path / "s")
    try:
        user = fresh_user()
        put(server, user, MSG)
        put(server, user, MSG)
        p = login(server, user)
        first = p.uidl()[1]
        p.quit()
        server.stop()
        put(server, user, MSG)
        server.start()
        p = login(server, user)
        again = p.uidl()[1]
        p.quit()
        assert again[:2] == first and len(again) == 3
    finally:
        server.stop()


def test_dele_then_quit_removes_the_message(srv: Server) -> None:
    user = fresh_user()
    put(srv, user, MSG)
    put(srv, user, b"Subject: keep\n\nx\n")
    p = login(srv, user)
    uid_kept = p.uidl(2).split()[2]
    p.dele(1)
    assert p.stat()[0] == 1
    assert [l.split()[0] for l in p.list()[1]] == [b"2"]
    assert [l.split()[0] for l in p.uidl()[1]] == [b"2"]
    with pytest.raises(poplib.error_proto, match="deleted"):
        p.retr(1)
    assert p.quit().startswith(b"+OK")
    p = login(srv, user)
    assert p.stat()[0] == 1 and p.uidl(1).split()[2] == uid_kept
    p.quit()


def test_dele_then_dropped_connection_deletes_nothing(srv: Server) -> None:
    user = fresh_user()
    put(srv, user, MSG)
    p = login(srv, user)
    p.dele(1)
    p.file.close()
    p.sock.close()  # no QUIT
    time.sleep(0.3)
    p = login(srv, user)
    assert p.stat()[0] == 1
    p.quit()


def test_rset_undeletes(srv: Server) -> None:
    user = fresh_user()
    put(srv, user, MSG)
    p = login(srv, user)
    p.dele(1)
    assert p.rset().startswith(b"+OK")
    assert p.stat()[0] == 1
    p.quit()
    p = login(srv, user)
    assert p.stat()[0] == 1
    p.quit()


def test_retr_marks_seen_in_the_store(srv: Server) -> None:
    user = fresh_user()
    put(srv, user, MSG)
    put(srv, user, MSG)
    p = login(srv, user)
    p.retr(2)
    p.top(1, 0)
    p.quit()
    cur = srv.maildir(user) / "cur"
    flags = sorted(n.rpartition(":2,")[2] for n in os.listdir(cur))
    assert flags == ["", "S"]


def test_second_session_gets_in_use(srv: Server) -> None:
    user = fresh_user()
    p = login(srv, user)
    q = poplib.POP3_SSL("127.0.0.1", srv.ports["pop3s"], context=client_context(), timeout=10)
    q.user(user)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        q.pass_(PASSWORD)
    p.quit()
    q.user(user)
    assert q.pass_(PASSWORD).startswith(b"+OK")
    q.quit()


def test_large_message_with_dot_lines_at_16k_boundaries_arrives_intact(srv: Server) -> None:
    user = fresh_user()
    # Lines placed so that '.'-lines start exactly at 16 KiB and 64 KiB boundaries
    # of the file (where Twisted's stock server forgets to stuff them).
    parts = [b"Subject: big\n\n"]
    size = len(parts[0])
    k = 0
    while size < 3 * 1024 * 1024:
        boundary = (size // 16384 + 1) * 16384
        while boundary - size > 1000:  # poplib refuses lines over 2048 octets
            parts.append(b"y" * 999 + b"\n")
            size += 1000
        filler = boundary - size - 1
        parts.append(b"x" * filler + b"\n" if filler > 0 else b"\n")
        parts.append(b".\n" if k % 3 == 0 else b"..line %d\n" % k)
        size = sum(map(len, parts))
        k += 1
    text = b"".join(parts)
    put(srv, user, text)
    p = login(srv, user)
    resp, lines, octets = p.retr(1)
    assert resp == b"+OK %d octets" % len(wire(text))
    assert b"\n".join(lines) + b"\n" == text
    p.quit()


def test_retr_stream_is_dot_stuffed_on_the_wire(srv: Server) -> None:
    user = fresh_user()
    put(srv, user, b"Subject: x\n\n.\n..\nend")  # no final newline
    s, f = raw(srv)
    s.sendall(f"USER {user}\r\nPASS {PASSWORD}\r\nRETR 1\r\n".encode())
    assert f.readline() == b"+OK\r\n" and f.readline().startswith(b"+OK")
    assert f.readline().startswith(b"+OK")
    body = [f.readline() for _ in range(6)]
    assert body == [b"Subject: x\r\n", b"\r\n", b"..\r\n", b"...\r\n", b"end\r\n", b".\r\n"]
    s.close()


def test_pipelined_commands_are_answered_in_order(srv: Server) -> None:
    user = fresh_user()
    put(srv, user, MSG)
    s, f = raw(srv)
    s.sendall(f"USER {user}\r\nPASS {PASSWORD}\r\nSTAT\r\nNOOP\r\nLIST 1\r\nQUIT\r\n".encode())
    replies = [f.readline() for _ in range(6)]
    assert replies[2] == b"+OK 1 %d\r\n" % len(wire(MSG))
    assert replies[3] == b"+OK\r\n" and replies[4] == b"+OK 1 %d\r\n" % len(wire(MSG))
    assert replies[5].startswith(b"+OK")
    s.close()


@pytest.mark.parametrize(
    "command, expected",
    [
        (b"BOGUS", b"-ERR Unknown command."),
        (b"", b"-ERR Unknown command."),
        (b"RETR", b"-ERR Invalid message number."),
        (b"RETR abc", b"-ERR Invalid message number."),
        (b"RETR -1", b"-ERR Invalid message number."),
        (b"RETR 0", b"-ERR There's no message 0."),
        (b"RETR 99", b"-ERR There's no message 99."),
        (b"DELE 99999999999", b"-ERR Invalid message number."),
        (b"TOP 1", b"-ERR Invalid number of lines."),
        (b"TOP 1 x", b"-ERR Invalid number of lines."),
        (b"STAT extra", b"-ERR This command takes no arguments."),
        (b"USER someone", b"-ERR USER is not allowed in the TRANSACTION state."),
        (b"STLS", b"-ERR STLS is not allowed in the TRANSACTION state."),
        (b"APOP x y", b"-ERR APOP is not allowed in the TRANSACTION state."),
        (b"\xff\xfe", b"-ERR Unknown command."),
    ],
)
def test_bad_input_in_transaction_state_gets_err(srv: Server, command: bytes, expected: bytes) -> None:
    user = fresh_user()
    put(srv, user, MSG)
    p = login(srv, user)
    p._putcmd(command.decode("latin-1"))
    assert p._getline()[0] == expected
    assert p.noop().startswith(b"+OK")  # the session goes on
    p.quit()


@pytest.mark.parametrize(
    "command, expected",
    [
        (b"STAT", b"-ERR STAT is not allowed in the AUTHORIZATION state."),
        (b"RETR 1", b"-ERR RETR is not allowed in the AUTHORIZATION state."),
        (b"PASS x", b"-ERR Give USER first."),
        (b"APOP user digest", b"-ERR APOP is not supported."),
        (b"AUTH CRAM-MD5", b"-ERR Unsupported authentication mechanism."),
        (b"AUTH PLAIN !!!", b"-ERR Invalid base64 data."),
        (b"STLS", b"-ERR TLS is already active."),
    ],
)
def test_bad_input_in_authorization_state_gets_err(srv: Server, command: bytes, expected: bytes) -> None:
    s, f = raw(srv)
    s.sendall(command + b"\r\n")
    assert f.readline() == expected + b"\r\n"
    s.sendall(b"QUIT\r\n")
    assert f.readline().startswith(b"+OK")
    s.close()


def test_overlong_line_is_refused_and_skipped(srv: Server) -> None:
    s, f = raw(srv)
    s.sendall(b"NOOP " + b"x" * 5000 + b"\r\nCAPA\r\n")
    assert f.readline() == b"-ERR Line too long.\r\n"
    assert f.readline() == b"+OK Capability list follows\r\n"
    s.close()


def test_idle_session_is_closed(tmp_path: Path) -> None:
    server = start_pop3_server(tmp_path / "idle", pop3={"idle_timeout": 2})
    try:
        s, f = raw(server)
        s.settimeout(15)
        started = time.monotonic()
        assert f.readline() == b"-ERR Disconnected for inactivity.\r\n"
        assert f.readline() == b""
        assert 1.5 < time.monotonic() - started < 12
        s.close()
    finally:
        server.stop()


def test_activity_keeps_a_session_open(tmp_path: Path) -> None:
    server = start_pop3_server(tmp_path / "busy", pop3={"idle_timeout": 2})
    try:
        s, f = raw(server)
        for _ in range(4):
            time.sleep(0.8)
            s.sendall(b"CAPA\r\n")
            assert f.readline().startswith(b"+OK")
            while f.readline() != b".\r\n":
                pass
        s.close()
    finally:
        server.stop()


def test_connections_per_ip_are_limited(srv: Server) -> None:
    time.sleep(0.3)  # let the server see earlier tests' connections close
    socks, greetings = [], []
    for _ in range(13):
        s = socket.create_connection(("127.0.0.1", srv.ports["pop3"]), timeout=10)
        socks.append(s)
        greetings.append(s.makefile("rb").readline())
    assert all(g.startswith(b"+OK") for g in greetings[:12])
    assert greetings[12].startswith(b"-ERR [SYS/TEMP] Too many connections")
    for s in socks:
        s.close()
    time.sleep(0.3)


def test_commands_pipelined_behind_stls_are_discarded(srv: Server) -> None:
    s = socket.create_connection(("127.0.0.1", srv.ports["pop3"]), timeout=10)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"STLS\r\nCAPA\r\n")
    assert f.readline().startswith(b"+OK Begin TLS")
    t = client_context().wrap_socket(s)
    t.sendall(b"NOOP\r\n")
    g = t.makefile("rb")
    assert g.readline() == b"-ERR NOOP is not allowed in the AUTHORIZATION state.\r\n"
    t.close()


def test_plaintext_login_allowed_when_configured(tmp_path: Path) -> None:
    server = start_pop3_server(tmp_path / "plain", server={"allow_plaintext_auth": True})
    try:
        big = b"Subject: big\n\n" + b"".join(b".%07d\n" % i for i in range(250_000))  # 2 MB: streamed
        put(server, "u1@example.test", big)
        p = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
        assert "USER" in p.capa()
        p.user("u1@example.test")
        assert p.pass_(PASSWORD).startswith(b"+OK")
        _, lines, _ = p.retr(1)
        assert b"\n".join(lines) + b"\n" == big
        p.quit()
    finally:
        server.stop()
