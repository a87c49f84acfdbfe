"""Local delivery, written once: one message into the Maildirs of local accounts.

Three callers use :class:`LocalDelivery` and nothing else writes a message into a
mailbox on delivery: the dispatcher's fast path (all recipients local, before the 250),
the queue's local copies of a message with remote recipients too (and its retries),
and bounces/DSNs to a local sender (they enter through the dispatcher like any
message).

The call sequence for one message (``deliver(envelope, body)``):

1. one :class:`LocalCopy` per local account in ``envelope.mailboxes``, with the header
   lines only that copy gets: ``Return-Path:`` and ``Delivered-To:``;
2. **the delivery filters, in order, per copy, before the store write.**  A filter
   provides :class:`IDeliveryFilter`; ``LocalDelivery(store, filters=[...])`` gets the
   list in ``service.py``.  What a filter may do to a copy:

   * prepend header lines (``copy.add_header(b"Authentication-Results: ...\\n")``):
     Authentication-Results, a DKIM-Signature, X-Spam-*;
   * choose the folder (``copy.folder = "Lists.twisted"``: Sieve ``fileinto``; a
     folder that does not exist yet is created, as Dovecot's
     ``lda_mailbox_autocreate``);
   * end the copy before the store: ``copy.discard()`` (Sieve ``discard``: counts as
     delivered), ``copy.reject(text)`` (Sieve ``reject``, an unknown user: permanent),
     ``copy.defer(text, "4.2.2")`` (quota exceeded, a script that cannot be read:
     temporary).  Filters after it do not run for that copy.

   Sieve's interpreter, the quota check, and header checks/additions are filters;
   they run in the reactor thread and may return a Deferred (blocking work, e.g.
   reading a script or summing a Maildir's size, goes through the worker pool).  A
   filter that raises defers that copy (4.3.0) with a log line: a bug never loses or
   rejects mail.
3. the store writes every remaining copy in one call (``MaildirStore.deliver``): each
   file fsynced and renamed into ``new/``, the folder fsynced; all or nothing: if one
   copy cannot be written, the ones made are removed again and the call fails with
   :class:`~mailsuite.handoff.TemporaryFailure`;
4. the result: account -> :class:`CopyResult` (delivered, discarded, temporary,
   permanent), which the dispatcher turns into the SMTP answer and the queue into the
   recipient's state (sent, deferred, bounced + DSN).

The queue asks for ``stable=True``: the copies are named after the queue id and
arrival time, so a delivery repeated after a crash (``check_existing``) finds the copy
already made and does not make a second one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from mailsuite.handoff import BodyFile, Envelope, temporary_failure
from mailsuite.store import names

log = Logger(namespace="mailsuite.delivery")

DELIVERED, DISCARDED, TEMPORARY, PERMANENT = "delivered", "discarded", "temporary", "permanent"


@dataclass(frozen=True)
class CopyResult:
    """What became of one local account's copy."""

    status: str  # delivered | discarded | temporary | permanent
    dsn: str  # RFC 3463 code, e.g. "2.0.0", "4.2.2", "5.7.1"
    text: str  # for the log line, the DSN, and (permanent, fast path) the SMTP reply
    folder: str = ""  # where it went (delivered)

    @property
    def ok(self) -> bool:
        """Delivered or discarded on purpose: nothing left to do for this recipient."""
        return self.status in (DELIVERED, DISCARDED)


@dataclass
class LocalCopy:
    """One local account's copy while the delivery filters look at it."""

    account: str  # the local account (its Maildir)
    rcpt: str  # the RCPT TO address that led to this account (ORCPT)
    headers: list[bytes] = field(default_factory=list)  # LF-terminated lines, in order, before the body
    folder: str = "INBOX"
    result: CopyResult | None = None  # set by a filter: the copy is not written

    def add_header(self, lines: bytes) -> None:
        """Prepend LF-terminated header lines to this copy (after Return-Path and
        Delivered-To and the lines earlier filters added)."""
        self.headers.append(lines)

    def discard(self, text: str = "discarded") -> None:
        self.result = CopyResult(DISCARDED, "2.0.0", text)

    def reject(self, text: str, dsn: str = "5.7.1") -> None:
        self.result = CopyResult(PERMANENT, dsn, text)

    def defer(self, text: str, dsn: str = "4.3.0") -> None:
        self.result = CopyResult(TEMPORARY, dsn, text)


