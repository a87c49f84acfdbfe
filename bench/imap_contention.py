#!/usr/bin/env python3
"""IMAP under contention: 10 sessions on one folder, mailsuite and Dovecot back to back.

  python bench/imap_contention.py [--sessions 10] [--ops 100] [--rounds 3] [--count 2000]
                                  [--dovecot-port 11143] [--no-dovecot] [--seed 7] [--processes N]

Starts mailsuite (``twistd -n mailsuite``) on a free loopback port with the account
alice@example.test and loads the folder ``contention`` with --count messages straight
into the Maildir (the anchor harness's generator, bench/anchors/imap_bench.py); the
Dovecot anchor (bench/anchors/setup_anchors.sh, alice/alicepw on --dovecot-port) gets
the same messages.  Then rounds alternate between the servers (mailsuite, Dovecot,
Dovecot, mailsuite, ...: the order flips every round so neither always goes first).
In a round, --sessions connections log in, SELECT the folder, and each runs --ops
commands drawn with the same seed on both servers, as fast as their replies come:

  APPEND   a new 2-4 KB message (LITERAL+ when advertised); the session remembers its
           UID (APPENDUID) as one it may later delete
  STORE    UID STORE <a loaded message> +FLAGS or -FLAGS (\\Flagged), with the
           untagged FETCH that follows
  EXPUNGE  UID STORE <its oldest own message> +FLAGS.SILENT (\\Deleted) (untimed),
           then EXPUNGE (timed: the command that rewrites the folder)
  FETCH    UID FETCH <a loaded message> (FLAGS BODY.PEEK[])

so the folder stays at about --count messages while every session sees the others'
EXISTS, EXPUNGE and FETCH updates.  Loaded messages are never deleted, so the UIDs
picked for STORE and FETCH stay valid.  At the end of a round each session expunges
what it still owns.

Prints per command and server the median and p95 latency in ms over all rounds, the
ratio mailsuite/Dovecot of the medians and p95s (below 1 is faster), the median of
the per-round ratios of medians with their range, the mean latency per command, each
server's CPU seconds per round (all processes of the server) and the round's wall
time (when the last session is done).  The issue's target is a ratio of medians of at
most 1.0 for every command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchkit import BenchServer

ANCHORS = Path(__file__).resolve().parent / "anchors"
sys.path.insert(0, str(ANCHORS))

from benchlib import tree_cpu  # noqa: E402  (counts reaped children: Dovecot's imap processes exit at LOGOUT)
from imap_bench import small_message  # noqa: E402  (the anchor harness's generator)

FOLDER = "contention"
COMMANDS = ("APPEND", "STORE", "EXPUNGE", "FETCH")
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]", re.I)


class Session:
    """One IMAP connection: send a command, read until its tagged reply (literals in
    untagged responses are skipped by their byte count)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.n = 0
        self.literal_plus = False

    @classmethod
    async def open(cls, port: int, user: str, password: str) -> "Session":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        s = cls(reader, writer)
        await reader.readline()  # greeting
        caps = await s.cmd(b"CAPABILITY")
        s.literal_plus = b"LITERAL+" in caps.upper()
        await s.cmd(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))
        await s.cmd(b"SELECT " + FOLDER.encode())
        return s

    async def _until_tagged(self, tag: bytes) -> bytes:
        out = []
        while True:
            line = await self.r.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            out.append(line)
            m = _LITERAL.search(line)
            if m:
                out.append(await self.r.readexactly(int(m.group(1))))
                continue
            if line.startswith(tag + b" "):
                if not line[len(tag) + 1:].upper().startswith(b"OK"):
                    raise RuntimeError(line.decode(errors="replace").strip())
                return b"".join(out)

    async def cmd(self, command: bytes) -> bytes:
        self.n += 1
        tag = b"C%d" % self.n
        self.w.write(tag + b" " + command + b"\r\n")
        return await self._until_tagged(tag)

    async def append(self, message: bytes) -> int | None:
        self.n += 1
        tag = b"C%d" % self.n
        head = tag + b" APPEND %s {%d%s}\r\n" % (FOLDER.encode(), len(message), b"+" if self.literal_plus else b"")
        self.w.write(head)
        if not self.literal_plus:
            line = await self.r.readline()
            if not line.startswith(b"+"):
                raise RuntimeError(line.decode(errors="replace").strip())
        self.w.write(message + b"\r\n")
        reply = await self._until_tagged(tag)
        m = _APPENDUID.search(reply)
        return int(m.group(1)) if m else None

    async def close(self) -> None:
        try:
            await self.cmd(b"LOGOUT")
        except (ConnectionError, RuntimeError):
            pass
        self.w.close()


