"""Past one machine: two mailsuite nodes (own hostnames, spools and ports) on one
shared mail tree, as docs/scaling.md lays out for NFSv4/CephFS.  Tested here with
both nodes on one machine and one filesystem: cross-delivery, IMAP sessions on each
node seeing the other's changes within a second, POP3's lock across nodes, and a
change written into the Maildir by another program reaching IDLE."""

from __future__ import annotations

import os
import poplib
import ssl
import time
from pathlib import Path

import pytest

from tests.support.imap import Raw
from tests.support.server import Server, make_server

MSG = b"From: a@remote.test\r\nSubject: shared\r\n\r\nbody\r\n"


@pytest.fixture
def nodes(tmp_path: Path):  # type: ignore[no-untyped-def]
    shared = tmp_path / "shared-mail"
    started: list[Server] = []
    for name in ("node1", "node2"):
        srv = make_server(tmp_path / name, server={"hostname": f"{name}.example.test", "mail_dir": str(shared),
                                                   "allow_plaintext_auth": True})
        srv.start()
        started.append(srv)
    yield started
    for srv in started:
        srv.stop()


def send(srv: Server, to: str, msg: bytes = MSG) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=20) as c:
        c.sendmail("x@remote.test", [to], msg)


def imap(srv: Server) -> Raw:
    c = Raw(srv.ports["imap"])
    c.login("alice@example.test", "alice-pw")
    return c


def idle_until(c: Raw, want: bytes, seconds: float) -> list[bytes]:
    """Lines received while idling, until one contains ``want``; fails after ``seconds``."""
    c.send(b"i IDLE\r\n")
    assert c.line().startswith(b"+ ")
    seen = []
    deadline = time.monotonic() + seconds
    c.sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            line = c.line()
        except (TimeoutError, OSError):
            continue
        seen.append(line)
        if want in line:
            break
    c.sock.settimeout(10)
    c.send(b"DONE\r\n")
    c.response(b"i")
    assert any(want in line for line in seen), f"no {want!r} within {seconds} s: {seen}"
    return seen


def test_mail_taken_by_one_node_is_read_on_the_other(nodes: list[Server]) -> None:
    n1, n2 = nodes
    send(n1, "alice@example.test")
    send(n2, "alice@example.test")
    c = imap(n2)
    untagged, _ = c.cmd(b"SELECT INBOX")
    assert b"* 2 EXISTS" in untagged
    c.close()


def test_idle_on_one_node_sees_a_delivery_and_a_flag_change_on_the_other_within_a_second(nodes: list[Server]) -> None:
    n1, n2 = nodes
    send(n1, "alice@example.test")
    watcher, actor = imap(n2), imap(n1)
    watcher.cmd(b"SELECT INBOX")
    actor.cmd(b"SELECT INBOX")
    start = time.monotonic()
    send(n1, "alice@example.test")
    idle_until(watcher, b"* 2 EXISTS", 1.5)
    assert time.monotonic() - start < 3
    actor.cmd(b"NOOP")
    actor.cmd(b"STORE 1 +FLAGS.SILENT (\\Flagged)")
    lines = idle_until(watcher, b"FETCH", 1.5)
    assert any(b"\\Flagged" in line for line in lines)
    actor.cmd(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    actor.cmd(b"EXPUNGE")
    idle_until(watcher, b"* 2 EXPUNGE", 1.5)
    untagged, _ = watcher.cmd(b"FETCH 1:* (UID FLAGS)")
    assert len(untagged) == 1 and untagged[0].startswith(b"* 1 FETCH (UID 1 FLAGS (\\Flagged")
    watcher.close()
    actor.close()


def test_another_program_writing_the_maildir_reaches_idle(nodes: list[Server]) -> None:
    n1, _ = nodes
    send(n1, "alice@example.test")
    c = imap(n1)
    c.cmd(b"SELECT INBOX")
    box = Path(n1.sections["server"]["mail_dir"]) / "example.test" / "alice"
    tmp = box / "tmp" / "1733300000.procmail.host"
    tmp.write_bytes(b"From: p@remote.test\nSubject: by procmail\n\nhi\n")
    os.rename(tmp, box / "new" / tmp.name)  # as procmail or Dovecot's LDA deliver
    idle_until(c, b"* 2 EXISTS", 1.5)
    c.close()


def test_pop3_maildrop_lock_holds_across_nodes(nodes: list[Server]) -> None:
    n1, n2 = nodes
    send(n1, "alice@example.test")
    first = poplib.POP3("127.0.0.1", n1.ports["pop3"])
    first.stls(ssl._create_unverified_context())
    first.user("alice@example.test")
    first.pass_("alice-pw")
    second = poplib.POP3("127.0.0.1", n2.ports["pop3"])
    second.stls(ssl._create_unverified_context())
    second.user("alice@example.test")
    with pytest.raises(poplib.error_proto, match="IN-USE"):
        second.pass_("alice-pw")
    second.quit()
    assert first.stat()[0] == 1
    first.quit()
    again = poplib.POP3("127.0.0.1", n2.ports["pop3"])
    again.stls(ssl._create_unverified_context())
    again.user("alice@example.test")
    assert again.pass_("alice-pw").startswith(b"+OK")
    again.quit()
