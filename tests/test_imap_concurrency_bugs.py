"""Issue 17 §1: what several sessions on one mailbox must be told, one test per bug.

1. every change a session's view absorbs is reported (EXPUNGE / EXISTS), even when an
   arrival and an expunge leave the count unchanged (the view-level test is in
   tests/test_imap_view.py; the many-session model test in tests/test_imap_model.py);
2. EXAMINE does not claim \\Recent; 3. STATUS RECENT falls once a SELECT claimed;
4. UIDVALIDITY strictly increases per account, within one second and across restarts;
5. SEARCH FROM matches the address ENVELOPE shows, comments and all;
6. a new keyword is announced with FLAGS and PERMANENTFLAGS before any FETCH shows it,
   to this session and to the others;
7. DELETE / RENAME of a folder just opened logs no traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.imap import Accounts, Raw, imap_users, start_imap_server
from tests.support.server import Server

MSG = b"From: a@remote.test\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
def user(accounts: Accounts) -> str:
    return accounts.take()


def session(server: Server, user: str) -> Raw:
    r = Raw(server.ports["imap"])
    r.login(user)
    return r


def append(r: Raw, folder: bytes, msg: bytes = MSG) -> bytes:
    _, tagged = r.cmd(b"APPEND %s {%d+}\r\n" % (folder, len(msg)) + msg)
    assert b" OK " in tagged, tagged
    return tagged


def appenduid(tagged: bytes) -> tuple[int, int]:
    m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", tagged)
    assert m, tagged
    return int(m.group(1)), int(m.group(2))


def recent_of(untagged: list[bytes]) -> int:
    (n,) = [int(u.split()[1]) for u in untagged if u.endswith(b" RECENT")]
    return n


# -- 2, 3: \Recent ----------------------------------------------------------------------


def test_examine_shows_recent_but_does_not_claim_it(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    r.cmd(b"CREATE r")
    append(r, b"r")
    append(r, b"r")
    untagged, tagged = r.cmd(b"EXAMINE r")
    assert b"READ-ONLY" in tagged
    assert recent_of(untagged) == 2
    r.cmd(b"CLOSE")
    untagged, _ = r.cmd(b"SELECT r")
    assert recent_of(untagged) == 2  # EXAMINE left them \Recent (RFC 3501 6.3.2)
    untagged, _ = r.cmd(b"FETCH 1:* (FLAGS)")
    assert all(b"\\Recent" in u for u in untagged)
    r.cmd(b"CLOSE")
    untagged, _ = r.cmd(b"SELECT r")
    assert recent_of(untagged) == 0  # the read-write SELECT took them
    r.close()


def test_status_recent_falls_once_a_select_claimed(imap_server: Server, user: str) -> None:
    a, b = session(imap_server, user), session(imap_server, user)
    a.cmd(b"CREATE r")
    append(a, b"r")
    append(a, b"r")
    untagged, _ = b.cmd(b"STATUS r (MESSAGES RECENT)")
    assert untagged == [b'* STATUS "r" (MESSAGES 2 RECENT 2)']
    b.cmd(b"EXAMINE r")  # only looks
    b.cmd(b"CLOSE")
    assert b.cmd(b"STATUS r (RECENT)")[0] == [b'* STATUS "r" (RECENT 2)']
    a.cmd(b"SELECT r")
    a.cmd(b"UNSELECT")
    assert b.cmd(b"STATUS r (MESSAGES RECENT)")[0] == [b'* STATUS "r" (MESSAGES 2 RECENT 0)']
    assert a.cmd(b"STATUS r (RECENT)")[0] == [b'* STATUS "r" (RECENT 0)']
    a.close()
    b.close()


# -- 4: UIDVALIDITY ---------------------------------------------------------------------


def test_uidvalidity_of_a_folder_created_again_within_a_second_is_larger(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    seen = []
    for _ in range(3):
        assert b" OK " in r.cmd(b"CREATE u")[1]
        seen.append(appenduid(append(r, b"u")))
        assert b" OK " in r.cmd(b"DELETE u")[1]
    values = [v for v, _ in seen]
    assert values == sorted(set(values)), values  # strictly increasing
    assert [uid for _, uid in seen] == [1, 1, 1]
    r.close()


def test_folders_created_in_the_same_second_get_different_uidvalidity(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    for name in (b"s1", b"s2", b"s3"):
        r.send(b"c-%s CREATE %s\r\n" % (name, name))
    for name in (b"s1", b"s2", b"s3"):
        r.response(b"c-" + name)
    values = []
    for name in (b"s1", b"s2", b"s3"):
        untagged, _ = r.cmd(b"STATUS %s (UIDVALIDITY)" % name)
        values.append(int(re.search(rb"UIDVALIDITY (\d+)", untagged[0]).group(1)))
    assert len(set(values)) == 3, values
    # RENAME over a deleted folder's name: the name keeps no old UIDVALIDITY
    r.cmd(b"DELETE s1")
    r.cmd(b"RENAME s2 s1")
    untagged, _ = r.cmd(b"STATUS s1 (UIDVALIDITY)")
    assert int(re.search(rb"UIDVALIDITY (\d+)", untagged[0]).group(1)) == values[1]
    r.cmd(b"CREATE s2")
    untagged, _ = r.cmd(b"STATUS s2 (UIDVALIDITY)")
    assert int(re.search(rb"UIDVALIDITY (\d+)", untagged[0]).group(1)) > max(values)
    r.close()


def test_uidvalidity_keeps_increasing_across_a_restart(tmp_path: Path) -> None:
    user = "u1@example.test"
    srv = start_imap_server(tmp_path / "srv", users=imap_users(3))
    try:
        r = session(srv, user)
        r.cmd(b"CREATE a")
        first = appenduid(append(r, b"a"))[0]
        r.cmd(b"DELETE a")
        r.close()
        srv.stop()
        srv.start()
        r = session(srv, user)
        r.cmd(b"CREATE a")
        assert appenduid(append(r, b"a"))[0] > first
        r.close()
    finally:
        srv.stop()


# -- 5: SEARCH on addresses -------------------------------------------------------------


def test_search_from_matches_an_address_with_comments_as_envelope_shows_it(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    r.cmd(b"CREATE c")
    append(r, b"c", b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: \"Q. P\" <q@x.test>\r\nSubject: c\r\n\r\nbody\r\n")
    append(r, b"c", b"From: other@domain.org\r\nSubject: d\r\n\r\nbody\r\n")
    r.cmd(b"SELECT c")
    untagged, _ = r.cmd(b"FETCH 1 (ENVELOPE)")
    assert b'((NIL NIL "user-from" "domain.org"))' in untagged[0]
    # first from the files, then again from the folder's cache of search fields
    for _ in range(2):
        assert r.cmd(b"SEARCH FROM user-from@domain.org")[0] == [b"* SEARCH 1"]
        assert r.cmd(b"SEARCH FROM \"user-from@DOMAIN.org\"")[0] == [b"* SEARCH 1"]
        assert r.cmd(b"SEARCH FROM domain.org")[0] == [b"* SEARCH 1 2"]
        assert r.cmd(b"SEARCH TO \"Q. P <q@x.test>\"")[0] == [b"* SEARCH 1"]
        assert r.cmd(b"SEARCH FROM comment")[0] == [b"* SEARCH 1"]  # the raw text still counts
    r.close()


# -- 6: new keywords are announced ------------------------------------------------------


def _check_announced_before_fetch(untagged: list[bytes], keyword: bytes) -> None:
    flags = [i for i, u in enumerate(untagged) if u.startswith(b"* FLAGS (") and keyword in u]
    perm = [i for i, u in enumerate(untagged) if b"[PERMANENTFLAGS (" in u and keyword in u and b"\\*" in u]
    fetch = [i for i, u in enumerate(untagged) if b" FETCH " in u and keyword in u]
    assert flags and perm and fetch, untagged
    assert flags[0] < fetch[0] and perm[0] < fetch[0], untagged


def test_a_new_keyword_is_announced_before_any_fetch_shows_it(imap_server: Server, user: str) -> None:
    a, b = session(imap_server, user), session(imap_server, user)
    append(a, b"INBOX")
    append(a, b"INBOX")
    a.cmd(b"SELECT INBOX")
    b.cmd(b"SELECT INBOX")
    untagged, _ = a.cmd(b"STORE 1 +FLAGS ($hello)")
    _check_announced_before_fetch(untagged, b"$hello")
    assert untagged[-1].startswith(b"* 1 FETCH (FLAGS ($hello")
    # another session, at its next command (a FETCH here: before that FETCH's lines)
    untagged, _ = b.cmd(b"FETCH 1 (FLAGS)")
    _check_announced_before_fetch(untagged, b"$hello")
    # told once
    assert not any(u.startswith(b"* FLAGS") for u in b.cmd(b"NOOP")[0])
    # a keyword set through STORE .SILENT is announced too, without the FETCH
    untagged, _ = a.cmd(b"STORE 2 +FLAGS.SILENT ($bye)")
    assert any(u.startswith(b"* FLAGS (") and b"$bye" in u for u in untagged), untagged
    untagged, _ = b.cmd(b"NOOP")
    _check_announced_before_fetch(untagged, b"$bye")
    a.close()
    b.close()


def test_a_session_learns_of_flag_changes_made_while_its_own_store_ran(imap_server: Server, user: str) -> None:
    # Session a's STORE answers for its own change; a change b made meanwhile to another
    # message is still reported to a (not swallowed as a's own).
    a, b = session(imap_server, user), session(imap_server, user)
    for _ in range(2):
        append(a, b"INBOX")
    a.cmd(b"SELECT INBOX")
    b.cmd(b"SELECT INBOX")
    b.send(b"x1 STORE 2 +FLAGS.SILENT (\\Flagged)\r\n")
    untagged, _ = a.cmd(b"STORE 1 +FLAGS (\\Seen)")
    b.response(b"x1")
    untagged += a.cmd(b"NOOP")[0]
    assert any(u.startswith(b"* 1 FETCH (FLAGS (\\Seen") for u in untagged), untagged
    assert any(u.startswith(b"* 2 FETCH") and b"\\Flagged" in u for u in untagged), untagged
    a.close()
    b.close()


# -- 7: no traceback on DELETE / RENAME of a folder just opened ---------------------------


def _store_tracebacks(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CRITICAL" in line or "Traceback" in line or "Unhandled" in line]


def test_delete_and_rename_of_a_folder_just_opened_log_nothing_critical(tmp_path: Path) -> None:
    user = "u1@example.test"
    srv = start_imap_server(tmp_path / "srv", users=imap_users(3))
    try:
        r = session(srv, user)
        for i in range(30):
            # pipelined, so that the index save of the folder STATUS opened runs
            # while DELETE or RENAME moves it
            name = b"t%d" % i
            r.send(b"a CREATE %s\r\nb STATUS %s (MESSAGES)\r\nc APPEND %s {%d+}\r\n%s\r\n" % (name, name, name, len(MSG), MSG))
            r.send(b"d STATUS %s (MESSAGES)\r\n" % name)
            r.send(b"e DELETE %s\r\n" % name if i % 2 else b"e RENAME %s %s-moved\r\n" % (name, name))
            for tag in (b"a", b"b", b"c", b"d", b"e"):
                _, tagged = r.response(tag)
                assert b" OK " in tagged, tagged
        r.close()
    finally:
        srv.stop()
    assert _store_tracebacks(srv.log()) == []
