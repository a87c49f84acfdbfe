"""Sieve at delivery, end to end: real mailsuite, real SMTP client, Maildirs on disk.

Each test installs a script the way ManageSieve would (``sieve/<name>.sieve`` and the
``sieve/active`` link in the account's Maildir root) and sends mail with smtplib.
"""

from __future__ import annotations

import os
import smtplib
import time
from pathlib import Path

import pytest

from tests.support.server import Server
from tests.support.waiting import wait_for

ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@other.test"


def install(server: Server, account: str, script: str, name: str = "main") -> None:
    d = server.maildir(account) / "sieve"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.sieve").write_text(script)
    link = d / "active"
    if link.is_symlink():
        link.unlink()
    os.symlink(f"{name}.sieve", link)


def send(server: Server, sender: str, rcpts: list[str], headers: str = "", subject: str = "hello",
         body: str = "Hi there.\n") -> None:
    to = rcpts[0]
    msg = f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{time.time_ns()}@t>\r\n" \
          f"{headers}\r\n{body}"
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.sendmail(sender, rcpts, msg.encode())


@pytest.fixture
def srv(server_factory) -> Server:  # type: ignore[no-untyped-def]
    # Scripts are copied in by hand here: delivery looks at the disk for every message.
    return server_factory(sieve={"script_check_interval": 0}).start()


def test_fileinto_create_and_flags(srv: Server) -> None:
    install(srv, ALICE, r'''require ["fileinto", "mailbox", "imap4flags"];
        if header :contains "subject" "[list]" { fileinto :create :flags "\\Seen" "Lists.Coyotes"; stop; }
        if header :contains "subject" "missing" { fileinto "Nowhere"; }''')
    send(srv, BOB, [ALICE], subject="[list] news")
    files = os.listdir(srv.maildir(ALICE, "Lists.Coyotes") / "cur")
    assert len(files) == 1 and files[0].endswith(":2,S")
    assert srv.messages(ALICE) == []
    # fileinto a folder that does not exist (no :create): kept in INBOX, nothing lost
    send(srv, BOB, [ALICE], subject="missing folder")
    assert len(srv.messages(ALICE)) == 1
    assert "no such folder" in srv.log()


def test_reject_at_data_when_every_recipient_rejects(srv: Server) -> None:
    install(srv, ALICE, 'require "reject"; if header :contains "subject" "offer" { reject "No offers, thanks."; }')
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(srv, CAROL, [ALICE], subject="great offer")
    assert info.value.smtp_code == 550 and b"No offers" in info.value.smtp_error
    assert srv.messages(ALICE) == []
    # Alice rejects, Bob accepts: 250, Bob has it, the sender gets a DSN for Alice.
    send(srv, CAROL, [ALICE, BOB], subject="another offer")
    assert len(srv.messages(BOB)) == 1 and srv.messages(ALICE) == []
    dsn = wait_for(lambda: srv.messages(CAROL))
    assert len(dsn) == 1 and b"multipart/report" in dsn[0] and b"No offers" in dsn[0]
    assert b"Return-Path: <>" in dsn[0]


def test_redirect_and_redirect_loop(srv: Server) -> None:
    install(srv, ALICE, f'redirect "{BOB}";')
    send(srv, CAROL, [ALICE], subject="for bob")
    got = wait_for(lambda: srv.messages(BOB))
    assert len(got) == 1 and f"Delivered-To: {ALICE}".encode() in got[0]
    assert f"Return-Path: <{CAROL}>".encode() in got[0]  # RFC 5228 4.2: the original sender
    assert srv.messages(ALICE) == []
    # Bob sends everything back to Alice: the loop stops at Alice, who keeps it.
    install(srv, BOB, f'redirect "{ALICE}";')
    send(srv, CAROL, [ALICE], subject="ping pong")
    wait_for(lambda: len(srv.messages(ALICE)) == 1, what="the message back at Alice", server=srv)
    time.sleep(0.5)
    assert len(srv.messages(ALICE)) == 1 and len(srv.messages(BOB)) == 1
    assert "redirect loop" in srv.log()


