"""Outbound DKIM: ``mailsuite dkim keygen``, signing of our own users' mail (once,
rsa-sha256 plus optional ed25519-sha256, relaxed/relaxed, oversigned From/To/
Subject/Date), checked by two independent verifiers that look the keys up in a real
DNS server: OpenDKIM's ``opendkim-testmsg`` (Debian opendkim-tools) and dkimpy's
``dkimverify`` CLI; and the RFC 8463 example signatures through the same path.

Both verifiers only ask the name servers of /etc/resolv.conf on port 53, so the test
DNS server (tests/support/dns_server.py) listens on port 53 of a spare loopback address and
each verifier runs in a private mount namespace (``unshare --mount``) whose
/etc/resolv.conf names it: nothing outside the test sees the change.
"""

from __future__ import annotations

import random
import re
import shutil
import smtplib
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from mailsuite.mailauth import dkim_keys
from mailsuite.mailauth.dkim_sign import SignPolicy, include_headers
from tests.support.dkim_examples import RFC8463_KEYS, RFC8463_MESSAGE
from tests.support.programs import require, require_root
from tests.support.relay import DNS
from tests.support.server import Server, make_server
from tests.support.smtp import submit_session
from tests.support.waiting import wait_for

MAILSUITE = str(Path(sys.executable).with_name("mailsuite"))
DKIMVERIFY = str(Path(sys.executable).with_name("dkimverify"))
OPENDKIM_TESTMSG = shutil.which("opendkim-testmsg") or "/usr/sbin/opendkim-testmsg"


@pytest.fixture
def port53_dns(tmp_path: Path) -> Iterator[DNS]:
    """A test DNS server on port 53 of a random 127.x.y.z address."""
    require_root("a test DNS server on port 53")
    require("unshare", "util-linux")
    require(OPENDKIM_TESTMSG, "opendkim-tools")
    last: Exception | None = None
    for _ in range(5):
        ip = f"127.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(1, 254)}"
        try:
            dns = DNS(tmp_path / f"dns53-{ip}", {}, host=ip, port=53)
        except RuntimeError as e:  # the address/port was taken: try another
            last = e
            continue
        try:
            yield dns
        finally:
            dns.stop()
        return
    raise RuntimeError(f"no loopback address for a port-53 DNS server: {last}")


def verify_with(dns: DNS, argv: list[str], message: bytes) -> subprocess.CompletedProcess:
    """Run a verifier with /etc/resolv.conf naming ``dns`` (private mount namespace)."""
    resolv = dns.zone_path.parent / "resolv.conf"
    resolv.write_text(f"nameserver {dns.host}\noptions attempts:2 timeout:2\n")
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return subprocess.run(["unshare", "--mount", "sh", "-c", script, str(resolv), *argv],
                          input=message, capture_output=True, timeout=60)


def keygen(srv: Server, domain: str, *args: str) -> subprocess.CompletedProcess:
    srv.write_config()
    return subprocess.run([MAILSUITE, "dkim", "keygen", "--config", str(srv.config_path), domain, *args],
                          capture_output=True, text=True, timeout=60)


def published(srv: Server, domain: str) -> dict[str, dict]:
    """TXT records of every key of ``domain`` on disk, as zone entries."""
    return {f"{k.selector}._domainkey.{domain}": {"TXT": [k.txt_record()]}
            for k in dkim_keys.keys_on_disk(srv.root / "data", domain)}


def crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


def strip_delivery_prefix(raw: bytes) -> bytes:
    """The message as it travelled: without the Return-Path/Delivered-To we prepend."""
    return re.sub(rb"\A(Return-Path:[^\n]*\nDelivered-To:[^\n]*\n)", b"", raw)


def test_keygen_writes_a_private_key_file_and_prints_its_record(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "srv")
    out = keygen(srv, "example.test")
    assert out.returncode == 0, out.stderr
    path = srv.root / "data" / "dkim" / "example.test" / "mail.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "mail._domainkey.example.test. 3600 IN TXT" in out.stdout
    assert '"v=DKIM1; k=rsa; p=MIIBIjAN' in out.stdout  # a 2048-bit SubjectPublicKeyInfo
    again = keygen(srv, "example.test")
    assert again.returncode == 1 and "already exists" in again.stderr
    ed = keygen(srv, "example.test", "--selector", "ed", "--algorithm", "ed25519")
    assert ed.returncode == 0 and "k=ed25519; p=" in ed.stdout
    bad = keygen(srv, "example.test", "--selector", "../x")
    assert bad.returncode == 1 and "not a valid selector" in bad.stderr


