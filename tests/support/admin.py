"""A running mailsuite set up for the admin page tests: alice is an admin, a local DNS
server publishes some of example.test's records, and one message waits in the queue
(its peer answers 451) so the queue page has something to show."""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.relay import Script, relay_server
from tests.support.server import Server
from tests.support.waiting import wait_for

ADMIN, ADMIN_PW = "alice@example.test", "alice-pw"


@dataclass
class AdminSetup:
    server: Server
    peer: Any
    script: Script
    dns: Any


def send_queued(server: Server, subject: str = "waiting") -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.sendmail("bob@example.test", ["someone@remote.test"], f"Subject: {subject}\r\n\r\nbody\r\n".encode())


@pytest.fixture
def admin_setup(server_factory, peers, dns_factory):  # type: ignore[no-untyped-def]
    script = Script(rcpt=lambda a: "451 4.7.1 greylisted, come back later")
    peer = peers(script)
    dns = dns_factory({
        "example.test": {"MX": [[10, "mail.example.test"]], "TXT": ["v=spf1 mx -all"]},
        "_dmarc.example.test": {"TXT": ["v=DMARC1; p=none"]},
    })
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, backoff_min=3600, backoff_max=3600,
                       dns_servers=[dns.server])
    srv.sections.setdefault("http", {}).update(admins=[ADMIN])
    srv.start()
    send_queued(srv)
    wait_for(lambda: "status=deferred" in srv.log(), what="the message deferred", server=srv)
    return AdminSetup(srv, peer, script, dns)
