"""Debian's Postfix as the next hop of our relay (it offers SMTPUTF8, CHUNKING, DSN and
8BITMIME; not REQUIRETLS).  A private Postfix instance per test, configured like
bench/anchors/postfix_relay_anchor.sh: it accepts mail for partner.test and discards
it, and sends its DSNs for example.test back to our relay.  What Postfix logged (its
``maillog_file``) shows what our client did: BDAT instead of DATA, SMTPUTF8, the DSN
parameters it passed on."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.relay import relay_server, status_of
from tests.support.server import Server, free_port, hashed
from tests.support.waiting import wait_for

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
MASTER_CF = Path(__file__).resolve().parents[1] / "bench" / "anchors" / "anchor-configs" / "postfix" / "master.cf"


class Postfix:
    def __init__(self, back_port: int, tls: tuple[Path, Path] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mailsuite-postfix-"))
        os.chmod(self.root, 0o755)
        self.port = free_port()
        conf, queue, data = self.root / "postfix", self.root / "queue", self.root / "data"
        for d in (conf, queue, data):
            d.mkdir()
        shutil.chown(data, "postfix")
        (conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
config_directory = {conf}
queue_directory = {queue}
data_directory = {data}
daemon_directory = /usr/lib/postfix/sbin
command_directory = /usr/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.partner.test
mydomain = partner.test
myorigin = partner.test
mydestination =
relay_domains = partner.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
transport_maps = texthash:{conf}/transport
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtputf8_enable = yes
smtp_tls_security_level = none
biff = no
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = {data}/maillog
maillog_file_prefixes = {self.root}
""" + (f"smtpd_tls_cert_file = {tls[0]}\nsmtpd_tls_key_file = {tls[1]}\nsmtpd_tls_security_level = may\n"
       if tls else ""))
        (conf / "transport").write_text(f"partner.test discard:\nexample.test smtp:[127.0.0.1]:{back_port}\n")
        (conf / "master.cf").write_text(MASTER_CF.read_text().replace("127.0.0.1:@POSTFIX_PORT@ ", f"127.0.0.1:{self.port} "))
        out = subprocess.run([POSTFIX, "-c", str(conf), "start"], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"postfix did not start: {out.stderr}")
        import socket

        wait_for(lambda: _connects(socket, self.port), 20, "postfix listening")

    def log(self) -> str:
        try:
            return (self.root / "data" / "maillog").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.root / "postfix"), "stop"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _connects(socket, port: int) -> bool:  # type: ignore[no-untyped-def]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def relay_and_postfix(server_factory):  # type: ignore[no-untyped-def]
    if not os.path.exists(POSTFIX) and os.environ.get("CI") != "true":
        pytest.skip("postfix not installed")
    srv = relay_server(server_factory)
    pf = Postfix(srv.ports["smtp"])
    srv.sections["relay"]["transport"] = {"partner.test": f"127.0.0.1:{pf.port}"}
    users = (srv.root / "users").read_text() + f"jörg@example.test:{hashed('pw')}\n"
    (srv.root / "users").write_text(users)
    srv.start()
    yield srv, pf
    pf.stop()


def test_relay_to_postfix_uses_bdat_smtputf8_and_passes_dsn_parameters(relay_and_postfix) -> None:
    srv, pf = relay_and_postfix
    body = "From: jörg@example.test\r\nSubject: Grüße an Postfix\r\n\r\nHallo\r\n".encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("jörg@example.test", ["ünïcode@partner.test"], body, mail_options=["SMTPUTF8", "ENVID=pf1"],
                   rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    wait_for(lambda: status_of(srv, "ünïcode@partner.test") == ["sent"], 30, "accepted by postfix", srv)
    wait_for(lambda: "bdat=" in pf.log(), 20, "postfix's session summary")
    log = pf.log()
    assert "bdat=1" in log and " data=" not in log  # BDAT, not DATA
    assert "from=<jörg@example.test>" in log  # SMTPUTF8 envelope as sent
    # Postfix took NOTIFY=SUCCESS on (it offers DSN), so the success report is its job:
    # a "delivered"/"relayed" DSN from Postfix comes back to jörg, none from us.
    wait_for(lambda: srv.messages("jörg@example.test"), 30, "Postfix's success DSN", srv)
    (dsn,) = srv.messages("jörg@example.test")
    assert b"Reporting-MTA: dns; mx.partner.test" in dsn
    assert b"Original-Envelope-Id: pf1" in dsn


def test_binarymime_goes_to_postfix_only_as_bdat(relay_and_postfix) -> None:
    import socket

    srv, pf = relay_and_postfix
    body = b"Subject: binary\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02\xff\r\n"
    with socket.create_connection(("127.0.0.1", srv.ports["smtp"]), timeout=10) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO c.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        sock.sendall(b"MAIL FROM:<alice@example.test> BODY=BINARYMIME\r\nRCPT TO:<bob@partner.test>\r\n"
                     + b"BDAT %d LAST\r\n" % len(body) + body)
        assert all(f.readline().startswith(b"250") for _ in range(3))
        f.close()
    # Postfix 3.7 offers CHUNKING but not BINARYMIME: the relay bounces 5.6.3.
    wait_for(lambda: status_of(srv, "bob@partner.test") == ["bounced"], 30, "the 5.6.3 bounce", srv)
    assert "dsn=5.6.3" in srv.log()
    _ = Server


def test_requiretls_message_to_postfix_bounces_5_7_30(server_factory, tmp_path) -> None:
    """Postfix 3.7 offers verified STARTTLS here but not REQUIRETLS (RFC 8689 5)."""
    import ssl

    from tests.support.tls import make_ca

    if not os.path.exists(POSTFIX) and os.environ.get("CI") != "true":
        pytest.skip("postfix not installed")
    ca = make_ca(tmp_path / "ca", ("mx.partner.test",), ips=("127.0.0.1",))
    srv = relay_server(server_factory, ca_file=str(ca.ca_cert))
    pf = Postfix(srv.ports["smtp"], tls=(ca.server_cert, ca.server_key))
    try:
        srv.sections["relay"]["transport"] = {"partner.test": f"127.0.0.1:{pf.port}"}
        srv.start()
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with smtplib.SMTP_SSL("127.0.0.1", srv.ports["submissions"], context=ctx) as s:
            s.login("alice@example.test", "alice-pw")
            s.sendmail("alice@example.test", ["bob@partner.test"], b"Subject: tls only\r\n\r\nx\r\n",
                       mail_options=["REQUIRETLS"])
        wait_for(lambda: status_of(srv, "bob@partner.test") == ["bounced"], 30, "the 5.7.30 bounce", srv)
        line = next(l for l in srv.log().splitlines() if "to=<bob@partner.test>" in l and "status=" in l)
        assert "dsn=5.7.30" in line and "policy=requiretls" in line and "tls=TLS" in line
        assert "REQUIRETLS support required" in line
    finally:
        pf.stop()
