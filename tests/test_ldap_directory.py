"""The LDAP directory (IDirectory over ldap3) against a real slapd, in-process.

Each test that changes the server (pause, stop, password change) gets its own slapd;
the others share one.  Tests are twisted.trial TestCases so the directory runs on a
real reactor with its real thread pool.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ldap3
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from mailsuite.config import LDAPConfig
from mailsuite.directory.interface import Account, DirectoryUnavailable, Resolution
from mailsuite.directory.ldap import LDAPDirectory
from mailsuite.directory.ldap_client import LDAPClient
from tests.support.reactor import StallMeter
from tests.support.slapd import ADMIN_DN, ADMIN_PW, MAIL_GROUP, SERVICE_DN, SERVICE_PW, SUFFIX, Slapd, require_slapd
from tests.support.tls import make_ca

require_slapd()

DOMAINS = ("example.test", "other.test")
_tmp = Path(tempfile.mkdtemp(prefix="mailsuite-ldap-"))
CA = make_ca(_tmp / "ca")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_slapd(name: str) -> Slapd:
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_tmp))
    return Slapd(root, CA).start()


class DirectoryTestCase(unittest.TestCase):
    shared: Slapd | None = None

    @classmethod
    def setUpClass(cls) -> None:
        cls.shared = new_slapd("shared")

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.shared is not None:
            cls.shared.stop()
            shutil.rmtree(cls.shared.root, ignore_errors=True)

    def setUp(self) -> None:
        self.clock = Clock()
        self.warnings: list[str] = []

    def own_slapd(self, name: str = "own") -> Slapd:
        s = new_slapd(name)
        self.addCleanup(shutil.rmtree, s.root, True)
        self.addCleanup(s.stop)
        return s

    def directory(self, servers: list[str] | None = None, **kw: Any) -> LDAPDirectory:
        assert self.shared is not None
        settings: dict[str, Any] = dict(
            servers=tuple(servers or [self.shared.url]),
            base_dn=SUFFIX,
            bind_dn=SERVICE_DN,
            required_group=MAIL_GROUP,
            expand_groups=True,
            quota_attribute="mailQuota",
            connect_timeout=1.0,
            timeout=0.5,
            request_timeout=2.0,
            retry_interval=1,
            pool_size=4,
        )
        settings.update(kw)
        cfg = LDAPConfig(**settings)
        client = LDAPClient(cfg, SERVICE_PW, DOMAINS, postmaster="alice@example.test", warn=self.warnings.append)
        d = LDAPDirectory(client, cfg, clock=self.clock)
        self.addCleanup(d.close)
        return d

    def assertUnauthorized(self, d: defer.Deferred) -> defer.Deferred:
        return self.assertFailure(d, UnauthorizedLogin)

    def assertUnavailable(self, d: defer.Deferred) -> defer.Deferred:
        return self.assertFailure(d, DirectoryUnavailable)


def set_password(slapd: Slapd, uid: str, password: str) -> None:
    conn = ldap3.Connection(slapd.url, ADMIN_DN, ADMIN_PW, auto_bind=True)
    conn.modify(f"uid={uid},ou=people,{SUFFIX}", {"userPassword": [(ldap3.MODIFY_REPLACE, [password])]})
    assert conn.result["result"] == 0, conn.result
    conn.unbind()


class Logins(DirectoryTestCase):
    @defer.inlineCallbacks
    def test_login_by_uid_gives_the_primary_address_as_account_name(self) -> Any:
        acct = yield self.directory().authenticate("alice", "alice-pw")
        self.assertEqual(acct, Account("alice@example.test", 1 << 30))

    @defer.inlineCallbacks
    def test_login_by_mail_address_works_too(self) -> Any:
        acct = yield self.directory().authenticate("alice@example.test", "alice-pw")
        self.assertEqual(acct.name, "alice@example.test")

    @defer.inlineCallbacks
    def test_account_name_is_the_lower_cased_primary_mail(self) -> Any:
        acct = yield self.directory().authenticate("bob", "bob-pw")
        self.assertEqual(acct, Account("bob@example.test", None))

    def test_wrong_password_is_refused(self) -> Any:
        return self.assertUnauthorized(self.directory().authenticate("alice", "wrong"))

    def test_unknown_login_is_refused_like_a_wrong_password(self) -> Any:
        return self.assertUnauthorized(self.directory().authenticate("nobody", "alice-pw"))

    @defer.inlineCallbacks
    def test_empty_password_is_refused_without_asking_ldap(self) -> Any:
        s = self.own_slapd()
        d = self.directory([s.url])
        s.pause()  # any LDAP request would now time out as "unavailable"
        yield self.assertUnauthorized(d.authenticate("alice", ""))
        s.resume()

    def test_user_outside_the_required_group_cannot_log_in(self) -> Any:
        return self.assertUnauthorized(self.directory().authenticate("carol", "carol-pw"))

    @defer.inlineCallbacks
    def test_without_required_group_that_user_can_log_in(self) -> Any:
        acct = yield self.directory(required_group="").authenticate("carol", "carol-pw")
        self.assertEqual(acct.name, "carol@example.test")

    @defer.inlineCallbacks
    def test_filter_injection_in_the_login_finds_nothing(self) -> Any:
        d = self.directory(auth_cache_ttl=0)
        for login in ("*)(uid=*", "*", "al*", "alice)(uid=*", "*)(|(uid=*", "alice\\", "(uid=alice)", "alice\x00"):
            yield self.assertUnauthorized(d.authenticate(login, "alice-pw"))

    @defer.inlineCallbacks
    def test_a_login_containing_filter_characters_is_searched_literally(self) -> Any:
        d = self.directory(user_filter="(&(objectClass=inetOrgPerson)(cn={login}))")
        # cn=Alice exists; "Ali*" must not match it as a wildcard.
        yield self.assertUnauthorized(d.authenticate("Ali*", "alice-pw"))
        acct = yield d.authenticate("Alice", "alice-pw")
        self.assertEqual(acct.name, "alice@example.test")

    @defer.inlineCallbacks
    def test_realm_lookup_of_the_account_after_login(self) -> Any:
        d = self.directory()
        yield d.authenticate("alice", "alice-pw")
        self.assertEqual((yield d.account("alice@example.test")), Account("alice@example.test", 1 << 30))
        self.assertIsNone((yield d.account("carol@example.test")))
        self.assertIsNone((yield d.account("a.smith@example.test")))  # an alias is not an account

    @defer.inlineCallbacks
    def test_sender_addresses_are_all_the_entry_addresses(self) -> Any:
        got = yield self.directory().sender_addresses("alice@example.test")
        self.assertEqual(got, ("alice@example.test", "a.smith@example.test", "alice@other.test"))


class Recipients(DirectoryTestCase):
    @defer.inlineCallbacks
    def check(self, address: str, expected: Resolution | None, **kw: Any) -> Any:
        got = yield self.directory(**kw).resolve(address)
        self.assertEqual(got, expected)

    def test_primary_address_delivers_to_its_mailbox(self) -> Any:
        return self.check("Alice@Example.TEST", Resolution(("alice@example.test",)))

    def test_alternate_address_delivers_to_the_owner_mailbox(self) -> Any:
        return self.check("a.smith@example.test", Resolution(("alice@example.test",)))

    def test_alternate_address_in_another_local_domain(self) -> Any:
        return self.check("alice@other.test", Resolution(("alice@example.test",)))

    def test_plus_tag_is_stripped_when_the_full_address_is_unknown(self) -> Any:
        return self.check("alice+lists@example.test", Resolution(("alice@example.test",)))

    def test_unknown_address_resolves_to_none(self) -> Any:
        return self.check("nobody@example.test", None)

    def test_address_of_a_user_outside_the_required_group_is_unknown(self) -> Any:
        return self.check("carol@example.test", None)

    def test_local_alternate_of_an_external_person_is_forwarded(self) -> Any:
        return self.check("dave@example.test", Resolution((), ("dave@partner.test",)))

    def test_group_expands_to_members_nested_groups_once_each(self) -> Any:
        return self.check("team@example.test", Resolution(("alice@example.test", "bob@example.test"), ("dave@partner.test",)))

    def test_group_alternate_address_expands_too(self) -> Any:
        return self.check("all@example.test", Resolution(("alice@example.test", "bob@example.test"), ("dave@partner.test",)))

    def test_groups_are_unknown_when_expansion_is_off(self) -> Any:
        return self.check("team@example.test", None, expand_groups=False)

    def test_postmaster_goes_to_the_configured_postmaster(self) -> Any:
        return self.check("postmaster@other.test", Resolution(("alice@example.test",)))

    def test_wildcards_in_an_address_match_nothing(self) -> Any:
        return self.check("*@example.test", None)

    def test_injection_in_an_address_matches_nothing(self) -> Any:
        return self.check("x)(mail=*@example.test", None)

    def test_address_outside_the_local_domains_is_none_without_a_lookup(self) -> Any:
        return self.check("alice@elsewhere.test", None)

    @defer.inlineCallbacks
    def test_group_expansion_stops_at_max_group_members(self) -> Any:
        d = self.directory(max_group_members=1)
        got = yield d.resolve("team@example.test")
        self.assertEqual(len(got.mailboxes) + len(got.forwards), 1)


class Caches(DirectoryTestCase):
    @defer.inlineCallbacks
    def test_a_repeated_login_is_answered_from_the_cache(self) -> Any:
        s = self.own_slapd()
        d = self.directory([s.url])
        yield d.authenticate("alice", "alice-pw")
        s.pause()
        acct = yield d.authenticate("alice", "alice-pw")
        self.assertEqual(acct.name, "alice@example.test")
        # A different password is not answered from the cache: LDAP must be asked.
        yield self.assertUnavailable(d.authenticate("alice", "other-pw"))
        s.resume()

    @defer.inlineCallbacks
    def test_a_new_password_works_at_once_and_the_old_one_until_the_cache_expires(self) -> Any:
        s = self.own_slapd()
        d = self.directory([s.url], auth_cache_ttl=60.0)
        yield d.authenticate("alice", "alice-pw")
        set_password(s, "alice", "new-pw")
        self.assertEqual((yield d.authenticate("alice", "new-pw")).name, "alice@example.test")
        # The new login replaced the cached one: the old password goes to LDAP, which refuses.
        yield self.assertUnauthorized(d.authenticate("alice", "alice-pw"))

    @defer.inlineCallbacks
    def test_a_changed_password_is_honoured_after_the_auth_cache_ttl(self) -> Any:
        s = self.own_slapd()
        d = self.directory([s.url], auth_cache_ttl=60.0)
        yield d.authenticate("alice", "alice-pw")
        set_password(s, "alice", "new-pw")
        self.assertEqual((yield d.authenticate("alice", "alice-pw")).name, "alice@example.test")  # cached
        self.clock.now += 61
        yield self.assertUnauthorized(d.authenticate("alice", "alice-pw"))

    @defer.inlineCallbacks
    def test_auth_cache_ttl_zero_asks_ldap_every_time(self) -> Any:
        s = self.own_slapd()
        d = self.directory([s.url], auth_cache_ttl=0)
        yield d.authenticate("alice", "alice-pw")
        set_password(s, "alice", "new-pw")
        yield self.assertUnauthorized(d.authenticate("alice", "alice-pw"))

    def test_the_auth_cache_holds_no_password(self) -> None:
        d = self.directory()
        digest = d._digest("alice", "alice-pw")
        self.assertNotIn(b"alice-pw", digest)
        self.assertEqual(len(digest), 32)

    @defer.inlineCallbacks
    def test_found_addresses_are_cached_for_cache_ttl(self) -> Any:
        s = self.own_slapd()
        d = self.directory([s.url], cache_ttl=30.0)
        yield d.resolve("alice@example.test")
        s.pause()
        self.assertEqual((yield d.resolve("alice@example.test")), Resolution(("alice@example.test",)))
        self.clock.now += 31
        yield self.assertUnavailable(d.resolve("alice@example.test"))
        s.resume()

    @defer.inlineCallbacks
    def test_unknown_addresses_are_cached_for_negative_cache_ttl(self) -> Any:
        s = self.own_slapd()
        d = self.directory([s.url], negative_cache_ttl=10.0)
        self.assertIsNone((yield d.resolve("nobody@example.test")))
        s.pause()
        self.assertIsNone((yield d.resolve("nobody@example.test")))
        self.clock.now += 11
        yield self.assertUnavailable(d.resolve("nobody@example.test"))
        s.resume()

    @defer.inlineCallbacks
    def test_concurrent_lookups_of_one_address_share_one_request(self) -> Any:
        d = self.directory()
        calls = []
        real = d.client.resolve
        d.client.resolve = lambda a: (calls.append(a), real(a))[1]  # type: ignore[method-assign]
        got = yield defer.gatherResults([d.resolve("bob@example.test") for _ in range(10)])
        self.assertEqual(set(got), {Resolution(("bob@example.test",))})
        self.assertEqual(len(calls), 1)


class Outages(DirectoryTestCase):
    @defer.inlineCallbacks
    def test_a_hung_server_gives_unavailable_within_request_timeout(self) -> Any:
        s = self.own_slapd()
        d = self.directory([s.url], request_timeout=1.0, timeout=5.0)
        yield d.resolve("bob@example.test")  # connections are open and pooled
        s.pause()
        start = time.monotonic()
        yield self.assertUnavailable(d.authenticate("bob", "bob-pw"))
        yield self.assertUnavailable(d.resolve("alice@example.test"))
        self.assertLess(time.monotonic() - start, 2.6)
        s.resume()

    @defer.inlineCallbacks
    def test_the_reactor_keeps_running_while_ldap_hangs(self) -> Any:
        s = self.own_slapd()
        d = self.directory([s.url], pool_size=8, request_timeout=1.0, timeout=0.8)
        yield d.resolve("bob@example.test")
        s.pause()
        meter = StallMeter(0.005).start()
        results = yield defer.DeferredList(
            [d.authenticate(f"user{i}", "pw") for i in range(20)] + [d.resolve(f"x{i}@example.test") for i in range(20)],
            consumeErrors=True,
        )
        longest = meter.stop()
        s.resume()
        self.assertTrue(all(not ok and r.check(DirectoryUnavailable) for ok, r in results))
        self.assertLess(longest, 0.05, f"reactor stalled {longest * 1000:.0f} ms")

    @defer.inlineCallbacks
    def test_beyond_max_pending_requests_fail_at_once(self) -> Any:
        s = self.own_slapd()
        d = self.directory([s.url], pool_size=1, max_pending=2, request_timeout=1.0, timeout=0.8)
        s.pause()
        waiting = [d.resolve(f"x{i}@example.test") for i in range(2)]
        for w in waiting:
            w.addErrback(lambda f: f.trap(DirectoryUnavailable))
        start = time.monotonic()
        yield self.assertUnavailable(d.resolve("y@example.test"))
        self.assertLess(time.monotonic() - start, 0.1)
        yield defer.DeferredList(waiting)
        s.resume()

    @defer.inlineCallbacks
    def test_service_resumes_by_itself_after_slapd_restarts(self) -> Any:
        s = self.own_slapd()
        d = self.directory([s.url], cache_ttl=0, negative_cache_ttl=0, auth_cache_ttl=0)
        self.assertEqual((yield d.authenticate("alice", "alice-pw")).name, "alice@example.test")
        s.stop()
        yield self.assertUnavailable(d.authenticate("alice", "alice-pw"))
        yield self.assertUnavailable(d.resolve("alice@example.test"))
        s.start()
        # The failed server is retried after retry_interval (1 s here).
        deadline = time.monotonic() + 5
        while True:
            try:
                acct = yield d.authenticate("alice", "alice-pw")
                break
            except DirectoryUnavailable:
                self.assertLess(time.monotonic(), deadline, "no recovery after restart")
                yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(acct.name, "alice@example.test")
        self.assertEqual((yield d.resolve("a.smith@example.test")), Resolution(("alice@example.test",)))

    @defer.inlineCallbacks
    def test_failed_lookups_are_not_cached(self) -> Any:
        s = self.own_slapd()
        d = self.directory([s.url])
        s.pause()
        yield self.assertUnavailable(d.resolve("bob@example.test"))
        s.resume()
        self.assertEqual((yield d.resolve("bob@example.test")), Resolution(("bob@example.test",)))


class Failover(DirectoryTestCase):
    @defer.inlineCallbacks
    def test_a_stopped_first_server_fails_over_to_the_second(self) -> Any:
        a, b = self.own_slapd("a"), self.own_slapd("b")
        d = self.directory([a.url, b.url], cache_ttl=0, negative_cache_ttl=0, auth_cache_ttl=0)
        self.assertEqual((yield d.authenticate("alice", "alice-pw")).name, "alice@example.test")
        a.stop()
        self.assertEqual((yield d.authenticate("alice", "alice-pw")).name, "alice@example.test")
        self.assertEqual((yield d.resolve("robert@example.test")), Resolution(("bob@example.test",)))
        yield self.assertUnauthorized(d.authenticate("alice", "wrong"))

    @defer.inlineCallbacks
    def test_a_hung_first_server_fails_over_within_one_request(self) -> Any:
        a, b = self.own_slapd("a"), self.own_slapd("b")
        d = self.directory([a.url, b.url], timeout=0.5, request_timeout=3.0, cache_ttl=0, auth_cache_ttl=0)
        yield d.authenticate("alice", "alice-pw")
        a.pause()
        self.assertEqual((yield d.authenticate("alice", "alice-pw")).name, "alice@example.test")
        # The hung server is now out of the rotation: the next request is quick.
        start = time.monotonic()
        self.assertEqual((yield d.authenticate("bob", "bob-pw")).name, "bob@example.test")
        self.assertLess(time.monotonic() - start, 0.4)
        a.resume()

    @defer.inlineCallbacks
    def test_an_unreachable_first_server_at_start_is_skipped(self) -> Any:
        b = self.own_slapd("b")
        dead = f"ldap://127.0.0.1:{b.port + 1 if b.port < 65535 else 1}"
        d = self.directory([dead, b.url])
        self.assertEqual((yield d.authenticate("bob", "bob-pw")).name, "bob@example.test")


class TLS(DirectoryTestCase):
    @defer.inlineCallbacks
    def test_ldaps_with_the_test_ca(self) -> Any:
        assert self.shared is not None
        d = self.directory([self.shared.ldaps_url], ca_file=CA.ca_cert)
        self.assertEqual((yield d.authenticate("alice", "alice-pw")).name, "alice@example.test")

    @defer.inlineCallbacks
    def test_starttls_with_the_test_ca(self) -> Any:
        assert self.shared is not None
        url = self.shared.url.replace("127.0.0.1", "localhost")
        d = self.directory([url], start_tls=True, ca_file=CA.ca_cert)
        self.assertEqual((yield d.authenticate("bob", "bob-pw")).name, "bob@example.test")

    def test_ldaps_with_an_unknown_ca_is_unavailable_not_refused(self) -> Any:
        assert self.shared is not None
        d = self.directory([self.shared.ldaps_url], ca_file=CA.other_ca_cert)
        return self.assertUnavailable(d.authenticate("alice", "alice-pw"))

    def test_starttls_with_an_unknown_ca_is_unavailable(self) -> Any:
        assert self.shared is not None
        d = self.directory([self.shared.url], start_tls=True, ca_file=CA.other_ca_cert)
        return self.assertUnavailable(d.resolve("alice@example.test"))

    def test_ldaps_to_a_name_not_in_the_certificate_is_unavailable(self) -> Any:
        assert self.shared is not None
        url = f"ldaps://127.0.0.1:{self.shared.ldaps_port}"  # the certificate names "localhost" only
        d = self.directory([url], ca_file=CA.ca_cert)
        return self.assertUnavailable(d.resolve("alice@example.test"))


class ServiceAccount(DirectoryTestCase):
    def test_a_wrong_service_password_is_unavailable_not_unknown(self) -> Any:
        assert self.shared is not None
        cfg = LDAPConfig(servers=(self.shared.url,), base_dn=SUFFIX, bind_dn=SERVICE_DN, timeout=0.5, request_timeout=2.0)
        d = LDAPDirectory(LDAPClient(cfg, "wrong", DOMAINS), cfg)
        self.addCleanup(d.close)
        return self.assertUnavailable(d.resolve("alice@example.test"))

    @defer.inlineCallbacks
    def test_anonymous_search_works_when_no_bind_dn_is_set(self) -> Any:
        d = self.directory(bind_dn="")
        self.assertEqual((yield d.authenticate("alice", "alice-pw")).name, "alice@example.test")
