"""kill -9 during IMAP MOVE leaves every message in exactly one folder (issue 16 finding 8).

MOVE renames each message file into the destination (atomic within one file system)
before the source forgets it; the old copy-then-expunge left every message already
copied in both folders when the server died in between.  Rounds of ``UID MOVE 1:*``
back and forth between INBOX and Archive, each cut by kill -9 at a random moment;
after each restart every message is on disk once (and whole), and IMAP shows the same.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from pathlib import Path

from tests.support.imap import PASSWORD, Raw, imap_users, start_imap_server
from tests.support.server import Server

USER = "u1@example.test"
COUNT = 1000
ROUNDS = 6
MID = re.compile(rb"^Message-ID: <(move-\d+)@test>$", re.M)


def message(i: int) -> bytes:
    return b"From: a@remote.test\r\nSubject: m%d\r\nMessage-ID: <move-%d@test>\r\n\r\n%s" % (
        i, i, b"line of the body\r\n" * 40)


def on_disk(srv: Server) -> Counter:
    """Message-ID -> how many files carry it, over INBOX and Archive (new/ and cur/)."""
    seen: Counter = Counter()
    for folder in ("", "Archive"):
        for data in srv.messages(USER, folder):
            ids = MID.findall(data)
            assert len(ids) == 1 and data.endswith(b"line of the body\n"), data[:200]
            seen[ids[0].decode()] += 1
    return seen


def imap_counts(srv: Server) -> tuple[int, int]:
    r = Raw(srv.ports["imap"])
    r.login(USER, PASSWORD)
    out = []
    for folder in (b"INBOX", b"Archive"):
        untagged, _ = r.cmd(b"STATUS %s (MESSAGES)" % folder)
        out.append(int(re.search(rb"MESSAGES (\d+)", untagged[0]).group(1)))
    r.close()
    return out[0], out[1]


def test_kill_9_during_move_leaves_no_message_in_both_folders(tmp_path: Path) -> None:
    srv = start_imap_server(tmp_path / "srv", users=imap_users(3))
    rnd = random.Random(17)
    interrupted = 0
    try:
        r = Raw(srv.ports["imap"])
        r.login(USER, PASSWORD)
        for start in range(0, COUNT, 100):  # pipelined, 100 at a time
            r.send(b"".join(b"a%d APPEND INBOX {%d+}\r\n%s\r\n" % (i, len(message(i)), message(i))
                            for i in range(start, start + 100)))
            for i in range(start, start + 100):
                _, tagged = r.response(b"a%d" % i)
                assert b" OK " in tagged
        # How long a whole MOVE takes here (there and back), to kill in the middle of one.
        r.cmd(b"SELECT INBOX")
        t0 = time.monotonic()
        assert b" OK " in r.cmd(b"UID MOVE 1:* Archive")[1]
        r.cmd(b"SELECT Archive")
        assert b" OK " in r.cmd(b"UID MOVE 1:* INBOX")[1]
        took = (time.monotonic() - t0) / 2
        r.close()
        src, dst = b"INBOX", b"Archive"
        for round_no in range(ROUNDS):
            r = Raw(srv.ports["imap"])
            r.login(USER, PASSWORD)
            r.cmd(b"SELECT " + src)
            r.send(b"m UID MOVE 1:* %s\r\n" % dst)
            time.sleep(rnd.uniform(0.2, 0.8) * took)
            srv.kill9()
            try:
                r.close()
            except OSError:
                pass
            srv.start()
            counts = on_disk(srv)
            assert sorted(counts) == sorted(f"move-{i}" for i in range(COUNT)), "a message was lost"
            twice = [m for m, n in counts.items() if n > 1]
            assert twice == [], f"round {round_no}: {len(twice)} messages in both folders"
            inbox, archive = imap_counts(srv)
            assert inbox + archive == COUNT, (inbox, archive)
            if inbox and archive:
                interrupted += 1  # the kill came mid-MOVE
            # next round moves back whatever is where most messages are now
            src, dst = (b"INBOX", b"Archive") if inbox >= archive else (b"Archive", b"INBOX")
    finally:
        srv.stop()
    tracebacks = [line for line in srv.log().splitlines() if "CRITICAL" in line]
    assert tracebacks == []
    print(f"move crash test: {ROUNDS} kills, {interrupted} in the middle of a MOVE of {COUNT} ({took:.3f} s each)")


def test_move_answers_with_copyuid_and_expunges(tmp_path: Path) -> None:
    srv = start_imap_server(tmp_path / "srv", users=imap_users(3))
    try:
        r = Raw(srv.ports["imap"])
        r.login(USER, PASSWORD)
        for i in range(3):
            r.cmd(b"APPEND INBOX {%d+}\r\n%s" % (len(message(i)), message(i)))
        r.cmd(b"SELECT INBOX")
        untagged, tagged = r.cmd(b"UID MOVE 1,3 Archive")
        assert b" OK " in tagged
        assert re.match(rb"\* OK \[COPYUID \d+ 1,3 1:2\]", untagged[0]), untagged
        assert untagged[1:] == [b"* 3 EXPUNGE", b"* 1 EXPUNGE"]
        assert [m.count(b"Message-ID") for m in srv.messages(USER, "Archive")] == [1, 1]
        assert len(srv.messages(USER)) == 1
        untagged, _ = r.cmd(b"STATUS Archive (MESSAGES UIDNEXT)")
        assert untagged == [b'* STATUS "Archive" (MESSAGES 2 UIDNEXT 3)']
        r.close()
    finally:
        srv.stop()
