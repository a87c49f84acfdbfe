"""`mailsuite queue list|show|flush|retry|delete` against a running server (and one
that is stopped), with a peer that defers until the test lets it accept."""

from __future__ import annotations

import re
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import Server
from tests.support.relay import Script, relay_server, spool_files, status_of
from tests.support.waiting import wait_for

MAILSUITE = str(Path(sys.executable).with_name("mailsuite"))


def send(server: Server, rcpts: list[str], sender: str = "alice@example.test") -> str:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.sendmail(sender, rcpts, b"Subject: queued one\r\n\r\nbody\r\n")
    m = re.findall(r"smtp: (\w+): client=.*result=queued", server.log())
    return m[-1]


@pytest.fixture
def deferring(server_factory, peers):  # type: ignore[no-untyped-def]
    """A running relay whose peer answers 451 (flip ``script.rcpt`` to accept); the
    retry is an hour away, so only the tools make it happen sooner."""
    script = Script(rcpt=lambda a: "451 4.7.1 greylisted, come back later")
    peer = peers(script)
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, backoff_min=3600, backoff_max=3600).start()
    return srv, peer, script


def test_list_shows_id_age_sender_recipient_state_and_last_error(deferring) -> None:
    srv, _peer, _script = deferring
    qid = send(srv, ["r@remote.test"])
    wait_for(lambda: "deferred" in status_of(srv, "r@remote.test"), 10, "deferral", srv)
    out = srv.cli("queue", "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.match(rf"{qid}\s+\d+s\s+\d+\s+<alice@example.test>", lines[0])
    assert re.match(r"\s+deferred <r@remote.test>\s+attempts=1\s+next in \d+m", lines[1])
    assert "451 4.7.1 greylisted, come back later" in lines[2]
    assert lines[-1] == "-- 1 message(s), 1 recipient(s) waiting"


def test_list_of_an_empty_queue(deferring) -> None:
    srv, _peer, _script = deferring
    out = srv.cli("queue", "list")
    assert out.stdout.strip() == "Mail queue is empty"


def test_show_prints_the_envelope_and_headers(deferring) -> None:
    srv, _peer, _script = deferring
    qid = send(srv, ["r@remote.test"])
    wait_for(lambda: "deferred" in status_of(srv, "r@remote.test"), 10, "deferral", srv)
    out = srv.cli("queue", "show", qid)
    assert out.returncode == 0, out.stderr
    assert f"id:       {qid}" in out.stdout
    assert "sender:   <alice@example.test>" in out.stdout
    assert "<r@remote.test> (remote) deferred attempts=1" in out.stdout
    assert "relay: 127.0.0.1[127.0.0.1]" in out.stdout
    assert "    Subject: queued one" in out.stdout


def test_show_body_prints_the_whole_message(deferring) -> None:
    srv, _peer, _script = deferring
    qid = send(srv, ["r@remote.test"])
    out = srv.cli("queue", "show", qid, "--body")
    assert out.returncode == 0 and out.stdout.rstrip().endswith("Subject: queued one\n\nbody")


def test_show_of_an_unknown_id_fails(deferring) -> None:
    srv, _peer, _script = deferring
    out = srv.cli("queue", "show", "ABCDEF123456")
    assert out.returncode == 1 and "no such message" in out.stderr


def test_retry_while_running_delivers_now(deferring) -> None:
    srv, peer, script = deferring
    qid = send(srv, ["r@remote.test"])
    wait_for(lambda: "deferred" in status_of(srv, "r@remote.test"), 10, "deferral", srv)
    script.rcpt = lambda a: "250 2.1.5 Ok"
    out = srv.cli("queue", "retry", qid)
    assert out.returncode == 0 and f"{qid}: scheduled for delivery now" in out.stdout
    wait_for(lambda: peer.received, 10, "delivery", srv)
    wait_for(lambda: not spool_files(srv), 10, "empty spool", srv)


def test_flush_while_running_delivers_everything_now(deferring) -> None:
    srv, peer, script = deferring
    send(srv, ["r1@remote.test"])
    send(srv, ["r2@remote.test"])
    wait_for(lambda: "deferred" in status_of(srv, "r2@remote.test"), 10, "deferral", srv)
    script.rcpt = lambda a: "250 2.1.5 Ok"
    out = srv.cli("queue", "flush")
    assert out.returncode == 0 and "2 message(s) scheduled" in out.stdout
    wait_for(lambda: len(peer.received) == 2, 10, "deliveries", srv)


def test_delete_with_yes_removes_without_bounce(deferring) -> None:
    srv, peer, _script = deferring
    qid = send(srv, ["r@remote.test"])
    wait_for(lambda: "deferred" in status_of(srv, "r@remote.test"), 10, "deferral", srv)
    out = srv.cli("queue", "delete", qid, "--yes")
    assert out.returncode == 0 and f"{qid}: deleted" in out.stdout
    assert not spool_files(srv)
    assert "removed by the administrator" in srv.log()
    assert not srv.messages("alice@example.test")  # no bounce


def test_delete_asks_for_confirmation(deferring) -> None:
    srv, _peer, _script = deferring
    qid = send(srv, ["r@remote.test"])
    out = srv.cli("queue", "delete", qid, stdin="")
    assert out.returncode == 1 and "--yes" in out.stderr
    assert spool_files(srv)


def test_tools_work_on_the_spool_of_a_stopped_server(deferring) -> None:
    srv, peer, script = deferring
    keep = send(srv, ["keep@remote.test"])
    drop = send(srv, ["drop@remote.test"])
    wait_for(lambda: "deferred" in status_of(srv, "drop@remote.test"), 10, "deferral", srv)
    srv.stop()
    assert srv.cli("queue", "delete", drop, "--yes").returncode == 0
    out = srv.cli("queue", "retry", keep)
    assert out.returncode == 0 and "marked due" in out.stdout
    listing = srv.cli("queue", "list").stdout
    assert keep in listing and drop not in listing
    script.rcpt = lambda a: "250 2.1.5 Ok"
    srv.start()
    wait_for(lambda: peer.received, 10, "delivery after start", srv)
    assert [r.rcpts for r in peer.received] == [["keep@remote.test"]]


@pytest.mark.parametrize("action", ["list", "show", "flush", "retry", "delete"])
def test_every_action_has_help(action: str) -> None:
    out = subprocess.run([MAILSUITE, "queue", action, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--config" in out.stdout
