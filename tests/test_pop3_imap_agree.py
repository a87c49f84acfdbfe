"""IMAP and POP3 on the same account agree: same messages (UIDL from the store's UIDs),
POP3 RETR shows as \\Seen over IMAP, IMAP flag changes and expunges show in POP3, and
POP3 deletions show in an open IMAP session.  Checked through the store too."""

from __future__ import annotations

import imaplib
import importlib.util
import re
import time
from typing import Iterator

import pytest

from mailsuite.store.folder import FolderDisk
from tests.support.server import Server
from tests.support.pop3 import PASSWORD, fresh_user, login, put, start_pop3_server
from tests.support.tls import client_context

HAVE_IMAP = importlib.util.find_spec("mailsuite.imap.service") is not None
MSG = b"Subject: agree %d\n\nbody\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_pop3_server(tmp_path_factory.mktemp("agree"))
    try:
        yield server
    finally:
        server.stop()


def store_view(server: Server, user: str) -> dict[int, frozenset[str]]:
    disk = FolderDisk(server.maildir(user))
    disk.open()
    disk.scan()
    return {uid: r.flags for uid, r in disk.records.items()}


def pop3_uids(server: Server, user: str) -> tuple[list[int], int]:
    p = login(server, user)
    _, lines, _ = p.uidl()
    p.quit()
    ids = [l.split()[1].decode() for l in lines]
    validity = {int(i[8:], 16) for i in ids}
    assert len(validity) <= 1
    return [int(i[:8], 16) for i in ids], (validity.pop() if validity else 0)


def imap(server: Server, user: str) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=client_context(), timeout=20)
    c.login(user, PASSWORD)
    return c


def imap_flags(c: imaplib.IMAP4_SSL) -> dict[int, set[str]]:
    typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
    out = {}
    for item in data:
        if not item:
            continue
        text = item.decode() if isinstance(item, bytes) else item[0].decode()
        m = re.search(r"UID (\d+)", text)
        f = re.search(r"FLAGS \(([^)]*)\)", text)
        if m and f:
            out[int(m.group(1))] = set(f.group(1).split()) - {"\\Recent"}
    return out


def test_uidl_comes_from_the_store_uids(srv: Server) -> None:
    user = fresh_user()
    for i in range(3):
        put(srv, user, MSG % i)
    uids, validity = pop3_uids(srv, user)
    disk = FolderDisk(srv.maildir(user))
    disk.open()
    assert uids == sorted(disk.records) and validity == disk.uidlist.uidvalidity


def test_pop3_retr_and_dele_show_in_the_store(srv: Server) -> None:
    user = fresh_user()
    for i in range(3):
        put(srv, user, MSG % i)
    p = login(srv, user)
    p.retr(1)
    p.dele(2)
    p.quit()
    view = store_view(srv, user)
    assert sorted(view) == [1, 3] and view[1] == {"\\Seen"} and view[3] == frozenset()


@pytest.mark.skipif(not HAVE_IMAP, reason="IMAP server not built")
def test_imap_sees_pop3_changes_and_pop3_sees_imap_changes(srv: Server) -> None:
    user = fresh_user()
    for i in range(4):
        put(srv, user, MSG % i)
    c = imap(srv, user)
    typ, data = c.select("INBOX")
    assert typ == "OK" and int(data[0]) == 4
    validity = int(c.response("UIDVALIDITY")[1][0])
    # IMAP: flag one, expunge another.
    c.uid("STORE", "2", "+FLAGS", "(\\Flagged)")
    c.uid("STORE", "4", "+FLAGS", "(\\Deleted)")
    c.expunge()
    uids, pop_validity = pop3_uids(srv, user)
    assert uids == [1, 2, 3] and pop_validity == validity
    # POP3: read 1, delete 3.
    p = login(srv, user)
    p.retr(1)
    p.dele(3)
    p.quit()
    deadline = time.time() + 5
    while True:
        c.noop()
        flags = imap_flags(c)
        if sorted(flags) == [1, 2] or time.time() > deadline:
            break
        time.sleep(0.1)
    assert sorted(flags) == [1, 2]
    assert "\\Seen" in flags[1] and flags[2] == {"\\Flagged"}
    c.logout()
    view = store_view(srv, user)
    assert view == {1: frozenset({"\\Seen"}), 2: frozenset({"\\Flagged"})}


@pytest.mark.skipif(not HAVE_IMAP, reason="IMAP server not built")
def test_imap_session_and_pop3_session_at_once(srv: Server) -> None:
    user = fresh_user()
    for i in range(2):
        put(srv, user, MSG % i)
    c = imap(srv, user)
    c.select("INBOX")
    p = login(srv, user)  # POP3 holds the maildrop lock; IMAP still works
    c.uid("STORE", "1", "+FLAGS", "(\\Answered)")
    assert p.retr(1)[0].startswith(b"+OK")  # the file was renamed by IMAP meanwhile
    p.quit()
    c.noop()
    assert imap_flags(c)[1] == {"\\Answered", "\\Seen"}
    c.logout()
