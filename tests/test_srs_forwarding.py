"""Forwarding through an alias to an outside address (issue 11): SRS envelope
sender, ARC seal, bounces routed back.  Two real mailsuites on loopback share a
twisted.names DNS server: "ours" (example.test, the alias fwd@example.test ->
dest@partner.test) and "partner" (partner.test and sender.test), which checks
what arrives exactly as a receiving provider would (SPF, DKIM, ARC, DMARC)."""

from __future__ import annotations

import base64
import email
import re
import smtplib
import subprocess
import sys
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailsuite.mailauth import dkim_keys
from tests.support.relay import DNS, FAST_RELAY
from tests.support.server import make_server
from tests.support.waiting import wait_for

MAILSUITE = str(Path(sys.executable).with_name("mailsuite"))
_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = _key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
PUB = "v=DKIM1; k=rsa; p=" + base64.b64encode(_key.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def test_forwarded_mail_passes_spf_and_arc_at_the_destination_and_bounces_come_back(tmp_path: Path) -> None:
    dns = DNS(tmp_path / "dns", {})
    partner = make_server(
        tmp_path / "partner", users={"dest@partner.test": "pw", "ann@sender.test": "pw"},
        server={"hostname": "mx.partner.test", "domains": ["partner.test", "sender.test"],
                "relay_networks": ["10.99.0.0/16"]},
        dns={"nameservers": [dns.server], "timeout": 1.0}, http={"listen": [], "listen_tls": []},
    )
    ours = make_server(
        tmp_path / "ours", aliases="fwd@example.test: dest@partner.test\n",
        server={"relay_networks": ["10.99.0.0/16"]},
        dns={"nameservers": [dns.server], "timeout": 1.0},
    )
    try:
        partner.start()
        hop = f"127.0.0.1:{partner.ports['smtp']}"
        ours.sections["relay"] = dict(FAST_RELAY, transport={"partner.test": hop, "sender.test": hop})
        ours.write_config()
        assert subprocess.run([MAILSUITE, "dkim", "keygen", "--config", str(ours.config_path), "example.test"],
                              capture_output=True).returncode == 0
        (our_key,) = dkim_keys.keys_on_disk(ours.root / "data", "example.test")
        dns.set({
            # The original sender: its SPF does not include us; it signs; p=reject.
            "sender.test": {"TXT": ["v=spf1 ip4:192.0.2.9 -all"]},
            "sel._domainkey.sender.test": {"TXT": [PUB]},
            "_dmarc.sender.test": {"TXT": ["v=DMARC1; p=reject"]},
            # Our domain: our host may send for it; our key signs the ARC seal.
            "example.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
            "mail._domainkey.example.test": {"TXT": [our_key.txt_record()]},
        })
        ours.start()

        original = (b"From: Ann <ann@sender.test>\r\nTo: fwd@example.test\r\nSubject: forwarded to you\r\n"
                    b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <f1@sender.test>\r\n\r\nHello.\r\n")
        signed = dkim.sign(original, b"sel", b"sender.test", PEM, canonicalize=(b"relaxed", b"relaxed"),
                           include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + original
        # The original sender's own server (here: 127.0.0.1 too, DKIM carries it).
        with smtplib.SMTP("127.0.0.1", ours.ports["smtp"], local_hostname="mx.sender.test", timeout=10) as s:
            s.sendmail("ann@sender.test", ["fwd@example.test"], signed)

        raw = wait_for(lambda: (partner.messages("dest@partner.test") or [None])[0], 20, "forwarded copy", partner)
        msg = email.message_from_bytes(raw)
        srs_sender = msg["Return-Path"].strip("<>")
        assert re.fullmatch(r"SRS0=[^=]{4}=[^=]{2}=sender\.test=ann@example\.test", srs_sender), srs_sender
        results = [re.sub(r"\s+", " ", v) for v in msg.get_all("Authentication-Results")]
        theirs = next(r for r in results if r.startswith("mx.partner.test;"))
        assert f"spf=pass smtp.mailfrom={srs_sender}" in theirs
        assert "arc=pass" in theirs and "dkim=pass header.d=sender.test" in theirs and "dmarc=pass" in theirs
        assert msg["ARC-Seal"] and "d=example.test" in msg["ARC-Seal"] and "cv=none" in msg["ARC-Seal"]
        # Our own results went into the seal's ARC-Authentication-Results.
        assert "mail.example.test" in msg["ARC-Authentication-Results"]

        # A bounce to the SRS address comes back to the original sender.
        with smtplib.SMTP("127.0.0.1", ours.ports["smtp"], timeout=10) as s:
            s.sendmail("", [srs_sender], b"From: MAILER-DAEMON@partner.test\r\nSubject: bounce\r\n\r\nundeliverable\r\n")
        wait_for(lambda: partner.messages("ann@sender.test"), 20, "bounce back to the sender", partner)
        # A forged SRS address (wrong hash) is an unknown user.
        forged = re.sub(r"^SRS0=[^=]{4}", "SRS0=abcd", srs_sender)
        with smtplib.SMTP("127.0.0.1", ours.ports["smtp"], timeout=10) as s:
            s.ehlo()
            assert s.mail("")[0] == 250
            code, _ = s.rcpt(forged)
            assert code == 550
    finally:
        ours.stop()
        partner.stop()
        dns.stop()