def plan(seed: int, sessions: int, ops: int) -> list[list[str]]:
    """The command sequence of every session, the same for both servers."""
    rnd = random.Random(seed)
    return [[rnd.choice(COMMANDS) for _ in range(ops)] for _ in range(sessions)]


async def one_session(port: int, user: str, password: str, steps: list[str], base_uids: list[int],
                      rnd: random.Random, start: asyncio.Event, times: dict[str, list[float]]) -> None:
    s = await Session.open(port, user, password)
    own: list[int] = []
    await start.wait()
    flagged = False
    for step in steps:
        t0 = time.perf_counter()
        if step == "APPEND":
            i = rnd.randrange(1_000_000)
            uid = await s.append(small_message(i, random.Random(i)))
            if uid:
                own.append(uid)
        elif step == "STORE":
            uid = rnd.choice(base_uids)
            flagged = not flagged
            await s.cmd(b"UID STORE %d %sFLAGS (\\Flagged)" % (uid, b"+" if flagged else b"-"))
        elif step == "EXPUNGE":
            if own:
                await s.cmd(b"UID STORE %d +FLAGS.SILENT (\\Deleted)" % own.pop(0))
            t0 = time.perf_counter()
            await s.cmd(b"EXPUNGE")
        else:
            await s.cmd(b"UID FETCH %d (FLAGS BODY.PEEK[])" % rnd.choice(base_uids))
        times[step].append(time.perf_counter() - t0)
    if own:
        await s.cmd(b"UID STORE %s +FLAGS.SILENT (\\Deleted)" % ",".join(map(str, own)).encode())
        await s.cmd(b"EXPUNGE")
    await s.close()