class IDeliveryFilter(Interface):
    """A step every local copy passes before it is written (see the module docstring)."""

    name = Attribute("Short name for log lines, e.g. 'sieve', 'quota'.")

    def filter_copy(envelope: Envelope, body: BodyFile, copy: LocalCopy) -> "defer.Deferred[None] | None":
        """Look at (and change) ``copy``; may return a Deferred.  ``body`` is read-only:
        ``body.data`` when in memory, else the file at ``body.path`` (read it in the
        worker pool)."""


class ILocalDelivery(Interface):
    def deliver(envelope: Envelope, body: BodyFile, stable: bool = False,
                check_existing: bool = False) -> "defer.Deferred[dict[str, CopyResult]]":
        """Deliver ``body`` to every account in ``envelope.mailboxes``; fires with
        account -> :class:`CopyResult`, or fails with TemporaryFailure when the store
        could not write (then no copy was made).  ``body`` stays the caller's."""


def delivery_prefix(sender: str, account: str) -> bytes:
    """The header lines every local copy starts with (as Postfix's local(8) writes)."""
    return f"Return-Path: <{sender}>\nDelivered-To: {account}\n".encode("utf-8")


@implementer(ILocalDelivery)
class LocalDelivery:
    """See the module docstring.  ``store`` is the Maildir store (its ``deliver``)."""

    def __init__(self, store: Any, filters: Sequence[IDeliveryFilter] = ()) -> None:
        self.store = store
        self.filters = tuple(filters)

    def deliver(self, envelope: Envelope, body: BodyFile, stable: bool = False,
                check_existing: bool = False) -> defer.Deferred:
        copies = [
            LocalCopy(account, rcpt, [delivery_prefix(envelope.sender, account)])
            for account, rcpt in envelope.mailboxes.items()
        ]
        if not self.filters:  # the common case, without a coroutine per message
            return self._store(envelope, body, copies, stable, check_existing)
        d = defer.ensureDeferred(self._filter(envelope, body, copies))
        return d.addCallback(lambda _: self._store(envelope, body, copies, stable, check_existing))

    async def _filter(self, envelope: Envelope, body: BodyFile, copies: list[LocalCopy]) -> None:
        for copy in copies:
            for f in self.filters:
                if copy.result is not None:
                    break
                try:
                    await defer.maybeDeferred(f.filter_copy, envelope, body, copy)
                except Exception:  # noqa: BLE001 - a filter's bug defers, never loses mail
                    log.failure("delivery: {qid}: filter {name} failed for {account}",
                                qid=envelope.queue_id, name=f.name, account=copy.account)
                    copy.defer(f"delivery filter {f.name} failed")

    def _store(self, envelope: Envelope, body: BodyFile, copies: list[LocalCopy], stable: bool,
               check_existing: bool) -> defer.Deferred:
        results = {c.account: c.result for c in copies if c.result is not None}
        todo = [c for c in copies if c.result is None]
        if not todo:
            return defer.succeed(results)
        prefixes = {c.account: b"".join(c.headers) for c in todo}
        folders = {c.account: c.folder for c in todo if c.folder != "INBOX"}
        stable_base = names.stable_name(envelope.arrival, envelope.queue_id) if stable else None
        d = self.store.deliver(prefixes, body, stable_base, check_existing, folders=folders or None)

        def written(_: object) -> dict[str, CopyResult]:
            for c in todo:
                results[c.account] = CopyResult(DELIVERED, "2.0.0", "delivered to maildir", c.folder)
            return results

        def failed(f: Any) -> None:
            # DeliveryError, UnsafeName, OSError: nothing was written; the caller retries.
            raise temporary_failure(f.value)

        return d.addCallbacks(written, failed)
