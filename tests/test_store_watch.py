"""The inotify folder watcher: a burst of changes in a folder wakes it once, each
watched folder only for its own changes, a lost-events overflow wakes all, a
deleted folder ends only its own watch, and the queue rests between reads."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock

from mailsuite.store.watch import DEBOUNCE, READ_PAUSE, InotifyWatcher


def maildir(root: Path, name: str) -> Path:
    for sub in ("new", "cur", "tmp"):
        (root / name / sub).mkdir(parents=True)
    return root / name


def settle(reactor: MemoryReactorClock, watcher: InotifyWatcher) -> None:
    watcher._inotify.doRead()  # what the reactor does when the inotify fd is readable
    reactor.advance(DEBOUNCE * 2)


def test_many_renames_wake_the_folder_once_and_only_that_folder(tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    watcher = InotifyWatcher(reactor)
    a, b = maildir(tmp_path, "a"), maildir(tmp_path, "b")
    woken = {"a": 0, "b": 0}
    watcher.watch(a, lambda: woken.__setitem__("a", woken["a"] + 1))
    watcher.watch(b, lambda: woken.__setitem__("b", woken["b"] + 1))
    for i in range(500):
        (a / "cur" / f"{i}.x:2,").write_bytes(b"m")
    for i in range(500):
        os.rename(a / "cur" / f"{i}.x:2,", a / "cur" / f"{i}.x:2,S")
    while True:
        try:
            data = os.read(watcher._inotify.fileno(), 1 << 16)
        except BlockingIOError:
            break
        watcher._inotify._doRead(data[:7])  # events split across reads are put together
        watcher._inotify._doRead(data[7:])
    reactor.advance(DEBOUNCE * 2)
    assert woken == {"a": 1, "b": 0}
    assert watcher._inotify._buffer == b""
    (b / "new" / "1.y").write_bytes(b"m")
    settle(reactor, watcher)
    assert woken == {"a": 1, "b": 1}


def test_an_overflow_wakes_every_folder(tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    watcher = InotifyWatcher(reactor)
    woken: list[str] = []
    for name in ("a", "b"):
        watcher.watch(maildir(tmp_path, name), lambda name=name: woken.append(name))
    watcher._inotify._doRead(struct.pack("=iIII", -1, 0x4000, 0, 0))  # IN_Q_OVERFLOW
    reactor.advance(DEBOUNCE * 2)
    assert sorted(woken) == ["a", "b"]


def test_a_deleted_folder_ends_only_its_own_watch(tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    watcher = InotifyWatcher(reactor)
    a, b = maildir(tmp_path, "a"), maildir(tmp_path, "b")
    woken: list[str] = []
    watcher.watch(a, lambda: woken.append("a"))
    watcher.watch(b, lambda: woken.append("b"))
    for sub in ("new", "cur", "tmp"):
        os.rmdir(a / sub)
    settle(reactor, watcher)
    woken.clear()
    (b / "cur" / "1.y:2,").write_bytes(b"m")
    settle(reactor, watcher)
    assert woken == ["b"]
    assert watcher._inotify.connected


def test_after_a_read_the_queue_rests_then_is_read_again(tmp_path: Path) -> None:
    """A burst (a STORE renaming 10,000 files) is read a few times, not at every
    rename: each wake-up of the reactor took the GIL from the thread renaming."""
    reactor = MemoryReactorClock()
    watcher = InotifyWatcher(reactor)
    a = maildir(tmp_path, "a")
    woken: list[str] = []
    watcher.watch(a, lambda: woken.append("a"))
    ino = watcher._inotify
    assert ino in reactor.getReaders()
    (a / "new" / "1.x").write_bytes(b"m")
    ino.doRead()
    assert ino not in reactor.getReaders()  # resting: events wait in the kernel's queue
    reactor.advance(READ_PAUSE)
    assert ino in reactor.getReaders()
    reactor.advance(DEBOUNCE)
    assert woken == ["a"]
    (a / "new" / "2.x").write_bytes(b"m")
    settle(reactor, watcher)
    assert woken == ["a", "a"]
    reactor.advance(READ_PAUSE)
    ino.connectionLost(None)
    assert not reactor.getDelayedCalls()
