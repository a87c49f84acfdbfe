"""Where an accepted message goes: straight into local Maildirs, or into the queue.

The :class:`Dispatcher` is the :class:`~mailsuite.handoff.IMessageSink` the front ends
hand every message to.  A message whose recipients are all local is delivered at once
through :class:`~mailsuite.delivery.local.ILocalDelivery` (each copy fsynced) before
the SMTP server may answer 250 (the fast path); a message with any remote recipient
goes to the queue's sink as a whole, and the queue delivers its local and remote
parts from there (DESIGN.md: the queue is the only interface between receiving and
delivering).

Fast-path answers, from the per-account results of local delivery:

* every copy delivered (or discarded by a filter): "delivered";
* nothing delivered: a temporary failure if any copy failed temporarily (the client
  retries the whole message), else a permanent one (the client bounces it);
* some delivered, some not: the message is accepted, and the accounts still to do go
  to the queue, which delivers them through the same local delivery again (retrying
  a temporary failure, bouncing a permanent one with a DSN).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from mailsuite.delivery.local import TEMPORARY, CopyResult, ILocalDelivery
from mailsuite.metrics import NULL as NULL_METRICS
from mailsuite.handoff import (BodyFile, Envelope, IMessageSink, PermanentFailure, TemporaryFailure, discard_body,
                               temporary_failure)


@implementer(IMessageSink)
class Dispatcher:
    def __init__(self, local: ILocalDelivery, queue: IMessageSink, metrics: Any = None) -> None:
        self.local = local
        self.queue = queue
        self.metrics = metrics if metrics is not None else NULL_METRICS

    def accept(self, envelope: Envelope, body: BodyFile) -> defer.Deferred:
        """Fires with "delivered" or "queued" once the message is durable; fails with
        TemporaryFailure or PermanentFailure otherwise.  ``body`` is consumed either way."""
        if envelope.forwards or any("SUCCESS" in notify for notify, _ in envelope.rcpt_dsn.values()):
            # The queue takes a body in memory as well as on disk (it writes it once).
            # A recipient asking for a success DSN (RFC 3461 NOTIFY=SUCCESS) goes there
            # too: the queue is what writes DSNs.
            return self.queue.accept(envelope, body)
        started = time.perf_counter()
        d = self.local.deliver(envelope, body)

        def delivered(results: dict[str, CopyResult]) -> Any:
            failed = {account: r for account, r in results.items() if not r.ok}
            if not failed:
                self.metrics.local_delivery(time.perf_counter() - started)
                discard_body(body)
                return "delivered"
            if len(failed) == len(results):
                discard_body(body)
                temporary = [r for r in failed.values() if r.status == TEMPORARY]
                first = (temporary or list(failed.values()))[0]
                texts = "; ".join(f"{a}: {r.text}" for a, r in failed.items())
                cls = TemporaryFailure if temporary else PermanentFailure
                raise cls(texts, first.dsn, first.text)
            # Some copies are made: the rest must not make the client send it again.
            rest = replace(envelope, mailboxes={a: envelope.mailboxes[a] for a in failed})
            return self.queue.accept(rest, body).addCallback(lambda _: "delivered, partly queued")

        def not_written(f: Any) -> None:
            discard_body(body)
            if f.check(TemporaryFailure, PermanentFailure):
                return f
            raise temporary_failure(f.value)

        return d.addCallbacks(delivered, not_written)
