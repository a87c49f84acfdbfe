"""The front-end base (mailsuite/frontend/): framing, the STARTTLS flush, per-IP
counts, the SASL decoder and login-with-throttle, each rule tested once here and
then, end to end, by the protocol tests that use it."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from twisted.cred import error as cred_error
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from mailsuite.auth.throttle import AuthThrottle
from mailsuite.config import LimitsConfig
from mailsuite.directory.interface import DirectoryUnavailable
from mailsuite.frontend import (
    IMAP_ANSWERS, POP3_ANSWERS, SMTP_ANSWERS, TOO_LONG, ConnectionCounts, Credentials, LineBuffer, LoginFailed,
    LoginGate, Outcome, SASLError, SASLExchange, start_tls,
)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# -- framing -----------------------------------------------------------------------------------


def lines_of(buf: LineBuffer) -> list[Any]:
    out = []
    while (line := buf.next_line()) is not None:
        out.append(line)
    return out


def test_lines_end_at_lf_with_or_without_cr() -> None:
    buf = LineBuffer(max_line=20, max_buffered=100)
    buf.feed(b"NOOP\r\nQUIT\nhalf")
    assert lines_of(buf) == [b"NOOP", b"QUIT"]
    buf.feed(b"-line\r\n")
    assert lines_of(buf) == [b"half-line"]


def test_an_over_long_line_is_reported_once_and_its_tail_never_runs() -> None:
    buf = LineBuffer(max_line=10, max_buffered=100)
    buf.feed(b"x" * 30)  # no LF yet: reported as soon as it cannot fit
    assert buf.next_line() is TOO_LONG
    buf.feed(b"y" * 30)
    assert buf.next_line() is None  # still the same line: not reported again
    buf.feed(b"RSET\r\nNOOP\r\n")  # "yyyRSET" is its tail
    assert lines_of(buf) == [b"NOOP"]
    buf.feed(b"z" * 11 + b"\r\nQUIT\r\n")  # whole but too long
    assert lines_of(buf) == [TOO_LONG, b"QUIT"]
    assert buf.head == b"z" * 11


def test_a_line_of_exactly_the_limit_is_whole() -> None:
    buf = LineBuffer(max_line=10, max_buffered=100)
    buf.feed(b"a" * 10 + b"\r")
    assert buf.next_line() is None
    buf.feed(b"\n")
    assert buf.next_line() == b"a" * 10


def test_raw_reads_share_the_buffer_with_lines() -> None:
    buf = LineBuffer(max_line=100, max_buffered=100)
    buf.feed(b"{5}\r\nhelloREST\r\n")
    assert buf.next_line() == b"{5}"
    assert buf.take(5) == b"hello"
    assert buf.take_all() == b"REST\r\n"
    buf.unread(b"A\r\n")
    assert lines_of(buf) == [b"A"]


def test_reading_pauses_while_busy_with_too_much_buffered_and_resumes_after() -> None:
    t = StringTransport()
    buf = LineBuffer(max_line=100, max_buffered=10)
    buf.feed(b"x" * 11)
    buf.hold(t, busy=False)
    assert t.producerState == "producing"
    buf.hold(t, busy=True)
    assert t.producerState == "paused"
    buf.hold(t, busy=False)
    assert t.producerState == "producing"


def test_starttls_drops_what_was_pipelined_behind_it() -> None:
    started: list[Any] = []

    class T(StringTransport):
        def startTLS(self, ctx: Any) -> None:
            started.append(ctx)

    buf = LineBuffer(max_line=100, max_buffered=100)
    buf.feed(b"MAIL FROM:<evil@x>\r\n")
    start_tls(T(), "ctx", buf, "smtp", "192.0.2.1")
    assert started == ["ctx"] and len(buf) == 0 and buf.next_line() is None


# -- connections -------------------------------------------------------------------------------


def test_connections_per_ip_are_counted_and_released_once() -> None:
    counts = ConnectionCounts()
    a = counts.admit("192.0.2.1", 2)
    b = counts.admit("192.0.2.1", 2)
    assert a and b and counts.admit("192.0.2.1", 2) is None
    assert counts.admit("192.0.2.2", 2) is not None
    a.release()
    a.release()  # harmless
    assert counts["192.0.2.1"] == 1
    assert counts.admit("192.0.2.1", 2) is not None


# -- SASL ----------------------------------------------------------------------------------------


def test_plain_with_and_without_initial_response() -> None:
    ex = SASLExchange("plain")
    assert ex.start(b64(b"\0alice\0pw")) == Credentials(b"alice", b"pw", b"")
    ex = SASLExchange("PLAIN")
    assert ex.start(None) == b""
    assert ex.respond(b64(b"bob\0alice\0pw")) == Credentials(b"alice", b"pw", b"bob")


def test_login_asks_for_user_then_password() -> None:
    ex = SASLExchange(b"LOGIN")
    assert ex.start(None) == b"Username:"
    assert ex.respond(b64(b"alice")) == b"Password:"
    assert ex.respond(b64(b"pw")) == Credentials(b"alice", b"pw")
    ex = SASLExchange("LOGIN")
    assert ex.start(b64(b"alice")) == b"Password:"


@pytest.mark.parametrize("mech, initial, response, outcome", [
    ("PLAIN", None, b"*", Outcome.CANCELLED),
    ("PLAIN", None, b"!!!", Outcome.UNDECODABLE),
    ("PLAIN", b"=", None, Outcome.MALFORMED),  # an empty PLAIN message
    ("PLAIN", None, b64(b"alice\0pw"), Outcome.MALFORMED),
    ("PLAIN", None, b64(b"\0\0pw"), Outcome.MALFORMED),  # no user
    ("LOGIN", None, b"*", Outcome.CANCELLED),
    ("CRAM-MD5", None, None, Outcome.UNSUPPORTED),
])
def test_bad_sasl_input_ends_the_exchange_with_an_outcome(mech: str, initial: bytes | None,
                                                          response: bytes | None, outcome: Outcome) -> None:
    with pytest.raises(SASLError) as e:
        ex = SASLExchange(mech)
        ex.start(initial)
        ex.respond(response or b"")
    assert e.value.outcome is outcome


def test_every_outcome_has_an_answer_in_every_protocol() -> None:
    for table in (SMTP_ANSWERS, IMAP_ANSWERS, POP3_ANSWERS):
        assert set(table) == set(Outcome)
    temporary = {Outcome.REFUSED, Outcome.TEMPORARY}
    for outcome in Outcome:
        assert (400 <= SMTP_ANSWERS[outcome][0] < 500) == (outcome in temporary)
        assert (IMAP_ANSWERS[outcome][1] == "UNAVAILABLE") == (outcome in temporary)
    assert POP3_ANSWERS[Outcome.TEMPORARY].startswith(b"-ERR [SYS/TEMP]")


# -- login with throttle ----------------------------------------------------------------------------


class Portal:
    """alice@example.test / pw; ``fail`` makes the next check raise that instead."""

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.logouts = 0

    def login(self, creds: Any, mind: Any, iface: Any) -> defer.Deferred:
        if self.fail is not None:
            return defer.fail(self.fail)
        if creds.username.lower() in (b"alice", b"alice@example.test") and creds.password == b"pw":
            avatar = type("A", (), {"name": "alice@example.test"})()
            return defer.succeed((iface, avatar, self._logout))
        return defer.fail(cred_error.UnauthorizedLogin())

    def _logout(self) -> None:
        self.logouts += 1


def gate(portal: Portal, **limits: Any) -> tuple[LoginGate, AuthThrottle, task.Clock]:
    clock = task.Clock()
    throttle = AuthThrottle(LimitsConfig(**limits), clock=clock)
    return LoginGate(portal, throttle, "test"), throttle, clock


def outcome_of(d: defer.Deferred) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the login did not finish"
    r = results[0]
    if hasattr(r, "value"):
        assert isinstance(r.value, LoginFailed), r
        return r.value.outcome
    return r


def test_a_good_login_names_the_canonical_account() -> None:
    g, _, _ = gate(Portal())
    login = outcome_of(g.login("192.0.2.1", Credentials(b"alice", b"pw"), None))
    assert login.name == "alice@example.test"


@pytest.mark.parametrize("authzid", [b"alice", b"alice@example.test", b"ALICE@example.test"])
def test_an_authzid_naming_the_user_itself_is_accepted(authzid: bytes) -> None:
    g, _, _ = gate(Portal())
    assert outcome_of(g.login("192.0.2.1", Credentials(b"alice", b"pw", authzid), None)).name == "alice@example.test"


def test_an_authzid_naming_another_user_is_refused_and_the_avatar_let_go() -> None:
    portal = Portal()
    g, _, _ = gate(portal)
    assert outcome_of(g.login("192.0.2.1", Credentials(b"alice", b"pw", b"bob@example.test"), None)) is Outcome.AUTHZ
    assert portal.logouts == 1


def test_wrong_password_counts_and_a_cool_down_refuses_without_checking() -> None:
    portal = Portal()
    g, throttle, clock = gate(portal, auth_delay_after=0, auth_refuse_after=2, auth_ip_delay_after=0,
                              auth_ip_refuse_after=0)
    assert outcome_of(g.login("192.0.2.1", Credentials(b"alice", b"bad"), None)) is Outcome.INVALID
    d = g.login("192.0.2.1", Credentials(b"alice", b"bad"), None)
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures[0].value.outcome is Outcome.INVALID and failures[0].value.refused_now
    assert outcome_of(g.login("192.0.2.1", Credentials(b"alice", b"pw"), None)) is Outcome.REFUSED


@pytest.mark.parametrize("error", [DirectoryUnavailable("ldap down"), RuntimeError("bug")])
def test_directory_down_or_a_fault_of_ours_is_temporary_and_not_counted(error: Exception) -> None:
    portal = Portal()
    portal.fail = error
    g, throttle, _ = gate(portal, auth_delay_after=1, auth_refuse_after=1)
    for _ in range(3):
        assert outcome_of(g.login("192.0.2.1", Credentials(b"alice", b"pw"), None)) is Outcome.TEMPORARY
    assert not throttle.is_refused("192.0.2.1", "alice")


# -- request deadline -------------------------------------------------------------------------------


def test_a_request_must_arrive_within_the_deadline_stretched_by_the_data_rate() -> None:
    from mailsuite.frontend import RequestDeadline

    clock = task.Clock()
    expired: list[float] = []
    pace = RequestDeadline(2, 10, lambda: expired.append(clock.seconds()), clock)
    pace.received(10)
    pace.open(True)  # a partial line: 2 s + 10 bytes / 10 per s = 3 s
    for _ in range(5):  # one byte a second
        clock.advance(1)
        pace.received(1)
        pace.open(True)
    assert expired and 3 <= expired[0] <= 4


def test_no_deadline_while_no_request_is_open_or_when_turned_off() -> None:
    from mailsuite.frontend import RequestDeadline

    clock = task.Clock()
    expired: list[bool] = []
    pace = RequestDeadline(2, 10, lambda: expired.append(True), clock)
    pace.received(6)
    pace.open(True)
    pace.open(False)  # the line was completed
    clock.advance(100)
    off = RequestDeadline(0, 10, lambda: expired.append(True), clock)
    off.received(1)
    off.open(True)
    clock.advance(100)
    assert expired == [] and clock.getDelayedCalls() == []
