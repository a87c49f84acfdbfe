"""Verified TLS towards other servers: MTA-STS (RFC 8461), DANE (RFC 7672) and
REQUIRETLS (RFC 8689), end to end on loopback.

The pieces are real: a twisted.names DNS server (tests/support/dns_server.py) publishes the MX,
``_mta-sts`` TXT and TLSA records (with the AD bit a validating resolver would set), an
HTTPS server with a certificate from a test CA serves the MTA-STS policy, and the next
hop is a second mailsuite whose certificate the same CA signed (or a self-signed one).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import smtplib
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mailsuite.queue import dane, mtasts
from tests.support.relay import relay_server, spool_files, status_of
from tests.support.server import Server
from tests.support.tls import make_ca
from tests.support.waiting import wait_for

MX = "mx.partner.test"


def make_test_ca(root: Path, names: tuple[str, ...]) -> tuple[Path, Path, Path]:
    """(CA, server certificate followed by the CA, key): the chain a server sends."""
    ca = make_ca(root, names)
    chain = root / "chain.pem"
    chain.write_bytes(ca.server_cert.read_bytes() + ca.ca_cert.read_bytes())
    return ca.ca_cert, chain, ca.server_key
RCPT = "bob@partner.test"


class PolicyServer:
    """HTTPS on 127.0.0.1 serving /.well-known/mta-sts.txt."""

    def __init__(self, cert: Path, key: Path, policy: str, content_type: str = "text/plain") -> None:
        self.policy, self.content_type, self.requests = policy, content_type, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.requests += 1
                if self.path != "/.well-known/mta-sts.txt":
                    self.send_error(404)
                    return
                body = outer.policy.encode()
                self.send_response(200)
                self.send_header("Content-Type", outer.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def policy_text(mode: str, mx: str = MX, max_age: int = 86400) -> str:
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: {max_age}\r\n"


def spki_sha256(cert_pem: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    return hashlib.sha256(cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


@pytest.fixture
def ca(tmp_path: Path) -> dict[str, Path]:
    # One CA, one certificate for both names (two test CAs share a subject name, so
    # OpenSSL could not tell them apart in one bundle).
    ca_pem, cert, key = make_test_ca(tmp_path / "ca", (MX, "mta-sts.partner.test"))
    bundle, web_cert, web_key = ca_pem, cert, key
    return {"ca": bundle, "cert": cert, "key": key, "web_cert": web_cert, "web_key": web_key}


def next_hop(server_factory, tls: dict[str, Path] | None, name: str = "partner") -> Server:  # type: ignore[no-untyped-def]
    """A second mailsuite for partner.test, with the test CA's certificate for MX."""
    target = server_factory(name, users={RCPT: "pw"}, server={"domains": ["partner.test"], "hostname": MX})
    if tls is not None:
        (target.root / "tls" / "cert.pem").write_bytes(tls["cert"].read_bytes())
        (target.root / "tls" / "key.pem").write_bytes(tls["key"].read_bytes())
    return target.start()


def zone(target: Server, txt: str | None = "v=STSv1; id=20261204", tlsa: list | None = None,
         ad: bool = True) -> dict[str, Any]:
    z: dict[str, Any] = {
        "partner.test": {"MX": [[10, MX]]},
        MX: {"A": ["127.0.0.1"]},
        "mta-sts.partner.test": {"A": ["127.0.0.1"]},
    }
    if txt is not None:
        z["_mta-sts.partner.test"] = {"TXT": [txt]}
    if tlsa is not None:
        z[f"_{target.ports['smtp']}._tcp.{MX}"] = {"TLSA": tlsa, "AD": ad}
    return z


def relay(server_factory, dns: Any, target: Server, ca: dict[str, Path], web: PolicyServer | None,  # type: ignore[no-untyped-def]
          **extra: Any) -> Server:
    cfg: dict[str, Any] = dict(smtp_port=target.ports["smtp"], ca_file=str(ca["ca"]),
                               mta_sts_port=web.port if web else 443)
    cfg.update(extra)
    return relay_server(server_factory, dns_servers=[dns.server], **cfg)


