"""SPF results remembered for the life of the DNS answers they came from
(mailauth/spf_check.SPFCache): a second message from the same client, MAIL FROM
domain and HELO is not evaluated again until the first answer's TTL runs out; a
record with macros keys the result by the whole address; a temporary DNS error is
never remembered; and the resolver memo in front of dnspython's cache honours TTLs."""

from __future__ import annotations

from typing import Any

from mailsuite.dns.resolver import NotFound, TemporaryDNSError
from mailsuite.mailauth import spf_check


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeResolver:
    """TXT/A answers from a dict, each with an expiry; counts the lookups."""

    def __init__(self, zone: dict[tuple[str, str], Any], clock: Clock) -> None:
        self.zone = zone
        self.clock = clock
        self.asked: list[tuple[str, str]] = []

    def lookup_sync_expiring(self, name: str, rtype: str) -> tuple[Any, float]:
        self.asked.append((name, rtype))
        v = self.zone.get((name, rtype))
        if v == "temp":
            raise TemporaryDNSError(name, rtype, "timeout")
        if v is None:
            e = NotFound(name, rtype, "Host not found")
            e.expires = self.clock.now + 30
            raise e
        value, ttl = v
        return value, self.clock.now + ttl


def setup(zone: dict) -> tuple[FakeResolver, spf_check.SPFCache, Clock]:
    clock = Clock()
    return FakeResolver(zone, clock), spf_check.SPFCache(clock=clock), clock


def test_a_result_is_kept_for_the_shortest_ttl() -> None:
    r, cache, clock = setup({("sender.test", "TXT"): ([b"v=spf1 include:inc.test -all"], 300),
                             ("inc.test", "TXT"): ([b"v=spf1 ip4:192.0.2.0/24 -all"], 60)})
    mf, helo = spf_check.check(r, "192.0.2.7", "a@sender.test", "", cache=cache)
    assert (mf.result, helo.result) == ("pass", "none")
    n = len(r.asked)
    # Another local part of the same domain: the same result, no lookup.
    assert spf_check.check(r, "192.0.2.7", "b@Sender.test", "", cache=cache)[0].result == "pass"
    assert len(r.asked) == n and cache.hits == 1
    # Another client: evaluated.
    assert spf_check.check(r, "198.51.100.1", "a@sender.test", "", cache=cache)[0].result == "fail"
    assert len(r.asked) > n
    n = len(r.asked)
    clock.now += 61  # inc.test's answer expired
    assert spf_check.check(r, "192.0.2.7", "a@sender.test", "", cache=cache)[0].result == "pass"
    assert len(r.asked) > n


def test_macros_key_by_the_whole_address() -> None:
    r, cache, _clock = setup({("sender.test", "TXT"): ([b"v=spf1 exists:%{l}.users.sender.test -all"], 300),
                              ("alice.users.sender.test", "A"): (["127.0.0.2"], 300)})
    assert spf_check.check(r, "192.0.2.7", "alice@sender.test", "", cache=cache)[0].result == "pass"
    assert spf_check.check(r, "192.0.2.7", "bob@sender.test", "", cache=cache)[0].result == "fail"
    n = len(r.asked)
    assert spf_check.check(r, "192.0.2.7", "alice@sender.test", "", cache=cache)[0].result == "pass"
    assert spf_check.check(r, "192.0.2.7", "bob@sender.test", "", cache=cache)[0].result == "fail"
    assert len(r.asked) == n


def test_nxdomain_is_kept_and_temporary_errors_are_not() -> None:
    r, cache, _clock = setup({("slow.test", "TXT"): "temp"})
    assert spf_check.check(r, "192.0.2.7", "a@nowhere.test", "", cache=cache)[0].result == "none"
    n = len(r.asked)
    assert spf_check.check(r, "192.0.2.7", "a@nowhere.test", "", cache=cache)[0].result == "none"
    assert len(r.asked) == n
    assert spf_check.check(r, "192.0.2.7", "a@slow.test", "", cache=cache)[0].result == "temperror"
    n = len(r.asked)
    assert spf_check.check(r, "192.0.2.7", "a@slow.test", "", cache=cache)[0].result == "temperror"
    assert len(r.asked) > n


def test_the_cache_is_bounded() -> None:
    r, _c, _clock = setup({("sender.test", "TXT"): ([b"v=spf1 -all"], 300)})
    cache = spf_check.SPFCache(size=3, clock=_clock)
    for i in range(10):
        spf_check.check(r, f"192.0.2.{i}", "a@sender.test", "", cache=cache)
    assert len(cache._d) <= 3
