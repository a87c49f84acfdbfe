"""Many sessions on one mailbox, checked against a model of what each was told.

Issue 17 §1: at least ten sessions on one INBOX send random pipelined batches of
SELECT, FETCH, UID FETCH, UID STORE (\\Deleted and keywords), UID EXPUNGE, EXPUNGE,
APPEND and NOOP.  Each session keeps a model of what the server told it, and every
response is checked against it (RFC 3501 2.3.1, 7.4.1):

* sequence numbers: ``* n EXISTS`` never shrinks the mailbox, ``* n EXPUNGE`` names
  an existing number and never comes during FETCH, STORE or SEARCH; a FETCH's UID for
  number n equals the UID the session knows there, or, for a message it has not seen
  yet, lies between its neighbours' UIDs (arrivals have higher UIDs than everything
  before); an expunged UID never comes back;
* flags: a keyword in FETCH FLAGS was announced with ``* FLAGS`` first; flags are only
  ever added in this test, so a FETCH never shows fewer flags for a UID than STOREs
  already confirmed (tagged OK) before the command was sent, in any session;
* every other session has sent ``ENABLE IMAP4rev2`` (RFC 9051): it is never told
  ``* n RECENT`` or \\Recent and SEARCH answers it ``* ESEARCH``; the rev1 sessions get
  ``* SEARCH``.

It runs ``MAILSUITE_MODEL_SECONDS`` seconds (12 by default, about 1,200 pipelined
batches here; minutes on demand).
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import time
from pathlib import Path

from tests.support.imap import PASSWORD, imap_users, start_imap_server

SECONDS = float(os.environ.get("MAILSUITE_MODEL_SECONDS", "12"))
SESSIONS = int(os.environ.get("MAILSUITE_MODEL_SESSIONS", "10"))
USER = "u1@example.test"
KEYWORDS = ["$a", "$b", "$c", "$d", "Work", "Later"]
SYSTEM = {"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent"}
NO_EXPUNGE = {"FETCH", "STORE", "SEARCH"}  # RFC 3501 7.4.1 (the UID forms may; ours don't)

_FETCH = re.compile(rb"^\* (\d+) FETCH \((.*)\)$")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")


class Violation(AssertionError):
    pass


class Confirmed:
    """Flags every session's STOREs have set (tagged OK), with when: flags are only
    added in this test, so a later FETCH must show at least those."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flags: dict[int, list[tuple[float, str]]] = {}
        self.expunged: set[int] = set()

    def add(self, uids: list[int], flags: list[str], when: float) -> None:
        with self.lock:
            for u in uids:
                self.flags.setdefault(u, []).extend((when, f) for f in flags)

    def required(self, uid: int, before: float) -> set[str]:
        with self.lock:
            return {f for t, f in self.flags.get(uid, ()) if t < before}