def send(srv: Server, body: bytes = b"Subject: tls\r\n\r\nhello\r\n") -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("alice@example.test", [RCPT], body)


def relay_line(srv: Server) -> str:
    """The relay's log line for RCPT (it may come a moment after the next hop's 250)."""
    return wait_for(lambda: next((l for l in srv.log().splitlines() if f"to=<{RCPT}>" in l and "status=" in l), None),
                    10, "the relay log line", srv)


# -- units -------------------------------------------------------------------------------


def test_policy_parsing_and_mx_patterns() -> None:
    p = mtasts.parse_policy("partner.test", "1", "version: STSv1\nmode: enforce\nmx: mx.partner.test\n"
                            "mx: *.backup.partner.test\nmax_age: 600\n", 1000.0)
    assert p.matches("MX.partner.test") and p.matches("a.backup.partner.test")
    assert not p.matches("a.b.backup.partner.test") and not p.matches("backup.partner.test")
    assert p.expired(1600.0) and not p.expired(1599.0)
    for bad in ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n", "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
                "version: STSv1\nmode: enforce\nmax_age: 1\n", "version: STSv1\nmode: enforce\nmx: a\nmax_age: x\n"):
        with pytest.raises(mtasts.PolicyError):
            mtasts.parse_policy("d", "1", bad, 0.0)
    assert mtasts.parse_txt([b"v=STSv1; id=abc123;"]) == "abc123"
    assert mtasts.parse_txt([b"v=STSv1; id=a", b"v=STSv1; id=b"]) is None  # two: none (RFC 8461 3.1)
    assert mtasts.parse_txt([b"v=spf1 -all"]) is None


def test_dane_matching_ee_and_ta(tmp_path: Path) -> None:
    ca_pem, cert_pem, _ = make_test_ca(tmp_path, (MX,))
    chain = [x509.load_pem_x509_certificate(c) for c in
             [b"-----BEGIN CERTIFICATE-----" + p for p in cert_pem.read_bytes().split(b"-----BEGIN CERTIFICATE-----")[1:]]]
    leaf, root = chain
    from mailsuite.dns.resolver import TLSA

    spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ee = TLSA(3, 1, 1, hashlib.sha256(spki).digest())
    ta = TLSA(2, 0, 1, hashlib.sha256(root.public_bytes(Encoding.DER)).digest())
    assert dane.verify(chain, [ee], "any.name.at.all").ok  # DANE-EE: no name check
    assert dane.verify(chain, [ta], MX).ok
    assert not dane.verify(chain, [ta], "other.partner.test").ok  # DANE-TA checks the name
    assert not dane.verify([leaf], [ta], MX).ok  # the TA must be presented
    wrong = TLSA(3, 1, 1, b"\x00" * 32)
    assert "no TLSA record matches" in dane.verify(chain, [wrong], MX).reason
    assert dane.usable([TLSA(1, 1, 1, b""), TLSA(0, 0, 1, b"")]) == []


# -- MTA-STS ----------------------------------------------------------------------------


def test_mta_sts_enforce_delivers_over_verified_tls_and_caches_the_policy(server_factory, dns_factory, ca) -> None:
    target = next_hop(server_factory, ca)
    web = PolicyServer(ca["web_cert"], ca["web_key"], policy_text("enforce"))
    dns = dns_factory(zone(target))
    srv = relay(server_factory, dns, target, ca, web).start()
    try:
        send(srv)
        wait_for(lambda: target.messages(RCPT), 20, "delivery", srv)
        line = relay_line(srv)
        assert "policy=mta-sts enforce" in line and "tls=TLS" in line
        assert web.requests == 1
        cache = json.loads((srv.root / "data" / "queue" / "mta-sts.json").read_text())
        assert cache["partner.test"]["mode"] == "enforce" and cache["partner.test"]["id"] == "20261204"
        # After a restart the cached policy is used (same id: no new fetch).
        srv.stop()
        srv.start()
        send(srv)
        wait_for(lambda: len(target.messages(RCPT)) == 2, 20, "second delivery", srv)
        assert web.requests == 1
    finally:
        web.stop()


