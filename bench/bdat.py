#!/usr/bin/env python3
"""BDAT versus DATA inbound: the same N messages of K KB to one local user over C
connections, once with DATA and once with one ``BDAT <n> LAST`` chunk per message.

    bench/bdat.py [--count 1000] [--size-kb 100] [--concurrency 20] [--rounds 2]

Starts its own mailsuite (bench/smtp_inbound.py's own_server: only the MX listener,
delivering to alice), alternates DATA and BDAT rounds so that load from elsewhere on
the machine hits both alike, checks the Maildir count after each round, and prints
messages/s and the server's CPU milliseconds per message per round (CPU is the figure
that load from elsewhere disturbs least), and the BDAT/DATA ratio of the medians.  The client is a small
asyncio loop, the same for both commands; each connection carries many messages
(RSET-free: MAIL after each 250), so the figure is the server's cost per message.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import count_maildir, cpu_seconds, empty_maildir, smtp_reply  # noqa: E402  (sibling module)
from smtp_inbound import RCPT, own_server  # noqa: E402  (sibling script)


def message(size: int) -> bytes:
    line = b"X" * 70 + b"\r\n"
    head = b"From: <sender@loadgen.test>\r\nTo: <%s>\r\nSubject: bench\r\n\r\n" % RCPT.encode()
    return head + line * max(1, (size - len(head)) // len(line))


async def _client(port: int, n: int, body: bytes, c: int, use_bdat: bool) -> int:
    remaining, failures = [n], [0]
    envelope = b"MAIL FROM:<sender@loadgen.test>\r\nRCPT TO:<%s>\r\n" % RCPT.encode()
    payload = (envelope + b"BDAT %d LAST\r\n" % len(body) + body) if use_bdat else (envelope + b"DATA\r\n")
    data_tail = body + b".\r\n"

    async def reply(reader: asyncio.StreamReader) -> int:
        return int((await smtp_reply(reader))[:3])

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reply(reader)
        writer.write(b"EHLO loadgen.test\r\n")
        await reply(reader)
        while remaining[0] > 0:
            remaining[0] -= 1
            # PIPELINING: MAIL, RCPT and the command (and for BDAT the chunk) in one write.
            writer.write(payload)
            codes = [await reply(reader), await reply(reader)]
            if not use_bdat:
                codes.append(await reply(reader))
                writer.write(data_tail)
            codes.append(await reply(reader))
            if codes != ([250, 250, 250] if use_bdat else [250, 250, 354, 250]):
                failures[0] += 1
        writer.write(b"QUIT\r\n")
        await reply(reader)
        writer.close()

    await asyncio.gather(*(worker() for _ in range(c)))
    return failures[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--size-kb", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    body = message(args.size_kb * 1024)
    srv = own_server(None).start()
    port, maildir = srv.ports["smtp"], srv.maildir(RCPT)
    rates: dict[str, list[float]] = {"DATA": [], "BDAT": []}
    cpu: dict[str, list[float]] = {"DATA": [], "BDAT": []}  # server CPU ms per message
    status = 0
    try:
        for r in range(args.rounds):
            for name in ("DATA", "BDAT"):
                empty_maildir(maildir)
                t0, c0 = time.monotonic(), cpu_seconds(srv.proc.pid if srv.proc else None)
                failures = asyncio.run(_client(port, args.count, body, args.concurrency, name == "BDAT"))
                dt = time.monotonic() - t0
                cpu[name].append((cpu_seconds(srv.proc.pid if srv.proc else None) - c0) * 1000 / args.count)
                got = count_maildir(maildir)
                ok = failures == 0 and got == args.count
                status |= 0 if ok else 1
                rates[name].append(args.count / dt)
                print(f"round {r + 1} {name}: {args.count} x {args.size_kb} KB, C={args.concurrency}: "
                      f"{args.count / dt:7.1f} msg/s, server CPU {cpu[name][-1]:.2f} ms/msg  ({got} in the Maildir{'' if ok else ', FAILED'})", flush=True)
    finally:
        srv.stop()
    data, bdat = statistics.median(rates["DATA"]), statistics.median(rates["BDAT"])
    print(f"median DATA {data:.1f} msg/s, BDAT {bdat:.1f} msg/s: BDAT/DATA = {bdat / data:.2f}x; "
          f"server CPU per message DATA {statistics.median(cpu['DATA']):.2f} ms, "
          f"BDAT {statistics.median(cpu['BDAT']):.2f} ms")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
