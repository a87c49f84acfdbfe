"""``mailsuite status``: the dashboard's figures from the running server's /metrics,
and what the spool says when no server answers."""

from __future__ import annotations

import smtplib
import subprocess
import sys
from pathlib import Path

from tests.support.waiting import wait_for

MAILSUITE = str(Path(sys.executable).with_name("mailsuite"))


def status(server) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run([MAILSUITE, "status", "--config", str(server.config_path)],
                          capture_output=True, text=True, timeout=30)


def test_status_prints_todays_counts_queue_and_connections(admin_setup) -> None:
    srv = admin_setup.server  # one message received and deferred in the queue
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("x@far.test", ["alice@example.test"], b"Subject: hi\r\n\r\nhello\r\n")
        code, _ = s.rcpt("nobody@example.test") if s.mail("x@far.test")[0] == 250 else (0, b"")
        assert code == 550
        p = status(srv)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert f"mailsuite status (http://127.0.0.1:{srv.ports['http']}/metrics)" in out
    assert "today: received 2, delivered 1, queued 1, deferred 1, bounced 0, rejected 1, failed logins 0" in out
    assert "queue: 1 message(s), oldest " in out
    assert "smtp 1" in out  # the session above is still open
    assert "reactor lag" in out and "worker pool" in out


def test_status_without_a_running_server_reads_the_spool(admin_setup) -> None:
    srv = admin_setup.server
    srv.stop()
    p = status(srv)
    assert p.returncode == 1
    assert "does not answer" in p.stdout
    assert "queue (from the spool): 1 message(s), oldest " in p.stdout


def test_status_help() -> None:
    p = subprocess.run([MAILSUITE, "status", "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "/metrics" in p.stdout
