"""The inbound checks' two ways to a verdict (mailauth/inbound.py) give the same one.

When every DNS answer a message needs (its DKIM keys, the DMARC record) is in the
resolver's cache and its SPF result in the SPF cache, :meth:`AuthChecker.check_now`
judges it at once, and :class:`CheckingSink` passes it on without a coroutine or a
thread trip.  Otherwise :meth:`AuthChecker.check` fetches the answers and evaluates
SPF in the auth pool.  Both must give the same action, Authentication-Results field
and log summary, for every kind of message: signed and passing, a broken signature,
an unknown key, unsigned, DMARC reject, quarantine and none, SPF fail.  In-process,
with a resolver that answers from a dict.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from mailsuite.dns.resolver import NotFound
from mailsuite.handoff import BodyFile, Envelope, PermanentFailure, TemporaryFailure
from mailsuite.mailauth.dkim_sign import SignPolicy
from mailsuite.mailauth.inbound import AuthChecker, CheckingSink, InboundPolicy, Verdict
from mailsuite.mailauth.spf_check import SPFCache

_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = _key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
PUB = b"v=DKIM1; k=rsa; p=" + base64.b64encode(_key.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))

ZONE = {
    "loadgen.test": [b"v=spf1 ip4:192.0.2.1 -all"],
    "sel._domainkey.loadgen.test": [PUB],
    "_dmarc.loadgen.test": [b"v=DMARC1; p=reject"],
    "quiet.test": [b"v=spf1 ?all"],
    "sel._domainkey.quiet.test": [PUB],
    "_dmarc.quiet.test": [b"v=DMARC1; p=quarantine"],
    "relaxed.test": [b"v=spf1 ?all"],
    "_dmarc.relaxed.test": [b"v=DMARC1; p=none"],
}


class DictResolver:
    """TXT answers from ZONE.  ``caching``: whether ``cached`` answers (the cache is
    warm) or says "not cached" (every answer must be fetched)."""

    def __init__(self, caching: bool) -> None:
        self.caching = caching

    def _answer(self, name: str) -> list[bytes]:
        name = name.lower().rstrip(".")
        if name not in ZONE:
            e = NotFound(name, "TXT", "Host not found")
            e.expires = time.time() + 60
            raise e
        return list(ZONE[name])

    def cached(self, name: str, rtype: str) -> Any:
        return self._answer(name) if self.caching and rtype == "TXT" else None

    def txt(self, name: str) -> defer.Deferred:
        try:
            return defer.succeed(self._answer(name))
        except NotFound:
            return defer.fail()

    def lookup_sync_expiring(self, name: str, rtype: str) -> tuple[Any, float]:
        if rtype != "TXT":
            e = NotFound(name, rtype, "Host not found")
            e.expires = time.time() + 60
            raise e
        return self._answer(name), time.time() + 60


def now(f: Any, *args: Any) -> defer.Deferred:
    """The pool's ``run``, run at once (the Deferred has fired when it returns)."""
    return defer.maybeDeferred(f, *args)


def no_thread(f: Any, *args: Any) -> defer.Deferred:
    raise AssertionError(f"a thread trip for {f.__name__}")


