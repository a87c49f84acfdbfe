"""QRESYNC (RFC 7162 section 3.2) end to end, over real sockets.

A client that kept a mailbox's UIDVALIDITY and HIGHESTMODSEQ comes back and, in its
SELECT, learns exactly what vanished (``VANISHED (EARLIER)``) and which messages
changed (FETCH with MODSEQ): across sessions, across a server restart with the index
deleted, and across two worker processes.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.imap import Accounts, Raw, login, message, ok, start_imap_server
from tests.support.imap import raw_session as session, response_code as code
from tests.support.server import Server
from tests.support.waiting import wait_for



def fill(server: Server, user: str, n: int = 6) -> None:
    m = login(server, user)
    for i in range(1, n + 1):
        assert m.append("INBOX", None, None, message(i))[0] == "OK"
    m.logout()


@pytest.fixture
def user(accounts: Accounts) -> str:
    u = accounts.take()
    fill(accounts.server, u)
    return u





def qresync_session(server: Server, user: str) -> Raw:
    r = session(server, user)
    assert ok(r, b"ENABLE QRESYNC") == [b"* ENABLED QRESYNC"]
    return r


def remember(server: Server, user: str) -> tuple[int, int]:
    """What an offline client keeps: (UIDVALIDITY, HIGHESTMODSEQ)."""
    r = qresync_session(server, user)
    lines = ok(r, b"SELECT INBOX")
    state = code(lines, b"UIDVALIDITY"), code(lines, b"HIGHESTMODSEQ")
    ok(r, b"LOGOUT")
    return state


def resync_lines(lines: list[bytes]) -> tuple[list[bytes], dict[int, bytes]]:
    """The VANISHED (EARLIER) lines and UID -> FLAGS of the FETCH lines of a SELECT."""
    vanished = [line for line in lines if line.startswith(b"* VANISHED")]
    fetched = {}
    for line in lines:
        m = re.match(rb"\* \d+ FETCH \(UID (\d+) FLAGS \(([^)]*)\) MODSEQ \(\d+\)\)$", line)
        if m:
            fetched[int(m.group(1))] = m.group(2)
    return vanished, fetched


# -- 3.2.3: enabling ------------------------------------------------------------------------


def test_select_qresync_needs_enable_qresync(imap_server: Server, user: str) -> None:
    r = session(imap_server, user)
    assert b"BAD" in r.cmd(b"SELECT INBOX (QRESYNC (1 1))")[1]
    assert ok(r, b"ENABLE QRESYNC CONDSTORE") == [b"* ENABLED CONDSTORE QRESYNC"]
    assert b"BAD" in r.cmd(b"SELECT INBOX (QRESYNC (1))")[1]
    assert b"BAD" in r.cmd(b"SELECT INBOX (QRESYNC (0 1))")[1]
    assert code(ok(r, b"SELECT INBOX (QRESYNC (1 1))"), b"HIGHESTMODSEQ") >= 1


# -- 3.2.5: SELECT with QRESYNC after a reconnect --------------------------------------------


def test_reconnecting_client_gets_exactly_the_changes_and_vanished(imap_server: Server, user: str) -> None:
    uidvalidity, highest = remember(imap_server, user)
    # Another client works on the mailbox while ours is away.
    other = session(imap_server, user)
    ok(other, b"SELECT INBOX")
    ok(other, b"UID STORE 2 +FLAGS (\\Seen)")
    ok(other, b"UID STORE 4 +FLAGS ($Work)")
    ok(other, b"UID STORE 3,5 +FLAGS.SILENT (\\Deleted)")
    ok(other, b"UID EXPUNGE 3,5")
    ok(other, b"LOGOUT")
    r = qresync_session(imap_server, user)
    lines = ok(r, b"SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity, highest))
    vanished, fetched = resync_lines(lines)
    assert vanished == [b"* VANISHED (EARLIER) 3,5"]
    assert set(fetched) == {2, 4}
    assert b"\\Seen" in fetched[2] and b"$Work" in fetched[4]
    assert code(lines, b"HIGHESTMODSEQ") > highest
    # VANISHED (EARLIER) comes before the FETCH responses (RFC 7162 3.2.5.1 example).
    first_fetch = min(i for i, line in enumerate(lines) if b" FETCH " in line)
    assert lines.index(vanished[0]) < first_fetch
    # Nothing changed since: nothing to tell.
    again = qresync_session(imap_server, user)
    lines2 = ok(again, b"SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity, code(lines, b"HIGHESTMODSEQ")))
    assert resync_lines(lines2) == ([], {})


def test_known_uids_restrict_the_answer(imap_server: Server, user: str) -> None:
    uidvalidity, highest = remember(imap_server, user)
    other = session(imap_server, user)
    ok(other, b"SELECT INBOX")
    ok(other, b"UID STORE 1,6 +FLAGS (\\Flagged)")
    ok(other, b"UID STORE 2,5 +FLAGS.SILENT (\\Deleted)")
    ok(other, b"EXPUNGE")
    r = qresync_session(imap_server, user)
    lines = ok(r, b"SELECT INBOX (QRESYNC (%d %d 1:3 (1:3 1:3)))" % (uidvalidity, highest))
    vanished, fetched = resync_lines(lines)
    assert vanished == [b"* VANISHED (EARLIER) 2"] and set(fetched) == {1}


def test_a_new_uidvalidity_means_no_resync_data(imap_server: Server, user: str) -> None:
    uidvalidity, highest = remember(imap_server, user)
    r = qresync_session(imap_server, user)
    lines = ok(r, b"SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity + 1, 1))
    assert resync_lines(lines) == ([], {})


def test_new_messages_come_as_fetch_with_their_flags(imap_server: Server, user: str) -> None:
    uidvalidity, highest = remember(imap_server, user)
    m = login(imap_server, user)
    assert m.append("INBOX", "(\\Answered)", None, message(7))[0] == "OK"
    m.logout()
    r = qresync_session(imap_server, user)
    lines = ok(r, b"SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity, highest))
    vanished, fetched = resync_lines(lines)
    assert vanished == [] and list(fetched) == [7] and b"\\Answered" in fetched[7]


# -- 3.2.6 / 3.2.7: UID FETCH (CHANGEDSINCE n VANISHED), VANISHED instead of EXPUNGE ----------


def test_uid_fetch_changedsince_vanished(imap_server: Server, user: str) -> None:
    r = qresync_session(imap_server, user)
    high = code(ok(r, b"SELECT INBOX"), b"HIGHESTMODSEQ")
    other = session(imap_server, user)
    ok(other, b"SELECT INBOX")
    ok(other, b"UID STORE 1 +FLAGS (\\Seen)")
    ok(other, b"UID STORE 4:6 +FLAGS.SILENT (\\Deleted)")
    ok(other, b"UID EXPUNGE 4")
    ok(other, b"UID EXPUNGE 6")
    # Our session has not been told of the expunges yet (FETCH holds them back), so
    # VANISHED (EARLIER) names none it still shows; NOOP then tells them as VANISHED.
    lines = ok(r, b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % high)
    assert not any(line.startswith(b"* VANISHED (EARLIER)") for line in lines)
    assert ok(r, b"NOOP")[0] == b"* VANISHED 4,6"
    fresh = qresync_session(imap_server, user)
    ok(fresh, b"SELECT INBOX")
    lines = ok(fresh, b"UID FETCH 1:5 (FLAGS) (CHANGEDSINCE %d VANISHED)" % high)
    assert lines[0] == b"* VANISHED (EARLIER) 4"
    fetched = [line for line in lines[1:]]
    assert [re.search(rb"UID (\d+)", x).group(1) for x in fetched] == [b"1", b"5"]
    assert all(b"MODSEQ" in x for x in fetched)
    assert b"BAD" in fresh.cmd(b"FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")[1]  # UID FETCH only
    assert b"BAD" in fresh.cmd(b"UID FETCH 1:* (FLAGS) (VANISHED)")[1]  # needs CHANGEDSINCE


def test_expunges_are_vanished_responses_once_qresync_is_on(imap_server: Server, user: str) -> None:
    r = qresync_session(imap_server, user)
    ok(r, b"SELECT INBOX")
    ok(r, b"STORE 1,2,3 +FLAGS.SILENT (\\Deleted)")
    lines, tagged = r.cmd(b"EXPUNGE")
    assert lines == [b"* VANISHED 1:3"] and b"[HIGHESTMODSEQ " in tagged
    other = session(imap_server, user)
    ok(other, b"SELECT INBOX")
    ok(other, b"UID STORE 5 +FLAGS.SILENT (\\Deleted)")
    ok(other, b"UID EXPUNGE 5")
    assert ok(r, b"NOOP") == [b"* VANISHED 5"]
    assert ok(r, b"UID SEARCH ALL") == [b"* SEARCH 4 6"]


def test_select_while_selected_says_closed_first(imap_server: Server, user: str) -> None:
    r = qresync_session(imap_server, user)
    ok(r, b"SELECT INBOX")
    lines = ok(r, b"EXAMINE INBOX")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed"


# -- durability: restart with the index deleted; a second worker process ------------------------


def test_deleting_the_index_does_not_take_highestmodseq_back(tmp_path: Path) -> None:
    srv = start_imap_server(tmp_path / "srv")
    user = "u1@example.test"
    try:
        fill(srv, user, 4)
        r = qresync_session(srv, user)
        ok(r, b"SELECT INBOX")
        ok(r, b"UID STORE 2 +FLAGS (\\Seen)")
        ok(r, b"UID STORE 3 +FLAGS (\\Flagged)")
        lines = ok(r, b"SELECT INBOX")
        uidvalidity, highest = code(lines, b"UIDVALIDITY"), code(lines, b"HIGHESTMODSEQ")
        ok(r, b"LOGOUT")
        srv.stop()
        index = srv.maildir(user) / "mailsuite-index"
        if index.exists():
            index.unlink()
        srv.start()
        r = qresync_session(srv, user)
        lines = ok(r, b"SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity, highest))
        assert code(lines, b"UIDVALIDITY") == uidvalidity
        assert code(lines, b"HIGHESTMODSEQ") >= highest
        assert resync_lines(lines) == ([], {})  # the rebuilt index kept every modseq
        ok(r, b"UID STORE 4 +FLAGS (\\Seen)")
        lines = ok(r, b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % highest)
        assert [re.search(rb"UID (\d+)", x).group(1) for x in lines] == [b"4"]
    finally:
        srv.stop()


def _worker_of(conn_port: int, server_port: int) -> int:
    """The pid of the process serving our connection from local port ``conn_port``."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{server_port} and dport = :{conn_port} )"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"pid=(\d+)", out)
    assert m, out
    return int(m.group(1))


