"""Relay throughput: N messages of K bytes accepted for a remote domain, relayed to a sink.

    python bench/relay.py [--count 2000] [--size 4096] [--sessions 20] [--reuse]

Starts Postfix's smtp-sink on loopback and a fresh mailsuite (twistd, as an admin would)
whose ``[relay.transport]`` sends remote.test to the sink, then drives mailsuite's SMTP
port with smtp-source (C; so the load generator does not compete for the Python
process's core).  Every message is spooled (fsync of body, envelope and folder)
before its 250.  Prints messages/s from the first accept to the last delivery (the
moment the spool is empty; every message's "status=sent" line is then checked in the
log), and the accept rate alone.

``--postfix PORT`` instead drives a running Postfix at 127.0.0.1:PORT whose transport
map sends remote.test to ``--sink-port`` (bench/anchors/postfix_relay_anchor.sh sets one up),
for a back-to-back anchor; deliveries are counted in its maillog.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchkit import BenchServer, cpu_by_process, free_port

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def start_sink(port: int, dump_dir: Path | None) -> subprocess.Popen:
    args = [SMTP_SINK, "-u", "nobody"]
    if dump_dir is not None:
        args += ["-d", str(dump_dir / "m.")]
    args += [f"127.0.0.1:{port}", "256"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc


def run_source(port: int, count: int, size: int, sessions: int, reuse: bool) -> float:
    args = [SMTP_SOURCE, "-s", str(sessions), "-m", str(count), "-l", str(size),
            "-f", "alice@example.test", "-t", "bob@remote.test"]
    if reuse:
        args.append("-d")
    args.append(f"127.0.0.1:{port}")
    t0 = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - t0


def bench_mailsuite(a: argparse.Namespace) -> None:
    sink_port = free_port()
    sink = start_sink(sink_port, None)
    # The per-IP limit (20) would refuse smtp-source's reconnects racing the closes.
    srv = BenchServer("mailsuite-relay-bench-", ["smtp"], {"alice@example.test": "alicepw"},
                      {"relay": {"transport": {"remote.test": f"127.0.0.1:{sink_port}"},
                                 "destination_concurrency": a.concurrency},
                       "smtp": {"max_connections_per_ip": 1000},
                       "server": {"processes": a.processes},
                       "dns": {"nameservers": ["127.0.0.1:1"]}}).start()  # no query leaves loopback
    spool = srv.root / "data" / "queue" / "spool"
    try:
        assert srv.proc is not None
        cpu0 = cpu_by_process(srv.proc.pid)
        t0 = time.perf_counter()
        accept_s = run_source(srv.ports["smtp"], a.count, a.size, a.sessions, a.reuse)
        while any(spool.iterdir()):
            time.sleep(0.005)
        total = time.perf_counter() - t0
        cpu1 = cpu_by_process(srv.proc.pid)
        cpu = sum(cpu1.values()) - sum(cpu0.values())
        parent_cpu = cpu1.get(srv.proc.pid, 0.0) - cpu0.get(srv.proc.pid, 0.0)
        deadline = time.time() + 10
        sent = 0
        while time.time() < deadline:
            # twistd rotates its log at 1 MB: count in every part.
            sent = sum(len(re.findall(r"status=sent", p.read_text(errors="replace")))
                       for p in srv.root.glob("twistd.log*"))
            if sent >= a.count:
                break
            time.sleep(0.2)
        print(f"mailsuite relay: {a.count} x {a.size} B, {a.sessions} sessions{' (reuse)' if a.reuse else ''}, "
              f"destination_concurrency={a.concurrency}")
        print(f"  accepted: {a.count / accept_s:8.1f} msg/s  ({accept_s:.2f} s)")
        print(f"  accept -> delivered at sink: {a.count / total:8.1f} msg/s  ({total:.2f} s)")
        print(f"  server CPU: {1000 * cpu / a.count:.2f} ms/msg (receive + spool + relay); "
              f"the parent's share {1000 * parent_cpu / a.count:.2f} ms/msg, {100 * parent_cpu / total:.0f}% of a core")
        print(f"  status=sent lines: {sent} of {a.count}")
        if sent != a.count:
            print("  ERROR: not every message was delivered", file=sys.stderr)
            sys.exit(1)
    finally:
        srv.stop(keep=a.keep)
        sink.terminate()
        sink.wait()
        if a.keep:
            print(f"  kept {srv.root}")


def bench_postfix(a: argparse.Namespace) -> None:
    # The same sink as for mailsuite (no dumps); deliveries are counted in Postfix's
    # own log ("status=sent" lines written after this run started).
    maillog = Path(a.maillog)
    before = maillog.read_text(errors="replace").count("status=sent") if maillog.exists() else 0
    sink = start_sink(a.sink_port, None)
    try:
        t0 = time.perf_counter()
        accept_s = run_source(a.postfix, a.count, a.size, a.sessions, a.reuse)
        deadline = time.time() + 120
        n = 0
        while time.time() < deadline:
            n = maillog.read_text(errors="replace").count("status=sent") - before
            if n >= a.count:
                break
            time.sleep(0.01)
        total = time.perf_counter() - t0
        print(f"postfix relay: {a.count} x {a.size} B, {a.sessions} sessions{' (reuse)' if a.reuse else ''}")
        print(f"  accepted: {a.count / accept_s:8.1f} msg/s  ({accept_s:.2f} s)")
        print(f"  accept -> delivered at sink: {a.count / total:8.1f} msg/s  ({total:.2f} s)  [{n} status=sent]")
    finally:
        sink.terminate()
        sink.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=20, help="relay.destination_concurrency")
    ap.add_argument("--reuse", action="store_true", help="smtp-source -d: several messages per connection")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (log, spool)")
    ap.add_argument("--postfix", type=int, default=0, metavar="PORT", help="drive a Postfix anchor instead")
    ap.add_argument("--sink-port", type=int, default=10099, help="with --postfix: the sink port its transport names")
    ap.add_argument("--maillog", default="/tmp/mailsuite-pfrelay/data/maillog", help="with --postfix: its maillog_file")
    ap.add_argument("--processes", type=int, default=0, help="[server] processes (0 = one per core, the default)")
    a = ap.parse_args()
    if a.postfix:
        bench_postfix(a)
    else:
        bench_mailsuite(a)


if __name__ == "__main__":
    main()
