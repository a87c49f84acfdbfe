"""The per-folder UID list and the folder lock (blocking; run in the worker pool).

File ``mailsuite-uidlist`` in the folder directory::

    mailsuite-uidlist 1 V<uidvalidity> N<uidnext> [M1]
    <uid> <base name>
    ...

The base name is the part of a Maildir file name that never changes (before ``,S=``
and ``:2,``), so flag renames and the move from new/ to cur/ keep the UID.  New UIDs
are *appended* (one write + fsync) under the folder lock, so a delivery into a
100,000-message folder does not rewrite the whole file; UIDNEXT is the larger of the
header's N and the last UID + 1.  When most entries belong to expunged messages the
file is compacted: written to a temp file, fsynced, renamed over (the header then
keeps UIDNEXT).  A reader ignores a last line without its newline (a writer died
mid-append; the lock holder that appends next rewrites the file).

UIDVALIDITY strictly increases per account (:func:`next_uidvalidity`: the creation time
in seconds, or the account's last value + 1 when that is not larger); a lost list is
recreated with a larger UIDVALIDITY so clients drop their caches.  A folder that Dovecot used before
(``dovecot-uidlist`` present, ours missing) keeps its UIDVALIDITY and UIDs.  ``M1`` in
the header says the folder keeps a modseq log (``store/modseq.py``): if that log is
then missing, the modseqs given to clients are lost and the folder starts a new
UIDVALIDITY.

The folder lock (``mailsuite.lock``, fcntl.flock) serialises writers of the uidlist and
the keywords file across processes and threads: flock locks belong to the open file,
so two threads (or two Folder objects) with their own descriptors exclude each other.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Iterable

from mailsuite import fsutil

UIDLIST = "mailsuite-uidlist"
LOCKFILE = "mailsuite.lock"
DOVECOT_UIDLIST = "dovecot-uidlist"
UIDVALIDITY_FILE = "mailsuite-uidvalidity"  # in the account directory: the last value given
UIDVALIDITY_LOCK = "mailsuite-uidvalidity.lock"
_MAGIC = "mailsuite-uidlist"


class FolderLock:
    """``with FolderLock(path):`` holds the folder's exclusive lock."""

    def __init__(self, folder: Path, name: str = LOCKFILE) -> None:
        self.path = folder / name
        self.fd = -1

    def __enter__(self) -> "FolderLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = -1


