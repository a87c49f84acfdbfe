"""Abuse limits shared by every protocol: auth failures per client IP and per login,
and the message rate of each authenticated user.

One :class:`AuthThrottle` lives on the Suite (``suite.throttle``).  A protocol calls

* ``before_auth(ip, login)`` once it has the credentials and before it checks them:
  the Deferred fires after the delay owed by earlier failures of this IP or login, or
  fails with :class:`AuthRefused` during a cool-down (answer SMTP 454 4.7.0 / 421 4.7.0,
  IMAP ``NO [UNAVAILABLE]``, POP3 ``-ERR [AUTH]``, without checking the password);
* ``auth_failed(ip, login, proto=...)`` after a wrong password: it counts the failure
  and logs ``mailsuite auth failure: proto=<p> rip=<ip> user=<login>`` for fail2ban
  (etc/fail2ban/); the password never reaches this module;
* ``auth_succeeded(ip, login)`` after a good one: it forgets the failures of this
  login (from this IP and overall), never those of the IP: otherwise logging into
  one's own account every few guesses would allow unlimited guesses at others
  (password spraying, issue 16 finding 3).

Three counters, each forgotten ``auth_window`` seconds after its last failure:

* the client IP: from ``auth_ip_delay_after`` failures on, its answers are delayed;
  at ``auth_ip_refuse_after`` it is refused for ``auth_cooldown`` seconds;
* the login, from any IP: from ``auth_delay_after`` failures on, answers for it are
  delayed, never refused: a login attacked from many addresses is slowed down, but
  its owner is not locked out (issue 16 finding 3);
* the pair of IP and login: at ``auth_refuse_after`` failures that IP may not try that
  login for ``auth_cooldown`` seconds.

A delay is ``auth_delay`` seconds per failure beyond the threshold, at most
``auth_max_delay``; a threshold of 0 never applies.  After a cool-down the failures
are still remembered, so the next failure refuses again at once.  Logins are counted
by their canonical name: lower case, and ``dave`` is ``dave@<default_domain>`` (the
first local domain, as the directory reads a bare login), so both spellings share one
count.  Logins and IPs have their own thresholds because many users may share one
office NAT address.  Only the reactor thread uses this module.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from mailsuite.logtext import token

log = Logger(namespace="mailsuite.auth")

# Entries kept at most; beyond, expired ones are pruned and then the oldest dropped,
# so a spray of random logins cannot grow memory without bound.
MAX_ENTRIES = 100_000
_LOGIN_LOG_MAX = 128


class AuthRefused(Exception):
    """Authentication is refused during a cool-down; ``retry_after`` is in seconds."""

    def __init__(self, retry_after: float, key: str = "") -> None:
        super().__init__(f"too many authentication failures; retry in {retry_after:.0f}s")
        self.retry_after = retry_after
        self.key = key


@dataclass
class _Entry:
    failures: int = 0
    last: float = 0.0
    refused_until: float = 0.0


def _log_safe(text: str) -> str:
    """The login as it may appear in a log line: no spaces or control characters (so
    it cannot forge another ``rip=`` for fail2ban), bounded length."""
    return token(text, _LOGIN_LOG_MAX)


def _norm_login(login: str | bytes, default_domain: str | None = None) -> str:
    if isinstance(login, bytes):
        login = login.decode("utf-8", "replace")
    login = login.strip().lower()[:256]
    if default_domain and login and "@" not in login:
        login = f"{login}@{default_domain}"
    return login


class AuthThrottle:
    """Counts auth failures per client IP and per login; see the module docstring."""

    def __init__(self, limits: Any, clock: Any, metrics: Any = None,
                 default_domain: str | None = None, max_entries: int = MAX_ENTRIES) -> None:
        """``clock``: the reactor (or a test's Clock); ``max_entries`` bounds memory."""
        self.max_entries = max_entries
        if metrics is None:
            from mailsuite.metrics import NULL as metrics  # type: ignore[no-redef]
        self.metrics = metrics
        self.limits = limits
        self.clock = clock
        self.default_domain = default_domain.lower() if default_domain else None
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._exempt = tuple(limits.auth_exempt_networks)

    # -- the API the protocols call -----------------------------------------------------

    def before_auth(self, ip: str, login: str | bytes) -> defer.Deferred:
        """Fires (with None) once this attempt may be checked; fails with AuthRefused."""
        if self._is_exempt(ip):
            return defer.succeed(None)
        now = self.clock.seconds()
        refused = 0.0
        delay = 0.0
        for key, delay_after, _refuse_after in self._keys(ip, login):
            e = self._current(key, now)
            if e is None:
                continue
            if e.refused_until > now:
                refused = max(refused, e.refused_until - now)
            delay = max(delay, self._delay_for(e.failures, delay_after))
        if refused:
            self.metrics.throttle_event("refused")
            return defer.fail(AuthRefused(refused))
        if delay <= 0:
            return defer.succeed(None)
        self.metrics.throttle_event("delayed")
        return task.deferLater(self.clock, delay, lambda: None)

    def auth_failed(self, ip: str, login: str | bytes, proto: str = "") -> None:
        """Count a failed authentication and log the fail2ban line."""
        name = _norm_login(login, self.default_domain)
        self.metrics.login(proto or "-", False)
        log.info(
            "mailsuite auth failure: proto={proto} rip={ip} user={user}",
            proto=proto or "-",
            ip=ip or "-",
            user=_log_safe(name),
        )
        if self._is_exempt(ip):
            return
        now = self.clock.seconds()
        for key, _delay_after, refuse_after in self._keys(ip, login):
            e = self._current(key, now) or self._new(key)
            e.failures += 1
            e.last = now
            if refuse_after and e.failures >= refuse_after and e.refused_until <= now:
                e.refused_until = now + self.limits.auth_cooldown
                log.warn(
                    "mailsuite auth refused: {kind}={value} after {n} failures, for {secs:.0f}s "
                    "(proto={proto} rip={ip})",
                    kind=key[0],
                    value=_log_safe(key[1] if key[0] != "pair" else name),
                    n=e.failures,
                    secs=self.limits.auth_cooldown,
                    proto=proto or "-",
                    ip=ip or "-",
                )

    def auth_succeeded(self, ip: str, login: str | bytes, proto: str = "") -> None:
        """Forget the failures of this login (never the IP's: see the docstring)."""
        self.metrics.login(proto or "-", True)
        for key, _, _ in self._keys(ip, login):
            if key[0] == "ip":
                continue
            e = self._entries.get(key)
            if e is not None and e.refused_until <= self.clock.seconds():
                del self._entries[key]

    def is_refused(self, ip: str, login: str | bytes) -> bool:
        """True while this IP or login is in a cool-down (e.g. right after the failure
        that started it: SMTP then answers 421 and closes instead of 535)."""
        if self._is_exempt(ip):
            return False
        now = self.clock.seconds()
        for key, _, _ in self._keys(ip, login):
            e = self._current(key, now)
            if e is not None and e.refused_until > now:
                return True
        return False

    # -- internals -------------------------------------------------------------------------

    def _keys(self, ip: str, login: str | bytes) -> list[tuple[tuple[str, str], int, int]]:
        """(key, delay threshold, refuse threshold) of each counter an attempt touches."""
        lim = self.limits
        ip = ip or "-"
        name = _norm_login(login, self.default_domain)
        return [
            (("ip", ip), lim.auth_ip_delay_after, lim.auth_ip_refuse_after),
            (("login", name), lim.auth_delay_after, 0),
            (("pair", f"{ip} {name}"), 0, lim.auth_refuse_after),
        ]

    def _delay_for(self, failures: int, delay_after: int) -> float:
        if not delay_after or failures < delay_after:
            return 0.0
        lim = self.limits
        return min(lim.auth_max_delay, lim.auth_delay * (failures - delay_after + 1))

    def _current(self, key: tuple[str, str], now: float) -> _Entry | None:
        """The live entry for ``key``, dropping it when its failures have expired."""
        e = self._entries.get(key)
        if e is None:
            return None
        if e.refused_until <= now and now - e.last >= self.limits.auth_window:
            del self._entries[key]
            return None
        return e

    def _new(self, key: tuple[str, str]) -> _Entry:
        if len(self._entries) >= self.max_entries:
            self._prune()
        e = self._entries[key] = _Entry()
        return e

    def _prune(self) -> None:
        now = self.clock.seconds()
        for key in list(self._entries):
            self._current(key, now)
        if len(self._entries) >= self.max_entries:
            # Still full: drop the quarter seen least recently, fewest failures first
            # (never one refusing now).
            victims = sorted(
                (k for k, e in self._entries.items() if e.refused_until <= now),
                key=lambda k: (self._entries[k].last, self._entries[k].failures),
            )[: self.max_entries // 4]
            for k in victims:
                del self._entries[k]

    def _is_exempt(self, ip: str) -> bool:
        if not self._exempt or not ip:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._exempt)


class MessageRate:
    """Messages per authenticated user in a sliding window (``[limits]
    messages_per_user`` per ``message_rate_window`` seconds; 0 turns it off)."""

    def __init__(self, limits: Any, clock: Any) -> None:
        self.limits = limits
        self.clock = clock
        self._sent: dict[str, list[float]] = {}

    def _recent(self, user: str, now: float) -> list[float]:
        times = self._sent.get(user)
        if not times:
            return []
        cutoff = now - self.limits.message_rate_window
        if times[0] <= cutoff:
            times[:] = [t for t in times if t > cutoff]
            if not times:
                del self._sent[user]
        return times

    def allowed(self, user: str) -> bool:
        """May ``user`` start another message now?"""
        limit = self.limits.messages_per_user
        if not limit or not user:
            return True
        return len(self._recent(user, self.clock.seconds())) < limit

    def sent(self, user: str) -> None:
        """Count one accepted message of ``user``."""
        if not self.limits.messages_per_user or not user:
            return
        now = self.clock.seconds()
        self._recent(user, now)
        self._sent.setdefault(user, []).append(now)
        if len(self._sent) > MAX_ENTRIES:
            for u in list(self._sent):
                self._recent(u, now)
