"""SMTP receiving (MX role) end to end: the real server, real sockets, smtplib,
a raw socket for the bad inputs, and Debian's swaks."""

from __future__ import annotations

import base64
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.support import smtp as smtp_client
from tests.support.programs import needs
from tests.support.server import Server, make_server
from tests.support.smtp import Raw

MAX_SIZE = 200_000
BOXES = [f"box{i:02d}@example.test" for i in range(60)]
USERS = {"alice@example.test": "alice-pw", "bob@example.test": "bob-pw", "carol@other.test": "carol-pw",
         **{b: "box-pw" for b in BOXES}}
ALIASES = "team@example.test: box50, box51\nmix@example.test: box52, box52@example.test, team\n"
_box_iter = iter(BOXES[:50])


def box() -> str:
    """An account no other test of this module uses."""
    return next(_box_iter)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = make_server(
        tmp_path_factory.mktemp("smtp") / "srv",
        users=USERS,
        aliases=ALIASES,
        server={"relay_networks": ["127.0.0.1/32"]},  # 127.0.0.2 is "outside"
        smtp={"max_message_size": MAX_SIZE, "max_recipients": 5, "max_errors": 50},
        submission={"listen_tls": []},
        directory={"allow_plaintext_passwords": False},
    )
    s.sections["server"]["allow_plaintext_auth"] = True  # for the password-in-log test only
    s.start()
    yield s
    s.stop()


def start_mail(c: Raw, sender: str = "s@remote.test", rcpts: tuple[str, ...] = ()) -> None:
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
    for r in rcpts:
        assert c.cmd(f"RCPT TO:<{r}>")[0] == 250


def message(subject: str, body: str = "hello\r\n") -> bytes:
    return f"From: s@remote.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@remote.test>\r\n\r\n{body}".encode()


def mailbox_files(s: Server, account: str) -> list[Path]:
    root = s.maildir(account)
    return [p for sub in ("new", "cur", "tmp") for p in sorted((root / sub).glob("*"))] if root.is_dir() else []


def wait_log(s: Server, pattern: str, timeout: float = 3.0) -> str:
    deadline = time.time() + timeout
    while True:
        m = re.search(pattern, s.log(), re.M)
        if m:
            return m.group(0)
        if time.time() > deadline:
            raise AssertionError(f"no log line matching {pattern!r}:\n{s.log()[-3000:]}")
        time.sleep(0.05)


def with_subject(s: Server, account: str, subject: str) -> list[bytes]:
    return [m for m in s.messages(account) if f"Subject: {subject}\n".encode() in m]


# -- delivery -----------------------------------------------------------------------


def test_delivery_with_smtplib(srv: Server) -> None:
    rcpt, subj = box(), uuid.uuid4().hex
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        c.sendmail("sender@remote.test", [rcpt], message(subj))
    (msg,) = srv.messages(rcpt)
    assert msg.endswith(f"Subject: {subj}\nMessage-ID: <{subj}@remote.test>\n\nhello\n".encode())
    assert b"\r\n" not in msg  # stored with LF line ends


def test_250_names_the_queue_id_that_the_received_line_carries(srv: Server) -> None:
    rcpt = box()
    with Raw(srv.ports["smtp"]) as c:
        start_mail(c, rcpts=(rcpt,))
        assert c.cmd("DATA")[0] == 354
        code, text = c.cmd(message("qid") + b".")
    assert code == 250
    qid = re.search(r"queued as ([0-9A-F]{12})", text).group(1)
    (msg,) = srv.messages(rcpt)
    assert f" id {qid}".encode() in msg


def test_headers_return_path_delivered_to_received(srv: Server) -> None:
    rcpt = box()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], local_hostname="client.example") as c:
        c.sendmail("sender@remote.test", [rcpt], message("hdr"))
    (msg,) = srv.messages(rcpt)
    head = msg.split(b"\n\n", 1)[0].decode()
    assert head.startswith(f"Return-Path: <sender@remote.test>\nDelivered-To: {rcpt}\nReceived: ")
    received = re.search(r"^Received: .*?(?=^\S)", head, re.M | re.S).group(0)
    # RFC 5321 4.4: from <helo> (<tcp-info>) by <host> with <protocol> id <id> for <rcpt>; <date>
    assert re.match(
        r"Received: from client\.example \(\[127\.0\.0\.1\]\)\n\tby mail\.example\.test \(mailsuite\) "
        rf"with ESMTP id [0-9A-F]{{12}}\n\tfor <{re.escape(rcpt)}>;\n\t\w{{3}}, \d{{1,2}} \w{{3}} \d{{4}} "
        r"\d\d:\d\d:\d\d [+-]\d{4}\n$",
        received,
    ), received


