"""One open folder: its messages, UIDs, flags, and every change to them.

A :class:`Folder` is shared by all sessions (IMAP and POP3) of the process that have
the folder open (:meth:`MaildirStore.open_folder` hands out the same object, counted;
each user calls :meth:`Folder.close` once).  It owns a :class:`FolderDisk`, the
blocking half, whose methods run one at a time in the worker pool (a DeferredLock
serialises them); the reactor thread only reads the record list that each finished
operation publishes, so reads (``messages()``, ``get()``) never block and never see a
half-done change.

Contract for callers (the IMAP and POP3 servers):

* ``messages()`` is the folder now, sorted by UID; a sequence of
  :class:`~mailsuite.store.index.MessageRecord`.  It is replaced, never mutated, so a
  session may keep the object it got (and diff it against a later one).
* ``sync()`` picks up changes made by other processes and tools (new files in new/ get
  UIDs and move to cur/ keeping them; renamed files are flag changes; vanished files are
  expunges).  When new/, cur/ and the modseq log are unchanged it costs three stat
  calls in the reactor thread, so call it before every command.  "Unchanged" is
  judged against the state of the listing ``messages()`` shows (:class:`Listing`),
  published with it, never against one a worker has just recorded for a listing not
  yet published.  This process's own changes move that state along without a
  listing; a listing that may hide a change in its clock tick by a program that does
  not log (another MUA) is taken again a second later, not at every sync.
* Every change (by any session, by SMTP delivery through the store's ``ChangeHub``, or
  found by ``sync``) is followed by a call of each listener ``cb(folder)`` in the
  reactor thread; a session then compares ``messages()`` with its own view (new UIDs →
  EXISTS, missing UIDs → EXPUNGE, ``modseq`` above the session's → FETCH FLAGS).
* Every change (arrival, flag change, expunge, by anyone) gets a modseq from the
  folder's modseq log (:mod:`mailsuite.store.modseq`), under the folder lock, so every
  process numbers it alike and HIGHESTMODSEQ never goes back; ``highest_modseq`` is
  published only once every change up to it shows in ``messages()``.
* ``claim_recent()`` hands the \\Recent messages (those this process moved from new/)
  to the first session that asks, once (RFC 3501 2.3.2).
* Flags are IMAP names ('\\Seen', '\\Answered', '\\Flagged', '\\Deleted', '\\Draft',
  '$Forwarded', keywords); \\Recent is not stored.  Up to 26 keywords per folder
  (``TooManyKeywords`` beyond: NO [LIMIT]).
* ``append`` and ``copy``/``move`` fire only after the new files and the uidlist are
  fsynced.  ``expunge`` fsyncs the directory before it fires.  APPEND's and EXPUNGE's
  fsync of cur/ runs after the operation, outside the folder's queue; flag changes
  and modseq log lines are not fsynced (docs/architecture.md, "What is fsynced, and
  when").
* A folder deleted or renamed away by another session shows all messages expunged and
  ``gone`` True; further changes fail with ``FolderGone``.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import shutil
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, NamedTuple, Sequence

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite import fsutil
from mailsuite.store import index as index_mod, names
from mailsuite.store.errors import FolderGone, MessageGone, NoSuchFolder
from mailsuite.store.index import Cache, IndexState, MessageRecord
from mailsuite.store.interface import IFolder
from mailsuite.store.keywords import SYSTEM_FLAGS, Keywords, split_flags
from mailsuite.fsutil import fsync_dir as _fsync_dir
from mailsuite.store.messages import SEARCH_CACHE_KEY, header_block, search_fields
from mailsuite.store.modseq import ModLog, norm_letters
from mailsuite.store.uidlist import FolderLock, UidList
from mailsuite.workers import IWorkers

log = Logger(namespace="mailsuite.store")

# A directory mtime this close to the time we listed it (or to an own change recorded
# without a listing) may hide a later change in the same clock tick by a program that
# does not log its changes (another MUA, a delivery into new/): such a listing is
# listed again once the window has passed (``Listing.recheck_ns``), not at every sync.
# Dovecot's maildir code does the same with the same one second (MAILDIR_SYNC_SECS,
# DIR_DELAYED_REFRESH: a delayed refresh once check_time < now - 1 s), and records
# cur/'s mtime after its own renames without listing (update_maildir_hdr_cur).
_DIRTY_WINDOW_NS = 1_000_000_000
_INDEX_SAVE_DELAY = 30.0
# New cache values (ENVELOPE, BODYSTRUCTURE) reach the file this soon, so that another
# worker serving the folder reads them instead of parsing every message again: a
# FETCH 1:* (ENVELOPE) of 10,000 messages took 900 ms on the worker that had not
# parsed them, 100 ms on the one that had.
_CACHE_FLUSH_DELAY = 1.0
# How many of others' logged changes _take_pending checks with one stat each; past
# this, and past a quarter of the folder, it checks them against one listing of cur/.
# Measured (thread CPU time, 10,000-message folder, 7 runs): os.path.exists costs
# 2.7 us a name, listing cur/ into a set 0.59 us a name (5.9 ms); taking 10,000 pending
# flag changes cost 70.6 ms with stats, 44.1 ms with the listing, 65.7 ms with a full
# scan; 625 cost 3.5 ms with stats, 6.9 with the listing.  A full scan is never the
# cheaper way to check them.
_PENDING_STATS = 64
_CHUNK = 1 << 16

Listener = Callable[["Folder"], None]


class Changes(NamedTuple):
    """What one operation or sync changed (UIDs)."""

    added: list[int]
    expunged: list[int]
    flags: list[int]

    def __bool__(self) -> bool:
        return bool(self.added or self.expunged or self.flags)


NO_CHANGES = Changes([], [], [])


class Listing(NamedTuple):
    """The mtimes of new/ and cur/ the records were listed at (or brought to by this
    process's own changes), whether the listing is not to be trusted at all (a file
    moved away meanwhile), when it is to be listed again because it may hide a change
    in the same clock tick (0: never), and how far the modseq log was read
    ((device, inode, offset): another mailsuite process's change, which may share a
    clock tick with ours, shows there)."""

    new_mtime: int
    cur_mtime: int
    dirty: bool
    recheck_ns: int = 0
    log: tuple[int, int, int] = (0, 0, 0)


UNLISTED = Listing(-1, -1, True)


def crlf_size(path: Path) -> int:
    """Octets of the file with every bare LF sent as CRLF (what clients receive)."""
    size = extra = 0
    prev_cr = False
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            size += len(chunk)
            extra += chunk.count(b"\n") - chunk.count(b"\r\n")
            if prev_cr and chunk[:1] == b"\n":
                extra -= 1
            prev_cr = chunk[-1:] == b"\r"
    return size + extra


def letters_of(filename: str) -> str:
    return filename.partition(":2,")[2]


def _sort_key(filename: str) -> tuple[int, str]:
    sec = filename.partition(".")[0]
    return (int(sec) if sec.isdigit() else 0, filename)


class FolderDisk:
    """The blocking half of a folder.  Not thread-safe: one method at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cur = path / "cur"
        self.cur_prefix = f"{self.cur}{os.sep}"  # for str paths on hot paths (POP3 RETR)
        self.new = path / "new"
        self.tmp = path / "tmp"
        self.uidlist = UidList(path)
        self.keywords = Keywords(path)
        self.records: dict[int, MessageRecord] = {}
        self.by_filename: dict[str, int] = {}
        self._by_base: dict[str, int] | None = None
        self.modlog = ModLog(path)
        self.highest_modseq = 1  # the log's, once every change it holds is in ``records``
        # Log lines read that matched no record yet (a change the next listing shows):
        # uid -> (modseq, letters or None for expunged).  Emptied by every scan.
        self.pending: dict[int, tuple[int, str | None]] = {}
        self._lock: FolderLock | None = None
        self._lock_depth = 0
        self.new_mtime = -1
        self.cur_mtime = -1
        self.dirty = True
        self.recheck_ns = 0  # list again at this time (see Listing); 0: not needed
        self.gone = False
        self.version = 0  # bumped at every change of ``records``
        self.unsorted = False
        self.recent: list[int] = []  # moved from new/ since the reactor last looked
        self.cache: Cache | None = None
        self._flag_cache: dict[str, frozenset[str]] = {}
        self.index_dirty = False
        self.dir_ident: tuple[int, int] | None = None  # the directory opened (device, inode)

    # -- helpers -----------------------------------------------------------------

    @property
    def by_base(self) -> dict[str, int]:
        if self._by_base is None:
            self._by_base = {r.base: uid for uid, r in self.records.items()}
        return self._by_base

    def flags_of(self, letters: str) -> frozenset[str]:
        flags = self._flag_cache.get(letters)
        if flags is None:
            out = []
            for c in letters:
                if c in SYSTEM_FLAGS:
                    out.append(SYSTEM_FLAGS[c])
                elif c in self.keywords.names:
                    out.append(self.keywords.names[c])
            flags = self._flag_cache[letters] = frozenset(out)
        return flags

    def _put(self, rec: MessageRecord) -> None:
        old = self.records.get(rec.uid)
        if old is not None:
            self.by_filename.pop(old.filename, None)
        elif self.records and rec.uid < next(reversed(self.records)):
            self.unsorted = True
        self.records[rec.uid] = rec
        self.by_filename[rec.filename] = rec.uid
        if self._by_base is not None:
            self._by_base[rec.base] = rec.uid
        self.version += 1
        self.index_dirty = True

    def _drop(self, uid: int) -> MessageRecord | None:
        rec = self.records.pop(uid, None)
        if rec is not None:
            self.by_filename.pop(rec.filename, None)
            if self._by_base is not None:
                self._by_base.pop(rec.base, None)
            self.version += 1
            self.index_dirty = True
        return rec

    def _norm(self, rec: MessageRecord, memo: dict[str, str]) -> str:
        """``norm_letters(rec.letters)``, worked out once per flag set in ``memo``."""
        letters = rec.filename.partition(":2,")[2]
        norm = memo.get(letters)
        if norm is None:
            norm = memo[letters] = norm_letters(letters)
        return norm

    def _set_modseq(self, rec: MessageRecord, modseq: int) -> None:
        """Give a record a new modseq; name and flags stay, so not through ``_put``
        (taking in another process's STORE 1:* on 10,000 messages replaced each record
        twice through it: a third of that listing's 70 ms, under the folder lock)."""
        self.records[rec.uid] = MessageRecord(rec.uid, rec.filename, rec.flags, rec.size, rec.internaldate,
                                              modseq, rec.recent)
        self.version += 1
        self.index_dirty = True

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder lock (re-entrant within this FolderDisk: a flock taken twice
        through two descriptors would wait for itself)."""
        if self._lock_depth == 0:
            self._lock = FolderLock(self.path)
            self._lock.__enter__()
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock is not None:
                lock, self._lock = self._lock, None
                lock.__exit__(None, None, None)

    def run_batch(self, calls: list[tuple[Callable[..., Any], tuple]]) -> list[tuple[bool, Any]]:
        """Group commit: run operations that queued behind each other in one trip to
        the pool, under one hold of the folder lock, with one fsync of the uid list for
        every UID they give (before the lock is released, so no process sees a UID
        that is not durable, and before any of them answers).  Each operation's
        result or Failure, in order; one failing does not stop the others.

        Why: with 10 sessions on one folder, APPEND's uid list fsync (held in the
        queue, ~0.7 ms here) made every STORE and EXPUNGE behind it wait
        (bench/imap_contention.py: STORE median 13.5 ms, over a third of the queue's
        time in that fsync, per py-spy)."""
        out: list[tuple[bool, Any]] = []
        try:
            lock = self.locked()
            lock.__enter__()
        except FileNotFoundError:  # the folder is gone: each operation finds out itself
            return [_outcome(f, args) for f, args in calls]
        try:
            self.uidlist.defer_fsync = True
            try:
                for f, args in calls:
                    out.append(_outcome(f, args))
            finally:
                self.uidlist.defer_fsync = False
            try:
                self.uidlist.sync_deferred()
            except OSError:
                # New UIDs not durable: none of the batch may say it worked.
                failure = Failure()
                out = [(False, failure)] * len(out)
        finally:
            lock.__exit__(None, None, None)
        return out

    # -- modseqs (see store/modseq.py) ---------------------------------------------------

    def _apply_log(self, entries: list) -> list[int]:
        """Take the modseqs of log lines whose change the records already show; keep
        the others in ``pending`` for the next listing.  Returns the UIDs whose modseq
        changed."""
        changed: list[int] = []
        pending = self.pending
        records = self.records
        memo: dict[str, str] = {}
        for modseq, letters, uids in entries:
            for uid in uids:
                rec = records.get(uid)
                if letters is not None and rec is not None and self._norm(rec, memo) == letters:
                    pending.pop(uid, None)
                    if rec.modseq != modseq:
                        self._set_modseq(rec, modseq)
                        changed.append(uid)
                else:
                    pending[uid] = (modseq, letters)
        return changed

    def _catch_up(self) -> None:
        """Before logging an own change (lock held, the change made): read what others
        logged, and list the folder if they changed anything the records do not show
        yet, so that the HIGHESTMODSEQ published with this change covers only changes
        the records show."""
        self._apply_log(self.modlog.read_tail())
        if self.pending and not self._take_pending():
            self.scan()

    def _take_pending(self) -> bool:
        """Take the flag changes and expunges others logged into the records without
        listing the folder (lock held); False when a listing is needed (an arrival,
        or a file not where the log says).  Another process's STORE or EXPUNGE made
        this process's next change list all of cur/ (2,000 names) under the folder
        lock: with two workers serving one folder, nearly every change did.  A flag
        line names the file exactly (the name's info part is the sorted letters,
        ``names.with_flags``), so one stat each checks it; an expunge line is written
        only after the unlink.  Past a quarter of the folder (another process's
        ``STORE 1:*``) one listing of cur/ checks them all instead (_PENDING_STATS)."""
        if any(letters is not None and uid not in self.records for uid, (_, letters) in self.pending.items()):
            return False  # an arrival: only a listing names its file
        if self.keywords.load():
            self._flag_cache.clear()
        cur = self.cur_prefix
        listed: set[str] | None = None
        if len(self.pending) > max(_PENDING_STATS, len(self.records) // 4):
            listed = set(os.listdir(self.cur))
        renamed: list[tuple[MessageRecord, str, int]] = []
        for uid, (modseq, letters) in self.pending.items():
            rec = self.records.get(uid)
            if rec is None or letters is None:
                continue
            target = names.with_flags(rec.filename, letters)
            if not (target in listed if listed is not None else os.path.exists(cur + target)):
                return False
            renamed.append((rec, target, modseq))
        gone = [uid for uid, (_, letters) in self.pending.items() if letters is None and uid in self.records]
        for rec, target, modseq in renamed:
            self._put(rec._replace(filename=target, flags=self.flags_of(letters_of(target)), modseq=modseq))
        for uid in gone:
            self._drop(uid)
        if gone and self.cache is not None:
            self.cache.forget(set(gone))
        self.pending.clear()
        return True

    def _log(self, changes: list[tuple[str | None, list[int]]]) -> int:
        """Record own changes (lock held) under one new modseq, durably."""
        self._catch_up()
        modseq = self.modlog.append(changes, len(self.records))
        self.highest_modseq = self.modlog.highest
        return modseq

    def _log_records(self, uids: Iterable[int], expunged: Iterable[int] = ()) -> int:
        """Log the current flags of ``uids`` (arrivals, flag changes) and the
        ``expunged`` UIDs under one new modseq, and give it to the records."""
        self._catch_up()
        groups: dict[str, list[int]] = {}
        memo: dict[str, str] = {}
        for uid in uids:
            rec = self.records.get(uid)
            if rec is not None:
                groups.setdefault(self._norm(rec, memo), []).append(uid)
        changes: list[tuple[str | None, list[int]]] = list(groups.items())  # type: ignore[arg-type]
        changes.append((None, list(expunged)))
        modseq = self._log(changes)
        for us in groups.values():  # only the modseq changes (see _set_modseq)
            for uid in us:
                self._set_modseq(self.records[uid], modseq)
        return modseq

    # -- open ----------------------------------------------------------------------

    def open(self) -> Changes:
        """Load uidlist, keywords and index; rescan if anything changed since."""
        if not self.cur.is_dir():
            raise NoSuchFolder(f"no folder at {self.path.name}")
        for sub in ("new", "tmp"):
            os.makedirs(self.path / sub, mode=0o700, exist_ok=True)
        st = os.stat(self.path)
        self.dir_ident = (st.st_dev, st.st_ino)
        # Loading 100,000 records allocates that many tuples: without pausing the
        # cyclic GC, its young-generation passes cost a third of the time.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            return self._open()
        finally:
            if gc_was_on:
                gc.enable()

    def _open(self) -> Changes:
        state = index_mod.load(self.path)
        try:
            st = os.stat(self.uidlist.path)
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            st, key = None, None
        self.keywords.load()
        fast = state is not None and st is not None and tuple(state.uidlist_key) == key
        if fast:
            # Fast path: the index was written from this very uidlist.
            ul = self.uidlist
            ul.uidvalidity, ul.uidnext = state.uidvalidity, state.uidnext
            ul.offset, ul.ident = st.st_size, (st.st_dev, st.st_ino)
            self._load_records(state)
            # ul.uids stays empty: the records hold the UIDs read so far, and a file
            # in cur/ we do not know makes the scan read the whole list anyway.
            self.new_mtime, self.cur_mtime = state.new_mtime, state.cur_mtime
            self.dirty = False
        else:
            with self.locked():
                try:
                    self.uidlist.load()
                except (ValueError, IndexError):
                    self._recover_uidlist(state)
            if state is not None and state.uidvalidity == self.uidlist.uidvalidity:
                self._load_records(state)
                known = self.uidlist.uids
                for uid, rec in list(self.records.items()):
                    if known.get(rec.base) != uid:
                        self._drop(uid)
            self.dirty = True
        with self.locked():
            self._open_modlog(state if fast else None, state)
        self.cache = Cache(self.path, self.uidlist.uidvalidity)
        self.index_dirty = False
        if self.needs_scan() or self.pending:
            return self.scan()
        return NO_CHANGES

    def _open_modlog(self, fast_state: IndexState | None, state: IndexState | None) -> None:
        """Read the modseq log (lock held) and take its modseqs into the records."""
        uidvalidity = self.uidlist.uidvalidity
        entries = self.modlog.open(uidvalidity, fast_state.modlog if fast_state is not None else None)
        if entries is None:
            if not self.uidlist.uids:
                self.uidlist.load()  # after a fast open only the header fields are known
            if self.uidlist.has_modlog and self.modlog.uidvalidity != self.uidlist.uidvalidity and \
                    not self.modlog.path.exists():
                # The modseqs clients were told are unknown: only a new UIDVALIDITY
                # keeps RFC 7162's promise that HIGHESTMODSEQ never goes back.
                log.warn("store: {path}: modseq log lost: starting a new UIDVALIDITY", path=str(self.path))
                self.uidlist.reset()
                self.records, self.by_filename, self._by_base = {}, {}, None
                self.version += 1
                self.dirty = True
                floor = 1
            else:
                same = state is not None and state.uidvalidity == self.uidlist.uidvalidity
                floor = state.highest_modseq if same and self.records else 1  # type: ignore[union-attr]
                for uid, rec in list(self.records.items()):
                    if rec.modseq > floor:
                        self._put(rec._replace(modseq=floor))
            self.modlog.create(self.uidlist.uidvalidity, floor)
            if not self.uidlist.has_modlog:
                self.uidlist.mark_modlog()
            entries = []
        self._apply_log(entries)
        self.highest_modseq = self.modlog.highest

    def _recover_uidlist(self, state: IndexState | None) -> None:
        """An unreadable uidlist (lock held): set it aside, and rebuild it from the
        index when there is one, so that UIDVALIDITY and every indexed message's UID
        survive (messages the index does not know get new UIDs above its UIDNEXT);
        without an index, a new UIDVALIDITY makes clients drop their caches."""
        aside = self.uidlist.path.with_name(self.uidlist.path.name + ".corrupt")
        try:
            os.replace(self.uidlist.path, aside)
        except OSError:
            pass
        if state is not None:
            log.warn("store: {path}: unreadable uidlist set aside as {aside}; rebuilt from the index, "
                     "UIDVALIDITY {v} and UIDs kept", path=str(self.path), aside=aside.name, v=state.uidvalidity)
            self.uidlist.rebuild(state.uidvalidity, state.uidnext,
                                 {names.base_name(rec[1]): rec[0] for rec in state.records})
        else:
            log.warn("store: {path}: unreadable uidlist set aside as {aside}, no index to rebuild it from: "
                     "starting a new UIDVALIDITY", path=str(self.path), aside=aside.name)
            self.uidlist.reset()

    def _load_records(self, state: IndexState) -> None:
        self.highest_modseq = max(state.highest_modseq, 1)
        flags_of = self.flags_of
        cache = self._flag_cache
        records: dict[int, MessageRecord] = {}
        for uid, filename, size, date, modseq in state.records:
            letters = filename.partition(":2,")[2]
            flags = cache[letters] if letters in cache else flags_of(letters)
            records[uid] = MessageRecord(uid, filename, flags, size, date, modseq)
        self.records = records
        self.by_filename = {r.filename: uid for uid, r in records.items()}
        self._by_base = None
        self.unsorted = any(a >= b for a, b in zip(records, list(records)[1:]))
        self.version += 1

    # -- sync ------------------------------------------------------------------------

    def needs_scan(self) -> bool:
        """Cheap: have new/ or cur/ changed since the last listing we trust?  (For the
        worker thread; the reactor asks about the listing it has seen published:
        :meth:`changed_since`.)"""
        return self.changed_since(self.listing)

    @property
    def listing(self) -> Listing:
        """The directory state the records were last listed at."""
        return Listing(self.new_mtime, self.cur_mtime, self.dirty, self.recheck_ns,
                       (*self.modlog.ident, self.modlog.offset))

    def changed_since(self, listing: Listing) -> bool:
        """Cheap (three stat calls): have new/, cur/ or the modseq log changed since
        ``listing``, or is it not to be trusted (any more)?"""
        if self.gone:
            return False
        if listing.dirty or (listing.recheck_ns and time.time_ns() >= listing.recheck_ns):
            return True
        try:
            if os.stat(self.new).st_mtime_ns != listing.new_mtime or \
                    os.stat(self.cur).st_mtime_ns != listing.cur_mtime:
                return True
            st = os.stat(self.modlog.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino, st.st_size) != listing.log

    def _dir_mtimes(self) -> tuple[int, int] | None:
        try:
            return os.stat(self.new).st_mtime_ns, os.stat(self.cur).st_mtime_ns
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _own_change(self) -> Iterator[None]:
        """Around an own change to cur/ (lock held): when new/ and cur/ were still as
        listed before it, take their mtimes after it as listed too, so that the next
        sync does not list the folder for this process's own change.  Under steady
        change (ten sessions on one folder) nearly every sync listed all of cur/ in
        the folder's queue: 184 listings of 2,000 names in 1,000 commands, a fifth of
        the queue's time.  A change by a program that does not log (another MUA)
        during the operation or in the same clock tick after it is then found by the
        listing the same-tick window asks for a second later (``recheck_ns``)."""
        before = self._dir_mtimes()
        clean = not self.dirty and before == (self.new_mtime, self.cur_mtime)
        yield
        if clean and not self.dirty and not self.gone:
            now = time.time_ns()
            after = self._dir_mtimes()
            if after is None:
                return
            self.new_mtime, self.cur_mtime = after
            due = now + _DIRTY_WINDOW_NS
            # The first unlisted change's deadline stands: under steady change the
            # folder is still listed once a second.
            self.recheck_ns = min(self.recheck_ns, due) if self.recheck_ns else due

    def scan_if_needed(self) -> Changes:
        """A scan queued behind this folder's own operation (a STORE renaming
        thousands of files wakes the inotify watch many times) often finds, by the
        time it runs, that the operation recorded the new mtimes itself: then three
        stat calls instead of listing the folder again."""
        return self.scan() if self.needs_scan() else NO_CHANGES

    def scan(self) -> Changes:
        """List new/ and cur/ and bring the records in line with them (under the folder
        lock: the modseq log then holds no change the listing does not show)."""
        try:
            with self.locked():
                return self._scan()
        except FileNotFoundError:
            # Deleted or renamed away (DELETE and RENAME do not wait for the folder
            # lock, so this can happen with the lock held, in a batch).
            if not self.path.exists():
                return self._vanish()
            raise

    def _scan(self) -> Changes:
        logged = self._apply_log(self.modlog.read_tail())
        # The clock is read before the stats: the window asks whether a change could
        # still come within the tick of the mtimes seen, i.e. how old they were when
        # seen.  Read after, a thread that stalled in between (GIL, a loaded machine)
        # would take them for older than they were and trust a listing that may hide
        # such a change on a coarse-clock file system.
        now = time.time_ns()
        try:
            st_new = os.stat(self.new)
            st_cur = os.stat(self.cur)
            new_names = os.listdir(self.new)  # new/ before cur/: a file moving between
            cur_names = os.listdir(self.cur)  # them is then seen at least once
        except FileNotFoundError:
            return self._vanish()
        if self._replaced():
            # Deleted and created again (DELETE then CREATE of the same name) before
            # this scan ran: another folder now, with its own UIDVALIDITY and files.
            # Without this check only the inotify watch noticed, and where no watch
            # could be added (the watch limit reached) APPEND wrote through the old
            # folder into a modseq log that no longer exists.
            return self._vanish()
        if self.keywords.load():
            self._flag_cache.clear()
        added: list[int] = []
        flagged: list[int] = []
        seen: set[int] = set()
        unknown: list[tuple[str, str, bool]] = []  # base, filename, in new/
        by_filename = self.by_filename
        for fn in cur_names:
            uid = by_filename.get(fn)
            if uid is not None:
                seen.add(uid)
                continue
            if fn.startswith(".") or "\n" in fn:
                continue
            base = names.base_name(fn)
            uid = self.by_base.get(base)
            if uid is not None and uid not in seen:
                # Renamed by another agent: a flag change.  Same base, so by_base
                # stays; not through _put (see _set_modseq).
                old = self.records[uid]
                del by_filename[old.filename]
                by_filename[fn] = uid
                self.records[uid] = MessageRecord(uid, fn, self.flags_of(fn.partition(":2,")[2]), old.size,
                                                  old.internaldate, old.modseq, old.recent)
                self.version += 1
                self.index_dirty = True
                seen.add(uid)
                flagged.append(uid)
            elif uid is None:
                unknown.append((base, fn, False))
        cur_bases = {u[0] for u in unknown}
        for fn in new_names:
            if fn.startswith(".") or "\n" in fn:
                continue
            base = names.base_name(fn)
            uid = self.by_base.get(base)
            if (uid is not None and uid in seen) or base in cur_bases:
                continue  # also in cur/: it moved while we listed
            unknown.append((base, fn, True))
        renamed_away = False
        if unknown:
            added, renamed_away = self._adopt_unknown(unknown, seen, flagged)
        expunged = [uid for uid in self.records if uid not in seen]
        for uid in expunged:
            self._drop(uid)
        if expunged and self.cache is not None:
            self.cache.forget(set(expunged))
        self._attribute(added, flagged, expunged)
        flagged = list(dict.fromkeys(flagged + [u for u in logged if u in self.records]))
        self.new_mtime, self.cur_mtime = st_new.st_mtime_ns, st_cur.st_mtime_ns
        newest = max(self.new_mtime, self.cur_mtime)
        self.dirty = renamed_away
        self.recheck_ns = newest + _DIRTY_WINDOW_NS if now - newest < _DIRTY_WINDOW_NS else 0
        self.index_dirty = True
        return Changes(added, expunged, flagged)

    def _attribute(self, added: list[int], flagged: list[int], expunged: list[int]) -> None:
        """Give the changes a listing found their modseqs (lock held): the logged one
        when the log has the change, else one new modseq for all that it lacks
        (another program's change) -- then logged, so every process agrees."""
        pending = self.pending
        need: dict[str, list[int]] = {}
        memo: dict[str, str] = {}
        for uid in added + flagged:
            rec = self.records.get(uid)
            if rec is None:
                continue
            letters = self._norm(rec, memo)
            p = pending.get(uid)
            if p is not None and p[1] == letters:
                if rec.modseq != p[0]:
                    self._set_modseq(rec, p[0])
            else:
                need.setdefault(letters, []).append(uid)
        gone = [uid for uid in expunged if not (uid in pending and pending[uid][1] is None)]
        pending.clear()
        if need or gone:
            changes: list[tuple[str | None, list[int]]] = list(need.items())  # type: ignore[arg-type]
            changes.append((None, gone))
            modseq = self.modlog.append(changes, len(self.records))
            for uids in need.values():
                for uid in uids:
                    self._set_modseq(self.records[uid], modseq)
        self.highest_modseq = self.modlog.highest

    def _adopt_unknown(self, unknown: list[tuple[str, str, bool]], seen: set[int], flagged: list[int]) -> tuple[list[int], bool]:
        added: list[int] = []
        renamed_away = False
        unknown.sort(key=lambda u: _sort_key(u[1]))
        with self.locked():
            ul = self.uidlist
            ul.read_tail()
            for base, _, _ in unknown:
                known = self.by_base.get(base)
                if known is not None:
                    ul.uids.setdefault(base, known)  # e.g. moved back to new/ by a tool
            # A file still in new/ is taken as never numbered without reading the whole
            # list.  The one case where that is wrong: a process died between giving it
            # a UID and moving it to cur/, and this process opened from an index that
            # had already read past that line; the message then gets a second UID
            # before any client could have seen the first.
            if any(not in_new and base not in ul.uids for base, _, in_new in unknown):
                # A file in cur/ we have no UID for: maybe our index skipped part of the
                # uidlist; read all of it before giving a second UID to a message.
                ul.load()
            assigned = ul.assign(base for base, _, _ in unknown)
            for base, fn, in_new in unknown:
                uid = assigned.get(base)
                if uid is None:
                    continue
                recent = False
                target = fn
                if in_new:
                    target = fn if ":2," in fn else fn + ":2,"
                    try:
                        os.rename(self.new / fn, self.cur / target)
                    except FileNotFoundError:
                        renamed_away = True  # another agent moved it; the next scan finds it
                        continue
                    recent = True
                path = self.cur / target
                try:
                    st = os.stat(path)
                    size = names.crlf_size_of(target)
                    if size is None:
                        size = crlf_size(path)
                except FileNotFoundError:
                    renamed_away = True
                    continue
                old = self.records.get(uid)
                if old is not None:
                    # A known message that reappeared in new/: same UID, new flags.
                    self._put(old._replace(filename=target, flags=self.flags_of(target.partition(":2,")[2])))
                    seen.add(uid)
                    flagged.append(uid)
                    continue
                rec = MessageRecord(uid, target, self.flags_of(target.partition(":2,")[2]), size,
                                    st.st_mtime, 0, recent)  # modseq: _attribute
                self._put(rec)
                seen.add(uid)
                added.append(uid)
                if recent:
                    self.recent.append(uid)
        return added, renamed_away

    def _vanish(self) -> Changes:
        self.gone = True
        expunged = list(self.records)
        for uid in expunged:
            self._drop(uid)
        return Changes([], expunged, [])

    def _check(self) -> None:
        if self.gone:
            raise FolderGone("the folder was deleted or renamed")

    # -- flags ---------------------------------------------------------------------------

    def store_flags(self, uids: Iterable[int], flags: Iterable[str], mode: str) -> list[MessageRecord]:
        self._check()
        if mode not in ("+", "-", "="):
            raise ValueError(f"bad mode {mode!r}")
        sys_letters, kws = split_flags(list(flags))
        with self.locked():
            if kws and mode != "-":
                if self.keywords.load():
                    self._flag_cache.clear()
                kw_letters = self.keywords.letters_for(kws)
            else:
                kw_letters = self.keywords.known_letters(kws)
            letters = set(sys_letters + kw_letters)
            uids = list(uids)
            with self._own_change():
                changed, missing = self._rename_flags(uids, letters, mode)
                if missing:
                    self.scan()
                    more, _ = self._rename_flags(missing, letters, mode)
                    changed += more
                if not changed:
                    return []
                self._log_records(changed)
            return [self.records[uid] for uid in changed if uid in self.records]

    def store_flags_unchanged_since(self, uids: Iterable[int], flags: Iterable[str], mode: str,
                                    modseq: int) -> tuple[list[MessageRecord], list[int]]:
        """A conditional STORE (RFC 7162 3.1.3): change only the messages whose modseq
        is at most ``modseq``; (changed records, UIDs left alone because they changed
        since).  Test and change happen under the folder lock, after every logged
        change by others was taken in, so no change slips in between."""
        self._check()
        with self.locked():
            self._catch_up()
            uids = [u for u in uids if u in self.records]
            modified = [u for u in uids if self.records[u].modseq > modseq]
            skip = set(modified)
            changed = self.store_flags([u for u in uids if u not in skip], flags, mode)
            return changed, modified

    def expunged_since(self, modseq: int) -> tuple[set[int], bool]:
        """UIDs expunged with a modseq above ``modseq`` and whether that is all of them
        (see ModLog.expunged_since)."""
        return self.modlog.expunged_since(modseq)

    def _rename_flags(self, uids: list[int], letters: set[str], mode: str) -> tuple[list[int], list[int]]:
        """Rename each message's file to its new flags; (changed UIDs, UIDs whose file
        was not where the record says).  The records change in place, not through
        ``_put``: only the name and flags move (the base, and so ``by_base``, stay).
        A folder has few distinct flag sets, so each is worked out once: with 10,000
        messages the per-message Python work was a third of STORE 1:*'s 200 ms, next
        to 130 ms of renames."""
        changed, missing = [], []
        cur = self.cur_prefix
        records, by_filename = self.records, self.by_filename
        plans: dict[str, tuple[str, frozenset[str]] | None] = {}
        rename = os.rename
        for uid in uids:
            rec = records.get(uid)
            if rec is None:
                continue
            fn = rec.filename
            base, sep, have = fn.partition(":2,")
            if not sep:
                have = ""
            try:
                plan = plans[have]
            except KeyError:
                now = set(have)
                want = now | letters if mode == "+" else now - letters if mode == "-" else set(letters)
                wanted = "".join(sorted(want))
                plan = plans[have] = None if want == now else (wanted, self.flags_of(wanted))
            if plan is None:
                continue
            target = f"{base}:2,{plan[0]}"
            try:
                rename(cur + fn, cur + target)  # str paths: pathlib costs more than the rename
            except FileNotFoundError:
                missing.append(uid)
                continue
            del by_filename[fn]
            by_filename[target] = uid
            records[uid] = MessageRecord(uid, target, plan[1], rec.size, rec.internaldate, rec.modseq, rec.recent)
            changed.append(uid)
        if changed:
            self.version += 1
            self.index_dirty = True
        return changed, missing

    # -- expunge ---------------------------------------------------------------------------

    def expunge(self, uids: Iterable[int], sync: bool = True) -> list[int]:
        """Unlink the messages and log their expunge; with ``sync`` also make the
        unlinks durable (:class:`Folder` does that after the operation, outside the
        folder's queue: see :meth:`Folder.expunge`)."""
        self._check()
        with self.locked(), self._own_change():
            gone = self._expunge(uids)
            if gone:
                self._log_records((), gone)
        if gone and sync:
            self.sync_names()
        return gone

    def _expunge(self, uids: Iterable[int]) -> list[int]:
        gone: list[int] = []
        missing: list[int] = []
        for uid in uids:
            rec = self.records.get(uid)
            if rec is None:
                continue
            try:
                os.unlink(self.cur / rec.filename)
            except FileNotFoundError:
                missing.append(uid)
                continue
            self._drop(uid)
            gone.append(uid)
        if missing:
            self.scan()  # renamed by another agent (flags) or already expunged
            for uid in missing:
                rec = self.records.get(uid)
                if rec is not None:
                    try:
                        os.unlink(self.cur / rec.filename)
                    except FileNotFoundError:
                        continue
                    self._drop(uid)
                    gone.append(uid)
        if gone:
            if self.cache is not None:
                self.cache.forget(set(gone))
            self._maybe_compact()
        return sorted(gone)

    def forget(self, uids: Iterable[int]) -> list[int]:
        """Drop the records of messages whose files moved to another folder (MOVE);
        returns the UIDs dropped."""
        with self.locked():
            gone = [uid for uid in uids if self._drop(uid) is not None]
            if gone:
                self._log_records((), gone)
        if gone:
            if self.cache is not None:
                self.cache.forget(set(gone))
            self._maybe_compact()
        return gone

    def _maybe_compact(self) -> None:
        if len(self.uidlist.uids) <= 2 * len(self.records) + 1000:
            return
        with self.locked():
            # Under the lock every UID given out belongs to a file already in new/ or
            # cur/ (or one deleted), so a fresh listing tells live from dead.
            live = {names.base_name(n) for n in os.listdir(self.new)}
            live.update(names.base_name(n) for n in os.listdir(self.cur))
            self.uidlist.compact(live)

    def sync_names(self) -> None:
        """Make cur/'s names durable (after renames and unlinks into or from it)."""
        try:
            _fsync_dir(self.cur)
        except FileNotFoundError:
            pass  # the folder was deleted meanwhile: nothing of it to keep

    # -- append / copy -----------------------------------------------------------------------

    def _letters(self, flags: Iterable[str]) -> str:
        sys_letters, kws = split_flags(list(flags))
        if not kws:
            return sys_letters
        with self.locked():
            if self.keywords.load():
                self._flag_cache.clear()
            return sys_letters + self.keywords.letters_for(kws)

    def append(self, source: bytes | Path, flags: Iterable[str], internaldate: float | None) -> int:
        """Store a message durably in cur/ and give it a UID.  ``source`` has CRLF (or
        LF) line ends; it is stored with LF (as delivery does)."""
        (uid,) = self.append_many([(source, flags, internaldate)])
        return uid

    def append_many(self, items: list[tuple[bytes | Path, Iterable[str], float | None]]) -> list[int]:
        """Store several messages all or none (MULTIAPPEND, RFC 3502): each is written
        and fsynced in tmp/ first; if any write fails, every one written is removed and
        nothing reaches cur/.  Then all are renamed in, the directory fsynced once, and
        the UIDs given in one uidlist step (consecutive unless another process appends
        at the same moment)."""
        written = self.write_new([(source, internaldate) for source, _, internaldate in items])
        uids = self.append_written(written, [flags for _, flags, _ in items])
        self.sync_names()
        return uids

    def write_new(self, items: list[tuple[bytes | Path, float | None]]) -> list[tuple[Path, str, int, int]]:
        """The first half of :meth:`append_many`: write and fsync each message into
        tmp/ under a new unique name; (tmp path, base, size, CRLF size) each.  All or
        none.  It touches no state of this object, so it may run in another worker
        thread while an operation holds the folder: the file's fsync, the slowest step
        of an APPEND, then no longer queues every other session's command behind it."""
        self._check()
        written: list[tuple[Path, str, int, int]] = []
        try:
            for source, internaldate in items:
                base = names.unique_name()
                tmp = self.tmp / base
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                written.append((tmp, base, 0, 0))
                with os.fdopen(fd, "wb") as f:
                    size, wire = _write_lf(f, source)
                    f.flush()
                    fsutil.fsync_fd(f.fileno())
                if internaldate is not None:
                    os.utime(tmp, (internaldate, internaldate))
                written[-1] = (tmp, base, size, wire)
        except BaseException:
            self.discard_new(written)
            raise
        return written

    @staticmethod
    def discard_new(written: list[tuple[Path, str, int, int]]) -> None:
        for tmp, _, _, _ in written:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def append_written(self, written: list[tuple[Path, str, int, int]], flags: list[Iterable[str]]) -> list[int]:
        """The second half of :meth:`append_many` (one operation at a time): rename the
        files :meth:`write_new` made into cur/ with their flags and give the UIDs
        (the uid list fsynced: a UID any session sees is never given again).  All or
        none: on failure every file is removed.  The caller then fsyncs cur/ (the new
        names) before it acknowledges."""
        with self.locked(), self._own_change():
            moved: list[str] = []
            try:
                self._check()
                final = []
                for (tmp, base, size, wire), fl in zip(written, flags):
                    final.append(names.with_flags(names.with_sizes(base, size, wire), self._letters(fl)))
                for (tmp, _, _, _), name in zip(written, final):
                    os.rename(tmp, self.cur / name)
                    moved.append(name)
            except BaseException:
                self.discard_new(written)
                for name in moved:
                    try:
                        os.unlink(self.cur / name)
                    except OSError:
                        pass
                raise
            uids = self._give_uids([(base, name, True) for (_, base, _, _), name in zip(written, final)])
        return uids  # type: ignore[return-value]

    def _give_uids(self, files: list[tuple[str, str, bool]]) -> list[int | None]:
        """UIDs for files this process just put into cur/ (recent: third item)."""
        out: list[int | None] = []
        with self.locked():
            tail = self.uidlist.read_tail()
            foreign = [b for b in tail if b not in self.by_base]
            assigned = self.uidlist.assign(b for b, _, _ in files)
            for base, name, recent in files:
                uid = assigned.get(base)
                out.append(uid)
                if uid is None:
                    continue
                path = self.cur / name
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                size = names.crlf_size_of(name)
                if size is None:
                    size = crlf_size(path)
                self._put(MessageRecord(uid, name, self.flags_of(names.split_info(name)[1]), size,
                                        st.st_mtime, 0, recent))
                if recent:
                    self.recent.append(uid)
            if any(b not in self.by_base for b in foreign):
                self.scan()  # others added messages meanwhile: show them in UID order
            self._log_records([u for u in out if u is not None and u in self.records])
        return out

    def adopt(self, items: list[tuple[Path, str, frozenset[str], float]], move: bool = False) -> list[int | None]:
        """Copy messages from another folder in: ``(path, filename, flags, date)`` each.
        Hard links when possible; with ``move`` the files are renamed in (one atomic
        step per message within a file system: a crash leaves each message in exactly
        one of the two folders).  Returns the new UIDs (None for a vanished source)."""
        self._check()
        put = _move_file if move else _link_or_copy
        letters_cache: dict[frozenset[str], str] = {}
        files: list[tuple[str, str, bool]] = []
        for src, filename, flags, date in items:
            if flags not in letters_cache:
                letters_cache[flags] = self._letters(flags)
            base = names.base_name(filename)
            rest = filename.partition(":")[0][len(base):]  # ",S=..,W=.."
            if base in self.by_base:
                base = names.unique_name()
            name = names.with_flags(base + rest, letters_cache[flags])
            try:
                if not put(src, self.cur / name, self.tmp, date):
                    base = names.unique_name()
                    name = names.with_flags(base + rest, letters_cache[flags])
                    if not put(src, self.cur / name, self.tmp, date):
                        files.append(("", "", False))
                        continue
            except MessageGone:
                files.append(("", "", False))  # the caller may look for it again
                continue
            files.append((base, name, True))
        _fsync_dir(self.cur)
        if move:
            # The names left the source folder in the same renames: make that durable
            # too (after the destination, so a crash never loses the only name).
            for src_dir in {item[0].parent for item in items}:
                _fsync_dir(src_dir)
        real = [f for f in files if f[0]]
        uids = iter(self._give_uids(real))
        return [next(uids) if f[0] else None for f in files]

    # -- reading -------------------------------------------------------------------------------

    def locate(self, uid: int) -> Path:
        """The current path of a message, looking in cur/ if it was renamed."""
        rec = self.records.get(uid)
        if rec is None:
            raise MessageGone(f"message {uid} was expunged")
        path = self.cur / rec.filename
        if path.exists():
            return path
        base = rec.base
        for fn in os.listdir(self.cur):
            if fn.startswith(base) and names.base_name(fn) == base:
                return self.cur / fn
        raise MessageGone(f"message {uid} was expunged")

    # -- persistence ---------------------------------------------------------------------------

    def save_index(self) -> None:
        """Write the cache's new values and the index, if this folder is still where
        it was opened: after a DELETE or RENAME (by any session) the directory is gone,
        or is another folder of the same name whose index and cache these are not."""
        if self.gone or not self._still_here():
            return
        try:
            self._save_index()
        except FileNotFoundError:
            if self._still_here():
                raise
            # Deleted or renamed while we wrote: nothing to keep.

    def flush_cache(self) -> None:
        """Append the cache's new values (for other processes to read), on the same
        condition as :meth:`save_index`."""
        if self.cache is None or not self.cache.pending or self.gone or self._replaced():
            return
        try:
            self.cache.flush()
        except FileNotFoundError:
            pass  # deleted or renamed meanwhile: nothing to keep

    def _replaced(self) -> bool:
        """Is the folder on disk now another than the one opened?  The directory's
        inode is not enough (a folder deleted and made again at once often gets the
        same inode back), so its uid list must still be there with our UIDVALIDITY
        (open() always leaves one).  One small read, done only when a scan lists."""
        if not self._still_here():
            return True
        try:
            with open(self.uidlist.path, "rb") as f:
                head = f.read(64).split(b"\n", 1)[0].split()
        except FileNotFoundError:
            return True
        try:
            return int(head[2][1:]) != self.uidlist.uidvalidity
        except (IndexError, ValueError):
            return False  # torn or corrupt: the uid list's own checks deal with it

    def _still_here(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return self.dir_ident in ((st.st_dev, st.st_ino), None)

    def _save_index(self) -> None:
        if self.cache is not None:
            self.cache.flush()
        if not self.index_dirty:
            return
        try:
            key = self.uidlist.stat_key()
        except FileNotFoundError:
            return
        if key[1] != self.uidlist.offset:
            key = (0, 0, 0)  # not all of it read: do not let the next open trust it
        state = IndexState(
            self.uidlist.uidvalidity,
            self.uidlist.uidnext,
            self.highest_modseq,
            key,
            -1 if self.dirty or self.recheck_ns else self.new_mtime,
            -1 if self.dirty or self.recheck_ns else self.cur_mtime,
            [[r.uid, r.filename, r.size, r.internaldate, r.modseq] for r in self.records.values()],  # type: ignore[misc]
            self.modlog.saved_position(),
        )
        index_mod.save(self.path, state)
        self.index_dirty = False


def _outcome(f: Callable[..., Any], args: tuple) -> tuple[bool, Any]:
    try:
        return True, f(*args)
    except Exception:
        return False, Failure()


def _write_lf(f: Any, source: bytes | Path) -> tuple[int, int]:
    """Write ``source`` with CRLF turned into LF; (size on disk, size on the wire)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source).replace(b"\r\n", b"\n")
        f.write(data)
        return len(data), len(data) + data.count(b"\n") - data.count(b"\r\n")
    size = wire = 0
    carry = b""
    prev_cr = False
    with open(source, "rb") as src:
        while True:
            chunk = src.read(_CHUNK)
            data = carry + chunk
            if chunk and data.endswith(b"\r"):
                data, carry = data[:-1], b"\r"  # keep a CR whose LF may follow
            else:
                carry = b""
            data = data.replace(b"\r\n", b"\n")
            f.write(data)
            size += len(data)
            extra = data.count(b"\n") - data.count(b"\r\n")
            if prev_cr and data[:1] == b"\n":
                extra -= 1
            wire += len(data) + extra
            if data:
                prev_cr = data[-1:] == b"\r"
            if not chunk:
                break
    return size, wire


def _move_file(src: Path, dst: Path, tmp_dir: Path, date: float) -> bool:
    """Rename ``src`` to ``dst`` (atomic: the message is in one folder or the other);
    across file systems copy, make the copy durable, then unlink ``src``.  False if
    ``dst`` exists.  Raises MessageGone if ``src`` vanished."""
    if os.path.lexists(dst):
        return False
    try:
        os.rename(src, dst)
        return True
    except FileNotFoundError:
        raise MessageGone(f"{src.name} vanished") from None
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    if not _link_or_copy(src, dst, tmp_dir, date):
        return False
    _fsync_dir(dst.parent)  # the copy's name is durable before the original goes
    try:
        os.unlink(src)
    except FileNotFoundError:
        pass
    return True


def _link_or_copy(src: Path, dst: Path, tmp_dir: Path, date: float) -> bool:
    """Hard-link ``src`` to ``dst`` (copy through tmp/ across file systems); False if
    ``dst`` exists.  Raises MessageGone if ``src`` vanished."""
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:
        raise MessageGone(f"{src.name} vanished") from None
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
    tmp = tmp_dir / names.unique_name()
    try:
        with open(src, "rb") as s, open(tmp, "wb") as d:
            shutil.copyfileobj(s, d, _CHUNK)
            d.flush()
            fsutil.fsync_fd(d.fileno())
        os.utime(tmp, (date, date))
        os.link(tmp, dst)
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:
        raise MessageGone(f"{src.name} vanished") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


@implementer(IFolder)
class Folder:
    """The shared, reactor-side view of one open folder (see the module docstring)."""

    def __init__(self, release: Callable[["Folder"], defer.Deferred], account: str, name: str, disk: FolderDisk,
                 workers: IWorkers, reactor: Any) -> None:
        self._release = release  # the store's: count down the users, unload at the last
        self.workers = workers  # the store's pool: every disk step runs there
        self.reactor = reactor
        self.account = account
        self.name = name
        self._disk = disk
        self._lock = defer.DeferredLock()
        self._batch: list[tuple[Callable[..., Any], tuple, Callable[[], None] | None, defer.Deferred]] = []
        self._listeners: list[Listener] = []
        self._records: list[MessageRecord] = []
        self._by_uid: dict[int, MessageRecord] = {}
        self._version = -1
        self._uidnext = 1
        self._highest_modseq = 1
        self._keywords: tuple[str, ...] = ()
        self._unclaimed: set[int] = set()
        self._queued_sync: list[defer.Deferred] | None = None
        # The directory state behind the published records.  ``sync`` compares the
        # disk with this, not with the FolderDisk's own: a worker records the mtimes
        # of a listing before the reactor publishes its records, and a session that
        # opened the folder in between would take the old records for current (a
        # POP3 listing naming messages another process had expunged: issue 16).
        self._listing = UNLISTED
        self._save_call: Any = None
        self._cache_flush_call: Any = None
        self._recheck_call: Any = None  # a sync when the listing's same-tick window ends
        self.linger_call: Any = None  # the store's pending unload after the last close
        self.refs = 0
        self._publish()

    # -- state ----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._disk.path

    @property
    def uidvalidity(self) -> int:
        return self._disk.uidlist.uidvalidity

    @property
    def uidnext(self) -> int:
        return self._uidnext

    @property
    def highest_modseq(self) -> int:
        return self._highest_modseq

    @property
    def gone(self) -> bool:
        return self._disk.gone

    def messages(self) -> Sequence[MessageRecord]:
        """The messages, sorted by UID (replaced on change, never mutated)."""
        return self._records

    def get(self, uid: int) -> MessageRecord | None:
        return self._by_uid.get(uid)

    def keywords(self) -> list[str]:
        """Keywords defined in this folder (for FLAGS / PERMANENTFLAGS), sorted."""
        return list(self._keywords)

    def can_add_keywords(self) -> bool:
        """Whether PERMANENTFLAGS may include \\* (a keyword letter is free)."""
        return len(self._keywords) < 26

    def claim_recent(self, readonly: bool = False) -> set[int]:
        """The UIDs that are \\Recent and not yet given to a session.  A read-write
        caller gets them and no later caller does; a read-only one (EXAMINE) only looks:
        it must not take \\Recent from the next SELECT (RFC 3501 6.3.2)."""
        unclaimed = self._unclaimed
        if not unclaimed:
            return set()
        out = {u for u in unclaimed if u in self._by_uid}
        if readonly:
            unclaimed.intersection_update(out)  # forget expunged ones
        else:
            unclaimed.clear()
        return out

    def recent_count(self) -> int:
        """How many messages are \\Recent and not claimed by a session yet (STATUS)."""
        by_uid = self._by_uid
        return sum(1 for u in self._unclaimed if u in by_uid)

    def _publish(self) -> Changes | None:
        # UIDNEXT, HIGHESTMODSEQ and the keywords are published with the records they
        # belong to: read live while a worker assigns UIDs, they would run ahead of
        # messages() (a session would take an arrival it cannot see yet for seen).
        disk = self._disk
        self._listing = disk.listing
        self._schedule_recheck()
        self._uidnext = disk.uidlist.uidnext
        self._highest_modseq = disk.highest_modseq
        names = disk.keywords.names
        if len(names) != len(self._keywords):
            self._keywords = tuple(sorted(names.values()))
        if disk.recent:
            self._unclaimed.update(disk.recent)
            disk.recent = []
        if disk.version == self._version:
            return None
        if disk.unsorted:
            disk.records = dict(sorted(disk.records.items()))
            disk.unsorted = False
        self._by_uid = dict(disk.records)
        self._records = list(self._by_uid.values())
        self._version = disk.version
        if self._unclaimed:
            # Only a read-write SELECT claims \Recent; in a folder none does (a POP3
            # maildrop), every UID that ever arrived stayed here after its expunge:
            # the 30-min soak's workers grew 1.8k Python blocks/min (issue 16).
            self._unclaimed.intersection_update(self._by_uid)
        return None

    # -- operations ------------------------------------------------------------------

    def _op(self, f: Callable[..., Any], *args: Any, starting: Callable[[], None] | None = None) -> defer.Deferred:
        """Run ``f(*args)`` in the pool, one operation of the folder at a time; fires
        with its result once the change is published.  Operations that queue while
        one runs go together in the next batch (FolderDisk.run_batch); ``starting``
        is called when the batch holding this one starts."""
        d: defer.Deferred = defer.Deferred()
        self._batch.append((f, args, starting, d))
        if len(self._batch) == 1:
            self._lock.run(self._run_batch).addErrback(
                lambda fl: log.failure("store: a batch of operations on {path} failed", fl, path=str(self.path)))
        return d

    def _run_batch(self) -> defer.Deferred:
        batch, self._batch = self._batch, []
        for _, _, starting, _ in batch:
            if starting is not None:
                starting()
        if len(batch) == 1:  # the common case: as it always ran, no batch around it
            f, args, _, _ = batch[0]
            work = self.workers.run(f, *args).addCallbacks(lambda r: [(True, r)], lambda fl: [(False, fl)])
        else:
            work = self.workers.run(self._disk.run_batch, [(f, args) for f, args, _, _ in batch])

        def done(results: list[tuple[bool, Any]]) -> None:
            before = self._version
            self._publish()
            if self._version != before:
                self._changed()
            for (_, _, _, d), (ok, value) in zip(batch, results):
                if ok:
                    d.callback(value)
                else:
                    d.errback(value)

        def failed(fl: Failure) -> None:
            self._publish()
            for _, _, _, d in batch:
                d.errback(fl)

        return work.addCallbacks(done, failed)

    def _schedule_recheck(self) -> None:
        """Sessions waiting (IDLE) see a change the listing may hide in its clock tick
        (Listing.recheck_ns) when the window ends, not only at their next command."""
        due = self._listing.recheck_ns
        if not due or not self._listeners or (self._recheck_call is not None and self._recheck_call.active()):
            return
        delay = max(0.0, (due - time.time_ns()) / 1e9) + 0.01
        self._recheck_call = self.reactor.callLater(delay, self._recheck)

    def _recheck(self) -> None:
        self._recheck_call = None
        d = self.sync()
        d.addErrback(lambda f: log.failure("store: sync after the same-tick window failed", f))
        d.addBoth(lambda _: self._schedule_recheck())

    def _changed(self) -> None:
        for cb in list(self._listeners):
            try:
                cb(self)
            except Exception:
                log.failure("store: folder listener failed")
        if self._save_call is None or not self._save_call.active():
            self._save_call = self.reactor.callLater(_INDEX_SAVE_DELAY, self.save_index)

    def sync(self) -> defer.Deferred:
        """Pick up outside changes; fires with :class:`Changes` (empty when none).
        Three stat calls in the reactor thread when nothing changed since the listing
        that ``messages()`` shows."""
        if not self._disk.changed_since(self._listing):
            return defer.succeed(NO_CHANGES)
        if self._queued_sync is not None:
            # A scan is queued and has not listed anything yet: it will see what this
            # caller wants seen, so share it (many sessions syncing after one delivery).
            waiter: defer.Deferred = defer.Deferred()
            self._queued_sync.append(waiter)
            return waiter
        waiters: list[defer.Deferred] = []
        self._queued_sync = waiters

        def starting() -> None:
            self._queued_sync = None  # callers from now on need a scan of their own

        def fan_out(result: Any) -> Any:
            for w in waiters:
                if isinstance(result, Failure):
                    w.errback(result)
                else:
                    w.callback(result)
            return result

        return self._op(self._disk.scan_if_needed, starting=starting).addBoth(fan_out)

    def store_flags(self, uids: Iterable[int], flags: Iterable[str], mode: str) -> defer.Deferred:
        """Add ('+'), remove ('-') or set ('=') flags; fires with the changed records
        (new ``modseq``).  UIDs not in the folder are skipped.  May fail with
        TooManyKeywords or FolderGone."""
        return self._op(self._disk.store_flags, list(uids), list(flags), mode)

    def store_flags_unchanged_since(self, uids: Iterable[int], flags: Iterable[str], mode: str,
                                    modseq: int) -> defer.Deferred:
        """STORE (UNCHANGEDSINCE modseq): fires with (changed records, UIDs not
        changed because their modseq is above ``modseq``)."""
        return self._op(self._disk.store_flags_unchanged_since, list(uids), list(flags), mode, modseq)

    def expunged_since(self, modseq: int) -> defer.Deferred:
        """Fires with (UIDs expunged after ``modseq``, whether the record reaches back
        that far) for QRESYNC's VANISHED (EARLIER)."""
        return self.workers.run(self._disk.expunged_since, modseq)

    def expunge(self, uids: Iterable[int]) -> defer.Deferred:
        """Delete messages (durably); fires with the sorted UIDs removed.  The fsync
        of cur/ that makes the unlinks durable runs after the operation, outside the
        folder's queue (the next operations need not wait for the disk), and before
        this fires."""
        d = self._op(self._disk.expunge, list(uids), False)
        return d.addCallback(self._durable)

    def _durable(self, result: Any) -> defer.Deferred:
        """Fire with ``result`` once cur/'s names are on disk (see docs/architecture.md,
        "What is fsynced, and when")."""
        if not result:
            return defer.succeed(result)
        return self.workers.run(self._disk.sync_names).addCallback(lambda _: result)

    def append(self, source: bytes | Path, flags: Iterable[str] = (), internaldate: float | None = None) -> defer.Deferred:
        """Store a message (bytes, or a path to a file to copy); fires with its UID after
        file, directory and uidlist are fsynced.  The message is \\Recent."""
        return self.append_many([(source, flags, internaldate)]).addCallback(lambda uids: uids[0])

    def append_many(self, items: list[tuple[bytes | Path, Iterable[str], float | None]]) -> defer.Deferred:
        """Store ``(source, flags, internaldate)`` messages all or none; fires with
        their UIDs, in order, once all are durable (MULTIAPPEND).  The files are
        written and fsynced outside the folder's queue (FolderDisk.write_new); only
        renaming them in and numbering them is an operation on the folder."""
        flags = [list(fl) for _, fl, _ in items]
        d = self.workers.run(self._disk.write_new, [(src, date) for src, _, date in items])
        d.addCallback(lambda written: self._op(self._disk.append_written, written, flags))
        # The new names are made durable outside the queue too; the uid list already
        # is, so a UID another session saw meanwhile is never given again.
        return d.addCallback(self._durable)

    def copy(self, uids: Iterable[int], dest: "Folder") -> defer.Deferred:
        """Copy messages with their flags and dates; fires with [(src_uid, dst_uid)]
        for the messages that still existed (UIDPLUS COPYUID order)."""
        recs = [r for r in (self.get(u) for u in uids) if r is not None]
        items = [(self.path / "cur" / r.filename, r.filename, r.flags, r.internaldate) for r in recs]

        d = dest._op(self._adopt_many, dest, recs, items)
        return d.addCallback(lambda new: [(r.uid, n) for r, n in zip(recs, new) if n is not None])

    def _adopt_many(self, dest: "Folder", recs: list[MessageRecord], items: list, move: bool = False) -> list[int | None]:
        out = dest._disk.adopt(items, move)
        for i, (rec, item) in enumerate(zip(recs, items)):
            if out[i] is None:
                # Renamed (flags) by another agent since we looked, or expunged: look
                # for it again under its current name.
                try:
                    out[i] = dest._disk.adopt([(self._disk.locate(rec.uid),) + item[1:]], move)[0]
                except MessageGone:
                    pass
        return out

    def move(self, uids: Iterable[int], dest: "Folder") -> defer.Deferred:
        """Move messages (RFC 6851); fires with [(src_uid, dst_uid)].  Each file is
        renamed into the destination (atomic within a file system), then the source
        forgets the records: kill -9 at any point leaves no message in both folders
        (the source's next scan sees the files gone, the destination's adopts any file
        it had not numbered yet)."""
        recs = [r for r in (self.get(u) for u in uids) if r is not None]
        items = [(self.path / "cur" / r.filename, r.filename, r.flags, r.internaldate) for r in recs]

        def moved(new: list[int | None]) -> defer.Deferred:
            pairs = [(r.uid, n) for r, n in zip(recs, new) if n is not None]
            return self._op(self._disk.forget, [s for s, _ in pairs]).addCallback(lambda _: pairs)

        return dest._op(self._adopt_many, dest, recs, items, True).addCallback(moved)

    # -- reading ----------------------------------------------------------------------

    def message_path(self, uid: int) -> Path:
        """Path of a message file (LF line ends).  Raises MessageGone."""
        rec = self._by_uid.get(uid)
        if rec is None:
            raise MessageGone(f"message {uid} was expunged")
        return self._disk.cur / rec.filename

    def open_message(self, uid: int) -> BinaryIO:
        """The message file opened for binary reading (LF line ends on disk; send each
        bare LF as CRLF).  If another agent renamed it (flags) it is looked up again (a
        listing of cur/, rare).  Raises MessageGone.  Blocking."""
        rec = self._by_uid.get(uid)
        if rec is None:
            raise MessageGone(f"message {uid} was expunged")
        try:
            return open(self._disk.cur_prefix + rec.filename, "rb")
        except FileNotFoundError:
            try:
                return open(self._disk.locate(uid), "rb")
            except FileNotFoundError:
                raise MessageGone(f"message {uid} was expunged") from None

    def read_message(self, uid: int) -> bytes:
        """The stored bytes (LF line ends) of a message.  MessageGone.  Blocking."""
        with self.open_message(uid) as f:
            return f.read()

    def read_header(self, uid: int) -> bytes:
        """The header block of a message (up to and including the blank line), reading
        only as much of the file as it takes.  MessageGone.  Blocking."""
        with self.open_message(uid) as f:
            return header_block(f)

    def cached(self, uid: int, key: str, compute: Callable[[], bytes]) -> bytes:
        """A per-message value a protocol keeps in the folder's cache (ENVELOPE,
        BODYSTRUCTURE), computed by ``compute()`` on a miss.  The cache holds JSON, so
        the bytes are kept as a latin-1 string."""
        value = self.cache_get(uid, key)
        if isinstance(value, str):
            return value.encode("latin-1")
        data = compute()
        self.cache_put(uid, key, data.decode("latin-1"))
        return data

    def search_header(self, uid: int) -> bytes | None:
        """The cached SEARCH fields (From, To, Cc, Bcc, Subject) of a message's header,
        or None when not cached yet (see :meth:`remember_header`)."""
        value = self.cache_get(uid, SEARCH_CACHE_KEY)
        return value.encode("latin-1") if isinstance(value, str) else None

    def has_search_header(self, uid: int) -> bool:
        return isinstance(self.cache_get(uid, SEARCH_CACHE_KEY), str)

    def remember_header(self, uid: int, header: bytes) -> None:
        """Keep the SEARCH fields of a header block just read (FETCH, SEARCH)."""
        if not self.has_search_header(uid):
            self.cache_put(uid, SEARCH_CACHE_KEY, search_fields(header).decode("latin-1"))

    def cache_get(self, uid: int, key: str) -> Any:
        """A value a protocol cached for a message (None when absent).  The first call
        reads the cache file (once per open folder)."""
        cache = self._disk.cache
        return cache.get(uid, key) if cache is not None else None

    def cache_put(self, uid: int, key: str, value: Any) -> None:
        """Remember a JSON-serialisable value for a message; written within
        ``_CACHE_FLUSH_DELAY`` for the other processes (and with the index)."""
        cache = self._disk.cache
        if cache is not None and uid in self._by_uid:
            cache.put(uid, key, value)
            if self._cache_flush_call is None:
                self._cache_flush_call = self.reactor.callLater(_CACHE_FLUSH_DELAY, self._flush_cache)

    def _flush_cache(self) -> None:
        self._cache_flush_call = None
        self.workers.run(self._disk.flush_cache).addErrback(
            lambda f: log.warn("store: cannot write the cache of {path}: {err}", path=str(self.path),
                               err=f.getErrorMessage()))

    # -- listeners and lifetime -----------------------------------------------------------

    def add_listener(self, cb: Listener) -> None:
        self._listeners.append(cb)
        self._schedule_recheck()

    def remove_listener(self, cb: Listener) -> None:
        try:
            self._listeners.remove(cb)
        except ValueError:
            pass
        if not self._listeners and self._recheck_call is not None:
            if self._recheck_call.active():
                self._recheck_call.cancel()
            self._recheck_call = None

    def mark_dirty(self) -> None:
        """Distrust the last listing (the folder was renamed or deleted): the next
        sync rescans."""
        self._disk.dirty = True
        self._listing = self._listing._replace(dirty=True)

    def notified(self, account: str = "", folder: str = "") -> None:
        """store.notify and watch callback: something (a delivery, another process)
        changed the folder on disk.  A folder nobody holds (lingering after its last
        session) is not synced now: whoever opens it next syncs it first
        (MaildirStore.open_folder).  Syncing it took the folder lock from the process
        actually working on it: after another worker's STORE 1:* on 10,000 messages
        the lingering copy listed and took in all 10,000 renames under the lock, and
        that worker's next STORE waited (bench/imap_folder.py: STORE -FLAGS, which
        follows +FLAGS, took 241 ms against +FLAGS' 192)."""
        if self.refs <= 0:
            return
        self.sync().addErrback(lambda f: log.failure("store: sync after notice failed", f))

    def save_index(self) -> defer.Deferred:
        """Write the index and cache (in the pool)."""
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        return self._lock.run(lambda: self.workers.run(self._disk.save_index)).addErrback(self._save_failed)

    def checkpoint(self) -> defer.Deferred:
        """Save the index now unless a save is already scheduled: a change since the
        last save schedules one (``_INDEX_SAVE_DELAY``), so only an index no change
        announced (a fresh build at open) is written at once.  For callers that give
        a reference back after each command (APPEND, STATUS): saving every time
        rewrote the whole index once per APPEND, in the folder's queue."""
        if self._save_call is not None and self._save_call.active():
            return defer.succeed(None)
        return self.save_index()

    def _save_failed(self, f: Failure) -> None:
        # The index and cache are rebuildable: a failure to write them (disk full,
        # permissions) costs a rescan at the next open, not a message.
        if f.check(OSError):
            log.warn("store: cannot save the index of {path}: {err}", path=str(self.path), err=str(f.value))
        else:
            log.failure("store: saving the index of {path} failed", f, path=str(self.path))

    def close(self) -> defer.Deferred:
        """Give back this user's reference; the last one saves the index."""
        return self._release(self)
