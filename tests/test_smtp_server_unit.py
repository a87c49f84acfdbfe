"""The SMTP protocol over a StringTransport with a fake clock, for timing behaviour the
end-to-end tests cannot force (a delivery slower than the command timeout)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailsuite.config import SMTPConfig
from mailsuite.directory.files import FileDirectory
from mailsuite.handoff import PermanentFailure, TemporaryFailure
from mailsuite.workers import InlineWorkers
from mailsuite.smtp.policy import Policy
from mailsuite.smtp.server import SMTPFactoryConfig, SMTPServerFactory
from tests.support.server import hashed


class SlowDispatcher:
    """Accepts messages but only says 'durable' when the test fires the Deferred."""

    def __init__(self) -> None:
        self.pending: list[Deferred] = []

    def accept(self, envelope, body) -> Deferred:  # type: ignore[no-untyped-def]
        d: Deferred = Deferred()
        self.pending.append(d)
        return d


def connect(tmp_path: Path, dispatcher: SlowDispatcher, timeout: int = 10):  # type: ignore[no-untyped-def]
    (tmp_path / "users").write_text(f"alice@example.test:{hashed('pw')}\n")
    (tmp_path / "aliases").write_text("")
    directory = FileDirectory(tmp_path / "users", tmp_path / "aliases", ("example.test",), workers=InlineWorkers())
    policy = Policy(directory, ("example.test",), (ipaddress.ip_network("127.0.0.0/8"),))
    conf = SMTPFactoryConfig(
        hostname="mx.example.test",
        service=SMTPConfig(command_timeout=timeout, data_timeout=timeout),
        policy=policy,
        dispatcher=dispatcher,  # type: ignore[arg-type]
        incoming_dir=tmp_path,
        offer_auth=False,
    )
    proto = SMTPServerFactory(conf).buildProtocol(None)
    clock = Clock()
    proto.callLater = clock.callLater  # TimeoutMixin's timer
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 4000))
    proto.makeConnection(transport)
    return proto, transport, clock


def send_message(proto, transport) -> None:  # type: ignore[no-untyped-def]
    proto.dataReceived(b"EHLO c.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    proto.dataReceived(b"Subject: slow\r\n\r\nbody\r\n.\r\n")
    assert transport.value().endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    transport.clear()


def test_no_timeout_while_the_message_is_made_durable(tmp_path: Path) -> None:
    dispatcher = SlowDispatcher()
    proto, transport, clock = connect(tmp_path, dispatcher, timeout=10)
    send_message(proto, transport)
    clock.advance(60)  # the disk is very slow
    assert transport.value() == b""
    assert not transport.disconnecting
    dispatcher.pending[0].callback("delivered")
    assert transport.value().startswith(b"250 2.0.0 Ok: queued as ")


def test_command_timeout_runs_again_after_the_reply(tmp_path: Path) -> None:
    dispatcher = SlowDispatcher()
    proto, transport, clock = connect(tmp_path, dispatcher, timeout=10)
    send_message(proto, transport)
    dispatcher.pending[0].callback("delivered")
    transport.clear()
    clock.advance(9)
    assert transport.value() == b""
    clock.advance(2)
    assert transport.value().startswith(b"421 4.4.2 ")
    assert transport.disconnecting


def test_client_gone_during_delivery_leaves_no_timer(tmp_path: Path) -> None:
    dispatcher = SlowDispatcher()
    proto, transport, clock = connect(tmp_path, dispatcher, timeout=10)
    send_message(proto, transport)
    proto.connectionLost(None)
    dispatcher.pending[0].callback("delivered")
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("failure, reply", [
    (PermanentFailure("bob: rejected by sieve", "5.7.1", "not wanted here"), b"550 5.7.1 not wanted here\r\n"),
    (PermanentFailure("every copy failed"), b"554 5.3.0 Error: message not accepted\r\n"),
    (TemporaryFailure("bob: quota", "4.2.2", "mailbox full"), b"452 4.2.2 mailbox full\r\n"),  # RFC 5321 4.2.2
    # Local detail (paths, errno) stays in the log, never in the reply.
    (TemporaryFailure("ENOSPC /var/mail/x"), b"451 4.3.0 Error: local error in processing, try again later\r\n"),
    (RuntimeError("bug"), b"451 4.3.0 Error: local error in processing, try again later\r\n"),
])
def test_the_sinks_failure_decides_the_reply_after_data(tmp_path: Path, failure: Exception, reply: bytes) -> None:
    dispatcher = SlowDispatcher()
    proto, transport, clock = connect(tmp_path, dispatcher, timeout=10)
    send_message(proto, transport)
    dispatcher.pending[0].errback(failure)
    assert transport.value() == reply
    assert not transport.disconnecting