def test_mta_sts_enforce_defers_when_the_certificate_is_not_verified(server_factory, dns_factory, ca) -> None:
    target = next_hop(server_factory, None)  # a self-signed certificate
    web = PolicyServer(ca["web_cert"], ca["web_key"], policy_text("enforce"))
    dns = dns_factory(zone(target))
    srv = relay(server_factory, dns, target, ca, web).start()
    try:
        send(srv)
        wait_for(lambda: status_of(srv, RCPT), 20, "an attempt", srv)
        line = relay_line(srv)
        assert "status=deferred" in line and "policy=mta-sts enforce" in line and "dsn=4.7.5" in line
        assert target.messages(RCPT) == []
        out = subprocess.run([sys.executable, "-m", "mailsuite.cli", "queue", "show",
                              spool_files(srv)[0].split(".")[0], "--config", str(srv.config_path)],
                             capture_output=True, text=True, cwd=srv.root)
        assert "tls:   mta-sts enforce" in out.stdout and "TLS handshake failed" in out.stdout, out
    finally:
        web.stop()


def test_mta_sts_enforce_skips_mx_hosts_the_policy_does_not_name(server_factory, dns_factory, ca) -> None:
    target = next_hop(server_factory, ca)
    web = PolicyServer(ca["web_cert"], ca["web_key"], policy_text("enforce", mx="mx.elsewhere.test"))
    dns = dns_factory(zone(target))
    srv = relay(server_factory, dns, target, ca, web).start()
    try:
        send(srv)
        wait_for(lambda: status_of(srv, RCPT), 20, "an attempt", srv)
        assert "names none of its MX hosts" in relay_line(srv) and "status=deferred" in relay_line(srv)
    finally:
        web.stop()


def test_mta_sts_testing_delivers_anyway_and_logs_the_failure(server_factory, dns_factory, ca) -> None:
    target = next_hop(server_factory, None)
    web = PolicyServer(ca["web_cert"], ca["web_key"], policy_text("testing"))
    dns = dns_factory(zone(target))
    srv = relay(server_factory, dns, target, ca, web).start()
    try:
        send(srv)
        wait_for(lambda: target.messages(RCPT), 20, "delivery", srv)
        assert "policy=mta-sts testing" in relay_line(srv) and "status=sent" in relay_line(srv)
        assert "MTA-STS testing: certificate verification failed" in srv.log()
    finally:
        web.stop()


def test_policy_fetch_needs_a_verified_certificate_and_text_plain(server_factory, dns_factory, ca, tmp_path) -> None:
    target = next_hop(server_factory, None)
    # The policy server's certificate is self-signed: no policy, opportunistic TLS.
    _, cert, key = make_test_ca(tmp_path / "untrusted", ("mta-sts.partner.test",))
    web = PolicyServer(cert, key, policy_text("enforce"))
    dns = dns_factory(zone(target))
    srv = relay(server_factory, dns, target, ca, web).start()
    try:
        send(srv)
        wait_for(lambda: target.messages(RCPT), 20, "delivery", srv)
        assert "policy=opportunistic" in relay_line(srv)
        assert "MTA-STS policy of partner.test not fetched" in srv.log()
    finally:
        web.stop()


# -- DANE -------------------------------------------------------------------------------


def test_dane_ee_match_delivers_even_with_a_self_signed_certificate(server_factory, dns_factory, ca) -> None:
    target = next_hop(server_factory, None)
    digest = spki_sha256(target.root / "tls" / "cert.pem")
    dns = dns_factory(zone(target, txt=None, tlsa=[[3, 1, 1, digest]]))
    srv = relay(server_factory, dns, target, ca, None, dane=True).start()
    send(srv)
    wait_for(lambda: target.messages(RCPT), 20, "delivery", srv)
    assert "policy=dane" in relay_line(srv)
    assert "DANE: DANE-EE 3 1 1 matched" in srv.log()


