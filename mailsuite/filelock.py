"""Exclusive locks between processes, and between machines that share the tree.

One ``flock`` per lock file, held by an open descriptor for as long as the holder
lives: a process that dies (kill -9 included) releases it with its descriptors, so
no lock outlives its holder.  On NFSv4 Linux maps ``flock`` to POSIX byte-range
locks, which the server arbitrates, so a node on another machine sees it too (mount
without ``local_lock=flock``/``all``, which would keep locks local to the client).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path


def try_lock(path: Path) -> int | None:
    """A descriptor holding the exclusive lock on ``path`` (created if missing), or
    None when another open file holds it (in this process or any other)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def lock_wait(path: Path) -> int:
    """A descriptor holding the exclusive lock on ``path`` (created if missing),
    waiting for another holder to let go (blocking: call it from the worker pool)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
