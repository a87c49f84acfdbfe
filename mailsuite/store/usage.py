"""How much an account stores: bytes (the sum of its messages' sizes) and messages,
over all its folders.  What quota enforcement (:mod:`mailsuite.delivery.quota`) and
IMAP GETQUOTA read.

The numbers come from the Maildir itself, not from a usage file of our own: each
message file's name carries its size (``,S=<octets>``, :mod:`mailsuite.store.names`),
so a folder's use is one ``listdir`` of its ``cur/`` and ``new/`` without opening or
stat-ing a file (a name without ``S=``, written by another program, is stat-ed).

**Why it stays right across processes.**  Several worker processes (and Dovecot or
procmail on the same Maildir) add, flag, move and expunge messages; a usage file
would have to be updated by all of them under one lock, and would drift when one of
them is not ours.  Instead the sum of each ``cur/``/``new/`` directory is remembered
per process, keyed on the directory's (inode, mtime in ns): every delivery, rename
and unlink by *any* process changes the mtime of the directory it touched, so a
remembered sum is used only while its directory is unchanged, and is otherwise
listed again.  A directory changed within the last :data:`RACY_SECONDS` is always
listed again (git's "racy index" rule): two changes inside one file-system timestamp
tick would otherwise leave the mtime equal.  Nothing is written, so there is nothing
to repair after a crash and nothing to lock; the cost of an unchanged account is one
``stat`` per folder directory.

Every function here blocks (listdir, stat): callers run them in the worker pool.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mailsuite.store import names

RACY_SECONDS = 2.0  # a directory changed this recently is listed again


@dataclass(frozen=True)
class Usage:
    """What one account stores now."""

    bytes: int = 0  # the sum of the messages' sizes on disk (S=)
    messages: int = 0


def folder_dirs(account_dir: Path) -> list[Path]:
    """The ``cur/`` and ``new/`` directories of every folder of an account (INBOX is the
    account directory itself, the others ``.Name``); missing ones are left out."""
    out: list[Path] = []
    try:
        entries = [account_dir] + [account_dir / e for e in os.listdir(account_dir) if e.startswith(".")
                                   and e not in (".", "..")]
    except FileNotFoundError:
        return out
    for folder in entries:
        for sub in ("cur", "new"):
            path = folder / sub
            if path.is_dir():
                out.append(path)
    return out


def _sum_dir(path: Path) -> tuple[int, int]:
    """(bytes, messages) of one ``cur/`` or ``new/`` directory."""
    total = count = 0
    try:
        files = os.listdir(path)
    except FileNotFoundError:  # deleted or renamed meanwhile: it holds nothing now
        return 0, 0
    for filename in files:
        if filename.startswith("."):
            continue
        size = names.size_of(filename)
        if size is None:
            try:
                size = os.stat(path / filename).st_size
            except FileNotFoundError:  # expunged while we listed
                continue
        total += size
        count += 1
    return total, count


class UsageCounter:
    """Per-process memory of each directory's sum (see the module docstring).  Used
    from worker threads: the dict is replaced entry by entry under a lock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._sums: dict[Path, tuple[tuple[int, int], int, int]] = {}  # dir -> (ino, mtime_ns), bytes, count
        self._lock = threading.Lock()

    def usage(self, account_dir: Path) -> Usage:
        """The account's use now (blocking)."""
        total = count = 0
        now_ns = int(self.clock() * 1e9)
        seen: set[Path] = set()
        for path in folder_dirs(account_dir):
            seen.add(path)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            key = (st.st_ino, st.st_mtime_ns)
            with self._lock:
                known = self._sums.get(path)
            if known is not None and known[0] == key:
                b, n = known[1], known[2]
            else:
                b, n = _sum_dir(path)
                if now_ns - st.st_mtime_ns > RACY_SECONDS * 1e9:
                    with self._lock:
                        self._sums[path] = (key, b, n)
            total += b
            count += n
        with self._lock:  # forget folders deleted or renamed away
            for path in [p for p in self._sums if p.parent.parent == account_dir or p.parent == account_dir]:
                if path not in seen:
                    del self._sums[path]
        return Usage(total, count)
