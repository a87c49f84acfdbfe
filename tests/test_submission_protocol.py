"""The SMTP protocol with a fake transport: AUTH answers for the failures a real
server can hardly be made to produce (a broken portal, a directory that is down)."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import task
from twisted.internet.testing import StringTransport

from mailsuite.auth.throttle import AuthThrottle
from mailsuite.config import LimitsConfig, SubmissionConfig
from mailsuite.directory.interface import DirectoryUnavailable
from mailsuite.smtp.policy import Policy
from mailsuite.smtp.server import SMTPFactoryConfig, SMTPServerFactory
from tests.support.fakes import FakePortal
from tests.support.smtp import plain


def session(error: Exception, tmp_path: Path) -> tuple[StringTransport, AuthThrottle]:
    throttle = AuthThrottle(LimitsConfig(), task.Clock())
    conf = SMTPFactoryConfig(
        hostname="mail.example.test", service=SubmissionConfig(),
        policy=Policy(directory=None, domains=("example.test",), relay_networks=()),  # type: ignore[arg-type]
        dispatcher=None, incoming_dir=tmp_path, portal=FakePortal(error=error),  # type: ignore[arg-type]
        submission=True, allow_plaintext_auth=True, throttle=throttle,
    )
    proto = SMTPServerFactory(conf).buildProtocol(None)
    transport = StringTransport(peerAddress=type("Peer", (), {"host": "192.0.2.9"})())
    proto.makeConnection(transport)
    proto.dataReceived(b"EHLO client.test\r\nAUTH PLAIN " + plain("alice@example.test", "pw").encode() + b"\r\n")
    return transport, throttle


def last_reply(transport: StringTransport) -> bytes:
    return transport.value().rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]


def test_broken_portal_gives_a_temporary_answer_and_counts_no_failure(tmp_path: Path) -> None:
    transport, throttle = session(RuntimeError("bug"), tmp_path)
    assert last_reply(transport) == b"454 4.7.0 Temporary authentication failure"
    assert throttle._entries == {}


def test_directory_down_gives_a_temporary_answer_and_counts_no_failure(tmp_path: Path) -> None:
    transport, throttle = session(DirectoryUnavailable("ldap down"), tmp_path)
    assert last_reply(transport) == b"454 4.7.0 Temporary authentication failure"
    assert throttle._entries == {}
