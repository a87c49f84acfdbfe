"""The per-folder modseq log: durable, monotonic mod-sequences shared by every process.

CONDSTORE and QRESYNC (RFC 7162) need three things the rebuildable index cannot give:
HIGHESTMODSEQ never goes back for one UIDVALIDITY (not after the index is deleted,
not after a restart), every process serving the folder numbers a change the same way
(a client may reconnect to another worker), and expunges are remembered so that a
client coming back can be told ``VANISHED (EARLIER)``.  File ``mailsuite-modseq`` in the
folder directory keeps them::

    mailsuite-modseq 1 V<uidvalidity> F<floor>
    <modseq> =<flag letters> <uid set>
    <modseq> - <uid set>
    ...

A ``=`` line says the messages of the UID set (``1:5,9``) have had exactly these
Maildir flag letters (sorted) since that modseq: an arrival or a flag change.  A ``-``
line says they were expunged at that modseq.  HIGHESTMODSEQ is the larger of the
floor and the last line's modseq; a message with no line has the floor as its modseq.
Every expunge with a modseq above the floor is in the file, so the answer to "what
vanished since modseq n" is exact for n >= floor (below it, QRESYNC falls back to
every UID that is not there, which RFC 7162 3.2.5.2 allows).

Lines are appended under the folder lock (:class:`FolderLock`) *after* the
files were renamed or unlinked, and a process that finds a change on disk with no
line for it (another program: Dovecot, procmail, mutt) appends one: so under the lock
the file and the directories agree, and a process that reads the tail and lists the
directories while holding the lock publishes a HIGHESTMODSEQ whose every change it
shows.  When the file holds many more lines than messages it is compacted (temp →
fsync → rename): one line per message's latest change, and the newest
``KEEP_EXPUNGED`` expunged UIDs; the floor rises to the newest expunge dropped.

Lines are not fsynced one by one (each fsync cost about 4 ms, in the folder's queue:
with 10 sessions on one folder a STORE waited 18 ms, Dovecot's 0.4).  A process that
dies leaves its lines in the page cache, where every other process reads them; only a
crash of the machine loses the tail, and with it modseqs clients may have been told.
So modseqs are *reserved* durably, ``RESERVE`` at a time: a line ::

    <highest> ! <reserved> <boot id>

appended and fsynced (with the change that needed it) says that no modseq above
``reserved`` is given before another such line is durable, and names the boot
(``/proc/sys/kernel/random/boot_id``) that wrote it.  A reader that finds the last
reservation made in another boot cannot know what the lost tail said, so it takes
``reserved`` as HIGHESTMODSEQ (every process of the new boot alike), and the next
change comes above it: modseqs never go back and are never given twice, whatever the
crash lost.  Where the boot id cannot be read, every line is fsynced as before.

The uidlist's header says (``M1``) that the folder has had a log.  A folder without
the mark gets one (its floor the index's HIGHESTMODSEQ, from before modseqs were
durable and before CONDSTORE was offered); a folder with the mark whose log is gone has
lost the modseqs clients were told (the index is saved lazily and may be behind), so
the folder starts a new UIDVALIDITY.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, NamedTuple

from mailsuite import fsutil

MODLOG = "mailsuite-modseq"
_MAGIC = "mailsuite-modseq"
KEEP_EXPUNGED = 20000  # expunged UIDs remembered through a compaction
_COMPACT_MIN_LINES = 2000
# Modseqs given per fsynced reservation: one fsync per this many changes; a machine
# crash makes HIGHESTMODSEQ jump by at most this much.
RESERVE = 1000
_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
_boot_id: str | None = None


def boot_id() -> str:
    """This boot's id ("" where there is none: then every line is fsynced)."""
    global _boot_id
    if _boot_id is None:
        try:
            with open(_BOOT_ID_FILE, "r", encoding="ascii") as f:
                _boot_id = f.read().strip()
        except OSError:
            _boot_id = ""
        if " " in _boot_id or "\n" in _boot_id:
            _boot_id = ""
    return _boot_id


class Entry(NamedTuple):
    """One line: ``letters`` None for an expunge."""

    modseq: int
    letters: str | None
    uids: list[int]


def uid_set(uids: Iterable[int]) -> str:
    """``1:3,7`` for [1, 2, 3, 7] (any order, duplicates ignored)."""
    out: list[str] = []
    run_lo = run_hi = -1
    for u in sorted(set(uids)):
        if u == run_hi + 1:
            run_hi = u
            continue
        if run_lo >= 0:
            out.append(str(run_lo) if run_lo == run_hi else f"{run_lo}:{run_hi}")
        run_lo = run_hi = u
    if run_lo >= 0:
        out.append(str(run_lo) if run_lo == run_hi else f"{run_lo}:{run_hi}")
    return ",".join(out)


