"""The relay queue end to end: a real mailsuite relays to real peers on loopback
(Postfix's smtp-sink, scripted SMTP peers, a second mailsuite) and routes by the
transport map or by MX records from a twisted.names server."""

from __future__ import annotations

import email
import smtplib
from email import policy as email_policy

from tests.support.relay import Script, relay_server, spool_files, status_of
from tests.support.server import Server, free_port
from tests.support.waiting import wait_for


def send(server: Server, sender: str, rcpts: list[str], body: bytes = b"Subject: test\r\n\r\nhello\r\n") -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.sendmail(sender, rcpts, body)


def wait_status(server: Server, rcpt: str, status: str, count: int = 1, timeout: float = 15) -> None:
    wait_for(lambda: status_of(server, rcpt).count(status) >= count, timeout, f"{rcpt} {status}", server)


def wait_empty(server: Server, timeout: float = 10) -> None:
    wait_for(lambda: not spool_files(server), timeout, "empty spool", server)


def dsn_parts(raw: bytes) -> tuple[email.message.EmailMessage, str, str]:
    msg = email.message_from_bytes(raw, policy=email_policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = parts[1].as_string()
    headers = parts[2].get_payload() if isinstance(parts[2].get_payload(), str) else parts[2].as_string()
    return msg, status, headers


# -- delivery ------------------------------------------------------------------------


def test_remote_recipient_is_relayed_to_smtp_sink_by_transport_map(server_factory, sink) -> None:
    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{sink.port}"}).start()
    send(srv, "alice@example.test", ["bob@remote.test"], b"Subject: via sink\r\n\r\nhello\r\n")
    wait_for(lambda: sink.count() == 1, 10, "message at the sink", srv)
    (msg,) = sink.messages()
    assert b"X-Mail-Args: <alice@example.test>" in msg
    assert b"X-Rcpt-Args: <bob@remote.test>" in msg
    assert b"by mail.example.test (mailsuite)" in msg and b"Subject: via sink\n\nhello\n" in msg
    wait_status(srv, "bob@remote.test", "sent")
    wait_empty(srv)


def test_local_and_remote_recipients_of_one_message_both_get_it(server_factory, sink) -> None:
    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{sink.port}"}).start()
    send(srv, "alice@example.test", ["bob@example.test", "carol@remote.test"])
    wait_for(lambda: sink.count() == 1, 10, "sink", srv)
    wait_status(srv, "bob@example.test", "sent")
    assert len(srv.messages("bob@example.test")) == 1
    assert "relay=local" in srv.log()
    wait_empty(srv)


def test_one_connection_carries_all_recipients_for_a_destination(server_factory, peers) -> None:
    peer = peers()
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    send(srv, "alice@example.test", ["a@remote.test", "b@remote.test", "c@remote.test"])
    wait_for(lambda: peer.received, 10, "delivery", srv)
    assert peer.connections == 1
    assert peer.received[0].rcpts == ["a@remote.test", "b@remote.test", "c@remote.test"]
    # Pipelined: MAIL, the RCPTs and DATA arrived before any reply was needed.
    assert [c.split(":")[0] for c in peer.commands[:6]] == ["EHLO mail.example.test", "MAIL FROM", "RCPT TO", "RCPT TO", "RCPT TO", "DATA"]


def test_peer_without_pipelining_gets_one_command_at_a_time(server_factory, peers) -> None:
    peer = peers(Script(ehlo_lines=("8BITMIME",), rcpt=lambda a: "550 5.1.1 unknown" if a.startswith("x") else "250 Ok"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    send(srv, "alice@example.test", ["a@remote.test", "x@remote.test", "b@remote.test"])
    wait_for(lambda: peer.received, 10, "delivery", srv)
    assert peer.received[0].rcpts == ["a@remote.test", "b@remote.test"]
    wait_status(srv, "x@remote.test", "bounced")


def test_peer_that_refuses_ehlo_is_greeted_with_helo(server_factory, peers) -> None:
    peer = peers(Script(no_ehlo=True))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_for(lambda: peer.received, 10, "delivery", srv)
    assert peer.commands[:2] == ["EHLO mail.example.test", "HELO mail.example.test"]
    assert "BODY=8BITMIME" not in peer.commands[2]


def test_messages_in_a_row_share_one_cached_connection(server_factory, peers) -> None:
    peer = peers()
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, connection_cache_time=5).start()
    for i in range(3):
        send(srv, "alice@example.test", [f"r{i}@remote.test"])
        wait_for(lambda: len(peer.received) == i + 1, 10, "delivery", srv)
    assert peer.connections == 1
    assert [c.split(":")[0] for c in peer.commands].count("EHLO mail.example.test") == 1


def test_deliveries_to_one_destination_are_limited_to_its_concurrency(server_factory, peers) -> None:
    import time as _time

    def slow_end(p: object) -> str:
        _time.sleep(0.3)
        return "250 2.0.0 Ok"

    peer = peers(Script(data_end=slow_end))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, destination_concurrency=2).start()
    import threading

    threads = [threading.Thread(target=send, args=(srv, "alice@example.test", [f"r{i}@remote.test"])) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: len(peer.received) == 6, 15, "six deliveries", srv)
    assert peer.max_active == 2


def test_ehlo_uses_the_configured_hostname(server_factory, peers) -> None:
    peer = peers()
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_for(lambda: peer.received, 10, "delivery", srv)
    assert peer.commands[0] == "EHLO mail.example.test"


def test_second_mailsuite_instance_receives_relayed_mail(server_factory) -> None:
    dest = server_factory("dest", users={"dora@partner.test": "pw"},
                          server={"hostname": "mx.partner.test", "domains": ["partner.test"]}).start()
    srv = relay_server(server_factory, transport={"partner.test": f"127.0.0.1:{dest.ports['smtp']}"}).start()
    send(srv, "alice@example.test", ["dora@partner.test"], b"Subject: cross\r\n\r\nto another suite\r\n")
    wait_for(lambda: dest.messages("dora@partner.test"), 10, "delivery at the second instance", srv)
    (msg,) = dest.messages("dora@partner.test")
    assert msg.startswith(b"Return-Path: <alice@example.test>\nDelivered-To: dora@partner.test\n")
    assert b"Subject: cross\n\nto another suite\n" in msg
    # STARTTLS was offered by the second instance and used (policy "may").
    wait_status(srv, "dora@partner.test", "sent")
    assert "tls=TLSv1." in [l for l in srv.log().splitlines() if "relay: " in l and "to=<dora@partner.test>" in l][0]


def test_message_size_over_the_peers_limit_bounces_without_a_transaction(server_factory, peers) -> None:
    peer = peers(Script(ehlo_lines=("PIPELINING", "SIZE 1000")))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    send(srv, "alice@example.test", ["a@remote.test"], b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + (b"y" * 70 + b"\r\n") * 40)
    wait_status(srv, "a@remote.test", "bounced")
    assert not any(c.startswith("MAIL") for c in peer.commands)
    assert "dsn=5.3.4" in srv.log()


def test_dot_lines_at_every_chunk_boundary_are_stuffed_and_nothing_is_smuggled(server_factory, peers) -> None:
    peer = peers()
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    # Lines of "." only: whatever the header length, one of the two messages has a
    # line starting exactly at the 64 KiB chunk boundary.  A line "." that is not
    # stuffed would end DATA early and run the rest as commands (research §2.5).
    evil = b".\r\nMAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@remote.test>\r\nDATA\r\n"
    for subject in (b"a", b"ab"):
        # smtplib stuffs these lines and the server unstuffs them: "." lines on disk.
        body = b"Subject: " + subject + b"\r\n\r\n" + b".\r\n" * 40000 + evil + b".\r\n" * 10
        send(srv, "alice@example.test", ["a@remote.test"], body)
    wait_for(lambda: len(peer.received) == 2, 15, "two deliveries", srv)
    assert not any("smuggled" in c for c in peer.commands)
    for rec in peer.received:
        assert rec.mail_from == "alice@example.test"
        lines = rec.data.split(b"\r\n")
        # Every body line that is "." on disk is ".." on the wire.
        body_lines = lines[lines.index(b"") + 1 : -1]
        assert set(body_lines) <= {b"..", b"MAIL FROM:<smuggled@evil.test>", b"RCPT TO:<victim@remote.test>", b"DATA"}


SMUGGLE = (b"Subject: cr\r\n\r\nhi\r.\rMAIL FROM:<smuggled@evil.test>\rRCPT TO:<victim@remote.test>\r"
           b"DATA\r\r\n.\r\n")


def raw_data(server: Server, body: bytes, rcpt: str = "a@remote.test") -> bytes:
    """Send ``body`` as DATA byte for byte (smtplib would fix its line ends)."""
    import socket

    with socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=10) as sock:
        f = sock.makefile("rb")
        f.readline()
        for cmd in (b"EHLO client.test", b"MAIL FROM:<alice@example.test>", b"RCPT TO:<%s>" % rcpt.encode(), b"DATA"):
            sock.sendall(cmd + b"\r\n")
            while (line := f.readline())[3:4] == b"-":
                pass
            assert line[:1] in b"23", line
        sock.sendall(body)
        return f.readline()


