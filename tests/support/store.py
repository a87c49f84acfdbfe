"""Helpers for the store unit tests: a second store on the same Maildirs, resolve
Deferreds (the ``store`` fixture runs its workers inline), deliver directly, and
workers whose results reach the reactor only when a test lets them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite.handoff import BodyFile
from mailsuite.store.maildir import deliver_copies
from mailsuite.store.mailstore import MaildirStore
from mailsuite.workers import IWorkers, InlineWorkers

ACCOUNT = "alice@example.test"


def same_store(store: MaildirStore, linger: float = 30.0) -> MaildirStore:
    """A second store object on the same Maildirs, with the same workers, change hub
    and clock (another part of the same process)."""
    return MaildirStore(store.mail_dir, store.workers, store.hub, store.reactor, linger=linger)


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


@implementer(IWorkers)
class HeldWorkers(InlineWorkers):
    """Workers that do the work at once but, while ``holding``, keep its result from
    the reactor until :meth:`release`: the moment when a worker thread has finished
    (the folder's disk state changed) and the reactor has not yet run its callback."""

    def __init__(self) -> None:
        self.holding = False
        self.held: list[tuple[defer.Deferred, Any]] = []

    def run(self, f: Any, *args: Any, **kwargs: Any) -> defer.Deferred:
        done = super().run(f, *args, **kwargs)
        if not self.holding:
            return done
        out: list[Any] = []
        done.addBoth(out.append)
        d: defer.Deferred = defer.Deferred()
        self.held.append((d, out[0]))
        return d

    def release(self) -> None:
        """Stop holding; deliver the held results in order."""
        self.holding = False
        while self.held:
            d, result = self.held.pop(0)
            d.callback(result)


@implementer(IWorkers)
class SlowSyncWorkers(InlineWorkers):
    """Workers that do the work at once, except the folders' fsync of cur/
    (``FolderDisk.sync_names``): that waits, as a slow disk would, until
    :meth:`finish_syncs`.  Shows which operations wait for the disk and which may
    run meanwhile."""

    def __init__(self) -> None:
        self.syncs: list[tuple[defer.Deferred, Any, tuple]] = []

    def run(self, f: Any, *args: Any, **kwargs: Any) -> defer.Deferred:
        if getattr(f, "__name__", "") == "sync_names":
            d: defer.Deferred = defer.Deferred()
            self.syncs.append((d, f, args))
            return d
        return super().run(f, *args, **kwargs)

    def finish_syncs(self) -> None:
        while self.syncs:
            d, f, args = self.syncs.pop(0)
            d.callback(f(*args))