def parse_uid_set(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        if hi:
            out.extend(range(int(lo), int(hi) + 1))
        elif lo:
            out.append(int(lo))
    return out


def norm_letters(letters: str) -> str:
    return "".join(sorted(set(letters)))


class ModLog:
    """The in-memory position in one folder's modseq log.  Mutating methods need the
    folder lock; all of them block (worker pool)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / MODLOG
        self.uidvalidity = 0
        self.floor = 1
        self.highest = 1
        self.offset = 0
        self.ident: tuple[int, int] = (0, 0)
        self.lines = 0  # lines in the file (for the compaction threshold)
        self.reserved = 0  # no modseq above it is given before a new reservation is durable
        self.boot = ""  # the boot that wrote the last reservation

    # -- reading ------------------------------------------------------------------------

    def open(self, uidvalidity: int, saved: list[int] | None) -> list[Entry] | None:
        """Read the log; None when there is none for this UIDVALIDITY (see
        :meth:`create`).  ``saved`` is :meth:`saved_position` as the index kept it:
        when it still names this file, only the tail after it is read and returned;
        otherwise every line."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        if saved and len(saved) >= 9 and (st.st_dev, st.st_ino) == (saved[0], saved[1]) and st.st_size >= saved[2] \
                and saved[6] == uidvalidity:
            self.ident, self.offset = (saved[0], saved[1]), saved[2]
            self.highest, self.lines, self.floor, self.uidvalidity, self.reserved, self.boot = saved[3:9]
            self._after_crash()
            tail = self.read_tail()
            if self.uidvalidity == uidvalidity:
                return tail
        entries = self._load()
        return entries if self.uidvalidity == uidvalidity else None

    def create(self, uidvalidity: int, floor: int) -> None:
        """Start the log (lock held) with HIGHESTMODSEQ ``floor``."""
        self.reserved, self.boot = 0, ""
        self._write(uidvalidity, max(floor, 1), [])
        self._load()

    def _load(self) -> list[Entry]:
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
        self.ident = (st.st_dev, st.st_ino)
        nl = data.find(b"\n")
        header = data[:nl].decode("ascii", "replace").split() if nl >= 0 else []
        if len(header) < 4 or header[0] != _MAGIC:
            raise ValueError(f"{self.path}: not a mailsuite modseq log")
        self.uidvalidity = int(header[2][1:])
        self.floor = self.highest = max(int(header[3][1:]), 1)
        self.lines = 0
        self.reserved, self.boot = 0, ""
        entries, end = self._parse(data, nl + 1)
        self.offset = end
        self._after_crash()
        return entries

    def _after_crash(self) -> None:
        """The last reservation was made in another boot: lines after the last fsync
        may be lost, and any modseq up to the reservation may have been given."""
        if self.boot and self.boot != boot_id():
            self.highest = max(self.highest, self.reserved)

    def _parse(self, data: bytes, start: int) -> tuple[list[Entry], int]:
        end = data.rfind(b"\n") + 1  # a last line without its newline: a writer died
        if end <= start:
            return [], start
        entries: list[Entry] = []
        for line in data[start:end].decode("ascii", "replace").splitlines():
            parts = line.split(" ")
            try:
                modseq = int(parts[0])
                kind = parts[1]
                uids = parse_uid_set(parts[2]) if len(parts) > 2 else []
            except (ValueError, IndexError):
                continue
            if kind == "!":
                try:
                    self.reserved, self.boot = int(parts[2]), parts[3]
                except (ValueError, IndexError):
                    continue
                self.lines += 1
                self.highest = max(self.highest, modseq)
                continue
            letters = None if kind == "-" else kind[1:]
            entries.append(Entry(modseq, letters, uids))
            self.lines += 1
            if modseq > self.highest:
                self.highest = modseq
        return entries, end

    def read_tail(self) -> list[Entry]:
        """Lines appended by anyone since the last read (all of them again after a
        compaction replaced the file)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []  # the folder is being deleted; nothing new can be said
        if (st.st_dev, st.st_ino) != self.ident:
            return self._load()
        if st.st_size <= self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        entries, end = self._parse(data, 0)
        self.offset += end
        self._after_crash()
        return entries

    def saved_position(self) -> list:
        return [self.ident[0], self.ident[1], self.offset, self.highest, self.lines, self.floor, self.uidvalidity,
                self.reserved, self.boot]

    def expunged_since(self, modseq: int) -> tuple[set[int], bool]:
        """UIDs expunged with a modseq above ``modseq``, and whether that is all of
        them (False when ``modseq`` is below the floor: older expunges are forgotten)."""
        out: set[int] = set()
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return out, False
        nl = data.find(b"\n")
        header = data[:nl].decode("ascii", "replace").split()
        try:
            # The floor of the file read, not our copy's: a compaction may have
            # replaced the file between the two.
            floor = int(header[3][1:])
        except (IndexError, ValueError):
            return out, False
        for line in data[nl + 1 : data.rfind(b"\n") + 1].decode("ascii", "replace").splitlines():
            parts = line.split(" ")
            if len(parts) == 3 and parts[1] == "-":
                try:
                    if int(parts[0]) > modseq:
                        out.update(parse_uid_set(parts[2]))
                except ValueError:
                    continue
        return out, modseq >= floor

    # -- writing (lock held, tail read first) ---------------------------------------------

    def append(self, changes: list[tuple[str | None, list[int]]], live: int) -> int:
        """Record changes under one new modseq; returns it.  ``changes`` are (letters
        or None for expunged, uids); ``live`` is the folder's message count (for the
        compaction threshold).  Not fsynced unless the modseq needs a new reservation
        (see the module docstring)."""
        self._after_crash()
        modseq = self.highest + 1
        boot = boot_id()
        lines = []
        sync = not boot or self.boot != boot or modseq > self.reserved
        reserved = modseq + RESERVE if boot else 0
        if boot and sync:
            lines.append(f"{self.highest} ! {reserved} {boot}\n")
        for letters, uids in changes:
            if not uids:
                continue
            kind = "-" if letters is None else "=" + norm_letters(letters)
            lines.append(f"{modseq} {kind} {uid_set(uids)}\n")
        if len(lines) == (1 if boot and sync else 0):
            return self.highest
        data = "".join(lines).encode("ascii")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size != self.offset:
                # A torn last line (a writer died mid-append): rewrite without it first.
                os.close(fd)
                fd = -1
                self._rewrite_whole()
                return self.append(changes, live)
            fsutil.write_all(fd, data)
            if sync:
                fsutil.fsync_fd(fd)
        finally:
            if fd >= 0:
                os.close(fd)
        if boot and sync:
            self.reserved, self.boot = reserved, boot
        self.offset += len(data)
        self.lines += len(lines)
        self.highest = modseq
        if self.lines > max(_COMPACT_MIN_LINES, 2 * live):
            self.compact()
        return modseq

    def _rewrite_whole(self) -> None:
        entries = self._load()
        self._write(self.uidvalidity, self.floor, [f"{e.modseq} {'-' if e.letters is None else '=' + e.letters} "
                                                   f"{uid_set(e.uids)}\n" for e in entries if e.uids])
        self._load()

    def compact(self) -> None:
        """Keep one line per message's latest change and the newest expunges."""
        entries = self._load()
        latest: dict[int, tuple[int, str | None]] = {}
        for e in entries:
            for u in e.uids:
                latest[u] = (e.modseq, e.letters)
        groups: dict[tuple[int, str | None], list[int]] = {}
        expunged = sorted(((m, u) for u, (m, l) in latest.items() if l is None), reverse=True)
        floor = self.floor
        for m, u in expunged[KEEP_EXPUNGED:]:
            floor = max(floor, m)
            del latest[u]
        for u, key in latest.items():
            groups.setdefault(key, []).append(u)
        lines = [f"{m} {'-' if l is None else '=' + l} {uid_set(us)}\n" for (m, l), us in sorted(groups.items(), key=_by_modseq)]
        highest = self.highest
        self._write(self.uidvalidity, floor, lines)
        self._load()
        self.highest = max(self.highest, highest)  # the last line may have been an expunge dropped

    def _write(self, uidvalidity: int, floor: int, lines: list[str]) -> None:
        head = f"{_MAGIC} 1 V{uidvalidity} F{floor}\n"
        if self.reserved:
            # The reservation survives a rewrite (fsynced by atomic_write); its modseq
            # field keeps HIGHESTMODSEQ when the newest line was an expunge dropped.
            head += f"{self.highest} ! {self.reserved} {self.boot}\n"
        fsutil.atomic_write(self.path, (head + "".join(lines)).encode("ascii"))


def _by_modseq(item: tuple[tuple[int, str | None], list[int]]) -> int:
    return item[0][0]
