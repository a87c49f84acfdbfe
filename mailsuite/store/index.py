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
lazily, dropped when UIDVALIDITY changes, compacted when mostly dead.
"""

from __future__ import annotations

import json
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


class Cache:
    """Per-message cached values (JSON-serialisable), persisted as appended lines."""

    def __init__(self, folder: Path, uidvalidity: int) -> None:
        self.path = folder / CACHE
        self.uidvalidity = uidvalidity
        self.values: dict[tuple[int, str], Any] | None = None
        self.pending: list[str] = []
        self.dead = 0

    def load(self) -> None:
        values: dict[tuple[int, str], Any] = {}
        try:
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
        valid = bool(lines) and lines[0].strip() == f"V{self.uidvalidity}".encode()
        for line in lines[1:] if valid else ():
            try:
                uid, key, value = json.loads(line)
                values[(int(uid), str(key))] = value
            except (ValueError, TypeError):
                continue
        if not valid:
            self._rewrite({})
        self.values = values

    def get(self, uid: int, key: str) -> Any:
        if self.values is None:
            self.load()
        assert self.values is not None
        return self.values.get((uid, key))

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
        """Append pending values (blocking; no fsync: it is a cache)."""
        if self.values is not None and self.dead > max(1000, len(self.values)):
            self._rewrite(self.values)
            return
        if not self.pending:
            return
        data, self.pending = "".join(self.pending), []
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(data)

    def _rewrite(self, values: dict[tuple[int, str], Any]) -> None:
        lines = [f"V{self.uidvalidity}\n"]
        lines += [json.dumps([uid, key, value], separators=(",", ":")) + "\n" for (uid, key), value in values.items()]
        fsutil.atomic_write(self.path, "".join(lines).encode("utf-8"), sync=False, sync_dir=False)
        self.pending, self.dead = [], 0
