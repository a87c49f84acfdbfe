"""The relay's BDAT (RFC 3030): chunks to a next hop that offers CHUNKING (our own
second instance, a scripted peer with and without PIPELINING), DATA to one that does
not (Postfix's smtp-sink), and a BINARYMIME message bounced with 5.6.3 by a hop
without BINARYMIME."""

from __future__ import annotations

import email
import smtplib
import socket
from email import policy as email_policy

from tests.support.relay import Script, relay_server, status_of
from tests.support.waiting import wait_for


def big_body(n: int) -> bytes:
    lines = [b"Subject: big one\r\n", b"\r\n"]
    i = 0
    while sum(map(len, lines)) < n:
        lines.append(b".%06d starts with a dot, and the line goes on for a while\r\n" % i)
        i += 1
    return b"".join(lines)


def send_bdat(port: int, sender: str, rcpt: str, body: bytes, params: str = "") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO client.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        sock.sendall(f"MAIL FROM:<{sender}>{params}\r\nRCPT TO:<{rcpt}>\r\n".encode()
                     + b"BDAT %d LAST\r\n" % len(body) + body)
        replies = [f.readline() for _ in range(3)]
        f.close()
    assert all(r.startswith(b"250") for r in replies), replies
    return replies[2]


def test_relay_uses_bdat_to_a_second_mailsuite_for_small_and_spilled_bodies(server_factory) -> None:
    target = server_factory("target", users={"bob@remote.test": "pw"}, server={"domains": ["remote.test"]}).start()
    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{target.ports['smtp']}"}).start()
    small = b"Subject: small\r\n\r\n.a dot line\r\n"
    big = big_body(400_000)  # spilled to a file, sent in 64 KiB chunks
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("alice@example.test", ["bob@remote.test"], small)
        s.sendmail("alice@example.test", ["bob@remote.test"], big)
    wait_for(lambda: len(target.messages("bob@remote.test")) == 2, 20, "both at the target", srv)
    bodies = sorted(target.messages("bob@remote.test"), key=len)
    assert bodies[0].endswith(small.replace(b"\r\n", b"\n"))
    assert bodies[1].endswith(big.replace(b"\r\n", b"\n"))
    assert len(target.log().split("result=delivered")) == 3


def test_bdat_chunks_are_pipelined_to_a_chunking_peer(server_factory, peers) -> None:
    peer = peers(Script(ehlo_lines=("PIPELINING", "8BITMIME", "CHUNKING")))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    big = big_body(400_000)  # over the 256 KiB kept in memory: read from the spool file
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("alice@example.test", ["bob@remote.test"], big)
    wait_for(lambda: peer.received, 15, "delivery", srv)
    assert not any(c == "DATA" for c in peer.commands)
    assert len(peer.chunks) >= 4 and peer.chunks[-1] == 0  # 64 KiB chunks, then BDAT 0 LAST
    assert peer.received[0].data.endswith(big)  # CRLF on the wire, no dot-stuffing
    wait_for(lambda: status_of(srv, "bob@remote.test") == ["sent"], 10, "sent", srv)


def test_bdat_without_pipelining_waits_for_each_chunk(server_factory, peers) -> None:
    peer = peers(Script(ehlo_lines=("8BITMIME", "CHUNKING")))
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}).start()
    big = big_body(300_000)
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("alice@example.test", ["bob@remote.test"], big)
    wait_for(lambda: peer.received, 15, "delivery", srv)
    assert peer.received[0].data.endswith(big)


def test_a_peer_without_chunking_gets_data(server_factory, sink) -> None:
    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{sink.port}"}).start()
    send_bdat(srv.ports["smtp"], "alice@example.test", "bob@remote.test", b"Subject: via bdat in\r\n\r\n.x\r\n")
    # smtp-sink writes its file while it answers: wait for the content, not the name.
    wait_for(lambda: any(b"Subject: via bdat in\n\n.x\n" in m for m in sink.messages()), 15, "delivery", srv)


def test_binarymime_is_relayed_to_a_hop_that_offers_it(server_factory) -> None:
    target = server_factory("target", users={"bob@remote.test": "pw"}, server={"domains": ["remote.test"]}).start()
    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{target.ports['smtp']}"}).start()
    payload = bytes(b for b in range(256) if b not in (10, 13)) * 50
    body = (b"Subject: binary\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: binary\r\n\r\n" + payload + b"\r\n")
    send_bdat(srv.ports["smtp"], "alice@example.test", "bob@remote.test", body, " BODY=BINARYMIME")
    wait_for(lambda: target.messages("bob@remote.test"), 15, "delivery", srv)
    assert target.messages("bob@remote.test")[0].endswith(body.replace(b"\r\n", b"\n"))


def test_binarymime_to_a_hop_without_it_bounces_5_6_3(server_factory, sink) -> None:
    srv = relay_server(server_factory, transport={"remote.test": f"127.0.0.1:{sink.port}"}).start()
    body = b"Subject: binary\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02\r\n"
    send_bdat(srv.ports["smtp"], "alice@example.test", "bob@remote.test", body, " BODY=BINARYMIME")
    wait_for(lambda: status_of(srv, "bob@remote.test") == ["bounced"], 15, "bounce", srv)
    assert "dsn=5.6.3" in srv.log() and sink.count() == 0
    wait_for(lambda: srv.messages("alice@example.test"), 15, "the DSN", srv)
    dsn = email.message_from_bytes(srv.messages("alice@example.test")[0], policy=email_policy.default)
    assert "Status: 5.6.3" in dsn.as_string()
