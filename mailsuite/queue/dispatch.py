"""Where an accepted message goes: straight into local Maildirs, or into the spool.

A message whose recipients are all local is delivered at once (each copy fsynced)
before the SMTP server may answer 250; a message with any remote recipient is written
to the spool as a whole, and the queue delivers its local and remote parts from there
(DESIGN.md: the queue is the only interface between receiving and delivering).
"""

from __future__ import annotations

import os

from twisted.internet import defer
from zope.interface import Interface

from mailsuite.queue.envelope import Envelope
from mailsuite.store.maildir import BodyFile, MaildirStore


class TemporaryFailure(Exception):
    """Accepting the message failed in a way the client should retry (4xx)."""


class ISpool(Interface):
    def enqueue(envelope: Envelope, body: BodyFile) -> defer.Deferred:
        """Take ownership of ``body`` (move its file into the spool, or write its
        in-memory ``data`` there) and record ``envelope``, durably (file and directory
        fsynced), before the Deferred fires."""


def delivery_prefix(sender: str, mailbox: str) -> bytes:
    return f"Return-Path: <{sender}>\nDelivered-To: {mailbox}\n".encode("utf-8")


class Dispatcher:
    def __init__(self, store: MaildirStore, spool: ISpool | None = None) -> None:
        self.store = store
        self.spool = spool

    def accept(self, envelope: Envelope, body: BodyFile) -> defer.Deferred:
        """Fires with "delivered" or "queued" once the message is durable; fails with
        TemporaryFailure otherwise.  ``body`` is consumed either way."""
        if envelope.forwards:
            if self.spool is None:
                _unlink(body.path)
                return defer.fail(TemporaryFailure("relay queue is not running"))
            # The spool takes a body in memory as well as on disk (it writes it once).
            return self.spool.enqueue(envelope, body).addCallback(lambda _: "queued")
        prefixes = {box: delivery_prefix(envelope.sender, box) for box in envelope.mailboxes}
        d = self.store.deliver(prefixes, body)

        def done(result: object) -> object:
            if body.data is None:  # a body in memory never had a file (saves a syscall)
                _unlink(body.path)
            return result

        def failed(f):  # type: ignore[no-untyped-def]
            raise TemporaryFailure(str(f.value))

        d.addBoth(done)
        d.addCallbacks(lambda _: "delivered", failed)
        return d


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