def test_a_bare_cr_dot_cr_is_never_relayed_as_it_came(server_factory, peers) -> None:
    """Issue 16 finding 5: <CR>.<CR> reached the next hop byte for byte; a receiver
    that ends DATA there would take the rest for a second message from us."""
    peer = peers()
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    assert raw_data(srv, SMUGGLE).startswith(b"250")
    wait_for(lambda: len(peer.received) == 1, 15, "one delivery", srv)
    data = peer.received[0].data
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")  # no bare CR or LF
    assert b"\r\n..\r\nMAIL FROM:<smuggled@evil.test>\r\n" in data  # the "." line is stuffed
    assert not any("smuggled" in c for c in peer.commands)


def test_bare_newline_reject_refuses_the_message_with_5_5_2(server_factory) -> None:
    srv = server_factory("reject", smtp={"bare_newline": "reject"}).start()
    assert raw_data(srv, SMUGGLE, "alice@example.test").startswith(b"550 5.5.2")
    assert raw_data(srv, b"Subject: ok\r\n\r\nclean\r\n.\r\n", "alice@example.test").startswith(b"250")
    wait_for(lambda: len(srv.messages("alice@example.test")) == 1, 10, "one delivery", srv)


# -- per-recipient results, retries, bounces ------------------------------------------


