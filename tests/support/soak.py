"""Mixed load against one running mailsuite for a set time, and what it did to it.

:func:`soak` drives, at once and until ``seconds`` pass: SMTP senders (local
recipients and relayed ones, to a Postfix smtp-sink), IMAP sessions that IDLE, FETCH,
flag and expunge all but the newest 20, and POP3 sessions that retrieve 15 and delete
all, so the mailboxes stay bounded.  Every few seconds it samples the resident memory of the server's whole
process tree.  It returns a :class:`SoakReport`: operations by kind, client errors
(with their first examples), RSS at start, after warm-up and at the end.

Used by ``tests/test_soak.py`` (2 minutes under CI) and ``scripts/soak`` (30 minutes
on demand: ``scripts/soak --minutes 30``).
"""

from __future__ import annotations

import imaplib
import os
import poplib
import smtplib
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.server import Server

MSG = "From: load@remote.test\r\nTo: {to}\r\nSubject: soak {n}\r\n\r\n" + "line of a soak message\r\n" * 40


def tree_rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, in KiB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
        todo.extend(children.get(p, []))
    return total


@dataclass
class SoakReport:
    seconds: float
    ops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (elapsed s, KiB)

    def rss_at(self, fraction: float) -> int:
        """The RSS sample nearest to ``fraction`` of the run."""
        t = self.seconds * fraction
        return min(self.rss, key=lambda s: abs(s[0] - t))[1]

    @property
    def growth_after_warmup(self) -> float:
        """Relative RSS growth from the end of warm-up (the first third) to the end,
        comparing the medians of the samples around each point."""
        def around(lo: float, hi: float) -> float:
            xs = sorted(kb for t, kb in self.rss if lo <= t / self.seconds <= hi)
            return float(xs[len(xs) // 2]) if xs else float(self.rss[-1][1])

        start, end = around(0.30, 0.45), around(0.85, 1.0)
        return (end - start) / start

    def summary(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))
        errs = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return (f"soak {self.seconds / 60:.1f} min: {ops}; errors: {errs}; RSS start {self.rss[0][1] / 1024:.1f} MiB, "
                f"after warm-up {self.rss_at(0.33) / 1024:.1f} MiB, end {self.rss[-1][1] / 1024:.1f} MiB "
                f"(growth after warm-up {self.growth_after_warmup * 100:+.1f}%)")


def soak(srv: Server, users: dict[str, str], remote_rcpt: str, seconds: float) -> SoakReport:
    assert srv.proc is not None
    report = SoakReport(seconds)
    lock = threading.Lock()
    stop = threading.Event()
    names = list(users)
    ctx = ssl._create_unverified_context()

    def ok(kind: str) -> None:
        with lock:
            report.ops[kind] += 1

    def failed(kind: str, e: BaseException) -> None:
        with lock:
            report.errors[kind] += 1
            if len(report.examples) < 10:
                report.examples.append(f"{kind}: {type(e).__name__}: {e}")

    def smtp_sender(k: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            to = names[(k + n) % len(names)]
            rcpts = [to] + ([remote_rcpt] if n % 4 == 0 else [])
            try:
                with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as c:
                    c.sendmail("load@remote.test", rcpts, MSG.format(to=to, n=n))
                ok("smtp")
            except (OSError, smtplib.SMTPException) as e:
                failed("smtp", e)
                time.sleep(0.5)
            time.sleep(0.02)

    # IMAP and POP3 work on different mailboxes: a POP3 session deleting what an IMAP
    # session is fetching gets "NO message removed" (a right answer, not an error).
    imap_names, pop3_names = names[: len(names) // 2], names[len(names) // 2:]

    def imap_user(k: int) -> None:
        user = imap_names[k % len(imap_names)]
        while not stop.is_set():
            try:
                m = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=ctx, timeout=30)
                m.login(user, users[user])
                m.select("INBOX")
                for _ in range(20):
                    if stop.is_set():
                        break
                    tag = m._new_tag()  # IDLE briefly, as a phone would
                    m.send(tag + b" IDLE\r\n")
                    m.readline()
                    # No read with a short timeout here: one that expires marks
                    # imaplib's socket file "timed out" and every later read fails.
                    # Whatever arrived while idling is read after DONE.
                    stop.wait(1.0)
                    m.send(b"DONE\r\n")
                    while not m.readline().startswith(tag):
                        pass
                    typ, data = m.uid("SEARCH", "ALL")
                    uids = data[0].split()
                    if uids:
                        m.uid("FETCH", b",".join(uids[-5:]).decode(), "(FLAGS BODY.PEEK[HEADER])")
                        m.uid("STORE", uids[0].decode(), "+FLAGS", "(\\Seen $soak)")
                        # Keep the mailbox bounded (the newest 20 stay): memory that
                        # grows with the mailbox is data, not a leak, and the soak
                        # checks for leaks.
                        if len(uids) > 30:
                            m.uid("STORE", f"{uids[0].decode()}:{uids[-21].decode()}", "+FLAGS.SILENT", "(\\Deleted)")
                            m.expunge()
                    ok("imap")
                m.logout()
            except (OSError, imaplib.IMAP4.error) as e:
                failed("imap", e)
                time.sleep(0.5)

    def pop3_user(k: int) -> None:
        user = pop3_names[k % len(pop3_names)]
        while not stop.is_set():
            try:
                p = poplib.POP3_SSL("127.0.0.1", srv.ports["pop3s"], context=ctx, timeout=30)
                p.user(user)
                try:
                    p.pass_(users[user])
                except poplib.error_proto as e:
                    if b"IN-USE" in str(e).encode():
                        p.quit()
                        time.sleep(0.3)
                        continue
                    raise
                count, _ = p.stat()
                for i in range(1, min(count, 15) + 1):
                    try:
                        p.retr(i)
                    except poplib.error_proto as e:
                        # Nothing but this thread's earlier sessions deletes from this
                        # mailbox, and each of them had QUIT: a listing that names a
                        # message they deleted is stale (issue 16), a failure.
                        if b"removed by another session" in str(e).encode():
                            failed("pop3_stale", e)
                            break
                        raise
                    p.dele(i)
                # The rest are deleted unread, so the maildrop stays bounded whatever
                # the SMTP senders' pace.
                for i in range(16, count + 1):
                    p.dele(i)
                p.quit()
                ok("pop3")
            except (OSError, poplib.error_proto) as e:
                failed("pop3", e)
            time.sleep(1.0)

    threads = ([threading.Thread(target=smtp_sender, args=(k,)) for k in range(4)]
               + [threading.Thread(target=imap_user, args=(k,)) for k in range(3)]
               + [threading.Thread(target=pop3_user, args=(k,)) for k in range(2)])
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        while time.monotonic() - started < seconds:
            report.rss.append((time.monotonic() - started, tree_rss_kb(srv.proc.pid)))
            time.sleep(min(5.0, max(1.0, seconds / 60)))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    report.rss.append((time.monotonic() - started, tree_rss_kb(srv.proc.pid)))
    return report
