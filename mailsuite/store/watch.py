"""Changes made to a folder by another process, seen within a moment.

A session in one worker must see a delivery, a flag change or an expunge made by
another worker (or by another node on the shared tree, or by Dovecot or procmail on
the same Maildirs).  The folder notices such changes by the mtimes of ``new/`` and
``cur/`` whenever it syncs; this module makes it sync soon after they happen:

- :class:`InotifyWatcher` watches ``new/`` and ``cur/`` of each loaded folder with
  Linux inotify (through ``twisted.internet.inotify``, on the reactor: no thread) and
  calls the folder back, at most once per ``DEBOUNCE`` seconds, so a burst of
  deliveries costs one sync.  Only which directory changed matters, so events are
  read by :class:`_DirINotify`, which skips the names (``STORE 1:* +FLAGS`` on 10,000
  messages is 20,000 events in every process watching the folder);
- on NFS or CephFS inotify sees only this machine's changes: there the folders are
  polled instead (:class:`PollWatcher`, every ``[imap] change_poll_interval``), and the
  inotify watcher is kept for local changes.

Our own changes wake the folder too; its sync then finds the mtimes it recorded
itself and does nothing more.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Callable

from twisted.logger import Logger
from twisted.python.filepath import FilePath
from zope.interface import Interface, implementer

log = Logger(namespace="mailsuite.store")

DEBOUNCE = 0.05  # seconds
# After each read of the inotify queue, leave it unread this long (events wait in the
# kernel's queue, 16,384 by default; an overflow wakes every folder, which is safe).
# Read at once, a folder's own STORE 1:* on 10,000 messages woke the reactor for
# every few renames, and each wake-up took the GIL from the worker thread renaming:
# that STORE took 380 ms with the folder watched against 190 ms without.
READ_PAUSE = 0.05  # seconds


class IFolderWatcher(Interface):
    def watch(path: Path, callback: Callable[[], None]) -> Any:
        """Call ``callback`` (on the reactor) soon after ``path``'s new/ or cur/
        changes; returns a handle for :meth:`unwatch`."""

    def unwatch(handle: Any) -> None:
        """Stop watching."""


class _Watch:
    def __init__(self, reactor: Any, callback: Callable[[], None]) -> None:
        self.reactor = reactor
        self.callback = callback
        self.pending: Any = None
        self.paths: list[FilePath] = []

    def poke(self, *_: Any) -> None:
        if self.pending is None:
            self.pending = self.reactor.callLater(DEBOUNCE, self._fire)

    def _fire(self) -> None:
        self.pending = None
        try:
            self.callback()
        except Exception:
            log.failure("store: change callback failed")

    def cancel(self) -> None:
        if self.pending is not None and self.pending.active():
            self.pending.cancel()
        self.pending = None


@implementer(IFolderWatcher)
class NullWatcher:
    """No watching (the folder still syncs at each command and at IDLE's interval)."""

    def watch(self, path: Path, callback: Callable[[], None]) -> Any:
        return None

    def unwatch(self, handle: Any) -> None:
        pass


_EVENT = struct.Struct("=iIII")  # wd, mask, cookie, length of the name that follows
_IN_Q_OVERFLOW = 0x4000
_IN_DELETE_SELF = 0x400


def _dir_inotify(reactor: Any) -> Any:
    from twisted.internet import inotify

    class _DirINotify(inotify.INotify):
        """Twisted's INotify reads every event into a FilePath of the file named (and
        slices its buffer once per event); here each read wakes every watched
        directory it names once, and names are skipped by their length.  A watched
        directory deleted drops its own watch only (Twisted's closes the instance).
        After a read the queue rests for READ_PAUSE, so a burst costs a few reads."""

        _resume: Any = None

        def doRead(self) -> None:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return
            if data:
                self._doRead(data)
                if self._resume is None and self.connected:
                    self.stopReading()
                    self._resume = self.reactor.callLater(READ_PAUSE, self._read_again)

        def _read_again(self) -> None:
            self._resume = None
            if self.connected:
                self.startReading()

        def connectionLost(self, reason: Any) -> None:
            if self._resume is not None and self._resume.active():
                self._resume.cancel()
            self._resume = None
            super().connectionLost(reason)

        def _doRead(self, in_: bytes) -> None:
            buf = self._buffer + in_ if self._buffer else in_
            end, pos = len(buf), 0
            woken: dict[int, int] = {}
            unpack = _EVENT.unpack_from
            while end - pos >= 16:
                wd, mask, _, size = unpack(buf, pos)
                if end - pos < 16 + size:
                    break
                pos += 16 + size
                woken[wd] = woken.get(wd, 0) | mask
            self._buffer = buf[pos:]
            for wd, mask in woken.items():
                if mask & _IN_Q_OVERFLOW:  # events were lost: wake everyone
                    targets = list(self._watchpoints.items())
                else:
                    iwp = self._watchpoints.get(wd)
                    targets = [(wd, iwp)] if iwp is not None else []
                for twd, iwp in targets:
                    for cb in iwp.callbacks:
                        cb(iwp, iwp.path, mask)
                    if mask & _IN_DELETE_SELF and twd in self._watchpoints:
                        self._rmWatch(twd)

    return _DirINotify(reactor)


@implementer(IFolderWatcher)
class InotifyWatcher:
    def __init__(self, reactor: Any) -> None:
        from twisted.internet import inotify

        self.reactor = reactor
        self._inotify = _dir_inotify(reactor)
        self._inotify.startReading()
        self._mask = (inotify.IN_CREATE | inotify.IN_DELETE | inotify.IN_MOVED_FROM | inotify.IN_MOVED_TO
                      | inotify.IN_ATTRIB)

    def watch(self, path: Path, callback: Callable[[], None]) -> Any:
        w = _Watch(self.reactor, callback)
        for sub in ("new", "cur"):
            fp = FilePath(str(path / sub).encode())
            try:
                self._inotify.watch(fp, self._mask, callbacks=[w.poke])
                w.paths.append(fp)
            except Exception as e:  # no such folder yet, or out of watches (fs.inotify.max_user_watches)
                log.warn("store: cannot watch {path} for changes: {why}", path=str(path / sub), why=str(e))
        return w

    def unwatch(self, handle: Any) -> None:
        if handle is None:
            return
        handle.cancel()
        for fp in handle.paths:
            try:
                self._inotify.ignore(fp)
            except KeyError:
                pass
        handle.paths = []


@implementer(IFolderWatcher)
class PollWatcher:
    """For shared filesystems where inotify does not see other machines' writes."""

    def __init__(self, reactor: Any, interval: float, local: IFolderWatcher | None = None) -> None:
        self.reactor = reactor
        self.interval = interval
        self.local = local or NullWatcher()

    def watch(self, path: Path, callback: Callable[[], None]) -> Any:
        from twisted.internet import task

        loop = task.LoopingCall(callback)
        loop.clock = self.reactor
        loop.start(self.interval, now=False)
        return loop, self.local.watch(path, callback)

    def unwatch(self, handle: Any) -> None:
        if handle is None:
            return
        loop, inner = handle
        if loop.running:
            loop.stop()
        self.local.unwatch(inner)


def make_watcher(reactor: Any, poll_interval: float) -> IFolderWatcher:
    """inotify where the platform has it; plus polling every ``poll_interval``
    seconds when that is above 0 (shared filesystems)."""
    try:
        local: IFolderWatcher = InotifyWatcher(reactor)
    except Exception as e:  # not Linux, or inotify instances exhausted
        log.warn("store: inotify unavailable ({why}); other processes' changes are seen by polling", why=str(e))
        local = NullWatcher()
        poll_interval = poll_interval or 1.0
    return PollWatcher(reactor, poll_interval, local) if poll_interval > 0 else local
