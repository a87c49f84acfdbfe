"""POP3 over two worker processes ([server] processes = 2): a session's listing after
another session's QUIT never names a message that QUIT deleted, whichever worker each
session lands on (issue 16: the soak saw "-ERR Message N was removed by another
session." when the listing was the other worker's, older than the expunge).

The cause was in the store: a worker thread had listed the folder after the expunge
and recorded the directories' mtimes, the reactor had not yet published that listing,
and a login in between found the mtimes current and took the old list.  The exact
moment is reproduced in ``tests/test_store_folder.py``
(``test_sync_does_not_trust_a_listing_the_reactor_has_not_seen_yet``); this test
drives the whole path, with an IMAP client polling STATUS on the same INBOX so that
the other worker keeps listing it while POP3 sessions come and go."""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import threading
import time
from pathlib import Path

from tests.support.server import make_server
from tests.support.waiting import wait_for

USERS = {f"pp{i}@example.test": f"pp{i}-pw" for i in range(4)}
ROUNDS = 6


def test_a_listing_after_quit_never_names_a_message_that_quit_deleted(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "srv", users=USERS, server={"processes": 2, "allow_plaintext_auth": True})
    srv.start()
    try:
        wait_for(lambda: len(set(re.findall(r"worker (\d+) serving", srv.log()))) == 2, timeout=60,
                 what="workers serving", server=srv)
        problems: list[str] = []
        sessions: list[int] = []
        stop = threading.Event()

        def poll_status(user: str) -> None:
            # Makes each worker list the folder now and then, at any moment relative
            # to the POP3 logins: the listing a login may wrongly trust.
            m = imaplib.IMAP4("127.0.0.1", srv.ports["imap"])
            m.login(user, USERS[user])
            while not stop.is_set():
                m.status("INBOX", "(MESSAGES)")
                time.sleep(0.01)
            m.logout()

        def rounds(user: str) -> None:
            deleted: set[str] = set()
            for r in range(ROUNDS):
                with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as c:
                    for i in range(3):
                        c.sendmail("x@remote.test", [user], f"Subject: {user} round {r} #{i}\r\n\r\nhi\r\n")
                # Past the store's same-tick window (1 s), so the next listing is one a
                # worker trusts without listing again.
                time.sleep(1.05 if r % 2 else 0.05)
                p = poplib.POP3("127.0.0.1", srv.ports["pop3"], timeout=30)
                p.user(user)
                p.pass_(USERS[user])
                _, uidl, _ = p.uidl()
                listed = dict(line.decode().split() for line in uidl)  # number -> UIDL
                stale = deleted & set(listed.values())
                if stale:
                    problems.append(f"{user} round {r}: listing names deleted {sorted(stale)}")
                _, lines, _ = p.list()
                assert len(lines) == len(listed)
                for n in listed:
                    try:
                        p.retr(int(n))
                    except poplib.error_proto as e:
                        problems.append(f"{user} round {r}: RETR {n}: {e}")
                    p.dele(int(n))
                assert p.quit().startswith(b"+OK")
                deleted |= set(listed.values())
                sessions.append(1)

        pollers = [threading.Thread(target=poll_status, args=(u,)) for u in USERS]
        users = [threading.Thread(target=rounds, args=(u,)) for u in USERS]
        for t in pollers + users:
            t.start()
        for t in users:
            t.join(120)
        stop.set()
        for t in pollers:
            t.join(30)
        assert not problems, problems
        assert len(sessions) == ROUNDS * len(USERS)
        log = srv.log()
        served = set(re.findall(r"\[mailsuite\.pop3#info (w[12])\] pop3: \[[^]]*\] pp\d@example\.test logged in", log))
        assert served == {"w1", "w2"}, "every session landed on one worker: the test proves nothing"
        assert "Traceback" not in log and "CRITICAL" not in log
    finally:
        srv.stop()
