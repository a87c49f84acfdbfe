#!/usr/bin/env python3
"""POP3 benchmark: a 5,000-message maildrop; STAT+UIDL time and RETR throughput.

    python3 bench/pop3.py [--count 5000] [--reps 3] [--retr 0 (all)]
                          [--dovecot 127.0.0.1:11110:bob:bobpw:MAILDIR]

Starts mailsuite (``twistd -n mailsuite``, as an admin would) in a temporary directory,
puts ``--count`` messages into bob@example.test's INBOX (the generator of
bench/anchors/imap_bench.py, so both servers get the same bytes), logs in once to let
the store assign UIDs and write its index, then measures per repetition on a fresh
connection: login, STAT+UIDL, and RETR of every message one at a time (msg/s, MB/s).

With ``--dovecot`` the same is done against the Dovecot anchor of bench/anchors
(setup_anchors.sh; its bob maildir is loaded with the same messages, owned 5000:5000),
alternating the two servers rep by rep, and the paired ratios are printed
(mailsuite/dovecot: for times below 1 is faster, for throughput above 1 is faster).
Plaintext USER/PASS on loopback for both (the anchor runs without TLS), and {PLAIN}
stored passwords for both, so the figures compare the servers, not TLS or bcrypt.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from benchkit import BenchServer

ANCHORS = Path(__file__).resolve().parent / "anchors"
sys.path.insert(0, str(ANCHORS))

from imap_bench import small_message  # noqa: E402  (the anchor harness's generator)
from pop3_bench import Pop  # noqa: E402


def load(maildir: Path, count: int, chown: tuple[int, int] | None = None) -> None:
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
        if chown:
            os.chown(maildir / sub, *chown)
    rnd = random.Random(4321)
    base = int(time.time()) - 200000
    for i in range(count):
        msg = small_message(i, rnd)
        path = maildir / "new" / f"{base + i}.M{i}P{os.getpid()}.pop3bench,S={len(msg)}"
        path.write_bytes(msg)
        if chown:
            os.chown(path, *chown)


def stat_count(host: str, port: int, user: str, password: str) -> int:
    p = Pop(host, port)
    p.single(b"USER " + user.encode())
    p.single(b"PASS " + password.encode())
    n = int(p.single(b"STAT").split()[1])
    p.close()
    return n


def one_rep(host: str, port: int, user: str, password: str, retr: int) -> dict[str, float]:
    r: dict[str, float] = {}
    t0 = time.perf_counter()
    p = Pop(host, port)
    p.single(b"USER " + user.encode())
    p.single(b"PASS " + password.encode())
    r["login_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    n = int(p.single(b"STAT").split()[1])
    p.multi(b"UIDL")
    r["stat_uidl_ms"] = (time.perf_counter() - t0) * 1e3
    k = n if retr <= 0 else min(n, retr)
    t0 = time.perf_counter()
    nbytes = 0
    for i in range(1, k + 1):
        nbytes += p.multi(b"RETR %d" % i)
    elapsed = time.perf_counter() - t0
    r["retr_msg_s"] = k / elapsed
    r["retr_MB_s"] = nbytes / 1e6 / elapsed
    p.close()
    r["messages"] = n
    return r


def fmt(values: list[float], prec: int = 1) -> str:
    return f"{statistics.median(values):.{prec}f} [{min(values):.{prec}f}-{max(values):.{prec}f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--retr", type=int, default=0, help="messages to RETR per rep (0: all)")
    ap.add_argument("--dovecot", help="HOST:PORT:USER:PASS:MAILDIR of the Dovecot anchor")
    ap.add_argument("--processes", type=int, default=0, help="[server] processes (0 = one per core, the default)")
    a = ap.parse_args()

    user, password = "bob@example.test", "bobpw"
    # The anchor stores {PLAIN} passwords; so does this run, so that login compares the
    # servers and not the password hash (tens of ms per check at our default cost).
    srv = BenchServer("mailsuite-pop3-bench-", ["pop3"], {user: password},
                      {"server": {"allow_plaintext_auth": True, "processes": a.processes},
                       "pop3": {"max_connections_per_ip": 100}},
                      plain_passwords=True)
    load(srv.maildir(user), a.count)
    srv.start()
    servers = [("mailsuite", "127.0.0.1", srv.ports["pop3"], user, password)]
    try:
        if a.dovecot:
            host, port, duser, dpass, dmaildir = a.dovecot.split(":", 4)
            have = stat_count(host, int(port), duser, dpass)
            if have < a.count:
                load(Path(dmaildir), a.count - have, (5000, 5000))
            have = stat_count(host, int(port), duser, dpass)
            print(f"dovecot maildrop: {have} messages")
            servers.append(("dovecot", host, int(port), duser, dpass))
        t0 = time.perf_counter()
        n = stat_count("127.0.0.1", srv.ports["pop3"], user, password)
        print(f"mailsuite maildrop: {n} messages (first login, UIDs + index: {time.perf_counter() - t0:.2f} s)")
        results: dict[str, list[dict[str, float]]] = {s[0]: [] for s in servers}
        for rep in range(a.reps):
            order = servers if rep % 2 == 0 else list(reversed(servers))
            for label, host, port, u, pw in order:
                r = one_rep(host, port, u, pw, a.retr)
                results[label].append(r)
                print(f"rep {rep} {label:9s}: login {r['login_ms']:.1f} ms, STAT+UIDL {r['stat_uidl_ms']:.1f} ms, "
                      f"RETR {r['retr_msg_s']:.0f} msg/s ({r['retr_MB_s']:.1f} MB/s)", flush=True)
        print()
        for label, rs in results.items():
            print(f"{label:9s} ({int(rs[0]['messages'])} msgs, {len(rs)} reps): "
                  f"login {fmt([r['login_ms'] for r in rs])} ms; STAT+UIDL {fmt([r['stat_uidl_ms'] for r in rs])} ms; "
                  f"RETR {fmt([r['retr_msg_s'] for r in rs])} msg/s, {fmt([r['retr_MB_s'] for r in rs])} MB/s")
        if "dovecot" in results:
            ms, dv = results["mailsuite"], results["dovecot"]
            for key, kind in (("login_ms", "time"), ("stat_uidl_ms", "time"), ("retr_msg_s", "rate"), ("retr_MB_s", "rate")):
                ratios = [m[key] / d[key] for m, d in zip(ms, dv)]
                better = "lower is faster" if kind == "time" else "higher is faster"
                print(f"ratio mailsuite/dovecot {key}: {fmt(ratios, 2)} ({better})")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
