"""Checks of mail from the world on the MX port: SPF, DKIM, ARC, DMARC and the one
Authentication-Results field, against a real twisted.names server on loopback
(tests/support/dns_server.py) and a real mailsuite (``twistd``), sent with smtplib.

The server's relay_networks exclude 127.0.0.1, so the test client is "the world".
Every DMARC policy (none, quarantine, reject) is tried with every way a message can
(fail to) align: SPF on the exact and a sub-domain, DKIM on the exact and a
sub-domain, under relaxed and strict alignment, unaligned passes, and nothing.
"""

from __future__ import annotations

import base64
import email
import itertools
import re
import smtplib
from pathlib import Path
from typing import Any, Iterator

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.support.server import Server, make_server
from tests.support.relay import DNS
from tests.support.waiting import wait_for

_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = _key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
PUB = "v=DKIM1; k=rsa; p=" + base64.b64encode(_key.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
_ed = ed25519.Ed25519PrivateKey.generate()
ED_SEED = base64.b64encode(_ed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                              serialization.NoEncryption()))
ED_PUB = "v=DKIM1; k=ed25519; p=" + base64.b64encode(_ed.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
SPF_OK = "v=spf1 ip4:127.0.0.1 -all"
SPF_NEUTRAL = "v=spf1 ?all"

AUTH_MODES = ("spf-exact", "spf-subdomain", "dkim-exact", "dkim-subdomain", "unaligned", "nothing")
POLICIES = ("none", "quarantine", "reject")
ALIGNMENT = ("r", "s")


def expected_pass(auth: str, mode: str) -> bool:
    return auth in ("spf-exact", "dkim-exact") or (auth in ("spf-subdomain", "dkim-subdomain") and mode == "r")


def case_domain(auth: str, policy: str, mode: str) -> str:
    return f"{auth}-{policy}-{mode}.test"


def build_zone() -> dict[str, Any]:
    zone: dict[str, Any] = {
        "signer.test": {"TXT": [SPF_NEUTRAL]},
        "sel._domainkey.signer.test": {"TXT": [PUB]},
        "other-mf.test": {"TXT": [SPF_OK]},
        # Our own domain publishes p=reject: forgeries from outside are refused.
        "example.test": {"TXT": ["v=spf1 -all"]},
        "_dmarc.example.test": {"TXT": ["v=DMARC1; p=reject"]},
        "evil.test": {"TXT": [SPF_OK]},
        # A mailing list and a forwarder, with their own keys and SPF.
        "lists.test": {"TXT": [SPF_OK]},
        "sel._domainkey.lists.test": {"TXT": [PUB]},
        "fwd.test": {"TXT": [SPF_OK]},
        "arc._domainkey.fwd.test": {"TXT": [PUB]},
        "sender.test": {"TXT": [SPF_NEUTRAL]},
        "sel._domainkey.sender.test": {"TXT": [PUB]},
        "_dmarc.sender.test": {"TXT": ["v=DMARC1; p=none"]},
        "strict.test": {"TXT": [SPF_NEUTRAL]},
        "sel._domainkey.strict.test": {"TXT": [PUB]},
        "_dmarc.strict.test": {"TXT": ["v=DMARC1; p=reject"]},
        # DNS trouble.
        "slowdmarc.test": {"TXT": [SPF_OK]},
        "_dmarc.slowdmarc.test": {"TIMEOUT": True},
        "slowkey.test": {"TXT": [SPF_NEUTRAL]},
        "_dmarc.slowkey.test": {"TXT": ["v=DMARC1; p=reject"]},
        "sel._domainkey.slowkey.test": {"TIMEOUT": True},
        "spffail.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
        "dual.test": {"TXT": [SPF_NEUTRAL]},
        "rsa._domainkey.dual.test": {"TXT": [PUB]},
        "ed._domainkey.dual.test": {"TXT": [ED_PUB]},
        "_dmarc.dual.test": {"TXT": ["v=DMARC1; p=reject"]},
    }
    for auth, policy, mode in itertools.product(AUTH_MODES, POLICIES, ALIGNMENT):
        d = case_domain(auth, policy, mode)
        zone[d] = {"TXT": [SPF_OK if auth == "spf-exact" else SPF_NEUTRAL]}
        zone[f"bounce.{d}"] = {"TXT": [SPF_OK]}
        zone[f"_dmarc.{d}"] = {"TXT": [f"v=DMARC1; p={policy}; adkim={mode}; aspf={mode}"]}
        zone[f"sel._domainkey.{d}"] = {"TXT": [PUB]}
        zone[f"sel._domainkey.mail.{d}"] = {"TXT": [PUB]}
    return zone


def signed(message: bytes, domain: str, selector: str = "sel") -> bytes:
    sig = dkim.sign(message, selector.encode(), domain.encode(), PEM, canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return sig + message


def message(from_addr: str, subject: str = "hello", body: str = "Hi.\r\n") -> bytes:
    return (f"From: {from_addr}\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
            f"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{abs(hash(subject + from_addr))}@x>\r\n\r\n"
            f"{body}").encode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, DNS]]:
    root = tmp_path_factory.mktemp("inbound")
    dns = DNS(root / "dns", build_zone())
    srv = make_server(root / "srv", server={"relay_networks": ["10.99.0.0/16"]},
                      dns={"nameservers": [dns.server], "timeout": 1.0})
    srv.start()
    try:
        yield srv, dns
    finally:
        srv.stop()
        dns.stop()