def test_dane_mismatch_defers(server_factory, dns_factory, ca) -> None:
    target = next_hop(server_factory, None)
    dns = dns_factory(zone(target, txt=None, tlsa=[[3, 1, 1, "00" * 32]]))
    srv = relay(server_factory, dns, target, ca, None, dane=True).start()
    send(srv)
    wait_for(lambda: status_of(srv, RCPT), 20, "an attempt", srv)
    line = relay_line(srv)
    assert "status=deferred" in line and "DANE verification failed" in line and "policy=dane" in line
    assert target.messages(RCPT) == []


def test_tlsa_without_the_ad_bit_is_ignored(server_factory, dns_factory, ca) -> None:
    target = next_hop(server_factory, None)
    dns = dns_factory(zone(target, txt=None, tlsa=[[3, 1, 1, "00" * 32]], ad=False))
    srv = relay(server_factory, dns, target, ca, None, dane=True).start()
    send(srv)
    wait_for(lambda: target.messages(RCPT), 20, "delivery", srv)
    assert "policy=opportunistic" in relay_line(srv)


def test_dane_ta_record_for_the_test_ca(server_factory, dns_factory, ca) -> None:
    target = next_hop(server_factory, ca)
    pems = ca["cert"].read_bytes().split(b"-----BEGIN CERTIFICATE-----")[1:]
    root = x509.load_pem_x509_certificate(b"-----BEGIN CERTIFICATE-----" + pems[1])
    digest = hashlib.sha256(root.public_bytes(Encoding.DER)).hexdigest()
    dns = dns_factory(zone(target, txt=None, tlsa=[[2, 0, 1, digest]]))
    srv = relay(server_factory, dns, target, ca, None, dane=True).start()
    send(srv)
    wait_for(lambda: target.messages(RCPT), 20, "delivery", srv)
    assert "DANE: DANE-TA 2 0 1 matched certificate 1" in srv.log()


# -- REQUIRETLS ---------------------------------------------------------------------------


def submit_requiretls(srv: Server) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP_SSL("127.0.0.1", srv.ports["submissions"], context=ctx) as s:
        s.login("alice@example.test", "alice-pw")
        assert s.has_extn("requiretls")
        s.sendmail("alice@example.test", [RCPT], b"Subject: secret\r\n\r\nfor TLS only\r\n",
                   mail_options=["REQUIRETLS"])


