"""Abuse limits against the running server: the auth throttle over SMTP AUTH (delay,
refusal, expiry, the fail2ban line), connections per IP on 587/465/25, and the message
rate per authenticated user.  Timers are short in these configs."""

from __future__ import annotations

import imaplib
import poplib
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.programs import require
from tests.support.server import Server, started
from tests.support.smtp import HOST, Raw, message, plain, submit_session
from tests.support.tls import client_context

REPO = Path(__file__).resolve().parent.parent
FILTER = REPO / "etc" / "fail2ban" / "filter.d" / "mailsuite.conf"
COOLDOWN = 1.2


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(
        tmp_path_factory.mktemp("abuse") / "srv",
        limits={"auth_delay_after": 2, "auth_refuse_after": 4, "auth_ip_delay_after": 0,
                "auth_ip_refuse_after": 0, "auth_delay": 0.5, "auth_max_delay": 0.5,
                "auth_cooldown": COOLDOWN, "messages_per_user": 2, "message_rate_window": 1.0},
        submission={"max_connections_per_ip": 2},
        smtp={"max_connections_per_ip": 1},
    )


@pytest.fixture(scope="module")
def ip_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(
        tmp_path_factory.mktemp("abuse-ip") / "srv",
        limits={"auth_delay_after": 0, "auth_refuse_after": 0, "auth_ip_delay_after": 0,
                "auth_ip_refuse_after": 3, "auth_cooldown": COOLDOWN},
    )


def tls_session(server: Server) -> Raw:
    r = Raw(server.ports["submission"])
    r.cmd("EHLO client.test")
    r.starttls()
    r.cmd("EHLO client.test")
    return r