def test_vacation_conversation(srv: Server) -> None:
    install(srv, ALICE, 'require "vacation"; vacation :days 7 :subject "Out of office" "I am away until Monday.";')
    send(srv, CAROL, [ALICE], subject="question")
    replies = wait_for(lambda: srv.messages(CAROL))
    assert len(replies) == 1
    r = replies[0]
    assert b"Subject: Out of office" in r and b"Auto-Submitted: auto-replied" in r
    assert b"Return-Path: <>" in r and b"In-Reply-To: <" in r and b"I am away until Monday." in r
    assert len(srv.messages(ALICE)) == 1  # vacation keeps the message
    # Once per :days per sender.
    send(srv, CAROL, [ALICE], subject="second question")
    # Never to lists, bulk, auto-submitted mail, or ourselves.
    send(srv, CAROL, [ALICE], headers="List-Id: <talk.lists.other.test>\r\n", subject="list")
    send(srv, BOB, [ALICE], headers="Precedence: bulk\r\n", subject="bulk")
    send(srv, BOB, [ALICE], headers="Auto-Submitted: auto-generated\r\n", subject="robot")
    send(srv, ALICE, [ALICE], subject="note to self")
    wait_for(lambda: len(srv.messages(ALICE)) == 6, what="six messages for Alice", server=srv)
    time.sleep(0.5)
    assert len(srv.messages(CAROL)) == 1 and srv.messages(BOB) == []
    log = srv.log()
    for why in ("already answered", "mailing list", "precedence bulk", "auto-submitted", "sender is the recipient"):
        assert why in log, why
    # Bob, not on a list, gets his own first reply.
    send(srv, BOB, [ALICE], subject="hello from bob")
    wait_for(lambda: len(srv.messages(BOB)) == 1, what="Bob's vacation reply", server=srv)


def test_script_error_keeps_message_and_tells_user_once(srv: Server) -> None:
    install(srv, ALICE, 'if header :bogus "x" { discard; }')
    send(srv, BOB, [ALICE], subject="one")
    send(srv, BOB, [ALICE], subject="two")
    msgs = srv.messages(ALICE)
    notices = [m for m in msgs if b"Your mail filter (Sieve script) failed" in m]
    assert len(msgs) == 3 and len(notices) == 1
    assert b"line 1" in notices[0]


