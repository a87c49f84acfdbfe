"""Durability: the one place that writes files atomically and calls fsync.

DESIGN.md rule 1 (nothing acknowledged is lost) rests on two steps done in the right
order: the data of a file reaches the disk (``fsync`` of the file) before its name
does (``rename``, then ``fsync`` of the folder that holds the name).  Every writer in
mailsuite does it through these functions, so each rule is written once:

* :func:`atomic_write`: temp file in the same folder, write all, fsync, rename over
  the target, fsync the folder.  Readers see the old or the new content, never a
  part; after it returns, a crash keeps the new content.  Used for the spool's
  envelopes, uid lists, keywords, the index, subscriptions and the users file.
* :func:`write_synced`: write a new file under its final name and fsync it (for a file
  nobody reads before a later atomic step names it, e.g. a spool body before its
  envelope), and :func:`copy_synced` for a message copied into a new file (Maildir
  delivery in tmp/, before its rename into new/ and :func:`fsync_dir`).
* :func:`fsync_file` / :func:`fsync_dir`: make a file's data, or a folder's names
  (after rename, link, unlink), durable.

Everything here blocks: the reactor calls it through the worker pool.  Nothing else
in mailsuite calls ``os.fsync`` (``tests/test_layering.py`` checks).
"""

from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path
from typing import Union

StrPath = Union[str, "os.PathLike[str]"]

_tmp_seq = itertools.count()


NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(error: BaseException | None) -> bool:
    """Did ``error``, or what it was raised from, come from a full disk or quota?  That
    is always a temporary failure (SMTP 452 4.3.1, IMAP NO [UNAVAILABLE]): it passes
    once space is freed, and nothing was kept half-written."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def fsync_dir(path: StrPath) -> None:
    """Make the names in a folder durable (after a rename, link or unlink in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: StrPath) -> None:
    """Make a file's content durable (a file written by someone else, e.g. a body
    streamed to disk by the SMTP server, before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_fd(fd: int) -> None:
    """fsync an open file: for writers that append in place (a uid list's new lines)."""
    os.fsync(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def temp_name(path: Path) -> Path:
    """A temp file next to ``path``, unique across processes and threads; its name
    ends in ``.tmp`` so that a crash's leftover is recognised and removed."""
    return path.with_name(f"{path.name}.{os.getpid()}.{next(_tmp_seq)}.tmp")


def write_synced(path: StrPath, data: bytes, mode: int = 0o600, exclusive: bool = False) -> None:
    """Create (or truncate) ``path``, write ``data`` and fsync it; no rename, no folder
    fsync (the caller's next atomic step makes the name durable)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_synced(fd: int, prefix: bytes, data: bytes | None, src: StrPath | None, size: int) -> None:
    """Write ``prefix`` then the message (``data`` in memory, else ``size`` bytes of
    the file ``src``, copied in the kernel) to the open ``fd``, and fsync it."""
    copy_into(fd, prefix, data, src, size)
    os.fsync(fd)


def copy_into(fd: int, prefix: bytes, data: bytes | None, src: StrPath | None, size: int) -> None:
    """:func:`copy_synced` without the fsync (for a file made durable later)."""
    if data is not None:
        write_all(fd, prefix + data)
    else:
        write_all(fd, prefix)
        assert src is not None
        with open(src, "rb") as f:
            offset = 0
            while offset < size:
                sent = os.sendfile(fd, f.fileno(), offset, size - offset)
                if sent == 0:
                    raise OSError(errno.EIO, f"{src} is shorter than expected")
                offset += sent


def atomic_write(path: StrPath, data: bytes, mode: int = 0o600, sync: bool = True, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably: a temp file in the same
    folder, write all, fsync, rename over ``path``, fsync the folder.

    For a rebuildable file (index, cache) that may be lost or be old after a crash but
    must never be read half-written, ``sync_dir=False`` skips the folder fsync and
    ``sync=False`` the file's too.  The temp file is removed if any step fails.
    """
    path = Path(path)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(path.parent)
