"""CPU cost of the IMAP data modules per message, on the messages the IMAP benchmark uses.

    python bench/imap_mime.py [--count 10000]

Prints, per operation, CPU milliseconds for the whole folder and microseconds per
message: parse, ENVELOPE, BODYSTRUCTURE (what the index caches once per message),
BODY[HEADER.FIELDS] and BODY[TEXT] sections, and the SEARCH matcher on a header and
on the body (file reading excluded: that is the server's part). With --dovecot it also
times Dovecot's own imap binary (preauth over stdin, no server) answering
FETCH 1:* (ENVELOPE BODYSTRUCTURE) cold, i.e. parsing every message, and warm (from
its cache), for comparison on the same messages.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailsuite import mime
from mailsuite.imap import msgdata, search

sys.path.insert(0, str(Path(__file__).resolve().parent / "anchors"))


def messages(count: int) -> list[bytes]:
    try:
        import imap_bench  # the anchor harness: same messages as the anchors get

        rnd = random.Random(1)
        return [imap_bench.small_message(i, rnd).replace(b"\r\n", b"\n") for i in range(count)]
    except ImportError:
        return [
            b"From: \"Sender %d\" <s%d@example.org>\nTo: a@example.test\nSubject: test %d\n"
            b"Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <%d@x>\n\nbody needle-%d\n" % (i, i, i, i, i)
            for i in range(count)
        ]


def timed(label: str, n: int, fn) -> None:  # type: ignore[no-untyped-def]
    t0 = time.process_time()
    fn()
    dt = time.process_time() - t0
    print(f"{label:38s} {dt * 1000:9.1f} ms CPU  {dt / n * 1e6:7.1f} us/msg")


class Rec:
    uid = 1
    flags = frozenset()
    keywords = frozenset()
    size = 3000
    internaldate = 0.0
    recent = False


class Src:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def header(self) -> bytes:
        return self.data

    def message(self) -> bytes:
        return self.data


def dovecot(msgs: list[bytes]) -> None:
    binary = "/usr/lib/dovecot/imap"
    if not os.path.exists(binary) or os.geteuid() != 0:
        print("dovecot: not available (needs /usr/lib/dovecot/imap and root)")
        return
    root = Path(tempfile.mkdtemp(prefix="mime-bench-"))
    try:
        root.chmod(0o755)
        mail = root / "mail"
        for sub in ("cur", "new", "tmp"):
            (mail / sub).mkdir(parents=True)
        for i, data in enumerate(msgs):
            (mail / "cur" / f"{1000 + i}.m{i}.host:2,S").write_bytes(data)
        (root / "home").mkdir()
        conf = root / "dovecot.conf"
        conf.write_text(
            f"mail_location = maildir:{mail}\nlog_path = {root}/log\nbase_dir = {root}/run\n"
            f"state_dir = {root}/state\nmail_uid = nobody\nmail_gid = nogroup\n"
        )
        subprocess.run(["chown", "-R", "nobody:nogroup", str(root)], check=True)
        env = {"USER": "nobody", "HOME": str(root / "home"), "PATH": "/usr/bin:/bin"}
        for label in ("dovecot FETCH ENVELOPE+BODYSTRUCTURE cold", "dovecot same again, from its cache"):
            cmd = b"a SELECT INBOX\r\nb FETCH 1:* (ENVELOPE BODYSTRUCTURE)\r\nc LOGOUT\r\n"
            t0 = time.perf_counter()
            # Keep stdin open until LOGOUT is answered: at EOF Dovecot stops mid-FETCH.
            proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, env=env)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(cmd)
            proc.stdin.flush()
            chunks = []
            while True:
                chunk = proc.stdout.read1(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\nc OK" in chunks[-1] or (len(chunks) > 1 and b"\r\nc OK" in chunks[-2][-16:] + chunk):
                    break
            dt = time.perf_counter() - t0
            proc.stdin.close()
            proc.wait()
            out = b"".join(chunks)
            ok = out.count(b" FETCH (") == len(msgs)
            print(f"{label:38s} {dt * 1000:9.1f} ms wall {dt / len(msgs) * 1e6:7.1f} us/msg{'' if ok else '  (FAILED)'}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--dovecot", action="store_true", help="also time Dovecot's imap binary on the same messages")
    a = ap.parse_args()
    msgs = messages(a.count)
    n = len(msgs)
    timed("to_wire", n, lambda: [mime.to_wire(m) for m in msgs])
    timed("parse", n, lambda: [mime.parse(m) for m in msgs])
    parsed = [mime.parse(m) for m in msgs]
    timed("ENVELOPE", n, lambda: [msgdata.envelope(p) for p in parsed])
    timed("BODYSTRUCTURE", n, lambda: [msgdata.bodystructure(p) for p in parsed])
    timed("parse+ENVELOPE+BODYSTRUCTURE (cold)", n, lambda: [
        (msgdata.envelope(p), msgdata.bodystructure(p)) for p in (mime.parse(m) for m in msgs)])
    fields = msgdata.parse_section("HEADER.FIELDS (From To Subject Date Message-ID)")
    timed("BODY[HEADER.FIELDS (5 fields)]", n, lambda: [msgdata.section(p, fields) for p in parsed])
    text = msgdata.Section(text="TEXT")
    timed("BODY[TEXT]", n, lambda: [msgdata.section(p, text) for p in parsed])
    srcs = [Src(m) for m in msgs]
    for tokens in (["FROM", b"sender42@"], ["SUBJECT", b"about"], ["BODY", b"needle-77"], ["TEXT", b"needle-77"]):
        matcher = search.Matcher(search.parse(tokens), max_seq=n, max_uid=n)
        timed("SEARCH " + " ".join(t if isinstance(t, str) else t.decode() for t in tokens), n,
              lambda: [matcher.match(Rec, i + 1, srcs[i]) for i in range(n)])
    if a.dovecot:
        dovecot(msgs)


if __name__ == "__main__":
    main()
