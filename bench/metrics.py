#!/usr/bin/env python3
"""What metrics collection costs: SMTP inbound with ``[http] metrics`` on and off.

    bench/metrics.py [--count 2000] [--size-kb 4] [--concurrency 20] [--rounds 3]

Starts two throw-away mailsuites (benchkit.BenchServer) that differ only in
``[http] metrics`` (the one with metrics also serves /metrics, scraped every
``--scrape-interval`` seconds during the run, as Prometheus would), then sends the
same load to each in turn, alternating for ``--rounds`` rounds so that drift in the
machine's load hits both alike.  Prints messages/s and server CPU per message for
each run, the medians, and the cost of metrics in both (target: at most 3%).
CPU per message is the steadier figure on a shared machine.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

from benchkit import BenchServer, count_maildir, cpu_seconds, empty_maildir
from smtp_inbound import RCPT, run_python, run_smtp_source


class Server(BenchServer):
    """mailsuite with the MX listener; with ``metrics`` also [http] metrics on a listener."""

    def __init__(self, metrics: bool, processes: int = 0) -> None:
        super().__init__("mailsuite-metricsbench-", ["smtp", "http"] if metrics else ["smtp"], {RCPT: "alicepw"},
                         {"smtp": {"max_connections_per_ip": 1000}, "http": {"metrics": metrics},
                          "server": {"processes": processes}})
        self.metrics = metrics
        self.start()


class Scraper(threading.Thread):
    def __init__(self, url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.stop_event = threading.Event()
        self.scrapes = 0

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            with urllib.request.urlopen(self.url, timeout=5) as r:
                r.read()
            self.scrapes += 1


def one_run(srv: Server, send, count: int, size: int, c: int, scrape_interval: float) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    empty_maildir(srv.maildir(RCPT))
    scraper = None
    if srv.metrics and scrape_interval > 0:
        scraper = Scraper(f"http://127.0.0.1:{srv.ports['http']}/metrics", scrape_interval)
        scraper.start()
    cpu0 = cpu_seconds(srv.proc.pid)
    dt, failed = send("127.0.0.1", srv.ports["smtp"], count, size, c, False)
    cpu = (cpu_seconds(srv.proc.pid) - cpu0) * 1000 / count
    if scraper is not None:
        scraper.stop_event.set()
    got = count_maildir(srv.maildir(RCPT))
    if failed or got != count:
        raise SystemExit(f"run failed: maildir {got}/{count}")
    return count / dt, cpu


def hook_cost(n: int = 20000) -> float:
    """Microseconds of metrics work per inbound message, measured in-process: one
    counted connection (open, ~6 reads and ~7 writes through the wrapper, close), the
    received counter and the local delivery histogram, as an SMTP session does them."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from mailsuite.metrics import Metrics

    class Echo(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(b"250 ok\r\n")

    def session(factory: Factory) -> None:
        p = factory.buildProtocol(None)
        t = StringTransport()
        p.makeConnection(t)
        for _ in range(6):
            p.dataReceived(b"X\r\n")
        p.transport.write(b"220 hi\r\n")
        p.connectionLost(None)

    def run(factory: Factory, metrics: Metrics | None) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            session(factory)
            if metrics is not None:
                metrics.message_received("smtp")
                metrics.local_delivery(0.001)
        return time.perf_counter() - t0

    plain = Factory.forProtocol(Echo)
    m = Metrics(clock=Clock())
    counted = m.count_connections(plain, "smtp", "tcp:25")
    # Interleaved, best of 7 each: on a loaded machine the two sides see the same load.
    base, with_metrics = [], []
    for _ in range(7):
        base.append(run(plain, None))
        with_metrics.append(run(counted, m))
    return (min(with_metrics) - min(base)) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--size-kb", type=float, default=4)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scrape-interval", type=float, default=1.0, help="seconds; 0: no scraping")
    ap.add_argument("--client", choices=("auto", "smtp-source", "python"), default="auto")
    ap.add_argument("--processes", type=int, default=0, help="[server] processes of both servers (0: one per core)")
    a = ap.parse_args()
    client = a.client if a.client != "auto" else ("smtp-source" if shutil.which("smtp-source") else "python")
    send = run_smtp_source if client == "smtp-source" else run_python
    size = int(a.size_kb * 1024)
    on, off = Server(True, a.processes), Server(False, a.processes)
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    try:
        print(f"SMTP inbound, metrics on vs off: {a.count} x {a.size_kb:g} KB, C={a.concurrency}, client {client}, "
              f"scrape every {a.scrape_interval:g} s")
        one_run(on, send, 200, size, a.concurrency, 0)  # warm-up (imports, thread pool)
        one_run(off, send, 200, size, a.concurrency, 0)
        for r in range(a.rounds):
            for srv in ((on, off) if r % 2 == 0 else (off, on)):
                rate, cpu = one_run(srv, send, a.count, size, a.concurrency, a.scrape_interval)
                results[srv.metrics].append((rate, cpu))
                print(f"  round {r + 1} metrics {'on ' if srv.metrics else 'off'}: {rate:8.1f} messages/s  "
                      f"server CPU {cpu:.3f} ms/msg")
                time.sleep(0.5)
    finally:
        on.stop()
        off.stop()
    rate_on = statistics.median(x[0] for x in results[True])
    rate_off = statistics.median(x[0] for x in results[False])
    cpu_on = statistics.median(x[1] for x in results[True])
    cpu_off = statistics.median(x[1] for x in results[False])
    print(f"  median: on {rate_on:.1f} msg/s, {cpu_on:.3f} ms/msg; off {rate_off:.1f} msg/s, {cpu_off:.3f} ms/msg")
    us = hook_cost()
    print(f"  metrics work per message, measured in-process: {us:.1f} us "
          f"({100 * us / (cpu_off * 1000):.2f}% of {cpu_off:.3f} ms CPU per message)")
    print(f"  cost of metrics: throughput {100 * (rate_off - rate_on) / rate_off:+.1f}%, "
          f"CPU per message {100 * (cpu_on - cpu_off) / cpu_off:+.1f}%  (target: at most 3%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
