"""The spool as a worker process sees it: write the message, tell the parent.

With ``[server] processes`` above 1 the relay queue runs in the parent only (one
runner, so no message is attempted twice at once).  A worker's dispatcher hands a
message with remote recipients to :class:`SpoolWriter`: the envelope and body are
written and fsynced exactly as the queue manager would, the 250 may go out, and one
``queued <id>`` line asks the parent to deliver it.  If that line is lost (the worker
dies right after the fsync), the message waits in the spool for the parent's next
start-up scan: delayed, never lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from mailsuite.handoff import BodyFile, Envelope, IMessageSink
from mailsuite.queue import spool
from mailsuite.queue.scheduler import record_from_envelope
from mailsuite.queue.spool import SpoolPaths


@implementer(IMessageSink)
class SpoolWriter:
    def __init__(self, queue_dir: Path, channel: Any, workers: Any) -> None:
        self.paths = SpoolPaths(queue_dir)
        self.channel = channel
        self.workers = workers  # mailsuite.workers.IWorkers, for the spool's fsyncs

    def accept(self, envelope: Envelope, body: BodyFile) -> defer.Deferred:
        rec = record_from_envelope(envelope, body.size, body.lines)

        def written(_: object) -> str:
            self.channel.queued(rec.id)
            return "queued"

        return spool.write_durably(self.paths, rec, body, self.workers).addCallback(written)
