"""Pure parts of the relay: dot-stuffing across chunks, next-hop parsing, routing,
MX selection over a fake resolver, reply parsing and the DSN format."""

from __future__ import annotations

import email
from email import policy as email_policy
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from mailsuite.config import RelayConfig
from mailsuite.dns.resolver import MX, NotFound, TemporaryDNSError
from mailsuite.queue import dsn
from mailsuite.queue.mx import MXResolver, RouteError
from mailsuite.queue.route import Destination, Router, check_relay_config, parse_nexthop
from mailsuite.queue.spool import Record, Recipient
from mailsuite.smtp.outbound import ClientProtocol, PeerReply, stuff

# -- dot-stuffing -------------------------------------------------------------------------


def reference_wire(body: bytes) -> bytes:
    """What RFC 5321 §4.5.2 asks for, computed on the whole body at once; a bare CR
    ends a line as LF and CR LF do (issue 16 finding 5)."""
    lines = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines)


def stuffed_in_chunks(body: bytes, cuts: list[int]) -> bytes:
    out, at_start, prev = [], True, 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(body))) + [len(body)]:
        piece, at_start = stuff(body[prev:cut], at_start)
        out.append(piece)
        prev = cut
    return b"".join(out)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b".", b"..", b"a", b"\n", b".\n", b"x.y", b"\r"]), max_size=60),
       st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_stuffing_in_any_chunking_equals_stuffing_the_whole_body(parts: list[bytes], cuts: list[int]) -> None:
    body = b"".join(parts)
    assert stuffed_in_chunks(body, cuts) == reference_wire(body)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b".", b"a", b"\n", b"\r", b"\r\n", b".\r"]), max_size=60),
       st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_no_bare_cr_or_lf_ever_reaches_the_wire(parts: list[bytes], cuts: list[int]) -> None:
    wire = stuffed_in_chunks(b"".join(parts), cuts)
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")


def test_a_bare_cr_dot_cr_is_a_stuffed_dot_line_on_the_wire() -> None:
    """The smuggling of issue 16 finding 5: <CR>.<CR> must not end DATA anywhere."""
    wire, _ = stuff(b"hi\r.\rMAIL FROM:<evil@x>\r\n", True)
    assert wire == b"hi\r\n..\r\nMAIL FROM:<evil@x>\r\n"


def test_dot_at_the_start_of_a_chunk_after_a_line_end_is_stuffed() -> None:
    first, state = stuff(b"Subject: x\n\nline\n", True)
    second, _ = stuff(b".\nMAIL FROM:<evil@x>\n", state)
    assert second.startswith(b"..\r\n")


def test_dot_at_the_start_of_the_body_is_stuffed() -> None:
    assert stuff(b".hidden\n", True)[0] == b"..hidden\r\n"


def test_dot_in_the_middle_of_a_line_split_by_a_chunk_is_not_stuffed() -> None:
    _, state = stuff(b"abc", True)
    assert stuff(b".def\n", state)[0] == b".def\r\n"


# -- next hops and routes ------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("mx.example.org", ("mx.example.org", 25)),
    ("mx.example.org:2525", ("mx.example.org", 2525)),
    ("127.0.0.1:2626", ("127.0.0.1", 2626)),
    ("[::1]:2626", ("::1", 2626)),
    ("[2001:db8::5]", ("2001:db8::5", 25)),
    ("MX.Example.ORG", ("mx.example.org", 25)),
])
def test_next_hop_forms(value: str, expected: tuple[str, int]) -> None:
    assert parse_nexthop(value) == expected


@pytest.mark.parametrize("value", ["", "host:0", "host:99999", "host:abc", "::1:25", "[::1", "[mx]:25", "a b:25", "u@h:25"])
def test_bad_next_hops_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_nexthop(value)


def relay_cfg(**kw: Any) -> RelayConfig:
    return RelayConfig(**kw)


def test_transport_map_wins_then_smarthost_then_mx() -> None:
    router = Router(relay_cfg(transport={"partner.test": "10.0.0.5:2626", ".branch.test": "[::1]:25"},
                              smarthost="smart.test:587"), ("u", "p"))
    assert router.route("partner.test") == Destination("transport:10.0.0.5:2626:may", "host", "10.0.0.5", 2626, "may")
    assert router.route("a.branch.test").host == "::1"
    smart = router.route("elsewhere.test")
    assert (smart.kind, smart.host, smart.port, smart.tls, smart.auth) == ("host", "smart.test", 587, "verify", ("u", "p"))
    assert "p'" not in repr(smart)  # the password stays out of logs


