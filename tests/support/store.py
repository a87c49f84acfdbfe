"""Helpers for the store unit tests: run the worker pool inline, resolve Deferreds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from mailsuite.store.maildir import BodyFile, deliver_copies

ACCOUNT = "alice@example.test"


def inline_run(f: Any, *args: Any, **kwargs: Any) -> defer.Deferred:
    return defer.maybeDeferred(f, *args, **kwargs)


def resolve(d: defer.Deferred) -> Any:
    """The result of a Deferred that has fired (workers run inline); raise its error."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred did not fire"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def deliver(mail_dir: Path, text: bytes, account: str = ACCOUNT) -> str:
    body = mail_dir.parent / "body.tmp"
    body.write_bytes(text)
    return deliver_copies(mail_dir, {account: b""}, BodyFile(str(body), len(text), text.count(b"\n")))[account]
