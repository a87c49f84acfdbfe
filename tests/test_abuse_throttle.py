"""The shared auth throttle (auth/throttle.py) and message rate, on a fake clock."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from twisted.internet import task
from twisted.logger import LogLevel, globalLogPublisher

from mailsuite.auth.throttle import AuthRefused, AuthThrottle, MessageRate
from mailsuite.config import LimitsConfig

LIMITS = LimitsConfig(
    auth_delay_after=2,
    auth_refuse_after=4,
    auth_ip_delay_after=3,
    auth_ip_refuse_after=6,
    auth_delay=1.0,
    auth_max_delay=1.5,
    auth_cooldown=60.0,
    auth_window=100.0,
)


def make(limits: LimitsConfig = LIMITS) -> tuple[AuthThrottle, task.Clock]:
    clock = task.Clock()
    return AuthThrottle(limits, clock), clock


def state(d) -> str:  # type: ignore[no-untyped-def]
    """'ok', 'waiting' or 'refused' for a before_auth Deferred."""
    out: list[str] = []
    d.addCallbacks(lambda _: out.append("ok"), lambda f: out.append("refused" if f.check(AuthRefused) else repr(f)))
    return out[0] if out else "waiting"


def test_first_attempts_are_not_delayed() -> None:
    t, _ = make()
    t.auth_failed("192.0.2.1", "alice@example.test")
    assert state(t.before_auth("192.0.2.1", "alice@example.test")) == "ok"


def test_answers_are_delayed_after_the_delay_threshold() -> None:
    t, clock = make()
    for _ in range(2):
        t.auth_failed("192.0.2.1", "alice@example.test")
    d = t.before_auth("192.0.2.1", "alice@example.test")
    assert state(d) == "waiting"
    clock.advance(0.99)
    assert not d.called
    clock.advance(0.02)
    assert state(d) == "ok"


def test_delay_grows_per_failure_up_to_the_ceiling() -> None:
    t, _ = make()
    assert t._delay_for(2, 2) == 1.0
    assert t._delay_for(3, 2) == 1.5
    assert t._delay_for(9, 2) == 1.5


def test_failures_from_many_ips_delay_a_login_but_lock_nobody_out() -> None:
    """Issue 16 finding 3: ten bad passwords from anywhere locked the account for
    everyone for 15 minutes.  A login attacked from many addresses is slowed down; its
    owner, from an address of its own, is never refused."""
    t, clock = make()
    for i in range(10):
        t.auth_failed(f"192.0.2.{i}", "Alice@Example.test")  # several IPs, one login
    assert not t.is_refused("198.51.100.9", "alice@example.test")
    d = t.before_auth("198.51.100.9", "alice@example.test")
    assert state(d) == "waiting"  # delayed: auth_max_delay at most
    clock.advance(1.5)
    assert state(d) == "ok"
    assert state(t.before_auth("198.51.100.9", "bob@example.test")) == "ok"


def test_the_ip_and_login_pair_is_refused_after_the_refuse_threshold_then_recovers() -> None:
    t, clock = make()
    for _ in range(4):
        t.auth_failed("192.0.2.1", "alice@example.test")
    assert t.is_refused("192.0.2.1", "alice@example.test")
    assert state(t.before_auth("192.0.2.1", "alice@example.test")) == "refused"
    assert not t.is_refused("192.0.2.2", "alice@example.test")  # the owner, elsewhere
    assert not t.is_refused("192.0.2.1", "bob@example.test")
    clock.advance(60.1)
    assert not t.is_refused("192.0.2.1", "alice@example.test")


def test_a_success_clears_only_that_logins_counter() -> None:
    """Issue 16 finding 3: logging into one's own account every few guesses cleared
    the IP's counter, which allowed unlimited guesses at other accounts."""
    t, _ = make()
    for round_ in range(3):
        for i in range(2):
            t.auth_failed("192.0.2.1", f"victim{round_}{i}@example.test")
        t.auth_succeeded("192.0.2.1", "spray@example.test")
    assert t.is_refused("192.0.2.1", "victim99@example.test")  # 6 failures: the IP threshold


