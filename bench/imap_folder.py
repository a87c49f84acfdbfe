#!/usr/bin/env python3
"""IMAP large-folder benchmark: mailsuite (and, if running, Dovecot) back to back.

  python bench/imap_folder.py [--count 10000] [--reps 3] [--conns 500] [--big]
                              [--dovecot-port 11143] [--no-dovecot] [--root DIR]

Starts mailsuite (``twistd -n mailsuite``) on free loopback ports with the
account alice@example.test, loads the folder ``bench`` straight into the Maildir (the
anchor harness's message generator, bench/anchors/imap_bench.py), then runs that
harness alternately against Dovecot (the anchor from bench/anchors/setup_anchors.sh,
if it answers on --dovecot-port) and mailsuite with
the same rep numbers, so the figures pair up per rep:

  LOGIN+SELECT, UID FETCH 1:* (FLAGS), FETCH 1:* (ENVELOPE), 200 full bodies,
  UID SEARCH FROM (a header), UID SEARCH BODY, STORE 1:* +FLAGS / -FLAGS

then conn_bench.py: server memory per idle authenticated connection with --conns
connections (mailsuite restarted fresh first, as the harness README asks): logged in,
with INBOX selected, and with the ``--count`` folder selected (after a few connections
have opened it in every worker), each also for Dovecot.
``--big`` adds a 100,000-message folder: cold SELECT (index build) and warm
LOGIN+SELECT (target < 1 s once indexed), plus UID FETCH 1:* (FLAGS); with the
Dovecot anchor, the harness's operations on it for both servers (--reps // 2 paired
reps, no large messages; JSON lines in ``--root``/imap-big.jsonl).

Prints the harness output and a summary table (summarize.py --ref dovecot); the JSON
lines stay in ``--root``/imap.jsonl.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchkit import BenchServer

ANCHORS = Path(__file__).resolve().parent / "anchors"


def own_server() -> BenchServer:
    """mailsuite with MX and IMAP listeners and the account alice@example.test."""
    return BenchServer("mailsuite-imap-bench-", ["smtp", "imap"], {"alice@example.test": "alicepw"},
                       {"server": {"allow_plaintext_auth": True}, "imap": {"max_connections_per_ip": 2000},
                        "limits": {"auth_exempt_networks": ["127.0.0.0/8"]}})


def restart(ms: BenchServer) -> None:
    ms.stop(keep=True)
    ms.start()


def run(cmd: list[str], check: bool = True) -> None:
    print("$ " + " ".join(cmd), flush=True)
    # The shared harness exits 1 after a load-only run (--repeat 0 has no summary).
    subprocess.run(cmd, check=check)


def dovecot_up(port: int) -> bool:
    try:
        m = imaplib.IMAP4("127.0.0.1", port)
        m.login("alice", "alicepw")
        m.logout()
        return True
    except (OSError, imaplib.IMAP4.error):
        return False


def dovecot_pid() -> str | None:
    root = Path(os.environ.get("ANCHOR_ROOT", "/tmp/mailsuite-anchors"))
    p = root / "dovecot-run" / "master.pid"
    return p.read_text().strip() if p.exists() else None


def timed_login_select(port: int, user: str, mailbox: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login(user, "alicepw")
    t1 = time.perf_counter()
    typ, data = m.select(mailbox)
    t2 = time.perf_counter()
    assert typ == "OK", data
    m.logout()
    return t1 - t0, t2 - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--conns", type=int, default=500)
    ap.add_argument("--big", action="store_true", help="also a 100,000-message folder")
    ap.add_argument("--dovecot-port", type=int, default=int(os.environ.get("ANCHOR_DOVECOT_IMAP_PORT", 11143)))
    ap.add_argument("--no-dovecot", action="store_true")
    ap.add_argument("--root", default="/tmp/mailsuite-imap-bench")
    a = ap.parse_args()

    root = Path(a.root)
    shutil.rmtree(root, ignore_errors=True)
    out = root / "imap.jsonl"
    root.mkdir(parents=True)
    ms = own_server().start()
    py = sys.executable
    bench = str(ANCHORS / "imap_bench.py")
    dovecot = not a.no_dovecot and dovecot_up(a.dovecot_port)
    try:
        common = ["--count", str(a.count), "--json-out", str(out)]
        # Load both (Dovecot's anchor folder is reused when it already holds the messages).
        run([py, bench, "127.0.0.1", str(ms.ports["imap"]), "alice@example.test", "alicepw", "--repeat", "0",
             "--load", f"maildir:{ms.maildir('alice@example.test') / '.bench'}", "--label", "mailsuite"] + common, check=False)
        if dovecot:
            anchor = Path(os.environ.get("ANCHOR_ROOT", "/tmp/mailsuite-anchors"))
            run([py, bench, "127.0.0.1", str(a.dovecot_port), "alice", "alicepw", "--repeat", "0",
                 "--load", f"maildir:{anchor}/dovecot-mail/alice/.bench", "--chown", "5000:5000",
                 "--label", "dovecot"] + common, check=False)
        else:
            print("Dovecot anchor not answering; mailsuite figures only", flush=True)
        for rep in range(a.reps):
            if dovecot:
                pid = dovecot_pid()
                run([py, bench, "127.0.0.1", str(a.dovecot_port), "alice", "alicepw", "--load", "none",
                     "--repeat", "1", "--rep-offset", str(rep), "--label", "dovecot"]
                    + (["--server-pid", pid] if pid else []) + common)
            run([py, bench, "127.0.0.1", str(ms.ports["imap"]), "alice@example.test", "alicepw", "--load", "none",
                 "--repeat", "1", "--rep-offset", str(rep), "--label", "mailsuite",
                 "--server-pid", str(ms.proc.pid)] + common)
        summarize = [py, str(ANCHORS / "summarize.py"), str(out)] + (["--ref", "dovecot"] if dovecot else [])
        run(summarize)

        if a.big:
            big = 100_000
            print(f"\n== {big}-message folder", flush=True)
            run([py, bench, "127.0.0.1", str(ms.ports["imap"]), "alice@example.test", "alicepw", "--repeat", "0",
                 "--mailbox", "big", "--large", "0", "--count", str(big),
                 "--load", f"maildir:{ms.maildir('alice@example.test') / '.big'}", "--label", "mailsuite-big"], check=False)
            _, cold = timed_login_select(ms.ports["imap"], "alice@example.test", "big")
            print(f"100k cold SELECT (index build): {cold * 1000:.0f} ms")
            restart(ms)  # the index must survive a restart
            for i in range(3):
                login, both = timed_login_select(ms.ports["imap"], "alice@example.test", "big")
                print(f"100k LOGIN+SELECT after restart #{i}: {both * 1000:.0f} ms (login {login * 1000:.0f} ms)")
            m = imaplib.IMAP4("127.0.0.1", ms.ports["imap"])
            m.login("alice@example.test", "alicepw")
            m.select("big")
            t = time.perf_counter()
            m.uid("FETCH", "1:*", "(FLAGS)")
            print(f"100k UID FETCH 1:* (FLAGS) via imaplib: {(time.perf_counter() - t) * 1000:.0f} ms")
            m.logout()
            if dovecot:
                big_out = root / "imap-big.jsonl"
                big_common = ["--mailbox", "big", "--large", "0", "--count", str(big), "--json-out", str(big_out)]
                anchor = Path(os.environ.get("ANCHOR_ROOT", "/tmp/mailsuite-anchors"))
                run([py, bench, "127.0.0.1", str(a.dovecot_port), "alice", "alicepw", "--repeat", "0",
                     "--load", f"maildir:{anchor}/dovecot-mail/alice/.big", "--chown", "5000:5000",
                     "--label", "dovecot"] + big_common, check=False)
                _, dcold = timed_login_select(a.dovecot_port, "alice", "big")
                print(f"100k Dovecot first SELECT (its index build, or its index if kept from an earlier run): "
                      f"{dcold * 1000:.0f} ms")
                # The whole harness on 100k, paired reps like the 10k folder's.
                for rep in range(max(1, a.reps // 2)):
                    pid = dovecot_pid()
                    run([py, bench, "127.0.0.1", str(a.dovecot_port), "alice", "alicepw", "--load", "none",
                         "--repeat", "1", "--rep-offset", str(rep), "--label", "dovecot"]
                        + (["--server-pid", pid] if pid else []) + big_common)
                    run([py, bench, "127.0.0.1", str(ms.ports["imap"]), "alice@example.test", "alicepw",
                         "--load", "none", "--repeat", "1", "--rep-offset", str(rep), "--label", "mailsuite",
                         "--server-pid", str(ms.proc.pid)] + big_common)
                print(f"\n== {big}-message folder, the harness's operations", flush=True)
                run([py, str(ANCHORS / "summarize.py"), str(big_out), "--ref", "dovecot"])

        if not a.conns:
            return
        # Memory per idle authenticated connection, on a fresh process.
        restart(ms)
        conn = str(ANCHORS / "conn_bench.py")
        run([py, conn, "127.0.0.1", str(ms.ports["imap"]), "alice@example.test", "alicepw",
             "--pid", str(ms.proc.pid), "-n", str(a.conns), "--label", "mailsuite", "--json-out", str(out)])
        restart(ms)
        run([py, conn, "127.0.0.1", str(ms.ports["imap"]), "alice@example.test", "alicepw",
             "--pid", str(ms.proc.pid), "-n", str(a.conns), "--select", "INBOX",
             "--label", "mailsuite-select", "--json-out", str(out)])
        # With the 10k folder selected on every connection (the figure: under
        # 50 KiB each).  The folder itself is loaded once per worker process and shared
        # by its sessions, so a few connections open it in every worker first; their
        # memory is then counted before the measured connections open.
        restart(ms)
        run([py, conn, "127.0.0.1", str(ms.ports["imap"]), "alice@example.test", "alicepw",
             "--pid", str(ms.proc.pid), "-n", "10", "--select", "bench", "--settle", "1",
             "--label", "mailsuite-warm-folder"])
        run([py, conn, "127.0.0.1", str(ms.ports["imap"]), "alice@example.test", "alicepw",
             "--pid", str(ms.proc.pid), "-n", str(a.conns), "--select", "bench",
             "--label", f"mailsuite-select-{a.count}", "--json-out", str(out)])
        if dovecot and dovecot_pid():
            run([py, conn, "127.0.0.1", str(a.dovecot_port), "alice", "alicepw", "--pid", dovecot_pid(),
                 "-n", str(a.conns), "--label", "dovecot", "--json-out", str(out)])
            run([py, conn, "127.0.0.1", str(a.dovecot_port), "alice", "alicepw", "--pid", dovecot_pid(),
                 "-n", str(a.conns), "--select", "bench", "--label", f"dovecot-select-{a.count}",
                 "--json-out", str(out)])
    finally:
        ms.stop()


if __name__ == "__main__":
    main()