def test_check_config_notes_a_domain_without_its_signing_key(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "srv", server={"domains": ["example.test"]})
    assert keygen(srv, "example.test").returncode == 0
    out = subprocess.run([MAILSUITE, "check-config", str(srv.config_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "dkim" not in out.stdout
    srv.sections["dkim"] = {"selector": "s2027"}
    srv.write_config()
    out = subprocess.run([MAILSUITE, "check-config", str(srv.config_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.endswith("OK\n")
    assert "note: dkim: example.test is not signed with selector 's2027'" in out.stdout


def test_oversigned_header_list() -> None:
    block = b"From: a@example.test\nTo: b@example.test\nReceived: x\nSubject: s\nCc: c@x\nCc: d@x\n"
    names = [h.decode() for h in include_headers(block)]
    assert names.count("from") == 2 and names.count("to") == 2 and names.count("subject") == 2
    assert names.count("date") == 1  # absent, but oversigned so that none can be added
    assert names.count("cc") == 2 and "received" not in names


def test_who_counts_as_our_own_sender() -> None:
    import ipaddress
    from mailsuite.handoff import Envelope

    policy = SignPolicy((ipaddress.ip_network("10.1.0.0/16"),))
    assert policy.is_ours(Envelope("Q", "a@x", ("b@y",), client_ip="192.0.2.1", auth_user="alice@example.test"))
    assert policy.is_ours(Envelope("Q", "a@x", ("b@y",), client_ip="10.1.2.3"))
    assert policy.is_ours(Envelope("Q", "", ("b@y",), client_ip=""))  # a DSN we generate
    assert not policy.is_ours(Envelope("Q", "a@x", ("b@y",), client_ip="192.0.2.1"))


def test_submitted_mail_is_signed_once_and_verifies_with_opendkim_and_dkimverify(tmp_path: Path, port53_dns: DNS) -> None:
    srv = make_server(tmp_path / "srv", dkim={"ed25519_selector": "ed"})
    assert keygen(srv, "example.test").returncode == 0
    assert keygen(srv, "example.test", "--selector", "ed", "--algorithm", "ed25519").returncode == 0
    port53_dns.set(published(srv, "example.test"))
    srv.start()
    try:
        body = ("From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: signed\r\n"
                "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <s1@example.test>\r\n\r\n"
                "Hello Bob,  \r\n\r\nthe body   with spaces.\r\n\r\n\r\n").encode()
        with submit_session(srv) as s:
            s.sendmail("alice@example.test", ["bob@example.test"], body)
        wait_for(lambda: srv.messages("bob@example.test"), 10, "delivery", srv)
        raw = srv.messages("bob@example.test")[0]
        sigs = re.findall(rb"^DKIM-Signature:.*?(?=^\S)", raw, re.M | re.S)
        assert len(sigs) == 2
        assert b"a=rsa-sha256" in sigs[0] and b"a=ed25519-sha256" in sigs[1]
        assert b"c=relaxed/relaxed" in sigs[0] and b"s=mail" in sigs[0] and b"d=example.test" in sigs[0]
        h = re.sub(rb"\s", b"", re.search(rb"h=([^;]*);", sigs[0], re.S).group(1)).split(b":")
        assert h.count(b"from") == 2 and h.count(b"subject") == 2 and h.count(b"date") == 2 and h.count(b"to") == 2
        wire = crlf(strip_delivery_prefix(raw))
        # OpenDKIM checks the first signature (rsa-sha256); dkimpy both.
        r = verify_with(port53_dns, [OPENDKIM_TESTMSG], wire)
        assert r.returncode == 0 and not r.stdout.strip(), (r.stdout, r.stderr)
        for idx in ("0", "1"):
            r = verify_with(port53_dns, [DKIMVERIFY, "--index", idx], wire)
            assert r.returncode == 0 and b"signature ok" in r.stdout, (idx, r.stdout, r.stderr)
        # A changed body fails in both (the check is real).
        bad = wire.replace(b"the body", b"the BODY")
        assert verify_with(port53_dns, [OPENDKIM_TESTMSG], bad).returncode != 0
        assert verify_with(port53_dns, [DKIMVERIFY], bad).returncode != 0

        # Reinjected from a trusted network (the MX port from 127.0.0.1, which is in
        # relay_networks): already signed by us, so not signed a second time.
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as s:
            s.sendmail("alice@example.test", ["carol@other.test"], crlf(strip_delivery_prefix(raw)))
        wait_for(lambda: srv.messages("carol@other.test"), 10, "delivery", srv)
        again = srv.messages("carol@other.test")[0]
        assert again.count(b"DKIM-Signature:") == 2
    finally:
        srv.stop()


def test_mail_from_outside_is_not_signed_even_with_our_from(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "srv", server={"relay_networks": ["10.99.0.0/16"]},
                      smtp={"check_authentication": False})
    assert keygen(srv, "example.test").returncode == 0
    srv.start()
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as s:
            s.sendmail("x@elsewhere.test", ["bob@example.test"],
                       b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: x\r\n\r\nhi\r\n")
        wait_for(lambda: srv.messages("bob@example.test"), 10, "delivery", srv)
        assert b"DKIM-Signature" not in srv.messages("bob@example.test")[0]
    finally:
        srv.stop()


def test_domain_without_key_is_sent_unsigned_with_a_warning_at_start(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "srv").start()
    try:
        with submit_session(srv) as s:
            s.sendmail("alice@example.test", ["bob@example.test"],
                       b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: x\r\n\r\nhi\r\n")
        wait_for(lambda: srv.messages("bob@example.test"), 10, "delivery", srv)
        assert b"DKIM-Signature" not in srv.messages("bob@example.test")[0]
        assert "dkim: example.test is not signed with selector 'mail'" in srv.log()
    finally:
        srv.stop()


def test_rfc8463_example_signatures_verify_through_dns(port53_dns: DNS) -> None:
    port53_dns.set(RFC8463_KEYS)
    for idx in ("0", "1"):
        r = verify_with(port53_dns, [DKIMVERIFY, "--index", idx], RFC8463_MESSAGE)
        assert r.returncode == 0 and b"signature ok" in r.stdout, (idx, r.stdout, r.stderr)
    # OpenDKIM verifies the first signature it supports.
    r = verify_with(port53_dns, [OPENDKIM_TESTMSG], RFC8463_MESSAGE)
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_our_dsns_are_signed_by_the_parent_domain_of_the_host_name(tmp_path: Path) -> None:
    """A bounce we generate (From: MAILER-DAEMON@mail.example.test) is signed with
    example.test's key: relaxed DMARC alignment accepts the parent domain."""
    import dkim

    dns = DNS(tmp_path / "dns", {})  # every name NXDOMAIN: the relay bounces at once
    srv = make_server(tmp_path / "srv", dns={"nameservers": [dns.server], "timeout": 1.0})
    try:
        assert keygen(srv, "example.test").returncode == 0
        srv.start()
        with submit_session(srv) as s:
            s.sendmail("alice@example.test", ["nobody@nowhere.test"],
                       b"From: alice@example.test\r\nTo: nobody@nowhere.test\r\nSubject: lost\r\n\r\nhi\r\n")
        dsn = wait_for(lambda: [m for m in srv.messages("alice@example.test") if b"MAILER-DAEMON" in m], 20,
                       "the DSN", srv)[0]
        head = dsn.split(b"\n\n", 1)[0] + b"\n"  # the DSN quotes the original's headers below
        sigs = re.findall(rb"^DKIM-Signature:.*?(?=^\S)", head, re.M | re.S)
        assert len(sigs) == 1 and b"d=example.test" in sigs[0]
        (key,) = dkim_keys.keys_on_disk(srv.root / "data", "example.test")
        record = key.txt_record().encode()
        assert dkim.DKIM(strip_delivery_prefix(dsn)).verify(dnsfunc=lambda name, timeout=5: record)
    finally:
        srv.stop()
        dns.stop()
