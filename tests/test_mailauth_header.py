"""The Authentication-Results field AuthChecker writes (from remembered result
clauses, mailauth/inbound.py) is the one authres writes from whole result objects,
for every kind of result the checks give: SPF for MAIL FROM and HELO or HELO only,
no DKIM signature or several (with b= prefixes that need quoting), every ARC and DMARC
outcome, with and without a DMARC policy and a From: domain."""

from __future__ import annotations

import itertools
from typing import Any

import authres
import authres.arc
import authres.dmarc
import pytest

from mailsuite.handoff import Envelope
from mailsuite.mailauth.dmarc import DMARCResult
from mailsuite.mailauth.inbound import AuthChecker, InboundPolicy, _fold
from mailsuite.mailauth.spf_check import SPFResult


def authres_header(authserv_id: str, envelope: Envelope, spf_mf: Any, spf_helo: Any, dkim_results: list,
                   arc_cv: str, dm: Any) -> bytes:
    """The field as AuthChecker built it with authres objects before the clauses were
    remembered (the reference)."""
    results: list[Any] = []
    if spf_mf.identity == "mailfrom":
        results.append(authres.SPFAuthenticationResult(result=spf_mf.result, smtp_mailfrom=envelope.sender))
    if envelope.helo:
        results.append(authres.SPFAuthenticationResult(result=spf_helo.result, smtp_helo=envelope.helo))
    if not dkim_results:
        results.append(authres.AuthenticationResult(method="dkim", result="none"))
    for result, d, s, a, b in dkim_results:
        r = authres.DKIMAuthenticationResult(result=result, header_d=d or None, header_s=s or None, header_a=a or None)
        if b:
            r.properties.append(authres.AuthenticationResultProperty("header", "b", b))
        results.append(r)
    results.append(authres.arc.ARCAuthenticationResult(result=arc_cv if arc_cv in ("pass", "fail", "none") else "fail"))
    if dm.from_domain:
        comment = f"p={dm.policy.upper()} dis={dm.disposition.upper()}" if dm.policy else None
        results.append(authres.dmarc.DMARCAuthenticationResult(result=dm.result, result_comment=comment,
                                                               header_from=dm.from_domain))
    else:
        results.append(authres.dmarc.DMARCAuthenticationResult(result="none"))
    text = str(authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results))
    return (_fold(text) + "\n").encode("utf-8", "replace")


ENVELOPES = [
    Envelope(queue_id="q", sender="bounce@loadgen.test", recipients=["a@example.test"], client_ip="192.0.2.1",
             helo="mx.loadgen.test"),
    Envelope(queue_id="q", sender="", recipients=["a@example.test"], client_ip="192.0.2.1", helo="[192.0.2.1]"),
    Envelope(queue_id="q", sender="odd \"local\"@x.test", recipients=["a@example.test"], client_ip="192.0.2.1", helo=""),
]
DKIM = [
    [],
    [("pass", "loadgen.test", "sel", "rsa-sha256", "AbC+/9=x")],
    [("fail", "a.test", "s1", "ed25519-sha256", "abcdefgh"), ("temperror", "b.test", "", "", ""),
     ("permerror", "", "", "", "")],
]
DMARC = [
    DMARCResult("pass", "reject", "none", "loadgen.test"),
    DMARCResult("fail", "quarantine", "quarantine", "x.test"),
    DMARCResult("none", "", "none", "x.test"),
    DMARCResult("permerror", "", "none", ""),
    DMARCResult("temperror", "", "none", "slow.test"),
]


@pytest.mark.parametrize("envelope,dkim_results,dm", list(itertools.product(ENVELOPES, DKIM, DMARC)))
def test_same_field_as_authres(envelope: Envelope, dkim_results: list, dm: DMARCResult) -> None:
    checker = AuthChecker(None, None, InboundPolicy("MX.Example.TEST"))
    for spf, arc in (("pass", "none"), ("softfail", "pass"), ("temperror", "fail"), ("none", "weird")):
        ident = "mailfrom" if envelope.sender else "helo"
        spf_mf = SPFResult(spf, "loadgen.test", ident)
        spf_helo = SPFResult("neutral", envelope.helo, "helo")
        got = checker._header(envelope, spf_mf, spf_helo, dkim_results, arc, dm)
        assert got == authres_header("MX.Example.TEST", envelope, spf_mf, spf_helo, dkim_results, arc, dm)