def message(from_domain: str, sign: str | None, body: bytes = b"Hi.\n") -> bytes:
    head = (f"From: Someone <someone@{from_domain}>\nTo: <alice@example.test>\nSubject: hello\n"
            f"Date: Fri, 04 Dec 2026 10:00:00 +0000\nMessage-ID: <1@{from_domain}>\n\n").encode()
    msg = head + body
    if sign:
        msg = dkim.sign(msg, b"sel", sign.encode(), PEM, canonicalize=(b"relaxed", b"relaxed"),
                        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + msg
    return msg.replace(b"\r\n", b"\n")


def body_of(data: bytes) -> BodyFile:
    return BodyFile("/nonexistent/body", len(data), data.count(b"\n"), data)


def envelope(sender: str, ip: str = "192.0.2.1") -> Envelope:
    return Envelope("Q1", sender, ("alice@example.test",), client_ip=ip, helo="mx.sender.test")


# (what it is, the expected action, the envelope, the message)
CASES = [
    ("signed, SPF pass, DMARC pass", "accept", envelope("b@loadgen.test"), message("loadgen.test", "loadgen.test")),
    ("body changed after signing", "accept", envelope("b@loadgen.test"),
     message("loadgen.test", "loadgen.test").replace(b"Hi.", b"Ho.")),
    ("signed and SPF fail: DKIM saves it", "accept", envelope("b@loadgen.test", "198.51.100.7"),
     message("loadgen.test", "loadgen.test")),
    ("forged From: under p=reject", "reject", envelope("x@quiet.test"), message("loadgen.test", None)),
    ("broken signature under p=reject", "reject", envelope("x@quiet.test"),
     message("loadgen.test", "loadgen.test").replace(b"Hi.", b"Ho.")),
    ("unaligned under p=quarantine", "junk", envelope("x@relaxed.test"), message("quiet.test", "loadgen.test")),
    ("a key that is not published", "accept", envelope("x@relaxed.test"), message("relaxed.test", "relaxed.test")),
    ("unsigned, p=none", "accept", envelope("x@relaxed.test"), message("relaxed.test", None)),
    ("SPF fail, no signature, no DMARC", "reject", envelope("b@loadgen.test", "198.51.100.7"),
     message("nodmarc.test", None)),
    ("null sender", "accept", envelope(""), message("relaxed.test", None)),
]


def same(v: Verdict) -> tuple:
    return v.action, v.header, v.summary, v.status, v.text


@pytest.mark.parametrize("what,action,env,data", CASES, ids=[c[0] for c in CASES])
def test_check_now_gives_the_verdict_of_the_full_check(what: str, action: str, env: Envelope, data: bytes) -> None:
    spf_cache = SPFCache()
    full = AuthChecker(DictResolver(caching=False), now, InboundPolicy("mx.example.test"), spf_cache)
    assert full.check_now(env, body_of(data)) is None  # nothing cached yet: it cannot judge at once
    got: list[Verdict] = []
    full.check(env, body_of(data)).addCallback(got.append)
    assert got[0].action == action

    warm = AuthChecker(DictResolver(caching=True), no_thread, InboundPolicy("mx.example.test"), spf_cache)
    verdict = warm.check_now(env, body_of(data))
    assert verdict is not None and same(verdict) == same(got[0])


class Inner:
    def __init__(self) -> None:
        self.got: list[tuple[Envelope, BodyFile]] = []

    def accept(self, env: Envelope, body: BodyFile) -> defer.Deferred:
        self.got.append((env, body))
        return defer.succeed("queued")


def warm_sink(env: Envelope, data: bytes) -> tuple[CheckingSink, Inner]:
    """A sink whose resolver and SPF cache already hold every answer ``data`` needs."""
    spf_cache = SPFCache()
    AuthChecker(DictResolver(caching=False), now, InboundPolicy("mx.example.test"), spf_cache).check(env, body_of(data))
    inner = Inner()
    checker = AuthChecker(DictResolver(caching=True), no_thread, InboundPolicy("mx.example.test"), spf_cache)
    return CheckingSink(inner, checker, SignPolicy(()), no_thread, "mx.example.test"), inner


def test_a_warm_sink_passes_the_message_on_before_accept_returns() -> None:
    env, data = CASES[5][2], CASES[5][3]
    sink, inner = warm_sink(env, data)
    results: list[Any] = []
    sink.accept(env, body_of(data)).addCallback(results.append)
    assert results == ["queued (mailauth: spf=neutral dkim=pass arc=none dmarc=fail (p=quarantine dis=quarantine)"
                       " -> junk)"]
    (passed_env, passed_body), = inner.got
    assert passed_env.folder == "Junk"
    assert passed_body.data is not None and passed_body.data.startswith(b"Authentication-Results: mx.example.test;")
    assert passed_body.data.endswith(data) and passed_body.size == len(passed_body.data)


def test_a_warm_sink_refuses_with_the_verdicts_code() -> None:
    env, data = CASES[3][2], CASES[3][3]
    sink, inner = warm_sink(env, data)
    failures: list[Any] = []
    sink.accept(env, body_of(data)).addErrback(failures.append)
    assert not inner.got
    assert failures[0].check(PermanentFailure) and failures[0].value.status == "5.7.1"
    # The client reads the reason; the log (the detail) has the checks' summary too.
    assert failures[0].value.reply == "Message rejected: the DMARC policy of loadgen.test says reject " \
                                      "(From: domain not authenticated)"
    assert str(failures[0].value) == failures[0].value.reply + \
        " (mailauth: spf=neutral dkim=none arc=none dmarc=fail (p=reject dis=reject) -> reject)"


def test_a_bug_on_the_synchronous_path_is_a_temporary_failure() -> None:
    env, data = CASES[0][2], CASES[0][3]
    sink, inner = warm_sink(env, data)

    def broken(name: str, rtype: str) -> Any:
        raise RuntimeError("bug")

    sink.checker.resolver.cached = broken  # type: ignore[attr-defined]
    failures: list[Any] = []
    sink.accept(env, body_of(data)).addErrback(failures.append)
    assert not inner.got
    assert failures[0].check(TemporaryFailure) and failures[0].value.status == "4.7.0"


def test_the_summary_has_its_own_line_when_the_message_is_not_taken_after_all() -> None:
    env, data = CASES[0][2], CASES[0][3]
    sink, inner = warm_sink(env, data)
    sink.inner.accept = lambda env, body: defer.fail(TemporaryFailure("disk full"))  # type: ignore[method-assign]
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        failures: list[Any] = []
        sink.accept(env, body_of(data)).addErrback(failures.append)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert str(failures[0].value) == "disk full"
    lines = [e for e in events if e.get("log_format", "").startswith("mailauth:")]
    assert [(e["qid"], e["summary"]) for e in lines] == [
        ("Q1", "spf=pass dkim=pass arc=none dmarc=pass (p=reject dis=none) -> accept")]
