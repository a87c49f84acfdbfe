"""Clients that offer ALPN (every browser; some mail clients) complete the TLS
handshake on implicit-TLS listeners.  Twisted 26.10's ALPN callback answered an
"internal error" alert whenever nothing overlapped (mailsuite/tls.py _alpn_select)."""

from __future__ import annotations

import socket

import pytest

from tests.support.tls import trusting_context


@pytest.mark.parametrize("port_name, offered", [
    ("https", ["h2", "http/1.1"]), ("imaps", ["imap"]), ("pop3s", ["pop3"]), ("submissions", ["smtp"]),
])
def test_alpn_offer_does_not_break_the_handshake(server, port_name: str, offered: list[str]) -> None:
    ctx = trusting_context(server)
    ctx.set_alpn_protocols(offered)
    with socket.create_connection(("127.0.0.1", server.ports[port_name]), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="mail.example.test") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.selected_alpn_protocol() is None  # no overlap: ALPN ignored (RFC 7301 3.2)
