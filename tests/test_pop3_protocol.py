"""The POP3 protocol driven over a StringTransport: the temporary-failure answers and
the UPDATE-state bookkeeping that are hard to provoke with a real server."""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from mailsuite.auth.throttle import AuthRefused
from mailsuite.directory.interface import DirectoryUnavailable
from mailsuite.frontend import ConnectionCounts
from mailsuite.pop3.server import (
    MaildropLocks,
    POP3Account,
    POP3FactoryConfig,
    POP3Server,
    POP3ServerFactory,
)
from mailsuite.store.index import MessageRecord
from tests.support.fakes import FakePortal


@dataclass(frozen=True)
class Svc:
    max_connections_per_ip: int = 5
    idle_timeout: int = 600
    max_line_length: int = 2048
    max_errors: int = 20
    request_deadline: int = 300
    min_data_rate: int = 500


@dataclass
class FakeFolder:
    records: list[MessageRecord]
    uidvalidity: int = 7
    calls: list[tuple[str, Any]] = field(default_factory=list)
    expunge_fails: bool = False

    def messages(self) -> list[MessageRecord]:
        return self.records

    def open_message(self, uid: int) -> io.BytesIO:
        return io.BytesIO(b"Subject: %d\n\nbody\n" % uid)

    def store_flags(self, uids: list[int], flags: list[str], mode: str) -> defer.Deferred:
        self.calls.append(("flags", sorted(uids)))
        return defer.succeed([])

    def expunge(self, uids: list[int]) -> defer.Deferred:
        self.calls.append(("expunge", sorted(uids)))
        return defer.fail(OSError("disk gone")) if self.expunge_fails else defer.succeed(uids)

    def close(self) -> defer.Deferred:
        self.calls.append(("close", None))
        return defer.succeed(None)


class FakeStore:
    """An IAccountStore with one folder (or an error for opening it)."""

    def __init__(self, folder: FakeFolder | Exception) -> None:
        self.folder = folder
        self.name = ""

    def open(self, name: str) -> defer.Deferred:
        if isinstance(self.folder, Exception):
            return defer.fail(self.folder)
        return defer.succeed(self.folder)


class FakeThrottle:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.events: list[tuple[str, str]] = []

    def before_auth(self, ip: str, login: str) -> defer.Deferred:
        return defer.fail(AuthRefused(60)) if self.refuse else defer.succeed(None)

    def auth_failed(self, ip: str, login: str, proto: str = "") -> None:
        self.events.append(("failed", proto))

    def auth_succeeded(self, ip: str, login: str, proto: str = "") -> None:
        self.events.append(("ok", login))

    def is_refused(self, ip: str, login: str) -> bool:
        return False


def records(n: int) -> list[MessageRecord]:
    return [MessageRecord(i, f"b{i}:2,", frozenset(), 20, 0.0, 1) for i in range(1, n + 1)]


def connect(portal: Any = None, store: Any = None, throttle: Any = None,
            lock_dir: Path | None = None) -> tuple[POP3Server, StringTransport]:
    lock_dir = lock_dir or Path(tempfile.mkdtemp(prefix="pop3locks-"))
    store = store or FakeStore(FakeFolder(records(3)))

    def avatar(name: str) -> POP3Account:
        store.name = name
        return POP3Account(store)

    portal = portal or FakePortal(avatar=avatar)
    conf = POP3FactoryConfig("mail.test", Svc(), portal, throttle, None, True, False)
    factory = POP3ServerFactory(conf, ConnectionCounts(), MaildropLocks(lambda account: lock_dir / account))
    proto = factory.buildProtocol(None)
    proto.callLater = task.Clock().callLater  # type: ignore[method-assign]
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def talk(proto: POP3Server, transport: StringTransport, data: bytes) -> list[bytes]:
    transport.clear()
    proto.dataReceived(data)
    return transport.value().split(b"\r\n")[:-1]