def send(srv: Server, mail_from: str, data: bytes, helo: str = "mx.sender.test") -> tuple[int, str]:
    """(250 or the DATA reply code, text)."""
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], local_hostname=helo, timeout=30) as s:
        try:
            s.sendmail(mail_from, ["bob@example.test"], data)
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error.decode()
    return 250, ""


def delivered(srv: Server, marker: str) -> tuple[str, bytes]:
    """(folder, message) of the delivered message whose Subject is ``marker``."""
    def find() -> tuple[str, bytes] | None:
        for folder in ("", "Junk"):
            for raw in srv.messages("bob@example.test", folder):
                if f"Subject: {marker}\n".encode() in raw:
                    return folder or "INBOX", raw
        return None

    return wait_for(find, 10, f"delivery of {marker}", srv)


def auth_results(raw: bytes) -> list[str]:
    msg = email.message_from_bytes(raw)
    return [re.sub(r"\s+", " ", v) for v in msg.get_all("Authentication-Results", [])]


@pytest.mark.parametrize("auth,policy,mode", list(itertools.product(AUTH_MODES, POLICIES, ALIGNMENT)))
def test_dmarc_policy_and_alignment(world: tuple[Server, DNS], auth: str, policy: str, mode: str) -> None:
    srv, _dns = world
    d = case_domain(auth, policy, mode)
    subject = f"case {d}"
    msg = message(f"Someone <someone@{d}>", subject)
    mail_from = {"spf-exact": f"bounce@{d}", "spf-subdomain": f"b@bounce.{d}", "unaligned": "b@other-mf.test"}.get(auth, f"b@{d}")
    if auth == "dkim-exact":
        msg = signed(msg, d)
    elif auth == "dkim-subdomain":
        msg = signed(msg, f"mail.{d}")
    elif auth == "unaligned":
        msg = signed(msg, "signer.test")
    code, text = send(srv, mail_from, msg)
    passes = expected_pass(auth, mode)
    if not passes and policy == "reject":
        assert code == 550 and "5.7.1" in text and d in text, (code, text)
        return
    assert code == 250, (code, text)
    folder, raw = delivered(srv, subject)
    assert folder == ("Junk" if not passes and policy == "quarantine" else "INBOX")
    (ar,) = auth_results(raw)
    assert ar.startswith("mail.example.test;")
    assert f"dmarc={'pass' if passes else 'fail'}" in ar and f"header.from={d}" in ar
    if auth.startswith("dkim") or auth == "unaligned":
        assert "dkim=pass" in ar
    else:
        assert "dkim=none" in ar


