"""IMAP bad input and limits: every mistake gets a precise BAD/NO, never a traceback;
oversize literals are refused before they are read; timeouts, per-IP limit, auth delay."""

from __future__ import annotations

import os
import time
from typing import Iterator

import pytest

from tests.support.server import Server
from tests.support.imap import Raw, imap_tracebacks, start_imap_server
from tests.support.waiting import wait_for

LIMIT = 20000


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_imap_server(
        tmp_path_factory.mktemp("imaplim") / "srv",
        imap={"append_limit": LIMIT, "max_line_length": 2000, "login_timeout": 2, "idle_timeout": 3,
              "max_connections_per_ip": 12, "max_errors": 6},
        limits={"auth_delay_after": 1, "auth_delay": 0.6, "auth_ip_delay_after": 100, "auth_ip_refuse_after": 1000},
    )
    try:
        yield s
    finally:
        s.stop()
        assert imap_tracebacks(s.log()) == []


_n = iter(range(1, 60))


@pytest.fixture
def user() -> str:
    return f"u{next(_n)}@example.test"


def session(srv: Server, user: str, select: bool = True) -> Raw:
    r = Raw(srv.ports["imap"])
    r.login(user)
    if select:
        r.cmd(b"APPEND INBOX {6+}\r\nx: y\r\n")
        r.cmd(b"SELECT INBOX")
    return r


def test_unknown_command_is_bad(srv: Server, user: str) -> None:
    r = Raw(srv.ports["imap"])
    assert r.cmd(b"FROBNICATE")[1] == b"t1 BAD Unknown command FROBNICATE"
    r.close()


def test_line_without_tag_is_untagged_bad(srv: Server) -> None:
    r = Raw(srv.ports["imap"])
    r.send(b"\r\n")
    assert r.line().startswith(b"* BAD")
    r.send(b"+x\r\n")
    assert r.line().startswith(b"* BAD")
    r.close()


def test_command_in_the_wrong_state_is_bad(srv: Server, user: str) -> None:
    r = Raw(srv.ports["imap"])
    assert r.cmd(b"SELECT INBOX")[1].startswith(b"t1 BAD")
    r.login(user)
    assert r.cmd(b"FETCH 1 FLAGS")[1].startswith(b"t3 BAD")
    assert r.cmd(b"LOGIN a b")[1].startswith(b"t4 BAD")
    r.close()


@pytest.mark.parametrize("cmd", [b"FETCH 0 FLAGS", b"FETCH 1:x FLAGS", b"FETCH 5 FLAGS", b"STORE 3:* +FLAGS (\\Seen)",
                                 b"FETCH 1 (FLAGS", b"FETCH 1 BODY[BOGUS]", b"STORE 1 +FLAGS (\\Bogus)",
                                 b"SEARCH FROB", b"COPY 1", b"UID EXPUNGE", b"FETCH 1 BODY[]<0.0>"])
def test_malformed_arguments_are_bad(srv: Server, user: str, cmd: bytes) -> None:
    r = session(srv, user)
    _, tagged = r.cmd(cmd)
    assert tagged.startswith(b"t%d BAD" % r.n), tagged
    assert r.cmd(b"NOOP")[1].endswith(b"OK NOOP completed")
    r.close()


def test_uid_sets_may_name_missing_uids(srv: Server, user: str) -> None:
    r = session(srv, user)
    untagged, tagged = r.cmd(b"UID FETCH 5:9 FLAGS")
    assert untagged == [] and b"OK" in tagged
    r.close()


def test_over_long_command_line_is_bad_and_the_session_goes_on(srv: Server, user: str) -> None:
    r = session(srv, user)
    r.send(b"x1 FETCH " + b"1," * 1500 + b"1 FLAGS\r\n")
    assert r.line().startswith(b"x1 BAD")
    assert r.cmd(b"NOOP")[1].endswith(b"OK NOOP completed")
    r.close()


def test_oversize_append_is_refused_before_the_literal_is_read(srv: Server, user: str) -> None:
    r = session(srv, user, select=False)
    r.send(b"a1 APPEND INBOX {%d}\r\n" % (LIMIT + 1))
    assert r.line() == b"a1 NO [TOOBIG] Message larger than APPENDLIMIT"
    assert r.cmd(b"NOOP")[1].endswith(b"OK NOOP completed")
    r.close()