def test_domains_sharing_a_next_hop_with_different_tls_policies_do_not_share_connections() -> None:
    router = Router(relay_cfg(transport={"a.test": "10.0.0.5:25", "b.test": "10.0.0.5:25"},
                              tls_policies={"b.test": "verify"}))
    assert router.route("a.test").key != router.route("b.test").key


def test_without_smarthost_a_domain_goes_by_mx_with_its_tls_policy() -> None:
    router = Router(relay_cfg(tls_policies={"bank.test": "verify"}))
    assert router.route("bank.test") == Destination("mx:bank.test", "mx", "bank.test", 25, "verify")
    assert router.route("other.test").tls == "may"


def test_relay_config_problems_name_the_key() -> None:
    problems = check_relay_config(relay_cfg(smarthost="bad host", transport={"x.test": "h:0"},
                                            backoff_min=10, backoff_max=5))
    assert any(p.startswith("relay.smarthost:") for p in problems)
    assert any(p.startswith("relay.transport.x.test:") for p in problems)
    assert any(p.startswith("relay.backoff_max:") for p in problems)


# -- MX selection ---------------------------------------------------------------------------


class FakeResolver:
    """The IResolver surface MXResolver uses, answering from a dict."""

    def __init__(self, zone: dict[str, Any]) -> None:
        self.zone = zone

    def _answer(self, name: str, rtype: str) -> defer.Deferred:
        entry = self.zone.get(name)
        if entry is None:
            return defer.fail(NotFound(name, rtype, "Host not found"))
        if entry == "SERVFAIL":
            return defer.fail(TemporaryDNSError(name, rtype, "Name server failure (SERVFAIL)"))
        values = entry.get(rtype, [])
        if rtype == "MX":
            values = sorted((MX(p, h) for p, h in values), key=lambda m: m.preference)
        return defer.succeed(list(values))

    def mx(self, name: str) -> defer.Deferred:
        return self._answer(name, "MX")

    def a(self, name: str) -> defer.Deferred:
        return self._answer(name, "A")

    def aaaa(self, name: str) -> defer.Deferred:
        return self._answer(name, "AAAA")


def candidates(zone: dict[str, Any], domain: str) -> Any:
    d = defer.ensureDeferred(MXResolver(FakeResolver(zone)).candidates(Destination("k", "mx", domain, 25, "may")))
    results: list[Any] = []
    d.addBoth(results.append)
    (r,) = results
    if isinstance(r, Failure):
        r.raiseException()
    return r


def test_mx_hosts_in_preference_order_ipv6_first() -> None:
    zone = {
        "d.test": {"MX": [(20, "b.d.test"), (10, "a.d.test")]},
        "a.d.test": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
        "b.d.test": {"A": ["192.0.2.2"]},
    }
    got = [(c.host, c.ip) for c in candidates(zone, "d.test")]
    assert got == [("a.d.test", "2001:db8::1"), ("a.d.test", "192.0.2.1"), ("b.d.test", "192.0.2.2")]


def test_equal_preference_mx_hosts_are_shuffled() -> None:
    zone: dict[str, Any] = {"d.test": {"MX": [(10, f"m{i}.d.test") for i in range(6)]}}
    zone.update({f"m{i}.d.test": {"A": [f"192.0.2.{i + 1}"]} for i in range(6)})
    orders = {tuple(c.host for c in candidates(zone, "d.test")) for _ in range(30)}
    assert len(orders) > 1


def test_no_mx_means_the_domain_itself() -> None:
    got = candidates({"d.test": {"A": ["192.0.2.9"]}}, "d.test")
    assert [(c.host, c.ip) for c in got] == [("d.test", "192.0.2.9")]


def test_null_mx_is_a_permanent_556() -> None:
    with pytest.raises(RouteError) as e:
        candidates({"d.test": {"MX": [(0, "")]}}, "d.test")
    assert (e.value.code, e.value.status, e.value.permanent) == (556, "5.1.10", True)


def test_nxdomain_is_permanent_and_servfail_temporary() -> None:
    with pytest.raises(RouteError) as e:
        candidates({}, "d.test")
    assert e.value.permanent and e.value.status == "5.1.2"
    with pytest.raises(RouteError) as e:
        candidates({"d.test": "SERVFAIL"}, "d.test")
    assert not e.value.permanent and e.value.status == "4.4.3"


def test_mx_whose_hosts_cannot_be_resolved_right_now_is_temporary() -> None:
    with pytest.raises(RouteError) as e:
        candidates({"d.test": {"MX": [(10, "m.d.test")]}, "m.d.test": "SERVFAIL"}, "d.test")
    assert not e.value.permanent