class Session:
    def __init__(self, n: int, port: int, confirmed: Confirmed, rnd: random.Random) -> None:
        self.n = n
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.f = self.sock.makefile("rb")
        self.confirmed = confirmed
        self.rnd = rnd
        self.tag = 0
        self.view: list[int | None] | None = None  # seq-1 -> UID (None: not seen yet)
        self.gone: set[int] = set()  # UIDs this session was told are expunged
        self.announced: set[str] = set()
        self.transcript: list[bytes] = []
        self.batches = 0
        self.rev2 = n % 2 == 1
        self.line()  # greeting
        self.run([("LOGIN", b"LOGIN %s %s" % (USER.encode(), PASSWORD.encode()))])
        if self.rev2:
            self.run([("ENABLE", b"ENABLE IMAP4rev2")])

    # -- wire ---------------------------------------------------------------------------

    def line(self) -> bytes:
        data = self.f.readline()
        if not data:
            raise Violation(f"session {self.n}: connection closed")
        data = data.rstrip(b"\r\n")
        self.transcript.append(b"S: " + data)
        del self.transcript[:-400]
        return data

    def run(self, commands: list[tuple[str, bytes]]) -> None:
        """Send a batch pipelined, then read and check every response."""
        pending = []
        out = []
        sent_at = time.monotonic()
        for name, text in commands:
            self.tag += 1
            tag = b"m%d" % self.tag
            pending.append((tag, name, text))
            out.append(tag + b" " + text + b"\r\n")
            self.transcript.append(b"C: " + tag + b" " + text[:80])
        self.sock.sendall(b"".join(out))
        for tag, name, text in pending:
            while True:
                line = self.line()
                if line.startswith(tag + b" "):
                    self.tagged(name, text, line, sent_at)
                    break
                if line.startswith(b"* "):
                    self.untagged(name, line, sent_at)
        self.batches += 1

    def fail(self, why: str) -> None:
        tail = b"\n".join(self.transcript[-60:]).decode("utf-8", "replace")
        raise Violation(f"session {self.n}: {why}\n--- last lines ---\n{tail}")

    # -- the model -------------------------------------------------------------------------

    def untagged(self, name: str, line: bytes, sent_at: float) -> None:
        parts = line.split(b" ", 3)
        if line.startswith(b"* SEARCH" if self.rev2 else b"* ESEARCH"):
            self.fail(f"{'rev2' if self.rev2 else 'rev1'} session answered {line[:20]!r}")
        if self.rev2 and (b"\\Recent" in line or (len(parts) >= 3 and parts[2] == b"RECENT")):
            self.fail("rev2 session told of \\Recent")
        if line.startswith(b"* FLAGS ("):
            self.announced = set(line[9:-1].decode().split()) - SYSTEM
            return
        if len(parts) >= 3 and parts[2] == b"EXISTS":
            n = int(parts[1])
            if self.view is None:
                self.view = [None] * n
            elif n < len(self.view):
                self.fail(f"EXISTS {n} below {len(self.view)} without EXPUNGE")
            else:
                self.view += [None] * (n - len(self.view))
            return
        if len(parts) >= 3 and parts[2] == b"EXPUNGE":
            n = int(parts[1])
            if name in NO_EXPUNGE:
                self.fail(f"EXPUNGE during {name}")
            if self.view is None or not 1 <= n <= len(self.view):
                self.fail(f"EXPUNGE {n} of {len(self.view or [])}")
            uid = self.view.pop(n - 1)
            if uid is not None:
                self.gone.add(uid)
            return
        m = _FETCH.match(line)
        if m:
            self.fetch(int(m.group(1)), m.group(2), sent_at)

    def fetch(self, seq: int, items: bytes, sent_at: float) -> None:
        view = self.view
        if view is None or not 1 <= seq <= len(view):
            self.fail(f"FETCH for {seq}, mailbox has {len(view or [])}")
        um = _UID.search(items)
        uid = int(um.group(1)) if um else None
        if uid is not None:
            known = view[seq - 1]
            if known is None:
                if uid in self.gone:
                    self.fail(f"expunged UID {uid} is back at {seq}")
                lower = max((u for u in view[: seq - 1] if u is not None), default=0)
                upper = min((u for u in view[seq:] if u is not None), default=1 << 32)
                if not lower < uid < upper:
                    self.fail(f"sequence {seq} given UID {uid} outside ({lower}, {upper})")
                view[seq - 1] = uid
            elif known != uid:
                self.fail(f"sequence {seq} is UID {known} but FETCH says UID {uid}")
        else:
            uid = view[seq - 1]
        fm = _FLAGS.search(items)
        if fm is not None:
            flags = set(fm.group(1).decode().split())
            unknown = flags - SYSTEM - self.announced
            if unknown:
                self.fail(f"FETCH shows {sorted(unknown)} never announced with FLAGS")
            if uid is not None:
                missing = self.confirmed.required(uid, sent_at) - flags
                if missing:
                    self.fail(f"UID {uid} lost {sorted(missing)} confirmed before the command")

    def tagged(self, name: str, text: bytes, line: bytes, sent_at: float) -> None:
        status = line.split(b" ", 2)[1]
        if name in ("SELECT", "LOGIN", "APPEND") and status != b"OK":
            self.fail(f"{name} answered {line!r}")
        if status == b"BAD" and not (text.startswith(b"FETCH 1:*") and b"No messages" in line):
            self.fail(f"BAD for {text!r}: {line!r}")  # (FETCH 1:* of an empty mailbox is BAD, as in Dovecot)
        if name == "STORE" and status == b"OK" and self.view:
            m = re.match(rb"STORE (\d+) \+FLAGS \(([^)]*)\)", text)
            assert m
            uid = self.view[int(m.group(1)) - 1] if int(m.group(1)) <= len(self.view) else None
            if uid is not None:
                self.confirmed.add([uid], m.group(2).decode().split(), time.monotonic())
        if name == "UID STORE" and status == b"OK":
            m = re.match(rb"UID STORE ([\d,]+) \+FLAGS\.SILENT \(([^)]*)\)", text)
            assert m
            uids = [int(u) for u in m.group(1).split(b",")]
            self.confirmed.add(uids, m.group(2).decode().split(), time.monotonic())

    # -- random commands -----------------------------------------------------------------

    def known_uids(self) -> list[int]:
        return [u for u in self.view or () if u is not None]

    def random_batch(self) -> list[tuple[str, bytes]]:
        rnd = self.rnd
        out: list[tuple[str, bytes]] = []
        if self.view is None or rnd.random() < 0.03:
            self.view = None  # SELECT starts a new model of the mailbox
            self.gone = set()
            return [("SELECT", b"SELECT INBOX"), ("FETCH", b"FETCH 1:* (UID FLAGS)")]
        for _ in range(rnd.randint(1, 4)):
            r = rnd.random()
            uids = self.known_uids()
            size = len(self.view or ())
            if r < 0.25:
                msg = b"From: s%d@example.test\r\nSubject: m\r\n\r\nbody %d\r\n" % (self.n, rnd.randint(0, 1 << 30))
                kw = b" (%s)" % rnd.choice(KEYWORDS).encode() if rnd.random() < 0.3 else b""
                out.append(("APPEND", b"APPEND INBOX%s {%d+}\r\n%s" % (kw, len(msg), msg)))
            elif r < 0.40 and size and not out:
                # Fixed sequence numbers only first in a batch: behind other commands
                # an EXPUNGE may have moved them (the client's mistake, not the server's).
                seq = rnd.randint(1, size)
                flag = "\\Deleted" if rnd.random() < 0.6 else rnd.choice(KEYWORDS)
                out.append(("STORE", b"STORE %d +FLAGS (%s)" % (seq, flag.encode())))
            elif r < 0.50 and uids:
                pick = rnd.sample(uids, min(len(uids), rnd.randint(1, 3)))
                flag = "\\Deleted" if rnd.random() < 0.45 else rnd.choice(KEYWORDS + ["\\Seen", "\\Flagged"])
                out.append(("UID STORE", b"UID STORE %s +FLAGS.SILENT (%s)" % (b",".join(b"%d" % u for u in pick), flag.encode())))
            elif r < 0.62:
                out.append(("EXPUNGE", b"EXPUNGE"))
            elif r < 0.67:
                out.append(("UID EXPUNGE", b"UID EXPUNGE 1:*"))
            elif r < 0.79 and size and not out:
                lo = rnd.randint(1, size)
                out.append(("FETCH", b"FETCH %d:%d (UID FLAGS)" % (lo, min(size, lo + rnd.randint(0, 5)))))
            elif r < 0.84 and size:
                out.append(("FETCH", b"FETCH 1:* (UID FLAGS)"))
            elif r < 0.88:
                out.append(("UID FETCH", b"UID FETCH 1:* (FLAGS)"))
            elif r < 0.92:
                out.append(("SEARCH", b"SEARCH UNDELETED"))
            else:
                out.append(("NOOP", b"NOOP"))
        return out or [("NOOP", b"NOOP")]