def test_null_sender_gives_empty_return_path(srv: Server) -> None:
    rcpt = box()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        c.sendmail("<>", [rcpt], message("bounce"))
    (msg,) = srv.messages(rcpt)
    assert msg.startswith(b"Return-Path: <>\n")


def test_several_recipients_get_one_copy_each(srv: Server) -> None:
    a, b, subj = box(), box(), uuid.uuid4().hex
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        refused = c.sendmail("s@remote.test", [a, b, "carol@other.test"], message(subj))
    assert refused == {}
    for rcpt in (a, b, "carol@other.test"):
        (msg,) = with_subject(srv, rcpt, subj)
        assert f"Delivered-To: {rcpt}\n".encode() in msg


def test_alias_delivers_to_its_members(srv: Server) -> None:
    subj = uuid.uuid4().hex
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        c.sendmail("s@remote.test", ["team@example.test"], message(subj))
    for member in ("box50@example.test", "box51@example.test"):
        (msg,) = with_subject(srv, member, subj)
        assert f"Delivered-To: {member}\n".encode() in msg


def test_mailbox_reached_twice_gets_one_copy(srv: Server) -> None:
    subj = uuid.uuid4().hex
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        c.sendmail("s@remote.test", ["mix@example.test", "box52@example.test", "box50@example.test"], message(subj))
    assert len(with_subject(srv, "box52@example.test", subj)) == 1
    assert len(with_subject(srv, "box50@example.test", subj)) == 1
    assert len(with_subject(srv, "box51@example.test", subj)) == 1


@pytest.mark.parametrize("domain", ["example.test", "other.test"])
def test_postmaster_of_every_domain(srv: Server, domain: str) -> None:
    subj = uuid.uuid4().hex
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        c.sendmail("s@remote.test", [f"postmaster@{domain}"], message(subj))
    found = [a for a in USERS if with_subject(srv, a, subj)]
    assert len(found) == 1 and found[0].endswith("@" + domain)


def test_plus_address_delivers_to_the_user(srv: Server) -> None:
    rcpt = box()
    local, domain = rcpt.split("@")
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        c.sendmail("s@remote.test", [f"{local}+news@{domain}"], message("plus"))
    (msg,) = srv.messages(rcpt)
    assert f"Delivered-To: {rcpt}\n".encode() in msg


def test_eight_bit_body_is_kept_byte_for_byte(srv: Server) -> None:
    rcpt = box()
    body = "Grüße, naïve café — 日本語\r\n".encode("utf-8") + b"raw \xff\xfe bytes\r\n"
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        c.ehlo()
        assert c.has_extn("8bitmime")
        c.sendmail("s@remote.test", [rcpt], b"Subject: 8bit\r\n\r\n" + body, mail_options=["BODY=8BITMIME"])
    (msg,) = srv.messages(rcpt)
    assert msg.endswith(b"Subject: 8bit\n\n" + body.replace(b"\r\n", b"\n"))


def test_dot_stuffed_lines_are_unstuffed(srv: Server) -> None:
    rcpt = box()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        c.sendmail("s@remote.test", [rcpt], b"Subject: dots\r\n\r\n.\r\n..two\r\n.three\r\nend\r\n")
    (msg,) = srv.messages(rcpt)
    assert msg.endswith(b"\n\n.\n..two\n.three\nend\n")


@pytest.mark.parametrize("fake_end", [b"\r\n.\n", b"\n.\r\n", b"\n.\n", b"\r\n.\r", b"\r.\r\n"])
def test_only_crlf_dot_crlf_ends_the_data(srv: Server, fake_end: bytes) -> None:
    """SMTP smuggling: a bare LF or CR around the dot must not end the message, or a
    second, forged message could ride inside the first."""
    rcpt, victim = box(), box()
    smuggled = f"MAIL FROM:<forged@example.test>\r\nRCPT TO:<{victim}>\r\nDATA\r\nSubject: forged\r\n\r\nx\r\n".encode()
    with Raw(srv.ports["smtp"]) as c:
        start_mail(c, rcpts=(rcpt,))
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: carrier\r\n\r\nbefore" + fake_end + smuggled)
        assert c.cmd(b".")[0] == 250
        assert c.cmd("NOOP")[0] == 250  # exactly one reply for the one message
    (msg,) = srv.messages(rcpt)
    assert b"forged@example.test" in msg  # carried as text inside the one message
    assert srv.messages(victim) == []


