"""CONDSTORE (RFC 7162 section 3.1) end to end, over real sockets.

Every change to a message gets a modseq; a client that turned CONDSTORE on sees them
in FETCH (MODSEQ), asks for changes only (CHANGEDSINCE), stores only over what it has
seen (UNCHANGEDSINCE, [MODIFIED]), searches by them (SEARCH MODSEQ) and learns the
mailbox's HIGHESTMODSEQ from SELECT and STATUS.
"""

from __future__ import annotations

import re

import pytest

from tests.support.imap import Accounts, login, message, ok
from tests.support.imap import raw_session as session, response_code as code
from tests.support.server import Server



@pytest.fixture
def user(accounts: Accounts) -> str:
    u = accounts.take()
    m = login(accounts.server, u)
    for n in range(1, 6):
        assert m.append("INBOX", None, None, message(n))[0] == "OK"
    m.logout()
    return u





def modseqs(lines: list[bytes]) -> dict[int, int]:
    """UID -> MODSEQ from FETCH responses."""
    out = {}
    for line in lines:
        u = re.search(rb"UID (\d+)", line)
        m = re.search(rb"MODSEQ \((\d+)\)", line)
        if u and m:
            out[int(u.group(1))] = int(m.group(1))
    return out


# -- 3.1: advertising and enabling ----------------------------------------------------


