"""The DSN extension (RFC 3461-3464): NOTIFY, ORCPT, RET and ENVID accepted and kept
in the spool, passed on to a next hop that offers DSN (Postfix's smtp-sink, a second
mailsuite), and honoured in our own reports: success DSNs for local delivery
("delivered") and for a next hop without DSN ("relayed"), NOTIFY=NEVER, RET=FULL/HDRS.
"""

from __future__ import annotations

import email
import json
import smtplib
from email import policy as email_policy

import pytest

from mailsuite.queue.spool import Record
from mailsuite.smtp import dsnparams
from tests.support.relay import Script, relay_server, spool_files, status_of
from tests.support.server import Server
from tests.support.waiting import wait_for

BODY = b"Subject: dsn test\r\nMessage-ID: <dsn-test@example.test>\r\n\r\nthe body text\r\n"


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email_policy.default)


def report(raw: bytes) -> tuple[str, list[str], str]:
    """(delivery-status text, part types, text of the third part)"""
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/report"
    parts = list(msg.iter_parts())
    return parts[1].as_string(), [p.get_content_type() for p in parts], parts[2].as_string()


# -- parameters --------------------------------------------------------------------------


def test_xtext_round_trip_and_parameter_checks() -> None:
    assert dsnparams.xtext_decode("a+2Bb+3Dc") == "a+b=c"
    assert dsnparams.xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert dsnparams.parse_orcpt("rfc822;bob+2Blists@example.test") == "rfc822;bob+lists@example.test"
    assert dsnparams.parse_orcpt("UTF-8;j\\x{F6}rg@example.test") == "utf-8;jörg@example.test"
    assert dsnparams.parse_notify("delay,success") == "SUCCESS,DELAY"
    for bad in ("NEVER,SUCCESS", "SOMETIMES", "", "SUCCESS,SUCCESS"):
        with pytest.raises(ValueError):
            dsnparams.parse_notify(bad)
    for bad in ("bob@example.test", ";x", "rfc822;a+2", "rfc822;a+zz"):
        with pytest.raises(ValueError):
            dsnparams.parse_orcpt(bad)
    with pytest.raises(ValueError):
        dsnparams.parse_envid("x" * 101)


