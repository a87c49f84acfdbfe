"""DNS block lists on the MX port ([smtp] dnsbl, dnswl, dnsbl_check_at), against a
real twisted.names server on loopback and a real mailsuite, with smtplib clients
connecting from different loopback source addresses (127.0.0.1 listed, 127.0.0.3
not, 127.0.0.4 listed and allow-listed)."""

from __future__ import annotations

import smtplib
import socket
from pathlib import Path
from typing import Iterator

import pytest

from mailsuite.mailauth.dnsbl import reverse_name
from tests.support.server import Server, make_server
from tests.support.relay import DNS

ZONE = {
    "1.0.0.127.bl.test": {"A": ["127.0.0.2"], "TXT": ["Listed for spam, see https://bl.test/127.0.0.1"]},
    "4.0.0.127.bl.test": {"A": ["127.0.0.2"]},
    "4.0.0.127.wl.test": {"A": ["127.0.10.1"]},
    # A list answering with an error code (query refused) does not list anyone.
    "3.0.0.127.bl.test": {"A": ["127.255.255.254"]},
    "1.0.0.127.slow.test": {"TIMEOUT": True},
}


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[DNS]:
    d = DNS(tmp_path / "dns", ZONE)
    yield d
    d.stop()


def server(tmp_path: Path, dns: DNS, at: str, lists: list[str] | None = None) -> Server:
    return make_server(
        tmp_path / f"srv-{at}",
        server={"relay_networks": ["10.99.0.0/16"], "postmaster": "alice@example.test"},
        dns={"nameservers": [dns.server], "timeout": 1.0},
        smtp={"dnsbl": lists or ["slow.test", "bl.test"], "dnswl": ["wl.test"], "dnsbl_check_at": at,
              "check_authentication": False},
    ).start()


def raw_session(srv: Server, source: str, lines: list[bytes]) -> list[bytes]:
    """Connect from ``source``, read the greeting, send each line, read each reply."""
    with socket.create_connection(("127.0.0.1", srv.ports["smtp"]), timeout=10, source_address=(source, 0)) as s:
        f = s.makefile("rb")
        out = [f.readline()]
        for line in lines:
            s.sendall(line + b"\r\n")
            out.append(f.readline())
        return out


def test_reverse_names() -> None:
    assert reverse_name("192.0.2.1") == "1.2.0.192"
    assert reverse_name("2001:db8::1").startswith("1.0.0.0.") and reverse_name("2001:db8::1").endswith(".8.b.d.0.1.0.0.2")
    assert reverse_name("nonsense") is None


def test_listed_client_is_refused_at_the_greeting_with_the_lists_reason(tmp_path: Path, dns: DNS) -> None:
    srv = server(tmp_path, dns, "connect")
    try:
        greeting, ehlo, mail, quit_ = raw_session(srv, "127.0.0.1", [b"EHLO x.test", b"MAIL FROM:<a@x.test>", b"QUIT"])
        assert greeting.startswith(b"554 5.7.1 ") and b"blocked using bl.test" in greeting
        assert b"Listed for spam, see https://bl.test/127.0.0.1" in greeting
        assert ehlo.startswith(b"503 5.7.1") and mail.startswith(b"503 5.7.1")
        assert quit_.startswith(b"221")
        # A slow list did not block the answer (treated as not listing), and is logged.
        assert "dnsbl: slow.test not answering" in srv.log()
        # Not listed, and listed but allow-listed: a normal session.
        for source in ("127.0.0.3", "127.0.0.4"):
            with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], source_address=(source, 0), timeout=10) as s:
                s.sendmail("a@x.test", ["bob@example.test"], b"Subject: hi\r\n\r\nhi\r\n")
    finally:
        srv.stop()


def test_at_rcpt_a_listed_client_may_still_write_to_postmaster(tmp_path: Path, dns: DNS) -> None:
    srv = server(tmp_path, dns, "rcpt", lists=["bl.test"])
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as s:
            assert s.ehlo()[0] == 250
            assert s.mail("a@x.test")[0] == 250
            code, text = s.rcpt("bob@example.test")
            assert code == 554 and b"5.7.1" in text and b"blocked using bl.test" in text
            assert s.rcpt("postmaster@example.test")[0] == 250
            assert s.data(b"Subject: please delist me\r\n\r\nhi\r\n")[0] == 250
    finally:
        srv.stop()
