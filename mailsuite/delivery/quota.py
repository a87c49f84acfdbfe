"""Mailbox quotas: the one decision whether a message may still enter an account, and
the delivery filter that applies it to every local copy.

The limits come from the directory (:class:`~mailsuite.directory.interface.Account`:
``quota`` in bytes, ``quota_messages``; users file ``:quota=BYTES:quota_messages=N``,
LDAP ``[directory.ldap] quota_attribute`` / ``quota_messages_attribute``); what the
account stores now comes from :mod:`mailsuite.store.usage`.  One quota root per
account (IMAP's root ``""``) covers all its folders.

Who asks :meth:`Quotas.refusal`, and what the answer becomes:

* SMTP RCPT (``mailsuite.smtp.policy``): an account already full (not even a
  one-octet message fits) gets ``452 4.2.2``.  RFC 5321 4.5.3.1.10 asks for a
  temporary answer to a full mailbox at RCPT (a 552 there is to be read as 452 by
  clients anyway), and RFC 3463 X.2.2 "mailbox full" is "a persistent transient
  failure": the user may delete mail.
* every local copy (:class:`QuotaFilter`, the last delivery filter: SMTP's fast path
  at the end of DATA, the queue's local copies and retries, DSNs): a message that
  would take the account over its limit is deferred, ``4.2.2`` (the fast path answers
  ``452 4.2.2`` at DATA; the queue keeps trying and bounces when the message expires,
  as for any deferral); a message that could never fit, larger than the whole quota
  (or more messages than the whole count), is refused ``5.2.2`` (the fast path
  answers ``552 5.2.2``, "exceeded storage allocation", RFC 5321 4.2.2; the queue
  bounces it at once), since waiting cannot help.
* IMAP APPEND and COPY (``mailsuite.imap.commands``): ``NO [OVERQUOTA]`` (RFC 9208
  4.3); MOVE within an account changes no usage and is never refused.
* POP3 only reads and deletes: unaffected.

The check and the write are not one atomic step (as with Dovecot's Maildir++ quota):
two deliveries racing past the check can together overshoot by one message each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.delivery.local import IDeliveryFilter, LocalCopy
from mailsuite.directory.interface import Account, DirectoryUnavailable, IDirectory
from mailsuite.handoff import BodyFile, Envelope
from mailsuite.store.maildir import account_dir
from mailsuite.store.usage import Usage, UsageCounter
from mailsuite.workers import IWorkers

log = Logger(namespace="mailsuite.quota")

FULL = "4.2.2"  # RFC 3463: mailbox full (persistent transient)
NEVER_FITS = "5.2.2"  # the same, permanent: this message is larger than the quota


@dataclass(frozen=True)
class Limits:
    """An account's limits; None: no limit on that resource."""

    storage: int | None = None  # bytes
    messages: int | None = None

    @classmethod
    def of(cls, account: Account | None) -> "Limits":
        if account is None:
            return cls()
        return cls(account.quota, account.quota_messages)

    def __bool__(self) -> bool:
        return self.storage is not None or self.messages is not None


@dataclass(frozen=True)
class Refusal:
    status: str  # FULL or NEVER_FITS
    text: str


def judge(limits: Limits, usage: Usage, size: int, count: int) -> Refusal | None:
    """May ``count`` more messages of ``size`` octets in all enter an account using
    ``usage`` under ``limits``?  None if so."""
    if limits.storage is not None and size > limits.storage or limits.messages is not None and count > limits.messages:
        return Refusal(NEVER_FITS, "Message exceeds the mailbox quota")
    if limits.storage is not None and usage.bytes + size > limits.storage:
        return Refusal(FULL, "Mailbox full (storage quota exceeded)")
    if limits.messages is not None and usage.messages + count > limits.messages:
        return Refusal(FULL, "Mailbox full (message count quota exceeded)")
    return None


class Quotas:
    """Limits from the directory, usage from the store; the blocking counting runs in
    the worker pool."""

    def __init__(self, directory: IDirectory, mail_dir: Path, workers: IWorkers,
                 counter: UsageCounter | None = None) -> None:
        self.directory = directory
        self.mail_dir = mail_dir
        self.workers = workers
        self.counter = counter if counter is not None else UsageCounter()

    def usage(self, account: str) -> "defer.Deferred[Usage]":
        return self.workers.run(self.counter.usage, account_dir(self.mail_dir, account))

    async def limits(self, account: str) -> Limits:
        return Limits.of(await self.directory.account(account))

    async def refusal(self, account: str, size: int = 1, count: int = 1,
                      limits: Limits | None = None) -> Refusal | None:
        """Why ``count`` messages of ``size`` octets may not enter ``account``, or None.
        The defaults ask whether the account is full (not even one octet fits).
        Fails with DirectoryUnavailable when the limits cannot be read."""
        if limits is None:
            limits = await self.limits(account)
        if not limits:  # no quota: no counting either
            return None
        return judge(limits, await self.usage(account), size, count)


@implementer(IDeliveryFilter)
class QuotaFilter:
    """The quota check on every local copy; put it last, after Sieve (a copy Sieve
    discards or redirects takes no room)."""

    name = "quota"

    def __init__(self, quotas: Quotas) -> None:
        self.quotas = quotas

    async def _check(self, envelope: Envelope, body: BodyFile, copy: LocalCopy) -> None:
        size = body.size + sum(len(h) for h in copy.headers)
        try:
            refusal = await self.quotas.refusal(copy.account, size)
        except DirectoryUnavailable as e:
            log.warn("delivery: {qid}: quota of {account} unknown, deferred: {why}", qid=envelope.queue_id,
                     account=copy.account, why=str(e))
            copy.defer("directory unavailable for the quota check", "4.4.3")
            return
        if refusal is None:
            return
        log.info("delivery: {qid}: {account} over quota ({status}): {size} octets", qid=envelope.queue_id,
                 account=copy.account, status=refusal.status, size=size)
        if refusal.status == NEVER_FITS:
            copy.reject(refusal.text, NEVER_FITS)
        else:
            copy.defer(refusal.text, FULL)

    def filter_copy(self, envelope: Envelope, body: BodyFile, copy: LocalCopy) -> Any:
        return defer.ensureDeferred(self._check(envelope, body, copy))