def test_a_second_worker_process_changing_flags_is_seen_with_a_higher_modseq(tmp_path: Path) -> None:
    srv = start_imap_server(tmp_path / "srv", server={"processes": 2})
    user = "u1@example.test"
    try:
        wait_for(lambda: len(set(re.findall(r"worker (\d+) serving", srv.log()))) == 2, timeout=60,
                 what="workers serving", server=srv)
        fill(srv, user, 3)
        # Connections until we hold one on each worker.
        by_worker: dict[int, Raw] = {}
        spare = []
        for _ in range(40):
            r = qresync_session(srv, user)
            pid = _worker_of(r.sock.getsockname()[1], srv.ports["imap"])
            if pid in by_worker:
                spare.append(r)
            else:
                by_worker[pid] = r
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, "every connection went to one worker"
        a, b = by_worker.values()
        high = code(ok(a, b"SELECT INBOX"), b"HIGHESTMODSEQ")
        assert code(ok(b, b"SELECT INBOX"), b"HIGHESTMODSEQ") == high  # one numbering for both
        ok(b, b"UID STORE 2 +FLAGS (\\Flagged)")
        ok(b, b"UID STORE 3 +FLAGS.SILENT (\\Deleted)")
        ok(b, b"UID EXPUNGE 3")
        news = ok(a, b"NOOP")
        flagged = [line for line in news if b"FETCH" in line]
        assert len(flagged) == 1 and b"UID 2 " in flagged[0] and b"\\Flagged" in flagged[0]
        modseq = int(re.search(rb"MODSEQ \((\d+)\)", flagged[0]).group(1))
        assert modseq > high
        assert b"* VANISHED 3" in news
        # Both workers now say the same HIGHESTMODSEQ, and it covers the expunge.
        (st_a,) = ok(a, b"STATUS INBOX (HIGHESTMODSEQ)")
        (st_b,) = ok(b, b"STATUS INBOX (HIGHESTMODSEQ)")
        assert st_a == st_b and int(re.search(rb"HIGHESTMODSEQ (\d+)", st_a).group(1)) > modseq
        for r in [a, b] + spare:
            r.close()
    finally:
        srv.stop()