def test_large_message_streams_through(srv: Server) -> None:
    rcpt = box()
    body = b"".join(b"%08d " % i + b"y" * 70 + b"\r\n" for i in range(1800))  # ~143 KB
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        c.sendmail("s@remote.test", [rcpt], b"Subject: big\r\n\r\n" + body)
    (msg,) = srv.messages(rcpt)
    assert msg.endswith(body.replace(b"\r\n", b"\n"))
    assert list((srv.root / "data" / "queue" / "incoming").iterdir()) == []


def test_ehlo_advertises_the_extensions(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as c:
        assert c.greeting[0] == 220 and "ESMTP" in c.greeting[1]
        code, text = c.cmd("EHLO client.test")
    assert code == 250
    lines = text.split("\n")
    assert lines[0] == "mail.example.test"
    for ext in ("PIPELINING", f"SIZE {MAX_SIZE}", "8BITMIME", "ENHANCEDSTATUSCODES"):
        assert ext in lines
    assert not any(l.startswith("AUTH") for l in lines)  # the MX role offers no AUTH


def test_helo_rset_noop_vrfy_quit(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as c:
        assert c.cmd("HELO client.test") == (250, "mail.example.test")
        assert c.cmd("MAIL FROM:<a@b.test>")[0] == 250
        assert c.cmd("RSET")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 503  # RSET ended the transaction
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("VRFY alice")[0] == 252
        assert c.cmd("QUIT")[0] == 221
        assert c.closed_by_server(3)


def test_several_messages_in_one_session(srv: Server) -> None:
    rcpt = box()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        for i in range(3):
            c.sendmail("s@remote.test", [rcpt], message(f"n{i}"))
    assert len(srv.messages(rcpt)) == 3


def test_account_added_and_deleted_with_the_cli_without_restart(srv: Server) -> None:
    def cli(*args: str, stdin: str = "") -> None:
        subprocess.run([sys.executable, "-m", "mailsuite.cli", *args, "--config", str(srv.config_path)],
                       input=stdin, text=True, check=True, capture_output=True)

    def rcpt_code() -> int:
        with Raw(srv.ports["smtp"]) as c:
            start_mail(c)
            return c.cmd("RCPT TO:<newbie@example.test>")[0]

    assert rcpt_code() == 550
    cli("user", "add", "newbie@example.test", "--password-stdin", stdin="newbie-pw\n")
    assert rcpt_code() == 250
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        c.sendmail("s@remote.test", ["newbie@example.test"], message("welcome"))
    assert len(srv.messages("newbie@example.test")) == 1
    cli("user", "del", "newbie@example.test")
    assert rcpt_code() == 550


def test_unreadable_users_file_is_a_temporary_error(srv: Server) -> None:
    users = srv.root / "users"
    saved = srv.root / "users.saved"
    users.rename(saved)
    users.mkdir()  # reading a folder fails even for root
    try:
        with Raw(srv.ports["smtp"]) as c:
            start_mail(c)
            code, text = c.cmd("RCPT TO:<alice@example.test>")
            assert code == 451 and text.startswith("4.")
    finally:
        users.rmdir()
        saved.rename(users)
    with Raw(srv.ports["smtp"]) as c:
        start_mail(c)
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250


# -- refusals ---------------------------------------------------------------------


def test_unknown_user_is_550_5_1_1(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as c:
        start_mail(c)
        code, text = c.cmd("RCPT TO:<nobody@example.test>")
    assert code == 550 and text.startswith("5.1.1 ")


def test_relay_denied_from_outside_relay_networks(srv: Server) -> None:
    with Raw(srv.ports["smtp"], source="127.0.0.2") as c:
        start_mail(c)
        code, text = c.cmd("RCPT TO:<someone@far-away.test>")
        assert code == 554 and text.startswith("5.7.1 ")
        # Local mail from the same outside client is still welcome.
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250


def test_relay_allowed_from_relay_networks(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as c:
        start_mail(c)
        assert c.cmd("RCPT TO:<someone@far-away.test>")[0] == 250


def test_size_parameter_over_the_limit_is_552_5_3_4(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as c:
        c.cmd("EHLO client.test")
        code, text = c.cmd(f"MAIL FROM:<a@b.test> SIZE={MAX_SIZE + 1}")
        assert code == 552 and text.startswith("5.3.4 ")
        assert c.cmd(f"MAIL FROM:<a@b.test> SIZE={MAX_SIZE}")[0] == 250


def test_actual_size_over_the_limit_is_552_5_3_4(srv: Server) -> None:
    rcpt = box()
    with Raw(srv.ports["smtp"]) as c:
        start_mail(c, rcpts=(rcpt,))
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: too big\r\n\r\n" + (b"z" * 98 + b"\r\n") * (MAX_SIZE // 100 + 10))
        code, text = c.cmd(".")
        assert code == 552 and text.startswith("5.3.4 ")
        # The session goes on.
        assert c.cmd("MAIL FROM:<a@b.test>")[0] == 250
    assert mailbox_files(srv, rcpt) == []


def test_overlong_command_line_is_500_5_5_2(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as c:
        c.cmd("EHLO client.test")
        code, text = c.cmd("NOOP " + "x" * 2000)
        assert code == 500 and text.startswith("5.5.2 ")
        assert c.cmd("NOOP")[0] == 250


def test_overlong_data_line_rejects_the_message_and_keeps_the_session(srv: Server) -> None:
    rcpt = box()
    with Raw(srv.ports["smtp"]) as c:
        start_mail(c, rcpts=(rcpt,))
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: long\r\n\r\n" + b"w" * 5000 + b"\r\nmore\r\n")
        code, _ = c.cmd(".")
        assert 500 <= code < 600
        # The same session can send a good message afterwards.
        assert c.cmd("MAIL FROM:<a@b.test>")[0] == 250
        assert c.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        assert c.cmd(message("after-long") + b".")[0] == 250
    (msg,) = srv.messages(rcpt)
    assert b"Subject: after-long" in msg


def test_pipelined_session_in_one_write(srv: Server) -> None:
    rcpt = box()
    with Raw(srv.ports["smtp"]) as c:
        c.send(
            b"EHLO client.test\r\nMAIL FROM:<s@remote.test>\r\n"
            + f"RCPT TO:<{rcpt}>\r\nRCPT TO:<ghost@example.test>\r\nDATA\r\n".encode()
            + message("piped")
            + b".\r\nNOOP\r\nQUIT\r\n"
        )
        codes = [c.reply()[0] for _ in range(7)]
        assert codes == [250, 250, 250, 550, 354, 250, 250]
        assert c.reply()[0] == 221
    (msg,) = srv.messages(rcpt)
    assert b"Subject: piped" in msg


def test_many_pipelined_messages_in_one_write(srv: Server) -> None:
    """More than the server buffers while a delivery is pending (it pauses reading)."""
    rcpt = box()
    n = 60
    batch = b"EHLO client.test\r\n" + b"".join(
        f"MAIL FROM:<s@remote.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
        + message(f"bulk-{i}", ("filler " * 10 + "\r\n") * 60) + b".\r\n"
        for i in range(n)
    ) + b"QUIT\r\n"
    assert len(batch) > 200_000
    with Raw(srv.ports["smtp"], timeout=30) as c:
        c.send(batch)
        codes = [c.reply()[0] for _ in range(1 + 4 * n + 1)]
    assert codes == [250] + [250, 250, 354, 250] * n + [221]
    stored = srv.messages(rcpt)
    assert sorted(int(re.search(rb"Subject: bulk-(\d+)", m).group(1)) for m in stored) == list(range(n))


@pytest.mark.parametrize(
    "command, expected",
    [
        ("MAIL FROM:<not an address>", (501, "5.1.7")),
        ("MAIL FROM:<a@b.test", (501, "5.1.7")),
        ("MAIL FROM:<@>", (501, "5.1.7")),
        ("MAIL TO:<a@b.test>", (501, "5.5.4")),
        ("MAIL FROM:<a@b.test> SIZE=big", (501, "5.5.4")),
        ("MAIL FROM:<a@b.test> FOO=bar", (555, "5.5.4")),
    ],
)
def test_malformed_mail(srv: Server, command: str, expected: tuple[int, str]) -> None:
    with Raw(srv.ports["smtp"]) as c:
        c.cmd("EHLO client.test")
        code, text = c.cmd(command)
    assert (code, text[:5]) == expected


@pytest.mark.parametrize(
    "command, expected",
    [
        ("RCPT TO:<alice@>", (501, "5.1.3")),
        ("RCPT TO:<>", (501, "5.1.3")),
        ("RCPT TO:alice@example.test>", (501, "5.1.3")),
        ("RCPT FROM:<alice@example.test>", (501, "5.5.4")),
    ],
)
def test_malformed_rcpt(srv: Server, command: str, expected: tuple[int, str]) -> None:
    with Raw(srv.ports["smtp"]) as c:
        start_mail(c)
        code, text = c.cmd(command)
    assert (code, text[:5]) == expected


def test_commands_out_of_order_are_503_5_5_1(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as c:
        assert c.cmd("MAIL FROM:<a@b.test>")[:1] == (503,)  # before EHLO
        c.cmd("EHLO client.test")
        for command in ("RCPT TO:<alice@example.test>", "DATA"):
            code, text = c.cmd(command)
            assert (code, text[:5]) == (503, "5.5.1"), command
        c.cmd("MAIL FROM:<a@b.test>")
        code, text = c.cmd("MAIL FROM:<a@b.test>")
        assert (code, text[:5]) == (503, "5.5.1")
        code, text = c.cmd("DATA")  # no recipient yet
        assert code in (503, 554) and text[2:5] == "5.1"


def test_unknown_command_is_500_5_5_2(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as c:
        for command in ("FROB", "EXPN-X all", "123", ""):
            code, text = c.cmd(command)
            assert (code, text[:5]) == (500, "5.5.2"), command


@pytest.mark.parametrize("raw", [b"NOOP\x00", b"MAIL FROM:<a\x00@b.test>", b"EHLO caf\xc3\xa9", b"NOOP \xff\xfe", b"\x80\x81"])
def test_nul_and_non_ascii_bytes_get_an_error_reply(srv: Server, raw: bytes) -> None:
    with Raw(srv.ports["smtp"]) as c:
        code, text = c.cmd(raw)
        assert code == 500 and text.startswith("5.5.2 ")
        assert c.cmd("NOOP")[0] == 250


def test_max_recipients_is_452_4_5_3(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as c:
        start_mail(c, rcpts=tuple(BOXES[55:60]))
        code, text = c.cmd("RCPT TO:<alice@example.test>")
    assert (code, text[:5]) == (452, "4.5.3")


def test_disconnect_mid_data_leaves_nothing(srv: Server) -> None:
    small, big = box(), box()
    before = srv.log().count("disconnected during DATA")
    for rcpt, size in ((small, 2000), (big, 150_000)):  # (spilled bodies: see the 30 MB test)
        c = Raw(srv.ports["smtp"])
        start_mail(c, rcpts=(rcpt,))
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: cut\r\n\r\n" + (b"q" * 98 + b"\r\n") * (size // 100))
        time.sleep(0.2)
        c.close()
    deadline = time.time() + 5
    while srv.log().count("disconnected during DATA") < before + 2 and time.time() < deadline:
        time.sleep(0.05)
    for rcpt in (small, big):
        assert mailbox_files(srv, rcpt) == []
    assert list((srv.root / "data" / "queue" / "incoming").iterdir()) == []


def test_delivery_failure_is_451_4_3_0_and_nothing_half_delivered(srv: Server) -> None:
    good, bad = box(), box()
    # Create both accounts, then break bad's new/: root ignores permissions, so a file
    # where the folder should be is what really fails.
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        c.sendmail("s@remote.test", [good, bad], message("setup"))
    new = srv.maildir(bad) / "new"
    shutil.rmtree(new)
    new.write_text("in the way")
    try:
        with Raw(srv.ports["smtp"]) as c:
            start_mail(c, rcpts=(good, bad))
            assert c.cmd("DATA")[0] == 354
            code, text = c.cmd(message("broken") + b".")
            assert (code, text[:5]) == (451, "4.3.0")
            assert c.cmd("NOOP")[0] == 250
        assert with_subject(srv, good, "broken") == []
        assert not list((srv.maildir(good) / "tmp").iterdir())
        assert not list((srv.maildir(bad) / "tmp").iterdir())
        wait_log(srv, r"result=deferred")
    finally:
        new.unlink()
        new.mkdir()
    # The client's retry delivers exactly once.
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as c:
        c.sendmail("s@remote.test", [good, bad], message("broken"))
    assert len(with_subject(srv, good, "broken")) == 1
    assert len(with_subject(srv, bad, "broken")) == 1


# -- logging ----------------------------------------------------------------------


def test_one_log_line_per_accepted_message(srv: Server) -> None:
    rcpt = box()
    with Raw(srv.ports["smtp"]) as c:
        start_mail(c, sender="logme@remote.test", rcpts=(rcpt,))
        c.cmd("DATA")
        qid = re.search(r"queued as (\w+)", c.cmd(message("log") + b".")[1]).group(1)
    line = wait_log(srv, rf"smtp: {qid}: .*$")
    assert re.search(
        rf"smtp: {qid}: client=\[127\.0\.0\.1\] from=<logme@remote\.test> to=<{re.escape(rcpt)}> "
        r"size=\d+ result=delivered",
        line,
    ), line
    assert len(re.findall(rf"smtp: {qid}: ", srv.log())) == 1


def test_rejected_command_is_logged_with_the_reason(srv: Server) -> None:
    with Raw(srv.ports["smtp"], source="127.0.0.2") as c:
        start_mail(c)
        c.cmd("RCPT TO:<x@relay-log.test>")
        c.cmd("XYZZY-LOGTEST")
    wait_log(srv, r"\[127\.0\.0\.2\].*554 5\.7\.1 <x@relay-log\.test>: Relay access denied")
    wait_log(srv, r"\[127\.0\.0\.2\].*500 5\.5\.2 .*unknown command \"XYZZY-LOGTEST\"")


def test_passwords_never_reach_the_log(srv: Server) -> None:
    secret_wrong, secret_right = "Wr0ng-S3cret-xyzzy", "box-pw"
    for user, pw in (("box53@example.test", secret_wrong), ("box53@example.test", secret_right)):
        with smtplib.SMTP("127.0.0.1", srv.ports["submission"]) as c:
            try:
                c.login(user, pw)
            except smtplib.SMTPAuthenticationError:
                pass
    time.sleep(0.3)
    log = srv.log()
    for pw in (secret_wrong, secret_right):
        assert pw not in log
        assert base64.b64encode(f"\0box53@example.test\0{pw}".encode()).decode() not in log
        assert base64.b64encode(pw.encode()).decode() not in log


# -- swaks ------------------------------------------------------------------------

needs_swaks = needs(("swaks", "swaks"))


def swaks(srv: Server, *args: str) -> subprocess.CompletedProcess:
    return smtp_client.swaks("--port", str(srv.ports["smtp"]), "--helo", "swaks.test", *args)


@needs_swaks
def test_swaks_delivers(srv: Server) -> None:
    rcpt, subj = box(), uuid.uuid4().hex
    p = swaks(srv, "--to", rcpt, "--from", "swaks@remote.test", "--header", f"Subject: {subj}")
    assert p.returncode == 0, p.stdout + p.stderr
    (msg,) = with_subject(srv, rcpt, subj)
    assert b"Return-Path: <swaks@remote.test>" in msg


@needs_swaks
def test_swaks_pipelining_several_recipients(srv: Server) -> None:
    a, b, subj = box(), box(), uuid.uuid4().hex
    p = swaks(srv, "--pipeline", "--to", f"{a},{b}", "--from", "swaks@remote.test", "--header", f"Subject: {subj}")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "PIPELINING" in p.stdout
    assert with_subject(srv, a, subj) and with_subject(srv, b, subj)


@needs_swaks
def test_swaks_sees_unknown_user_refused(srv: Server) -> None:
    p = swaks(srv, "--to", "ghost@example.test", "--from", "swaks@remote.test")
    assert p.returncode != 0
    assert "550 5.1.1" in p.stdout


@needs_swaks
def test_swaks_eight_bit_body(srv: Server) -> None:
    rcpt = box()
    p = swaks(srv, "--to", rcpt, "--from", "swaks@remote.test", "--body", "Grüße aus Köln")
    assert p.returncode == 0, p.stdout + p.stderr
    (msg,) = srv.messages(rcpt)
    assert "Grüße aus Köln".encode() in msg


# -- limits that need their own server ------------------------------------------


def test_connections_per_ip_are_limited(tmp_path: Path) -> None:
    s = make_server(tmp_path / "srv", smtp={"max_connections_per_ip": 2})
    s.start()
    try:
        first, second = Raw(s.ports["smtp"]), Raw(s.ports["smtp"])
        third = Raw(s.ports["smtp"])
        assert third.greeting[0] == 421 and third.greeting[1].startswith("4.7.0")
        assert third.closed_by_server(3)
        # Another address is counted on its own.
        other = Raw(s.ports["smtp"], source="127.0.0.2")
        assert other.greeting[0] == 220
        first.cmd("QUIT")
        first.close()
        deadline = time.time() + 5
        while True:  # the server counts the closed connection out as soon as it sees it
            again = Raw(s.ports["smtp"])
            if again.greeting[0] == 220 or time.time() > deadline:
                break
            again.close()
            time.sleep(0.05)
        assert again.greeting[0] == 220
        for c in (second, third, other, again):
            c.close()
    finally:
        s.stop()


def test_idle_client_times_out(tmp_path: Path) -> None:
    s = make_server(tmp_path / "srv", smtp={"command_timeout": 1, "data_timeout": 1})
    s.start()
    try:
        c = Raw(s.ports["smtp"])
        c.cmd("EHLO client.test")
        t0 = time.time()
        code, text = c.reply()
        assert (code, text[:5]) == (421, "4.4.2")
        assert 0.5 < time.time() - t0 < 5
        assert c.closed_by_server(3)
        # Also in the middle of DATA, and nothing is kept.
        c = Raw(s.ports["smtp"])
        start_mail(c, rcpts=("alice@example.test",))
        c.cmd("DATA")
        c.send(b"Subject: slow\r\n\r\npart")
        assert c.reply()[0] == 421
        assert c.closed_by_server(3)
        assert s.messages("alice@example.test") == []
    finally:
        s.stop()


def test_too_many_errors_close_the_session(tmp_path: Path) -> None:
    s = make_server(tmp_path / "srv", smtp={"max_errors": 3})
    s.start()
    try:
        with Raw(s.ports["smtp"]) as c:
            for _ in range(3):
                assert c.cmd("BOGUS")[0] == 500
            assert c.cmd("BOGUS")[0] == 421
            assert c.closed_by_server(3)
    finally:
        s.stop()


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_big_message_streams_without_being_held_in_memory(tmp_path: Path) -> None:
    size = 30 * 1024 * 1024
    s = make_server(tmp_path / "srv", smtp={"max_message_size": 50 * 1024 * 1024})
    s.start()
    try:
        assert s.proc is not None
        before = _peak_rss_kb(s.proc.pid)
        line = b"x" * 998 + b"\r\n"
        with Raw(s.ports["smtp"], timeout=60) as c:
            start_mail(c, rcpts=("alice@example.test", "bob@example.test"))
            assert c.cmd("DATA")[0] == 354
            c.send(b"Subject: huge\r\n\r\n")
            chunk = line * 1024
            for _ in range(size // len(chunk)):
                c.send(chunk)
            assert c.cmd(".")[0] == 250
        grown_mb = (_peak_rss_kb(s.proc.pid) - before) / 1024
        assert grown_mb < 15, f"server peak memory grew by {grown_mb:.0f} MB for a 30 MB message"
        for rcpt in ("alice@example.test", "bob@example.test"):
            (name,) = os.listdir(s.maildir(rcpt) / "new")
            assert (s.maildir(rcpt) / "new" / name).stat().st_size > size - 2 * len(chunk)
        # A big body streams to queue/incoming; a client gone mid-DATA leaves nothing there.
        incoming = s.root / "data" / "queue" / "incoming"
        c = Raw(s.ports["smtp"], timeout=60)
        start_mail(c, rcpts=("carol@other.test",))
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: cut\r\n\r\n" + chunk)
        deadline = time.time() + 10
        while not list(incoming.iterdir()) and time.time() < deadline:
            time.sleep(0.05)
        assert len(list(incoming.iterdir())) == 1
        c.close()
        while list(incoming.iterdir()) and time.time() < deadline:
            time.sleep(0.05)
        assert list(incoming.iterdir()) == []
        assert not s.maildir("carol@other.test").exists() or s.messages("carol@other.test") == []
    finally:
        s.stop()


# -- fuzz -------------------------------------------------------------------------

_words = st.sampled_from([
    b"EHLO x.test", b"HELO x", b"MAIL FROM:<a@b.test>", b"MAIL FROM:<>", b"MAIL FROM:<a@b.test> SIZE=10",
    b"RCPT TO:<alice@example.test>", b"RCPT TO:<ghost@example.test>", b"RCPT TO:<x@far.test>", b"DATA",
    b"RSET", b"NOOP", b"VRFY x", b"AUTH PLAIN", b"BDAT 10", b".", b"..", b"", b"MAIL", b"RCPT",
    b"Subject: x", b"\x00", b"\xff\xfe", b"MAIL FROM:<\x00@b.test>", b"A" * 1100,
])
# (No STARTTLS: after its 220 the server rightly waits for a TLS handshake.)
_fuzz_lines = st.lists(st.one_of(_words, st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=_fuzz_lines)
def test_any_input_gets_replies_and_no_traceback(srv: Server, lines: list[bytes]) -> None:
    with Raw(srv.ports["smtp"]) as c:
        # The blank lines feed a "BDAT 10" left open by the input (its octets are
        # data, RFC 3030), so that QUIT still arrives as a command.
        c.send(b"".join(line + b"\r\n" for line in lines) + b"\r\n.\r\n" + b"\r\n" * 12 + b"QUIT\r\n")
        c.sock.settimeout(5)
        # The server answers and closes (QUIT, or 421 after too many errors); it never hangs.
        got = b""
        while True:
            data = c.sock.recv(65536)
            if not data:
                break
            got += data
    for line in got.split(b"\r\n")[:-1]:
        assert re.match(rb"^[2345]\d\d[ -]", line), line
    log = srv.log()
    assert "Traceback" not in log and "Unhandled" not in log


def test_ipv6_listener(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    s = make_server(tmp_path / "srv", smtp={"listen": [f"tcp6:{port}:interface=\\:\\:1"]})
    s.wait_ports = {}
    s.start()
    try:
        deadline = time.time() + 20
        while True:
            try:
                smtp = smtplib.SMTP("::1", port, timeout=5)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        with smtp:
            smtp.sendmail("s@remote.test", ["alice@example.test"], message("v6"))
            # ::1 is in the default relay_networks.
            assert smtp.docmd("MAIL FROM:<s@remote.test>")[0] == 250
            assert smtp.docmd("RCPT TO:<x@far-away.test>")[0] == 250
        (msg,) = s.messages("alice@example.test")
        assert b"([::1])" in msg
    finally:
        s.stop()


def test_incoming_file_failure_is_451_and_the_session_goes_on(tmp_path: Path) -> None:
    """A big body streams to queue/incoming; if that cannot be written, 451 4.3.0."""
    s = make_server(tmp_path / "srv", smtp={"max_message_size": 10 * 1024 * 1024})
    s.start()
    incoming = s.root / "data" / "queue" / "incoming"
    try:
        shutil.rmtree(incoming)
        incoming.write_text("in the way")  # root ignores permissions; this really fails
        with Raw(s.ports["smtp"], timeout=30) as c:
            start_mail(c, rcpts=("alice@example.test",))
            assert c.cmd("DATA")[0] == 354
            c.send(b"Subject: big\r\n\r\n" + (b"b" * 998 + b"\r\n") * 1024)
            code, text = c.cmd(".")
            assert (code, text[:5]) == (451, "4.3.0")
            # Small messages do not need the folder and still go through.
            start_mail(c, rcpts=("alice@example.test",))
            assert c.cmd("DATA")[0] == 354
            assert c.cmd(message("small") + b".")[0] == 250
        (msg,) = s.messages("alice@example.test")
        assert b"Subject: small" in msg
        assert "Traceback" not in s.log()
    finally:
        incoming.unlink()
        incoming.mkdir()
        s.stop()


def test_a_message_with_too_many_received_lines_is_refused_as_a_loop(server: Server) -> None:
    hops = b"".join(b"Received: from hop%d.example by hop%d.example; Sun, 22 Nov 2026 05:00:00 +0000\r\n" % (i, i + 1)
                    for i in range(50))
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        with pytest.raises(smtplib.SMTPDataError) as err:
            s.sendmail("sender@remote.test", ["alice@example.test"], hops + b"Subject: loop\r\n\r\nbody\r\n")
        assert err.value.smtp_code == 554 and b"5.4.6" in err.value.smtp_error
        # 49 earlier hops (plus ours) is still fine.
        s.sendmail("sender@remote.test", ["alice@example.test"], hops[hops.index(b"Received", 1):] + b"\r\nbody\r\n")
    assert len(server.messages("alice@example.test")) == 1