def test_global_before_script(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = tmp_path / "before.sieve"
    before.write_text('require "fileinto"; if header :contains "subject" "[SPAM]" { fileinto "Junk"; stop; }')
    srv = server_factory(sieve={"before": str(before), "script_check_interval": 0})
    srv.start()
    install(srv, ALICE, 'discard;')
    send(srv, BOB, [ALICE], subject="[SPAM] pills")
    assert len(srv.messages(ALICE, "Junk")) == 1
    send(srv, BOB, [ALICE], subject="normal")
    assert srv.messages(ALICE) == []  # the user's discard ran


def test_big_message_on_disk_is_filtered_and_edited(srv: Server) -> None:
    """A body over the in-memory limit is read in the worker pool; editheader rewrites
    the stored copy, and the whole body arrives."""
    install(srv, ALICE, 'require ["fileinto", "editheader", "body"];'
                        'if body :raw :contains "needle" { addheader "X-Found" "yes"; fileinto "Archive"; }')
    body = "line of filler text\r\n" * 20000 + "needle\r\n"  # ~400 KB
    send(srv, BOB, [ALICE], subject="big", body=body)
    got = srv.messages(ALICE, "Archive")
    assert len(got) == 1 and got[0].startswith(b"Return-Path: <bob@example.test>\nDelivered-To: alice@example.test\n"
                                                 b"X-Found: yes\n")
    assert got[0].endswith(b"needle\n") and got[0].count(b"line of filler text\n") == 20000


# -- the engine on its own (no server) ------------------------------------------------


def _engine_site(tmp_path: Path, script: str) -> tuple:  # type: ignore[type-arg]
    from mailsuite.handoff import BodyFile
    from mailsuite.sieve.delivery import SieveEngine

    root = tmp_path / "example.test" / "alice"
    (root / "sieve").mkdir(parents=True)
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir()
    (root / ".Junk" / "new").mkdir(parents=True)
    (root / "sieve" / "s.sieve").write_text(script)
    os.symlink("s.sieve", root / "sieve" / "active")
    data = b"From: a@b.example\nTo: alice@example.test\nSubject: hi\nMessage-ID: <x@y>\n\nbody\n"
    return SieveEngine(tmp_path), BodyFile(str(tmp_path / "b"), len(data), data.count(b"\n"), data), root


def test_keep_goes_where_an_earlier_filter_chose(tmp_path: Path) -> None:
    """mailauth files DMARC-quarantined mail into Junk; the script's implicit or
    explicit keep keeps it there, a fileinto still wins."""
    engine, body, _ = _engine_site(tmp_path, 'require "imap4flags"; addflag "\\\\Seen";')
    plan = engine.decide("a@b.example", ALICE, ALICE, body, default="Junk")
    assert plan.targets == [("Junk", "S")]
    engine, body, _ = _engine_site(tmp_path / "2", 'keep;')
    assert engine.decide("a@b.example", ALICE, ALICE, body, default="Junk").folder == "Junk"
    engine, body, _ = _engine_site(tmp_path / "3", 'require "fileinto"; fileinto "INBOX.Work";')
    plan = engine.decide("a@b.example", ALICE, ALICE, body, default="Junk")
    assert plan.folder == "INBOX" and "no such folder" in plan.outcome.log[0]


def test_duplicate_is_remembered_once_delivered(tmp_path: Path) -> None:
    engine, body, root = _engine_site(tmp_path, 'require ["duplicate", "fileinto"]; if duplicate { discard; }')
    first = engine.decide("a@b.example", ALICE, ALICE, body)
    assert first.folder == "INBOX" and first.needs_worker  # the id is recorded by apply()
    engine.apply(first, ALICE, b"", body, "stable")
    second = engine.decide("a@b.example", ALICE, ALICE, body)
    assert second.folder == "" and second.outcome.discarded


def test_vacation_reply_format(tmp_path: Path) -> None:
    from mailsuite.sieve.interpreter import Vacation
    from mailsuite.sieve.memory import Memory
    from mailsuite.sieve.message import Message
    from mailsuite.sieve.vacation import reply_for

    msg = Message(b"From: Carol <carol@other.test>\nTo: Alice <alice@example.test>\nSubject: lunch?\n"
                  b"Message-ID: <m1@other.test>\nReferences: <m0@other.test>\n\nhi\n")
    mem = Memory(tmp_path, "vacation")
    vac = Vacation("Content-Type: text/plain\n\nGone fishing.\n", None, '"Alice" <alice@example.test>', [], True,
                   "h", 86400)
    reply, why = reply_for(msg, "carol@other.test", ALICE, [ALICE], vac, mem, "mail.example.test", now=1000.0)
    assert reply is not None and reply.recipient == "carol@other.test", why
    text = reply.data.decode()
    assert "Subject: Auto: lunch?" in text and 'From: "Alice" <alice@example.test>' in text
    assert "In-Reply-To: <m1@other.test>" in text and "References: <m0@other.test> <m1@other.test>" in text
    assert "Auto-Submitted: auto-replied" in text
    assert text.endswith("MIME-Version: 1.0\nContent-Type: text/plain\n\nGone fishing.\n")  # :mime
    again, why = reply_for(msg, "carol@other.test", ALICE, [ALICE], vac, mem, "mail.example.test", now=1000.0 + 3600)
    assert again is None and "already answered" in why
    later, _ = reply_for(msg, "carol@other.test", ALICE, [ALICE], vac, mem, "mail.example.test", now=1000.0 + 86401)
    assert later is not None


def test_an_interpreter_bug_keeps_the_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault of ours in the interpreter is a script error for the user: INBOX, one notice."""
    from mailsuite.sieve import interpreter

    engine, body, root = _engine_site(tmp_path, 'require "fileinto"; fileinto "Junk";')

    def broken(self, test, frame):  # type: ignore[no-untyped-def]
        raise KeyError("bug")

    monkeypatch.setattr(interpreter.Interpreter, "_block", broken)
    plan = engine.decide("a@b.example", ALICE, ALICE, body)
    assert plan.folder == "INBOX" and plan.outcome.error == "internal error (KeyError)" and plan.needs_worker
    engine.apply(plan, ALICE, b"", body, "stable")
    assert len(os.listdir(root / "new")) == 1  # the notice; the message itself is the store's to write
