"""What this process does in the process model of ``[server] processes``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProcessRole:
    """``single``: everything in one process (``processes = 1``).  ``parent``: binds the
    listeners, runs the relay queue (retries; a worker makes the first attempt of what
    it spooled) and the housekeeping, starts the workers.
    ``worker``: serves the protocols on the parent's sockets."""

    kind: str = "single"
    index: int = 0  # worker number, 1..count; 0 for the parent or a single process
    count: int = 1  # workers in all
    channel: Any = None  # worker: the hand-over line to the parent (ParentChannel)

    @property
    def owns_state(self) -> bool:
        """Runs the queue and cleans what a crash left (incoming/, Maildir tmp/): one
        process only, or a worker's restart would remove another worker's files."""
        return self.kind != "worker"


SINGLE = ProcessRole()
PARENT = ProcessRole("parent")


def WorkerRole(index: int, count: int, channel: Any) -> ProcessRole:
    return ProcessRole("worker", index, count, channel)