def test_spoofed_from_of_our_own_domain_is_refused(world: tuple[Server, DNS]) -> None:
    srv, _dns = world
    code, text = send(srv, "attacker@evil.test", message("The CEO <ceo@example.test>", "wire money now"),
                      helo="mx.evil.test")
    assert code == 550 and "5.7.1" in text and "example.test" in text
    # The checks' summary is on the SMTP line about the message, not a line of its own.
    assert re.search(r"smtp: \w+: client=\[127\.0\.0\.1\] from=<attacker@evil\.test> .* result=rejected "
                     r"\(5\.7\.1 .*\(mailauth: spf=pass dkim=none arc=none dmarc=fail \(p=reject dis=reject\) "
                     r"-> reject\)\)", srv.log())


def test_spf_fail_without_dkim_is_refused_but_a_dkim_pass_saves_it(world: tuple[Server, DNS]) -> None:
    srv, _dns = world
    code, text = send(srv, "x@spffail.test", message("x@spffail.test", "spf fail"))
    assert code == 550 and "SPF" in text
    code, _ = send(srv, "x@spffail.test", signed(message("x@signer.test", "spf fail but signed"), "signer.test"))
    assert code == 250
    _f, raw = delivered(srv, "spf fail but signed")
    (ar,) = auth_results(raw)
    assert "spf=fail smtp.mailfrom=x@spffail.test" in ar and "dkim=pass" in ar


def test_mailing_list_modified_message(world: tuple[Server, DNS]) -> None:
    """A list adds a Subject tag and a footer (the author's signature breaks) and signs
    with its own key; MAIL FROM is the list's.  The author's p=none: delivered, and
    the header tells both signatures apart."""
    srv, _dns = world
    original = signed(message("Ann <ann@sender.test>", "list post"), "sender.test")
    modified = original.replace(b"Subject: list post", b"Subject: [list] list post")
    modified = modified + b"--\r\nlist footer\r\n"
    modified = modified.replace(b"\r\n\r\n", b"\r\nList-Id: <l.lists.test>\r\n\r\n", 1)
    resigned = dkim.sign(modified, b"sel", b"lists.test", PEM, canonicalize=(b"relaxed", b"relaxed"),
                         include_headers=[b"from", b"to", b"subject", b"list-id"]) + modified
    code, text = send(srv, "l-bounces@lists.test", resigned, helo="mx.lists.test")
    assert code == 250, text
    folder, raw = delivered(srv, "[list] list post")
    assert folder == "INBOX"
    (ar,) = auth_results(raw)
    assert "dkim=pass header.d=lists.test" in ar and "dkim=fail header.d=sender.test" in ar
    assert "spf=pass smtp.mailfrom=l-bounces@lists.test" in ar and "dmarc=fail" in ar


def test_arc_forwarded_message(world: tuple[Server, DNS]) -> None:
    """A forwarder checks the author's signature, seals its result with ARC, adds a
    footer and forwards: the original signature fails here, the ARC chain passes."""
    srv, _dns = world
    original = signed(message("Ann <ann@sender.test>", "forwarded"), "sender.test")
    ar = (b"Authentication-Results: mx.fwd.test; dkim=pass header.d=sender.test; spf=none; "
          b"arc=none\r\n")
    sealed_input = ar + original
    seal = b"".join(dkim.arc_sign(sealed_input, b"arc", b"fwd.test", PEM, b"mx.fwd.test"))
    forwarded = seal + sealed_input
    code, text = send(srv, "srs0=xx@fwd.test", forwarded, helo="mx.fwd.test")
    assert code == 250, text
    _folder, raw = delivered(srv, "forwarded")
    ours = [a for a in auth_results(raw) if a.startswith("mail.example.test;")]
    (mine,) = ours
    assert "arc=pass" in mine and "dkim=pass header.d=sender.test" in mine


def test_dns_timeouts_answer_451_never_5xx(world: tuple[Server, DNS]) -> None:
    srv, _dns = world
    code, text = send(srv, "x@slowdmarc.test", message("x@slowdmarc.test", "slow dmarc"))
    assert code == 451 and "4.7.0" in text
    # p=reject, no SPF pass, and the key lookup times out: the failure may be the
    # timeout's, so 451, not 550.
    code, text = send(srv, "x@slowkey.test", signed(message("x@slowkey.test", "slow key"), "slowkey.test"))
    assert code == 451 and "4.7.0" in text