def test_expunges_older_than_the_record_vanish_as_every_uid_not_here(imap_server: Server, user: str) -> None:
    # RFC 7162 3.2.5.2: when the server no longer knows which expunges came after the
    # client's modseq, VANISHED (EARLIER) may name every UID of the client's set that
    # is not in the mailbox.  Simulate a compaction that forgot the expunges: the log
    # keeps its other lines and its floor rises to the newest modseq.
    uidvalidity, highest = remember(imap_server, user)
    other = session(imap_server, user)
    ok(other, b"SELECT INBOX")
    ok(other, b"UID STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    ok(other, b"EXPUNGE")
    ok(other, b"LOGOUT")
    log = imap_server.maildir(user) / "mailsuite-modseq"
    lines = log.read_text().splitlines()
    head, body = lines[0].split(), [x for x in lines[1:] if x.split()[1] != "-"]
    top = max(int(x.split()[0]) for x in lines[1:])
    tmp = log.with_name("modseq.tmp")
    tmp.write_text(" ".join(head[:3] + [f"F{top}"]) + "\n" + "".join(x + "\n" for x in body))
    tmp.rename(log)
    r = qresync_session(imap_server, user)
    lines = ok(r, b"SELECT INBOX (QRESYNC (%d %d 1:6))" % (uidvalidity, highest))
    vanished, _ = resync_lines(lines)
    assert vanished == [b"* VANISHED (EARLIER) 2,4"]
