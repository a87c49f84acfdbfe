"""International mail (RFC 6531, 6532, 6533): SMTPUTF8 on every listener, UTF-8 local
parts and IDN domains (U-labels and A-labels are one domain), UTF-8 headers stored as
received, and on relay A-labels on the wire and a 5.6.7 bounce (never a silent
downgrade) when the next hop lacks SMTPUTF8."""

from __future__ import annotations

import base64
import email
import smtplib
import socket
import ssl
from email import policy as email_policy

import pytest

from tests.support import smtp as smtp_client
from tests.support.programs import needs
from tests.support.relay import relay_server, status_of
from tests.support.server import Server, hashed, make_server
from tests.support.waiting import wait_for

UTF8_USERS = {
    "alice@example.test": "alice-pw",
    "jörg@bücher.example": "jörg-pw",
    "用户@例子.example": "yonghu-pw",
}
# The domains in the config in A-label form: the server must match U-labels too.
DOMAINS = ["example.test", "xn--bcher-kva.example", "例子.example"]
MESSAGE = "From: Jörg <jörg@bücher.example>\r\nTo: 用户@例子.example\r\nSubject: Grüße aus Köln\r\n\r\nHallo, schöne Grüße!\r\n"


@pytest.fixture
def intl(server_factory) -> Server:
    srv = server_factory("intl", users=UTF8_USERS, aliases="info@bücher.example: jörg\nпочта@example.test: alice\n",
                         server={"domains": DOMAINS})
    return srv.start()


def ehlo(port: int, tls: bool = False) -> bytes:
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx)
    else:
        s = smtplib.SMTP("127.0.0.1", port)
    with s:
        code, text = s.ehlo("client.test")
        assert code == 250
        return text


