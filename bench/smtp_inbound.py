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
../shared/bench uses for the Postfix anchor, so figures compare), else a small asyncio
client.  Like smtp-source, each message uses its own connection unless --reuse.
Exit status 1 if a message was refused or the Maildir count is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RCPT = "alice@example.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU so far of a process and its live descendants (the worker
    processes of [server] processes), all threads; 0 without a pid."""
    if not pid:
        return 0.0
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            f = _stat(p)
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
        todo.extend(children.get(p, []))
    return total / os.sysconf("SC_CLK_TCK")


def count_maildir(d: Path) -> int:
    return sum(len(os.listdir(d / sub)) for sub in ("new", "cur") if (d / sub).is_dir())


def empty_maildir(d: Path) -> None:
    for sub in ("new", "cur"):
        if (d / sub).is_dir():
            for name in os.listdir(d / sub):
                os.unlink(d / sub / name)


class BenchServer:
    """A throw-away mailsuite in a temporary folder, started with twistd like an admin
    would; waits until every port in ``ports`` accepts connections."""

    def __init__(self, prefix: str, config: str, ports: dict[str, int], users: dict[str, str]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.ports = ports
        twistd = shutil.which("twistd") or str(Path(sys.executable).with_name("twistd"))
        mailsuite = shutil.which("mailsuite") or str(Path(sys.executable).with_name("mailsuite"))
        (self.root / "mailsuite.toml").write_text(config)
        (self.root / "aliases").write_text("")
        for user, pw in users.items():
            subprocess.run([mailsuite, "user", "add", user, "--password-stdin", "--config",
                            str(self.root / "mailsuite.toml")], input=f"{pw}\n".encode(), check=True,
                           stdout=subprocess.DEVNULL)
        self.proc = subprocess.Popen(
            [twistd, "-n", "--pidfile=", f"--logfile={self.root / 'twistd.log'}", "mailsuite",
             "--config", str(self.root / "mailsuite.toml")], cwd=self.root)
        deadline = time.time() + 20
        for port in ports.values():
            while True:
                try:
                    # Wait for the greeting, not just the connect: with several
                    # processes the parent's socket accepts before a worker serves.
                    with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                        if s.recv(1):
                            break
                except OSError:
                    if time.time() > deadline or self.proc.poll() is not None:
                        self.stop()
                        raise SystemExit(f"mailsuite did not start; see {self.root / 'twistd.log'}")
                    time.sleep(0.05)
        self.maildir = self.root / "data" / "mail" / "example.test" / "alice"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class OwnServer(BenchServer):
    """mailsuite with only the MX listener, delivering to alice."""

    def __init__(self, threads: int | None, processes: int = 1) -> None:
        self.port = free_port()
        extra = f"thread_pool_size = {threads}\n" if threads else ""
        extra += f"processes = {processes}\n"
        config = (
            f'[server]\nhostname = "mail.example.test"\ndata_dir = "data"\ndomains = ["example.test"]\n{extra}'
            '[directory]\nusers_file = "users"\naliases_file = "aliases"\n'
            f'[smtp]\nlisten = ["tcp:{self.port}:interface=127.0.0.1"]\n'
            + "".join(f"[{s}]\nlisten = []\nlisten_tls = []\n" for s in ("submission", "imap", "pop3", "http", "managesieve"))
        )
        super().__init__("mailsuite-bench-", config, {"smtp": self.port}, {RCPT: "alicepw"})


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

    async def reply(reader: asyncio.StreamReader) -> int:
        while True:
            ln = await reader.readline()
            if not ln:
                raise ConnectionError("server closed the connection")
            if ln[3:4] != b"-":
                return int(ln[:3])

    async def worker() -> None:
        reader = writer = None
        while remaining[0] > 0:
            remaining[0] -= 1
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
                await reply(reader)
                writer.write(b"EHLO loadgen.test\r\n")
                await reply(reader)
            assert reader is not None
            writer.write(b"MAIL FROM:<sender@loadgen.test>\r\n")
            codes = [await reply(reader)]
            writer.write(b"RCPT TO:<%s>\r\n" % RCPT.encode())
            codes.append(await reply(reader))
            writer.write(b"DATA\r\n")
            codes.append(await reply(reader))
            writer.write(body)
            codes.append(await reply(reader))
            if codes != [250, 250, 354, 250]:
                failures[0] += 1
            if not reuse:
                writer.write(b"QUIT\r\n")
                await reply(reader)
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
        own = OwnServer(a.threads, a.processes)
        host, port, maildir = "127.0.0.1", own.port, own.maildir
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
