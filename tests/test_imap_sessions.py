"""Concurrent sessions and IDLE: changes by one session (or SMTP delivery) reach the
others as untagged EXISTS / EXPUNGE / FETCH, never mid-FETCH/STORE/SEARCH (RFC 3501 §7.4.1)."""

from __future__ import annotations

import time

import imapclient
import pytest

from tests.support.server import Server
from tests.support.imap import PASSWORD, Accounts, Raw, deliver

MSG = b"From: a@remote.test\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
def user(accounts: Accounts) -> str:
    return accounts.take()


def two_sessions(server: Server, user: str, n: int) -> tuple[Raw, Raw]:
    a, b = Raw(server.ports["imap"]), Raw(server.ports["imap"])
    a.login(user)
    b.login(user)
    for _ in range(n):
        a.cmd(b"APPEND INBOX {%d+}\r\n" % len(MSG) + MSG)
    a.cmd(b"SELECT INBOX")
    b.cmd(b"SELECT INBOX")
    return a, b


def test_flag_change_in_one_session_shows_in_the_other_at_noop(imap_server: Server, user: str) -> None:
    a, b = two_sessions(imap_server, user, 2)
    a.cmd(b"STORE 2 +FLAGS.SILENT (\\Flagged)")
    untagged, _ = b.cmd(b"NOOP")
    assert untagged == [b"* 2 FETCH (UID 2 FLAGS (\\Flagged))"]
    assert b.cmd(b"NOOP")[0] == []  # reported once
    a.close()
    b.close()


def test_expunge_is_reported_at_noop_but_not_during_fetch(imap_server: Server, user: str) -> None:
    a, b = two_sessions(imap_server, user, 3)
    a.cmd(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    a.cmd(b"EXPUNGE")
    untagged, tagged = b.cmd(b"FETCH 1:3 (UID)")
    assert not any(b"EXPUNGE" in u for u in untagged)
    # message 3 is still number 3 for b during FETCH; number 2 is gone but keeps its place
    assert b"* 3 FETCH (UID 3)" in untagged
    assert b"OK" in tagged
    untagged, _ = b.cmd(b"NOOP")
    assert b"* 2 EXPUNGE" in untagged
    untagged, _ = b.cmd(b"FETCH 1:* (UID)")
    assert untagged == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 3)"]
    a.close()
    b.close()


def test_new_mail_is_reported_as_exists_at_the_next_command(imap_server: Server, user: str) -> None:
    a, b = two_sessions(imap_server, user, 1)
    deliver(imap_server, user, MSG)
    untagged, _ = b.cmd(b"NOOP")
    assert b"* 2 EXISTS" in untagged
    a.cmd(b"APPEND INBOX {%d+}\r\n" % len(MSG) + MSG)
    untagged, _ = b.cmd(b"UID FETCH 1:* (FLAGS)")
    assert b"* 3 EXISTS" in untagged
    a.close()
    b.close()


def test_idle_pushes_smtp_delivery_within_two_seconds(imap_server: Server, user: str) -> None:
    deliver(imap_server, user, MSG)
    c = imapclient.IMAPClient("127.0.0.1", port=imap_server.ports["imap"], ssl=False)
    c.login(user, PASSWORD)
    c.select_folder("INBOX")
    c.idle()
    start = time.time()
    deliver(imap_server, user, MSG)
    responses = c.idle_check(timeout=2.0)
    elapsed = time.time() - start
    c.idle_done()
    assert (2, b"EXISTS") in responses
    assert elapsed < 2.0
    c.logout()


def test_idle_pushes_expunge_and_flags_from_another_session(imap_server: Server, user: str) -> None:
    a, b = two_sessions(imap_server, user, 2)
    b.send(b"i1 IDLE\r\n")
    assert b.line().startswith(b"+ ")
    a.cmd(b"STORE 1 +FLAGS.SILENT (\\Seen)")
    assert b.line() == b"* 1 FETCH (UID 1 FLAGS (\\Seen))"
    a.cmd(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert b.line() == b"* 2 FETCH (UID 2 FLAGS (\\Deleted))"
    a.cmd(b"EXPUNGE")
    assert b.line() == b"* 2 EXPUNGE"
    b.send(b"DONE\r\n")
    assert b.response(b"i1")[1] == b"i1 OK IDLE terminated"
    a.close()
    b.close()


def test_idle_ends_with_bad_on_anything_but_done(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    r.cmd(b"SELECT INBOX")
    r.send(b"i1 IDLE\r\n")
    r.line()
    r.send(b"NOOP\r\n")
    assert r.response(b"i1")[1].startswith(b"i1 BAD")
    assert b"OK" in r.cmd(b"NOOP")[1]
    r.close()


def test_idle_in_authenticated_state(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    r.send(b"i1 IDLE\r\n")
    assert r.line().startswith(b"+")
    r.send(b"DONE\r\n")
    assert b"OK" in r.response(b"i1")[1]
    r.close()


def test_external_maildir_change_is_seen_by_sync(imap_server: Server, user: str) -> None:
    """Another Maildir tool drops a file into new/: the next command reports it."""
    a, _b = two_sessions(imap_server, user, 1)
    new = imap_server.maildir(user) / "new"
    (new / f"{int(time.time())}.M1P1Q1.othertool").write_bytes(b"Subject: external\n\nhi\n")
    time.sleep(0.05)
    untagged, _ = a.cmd(b"NOOP")
    assert b"* 2 EXISTS" in untagged
    untagged, _ = a.cmd(b"FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: external" in untagged[0]
    a.close()
    _b.close()