def test_condstore_is_advertised_and_enabled(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    caps = ok(r, b"CAPABILITY")[0].split()
    assert b"CONDSTORE" in caps and b"QRESYNC" in caps
    assert ok(r, b"ENABLE CONDSTORE") == [b"* ENABLED CONDSTORE"]
    assert ok(r, b"ENABLE CONDSTORE") == [b"* ENABLED"]  # RFC 5161: only what is newly on


def test_select_condstore_reports_highestmodseq_plain_select_does_not(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    assert not any(b"HIGHESTMODSEQ" in line for line in ok(r, b"SELECT INBOX"))
    lines, tagged = r.cmd(b"SELECT INBOX (CONDSTORE)")
    assert b"OK [READ-WRITE]" in tagged
    assert code(lines, b"HIGHESTMODSEQ") >= 1
    assert code(ok(r, b"EXAMINE INBOX"), b"HIGHESTMODSEQ") >= 1  # stays on for the session


def test_status_highestmodseq_agrees_with_select_and_grows(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    (st,) = ok(r, b"STATUS INBOX (HIGHESTMODSEQ MESSAGES)")
    before = int(re.search(rb"HIGHESTMODSEQ (\d+)", st).group(1))
    assert code(ok(r, b"SELECT INBOX"), b"HIGHESTMODSEQ") == before  # STATUS enabled CONDSTORE
    ok(r, b"STORE 1 +FLAGS (\\Seen)")
    (st,) = ok(r, b"STATUS INBOX (HIGHESTMODSEQ)")
    assert int(re.search(rb"HIGHESTMODSEQ (\d+)", st).group(1)) > before


# -- 3.1.4: FETCH MODSEQ and CHANGEDSINCE ---------------------------------------------


def test_fetch_modseq_and_changedsince(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    ok(r, b"SELECT INBOX")
    first = modseqs(ok(r, b"UID FETCH 1:* (MODSEQ)"))
    assert sorted(first) == [1, 2, 3, 4, 5]
    high = max(first.values())
    stored = ok(r, b"UID STORE 2,4 +FLAGS (\\Flagged)")
    # CONDSTORE is on (FETCH MODSEQ enabled it): STORE's FETCH carry MODSEQ.
    after = modseqs(stored)
    assert sorted(after) == [2, 4] and all(m > high for m in after.values())
    changed = ok(r, b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % high)
    assert modseqs(changed) == after  # only what changed, and MODSEQ though not asked for
    assert all(b"\\Flagged" in line for line in changed)
    assert ok(r, b"FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % max(after.values())) == []


def test_bad_fetch_and_store_modifiers_are_bad(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    ok(r, b"SELECT INBOX")
    assert b"BAD" in r.cmd(b"FETCH 1 (FLAGS) (CHANGEDSINCE x)")[1]
    assert b"BAD" in r.cmd(b"FETCH 1 (FLAGS) (NOSUCH 1)")[1]
    assert b"BAD" in r.cmd(b"STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)")[1]
    assert b"BAD" in r.cmd(b"UID FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)")[1]  # QRESYNC not enabled
    assert b"BAD" in r.cmd(b"SELECT INBOX (NOSUCH)")[1]


# -- 3.1.3: STORE UNCHANGEDSINCE --------------------------------------------------------


def test_conditional_store_changes_only_unchanged_messages(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    high = code(ok(r, b"SELECT INBOX (CONDSTORE)"), b"HIGHESTMODSEQ")
    other = session(imap_server, user)
    ok(other, b"SELECT INBOX")
    ok(other, b"STORE 3 +FLAGS ($Work)")  # another client changes message 3 meanwhile
    lines, tagged = r.cmd(b"STORE 1:4 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % high)
    assert b"OK [MODIFIED 3]" in tagged, tagged
    fetched = [line for line in lines if b"FETCH" in line]
    stored = [line for line in fetched if b"\\Seen" in line]
    assert len(stored) == 3 and all(b"MODSEQ" in line for line in stored)
    flags = {int(m.group(1)): m.group(2) for m in (re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", x)
                                                   for x in ok(r, b"UID FETCH 1:4 (FLAGS)")) if m}
    assert b"\\Seen" not in flags[3] and b"$Work" in flags[3]
    assert all(b"\\Seen" in flags[u] for u in (1, 2, 4))


def test_uid_store_unchangedsince_names_uids_and_silent_still_reports_modseq(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    ok(r, b"SELECT INBOX (CONDSTORE)")
    ok(r, b"UID STORE 5 +FLAGS (\\Answered)")
    m5 = modseqs(ok(r, b"UID FETCH 5 (MODSEQ)"))[5]
    lines, tagged = r.cmd(b"UID STORE 4:5 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted)" % (m5 - 1))
    assert b"OK [MODIFIED 5]" in tagged
    # .SILENT: no FLAGS, but the new MODSEQ of what changed (RFC 7162 3.1.3).
    assert len(lines) == 1 and re.match(rb"\* 4 FETCH \(UID 4 MODSEQ \(\d+\)\)$", lines[0]), lines
    # UNCHANGEDSINCE 0 fails for every message (no modseq is 0).
    _, tagged = r.cmd(b"STORE 1,2 (UNCHANGEDSINCE 0) +FLAGS (\\Draft)")
    assert b"OK [MODIFIED 1:2]" in tagged


# -- 3.1.5: SEARCH MODSEQ --------------------------------------------------------------


def test_search_modseq_finds_changed_messages_and_says_their_highest(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    ok(r, b"SELECT INBOX")
    high = max(modseqs(ok(r, b"UID FETCH 1:* (MODSEQ)")).values())
    ok(r, b"STORE 2 +FLAGS (\\Seen)")
    ok(r, b"STORE 5 +FLAGS (\\Seen)")
    top = max(modseqs(ok(r, b"UID FETCH 1:* (MODSEQ)")).values())
    assert ok(r, b"SEARCH MODSEQ %d" % (high + 1)) == [b"* SEARCH 2 5 (MODSEQ %d)" % top]
    assert ok(r, b'UID SEARCH MODSEQ "/flags/\\\\seen" all %d' % (high + 1)) == [b"* SEARCH 2 5 (MODSEQ %d)" % top]
    assert ok(r, b"SEARCH MODSEQ %d" % (top + 1)) == [b"* SEARCH"]
    (es,) = ok(r, b"SEARCH RETURN (ALL) MODSEQ %d" % (high + 1))
    assert es.endswith(b"ALL 2,5 MODSEQ %d" % top), es


# -- 3.1.2 and 3.1.11: others' changes, EXPUNGE -----------------------------------------


def test_another_sessions_flag_change_arrives_with_its_modseq(imap_server: Server, user: str) -> None:
    a = session(imap_server, user)
    high = code(ok(a, b"SELECT INBOX (CONDSTORE)"), b"HIGHESTMODSEQ")
    b = session(imap_server, user)
    ok(b, b"SELECT INBOX")
    ok(b, b"STORE 3 +FLAGS (\\Flagged)")
    (line,) = ok(a, b"NOOP")
    m = re.match(rb"\* 3 FETCH \(UID 3 FLAGS \(\\Flagged( \\Recent)?\) MODSEQ \((\d+)\)\)$", line)
    assert m and int(m.group(2)) > high, line


def test_expunge_ends_with_the_new_highestmodseq(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    high = code(ok(r, b"SELECT INBOX (CONDSTORE)"), b"HIGHESTMODSEQ")
    ok(r, b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    lines, tagged = r.cmd(b"EXPUNGE")
    assert lines == [b"* 2 EXPUNGE"]
    assert int(re.search(rb"OK \[HIGHESTMODSEQ (\d+)\]", tagged).group(1)) > high + 1
