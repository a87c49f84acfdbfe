#!/usr/bin/env python3
"""Mail authentication benchmark: what SPF/DKIM/ARC/DMARC checks and DKIM signing cost.

    bench/mailauth.py [--count 1000] [--size-kb 4] [--concurrency 20] [--rounds 1]
                      [--only checks-off,checks-on] [--profile DIR]

Starts a twisted.names DNS server on loopback (tests/support/dns_server.py) that
publishes the load generator's SPF, DKIM key and DMARC p=reject, and throw-away
mailsuites (``twistd -n mailsuite``) one after the other, back to back:

1. inbound, checks off:  DKIM-signed 4 KB messages from "the world" (relay_networks
   does not hold 127.0.0.1), ``[smtp] check_authentication = false``;
2. inbound, checks on:   the same messages, SPF + DKIM + ARC + DMARC + the
   Authentication-Results field, DNS answers from the local server;
3. submission-like, unsigned: mail from a trusted network (127.0.0.1 in
   relay_networks) with From: a local domain without a key;
4. the same with a DKIM key: every message signed (rsa-sha256, 2048 bits).

Prints messages/s and server CPU ms per message for each, the on/off rate ratio of
1-2 (target >= 0.8), and the CPU per message that verifying (2 - 1) and signing
(4 - 3) add.  Each message is its own connection (as smtp-source does).

``--rounds N`` runs the four servers N times, alternating (off, on, unsigned, signed,
off, on, ...), so each on/off pair sees the same machine load; it prints every round
and the median of the per-round ratios and differences.  ``--profile DIR`` records
each measured phase with py-spy (``--threads``, on-CPU samples only, raw format) into DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import statistics
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import BenchServer, count_maildir, cpu_seconds, empty_maildir, free_port, smtp_code  # noqa: E402

RCPT = "alice@example.test"

HERE = Path(__file__).resolve().parent
DNS_SERVER = HERE.parent / "tests" / "support" / "dns_server.py"
MAILSUITE = str(Path(sys.executable).with_name("mailsuite"))


def make_key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    return pem, f"v=DKIM1; k=rsa; p={pub}"


def messages(n: int, size: int, from_addr: str, pem: bytes | None) -> list[bytes]:
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    out = []
    for i in range(n):
        head = (f"From: Load <{from_addr}>\r\nTo: <{RCPT}>\r\nSubject: bench {i}\r\n"
                f"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{i}.bench@loadgen.test>\r\n\r\n").encode()
        msg = head + line * max(1, (size - len(head)) // len(line))
        if pem is not None:
            msg = dkim.sign(msg, b"sel", b"loadgen.test", pem, canonicalize=(b"relaxed", b"relaxed"),
                            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + msg
        out.append(msg + b".\r\n")
    return out


async def _send_all(port: int, bodies: list[bytes], c: int) -> int:
    queue = list(reversed(bodies))
    failures = [0]

    async def worker() -> None:
        while queue:
            body = queue.pop()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await smtp_code(reader)
            writer.write(b"EHLO mx.loadgen.test\r\n")
            await smtp_code(reader)
            codes = []
            for cmd in (b"MAIL FROM:<bounce@loadgen.test>\r\n", f"RCPT TO:<{RCPT}>\r\n".encode(), b"DATA\r\n"):
                writer.write(cmd)
                codes.append(await smtp_code(reader))
            writer.write(body)
            codes.append(await smtp_code(reader))
            writer.write(b"QUIT\r\n")
            await smtp_code(reader)
            writer.close()
            if codes != [250, 250, 354, 250]:
                failures[0] += 1

    await asyncio.gather(*(worker() for _ in range(c)))
    return failures[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--size-kb", type=float, default=4)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", default="checks-off,checks-on,unsigned,signed",
                    help="comma-separated phases to run")
    ap.add_argument("--profile", metavar="DIR", help="py-spy record each measured phase into DIR")
    a = ap.parse_args()
    only = a.only.split(",")
    size = int(a.size_kb * 1024)
    pem, pub = make_key()
    tmp = Path(tempfile.mkdtemp(prefix="mailauth-bench-dns-"))
    zone = {
        "loadgen.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        "mx.loadgen.test": {"A": ["127.0.0.1"]},
        "sel._domainkey.loadgen.test": {"TXT": [pub]},
        "_dmarc.loadgen.test": {"TXT": ["v=DMARC1; p=reject"]},
    }
    (tmp / "zone.json").write_text(json.dumps(zone))
    dns_port = free_port()
    dns = subprocess.Popen([sys.executable, str(DNS_SERVER), str(dns_port), str(tmp / "zone.json")],
                           stdout=subprocess.PIPE)
    assert dns.stdout is not None and b"ready" in dns.stdout.readline()
    world = messages(a.count, size, "load@loadgen.test", pem)
    ours = messages(a.count, size, "alice@example.test", None)
    print(f"mailauth bench: {a.count} x {a.size_kb:g} KB, C={a.concurrency}, one connection per message, "
          f"one server process (load average {os.getloadavg()[0]:.1f})")
    rc = 0
    rounds: list[dict[str, tuple[float, float]]] = []
    try:
        for r in range(a.rounds):
            results: dict[str, tuple[float, float]] = {}
            for name, bodies, checks, trusted, key in (
                ("checks-off", world, False, False, False),
                ("checks-on", world, True, False, False),
                ("unsigned", ours, False, True, False),
                ("signed", ours, False, True, True),
            ):
                if name not in only:
                    continue
                prof = Path(a.profile) / f"{name}-{r}.txt" if a.profile else None
                rate, cpu, ok = run_server(name, dns_port, bodies, a.concurrency, checks, trusted, key, prof)
                results[name] = (rate, cpu)
                rc |= 0 if ok else 1
                print(f"  [{r + 1}] {name:11} {rate:8.1f} messages/s   server CPU {cpu:5.2f} ms/msg"
                      f"   (load {os.getloadavg()[0]:.1f}){'' if ok else '  FAILED'}", flush=True)
            rounds.append(results)
        summary(rounds)
    finally:
        dns.terminate()
        dns.wait(5)
    return rc


def summary(rounds: list[dict[str, tuple[float, float]]]) -> None:
    """Per-round ratios and differences, and their medians over the rounds."""
    def med(values: list[float]) -> str:
        if not values:
            return "-"
        return f"{statistics.median(values):.2f}" + (f" (min {min(values):.2f}, max {max(values):.2f}, "
                                                     f"{len(values)} rounds)" if len(values) > 1 else "")
    both = [r for r in rounds if "checks-on" in r and "checks-off" in r]
    sign = [r for r in rounds if "signed" in r and "unsigned" in r]
    print(f"  checks on/off rate ratio: {med([r['checks-on'][0] / r['checks-off'][0] for r in both])} (target >= 0.8)")
    print(f"  server CPU ms/msg checks off {med([r['checks-off'][1] for r in both])}, "
          f"on {med([r['checks-on'][1] for r in both])}")
    print(f"  verifying (SPF+DKIM+ARC+DMARC+A-R) adds "
          f"{med([r['checks-on'][1] - r['checks-off'][1] for r in both])} ms server CPU per message")
    print(f"  signing (rsa-sha256 2048) adds "
          f"{med([r['signed'][1] - r['unsigned'][1] for r in sign])} ms server CPU per message")


def run_server(name: str, dns_port: int, bodies: list[bytes], c: int, checks: bool, trusted: bool,
               key: bool, profile: Path | None = None) -> tuple[float, float, bool]:
    """One server (one process, so its CPU is all of the server's), with or without a
    DKIM key for example.test."""
    srv = BenchServer(f"mailauth-bench-{name}-", ["smtp"], {RCPT: "alicepw"}, {
        "server": {"relay_networks": ["127.0.0.0/8"] if trusted else ["10.99.0.0/16"], "processes": 1},
        "smtp": {"check_authentication": checks, "max_connections_per_ip": 200},
        "dns": {"nameservers": [f"127.0.0.1:{dns_port}"], "timeout": 2.0},
    })
    if key:
        subprocess.run([MAILSUITE, "dkim", "keygen", "--config", str(srv.config), "example.test"],
                       check=True, stdout=subprocess.DEVNULL)
    srv.start()
    port, maildir = srv.ports["smtp"], srv.maildir(RCPT)
    try:
        # Warm up (imports, the PSL, the DNS cache), then measure.
        asyncio.run(_send_all(port, bodies[:20], 5))
        wait_count(maildir, 20)
        empty_maildir(maildir)
        assert srv.proc is not None
        spy = None
        if profile is not None:
            profile.parent.mkdir(parents=True, exist_ok=True)
            py_spy = os.environ.get("PY_SPY") or shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
            spy = subprocess.Popen([py_spy, "record", "--threads", "--format", "raw", "--rate", "200",
                                    "-o", str(profile), "--pid", str(srv.proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        cpu0 = cpu_seconds(srv.proc.pid)
        t0 = time.monotonic()
        failed = asyncio.run(_send_all(port, bodies, c))
        dt = time.monotonic() - t0
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
            spy.wait(30)
        cpu = (cpu_seconds(srv.proc.pid) - cpu0) * 1000 / len(bodies)
        got = wait_count(maildir, len(bodies))
        if failed or got != len(bodies):
            print(f"  {name}: {failed} refused, maildir {got}/{len(bodies)}; log {srv.root / 'twistd.log'}")
            srv.stop(keep=True)
        return len(bodies) / dt, cpu, not failed and got == len(bodies)
    finally:
        srv.stop()


def wait_count(maildir: Path, n: int) -> int:
    deadline = time.time() + 10
    while count_maildir(maildir) < n and time.time() < deadline:
        time.sleep(0.1)
    return count_maildir(maildir)


if __name__ == "__main__":
    sys.exit(main())