def test_dsn_is_offered_and_bad_parameters_get_501(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        assert s.ehlo()[0] == 250 and s.has_extn("dsn")
        assert s.docmd("MAIL FROM:<x@remote.test> RET=MOST")[0] == 501
        assert s.docmd("MAIL FROM:<x@remote.test> ENVID=" + "x" * 101)[0] == 501
        assert s.docmd("MAIL FROM:<x@remote.test> RET=HDRS ENVID=abc+2Bdef")[0] == 250
        assert s.docmd("RCPT TO:<alice@example.test> NOTIFY=NEVER,DELAY")[0] == 501
        assert s.docmd("RCPT TO:<alice@example.test> ORCPT=alice@example.test")[0] == 501
        assert s.docmd("RCPT TO:<alice@example.test> COLOR=blue")[0] == 555
        assert s.docmd("RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.test")[0] == 250


def test_old_spool_envelope_without_the_new_fields_still_loads() -> None:
    old = {"version": 1, "id": "ABC123", "sender": "a@b.test", "arrival": 1.0,
           "recipients": [{"address": "c@d.test", "kind": "remote", "state": "pending"}]}
    rec = Record.from_json(json.dumps(old).encode())
    assert (rec.ret, rec.envid, rec.smtputf8, rec.body, rec.recipients[0].notify) == ("", "", False, "", "")
    again = Record.from_json(rec.to_json())
    assert again == rec


# -- our reports -------------------------------------------------------------------------


def test_success_dsn_for_local_delivery(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.sendmail("bob@example.test", ["alice@example.test"], BODY,
                   mail_options=["RET=HDRS", "ENVID=env+2B42"],
                   rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;alice+2Bx@example.test"])
    wait_for(lambda: server.messages("alice@example.test"), 10, "delivery", server)
    wait_for(lambda: server.messages("bob@example.test"), 10, "the success DSN", server)
    (raw,) = server.messages("bob@example.test")
    status, types, third = report(raw)
    assert types == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert "Action: delivered" in status and "Status: 2.0.0" in status
    assert "Original-Envelope-Id: env+42" in status
    assert "Original-Recipient: rfc822; alice+x@example.test" in status
    assert "Subject: dsn test" in third and "the body text" not in third
    assert parse(raw)["Subject"] == "Successful Mail Delivery Report"


def test_no_success_dsn_without_notify_success(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.sendmail("bob@example.test", ["alice@example.test"], BODY, rcpt_options=["NOTIFY=FAILURE"])
    wait_for(lambda: server.messages("alice@example.test"), 10, "delivery", server)
    assert server.messages("bob@example.test") == []


def test_relayed_dsn_for_a_next_hop_without_dsn(server_factory, peers) -> None:
    peer = peers(Script(ehlo_lines=("PIPELINING", "8BITMIME")))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("alice@example.test", ["bob@remote.test"], BODY, rcpt_options=["NOTIFY=SUCCESS"])
    wait_for(lambda: peer.received, 15, "delivery", srv)
    assert not any("NOTIFY" in c for c in peer.commands)  # not offered: not passed on
    wait_for(lambda: srv.messages("alice@example.test"), 15, "the relayed DSN", srv)
    status, _types, _ = report(srv.messages("alice@example.test")[0])
    assert "Action: relayed" in status and "Final-Recipient: rfc822; bob@remote.test" in status


def test_parameters_go_on_to_a_next_hop_with_dsn_and_we_stay_silent(server_factory, sink) -> None:
    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{sink.port}"}).start()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("alice@example.test", ["bob@remote.test"], BODY, mail_options=["RET=HDRS", "ENVID=Q+2B1"],
                   rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob+2Bx@remote.test"])
    # smtp-sink writes its file while it answers: wait for the content, not the name.
    msg = wait_for(lambda: next((m for m in sink.messages() if b"X-Rcpt-Args" in m), None), 15, "delivery", srv)
    assert b"X-Mail-Args: <alice@example.test>" in msg and b"RET=HDRS" in msg and b"ENVID=Q+2B1" in msg
    assert b"NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@remote.test" in msg
    wait_for(lambda: status_of(srv, "bob@remote.test") == ["sent"], 10, "sent", srv)
    wait_for(lambda: not spool_files(srv), 10, "empty spool", srv)
    assert srv.messages("alice@example.test") == []  # the next hop reports, not us


def test_notify_never_suppresses_the_bounce(server_factory, peers) -> None:
    peer = peers(Script(rcpt=lambda a: "550 5.1.1 no such user"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("alice@example.test", ["gone@remote.test"], BODY, rcpt_options=["NOTIFY=NEVER"])
    wait_for(lambda: "NOTIFY=NEVER: no failure DSN" in srv.log(), 15, "the silent bounce", srv)
    wait_for(lambda: not spool_files(srv), 10, "empty spool", srv)
    assert srv.messages("alice@example.test") == []


@pytest.mark.parametrize("ret, full", [("FULL", True), ("HDRS", False)])
def test_ret_full_returns_the_message_and_ret_hdrs_its_headers(server_factory, peers, ret: str, full: bool) -> None:
    peer = peers(Script(rcpt=lambda a: "550 5.1.1 no such user"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("alice@example.test", ["gone@remote.test"], BODY, mail_options=[f"RET={ret}"])
    wait_for(lambda: srv.messages("alice@example.test"), 15, "the bounce", srv)
    status, types, third = report(srv.messages("alice@example.test")[0])
    assert "Action: failed" in status and "Status: 5.1.1" in status
    assert types[2] == ("message/rfc822" if full else "text/rfc822-headers")
    assert ("the body text" in third) is full


def test_second_mailsuite_as_next_hop_sends_the_success_dsn_itself(server_factory) -> None:
    target = server_factory("target", users={"bob@remote.test": "pw"}, server={"domains": ["remote.test"]})
    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{target.ports['smtp']}"})
    # The target routes the DSN back to our domain.
    target.sections["relay"] = dict(srv.sections["relay"], transport={"example.test": f"127.0.0.1:{srv.ports['smtp']}"})
    target.start()
    srv.start()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("alice@example.test", ["bob@remote.test"], BODY, mail_options=["ENVID=two-hops"],
                   rcpt_options=["NOTIFY=SUCCESS"])
    wait_for(lambda: target.messages("bob@remote.test"), 15, "delivery at the target", srv)
    wait_for(lambda: srv.messages("alice@example.test"), 20, "the DSN from the target", target)
    status, _types, _ = report(srv.messages("alice@example.test")[0])
    assert "Action: delivered" in status and "Reporting-MTA: dns; mail.example.test" in status
    assert "Original-Envelope-Id: two-hops" in status
    assert "Action: relayed" not in status
