"""Relaying through a smarthost: a second mailsuite's submission port with a
certificate from a test CA, AUTH with a password file, and TLS verification."""

from __future__ import annotations

import smtplib
from pathlib import Path

from tests.support.relay import relay_server, spool_files, status_of
from tests.support.server import Server
from tests.support.tls import make_ca
from tests.support.waiting import wait_for


def smarthost(server_factory, tmp_path: Path) -> tuple[Server, Path]:  # type: ignore[no-untyped-def]
    ca = make_ca(tmp_path / "ca", ("localhost",))
    # The smarthost lets an account send only as its own address: the relay logs in
    # as the sender's account there.
    dest = server_factory(
        "smarthost", users={"alice@example.test": "relay-pw", "dora@partner.test": "pw"},
        server={"hostname": "localhost", "domains": ["partner.test", "example.test"]},
        tls={"certificate": str(ca.server_cert), "private_key": str(ca.server_key)},
    ).start()
    return dest, ca.ca_cert


def send(server: Server, rcpt: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.sendmail("alice@example.test", [rcpt], b"Subject: via smarthost\r\n\r\nhello\r\n")


def test_smarthost_gets_mail_over_verified_tls_with_auth(server_factory, tmp_path: Path) -> None:
    dest, ca = smarthost(server_factory, tmp_path)
    auth = tmp_path / "relay-auth"
    auth.write_text("alice@example.test:relay-pw\n")
    srv = relay_server(server_factory, smarthost=f"localhost:{dest.ports['submission']}",
                       smarthost_auth_file=str(auth), ca_file=str(ca)).start()
    send(srv, "dora@partner.test")
    wait_for(lambda: dest.messages("dora@partner.test"), 15, "delivery via the smarthost", srv)
    wait_for(lambda: "sent" in status_of(srv, "dora@partner.test"), 10, "log line", srv)
    line = [l for l in srv.log().splitlines() if "relay: " in l and "status=sent" in l][0]
    assert f"relay=localhost[127.0.0.1]:{dest.ports['submission']}" in line and "tls=TLSv1." in line
    (msg,) = dest.messages("dora@partner.test")
    assert b"Subject: via smarthost" in msg
    # The smarthost saw an authenticated, encrypted submission.
    assert "alice@example.test" in msg.split(b"\n\n")[0].decode().split("Received:")[1]  # AUTH user
    assert "relay-pw" not in srv.log()


def test_smarthost_with_an_untrusted_certificate_is_deferred(server_factory, tmp_path: Path) -> None:
    dest, _ca = smarthost(server_factory, tmp_path)
    auth = tmp_path / "relay-auth"
    auth.write_text("alice@example.test:relay-pw\n")
    # No ca_file: the system trust store does not know the test CA.
    srv = relay_server(server_factory, smarthost=f"localhost:{dest.ports['submission']}",
                       smarthost_auth_file=str(auth)).start()
    send(srv, "dora@partner.test")
    wait_for(lambda: "deferred" in status_of(srv, "dora@partner.test"), 15, "deferral", srv)
    line = [l for l in srv.log().splitlines() if "status=deferred" in l][0]
    assert "dsn=4.7.5" in line and "TLS handshake failed" in line and "certificate verify failed" in line
    assert not dest.messages("dora@partner.test") and len(spool_files(srv)) == 2


def test_smarthost_with_a_wrong_password_is_deferred_not_bounced(server_factory, tmp_path: Path) -> None:
    dest, ca = smarthost(server_factory, tmp_path)
    auth = tmp_path / "relay-auth"
    auth.write_text("alice@example.test:Xq7-not-the-password\n")
    srv = relay_server(server_factory, smarthost=f"localhost:{dest.ports['submission']}",
                       smarthost_auth_file=str(auth), ca_file=str(ca)).start()
    send(srv, "dora@partner.test")
    wait_for(lambda: "deferred" in status_of(srv, "dora@partner.test"), 15, "deferral", srv)
    assert "SASL authentication failed" in srv.log() and "Xq7-not-the-password" not in srv.log()
