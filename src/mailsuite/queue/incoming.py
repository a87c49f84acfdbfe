"""A message while it is being received: a file under ``<queue_dir>/incoming/``.

The SMTP server streams the body into it (so a 50 MB message never sits in memory),
then hands it to the dispatcher.  Files left here by a crash were never acknowledged;
:func:`clean_incoming` removes them at start.
"""

from __future__ import annotations

import os
from pathlib import Path

from mailsuite.store.maildir import BodyFile


class IncomingMessage:
    def __init__(self, incoming_dir: Path, queue_id: str) -> None:
        self.path = str(incoming_dir / queue_id)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.size = 0
        self.lines = 0

    def write(self, data: bytes) -> None:
        """Append LF-terminated body bytes.  Page-cache writes are quick enough for the
        reactor thread; the fsync that makes the message durable happens later, in the
        worker pool, on the copy that is kept."""
        if self._fd is None or not data:
            return
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += len(data)
        self.lines += data.count(b"\n")

    def finish(self) -> BodyFile:
        self._close()
        return BodyFile(self.path, self.size, self.lines)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        self._close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def clean_incoming(incoming_dir: Path) -> int:
    """Remove files of messages whose receipt never completed; return how many."""
    os.makedirs(incoming_dir, mode=0o700, exist_ok=True)
    n = 0
    for entry in os.scandir(incoming_dir):
        if entry.is_file():
            os.unlink(entry.path)
            n += 1
    return n