def test_incoming_results_claiming_our_name_are_removed(world: tuple[Server, DNS]) -> None:
    srv, _dns = world
    forged = (b"Authentication-Results: mail.example.test; dkim=pass header.d=bank.test; dmarc=pass\r\n"
              b"Authentication-Results: (comment) MAIL.EXAMPLE.TEST; spf=pass\r\n"
              b"Authentication-Results: mx.other.test; spf=pass\r\n")
    code, _ = send(srv, "b@other-mf.test", forged + message("a@other-mf.test", "forged results"))
    assert code == 250
    _f, raw = delivered(srv, "forged results")
    results = auth_results(raw)
    assert len([r for r in results if r.lower().startswith("mail.example.test;")]) == 1
    assert any(r.startswith("mx.other.test;") for r in results)
    assert "header.d=bank.test" not in raw.decode()


def test_strict_sender_with_valid_signature_passes(world: tuple[Server, DNS]) -> None:
    srv, _dns = world
    code, text = send(srv, "x@strict.test", signed(message("x@strict.test", "strict ok"), "strict.test"))
    assert code == 250, text
    folder, raw = delivered(srv, "strict ok")
    assert folder == "INBOX" and "dmarc=pass" in auth_results(raw)[0]
    assert re.search(r"smtp: \w+: client=\[127\.0\.0\.1\] from=<x@strict\.test> .* result=delivered "
                     r"\(mailauth: spf=neutral dkim=pass arc=none dmarc=pass \(p=reject dis=none\) -> accept\)",
                     srv.log())


def test_authenticated_and_trusted_senders_are_not_checked(tmp_path: Path) -> None:
    """From relay_networks (127.0.0.1 by default) nothing is checked or added."""
    srv = make_server(tmp_path / "srv").start()
    try:
        code, _ = send(srv, "ceo@example.test", message("ceo@example.test", "internal"))
        assert code == 250
        _f, raw = delivered(srv, "internal")
        assert b"Authentication-Results" not in raw
    finally:
        srv.stop()


def test_large_message_spilled_to_disk_is_checked_the_same(world: tuple[Server, DNS]) -> None:
    srv, _dns = world
    body = "".join(f"line {i} of a long message\r\n" for i in range(20000))  # ~540 KB: on disk
    forged = b"Authentication-Results: mail.example.test; dmarc=pass\r\n"
    code, text = send(srv, "b@sender.test", forged + signed(message("a@sender.test", "large one", body), "sender.test"))
    assert code == 250, text
    _f, raw = delivered(srv, "large one")
    (ar,) = auth_results(raw)
    assert "dkim=pass header.d=sender.test" in ar
    assert raw.endswith(b"line 19999 of a long message\n")


def test_rsa_and_ed25519_signatures_are_both_verified(world: tuple[Server, DNS]) -> None:
    """RFC 8463: a message signed twice; each signature gets its own result."""
    srv, _dns = world
    msg = message("x@dual.test", "dual signed")
    ed = dkim.sign(msg, b"ed", b"dual.test", ED_SEED, signature_algorithm=b"ed25519-sha256",
                   canonicalize=(b"relaxed", b"relaxed"), include_headers=[b"from", b"subject"])
    both = signed(ed + msg, "dual.test", selector="rsa")
    code, text = send(srv, "x@dual.test", both)
    assert code == 250, text
    _f, raw = delivered(srv, "dual signed")
    (ar,) = auth_results(raw)
    dkims = [set(part.split()) for part in ar.split(";") if part.strip().startswith("dkim=")]
    assert {"dkim=pass", "header.d=dual.test", "header.s=rsa", "header.a=rsa-sha256"} <= dkims[0] | dkims[1]
    assert any({"dkim=pass", "header.s=ed", "header.a=ed25519-sha256"} <= d for d in dkims)
    assert any({"dkim=pass", "header.s=rsa", "header.a=rsa-sha256"} <= d for d in dkims)
    assert "dmarc=pass" in ar