async def one_round(port: int, user: str, password: str, steps: list[list[str]], base_uids: list[int],
                    seed: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {c: [] for c in COMMANDS}
    start = asyncio.Event()
    tasks = [asyncio.ensure_future(one_session(port, user, password, st, base_uids, random.Random(seed * 1000 + k),
                                               start, times)) for k, st in enumerate(steps)]
    await asyncio.sleep(0.5)  # all logged in and selected before the clock starts
    start.set()
    await asyncio.gather(*tasks)
    return times


async def loaded_uids(port: int, user: str, password: str) -> list[int]:
    s = await Session.open(port, user, password)
    reply = await s.cmd(b"UID SEARCH ALL")
    await s.close()
    for line in reply.split(b"\r\n"):
        if line.upper().startswith(b"* SEARCH"):
            return [int(x) for x in line.split()[2:]]
    return []


def load(port: int, user: str, maildir: Path, count: int, chown: str | None) -> None:
    cmd = [sys.executable, str(ANCHORS / "imap_bench.py"), "127.0.0.1", str(port), user, "alicepw",
           "--mailbox", FOLDER, "--count", str(count), "--large", "0", "--repeat", "0", "--reset",
           "--load", f"maildir:{maildir}"] + (["--chown", chown] if chown else [])
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # exits 1 after a load-only run


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--ops", type=int, default=100, help="commands per session per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per server")
    ap.add_argument("--count", type=int, default=2000, help="messages loaded into the folder")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dovecot-port", type=int, default=int(os.environ.get("ANCHOR_DOVECOT_IMAP_PORT", 11143)))
    ap.add_argument("--no-dovecot", action="store_true")
    ap.add_argument("--processes", type=int, default=0, help="mailsuite's [server] processes (0: one per core)")
    a = ap.parse_args()

    ms = BenchServer("mailsuite-imap-contention-", ["imap"], {"alice@example.test": "alicepw"},
                     {"server": {"allow_plaintext_auth": True, "processes": a.processes},
                      "imap": {"max_connections_per_ip": 2000}, "limits": {"auth_exempt_networks": ["127.0.0.0/8"]}}, plain_passwords=True).start()
    anchor = Path(os.environ.get("ANCHOR_ROOT", "/tmp/mailsuite-anchors"))
    servers = {"mailsuite": (ms.ports["imap"], "alice@example.test", ms.maildir("alice@example.test") / f".{FOLDER}",
                             None, lambda: ms.proc.pid)}
    if not a.no_dovecot:
        pidfile = anchor / "dovecot-run" / "master.pid"
        servers["dovecot"] = (a.dovecot_port, "alice", anchor / "dovecot-mail" / "alice" / f".{FOLDER}", "5000:5000",
                              lambda: int(pidfile.read_text().strip()) if pidfile.exists() else None)
    try:
        base: dict[str, list[int]] = {}
        for label, (port, user, maildir, chown, _) in servers.items():
            try:
                load(port, user, maildir, a.count, chown)
                base[label] = asyncio.run(loaded_uids(port, user, "alicepw"))  # also the first (cold) SELECT
            except OSError as e:
                if label == "mailsuite":
                    raise
                print(f"Dovecot anchor not answering on {port} ({e}); mailsuite figures only", flush=True)
            else:
                print(f"{label}: {len(base[label])} messages in {FOLDER}", flush=True)
        labels = [lab for lab in servers if lab in base]
        steps = plan(a.seed, a.sessions, a.ops)
        times = {lab: {c: [] for c in COMMANDS} for lab in labels}
        per_round: dict[str, list[dict[str, float]]] = {lab: [] for lab in labels}
        cpu: dict[str, list[float]] = {lab: [] for lab in labels}
        walls: dict[str, list[float]] = {lab: [] for lab in labels}
        for rnd in range(a.rounds):
            order = labels if rnd % 2 == 0 else labels[::-1]
            for lab in order:
                port, user, _, _, pid = servers[lab]
                c0 = tree_cpu(pid())
                t0 = time.perf_counter()
                got = asyncio.run(one_round(port, user, "alicepw", steps, base[lab], a.seed + rnd))
                wall = time.perf_counter() - t0
                cpu[lab].append(tree_cpu(pid()) - c0)
                walls[lab].append(wall)
                for c in COMMANDS:
                    times[lab][c].extend(got[c])
                per_round[lab].append({c: statistics.median(got[c]) for c in COMMANDS if got[c]})
                print(f"round {rnd} {lab:9s} {wall:6.2f} s, server CPU {cpu[lab][-1]:.2f} s, load {os.getloadavg()[0]:.1f}: "
                      + "  ".join(f"{c} {per_round[lab][-1].get(c, 0) * 1000:.1f}" for c in COMMANDS) + " (median ms)",
                      flush=True)
        print(f"\n### IMAP contention: {a.sessions} sessions x {a.ops} commands, {a.rounds} rounds per server, "
              f"folder of {a.count} messages (latency in ms)\n")
        ref = "dovecot" if "dovecot" in labels else None
        head = "| command | " + " | ".join(f"{lab} median | {lab} p95" for lab in labels)
        if ref:
            head += " | median ratio | p95 ratio | per-round median ratios"
        print(head + " |")
        print("|---" * (1 + 2 * len(labels) + (3 if ref else 0)) + "|")
        for c in COMMANDS:
            row = f"| {c} | " + " | ".join(f"{statistics.median(times[lab][c]) * 1000:.1f} | {pct(times[lab][c], 0.95) * 1000:.1f}"
                                          for lab in labels)
            if ref:
                m = statistics.median(times["mailsuite"][c]) / statistics.median(times[ref][c])
                p = pct(times["mailsuite"][c], 0.95) / pct(times[ref][c], 0.95)
                rr = [x[c] / y[c] for x, y in zip(per_round["mailsuite"], per_round[ref]) if c in x and c in y]
                row += f" | {m:.2f} | {p:.2f} | {statistics.median(rr):.2f} [{min(rr):.2f}–{max(rr):.2f}]"
            print(row + " |")
        print("\nmean latency in ms (what a session waits on average; a server that lets some sessions "
              "wait long has a low median and a high mean):")
        for c in COMMANDS:
            print(f"  {c:8s} " + ", ".join(f"{lab} {statistics.fmean(times[lab][c]) * 1000:.1f}" for lab in labels if times[lab][c]))
        print("server CPU s per round: " + ", ".join(f"{lab} {statistics.median(cpu[lab]):.2f}" for lab in labels))
        print("round wall time s (every session's commands done): "
              + ", ".join(f"{lab} {statistics.median(walls[lab]):.2f}" for lab in labels))
    finally:
        ms.stop()


if __name__ == "__main__":
    main()