def test_many_sessions_are_told_a_consistent_story(tmp_path: Path) -> None:
    srv = start_imap_server(tmp_path / "srv", users=imap_users(3))
    errors: list[BaseException] = []
    stats: list[int] = []
    confirmed = Confirmed()
    try:
        seed = Session(-1, srv.ports["imap"], confirmed, random.Random(0))
        # A few hundred messages: each change then takes the store long enough for
        # other sessions' commands to run in between.
        for i in range(0, 300, 50):
            batch = [b"Subject: seed %d\r\n\r\nx\r\n" % j for j in range(i, i + 50)]
            seed.run([("APPEND", b"APPEND INBOX {%d+}\r\n%s" % (len(m), m)) for m in batch])
        deadline = time.monotonic() + SECONDS

        def worker(n: int) -> None:
            try:
                s = Session(n, srv.ports["imap"], confirmed, random.Random(n * 7919 + int(time.time())))
                while time.monotonic() < deadline and not errors:
                    s.run(s.random_batch())
                stats.append(s.batches)
                s.sock.close()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(SESSIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SECONDS + 120)
    finally:
        srv.stop()
    if errors:
        raise errors[0]
    assert len(stats) == SESSIONS
    assert sum(stats) > SESSIONS * 5, stats  # the sessions really ran
    tracebacks = [line for line in srv.log().splitlines() if "Traceback" in line or "CRITICAL" in line]
    assert tracebacks == []
    print(f"model test: {SESSIONS} sessions, {sum(stats)} pipelined batches in {SECONDS:.0f} s, no contradiction")
