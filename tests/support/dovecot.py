"""Dovecot as the reference IMAP server: its answers for a corpus of messages, its imap
binary run preauthenticated on a Maildir, and realistic client-written messages."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DOVECOT_IMAP = "/usr/lib/dovecot/imap"


@contextmanager
def nobody_tmp() -> Iterator[Path]:
    """A temporary folder that Dovecot, dropped to "nobody", can enter (pytest's
    tmp_path is private), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="mailsuite-dovecot-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# Messages with the BODYSTRUCTURE and ENVELOPE that Dovecot 2.3.19 gives for them
# (captured from /usr/lib/dovecot/imap; mailsuite's output must be byte-identical).
DOVECOT_CORPUS: dict[str, tuple[bytes, bytes, bytes]] = {
    'simple': (
        b'From: "Doe, John" <john@example.com>\nTo: a@b.c, "B" <b@c.d>\nCc: undisclosed-recipients:;\nSubject: Hello\n  folded\nDate: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\nMessage-ID: <x@y>\nIn-Reply-To: <p@q>\n\nline1\nline2\n',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 2 NIL NIL NIL NIL)',
        b'("Mon, 7 Feb 1994 21:52:25 -0800 (PST)" {12}\r\nHello folded (("Doe, John" NIL "john" "example.com")) (("Doe, John" NIL "john" "example.com")) (("Doe, John" NIL "john" "example.com")) ((NIL NIL "a" "b.c")("B" NIL "b" "c.d")) ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL "<p@q>" "<x@y>")',
    ),
    'mixed': (
        b'From: a@b\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="BOUND"\n\npreamble\n--BOUND\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: quoted-printable\n\nh=C3=A4llo\n\n--BOUND\nContent-Type: application/pdf; name="Report Q1.PDF"\nContent-Disposition: attachment; filename="Report Q1.PDF"\nContent-Transfer-Encoding: base64\nContent-ID: <cid1>\nContent-Description: the report\nContent-Language: en, de\nContent-Location: http://x/y\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n\nJVBERi0xLjQK\n--BOUND--\nepilogue\n',
        b'(("text" "plain" ("charset" "UTF-8") NIL NIL "quoted-printable" 12 1 NIL NIL NIL NIL)("application" "pdf" ("name" "Report Q1.PDF") "<cid1>" "the report" "base64" 12 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("attachment" ("filename" "Report Q1.PDF")) ("en" "de") "http://x/y") "mixed" ("boundary" "BOUND") NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)',
    ),
    'nested': (
        b'From: a@b\nContent-Type: multipart/mixed; boundary=outer\n\n--outer\nContent-Type: multipart/alternative; boundary=inner\n\n--inner\nContent-Type: text/plain\n\nplain\n--inner\nContent-Type: text/html\n\n<b>html</b>\n--inner--\n\n--outer\nContent-Type: message/rfc822\n\nFrom: x@y\nSubject: inner msg\nContent-Type: multipart/mixed; boundary=b3\n\n--b3\n\nin1\n--b3\nContent-Type: image/png\n\nPNG\n--b3--\n\n--outer--\n',
        b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL)("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 11 0 NIL NIL NIL NIL) "alternative" ("boundary" "inner") NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 136 (NIL "inner msg" ((NIL NIL "x" "y")) ((NIL NIL "x" "y")) ((NIL NIL "x" "y")) NIL NIL NIL NIL NIL) (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0 NIL NIL NIL NIL)("image" "png" NIL NIL NIL "7bit" 3 NIL NIL NIL NIL) "mixed" ("boundary" "b3") NIL NIL NIL) 12 NIL NIL NIL NIL) "mixed" ("boundary" "outer") NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)',
    ),
    'noboundary': (
        b'From: a@b\nContent-Type: multipart/mixed\n\nno boundary here\n',
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" NIL NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)',
    ),
    'unterminated': (
        b'From: a@b\nContent-Type: multipart/mixed; boundary=x\n\n--x\n\npart one\n--x\nContent-Type: text/html\n\npart two never closed\n',
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 0 NIL NIL NIL NIL)("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 23 1 NIL NIL NIL NIL) "mixed" ("boundary" "x") NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)',
    ),
    'trailing_semicolon': (
        b'From: a@b\nContent-Type: text/plain; charset="ISO-8859-1";\n\nbody\n',
        b'("text" "plain" ("charset" "ISO-8859-1") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)',
    ),
    'rfc2231': (
        b"From: a@b\nContent-Type: application/octet-stream; name*0*=utf-8''%C3%A4bc; name*1=.txt\nContent-Disposition: attachment;\n filename*=utf-8''%E2%82%AC.txt\n\nxx\n",
        b'("application" "octet-stream" ("name*" "utf-8\'\'%C3%A4bc.txt") NIL NIL "7bit" 4 NIL ("attachment" ("filename*" "utf-8\'\'%E2%82%AC.txt")) NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)',
    ),
    'utf8hdr': (
        b'From: J\xc3\xb6rg <j\xc3\xb6rg@ex\xc3\xa4mple.de>\nSubject: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\n\nbody\n',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)',
        b'(NIL {17}\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln (({5}\r\nJ\xc3\xb6rg NIL {5}\r\nj\xc3\xb6rg {11}\r\nex\xc3\xa4mple.de)) (({5}\r\nJ\xc3\xb6rg NIL {5}\r\nj\xc3\xb6rg {11}\r\nex\xc3\xa4mple.de)) (({5}\r\nJ\xc3\xb6rg NIL {5}\r\nj\xc3\xb6rg {11}\r\nex\xc3\xa4mple.de)) NIL NIL NIL NIL NIL)',
    ),
    'group': (
        b'From: a@b\nTo: Friends: x@y, "Z" <z@w>;, solo@host\nReply-To: <>\nSender: \n\nb\n',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) ((NIL NIL "Friends" NIL)(NIL NIL "x" "y")("Z" NIL "z" "w")(NIL NIL NIL NIL)(NIL NIL "solo" "host")) NIL NIL NIL NIL)',
    ),
    'addr': (
        b'From: joe (Joe Bloggs)\nTo: <@route1,@route2:user@host>, "quoted local"@x.y, John Q. Public <jqp@x>\n\nb\n',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)',
        b'(NIL NIL (("Joe Bloggs" NIL "joe" "MISSING_DOMAIN")) (("Joe Bloggs" NIL "joe" "MISSING_DOMAIN")) (("Joe Bloggs" NIL "joe" "MISSING_DOMAIN")) ((NIL "@route1,@route2" "user" "host")(NIL NIL "quoted local" "x.y")("John Q. Public" NIL "jqp" "x")) NIL NIL NIL NIL)',
    ),
    'digest': (
        b'From: a@b\nContent-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nbody1\n--d\nContent-Type: text/plain\n\nnot a message\n--d--\n',
        b'(("message" "rfc822" NIL NIL NIL "7bit" 21 (NIL "one" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL) 2 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 0 NIL NIL NIL NIL) "digest" ("boundary" "d") NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)',
    ),
    'rfc822_b64': (
        b'From: a@b\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogeAoKeQo=\n',
        b'("message" "rfc822" NIL NIL NIL "base64" 22 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 1 NIL NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)',
    ),
    'toplevel_rfc822': (
        b'From: a@b\nContent-Type: message/rfc822\n\nSubject: inner\nFrom: i@n\n\ninner body\n',
        b'("message" "rfc822" NIL NIL NIL "7bit" 41 (NIL "inner" ((NIL NIL "i" "n")) ((NIL NIL "i" "n")) ((NIL NIL "i" "n")) NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1 NIL NIL NIL NIL) 4 NIL NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)',
    ),
    'empty_part': (
        b'From: a@b\nContent-Type: multipart/mixed; boundary=e\n\n--e\n--e\n\nx\n--e--\n',
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NIL NIL NIL) "mixed" ("boundary" "e") NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)',
    ),
    'junkheader': (
        b'From: a@b\nthis is not a header\nSubject: x\n\nbody\n',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)',
        b'(NIL "x" ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)',
    ),
    'multi_from': (
        b'From: a@b, c@d\nFrom: e@f\nSubject: first\nSubject: second\n\nx\n',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)',
        b'(NIL "second" ((NIL NIL "a" "b")(NIL NIL "c" "d")(NIL NIL "e" "f")) ((NIL NIL "a" "b")(NIL NIL "c" "d")(NIL NIL "e" "f")) ((NIL NIL "a" "b")(NIL NIL "c" "d")(NIL NIL "e" "f")) NIL NIL NIL NIL NIL)',
    ),
    'lang_single': (
        b'From: a@b\nContent-Language: en\nContent-Disposition: inline\n\nx\n',
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)',
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)',
    ),
}