def test_per_recipient_results_sent_deferred_and_bounced(server_factory, peers) -> None:
    seen: dict[str, int] = {}

    def rcpt(addr: str) -> str:
        seen[addr] = seen.get(addr, 0) + 1
        if addr.startswith("later") and seen[addr] == 1:
            return "450 4.2.0 mailbox busy"
        if addr.startswith("nobody"):
            return "550 5.1.1 no such user"
        return "250 2.1.5 Ok"

    peer = peers(Script(rcpt=rcpt))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    send(srv, "alice@example.test", ["ok@remote.test", "later@remote.test", "nobody@remote.test"],
         b"Subject: mixed\r\n\r\nthree fates\r\n")
    wait_status(srv, "ok@remote.test", "sent")
    wait_status(srv, "later@remote.test", "deferred")
    wait_status(srv, "nobody@remote.test", "bounced")
    wait_status(srv, "later@remote.test", "sent")  # retried after the 1 s backoff
    assert [r.rcpts for r in peer.received] == [["ok@remote.test"], ["later@remote.test"]]
    # The sender is local: the bounce is in her Maildir, for the 5xx recipient only.
    wait_for(lambda: srv.messages("alice@example.test"), 10, "bounce", srv)
    (bounce,) = srv.messages("alice@example.test")
    assert bounce.startswith(b"Return-Path: <>\n")
    msg, status, headers = dsn_parts(bounce)
    assert msg["From"].startswith("MAILER-DAEMON@mail.example.test")
    assert "Final-Recipient: rfc822; nobody@remote.test" in status
    assert "Action: failed" in status and "Status: 5.1.1" in status
    assert "Remote-MTA: dns; 127.0.0.1" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user" in status
    assert "later@remote.test" not in status and "ok@remote.test" not in status
    assert "Subject: mixed" in headers and "three fates" not in bounce.decode()
    wait_empty(srv)