def test_requiretls_is_offered_over_tls_only(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.ehlo()
        assert not s.has_extn("requiretls")
        assert s.docmd("MAIL FROM:<a@example.test> REQUIRETLS")[0] == 530


def test_requiretls_message_goes_to_a_verified_hop_that_offers_it(server_factory, dns_factory, ca) -> None:
    target = next_hop(server_factory, ca)
    dns = dns_factory(zone(target, txt=None))
    srv = relay(server_factory, dns, target, ca, None).start()
    submit_requiretls(srv)
    wait_for(lambda: target.messages(RCPT), 20, "delivery", srv)
    assert "policy=requiretls" in relay_line(srv) and "status=sent" in relay_line(srv)


def test_requiretls_to_an_unverified_hop_is_deferred(server_factory, dns_factory, ca) -> None:
    target = next_hop(server_factory, None)  # self-signed: verification fails
    dns = dns_factory(zone(target, txt=None))
    srv = relay(server_factory, dns, target, ca, None).start()
    submit_requiretls(srv)
    wait_for(lambda: status_of(srv, RCPT), 20, "an attempt", srv)
    assert "status=deferred" in relay_line(srv) and "policy=requiretls" in relay_line(srv)
    assert target.messages(RCPT) == []


def test_requiretls_refusals_of_the_relay() -> None:
    """What the relay decides once a session is open (the peer side of 5.7.30 needs a
    verified-TLS peer without REQUIRETLS, which none of our loopback peers is)."""
    from types import SimpleNamespace

    from mailsuite.queue.relay import Relay, TLSPlan

    relay = Relay.__new__(Relay)
    verified = TLSPlan("requiretls", required=True, verify_name=MX)
    session = SimpleNamespace(tls="TLSv1.3", extensions={"REQUIRETLS": ""}, relay=f"{MX}[127.0.0.1]:25")
    assert relay._requiretls_refusal(session, verified) is None
    session.extensions = {}
    err = relay._requiretls_refusal(session, verified)
    assert err is not None and err.permanent and err.status == "5.7.30"
    err = relay._requiretls_refusal(session, TLSPlan("opportunistic"))
    assert err is not None and not err.permanent and err.status == "4.7.5"


# -- TLS-RPT ----------------------------------------------------------------------------


def test_tls_report_goes_to_the_rua_of_the_policy_domain(server_factory, dns_factory, ca, sink) -> None:
    import email
    import gzip
    from email import policy as email_policy

    target = next_hop(server_factory, ca)
    web = PolicyServer(ca["web_cert"], ca["web_key"], policy_text("enforce"))
    z = zone(target)
    z["_smtp._tls.partner.test"] = {"TXT": ["v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"]}
    dns = dns_factory(z)
    srv = relay(server_factory, dns, target, ca, web, transport={"reports.test": f"127.0.0.1:{sink.port}"}).start()
    try:
        send(srv)
        wait_for(lambda: target.messages(RCPT), 20, "delivery", srv)
        out = subprocess.run([sys.executable, "-m", "mailsuite.cli", "queue", "tls-reports",
                              "--config", str(srv.config_path)], capture_output=True, text=True, cwd=srv.root)
        assert "1 TLS report(s) queued" in out.stdout, out
        # smtp-sink writes its file while it answers: wait for the whole message.
        raw = wait_for(lambda: next((m for m in sink.messages() if b"tlsrpt" in m and m.rstrip().endswith(b"--")), None),
                       20, "the report at the rua", srv)
        msg = email.message_from_bytes(raw[raw.index(b"From: "):], policy=email_policy.default)
        assert msg["TLS-Report-Domain"] == "partner.test" and msg.get_param("report-type") == "tlsrpt"
        part = next(p for p in msg.iter_parts() if p.get_content_type() == "application/tlsrpt+gzip")
        report = json.loads(gzip.decompress(part.get_content()))
        (pol,) = report["policies"]
        assert pol["policy"]["policy-type"] == "sts" and pol["policy"]["policy-domain"] == "partner.test"
        assert "mode: enforce" in pol["policy"]["policy-string"] and pol["policy"]["mx-host"] == [MX]
        assert pol["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 0}
    finally:
        web.stop()


def test_tls_report_counts_dane_failures(server_factory, dns_factory, ca, sink) -> None:
    import email
    import gzip
    from email import policy as email_policy

    target = next_hop(server_factory, None)
    z = zone(target, txt=None, tlsa=[[3, 1, 1, "00" * 32]])
    z["_smtp._tls.partner.test"] = {"TXT": ["v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"]}
    dns = dns_factory(z)
    srv = relay(server_factory, dns, target, ca, None, dane=True,
                transport={"reports.test": f"127.0.0.1:{sink.port}"}).start()
    send(srv)
    wait_for(lambda: "DANE verification failed" in srv.log(), 20, "the failed attempt", srv)
    out = subprocess.run([sys.executable, "-m", "mailsuite.cli", "queue", "tls-reports",
                          "--config", str(srv.config_path)], capture_output=True, text=True, cwd=srv.root)
    assert "1 TLS report(s) queued" in out.stdout, out
    # smtp-sink writes its file while it answers: wait for the whole message.
    raw = wait_for(lambda: next((m for m in sink.messages() if b"tlsrpt" in m and m.rstrip().endswith(b"--")), None),
                   20, "the report at the rua", srv)
    msg = email.message_from_bytes(raw[raw.index(b"From: "):], policy=email_policy.default)
    part = next(p for p in msg.iter_parts() if p.get_content_type() == "application/tlsrpt+gzip")
    (pol,) = json.loads(gzip.decompress(part.get_content()))["policies"]
    assert pol["policy"]["policy-type"] == "tlsa" and pol["policy"]["policy-string"] == ["3 1 1 " + "00" * 32]
    assert pol["summary"]["total-failure-session-count"] >= 1
    assert pol["failure-details"][0]["result-type"] == "validation-failure"
    assert pol["failure-details"][0]["receiving-mx-hostname"] == MX