def raw_session(port: int, lines: list[bytes]) -> list[bytes]:
    """Send each line, return each reply (first line of it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        f = sock.makefile("rb")
        replies = [f.readline()]
        for line in lines:
            sock.sendall(line + b"\r\n")
            reply = f.readline()
            while reply[3:4] == b"-":
                reply = f.readline()
            replies.append(reply)
        return replies


def test_smtputf8_is_offered_on_every_listener(intl: Server) -> None:
    assert b"SMTPUTF8" in ehlo(intl.ports["smtp"]).split(b"\n")
    assert b"SMTPUTF8" in ehlo(intl.ports["submission"]).split(b"\n")
    assert b"SMTPUTF8" in ehlo(intl.ports["submissions"], tls=True).split(b"\n")


def test_utf8_mailbox_and_idn_domain_are_delivered_with_headers_as_received(intl: Server) -> None:
    with smtplib.SMTP("127.0.0.1", intl.ports["smtp"]) as s:
        refused = s.sendmail("alice@example.test", ["jörg@bücher.example"], MESSAGE.encode("utf-8"),
                             mail_options=["SMTPUTF8"])
    assert refused == {}
    (msg,) = intl.messages("jörg@bücher.example")
    # Stored as received: raw UTF-8 in the header block, not RFC 2047 encoded words.
    assert "Subject: Grüße aus Köln\n".encode() in msg
    assert "From: Jörg <jörg@bücher.example>\n".encode() in msg
    assert b"with UTF8SMTP id" in msg  # RFC 6531 4.3
    assert "Delivered-To: jörg@bücher.example".encode() in msg


def test_a_label_and_u_label_and_case_all_reach_one_mailbox(intl: Server) -> None:
    with smtplib.SMTP("127.0.0.1", intl.ports["smtp"]) as s:
        for rcpt in ("jörg@xn--bcher-kva.example", "JÖRG@BÜCHER.example", "用户@xn--fsqu00a.example"):
            s.sendmail("alice@example.test", [rcpt], b"Subject: form\r\n\r\nx\r\n", mail_options=["SMTPUTF8"])
    assert len(intl.messages("jörg@bücher.example")) == 2
    assert len(intl.messages("用户@例子.example")) == 1


def test_ascii_local_part_at_an_idn_domain_needs_no_smtputf8_in_a_label_form(intl: Server) -> None:
    with smtplib.SMTP("127.0.0.1", intl.ports["smtp"]) as s:
        s.sendmail("alice@example.test", ["info@xn--bcher-kva.example"], b"Subject: alias\r\n\r\nx\r\n")
    assert len(intl.messages("jörg@bücher.example")) == 1


def test_utf8_alias_in_the_aliases_file(intl: Server) -> None:
    with smtplib.SMTP("127.0.0.1", intl.ports["smtp"]) as s:
        s.sendmail("jörg@bücher.example", ["почта@example.test"], MESSAGE.encode(), mail_options=["SMTPUTF8"])
    assert len(intl.messages("alice@example.test")) == 1


def test_non_ascii_address_without_smtputf8_is_refused_with_5_6_7(intl: Server) -> None:
    replies = raw_session(intl.ports["smtp"], [
        b"EHLO client.test",
        "MAIL FROM:<jörg@bücher.example>".encode(),
        b"MAIL FROM:<alice@example.test>",
        "RCPT TO:<jörg@bücher.example>".encode(),
        b"QUIT",
    ])
    assert replies[2].startswith(b"553 5.6.7")
    assert replies[3].startswith(b"250")
    assert replies[4].startswith(b"553 5.6.7")


def test_utf8_outside_mail_and_rcpt_and_broken_utf8_get_500(intl: Server) -> None:
    replies = raw_session(intl.ports["smtp"], [
        "EHLO köln.example".encode(),
        b"EHLO client.test",
        b"MAIL FROM:<\xff\xfe@example.test> SMTPUTF8",
        "MAIL FROM:<a@⒈.com> SMTPUTF8".encode(),
        b"MAIL FROM:<alice@example.test> SMTPUTF8=yes",
        b"QUIT",
    ])
    assert replies[1].startswith(b"500 5.5.2")
    assert replies[3].startswith(b"500 5.5.2")  # not UTF-8
    assert replies[4].startswith(b"501 5.1.7")  # not a valid IDN
    assert replies[5].startswith(b"501 5.5.4")
    assert "non-UTF-8 command" in intl.log()


def test_submission_login_with_a_utf8_account(intl: Server) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP_SSL("127.0.0.1", intl.ports["submissions"], context=ctx) as s:
        s.ehlo()
        # smtplib encodes SASL in ASCII only; RFC 4616 PLAIN is UTF-8.
        token = base64.b64encode("\0jörg@bücher.example\0jörg-pw".encode()).decode()
        assert s.docmd("AUTH", f"PLAIN {token}")[0] == 235
        s.sendmail("jörg@bücher.example", ["用户@例子.example"], MESSAGE.encode(), mail_options=["SMTPUTF8"])
    (msg,) = intl.messages("用户@例子.example")
    assert "Grüße".encode() in msg


# -- relay -----------------------------------------------------------------------------


def test_relay_sends_a_labels_and_smtputf8_to_a_hop_that_offers_it(server_factory) -> None:
    target = server_factory("target", users={"ünïcode@fernziel.example": "pw"},
                            server={"domains": ["fernziel.example"]}).start()
    srv = relay_server(server_factory, transport={"xn--fernziel-ucb.example": f"127.0.0.1:{target.ports['smtp']}",
                                                  "fernziel.example": f"127.0.0.1:{target.ports['smtp']}"})
    srv.sections["server"]["domains"] = DOMAINS
    srv.start()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("jörg@bücher.example", ["ünïcode@fernziel.example"], MESSAGE.encode(), mail_options=["SMTPUTF8"])
    wait_for(lambda: target.messages("ünïcode@fernziel.example"), 15, "delivery at the second instance", srv)
    (msg,) = target.messages("ünïcode@fernziel.example")
    assert "Subject: Grüße aus Köln".encode() in msg
    assert msg.count(b"with UTF8SMTP") == 2  # both hops used SMTPUTF8
    assert "Return-Path: <jörg@xn--bcher-kva.example>".encode() in msg  # A-labels on the wire


def test_idn_domain_with_ascii_local_part_goes_as_a_label_to_a_hop_without_smtputf8(server_factory, peers) -> None:
    peer = peers()
    srv = relay_server(server_factory, transport={"xn--mnchen-3ya.example": peer.hop}).start()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("alice@example.test", ["info@münchen.example"], b"Subject: plain\r\n\r\nx\r\n",
                   mail_options=["SMTPUTF8"])
    wait_for(lambda: peer.received, 15, "delivery", srv)
    assert peer.received[0].rcpts == ["info@xn--mnchen-3ya.example"]
    assert not any("SMTPUTF8" in c for c in peer.commands)


def test_utf8_message_to_a_hop_without_smtputf8_bounces_5_6_7_with_a_global_dsn(server_factory, sink) -> None:
    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{sink.port}"})
    srv.sections["server"]["domains"] = DOMAINS
    (srv.root / "users").write_text((srv.root / "users").read_text()
                                    + f"jörg@bücher.example:{hashed('pw')}\n")
    srv.start()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("jörg@bücher.example", ["bob@remote.test"], MESSAGE.encode(), mail_options=["SMTPUTF8"])
    wait_for(lambda: status_of(srv, "bob@remote.test") == ["bounced"], 15, "bounce", srv)
    assert "dsn=5.6.7" in srv.log()
    assert sink.count() == 0  # no silent downgrade
    wait_for(lambda: srv.messages("jörg@bücher.example"), 15, "the DSN", srv)
    (raw,) = srv.messages("jörg@bücher.example")
    dsn = email.message_from_bytes(raw, policy=email_policy.default)
    assert dsn.get_param("report-type") == "global-delivery-status"  # RFC 6533
    parts = [p.get_content_type() for p in dsn.iter_parts()]
    assert parts == ["text/plain", "message/global-delivery-status", "message/global-headers"]
    assert "Status: 5.6.7" in raw.decode()
    assert "Subject: Grüße aus Köln" in raw.decode()


def test_all_ascii_message_sent_with_smtputf8_still_goes_to_a_hop_without_it(server_factory, sink) -> None:
    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{sink.port}"}).start()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("alice@example.test", ["bob@remote.test"], b"Subject: ascii\r\n\r\nx\r\n", mail_options=["SMTPUTF8"])
    wait_for(lambda: sink.count() == 1, 15, "delivery", srv)


def test_config_accepts_either_form_of_a_local_domain(tmp_path) -> None:
    from mailsuite.config import parse

    srv = make_server(tmp_path / "c", server={"domains": ["xn--bcher-kva.example", "例子.example"]})
    srv.write_config()
    cfg = parse(srv.config_path.read_text(), srv.config_path)
    assert cfg.server.domains == ("bücher.example", "例子.example")
    assert cfg.is_local_domain("BÜCHER.example") and cfg.is_local_domain("xn--fsqu00a.example")


# -- IMAP UTF8=ACCEPT (RFC 6855) and POP3 UTF8 (RFC 6856) --------------------------------


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def _deliver_utf8(srv: Server) -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("alice@example.test", ["jörg@bücher.example"], MESSAGE.encode(), mail_options=["SMTPUTF8"])


def test_imap_enable_utf8_accept_gives_utf8_names_and_raw_utf8_headers(intl: Server) -> None:
    import imaplib

    _deliver_utf8(intl)
    imap = imaplib.IMAP4_SSL("127.0.0.1", intl.ports["imaps"], ssl_context=_insecure())
    try:
        assert b"UTF8=ACCEPT" in imap.capability()[1][0].split()
        imap._encoding = "utf-8"  # the login name is UTF-8 (imaplib only switches after ENABLE)
        imap.login("\"jörg@bücher.example\"", "jörg-pw")
        # Before ENABLE: modified UTF-7 names.
        assert imap.create("Entw&APw-rfe")[0] == "OK"
        assert imap.enable("UTF8=ACCEPT")[0] == "OK"
        assert imap.response("ENABLED") == ("ENABLED", [b"UTF8=ACCEPT"])
        typ, data = imap.list()
        assert typ == "OK"
        assert any('"Entwürfe"'.encode() in line for line in data), data
        assert imap.create('"Größe"')[0] == "OK"  # a UTF-8 name, created as such
        typ, data = imap.list()
        assert any('"Größe"'.encode() in line for line in data)
        typ, data = imap.select("INBOX")
        typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert "Subject: Grüße aus Köln".encode() in data[0][1]
    finally:
        imap.logout()
    # The folder created as UTF-8 is the one modified UTF-7 names.
    imap = imaplib.IMAP4_SSL("127.0.0.1", intl.ports["imaps"], ssl_context=_insecure())
    imap._encoding = "utf-8"
    imap.login("\"jörg@bücher.example\"", "jörg-pw")
    typ, data = imap.list()
    assert any(b'"Gr&APYA3w-e"' in line for line in data), data
    imap.logout()


def test_pop3_utf8_command_and_a_utf8_user_name(intl: Server) -> None:
    import poplib

    _deliver_utf8(intl)
    pop = poplib.POP3_SSL("127.0.0.1", intl.ports["pop3s"], context=_insecure())
    try:
        caps = pop.capa()
        assert caps.get("UTF8") == ["USER"]
        pop.utf8()
        pop.encoding = "utf-8"
        pop.user("jörg@bücher.example")
        pop.pass_("jörg-pw")
        _resp, lines, _octets = pop.retr(1)
        assert "Subject: Grüße aus Köln".encode() in lines
    finally:
        pop.quit()
    replies = raw_session(intl.ports["pop3"], [b"UTF8 now"])
    assert replies[1].startswith(b"-ERR")


@needs(("swaks", "swaks"))
def test_swaks_sees_the_extensions_and_delivers_to_an_a_label_domain(intl: Server) -> None:
    """swaks has no SMTPUTF8 or BDAT option; it pipelines, sees the EHLO keywords and
    sends to the A-label form of an IDN domain with UTF-8 in a header."""
    p = smtp_client.swaks("--port", str(intl.ports["smtp"]), "--helo", "swaks.test", "--pipeline",
                          "--to", "info@xn--bcher-kva.example", "--from", "swaks@remote.test",
                          "--header", "Subject: Grüße von swaks")
    assert p.returncode == 0, p.stdout + p.stderr
    for keyword in ("SMTPUTF8", "CHUNKING", "BINARYMIME", "DSN", "PIPELINING"):
        assert f"250-{keyword}" in p.stdout or f"250 {keyword}" in p.stdout
    (msg,) = intl.messages("jörg@bücher.example")
    assert "Subject: Grüße von swaks".encode() in msg
