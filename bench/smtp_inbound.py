#!/usr/bin/env python3
"""SMTP inbound benchmark: N messages of K KB to one local user over C connections.

    bench/smtp_inbound.py [--count 2000] [--size-kb 4] [--concurrency 1 20]
                          [--client auto|smtp-source|python] [--reuse]
                          [--server HOST:PORT --maildir DIR]

Without --server it starts its own mailsuite (``twistd -n mailsuite``) in a temporary
folder on a free loopback port, exactly as an admin would, and stops it at the end.
For each concurrency it empties the recipient's Maildir, sends the messages, and
prints messages/s (wall time until the last 250 after DATA; mailsuite answers 250 only
once the message is fsynced in the Maildir) and checks that exactly N files arrived.

The load generator is Postfix's ``smtp-source`` when installed (the one
bench/anchors uses for the Postfix anchor, so figures compare), else a small asyncio
client.  Like smtp-source, each message uses its own connection unless --reuse.
Exit status 1 if a message was refused or the Maildir count is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchkit import BenchServer, count_maildir, cpu_seconds, empty_maildir, smtp_code

RCPT = "alice@example.test"


def own_server(threads: int | None, processes: int = 1) -> BenchServer:
    """mailsuite with only the MX listener, delivering to alice."""
    server: dict[str, int] = {"processes": processes}
    if threads:
        server["thread_pool_size"] = threads
    return BenchServer("mailsuite-bench-", ["smtp"], {RCPT: "alicepw"}, {"server": server})


def run_smtp_source(host: str, port: int, n: int, size: int, c: int, reuse: bool) -> tuple[float, int]:
    cmd = ["smtp-source", "-s", str(c), "-m", str(n), "-l", str(size), "-f", "sender@loadgen.test",
           "-t", RCPT, "-M", "loadgen.test"] + (["-d"] if reuse else []) + [f"{host}:{port}"]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        print(f"  smtp-source failed: {p.stderr.strip() or p.stdout.strip()}")
    return dt, p.returncode


async def _python_client(host: str, port: int, n: int, size: int, c: int, reuse: bool) -> int:
    line = b"X" * 70 + b"\r\n"
    body = b"From: <sender@loadgen.test>\r\nTo: <%s>\r\nSubject: bench\r\n\r\n" % RCPT.encode()
    body += line * max(1, (size - len(body)) // len(line)) + b".\r\n"
    remaining = [n]
    failures = [0]

    async def worker() -> None:
        reader = writer = None
        while remaining[0] > 0:
            remaining[0] -= 1
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
                await smtp_code(reader)
                writer.write(b"EHLO loadgen.test\r\n")
                await smtp_code(reader)
            assert reader is not None
            writer.write(b"MAIL FROM:<sender@loadgen.test>\r\n")
            codes = [await smtp_code(reader)]
            writer.write(b"RCPT TO:<%s>\r\n" % RCPT.encode())
            codes.append(await smtp_code(reader))
            writer.write(b"DATA\r\n")
            codes.append(await smtp_code(reader))
            writer.write(body)
            codes.append(await smtp_code(reader))
            if codes != [250, 250, 354, 250]:
                failures[0] += 1
            if not reuse:
                writer.write(b"QUIT\r\n")
                await smtp_code(reader)
                writer.close()
                writer = None
        if writer is not None:
            writer.write(b"QUIT\r\n")
            writer.close()

    await asyncio.gather(*(worker() for _ in range(c)))
    return failures[0]


def run_python(host: str, port: int, n: int, size: int, c: int, reuse: bool) -> tuple[float, int]:
    t0 = time.monotonic()
    failures = asyncio.run(_python_client(host, port, n, size, c, reuse))
    dt = time.monotonic() - t0
    if failures:
        print(f"  {failures} message(s) not accepted")
    return dt, 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--size-kb", type=float, default=4)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 20])
    ap.add_argument("--client", choices=("auto", "smtp-source", "python"), default="auto")
    ap.add_argument("--reuse", action="store_true", help="several messages per connection")
    ap.add_argument("--server", metavar="HOST:PORT", help="a running server (default: start one)")
    ap.add_argument("--maildir", type=Path, help=f"the Maildir of {RCPT} on --server")
    ap.add_argument("--threads", type=int, help="server.thread_pool_size for the server started here")
    ap.add_argument("--server-pid", type=int, help="pid of --server, to report its CPU per message")
    ap.add_argument("--processes", type=int, default=1,
                    help="[server] processes for the server started here (0 = one per core)")
    a = ap.parse_args()
    client = a.client
    if client == "auto":
        client = "smtp-source" if shutil.which("smtp-source") else "python"
    send = run_smtp_source if client == "smtp-source" else run_python
    own = None
    if a.server:
        host, _, port_s = a.server.rpartition(":")
        port = int(port_s)
        if a.maildir is None:
            ap.error("--server needs --maildir")
        maildir = a.maildir
    else:
        own = own_server(a.threads, a.processes).start()
        host, port, maildir = "127.0.0.1", own.ports["smtp"], own.maildir(RCPT)
        a.server_pid = own.proc.pid
    size = int(a.size_kb * 1024)
    rc = 0
    try:
        procs = "" if a.server else f", processes={a.processes or os.cpu_count()}"
        print(f"mailsuite SMTP inbound{procs}: {a.count} x {a.size_kb:g} KB to {RCPT} at {host}:{port}, "
              f"client {client}{', reusing connections' if a.reuse else ', one connection per message'}")
        for c in a.concurrency:
            empty_maildir(maildir)
            os.sync()
            cpu0 = cpu_seconds(a.server_pid)
            dt, failed = send(host, port, a.count, size, c, a.reuse)
            cpu = (cpu_seconds(a.server_pid) - cpu0) * 1000 / a.count
            got = count_maildir(maildir)
            ok = got == a.count and not failed
            rc |= 0 if ok else 1
            cpu_text = f"  server CPU {cpu:.2f} ms/msg" if a.server_pid else ""
            print(f"  C={c:<3} {a.count / dt:8.1f} messages/s  ({dt:.2f} s)  maildir {got}/{a.count}{cpu_text}"
                  f"{'' if ok else '  FAILED'}")
    finally:
        if own is not None:
            own.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
