"""Test doubles for the seams the protocol tests drive in process (StringTransport)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

from twisted.cred import error
from twisted.internet import defer


def _named(name: str) -> Any:
    return SimpleNamespace(name=name)


class FakePortal:
    """A cred portal: ``check(username, password)`` (bytes) decides a login, ``avatar``
    builds the avatar from the username; with ``error`` every login fails with it
    (a directory that is down, a checker that breaks)."""

    def __init__(self, check: Callable[[bytes, bytes], bool] = lambda user, pw: pw == b"pw",
                 avatar: Callable[[str], Any] = _named, error: Exception | None = None) -> None:
        self.check = check
        self.avatar = avatar
        self.error = error

    def login(self, credentials: Any, mind: Any, *interfaces: Any) -> defer.Deferred:
        if self.error is not None:
            return defer.fail(self.error)
        if not self.check(credentials.username, credentials.password):
            return defer.fail(error.UnauthorizedLogin())
        return defer.succeed((interfaces[0], self.avatar(credentials.username.decode()), lambda: None))
