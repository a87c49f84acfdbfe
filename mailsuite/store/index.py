"""The per-folder index: what a folder knows about its messages without opening them.

``MessageRecord`` is one message as the protocols see it.  The index file
``mailsuite-index`` (JSON, written temp → fsync → rename) keeps, per message, the UID,
the current file name (which carries the flags), the CRLF size, the internal date and
the modseq, plus the folder's HIGHESTMODSEQ and the state of the directories, the
uidlist and the modseq log (``store/modseq.py``, the durable source of modseqs) it was
taken from.  Opening a folder reads this file and trusts it when the
uidlist and the new/ and cur/ directories are unchanged since; otherwise the folder
rescans the directories (names only: flags and sizes are in the file names) and only
stats files it has never seen.  It is a cache: a lost or corrupt index is rebuilt.

``mailsuite-cache`` holds what protocols want to keep per message (IMAP's ENVELOPE and
BODYSTRUCTURE): JSON lines ``[uid, key, value]`` appended as they are computed, read
lazily, dropped when UIDVALIDITY changes, compacted when mostly dead.  Several
processes share the file: each appends its new values within a second (one write per
batch on an O_APPEND descriptor, so lines of two writers do not interleave), and a
miss reads what the others appended since (at most once per ``TAIL_EVERY``), so a
worker does not parse again the 10,000 envelopes another worker has just cached.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

from mailsuite import fsutil
from mailsuite.store import names

INDEX = "mailsuite-index"
CACHE = "mailsuite-cache"
_VERSION = 1



class MessageRecord(NamedTuple):
    """One message of a folder (immutable; a change makes a new record)."""

    uid: int
    filename: str  # current name in cur/ (base[,S=..,W=..]:2,<letters>)
    flags: frozenset[str]  # system flags and keywords, IMAP spelling ('\\Seen', '$Forwarded', 'Work')
    size: int  # octets with CRLF line ends (RFC822.SIZE, POP3 LIST)
    internaldate: float  # seconds since the epoch
    modseq: int
    recent: bool = False  # this process moved it from new/ (IMAP gives \Recent to one session)

    @property
    def base(self) -> str:
        return self.filename.partition(":")[0].partition(",")[0]

    @property
    def letters(self) -> str:
        return self.filename.partition(":2,")[2]

    @property
    def stored_size(self) -> int:
        """Octets on disk (the name's S=; what quotas count), else RFC822.SIZE."""
        size = names.size_of(self.filename)
        return self.size if size is None else size


class IndexState(NamedTuple):
    uidvalidity: int
    uidnext: int
    highest_modseq: int
    uidlist_key: tuple[int, int, int]  # (inode, size, mtime_ns) of the uidlist
    new_mtime: int
    cur_mtime: int
    records: list[tuple[int, str, int, float, int]]  # uid, filename, size, date, modseq
    modlog: list[int] | None = None  # how far the modseq log was read (ModLog.saved_position)


def load(folder: Path) -> IndexState | None:
    try:
        with open(folder / INDEX, "rb") as f:
            raw = json.loads(f.read())
        if raw.get("v") != _VERSION:
            return None
        return IndexState(
            raw["uidvalidity"],
            raw["uidnext"],
            raw["highest_modseq"],
            tuple(raw["uidlist"]),  # type: ignore[arg-type]
            raw["new_mtime"],
            raw["cur_mtime"],
            raw["records"],
            raw.get("modlog"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(folder: Path, state: IndexState) -> None:
    doc = {
        "v": _VERSION,
        "uidvalidity": state.uidvalidity,
        "uidnext": state.uidnext,
        "highest_modseq": state.highest_modseq,
        "uidlist": list(state.uidlist_key),
        "new_mtime": state.new_mtime,
        "cur_mtime": state.cur_mtime,
        "records": state.records,
        "modlog": state.modlog,
    }
    # Rebuildable: after a crash an old index is fine (it is checked against the
    # uid list and the folders' mtimes), a torn one is not.
    fsutil.atomic_write(folder / INDEX, json.dumps(doc, separators=(",", ":")).encode("utf-8"), sync_dir=False)


TAIL_EVERY = 0.5  # seconds between looks for values other processes appended


class Cache:
    """Per-message cached values (JSON-serialisable), persisted as appended lines."""

    def __init__(self, folder: Path, uidvalidity: int) -> None:
        self.path = folder / CACHE
        self.uidvalidity = uidvalidity
        self.values: dict[tuple[int, str], Any] | None = None
        self.pending: list[str] = []
        self.dead = 0
        self.offset = 0  # bytes of the file read (up to its last complete line)
        self.ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file read
        self.checked = 0.0  # time.monotonic() of the last look for others' values

    def load(self) -> None:
        values: dict[tuple[int, str], Any] = {}
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            st, data = None, b""
        end = data.rfind(b"\n") + 1
        lines = data[:end].splitlines()
        valid = bool(lines) and lines[0].strip() == f"V{self.uidvalidity}".encode()
        if valid:
            self._parse(lines[1:], values)
            self.ident = (st.st_dev, st.st_ino) if st is not None else None
            self.offset = end
        else:
            self._rewrite({})
        self.values = values
        self.checked = time.monotonic()

    @staticmethod
    def _parse(lines: list[bytes], into: dict[tuple[int, str], Any]) -> None:
        for line in lines:
            try:
                uid, key, value = json.loads(line)
                into[(int(uid), str(key))] = value
            except (ValueError, TypeError):
                continue

    def get(self, uid: int, key: str) -> Any:
        if self.values is None:
            self.load()
        assert self.values is not None
        value = self.values.get((uid, key))
        if value is None and time.monotonic() - self.checked >= TAIL_EVERY:
            self.read_tail()
            value = self.values.get((uid, key))
        return value

    def read_tail(self) -> None:
        """Take in the values other processes appended since the last read (all of
        the file again if it was rewritten)."""
        self.checked = time.monotonic()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) != self.ident:
            self.load()
            return
        if st.st_size <= self.offset or self.values is None:
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._parse(data[:end].splitlines(), self.values)
        self.offset += end

    def put(self, uid: int, key: str, value: Any) -> None:
        if self.values is None:
            self.load()
        assert self.values is not None
        self.values[(uid, key)] = value
        self.pending.append(json.dumps([uid, key, value], separators=(",", ":")) + "\n")

    def forget(self, uids: set[int]) -> None:
        if self.values:
            for k in [k for k in self.values if k[0] in uids]:
                del self.values[k]
                self.dead += 1

    def flush(self) -> None:
        """Append pending values (blocking; no fsync: it is a cache).  Runs in a pool
        thread while the reactor may put: the list is taken before it is joined, so a
        value put meanwhile is in this write or the next."""
        if self.values is not None and self.dead > max(1000, len(self.values)):
            self._rewrite(dict(self.values))
            return
        pending = self.pending
        if not pending:
            return
        self.pending = []
        data = "".join(pending).encode("utf-8")
        # One write() on an O_APPEND descriptor: another process's lines land before
        # or after these, never inside a line (a file object's buffer would split
        # them at 8 KiB into several writes).
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fsutil.write_all(fd, data)
        finally:
            os.close(fd)

    def _rewrite(self, values: dict[tuple[int, str], Any]) -> None:
        lines = [f"V{self.uidvalidity}\n"]
        lines += [json.dumps([uid, key, value], separators=(",", ":")) + "\n" for (uid, key), value in values.items()]
        data = "".join(lines).encode("utf-8")
        fsutil.atomic_write(self.path, data, sync=False, sync_dir=False)
        self.pending, self.dead = [], 0
        try:
            st = os.stat(self.path)
            self.ident, self.offset = (st.st_dev, st.st_ino), len(data)
        except FileNotFoundError:
            self.ident = None
