"""Our interpreter against Dovecot's Pigeonhole (``sieve-test`` from dovecot-sieve):
the same script, message and envelope must give the same actions.

Pigeonhole is the Sieve implementation office users come from; a script that files,
flags, redirects or rejects differently after a migration is a bug even where an RFC
leaves room.  Compared: folders with their flags, redirects, reject, discard and
whether a vacation reply is asked for (the reply's own rules are tested elsewhere).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from mailsuite.sieve.grammar import compile_script
from mailsuite.sieve.interpreter import Envelope, Interpreter, Script
from mailsuite.sieve.message import Message
from tests.support.programs import require
from tests.support.sieve import FakeHost

MESSAGE = (b"Return-Path: <coyote@acme.example>\nFrom: Wile E. Coyote <coyote@ACME.example>\n"
           b"To: me+shop@example.com\nCc: Road Runner <rr@desert.example>, all-staff@example.com\n"
           b"Subject: [acme-users] Order 1234: rockets\nDate: Tue, 1 Apr 1997 09:06:31 -0800\n"
           b"Message-ID: <1@acme.example>\nX-Priority: 2\nX-Spam-Score: 7\n\nSend rockets. MAKE MONEY FAST\n")
SENDER, RCPT = "coyote@acme.example", "me+shop@example.com"

SCRIPTS = {
    "rfc5228-example": '''require ["fileinto"];
        if header :is "Sender" "owner-ietf-mta-filters@imc.org" { fileinto "filter"; }
        elsif address :DOMAIN :is ["From", "To"] "example.com" { keep; }
        elsif anyof (NOT address :all :contains ["To", "Cc", "Bcc"] "me@example.com",
                     header :matches "subject" ["*make*money*fast*", "*university*dipl*mas*"])
            { fileinto "spam"; }
        else { fileinto "personal"; }''',
    "match-variables": '''require ["fileinto", "variables"];
        if header :matches "Subject" "[*] Order *: *" { fileinto "INBOX.${1}.${3}"; }
        if address :matches "from" "*@*.example" { fileinto "INBOX.from-${2}"; }''',
    "flags-and-copy": '''require ["fileinto", "imap4flags", "copy"];
        addflag "\\\\Seen";
        if header :contains "subject" "rockets" { fileinto :copy :flags ["\\\\Flagged", "$Work"] "Work"; }
        removeflag "\\\\Seen"; addflag "\\\\Answered";''',
    "subaddress-envelope": '''require ["envelope", "subaddress", "fileinto", "copy"];
        if envelope :detail "to" "shop" { fileinto "Shopping"; }
        if envelope :user "to" "me" { redirect "archive@example.org"; }
        if envelope :domain :is "from" "acme.example" { redirect :copy "boss@example.org"; }''',
    "relational-numeric": '''require ["relational", "comparator-i;ascii-numeric", "fileinto"];
        if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "5" { fileinto "Junk"; stop; }
        keep;''',
    "count": '''require ["relational", "comparator-i;ascii-numeric", "fileinto"];
        if address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] "3" { fileinto "Many"; }''',
    "body": '''require ["body", "fileinto"];
        if body :text :contains "make money" { discard; stop; }''',
    "reject": '''require ["reject"]; if exists "x-priority" { reject "No priority mail, please."; }''',
    "vacation": '''require ["vacation"]; vacation :days 3 :subject "Away" "Back on Monday.";''',
    "date-index": '''require ["date", "index", "fileinto", "relational"];
        if date :value "lt" :originalzone "date" "hour" "10" { fileinto "Early"; }
        if header :index 1 :last :contains "received" "nothing" { discard; }''',
    "size-exists-not": '''require ["fileinto"];
        if allof (size :under 10K, exists ["from", "date"], not exists "list-id") { fileinto "Small"; }''',
    "duplicates-of-actions": '''require ["fileinto"];
        fileinto "A"; fileinto "A"; keep; fileinto "INBOX"; redirect "x@example.org"; redirect "X@example.org";''',
    "octet-and-wildcards": '''require ["fileinto"];
        if header :comparator "i;octet" :contains "subject" "ACME" { fileinto "Case"; }
        if header :matches "subject" "[????-users]*" { fileinto "Q"; }
        if header :matches "from" "*\\<*" { fileinto "Escaped"; }''',
    "string-hasflag": '''require ["variables", "imap4flags", "fileinto", "relational", "comparator-i;ascii-numeric"];
        set "a" "x"; set "b" "";
        if string :count "eq" :comparator "i;ascii-numeric" ["${a}", "${b}"] "1" { fileinto "One"; }
        setflag "mine" "$Label1 \\\\Seen";
        if hasflag :contains "mine" "label" { fileinto :flags "${mine}" "Flagged"; }''',
    "nested-stop": '''require ["fileinto"];
        if true { if exists "x-priority" { fileinto "P"; stop; } fileinto "Never"; }
        fileinto "AlsoNever";''',
    "editheader-then-test": '''require ["editheader", "fileinto"];
        addheader "X-Tag" "tagged";
        if header :is "x-tag" "tagged" { fileinto "Tagged"; }
        deleteheader "x-priority";
        if not exists "x-priority" { fileinto "NoPriority"; }''',
}


def ours(script: str) -> set[tuple]:
    commands, required = compile_script(script.encode())
    out = Interpreter(Message(MESSAGE), Envelope(SENDER, RCPT, "me@example.com"), FakeHost()).run(
        [Script("t", commands, required)])
    assert out.error is None, out.error
    actions: set[tuple] = set()
    for d in out.deliveries:
        actions.add(("store", d.mailbox, frozenset(f.lower() for f in d.flags)))
    actions.update(("redirect", r.lower()) for r in out.redirects)
    if out.reject is not None:
        actions.add(("reject",))
    if out.vacation is not None:
        actions.add(("vacation",))
    if not actions:
        actions.add(("discard",))
    return actions


def pigeonhole(script: str, tmp: Path) -> set[tuple]:
    exe = require("sieve-test", "dovecot-sieve")
    (tmp / "s.sieve").write_text(script)
    (tmp / "m.eml").write_bytes(MESSAGE)
    os.chmod(tmp, 0o777)
    cmd = [exe, "-o", "mail_uid=65534", "-o", "mail_gid=65534", "-o", "first_valid_uid=1",
           "-o", "first_valid_gid=1",
           # editheader is off in Dovecot's default configuration
           "-x", "+editheader", "-f", SENDER, "-a", RCPT, str(tmp / "s.sieve"), str(tmp / "m.eml")]
    if os.geteuid() == 0:  # Dovecot refuses to run mail code as root
        cmd = [require("setpriv", "util-linux"), "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={**os.environ, "HOME": str(tmp)})
    assert "final result: success" in r.stdout + r.stderr, r.stdout + r.stderr
    actions: set[tuple] = set()
    current: list = []
    for line in r.stdout.splitlines():
        m = re.match(r"\s*\* store message in folder: (.*)", line)
        if m:
            current = ["store", m.group(1), set()]
            actions.add(tuple(current[:2]) + (frozenset(),))
            continue
        m = re.match(r"\s*\+ (?:add|set) IMAP flags: (.*)", line)
        if m and current:
            actions.discard((current[0], current[1], frozenset(current[2])))
            current[2].update(f.lower() for f in m.group(1).split())
            actions.add((current[0], current[1], frozenset(current[2])))
            continue
        m = re.match(r"\s*\* redirect message to: <(.*)>", line)
        if m:
            actions.add(("redirect", m.group(1).lower()))
        elif re.match(r"\s*\* reject message", line):
            actions.add(("reject",))
        elif re.match(r"\s*\* send vacation message", line):
            actions.add(("vacation",))
    if not actions:
        actions.add(("discard",))
    return actions


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_same_actions_as_pigeonhole(name: str) -> None:
    script = SCRIPTS[name]
    # Not pytest's tmp_path: its parents are root-only, and Dovecot runs as nobody here.
    with tempfile.TemporaryDirectory(prefix="pigeonhole-") as tmp:
        assert ours(script) == pigeonhole(script, Path(tmp))
