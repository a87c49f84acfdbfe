"""IMAP TLS: STARTTLS on listen, implicit TLS on listen_tls, LOGINDISABLED before TLS."""

from __future__ import annotations

import imaplib
from typing import Iterator

import pytest

from tests.support.server import Server
from tests.support.imap import PASSWORD, Raw, start_imap_server
from tests.support.tls import trusting_context

USER = "u0@example.test"


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default: no password before TLS."""
    srv = start_imap_server(tmp_path_factory.mktemp("imaptls") / "srv", server={"allow_plaintext_auth": False})
    try:
        yield srv
    finally:
        srv.stop()


def test_before_tls_logindisabled_and_starttls_are_advertised(strict_server: Server) -> None:
    r = Raw(strict_server.ports["imap"])
    caps = r.cmd(b"CAPABILITY")[0][0].split()
    assert b"STARTTLS" in caps and b"LOGINDISABLED" in caps
    assert not any(c.startswith(b"AUTH=") for c in caps)
    r.close()


def test_login_before_tls_is_refused(strict_server: Server) -> None:
    r = Raw(strict_server.ports["imap"])
    _, tagged = r.cmd(b"LOGIN " + USER.encode() + b" " + PASSWORD.encode())
    assert tagged.startswith(b"t1 NO [PRIVACYREQUIRED]")
    _, tagged = r.cmd(b"AUTHENTICATE PLAIN AHUwQGV4YW1wbGUudGVzdABpbWFwLXRlc3QtcHc=")
    assert tagged.startswith(b"t2 NO [PRIVACYREQUIRED]")
    r.close()


def test_starttls_then_login_with_imaplib(strict_server: Server) -> None:
    m = imaplib.IMAP4("127.0.0.1", strict_server.ports["imap"])
    m.starttls(ssl_context=trusting_context(strict_server))
    caps = m.capability()[1][0].split()
    assert b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps and b"AUTH=PLAIN" in caps
    assert m.login(USER, PASSWORD)[0] == "OK"
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_implicit_tls_port(strict_server: Server) -> None:
    m = imaplib.IMAP4_SSL("127.0.0.1", strict_server.ports["imaps"], ssl_context=trusting_context(strict_server))
    assert b"AUTH=PLAIN" in m.capability()[1][0].split()
    assert m.login(USER, PASSWORD)[0] == "OK"
    m.logout()


def test_plaintext_pipelined_behind_starttls_is_discarded(strict_server: Server) -> None:
    r = Raw(strict_server.ports["imap"])
    r.send(b"a STARTTLS\r\nb LOGIN " + USER.encode() + b" " + PASSWORD.encode() + b"\r\n")
    assert r.line().startswith(b"a OK")
    r.sock = trusting_context(strict_server).wrap_socket(r.sock, server_hostname="mail.example.test")
    r.buf = b""
    # the injected LOGIN never ran: we are still not authenticated
    untagged, tagged = r.cmd(b"SELECT INBOX")
    assert tagged.startswith(b"t1 BAD")
    r.close()


def test_starttls_twice_is_bad(strict_server: Server) -> None:
    m = imaplib.IMAP4("127.0.0.1", strict_server.ports["imap"])
    m.starttls(ssl_context=trusting_context(strict_server))
    with pytest.raises(imaplib.IMAP4.error, match="TLS already active"):
        m._simple_command("STARTTLS")
    m.logout()


def test_logout_over_tls_closes_the_connection(strict_server: Server) -> None:
    r = Raw(strict_server.ports["imaps"], tls=trusting_context(strict_server))
    untagged, tagged = r.cmd(b"LOGOUT")
    assert untagged[0].startswith(b"* BYE") and b"OK" in tagged
    assert r.closed_by_server(3)
