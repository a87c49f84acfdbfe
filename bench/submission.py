#!/usr/bin/env python3
"""Submission benchmark: what TLS and AUTH cost per mail-client session.

    bench/submission.py [--count 1000] [--concurrency 1 20] [--size-kb 4]
                        [--modes starttls starttls-auth implicit-auth handshake]
                        [--server HOST:PORT --tls-port PORT --maildir DIR --auth USER:PASS
                         --rcpt ADDR --label NAME]

Each session is one new connection, as a mail client makes it: a full TLS handshake
(no resumption), optionally AUTH PLAIN, one message of --size-kb, QUIT.  Modes:

* ``starttls``       EHLO, STARTTLS, EHLO, MAIL, RCPT, DATA   (MX-style, no AUTH)
* ``starttls-auth``  the same with AUTH PLAIN after the second EHLO (port 587)
* ``implicit-auth``  TLS from the first byte (port 465), EHLO, AUTH PLAIN, message
* ``handshake``      TLS from the first byte, greeting, QUIT  (the handshake alone)

Without --server it starts its own mailsuite (``twistd -n mailsuite``) in a temporary
folder, with its MX port, 587 and 465 on free loopback ports, and stops it at the end;
for that server (or --pid) it also prints the server's CPU milliseconds per session.  With
--server it measures a running server (e.g. the Postfix anchor with STARTTLS, see
bench/submission_anchor.sh); --tls-port is its implicit-TLS port.  Prints sessions/s
(wall time of all sessions) and the median and 95th-percentile session time, and
checks the recipient's Maildir when --maildir is known.  Exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import ssl
import statistics
import sys
import time
from pathlib import Path

from benchkit import BenchServer, count_maildir, empty_maildir, smtp_code
from smtp_inbound import RCPT  # sibling script: the same recipient

USER, PASSWORD = "bob@example.test", "bobpw"




def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and all its descendants, including reaped children (so a
    Postfix master counts the smtpd, cleanup and virtual processes it ran)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[1] is ppid; 11-14: utime, stime, cutime, cstime
        stats[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
        todo.extend(q for q, (ppid, _) in stats.items() if ppid == p)
    return total / os.sysconf("SC_CLK_TCK")


def own_server() -> BenchServer:
    """A throw-away mailsuite with MX, 587 and 465 listeners and a self-signed pair."""
    return BenchServer("mailsuite-subbench-", ["smtp", "submission", "submissions"], {RCPT: "alicepw", USER: PASSWORD},
                       {"smtp": {"max_connections_per_ip": 1000}, "submission": {"max_connections_per_ip": 1000},
                        "limits": {"messages_per_user": 0}})


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def session(host: str, port: int, mode: str, body: bytes, auth: tuple[str, str], rcpt: str,
                  ctx: ssl.SSLContext) -> None:
    implicit = mode in ("implicit-auth", "handshake")
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx if implicit else None,
                                                   server_hostname="mail.example.test" if implicit else None)
    try:
        async def cmd(line: bytes, want: int) -> None:
            writer.write(line + b"\r\n")
            code = await smtp_code(reader)
            if code != want:
                raise RuntimeError(f"{line[:20]!r} -> {code}")

        if await smtp_code(reader) != 220:
            raise RuntimeError("no greeting")
        if mode == "handshake":
            await cmd(b"QUIT", 221)
            return
        await cmd(b"EHLO loadgen.test", 250)
        if not implicit:
            await cmd(b"STARTTLS", 220)
            await writer.start_tls(ctx, server_hostname="mail.example.test")
            await cmd(b"EHLO loadgen.test", 250)
        sender = "sender@loadgen.test"
        if mode.endswith("-auth"):
            token = base64.b64encode(f"\0{auth[0]}\0{auth[1]}".encode())
            await cmd(b"AUTH PLAIN " + token, 235)
            sender = auth[0]
        await cmd(f"MAIL FROM:<{sender}>".encode(), 250)
        await cmd(f"RCPT TO:<{rcpt}>".encode(), 250)
        await cmd(b"DATA", 354)
        writer.write(body)
        if await smtp_code(reader) != 250:
            raise RuntimeError("message refused")
        await cmd(b"QUIT", 221)
    finally:
        writer.close()


async def run(host: str, port: int, mode: str, n: int, c: int, size: int, auth: tuple[str, str],
              rcpt: str) -> tuple[float, list[float], int]:
    line = b"X" * 70 + b"\r\n"
    head = f"From: <{auth[0]}>\r\nTo: <{rcpt}>\r\nSubject: bench\r\n\r\n".encode()
    body = head + line * max(1, (size - len(head)) // len(line)) + b".\r\n"
    ctx = client_context()
    remaining = [n]
    times: list[float] = []
    failures = [0]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            t0 = time.monotonic()
            try:
                await session(host, port, mode, body, auth, rcpt, ctx)
                times.append(time.monotonic() - t0)
            except (OSError, RuntimeError, ConnectionError, ssl.SSLError) as e:
                failures[0] += 1
                if failures[0] <= 3:
                    print(f"  session failed: {e}")

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(c)))
    return time.monotonic() - t0, times, failures[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 20])
    ap.add_argument("--size-kb", type=float, default=4)
    ap.add_argument("--modes", nargs="+", default=["starttls", "starttls-auth", "implicit-auth", "handshake"],
                    choices=["starttls", "starttls-auth", "implicit-auth", "handshake"])
    ap.add_argument("--server", metavar="HOST:PORT", help="a running server's STARTTLS port (default: start one)")
    ap.add_argument("--submission-port", type=int, help="its 587-style port (STARTTLS + AUTH)")
    ap.add_argument("--tls-port", type=int, help="its implicit-TLS port")
    ap.add_argument("--maildir", type=Path, help="the recipient's Maildir on --server")
    ap.add_argument("--auth", default=f"{USER}:{PASSWORD}", help="USER:PASS for the -auth modes")
    ap.add_argument("--rcpt", default=RCPT)
    ap.add_argument("--label", default="mailsuite")
    ap.add_argument("--pid", type=int, help="server process whose CPU (with descendants) to measure")
    a = ap.parse_args()
    user, _, pw = a.auth.partition(":")
    own = None
    if a.server:
        host, _, p = a.server.rpartition(":")
        ports = {"starttls": int(p), "starttls-auth": a.submission_port or int(p),
                 "implicit-auth": a.tls_port, "handshake": a.tls_port}
        maildir = a.maildir
    else:
        own = own_server().start()
        host = "127.0.0.1"
        ports = {"starttls": own.ports["smtp"], "starttls-auth": own.ports["submission"],
                 "implicit-auth": own.ports["submissions"], "handshake": own.ports["submissions"]}
        maildir = own.maildir(RCPT)
    pid = own.proc.pid if own else a.pid
    rc = 0
    try:
        print(f"{a.label}: {a.count} sessions per cell, {a.size_kb:g} KB messages, one connection per session")
        print(f"{'mode':<15} {'conc':>4} {'sessions/s':>10} {'p50 ms':>8} {'p95 ms':>8}"
              + (f" {'cpu ms/session':>14}" if pid else ""))
        for mode in a.modes:
            port = ports[mode]
            if port is None:
                print(f"{mode:<15} skipped (no port)")
                continue
            for c in a.concurrency:
                if maildir is not None:
                    empty_maildir(maildir)
                cpu0 = cpu_seconds(pid) if pid else 0.0
                dt, times, failed = asyncio.run(run(host, port, mode, a.count, c, int(a.size_kb * 1024),
                                                    (user, pw), a.rcpt))
                cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
                ok = len(times)
                q = statistics.quantiles(times, n=20) if len(times) >= 20 else [0.0] * 19
                line = (f"{mode:<15} {c:>4} {ok / dt:>10.1f} {statistics.median(times) * 1000 if times else 0:>8.1f}"
                        f" {q[18] * 1000:>8.1f}")
                if pid:
                    line += f" {cpu * 1000 / max(ok, 1):>14.2f}"
                if failed:
                    line += f"  FAILED {failed}"
                    rc = 1
                if maildir is not None and mode != "handshake":
                    deadline = time.time() + 30
                    while count_maildir(maildir) < ok and time.time() < deadline:
                        time.sleep(0.1)
                    got = count_maildir(maildir)
                    if got != ok:
                        line += f"  MAILDIR {got} != {ok}"
                        rc = 1
                print(line, flush=True)
    finally:
        if own:
            own.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