class UidList:
    """The in-memory copy of one folder's uidlist.  Call the mutating methods with the
    folder lock held."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / UIDLIST
        self.uidvalidity = 0
        self.uidnext = 1
        self.uids: dict[str, int] = {}  # base -> uid, every entry read so far
        self.offset = 0  # bytes of the file consumed
        self.ident: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the file read
        self.has_modlog = False  # the header's M1
        # Group commit (FolderDisk.run_batch): the appends of one batch of operations
        # are fsynced once, at its end, with the folder lock still held.
        self.defer_fsync = False
        self._unsynced = False

    # -- reading -----------------------------------------------------------------

    def stat_key(self) -> tuple[int, int, int]:
        """(inode, size, mtime_ns) of the file now, for cheap staleness checks."""
        st = os.stat(self.path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def load(self) -> None:
        """Read the whole file, creating it (or importing dovecot-uidlist) if missing.
        Needs the lock only when the file may have to be created."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            self._create()
            f = open(self.path, "rb")
        with f:
            st = os.fstat(f.fileno())
            data = f.read()
        self.ident = (st.st_dev, st.st_ino)
        self.uids = {}
        first_nl = data.find(b"\n")
        header = data[:first_nl].decode("ascii", "replace").split() if first_nl >= 0 else []
        if len(header) < 4 or header[0] != _MAGIC:
            raise ValueError(f"{self.path}: not a mailsuite uidlist")
        self.uidvalidity = int(header[2][1:])
        self.uidnext = int(header[3][1:])
        self.has_modlog = "M1" in header[4:]
        _, self.offset = self._parse(data, first_nl + 1)

    def _parse(self, data: bytes, start: int) -> tuple[dict[str, int], int]:
        """Parse complete lines of ``data`` from ``start``; (entries, end of last line)."""
        end = data.rfind(b"\n") + 1
        if end <= start:
            return {}, start
        added: dict[str, int] = {}
        for line in data[start:end].decode("utf-8", "surrogateescape").splitlines():
            uid_s, _, base = line.partition(" ")
            try:
                uid = int(uid_s)
            except ValueError:
                continue
            added[base] = uid
        self.uids.update(added)
        if added:
            self.uidnext = max(self.uidnext, max(added.values()) + 1)
        return added, end

    def read_tail(self) -> dict[str, int]:
        """Entries added by other writers since the last read (all of them again if the
        file was replaced by a compaction)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.load()
            return dict(self.uids)
        if (st.st_dev, st.st_ino) != self.ident:
            before = dict(self.uids)
            self.load()
            return {b: u for b, u in self.uids.items() if before.get(b) != u}
        if st.st_size <= self.offset:
            return {}
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        added, end = self._parse(data, 0)
        self.offset += end
        return added

    # -- writing (lock held) --------------------------------------------------------

    def _create(self) -> None:
        uids: dict[str, int] = {}
        uidnext = 1
        dovecot = self.folder / DOVECOT_UIDLIST
        if dovecot.exists():
            uidvalidity, uidnext, uids = _read_dovecot_uidlist(dovecot)
            next_uidvalidity(account_root(self.folder), at_least=uidvalidity)  # later folders above it
        else:
            uidvalidity = next_uidvalidity(account_root(self.folder))
        self._write(uidvalidity, uidnext, uids)

    def _write(self, uidvalidity: int, uidnext: int, uids: dict[str, int]) -> None:
        mark = " M1" if self.has_modlog else ""
        lines = [f"{_MAGIC} 1 V{uidvalidity} N{uidnext}{mark}\n"]
        lines += [f"{uid} {base}\n" for base, uid in sorted(uids.items(), key=lambda kv: kv[1])]
        fsutil.atomic_write(self.path, "".join(lines).encode("utf-8", "surrogateescape"))

    def assign(self, bases: Iterable[str]) -> dict[str, int]:
        """Give each base without a UID the next UID, in the order given; returns
        base -> uid for all of ``bases``.  Call ``read_tail`` first (lock held)."""
        bases = list(bases)
        first_new = self.uidnext
        out: dict[str, int] = {}
        new: list[str] = []
        for base in bases:
            uid = self.uids.get(base)
            if uid is None:
                if "\n" in base or not base:
                    continue  # cannot be represented; such files are ignored
                uid = self.uidnext
                self.uidnext += 1
                self.uids[base] = uid
                new.append(base)
            out[base] = uid
        if not new:
            return out
        data = "".join(f"{out[b]} {b}\n" for b in new).encode("utf-8", "surrogateescape")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size == self.offset:
                fsutil.write_all(fd, data)
                if self.defer_fsync:
                    self._unsynced = True
                else:
                    fsutil.fsync_fd(fd)
                self.offset = size + len(data)
                return out
        finally:
            os.close(fd)
        # The file does not end where our last read did: a writer died in the middle of
        # a line.  Undo, read every complete line (our copy may hold only part of the
        # list), rewrite the file without the torn line, then assign again.
        for base in new:
            del self.uids[base]
        self.uidnext = first_new
        self.load()
        self._write(self.uidvalidity, self.uidnext, self.uids)
        self.load()
        return self.assign(bases)

    def sync_deferred(self) -> None:
        """fsync what :meth:`assign` appended while ``defer_fsync`` was set (lock held:
        no other process reads those lines before they are durable)."""
        if not self._unsynced:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fsutil.fsync_fd(fd)
        finally:
            os.close(fd)
        self._unsynced = False

    def mark_modlog(self) -> None:
        """Say in the header that the folder keeps a modseq log (lock held)."""
        self.load()
        self.has_modlog = True
        self._write(self.uidvalidity, self.uidnext, self.uids)
        self.load()

    def compact(self, live: set[str]) -> None:
        """Rewrite the file with only ``live`` bases (lock held), keeping UIDNEXT."""
        self.load()  # all of it: after a fast open our copy holds only part
        keep = {b: u for b, u in self.uids.items() if b in live}
        self._write(self.uidvalidity, self.uidnext, keep)
        self.load()

    def rebuild(self, uidvalidity: int, uidnext: int, uids: dict[str, int]) -> None:
        """Write the list anew from what the index remembers (lock held)."""
        self._write(uidvalidity, max(uidnext, max(uids.values(), default=0) + 1), uids)
        self.load()

    def reset(self) -> None:
        """Start a new UID list with a larger UIDVALIDITY (the old one is unusable)."""
        uidvalidity = next_uidvalidity(account_root(self.folder), at_least=self.uidvalidity + 1)
        self._write(uidvalidity, 1, {})
        self.load()


def account_root(folder: Path) -> Path:
    """The account directory of a folder: INBOX is the root itself, a Maildir++
    subfolder (``.Name``, with a ``maildirfolder`` marker) sits in it."""
    if folder.name.startswith(".") or (folder / "maildirfolder").exists():
        return folder.parent
    return folder


def next_uidvalidity(root: Path, at_least: int = 0) -> int:
    """A UIDVALIDITY for a new uid list of the account at ``root``: larger than any
    the account has given before, even within one second and after a restart
    (RFC 3501 2.3.1.1: a (mailbox name, UIDVALIDITY, UID) triple must never name two
    messages, so a folder deleted and created again, or renamed over another's old
    name, must not get an old value).  The current time when it is larger, so values
    still look like Dovecot's; the last value given is kept in ``UIDVALIDITY_FILE``,
    written atomically under the account's ``UIDVALIDITY_LOCK``."""
    lock = FolderLock(root, UIDVALIDITY_LOCK)
    with lock:
        path = root / UIDVALIDITY_FILE
        try:
            last = int(path.read_text("ascii").strip() or 0)
        except (FileNotFoundError, ValueError):
            last = 0  # a lost or torn counter: the time still orders new values
        value = max(int(time.time()), last + 1, at_least)
        fsutil.atomic_write(path, b"%d\n" % value)
    return value