def test_logins_are_counted_by_their_canonical_name() -> None:
    """``dave`` is ``dave@<first domain>``, as the directory reads it."""
    t = AuthThrottle(LIMITS, task.Clock(), default_domain="example.test")
    for login in ("dave", "DAVE@example.test", " dave ", "dave"):
        t.auth_failed("192.0.2.1", login)
    assert t.is_refused("192.0.2.1", "dave@example.test")
    t.auth_succeeded("192.0.2.1", "dave@EXAMPLE.test")  # a refusal outlives a success
    assert state(t.before_auth("192.0.2.1", "dave")) == "refused"


def test_ip_is_refused_after_its_own_threshold() -> None:
    t, _ = make()
    for i in range(6):
        t.auth_failed("192.0.2.1", f"user{i}@example.test")  # a spray: one try per login
    assert state(t.before_auth("192.0.2.1", "someone@example.test")) == "refused"
    assert state(t.before_auth("192.0.2.2", "someone@example.test")) == "ok"


def test_refusal_tells_how_long_to_wait() -> None:
    t, clock = make()
    for _ in range(4):
        t.auth_failed("192.0.2.1", "alice@example.test")
    clock.advance(10)
    failure = []
    t.before_auth("192.0.2.1", "alice@example.test").addErrback(failure.append)
    assert failure[0].value.retry_after == pytest.approx(50)


def test_failures_are_forgotten_after_the_window() -> None:
    t, clock = make()
    for _ in range(3):
        t.auth_failed("192.0.2.1", "alice@example.test")
    clock.advance(100.0)
    assert state(t.before_auth("192.0.2.1", "alice@example.test")) == "ok"
    assert t._entries == {}


def test_success_forgets_the_failures_of_that_login() -> None:
    t, _ = make()
    for _ in range(2):
        t.auth_failed("192.0.2.1", "alice@example.test")
    t.auth_succeeded("192.0.2.1", "alice@example.test")
    assert state(t.before_auth("192.0.2.1", "alice@example.test")) == "ok"


def test_exempt_network_is_never_delayed_or_refused() -> None:
    t, _ = make(replace(LIMITS, auth_exempt_networks=(ipaddress.ip_network("10.0.0.0/8"),)))
    for _ in range(10):
        t.auth_failed("10.1.2.3", "alice@example.test")
    assert state(t.before_auth("10.1.2.3", "alice@example.test")) == "ok"
    assert state(t.before_auth("::ffff:10.1.2.3", "alice@example.test")) == "ok"


def test_failure_log_line_is_fail2ban_matchable_and_safe() -> None:
    t, _ = make()
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        t.auth_failed("192.0.2.1", "evil rip=10.0.0.1\nuser", proto="smtp")
    finally:
        globalLogPublisher.removeObserver(events.append)
    from twisted.logger import formatEvent

    lines = [formatEvent(e) for e in events if e.get("log_namespace") == "mailsuite.auth"]
    assert lines == ["mailsuite auth failure: proto=smtp rip=192.0.2.1 user=evil?rip=10.0.0.1?user"]


def test_refusal_is_logged_as_a_warning() -> None:
    t, _ = make()
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        for _ in range(4):
            t.auth_failed("192.0.2.1", "alice@example.test", proto="imap")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any(e.get("log_level") == LogLevel.warn and "refused" in e["log_format"] for e in events)


def test_entries_stay_bounded_under_a_spray() -> None:
    clock = task.Clock()
    t = AuthThrottle(replace(LIMITS, auth_ip_refuse_after=0), clock, max_entries=1000)
    for i in range(3000):
        clock.advance(0.01)
        t.auth_failed("192.0.2.1", f"u{i}")
    assert len(t._entries) <= 1000
    # The IP entry, refreshed by every failure, is never the one dropped.
    assert t._entries[("ip", "192.0.2.1")].failures == 3000


def test_message_rate_limits_per_user_in_a_sliding_window() -> None:
    clock = task.Clock()
    rate = MessageRate(replace(LIMITS, messages_per_user=2, message_rate_window=10.0), clock)
    assert rate.allowed("alice@example.test")
    rate.sent("alice@example.test")
    clock.advance(5)
    rate.sent("alice@example.test")
    assert not rate.allowed("alice@example.test")
    assert rate.allowed("bob@example.test")
    clock.advance(5.1)
    assert rate.allowed("alice@example.test")


def test_message_rate_zero_means_no_limit() -> None:
    rate = MessageRate(replace(LIMITS, messages_per_user=0), task.Clock())
    for _ in range(1000):
        rate.sent("alice@example.test")
    assert rate.allowed("alice@example.test")