# -- replies ----------------------------------------------------------------------------------


def feed(data: bytes) -> tuple[ClientProtocol, list[Any]]:
    p = ClientProtocol()
    p.makeConnection(StringTransport())
    got: list[Any] = []
    p.expect(5, "reply").addBoth(got.append)
    p.dataReceived(data)
    return p, got


def test_multiline_reply_keeps_its_lines() -> None:
    _p, (reply,) = feed(b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n")
    assert reply == PeerReply(250, "mx.test PIPELINING SIZE 1000", ("mx.test", "PIPELINING", "SIZE 1000"))


def test_enhanced_status_is_taken_from_the_reply_or_derived() -> None:
    assert PeerReply(550, "5.1.1 no such user").status == "5.1.1"
    assert PeerReply(451, "try later").status == "4.0.0"


def test_garbage_reply_is_a_protocol_error() -> None:
    p, (failure,) = feed(b"hello there\r\n")
    assert "protocol error" in str(failure.value) and p.error


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_peer_bytes_give_a_reply_or_a_clean_error(data: bytes) -> None:
    p = ClientProtocol()
    p.makeConnection(StringTransport())
    got: list[Any] = []
    p.expect(5, "reply").addBoth(got.append)
    p.dataReceived(data)
    for d, timer in list(p._waiters):
        timer.cancel()
    assert all(isinstance(g, PeerReply) or "protocol error" in str(g.value) for g in got)


# -- DSN ----------------------------------------------------------------------------------------


def test_dsn_is_a_multipart_report_with_status_and_original_headers() -> None:
    rec = Record("ABC123", "alice@example.test", 1_700_000_000.0, (
        Recipient("bob@remote.test", "remote", "bob@remote.test", "bounced", 1, 0, 1_700_000_100.0, "5.1.1",
                  "host mx.remote.test[192.0.2.1]:25 said: 550 5.1.1 no such user", "mx.remote.test[192.0.2.1]:25"),
    ))
    raw = dsn.build(rec, rec.recipients, b"Subject: hello\nFrom: alice@example.test\n", "mail.example.test")
    msg = email.message_from_bytes(raw, policy=email_policy.default)
    assert msg.get_content_type() == "multipart/report" and msg["Auto-Submitted"] == "auto-replied"
    text, status, headers = list(msg.iter_parts())
    assert text.get_content_type() == "text/plain"
    fields = status.as_string()
    for want in ("Reporting-MTA: dns; mail.example.test", "Final-Recipient: rfc822; bob@remote.test",
                 "Action: failed", "Status: 5.1.1", "Remote-MTA: dns; mx.remote.test",
                 "Diagnostic-Code: smtp; 550 5.1.1 no such user"):
        assert want in fields
    assert headers.get_content_type() == "text/rfc822-headers" and "Subject: hello" in headers.as_string()


def test_local_recipient_is_reported_under_the_address_the_sender_used() -> None:
    rec = Record("ABC123", "x@remote.test", 0.0, (Recipient("bob@example.test", "local", "info@example.test", "bounced"),))
    raw = dsn.build(rec, rec.recipients, b"", "mail.example.test").decode()
    assert "Final-Recipient: rfc822; info@example.test" in raw



def test_backoff_doubles_from_min_to_max() -> None:
    from mailsuite.queue.scheduler import QueueManager

    qm = QueueManager.__new__(QueueManager)
    qm.cfg = RelayConfig(backoff_min=300, backoff_max=3600)
    assert [qm._backoff(n) for n in range(1, 7)] == [300, 600, 1200, 2400, 3600, 3600]
    assert qm._backoff(1000) == 3600


def test_stock_twisted_client_lets_a_chunk_start_end_data_early_and_ours_does_not() -> None:
    """research/twisted-mail.md §2.5: why the relay has its own client."""
    from twisted.mail import smtp

    stock = smtp.SMTPClient(identity="x")
    stock.resetTimeout = lambda: None  # no transport here
    first, second = b"Subject: x\n\nline\n", b".\nMAIL FROM:<smuggled@evil.test>\n"
    stock_wire = stock.transformChunk(first) + stock.transformChunk(second)
    assert b"\r\n.\r\nMAIL FROM" in stock_wire  # the peer would end DATA here
    ours, state = stuff(first, True)
    more, _ = stuff(second, state)
    assert b"\r\n.\r\n" not in ours + more and b"\r\n..\r\nMAIL FROM" in ours + more