def _read_dovecot_uidlist(path: Path) -> tuple[int, int, dict[str, int]]:
    """UIDVALIDITY, NEXTUID and base -> uid from a Dovecot uidlist (versions 1 and 3)."""
    lines = path.read_text("utf-8", "surrogateescape").splitlines()
    uidvalidity, uidnext = int(time.time()), 1
    uids: dict[str, int] = {}
    if not lines:
        return uidvalidity, uidnext, uids
    head = lines[0].split()
    if head and head[0] == "1" and len(head) >= 3:
        uidvalidity, uidnext = int(head[1]), int(head[2])
    else:
        for field in head[1:]:
            if field[:1] == "V":
                uidvalidity = int(field[1:])
            elif field[:1] == "N":
                uidnext = int(field[1:])
    for line in lines[1:]:
        uid_s, _, rest = line.partition(" ")
        if not uid_s.isdigit():
            continue
        # v3: "<uid> [ext fields] :<base>"; v1: "<uid> <base>"
        colon = rest.find(":")
        base = rest[colon + 1 :] if colon >= 0 else rest
        base = base.partition(":")[0].partition(",")[0].strip()
        if base:
            uids[base] = int(uid_s)
    if uids:
        uidnext = max(uidnext, max(uids.values()) + 1)
    return uidvalidity, uidnext, uids