def test_directory_unavailable_is_a_temporary_error() -> None:
    proto, t = connect(portal=FakePortal(error=DirectoryUnavailable("ldap down")))
    assert talk(proto, t, b"USER a@x.test\r\nPASS pw\r\n")[1].startswith(b"-ERR [SYS/TEMP]")
    assert not t.disconnecting


def test_maildrop_that_cannot_be_opened_is_a_temporary_error_and_unlocks() -> None:
    proto, t = connect(store=FakeStore(OSError("EIO")))
    assert talk(proto, t, b"USER a@x.test\r\nPASS pw\r\n")[1].startswith(b"-ERR [SYS/TEMP] Cannot open")
    assert proto.factory.locks.acquire("a@x.test")


def test_throttle_cool_down_answers_auth_and_closes() -> None:
    proto, t = connect(throttle=FakeThrottle(refuse=True))
    assert talk(proto, t, b"USER a@x.test\r\nPASS pw\r\n")[1].startswith(b"-ERR [AUTH] Too many")
    assert t.disconnecting


def test_throttle_hears_failures_and_successes() -> None:
    throttle = FakeThrottle()
    proto, t = connect(throttle=throttle)
    talk(proto, t, b"USER a@x.test\r\nPASS bad\r\nUSER a@x.test\r\nPASS pw\r\n")
    assert throttle.events == [("failed", "pop3"), ("ok", "a@x.test")]


def test_quit_marks_retrieved_seen_then_expunges_deleted() -> None:
    folder = FakeFolder(records(3))
    proto, t = connect(store=FakeStore(folder))
    talk(proto, t, b"USER a@x.test\r\nPASS pw\r\nRETR 1\r\nRETR 2\r\nDELE 2\r\nDELE 3\r\n")
    assert talk(proto, t, b"QUIT\r\n") == [b"+OK Logging out, 2 messages deleted."]
    assert folder.calls == [("flags", [1]), ("expunge", [2, 3]), ("close", None)]


def test_failed_expunge_at_quit_is_not_reported_as_success() -> None:
    folder = FakeFolder(records(2), expunge_fails=True)
    proto, t = connect(store=FakeStore(folder))
    talk(proto, t, b"USER a@x.test\r\nPASS pw\r\nDELE 1\r\n")
    assert talk(proto, t, b"QUIT\r\n") == [b"-ERR [SYS/TEMP] Some deleted messages could not be removed."]
    assert ("close", None) in folder.calls


def test_dropped_connection_marks_seen_but_deletes_nothing() -> None:
    folder = FakeFolder(records(2))
    proto, t = connect(store=FakeStore(folder))
    talk(proto, t, b"USER a@x.test\r\nPASS pw\r\nRETR 1\r\nDELE 2\r\n")
    proto.connectionLost(None)
    assert folder.calls == [("flags", [1]), ("close", None)]
    assert proto.factory.locks.acquire("a@x.test")


def test_too_many_errors_close_the_connection() -> None:
    proto, t = connect()
    replies = talk(proto, t, b"BOGUS\r\n" * 20)
    assert replies[-1] == b"-ERR Too many errors, closing." and t.disconnecting


def test_uidl_is_dovecot_format() -> None:
    proto, t = connect()
    talk(proto, t, b"USER a@x.test\r\nPASS pw\r\n")
    assert talk(proto, t, b"UIDL 2\r\n") == [b"+OK 2 0000000200000007"]


def test_config_refuses_a_pop3_line_limit_below_rfc_2449() -> None:
    from pathlib import Path

    import pytest

    from mailsuite import config

    with pytest.raises(config.ConfigError) as e:
        config.parse('[server]\ndomains = ["example.test"]\n[pop3]\nmax_line_length = 100\nlisten_tls = []\n',
                     Path("/tmp/x.toml"))
    assert any(p.startswith("pop3.max_line_length") for p in e.value.problems)
