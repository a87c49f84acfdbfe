"""The shared cred portal: the checker over the directory and the extensible realm."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.cred import credentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from zope.interface import Interface

from mailsuite.workers import InlineWorkers
from mailsuite.auth.portal import make_portal
from mailsuite.directory.files import FileDirectory
from mailsuite.directory.interface import Account
from tests.support.server import hashed


class IThing(Interface):
    pass


class IOther(Interface):
    pass


@pytest.fixture
def directory(tmp_path: Path) -> FileDirectory:
    (tmp_path / "users").write_text(f"alice@example.test:{hashed('alice-pw')}\n")
    (tmp_path / "aliases").write_text("")
    # Password checks run inline: Deferreds fire at once (no reactor in unit tests).
    return FileDirectory(tmp_path / "users", tmp_path / "aliases", ("example.test",), workers=InlineWorkers())


def outcome(d: defer.Deferred):  # type: ignore[no-untyped-def]
    out: list = []
    d.addBoth(out.append)
    assert out, "Deferred did not fire"
    return out[0]


def login(portal, user: bytes | str, password: bytes | str, iface=IThing):  # type: ignore[no-untyped-def]
    return outcome(portal.login(credentials.UsernamePassword(user, password), None, iface))


def test_login_gives_the_protocol_avatar(directory: FileDirectory) -> None:
    portal, realm = make_portal(directory)
    realm.register(IThing, lambda account: ("thing for", account.name))
    iface, avatar, logout = login(portal, b"alice@example.test", b"alice-pw")
    assert iface is IThing and avatar == ("thing for", "alice@example.test")
    logout()


def test_bytes_and_text_credentials_both_work(directory: FileDirectory) -> None:
    portal, realm = make_portal(directory)
    realm.register(IThing, lambda account: account)
    assert login(portal, "alice@example.test", "alice-pw")[1] == Account("alice@example.test")


@pytest.mark.parametrize(
    "user, password",
    [
        (b"alice@example.test", b"wrong"),
        (b"ghost@example.test", b"alice-pw"),
        (b"alice@example.test", b""),  # never reaches the backend (LDAP: unauthenticated bind)
        (b"", b"alice-pw"),
        (b"alice@example.test\x00", b"alice-pw"),
        (b"\xff\xfe", b"alice-pw"),  # not UTF-8
        (b"alice@example.test", b"\xff"),
    ],
)
def test_every_failure_is_the_same_unauthorized_login(directory: FileDirectory, user: bytes, password: bytes) -> None:
    portal, realm = make_portal(directory)
    realm.register(IThing, lambda account: account)
    failure = login(portal, user, password)
    assert failure.check(UnauthorizedLogin)


def test_a_protocol_without_a_registered_avatar_is_refused(directory: FileDirectory) -> None:
    portal, realm = make_portal(directory)
    realm.register(IThing, lambda account: account)
    assert login(portal, b"alice@example.test", b"alice-pw", IOther).check(NotImplementedError)


def test_avatar_factories_may_return_deferreds(directory: FileDirectory) -> None:
    portal, realm = make_portal(directory)
    realm.register(IThing, lambda account: defer.succeed(f"later:{account.name}"))
    assert login(portal, b"alice@example.test", b"alice-pw")[1] == "later:alice@example.test"


def test_account_gone_by_the_time_the_avatar_is_built(directory: FileDirectory) -> None:
    _portal, realm = make_portal(directory)
    realm.register(IThing, lambda account: account)
    assert outcome(realm.requestAvatar("ghost@example.test", None, IThing)).check(UnauthorizedLogin)
