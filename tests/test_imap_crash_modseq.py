"""kill -9 during a stream of STOREs and APPENDs: modseqs never go back, nothing acknowledged is lost.

The modseq log's lines are not fsynced one by one (docs/architecture.md, "What is
fsynced, and when"): a killed process leaves them in the page cache, where the
restarted server reads them.  Rounds of two CONDSTORE sessions changing flags and
appending, each cut by kill -9 at a random moment; after each restart SELECT's
HIGHESTMODSEQ is at least every modseq a client was shown, every APPEND that got OK is
there under the UID it was given, and the next change gets a higher modseq.
"""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

from tests.support.imap import PASSWORD, Raw, imap_users, start_imap_server

USER = "u1@example.test"
ROUNDS = 3
MODSEQ = re.compile(rb"MODSEQ \((\d+)\)")
APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")
HIGHEST = re.compile(rb"\[HIGHESTMODSEQ (\d+)\]")
MID = re.compile(rb"Message-ID: <(crash-[\w-]+)@test>")


def message(mid: str) -> bytes:
    return b"From: a@remote.test\r\nSubject: %s\r\nMessage-ID: <%s@test>\r\n\r\nbody\r\n" % (mid.encode(), mid.encode())


class Changer(threading.Thread):
    """One session: STOREs on the first messages and APPENDs, until the server dies;
    records the modseqs it was shown and the APPENDs acknowledged."""

    def __init__(self, port: int, name: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.port, self.name, self.rnd = port, name, random.Random(seed)
        self.shown = 0
        self.acked: dict[int, str] = {}  # uid -> message id
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            r = Raw(self.port)
            r.login(USER, PASSWORD)
            r.cmd(b"ENABLE CONDSTORE")
            r.cmd(b"SELECT INBOX")
            self.ready.set()
            n = 0
            while True:
                n += 1
                if self.rnd.random() < 0.3:
                    mid = f"crash-{self.name}-{n}"
                    untagged, tagged = r.cmd(b"APPEND INBOX {%d+}\r\n%s" % (len(message(mid)), message(mid)))
                    m = APPENDUID.search(tagged)
                    if b" OK " in tagged and m:
                        self.acked[int(m.group(1))] = mid
                else:
                    uid = self.rnd.randint(1, 20)
                    untagged, tagged = r.cmd(b"UID STORE %d %sFLAGS (\\Flagged)" % (uid, self.rnd.choice([b"+", b"-"])))
                for line in untagged + [tagged]:
                    for m in MODSEQ.finditer(line):
                        self.shown = max(self.shown, int(m.group(1)))
        except (OSError, ConnectionError, AssertionError):
            self.ready.set()  # the server died: done


def select_highest(port: int) -> tuple[int, Raw]:
    r = Raw(port)
    r.login(USER, PASSWORD)
    r.cmd(b"ENABLE CONDSTORE")
    untagged, _ = r.cmd(b"SELECT INBOX")
    (m,) = [HIGHEST.search(line) for line in untagged if HIGHEST.search(line)]
    return int(m.group(1)), r


def test_kill_9_never_takes_modseqs_back_nor_loses_an_acknowledged_append(tmp_path: Path) -> None:
    srv = start_imap_server(tmp_path / "srv", users=imap_users(3))
    rnd = random.Random(29)
    acked: dict[int, str] = {}
    try:
        r = Raw(srv.ports["imap"])
        r.login(USER, PASSWORD)
        for i in range(20):
            r.cmd(b"APPEND INBOX {%d+}\r\n%s" % (len(message(f"crash-seed-{i}")), message(f"crash-seed-{i}")))
        r.close()
        for round_no in range(ROUNDS):
            changers = [Changer(srv.ports["imap"], f"r{round_no}s{k}", rnd.randrange(1 << 30)) for k in range(2)]
            for c in changers:
                c.start()
            for c in changers:
                c.ready.wait(10)
            time.sleep(rnd.uniform(0.3, 0.8))
            srv.kill9()
            for c in changers:
                c.join(10)
                acked.update(c.acked)
            shown = max(c.shown for c in changers)
            assert shown > 0, "no modseq was shown before the kill"
            srv.start()
            highest, r = select_highest(srv.ports["imap"])
            assert highest >= shown, f"round {round_no}: HIGHESTMODSEQ {highest} went back below {shown}"
            untagged, _ = r.cmd(b"UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            present = {}
            for line in untagged:
                u, m = re.search(rb"UID (\d+)", line), MID.search(line)
                if u and m:
                    present[int(u.group(1))] = m.group(1).decode()
            lost = {u: mid for u, mid in acked.items() if present.get(u) != mid}
            assert lost == {}, f"round {round_no}: acknowledged APPENDs lost or renumbered: {lost}"
            untagged, _ = r.cmd(b"UID STORE 1 +FLAGS ($Round%d)" % round_no)
            (m,) = [MODSEQ.search(line) for line in untagged if MODSEQ.search(line)]
            assert int(m.group(1)) > highest
            r.close()
    finally:
        srv.stop()
    assert [line for line in srv.log().splitlines() if "CRITICAL" in line] == []