def test_4xx_at_end_of_data_is_retried_then_delivered(server_factory, peers) -> None:
    peer = peers(Script(data_end=lambda p: "451 4.3.0 try again" if p.data_ends == 1 else "250 2.0.0 Ok"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_status(srv, "a@remote.test", "deferred")
    line = [l for l in srv.log().splitlines() if "status=deferred" in l][0]
    assert "dsn=4.3.0" in line and "451 4.3.0 try again" in line and "next=" in line
    wait_status(srv, "a@remote.test", "sent")
    assert len(peer.received) == 1
    assert not srv.messages("alice@example.test")  # no bounce for a retry
    wait_empty(srv)


def test_5xx_bounce_for_a_remote_sender_goes_out_through_the_queue(server_factory, peers, sink) -> None:
    peer = peers(Script(rcpt=lambda a: "550 5.7.1 rejected"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop, "elsewhere.test": f"127.0.0.1:{sink.port}"}).start()
    send(srv, "someone@elsewhere.test", ["a@remote.test"], b"Subject: will bounce\r\n\r\nx\r\n")
    wait_for(lambda: sink.count() == 1, 10, "bounce at the sink", srv)
    (raw,) = sink.messages()
    assert b"X-Mail-Args: <>" in raw and b"X-Rcpt-Args: <someone@elsewhere.test>" in raw
    _msg, status, headers = dsn_parts(raw[raw.index(b"Received: by mail.example.test"):])
    assert "Status: 5.7.1" in status and "Subject: will bounce" in headers
    wait_empty(srv)


def test_no_bounce_is_sent_for_a_message_from_the_null_sender(server_factory, peers, sink) -> None:
    peer = peers(Script(rcpt=lambda a: "550 5.1.1 no such user"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    send(srv, "", ["a@remote.test"])
    wait_status(srv, "a@remote.test", "bounced")
    wait_for(lambda: "no bounce for a bounce" in srv.log(), 5, "log line", srv)
    wait_empty(srv)
    assert "notification" not in srv.log()


def test_message_still_deferred_after_max_lifetime_bounces_as_expired(server_factory, peers) -> None:
    peer = peers(Script(rcpt=lambda a: "451 4.7.1 greylisted"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, max_lifetime=2).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_status(srv, "a@remote.test", "bounced", timeout=15)
    wait_for(lambda: srv.messages("alice@example.test"), 10, "expiry bounce", srv)
    _msg, status, _h = dsn_parts(srv.messages("alice@example.test")[0])
    assert "Status: 4.4.7" in status and "Action: failed" in status and "greylisted" in status
    wait_empty(srv)


def test_delay_warning_is_sent_once_while_retries_go_on(server_factory, peers) -> None:
    peer = peers(Script(rcpt=lambda a: "451 4.7.1 greylisted"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, delay_warning=1, backoff_max=1).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_for(lambda: srv.messages("alice@example.test"), 15, "delay warning", srv)
    wait_status(srv, "a@remote.test", "deferred", count=4)
    (warning,) = srv.messages("alice@example.test")
    msg, status, _h = dsn_parts(warning)
    assert "Delayed Mail" in msg["Subject"]
    assert "Action: delayed" in status and "Will-Retry-Until:" in status


# -- faults ----------------------------------------------------------------------------


def test_peer_closing_mid_data_defers_and_the_retry_delivers(server_factory, peers) -> None:
    script = Script(drop_after_data_bytes=10)
    peer = peers(script)
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    send(srv, "alice@example.test", ["a@remote.test"], b"Subject: x\r\n\r\n" + b"line\r\n" * 100)
    wait_status(srv, "a@remote.test", "deferred")
    assert "lost connection" in [l for l in srv.log().splitlines() if "status=deferred" in l][0]
    script.drop_after_data_bytes = -1
    wait_status(srv, "a@remote.test", "sent")
    assert len(peer.received) == 1


def test_stalled_peer_times_out_and_the_message_is_deferred(server_factory, peers) -> None:
    peer = peers(Script(stall_at="data_end"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, data_timeout=1).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_status(srv, "a@remote.test", "deferred")
    assert "timed out waiting for end of data reply" in srv.log()
    assert len(spool_files(srv)) == 2  # still queued


def test_peer_that_never_greets_times_out(server_factory, peers) -> None:
    peer = peers(Script(stall_at="greeting"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, command_timeout=1).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_status(srv, "a@remote.test", "deferred")
    assert "timed out waiting for greeting" in srv.log()


def test_peer_refusing_at_the_greeting_defers_even_with_5xx(server_factory, peers) -> None:
    peer = peers(Script(greeting="554 5.3.2 not now"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_status(srv, "a@remote.test", "deferred")
    assert "dsn=4.3.2" in srv.log() and "refused to talk to me: 554 5.3.2 not now" in srv.log()


def test_garbage_reply_defers_with_a_protocol_error(server_factory, peers) -> None:
    peer = peers(Script(greeting="hello, I am not SMTP"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_status(srv, "a@remote.test", "deferred")
    assert "protocol error: garbled reply" in srv.log()


def test_refused_connection_defers(server_factory) -> None:
    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{free_port()}"}).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_status(srv, "a@remote.test", "deferred")
    assert "dsn=4.4.1" in srv.log() and "Connection refused" in srv.log()


def test_failed_starttls_handshake_falls_back_to_plain_when_tls_is_may(server_factory, peers) -> None:
    peer = peers(Script(starttls_garbage=True))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_status(srv, "a@remote.test", "sent")
    assert peer.connections == 2 and len(peer.received) == 1
    assert "TLS handshake failed" in srv.log() and "trying again without TLS" in srv.log()


def test_failed_starttls_handshake_defers_when_tls_is_verify(server_factory, peers) -> None:
    peer = peers(Script(starttls_garbage=True))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, tls_policies={"remote.test": "verify"}).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_status(srv, "a@remote.test", "deferred")
    assert not peer.received and "dsn=4.7.5" in srv.log()


def test_tls_verify_defers_when_starttls_is_not_offered(server_factory, peers) -> None:
    peer = peers()
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, tls_policy="verify").start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_status(srv, "a@remote.test", "deferred")
    assert "TLS is required, but was not offered" in srv.log() and not peer.received


# -- MX routing ------------------------------------------------------------------------


def test_mx_records_are_tried_by_preference(server_factory, peers, dns_factory) -> None:
    peer = peers()
    dns = dns_factory({
        "partner.test": {"MX": [[20, "mx-b.partner.test"], [10, "mx-a.partner.test"]]},
        "mx-a.partner.test": {"A": ["127.0.0.2"]},  # nothing listens there: refused
        "mx-b.partner.test": {"A": ["127.0.0.1"]},
    })
    srv = relay_server(server_factory, dns_servers=[dns.server], smtp_port=peer.port).start()
    send(srv, "alice@example.test", ["p@partner.test"])
    wait_status(srv, "p@partner.test", "sent")
    log = srv.log()
    assert log.index("mx-a.partner.test[127.0.0.2]") < log.index(f"relay=mx-b.partner.test[127.0.0.1]:{peer.port}")


def test_domain_without_mx_is_delivered_to_its_address(server_factory, peers, dns_factory) -> None:
    peer = peers()
    dns = dns_factory({"plain.test": {"A": ["127.0.0.1"]}})
    srv = relay_server(server_factory, dns_servers=[dns.server], smtp_port=peer.port).start()
    send(srv, "alice@example.test", ["p@plain.test"])
    wait_status(srv, "p@plain.test", "sent")
    assert f"relay=plain.test[127.0.0.1]:{peer.port}" in srv.log()


def test_ipv6_mx_address_is_used(server_factory, peers, dns_factory) -> None:
    peer = peers(host="::1")
    dns = dns_factory({"six.test": {"MX": [[10, "mx.six.test"]]}, "mx.six.test": {"AAAA": ["::1"]}})
    srv = relay_server(server_factory, dns_servers=[dns.server], smtp_port=peer.port).start()
    send(srv, "alice@example.test", ["p@six.test"])
    wait_status(srv, "p@six.test", "sent")
    assert f"relay=mx.six.test[::1]:{peer.port}" in srv.log()


def test_null_mx_bounces_at_once_without_connecting(server_factory, peers, dns_factory) -> None:
    peer = peers()
    dns = dns_factory({"nomail.test": {"MX": [[0, ""]], "A": ["127.0.0.1"]}})
    srv = relay_server(server_factory, dns_servers=[dns.server], smtp_port=peer.port).start()
    send(srv, "alice@example.test", ["p@nomail.test"])
    wait_status(srv, "p@nomail.test", "bounced")
    assert "dsn=5.1.10" in srv.log() and "null MX" in srv.log()
    assert peer.connections == 0
    wait_for(lambda: srv.messages("alice@example.test"), 10, "bounce", srv)


def test_nxdomain_bounces(server_factory, dns_factory) -> None:
    dns = dns_factory({})
    srv = relay_server(server_factory, dns_servers=[dns.server]).start()
    send(srv, "alice@example.test", ["p@no-such-domain.test"])
    wait_status(srv, "p@no-such-domain.test", "bounced")
    assert "dsn=5.1.2" in srv.log()


def test_servfail_defers_and_delivery_follows_when_dns_recovers(server_factory, peers, dns_factory) -> None:
    peer = peers()
    dns = dns_factory({"flaky.test": {"SERVFAIL": True}})
    srv = relay_server(server_factory, dns_servers=[dns.server], smtp_port=peer.port).start()
    send(srv, "alice@example.test", ["p@flaky.test"])
    wait_status(srv, "p@flaky.test", "deferred")
    assert "dsn=4.4.3" in srv.log() and "SERVFAIL" in srv.log()
    dns.set({"flaky.test": {"A": ["127.0.0.1"]}})
    wait_status(srv, "p@flaky.test", "sent")


def test_mx_that_is_this_server_bounces_as_a_loop(server_factory, dns_factory) -> None:
    dns = dns_factory({"loop.test": {"A": ["127.0.0.1"]}})
    port = free_port()
    srv = relay_server(server_factory, dns_servers=[dns.server], smtp_port=port)
    srv.sections["smtp"]["listen"] = [f"tcp:{port}:interface=127.0.0.1"]
    srv.ports["smtp"] = srv.wait_ports["smtp"] = port
    srv.start()
    send(srv, "alice@example.test", ["p@loop.test"])
    wait_status(srv, "p@loop.test", "bounced")
    assert "dsn=5.4.6" in srv.log() and "loops back to myself" in srv.log()


def test_dns_timeout_defers(server_factory, dns_factory) -> None:
    dns = dns_factory({"slow.test": {"TIMEOUT": True}})
    srv = relay_server(server_factory, dns_servers=[dns.server], dns_timeout=1).start()
    send(srv, "alice@example.test", ["p@slow.test"])
    wait_status(srv, "p@slow.test", "deferred")
    assert "Name server timeout" in srv.log()


# -- durability --------------------------------------------------------------------------


def test_kill9_between_attempts_loses_nothing_and_delivers_no_local_copy_twice(server_factory, peers) -> None:
    script = Script(rcpt=lambda a: "451 4.3.0 later")
    peer = peers(script)
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, backoff_min=3600, backoff_max=3600).start()
    send(srv, "alice@example.test", ["bob@example.test", "r@remote.test"])
    wait_status(srv, "r@remote.test", "deferred")
    assert len(srv.messages("bob@example.test")) == 1
    srv.kill9()
    script.rcpt = lambda a: "250 2.1.5 Ok"
    srv.sections["relay"]["backoff_min"] = 1
    srv.start()
    # The restart keeps the stored next attempt (an hour away): flush makes it due.
    assert srv.cli("queue", "flush").returncode == 0
    wait_for(lambda: peer.received, 15, "delivery after restart", srv)
    wait_empty(srv)
    assert len(srv.messages("bob@example.test")) == 1


def test_every_acknowledged_message_survives_kill9_during_load(server_factory, peers) -> None:
    import threading

    script = Script(rcpt=lambda a: "451 4.3.0 later")
    peer = peers(script)
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, backoff_min=3600, backoff_max=3600)
    srv.sections["smtp"]["max_connections_per_ip"] = 100
    srv.start()
    acked: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(50):
            subject = f"msg-{n}-{i}"
            try:
                with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=5) as s:
                    s.sendmail("alice@example.test", ["r@remote.test"], f"Subject: {subject}\r\n\r\nx\r\n".encode())
            except (OSError, smtplib.SMTPException):
                return  # the server is gone
            with lock:
                acked.append(subject)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 60, 20, "acknowledged messages", srv)
    srv.kill9()
    for t in threads:
        t.join()
    script.rcpt = lambda a: "250 2.1.5 Ok"
    srv.start()
    assert srv.cli("queue", "flush").returncode == 0
    wait_for(lambda: not spool_files(srv), 30, "empty spool", srv)
    received = {r.data.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for r in peer.received}
    assert set(acked) <= received


def test_corrupt_envelope_is_moved_aside_and_the_rest_is_delivered(server_factory, sink) -> None:
    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{sink.port}"})
    spool_dir = srv.root / "data" / "queue" / "spool"
    spool_dir.mkdir(parents=True)
    (spool_dir / "BAD000000001.json").write_text("{not json")
    (spool_dir / "BAD000000001.msg").write_text("Subject: x\n\nbody\n")
    srv.start()
    send(srv, "alice@example.test", ["a@remote.test"])
    wait_for(lambda: sink.count() == 1, 10, "delivery", srv)
    assert "corrupt envelope BAD000000001.json moved to" in srv.log()
    moved = sorted(p.name for p in (srv.root / "data" / "queue" / "corrupt").iterdir())
    assert [n.split(".")[0:2] for n in moved] == [["BAD000000001", "json"], ["BAD000000001", "msg"]]
    wait_empty(srv)


def test_spool_that_cannot_be_written_answers_451(server_factory, sink) -> None:
    import pytest

    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{sink.port}"}).start()
    spool_dir = srv.root / "data" / "queue" / "spool"
    spool_dir.rename(spool_dir.with_name("spool.away"))
    spool_dir.write_text("not a folder")  # root ignores permissions; this fails for everyone
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("alice@example.test", ["a@remote.test"], b"Subject: x\r\n\r\nx\r\n")
    assert e.value.smtp_code == 451
    assert "cannot write to the spool" in srv.log() and "Traceback" not in srv.log()


def test_spool_entry_is_on_disk_when_the_client_gets_250(server_factory, peers) -> None:
    peer = peers(Script(rcpt=lambda a: "451 4.3.0 later"))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, backoff_min=3600, backoff_max=3600).start()
    send(srv, "alice@example.test", ["a@remote.test"])
    names = spool_files(srv)
    assert len(names) == 2 and names[0].endswith(".json") and names[1].endswith(".msg")