def test_oversize_literal_plus_is_discarded_and_refused(srv: Server, user: str) -> None:
    r = session(srv, user, select=False)
    r.send(b"a1 APPEND INBOX {%d+}\r\n" % (LIMIT + 1) + b"x" * (LIMIT + 1) + b"\r\n")
    assert r.line() == b"a1 NO [TOOBIG] Message larger than APPENDLIMIT"
    assert r.cmd(b"NOOP")[1].endswith(b"OK NOOP completed")
    r.close()


def test_appendlimit_is_advertised(srv: Server, user: str) -> None:
    r = session(srv, user, select=False)
    assert b"APPENDLIMIT=%d" % LIMIT in r.cmd(b"CAPABILITY")[0][0]
    r.close()


def test_client_vanishing_mid_append_leaves_nothing(srv: Server, user: str) -> None:
    r = session(srv, user, select=False)
    r.send(b"a1 APPEND INBOX {10000}\r\n")
    assert r.line().startswith(b"+")
    r.send(b"Subject: half\r\n" + b"y" * 4000)
    r.close()
    time.sleep(0.3)
    box = srv.maildir(user)
    for sub in ("new", "cur", "tmp"):
        assert os.listdir(box / sub) == [], sub
    r2 = session(srv, user, select=False)
    assert b"MESSAGES 0" in r2.cmd(b"STATUS INBOX (MESSAGES)")[0][0]
    r2.close()


def test_big_literal_before_login_closes_the_connection(srv: Server) -> None:
    r = Raw(srv.ports["imap"])
    r.send(b"a LOGIN {100000+}\r\n")
    assert r.line().startswith(b"a BAD")
    assert r.line().startswith(b"* BYE")
    assert r.closed_by_server()


def test_too_many_errors_close_the_connection(srv: Server) -> None:
    r = Raw(srv.ports["imap"])
    for _ in range(6):
        r.send(b"x BOGUS\r\n")
    lines = [r.line() for _ in range(7)]
    assert lines[-1].startswith(b"* BYE")
    assert r.closed_by_server()


def test_per_ip_connection_limit(srv: Server) -> None:
    conns = [Raw(srv.ports["imap"]) for _ in range(12)]
    extra = Raw(srv.ports["imap"])
    assert extra.greeting.startswith(b"* BYE")
    for c in conns:
        c.close()
    extra.close()
    time.sleep(0.2)
    again = Raw(srv.ports["imap"])
    assert again.greeting.startswith(b"* OK")
    again.close()


def test_login_timeout_closes_an_idle_unauthenticated_connection(srv: Server) -> None:
    r = Raw(srv.ports["imap"])
    t = time.time()
    assert r.line().startswith(b"* BYE")
    assert 1.5 < time.time() - t < 4
    r.close()


def test_idle_timeout_after_login(srv: Server, user: str) -> None:
    r = session(srv, user, select=False)
    t = time.time()
    assert r.line().startswith(b"* BYE")
    assert 2.5 < time.time() - t < 5
    r.close()


def test_auth_failures_slow_down(srv: Server, user: str) -> None:
    r = Raw(srv.ports["imap"])
    timings = []
    for _ in range(3):
        t = time.time()
        _, tagged = r.cmd(b"LOGIN " + user.encode() + b" wrong-password")
        timings.append(time.time() - t)
        assert b"NO [AUTHENTICATIONFAILED]" in tagged
    assert timings[-1] >= 0.5 > timings[0]
    r.close()


def test_greeting_carries_capabilities(srv: Server) -> None:
    r = Raw(srv.ports["imap"])
    assert r.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    r.close()


def test_no_traceback_in_the_log(srv: Server) -> None:
    assert wait_for(lambda: "imap" in srv.log())
    assert imap_tracebacks(srv.log()) == []



def test_server_shutdown_says_bye_and_keeps_the_index(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = start_imap_server(tmp_path / "srv")
    try:
        r = Raw(s.ports["imap"])
        r.login("u1@example.test")
        r.cmd(b"APPEND INBOX {6+}\r\nx: y\r\n")
        r.cmd(b"SELECT INBOX")
        s.stop()
        assert r.line() == b"* BYE Server shutting down"
        assert r.closed_by_server()
        assert (s.maildir("u1@example.test") / "mailsuite-index").exists()
    finally:
        s.stop()

