"""Crash test: kill -9 the server while several clients send, restart it, and prove that
every message that got a 250 is in the Maildir exactly once and that no partial
message is visible in new/ or cur/."""

from __future__ import annotations

import os
import random
import re
import smtplib
import threading
import time
from collections import Counter
from pathlib import Path

from mailsuite.store import names
from tests.support.server import Server, make_server

CLIENTS = 6
ROUNDS = 3
RECIPIENTS = (["alice@example.test"], ["alice@example.test", "bob@example.test"], ["team@example.test"])
MID_RE = re.compile(rb"^Message-ID: <(crash-[\w-]+)@test>$", re.M)


def body_for(mid: str, big: bool) -> bytes:
    filler = b"".join(b"%06d filler line for a crash test message\r\n" % i for i in range(6000 if big else 20))
    return (f"From: c@remote.test\r\nSubject: {mid}\r\nMessage-ID: <{mid}@test>\r\n\r\n".encode()
            + filler + f"END {mid}\r\n".encode())


class Sender(threading.Thread):
    """Sends messages until told to stop or the server dies; records the 250s."""

    def __init__(self, port: int, tag: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.tag, self.stop = port, tag, stop
        self.acked: dict[str, list[str]] = {}  # message id -> the mailboxes it must reach
        self.rng = random.Random(tag)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as c:
                    for _ in range(self.rng.randint(1, 4)):  # a few messages per connection
                        n += 1
                        mid = f"crash-{self.tag}-{n}"
                        rcpts = self.rng.choice(RECIPIENTS)
                        c.sendmail("c@remote.test", rcpts, body_for(mid, big=self.rng.random() < 0.1))
                        # sendmail returned: the server said 250 to DATA.
                        self.acked[mid] = ["alice@example.test", "bob@example.test"] if rcpts != RECIPIENTS[0] else ["alice@example.test"]
                        if self.stop.is_set():
                            break
            except (OSError, smtplib.SMTPException):
                if self.stop.is_set():
                    return
                time.sleep(0.01)  # server down: keep trying until told to stop


def visible_messages(s: Server, account: str) -> list[tuple[str, bytes]]:
    out = []
    root = s.maildir(account)
    for sub in ("new", "cur"):
        d = root / sub
        if d.is_dir():
            for name in os.listdir(d):
                out.append((name, (d / name).read_bytes()))
    return out


def check_complete(name: str, content: bytes) -> str:
    """The message id of a stored file, after checking the file is whole."""
    ids = MID_RE.findall(content)
    assert len(ids) == 1, f"{name}: {len(ids)} Message-IDs"
    mid = ids[0].decode()
    assert content.endswith(f"END {mid}\n".encode()), f"{name}: partial message"
    assert names.size_of(name) == len(content), f"{name}: S= does not match the file"
    assert names.crlf_size_of(name) == len(content) + content.count(b"\n")
    return mid


def run_round(s: Server, round_no: int, all_acked: dict[str, list[str]]) -> None:
    stop = threading.Event()
    senders = [Sender(s.ports["smtp"], f"r{round_no}c{i}", stop) for i in range(CLIENTS)]
    for t in senders:
        t.start()
    # Kill while traffic flows: after some messages were acknowledged, at a random moment.
    deadline = time.time() + 10
    while sum(len(t.acked) for t in senders) < 40 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 0.3))
    s.kill9()
    stop.set()
    for t in senders:
        t.join(10)
    for t in senders:
        all_acked.update(t.acked)
    s.start()


def test_kill_9_loses_nothing_acknowledged_and_shows_nothing_partial(tmp_path: Path) -> None:
    s = make_server(tmp_path / "srv", aliases="team@example.test: alice, bob\n",
                    server={"thread_pool_size": 8})
    s.start()
    acked: dict[str, list[str]] = {}
    try:
        for r in range(ROUNDS):
            run_round(s, r, acked)
        assert len(acked) >= 20  # the kills really hit a stream of acknowledged mail
        # The restarted server cleaned the receipts the crash interrupted.
        assert list((s.root / "data" / "queue" / "incoming").iterdir()) == []
        for account in ("alice@example.test", "bob@example.test"):
            stored = Counter(check_complete(n, c) for n, c in visible_messages(s, account))
            duplicates = {m: k for m, k in stored.items() if k > 1}
            assert duplicates == {}, f"{account}: delivered twice: {duplicates}"
            missing = [m for m, boxes in acked.items() if account in boxes and m not in stored]
            assert missing == [], f"{account}: acknowledged but lost: {missing[:10]}"
        # And it still works.
        with smtplib.SMTP("127.0.0.1", s.ports["smtp"]) as c:
            c.sendmail("c@remote.test", ["alice@example.test"], body_for("crash-after", big=False))
        assert any(b"crash-after" in c for _, c in visible_messages(s, "alice@example.test"))
    finally:
        s.stop()
