"""The relay queue as a worker process runs it: first attempts here, the rest in the parent.

With ``[server] processes`` above 1 the parent's :class:`QueueManager` owns the spool:
its start-up scan, retries, ``mailsuite queue`` requests and TLS reports.  A worker's
dispatcher hands a message with remote recipients to :class:`WorkerQueue`, which
writes and fsyncs it exactly as the parent's queue would and makes its first
delivery attempt at once, with the body still in memory, on the worker's own core.
The parent hears of it over the worker's hand-over line (descriptor 4; read by
process/supervisor.py), one line each:

``trying <id>``
    written after the fsync, before the 250: the message is in the spool and this
    worker is attempting it.  The parent leaves it alone until one of the next two.
``done <id>``
    the attempt finished the message (delivered or bounced, DSNs queued); its files
    are being removed.
``released <id>``
    recipients are still waiting (the envelope on disk says until when): the parent
    takes the message over for the retries.

So exactly one process attempts a message at a time, and no message is left without
one: when a worker dies (kill -9 included) the parent takes over every message it had
not handed back, once the process is gone, reading where each stands from the spool.
A worker killed between a remote peer's 250 and its ``done`` line makes the parent send
that message again, as a single process killed at that moment would after its restart
(removing a sent message is not fsynced: queue/scheduler.py).  A ``trying`` line lost
to a kill between the fsync and the write leaves the message, never acknowledged, to
the parent's next start-up scan.

TLS-RPT results of the worker's sessions go to the parent as ``tlsrpt <json>``
(:class:`ForwardedTLSResults`): one file, one writer.

Why: the relay ran in the parent only, one core for every outbound session, and the
parent took ~0.85 ms of CPU per relayed message to read back the envelope and body
the worker had just written (bench/relay.py, 2 workers: 47-60% of a core at 500-740
msg/s), a ceiling that more cores would not lift.
"""

from __future__ import annotations

import json
import math
from typing import Any

from twisted.application import service
from twisted.internet import defer

from mailsuite.queue.scheduler import Entry, QueueManager


class ForwardedTLSResults:
    """Stands in for :class:`~mailsuite.queue.tlsrpt.TLSReports` in a worker: each
    result goes to the parent, whose TLSReports counts it."""

    sink: Any = None  # the parent's queue mails the reports

    def __init__(self, channel: Any) -> None:
        self.channel = channel

    def record(self, *args: Any) -> None:
        self.channel.tls_result(json.dumps(list(args)))

    def save_soon(self, force: bool = False) -> defer.Deferred:
        return defer.succeed(None)


class WorkerQueue(QueueManager):
    """A worker's queue: spool, first attempt, then ``done`` or ``released``."""

    owns_spool = False  # the admin pages read the spool and ask the parent instead

    def __init__(self, *args: Any, channel: Any, worker_count: int = 1, **kwargs: Any) -> None:
        # The metrics of the queue (size, oldest) are the parent's, which counts the
        # messages workers are attempting too.
        super().__init__(*args, watch_metrics=False, **kwargs)
        self.channel = channel
        # [relay] destination_concurrency is for the whole server: shared out.
        self.concurrency = max(1, math.ceil(self.cfg.destination_concurrency / max(1, worker_count)))

    def startService(self) -> None:
        # No queue lock, no spool scan, no control requests, no TLS reports: the
        # parent does those.  Nothing to wait for before accepting.  (At stop,
        # attempts still running get the grace period; whatever this worker has not
        # handed back is the parent's once the process has ended: worker_ended.)
        service.Service.startService(self)
        self.paths.make()
        self._mark_loaded()

    def _taken(self, qid: str) -> None:
        self.channel.trying(qid)

    def _finished(self, qid: str) -> None:
        self.channel.done(qid)

    def _after_attempt(self, entry: Entry) -> None:
        qid = entry.record.id
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        self.entries.pop(qid, None)
        self._recovered.discard(qid)
        self.channel.released(qid)

    def _schedule(self, entry: Entry) -> None:
        # Only accept() schedules here (the first attempt, at once); every later
        # attempt is the parent's.
        if entry.busy or entry.timer is not None and entry.timer.active():
            return
        self._after_attempt(entry)