def dovecot_fetch(
    tmp: Path, messages: list[bytes], items: bytes, flags: list[str] | None = None, mtimes: list[float] | None = None
) -> bytes:
    """Run Dovecot's imap binary (preauthenticated, over stdin) on a fresh Maildir of
    ``messages`` (Maildir flag letters and file times optional) and return its output
    for ``a1 FETCH 1:* <items>`` (items may carry further commands after a CRLF)."""
    conf = tmp / "dovecot.conf"
    mail = tmp / "mail"
    for sub in ("cur", "new", "tmp"):
        (mail / sub).mkdir(parents=True)
    for i, data in enumerate(messages):
        path = mail / "cur" / f"{1000 + i}.m{i}.host:2,{flags[i] if flags else ''}"
        path.write_bytes(data)
        if mtimes:
            os.utime(path, (mtimes[i], mtimes[i]))
    (tmp / "home").mkdir()
    conf.write_text(
        f"mail_location = maildir:{mail}\nlog_path = {tmp}/log\nbase_dir = {tmp}/run\n"
        f"state_dir = {tmp}/state\nmail_uid = nobody\nmail_gid = nogroup\n"
    )
    shutil.chown(tmp, "nobody", "nogroup")
    for p in tmp.rglob("*"):
        shutil.chown(p, "nobody", "nogroup")
    cmd = b"a0 SELECT INBOX\r\na1 FETCH 1:* " + items + b"\r\na2 LOGOUT\r\n"
    env = {"USER": "nobody", "HOME": str(tmp / "home"), "PATH": "/usr/bin:/bin"}
    # stdin stays open until LOGOUT is answered: at end of input Dovecot stops mid-FETCH.
    proc = subprocess.Popen([DOVECOT_IMAP, "-c", str(conf)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(cmd)
    proc.stdin.flush()
    out = b""
    deadline = time.monotonic() + 60
    while b"\r\na2 OK" not in out and time.monotonic() < deadline:
        chunk = proc.stdout.read1(1 << 20)
        if not chunk:
            break
        out += chunk
    proc.stdin.close()
    proc.wait(timeout=10)
    return out


def realistic_messages(count: int, seed: int = 7) -> dict[str, bytes]:
    """Messages as a mail client writes them (the stdlib email package): encoded
    display names and subjects, folded headers, alternatives, RFC 2231 file names,
    attached messages, base64 and quoted-printable."""
    import datetime
    import email.policy
    import random
    from email.message import EmailMessage
    from email.utils import format_datetime, formataddr

    rnd = random.Random(seed)
    names = ["Jörg Müller", "Zoë O'Brien", "王小明", "Doe, John", 'Ana "Nina" Silva', "", "Émile Zola"]
    subjects = ["Hello", "Grüße aus Köln 🎉", "Re: [list] a very long subject that will need folding because it goes on and on",
                "日本語の件名", "Fwd: report; Q1", "tab\there"]
    files = ["report.pdf", "Übersicht 2024.xlsx", "résumé final (v2).docx", "a;b=c.txt", "日本.png", "long name " * 8 + ".bin"]
    policies = [email.policy.SMTP, email.policy.default, email.policy.SMTPUTF8]

    def addr() -> str:
        return formataddr((rnd.choice(names), f"user{rnd.randint(1, 99)}@example.org"))

    def make(depth: int) -> EmailMessage:
        m = EmailMessage(policy=rnd.choice(policies))
        m["From"] = addr()
        m["To"] = ", ".join(addr() for _ in range(rnd.randint(1, 3)))
        m["Subject"] = rnd.choice(subjects)
        tz = datetime.timezone(datetime.timedelta(hours=rnd.randint(-11, 12)))
        m["Date"] = format_datetime(datetime.datetime(2024, rnd.randint(1, 12), rnd.randint(1, 28), 10, 0, tzinfo=tz))
        m["Message-ID"] = f"<{rnd.randint(1, 10**9)}@example.org>"
        body = rnd.choice(["Hello there.\n", "Grüße,\nJörg\n", "日本語のテキスト\n" * 3, "x" * 300 + "\n", "line\n" * 20])
        m.set_content(body, cte=None if body.isascii() else rnd.choice([None, "quoted-printable", "base64", "8bit"]))
        if rnd.random() < 0.5:
            m.add_alternative(f"<p>{body}</p>", subtype="html")
        for _ in range(rnd.randint(0, 2)):
            m.add_attachment(rnd.randbytes(rnd.randint(10, 300)), maintype="application", subtype="octet-stream",
                             filename=rnd.choice(files))
        if depth < 2 and rnd.random() < 0.3:
            m.add_attachment(make(depth + 1))
        return m

    return {f"real{i}": make(0).as_bytes().replace(b"\r\n", b"\n") for i in range(count)}