def timed(r: Raw, line: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    code, text = r.cmd(line)
    return code, text, time.monotonic() - t0


# -- auth throttle -------------------------------------------------------------------------------


def test_auth_throttle_delays_then_refuses_then_expires(srv: Server) -> None:
    bad = "AUTH PLAIN " + plain("alice@example.test", "wrong-pw-123")
    good = "AUTH PLAIN " + plain("alice@example.test", "alice-pw")
    with tls_session(srv) as r:
        for _ in range(2):
            code, _, took = timed(r, bad)
            assert code == 535 and took < 0.4
        # Two failures: from now on every answer waits auth_delay.
        code, _, took = timed(r, bad)
        assert code == 535 and took >= 0.45
        # The fourth failure starts the cool-down: 421 and the connection is closed.
        code, text, _ = timed(r, bad)
        assert (code, text[:5]) == (421, "4.7.0")
        assert r.closed_by_server(wait=3)
    refused_at = time.monotonic()

    with tls_session(srv) as r:
        # During the cool-down even the right password is refused, without a check...
        assert r.cmd(good) == (454, "4.7.0 Too many authentication failures, try again later")
        # ...and a client that keeps trying is disconnected.
        code, _ = r.cmd(good)
        assert code == 421
        assert r.closed_by_server(wait=3)

    with tls_session(srv) as r:
        # Other logins from the same address are not affected (IP limits are off here).
        assert r.cmd("AUTH PLAIN " + plain("bob@example.test", "bob-pw"))[0] == 235

    time.sleep(max(0.0, COOLDOWN + 0.2 - (time.monotonic() - refused_at)))
    with tls_session(srv) as r:
        # The failures are still remembered (delayed answer; one more failure would
        # refuse again at once), but the right password works.
        assert r.cmd(good)[0] == 235
    with tls_session(srv) as r:
        code, _, took = timed(r, good)
        assert code == 235 and took < 0.4  # the success wiped the slate

    log = srv.log()
    assert "mailsuite auth failure: proto=smtp rip=127.0.0.1 user=alice@example.test" in log
    assert log.count("mailsuite auth failure: proto=smtp rip=127.0.0.1 user=alice@example.test") == 4
    assert "mailsuite auth refused: pair=alice@example.test after 4 failures" in log
    assert "wrong-pw-123" not in log


def test_success_resets_the_failure_count(srv: Server) -> None:
    bad = "AUTH PLAIN " + plain("carol@other.test", "nope")
    for _ in range(2):
        with tls_session(srv) as r:
            assert r.cmd(bad)[0] == 535
            assert r.cmd("AUTH PLAIN " + plain("carol@other.test", "carol-pw"))[0] == 235
    with tls_session(srv) as r:
        code, _, took = timed(r, bad)
    assert code == 535 and took < 0.4


def test_ip_is_refused_after_failures_across_logins(ip_srv: Server) -> None:
    with tls_session(ip_srv) as r:
        for user in ("a@example.test", "b@example.test"):
            assert r.cmd("AUTH PLAIN " + plain(user, "x"))[0] == 535
        # The third failure from this IP starts its cool-down.
        assert r.cmd("AUTH PLAIN " + plain("c@example.test", "x"))[0] == 421
    with tls_session(ip_srv) as r:
        assert r.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-pw"))[0] == 454
    time.sleep(COOLDOWN + 0.2)
    with tls_session(ip_srv) as r:
        assert r.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-pw"))[0] == 235


def test_failures_over_smtp_refuse_imap_and_pop3_logins_too(ip_srv: Server) -> None:
    """One throttle for every protocol: an IP refused after SMTP AUTH failures gets
    IMAP NO [UNAVAILABLE] and POP3 -ERR [AUTH] even with the right password."""
    if "imaps" not in ip_srv.wait_ports or "pop3s" not in ip_srv.wait_ports:
        pytest.skip("IMAP or POP3 is not in this build")
    time.sleep(COOLDOWN + 0.2)  # let an earlier test's cool-down of this IP run out
    with tls_session(ip_srv) as r:
        for user in ("a@example.test", "b@example.test", "c@example.test"):
            # A success never clears the IP's failures (issue 16 finding 3): after an
            # earlier test's failures the first new one may refuse (421) at once.
            if r.cmd("AUTH PLAIN " + plain(user, "x"))[0] == 421:
                break
    imap = imaplib.IMAP4_SSL(HOST, ip_srv.ports["imaps"], ssl_context=client_context())
    try:
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            imap.login("alice@example.test", "alice-pw")
    finally:
        imap.shutdown()
    pop = poplib.POP3_SSL(HOST, ip_srv.ports["pop3s"], context=client_context())
    try:
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            pop.user("alice@example.test")
            pop.pass_("alice-pw")
    finally:
        pop.close()
    log = ip_srv.log()
    assert "mailsuite auth refused: ip=127.0.0.1" in log


def test_fail2ban_filter_matches_the_server_log(srv: Server) -> None:
    """The filter in etc/fail2ban matches every failure line of a real log."""
    log_lines = [line for line in srv.log().splitlines() if "mailsuite auth failure:" in line]
    assert log_lines
    require("fail2ban-regex", "fail2ban")
    r = subprocess.run(["fail2ban-regex", "--print-all-matched", str(srv.log_path), str(FILTER)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Failregex: {len(log_lines)} total" in r.stdout


# -- connections per IP ------------------------------------------------------------------------------


def test_connection_limit_per_ip_counts_465_and_587_together(srv: Server) -> None:
    first = Raw(srv.ports["submissions"], implicit_tls=True)
    second = Raw(srv.ports["submission"])
    try:
        for port, tls in ((srv.ports["submissions"], True), (srv.ports["submission"], False)):
            with Raw(port, implicit_tls=tls) as third:
                assert third.greeting[0] == 421 and third.greeting[1].startswith("4.7.0")
                assert third.closed_by_server(wait=3)
    finally:
        first.close()
        second.close()
    time.sleep(0.2)
    with Raw(srv.ports["submissions"], implicit_tls=True) as again:
        assert again.greeting[0] == 220


def test_connection_limit_per_ip_on_the_mx_port(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as first:
        assert first.greeting[0] == 220
        with Raw(srv.ports["smtp"]) as second:
            assert second.greeting[0] == 421
    time.sleep(0.2)
    with Raw(srv.ports["smtp"]) as again:
        assert again.greeting[0] == 220


# -- message rate ---------------------------------------------------------------------------------------


def test_message_rate_per_user_gets_450_beyond_the_limit_and_recovers(srv: Server) -> None:
    with submit_session(srv, "bob@example.test", "bob-pw") as s:
        for i in range(2):
            s.sendmail("bob@example.test", ["alice@example.test"], message("bob@example.test", "alice@example.test", f"rate{i}"))
        s.ehlo()
        code, text = s.mail("bob@example.test")
        assert (code, text[:5]) == (450, b"4.7.1")
        s.rset()
    with submit_session(srv, "alice@example.test", "alice-pw") as s:
        s.ehlo()
        assert s.mail("alice@example.test")[0] == 250  # another user is not limited
        s.rset()
    time.sleep(1.1)
    with submit_session(srv, "bob@example.test", "bob-pw") as s:
        assert s.sendmail("bob@example.test", ["alice@example.test"],
                          message("bob@example.test", "alice@example.test", "rate-again")) == {}
    assert "over the message rate limit" in srv.log()
