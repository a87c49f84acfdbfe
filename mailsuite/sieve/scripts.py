"""Where a user's Sieve scripts live, which one is active, and the compiled-script cache.

Layout, inside the account's Maildir root (``<mail_dir>/<domain>/<local>/``)::

    sieve/<name>.sieve      one file per script (UTF-8)
    sieve/active            symlink to the active script's file name, or absent
    sieve/.state/           vacation and duplicate memory (mailsuite.sieve.memory)

This is Pigeonhole's ``~/sieve/`` directory with the active link moved inside it
(Dovecot's is ``~/.dovecot.sieve -> sieve/<name>.sieve``): a Dovecot migration copies
``~/sieve/*.sieve`` here and recreates ``active`` from where ``.dovecot.sieve``
pointed.  Pigeonhole's compiled ``*.svbin`` files, if copied too, are ignored.

Scripts are compiled once and kept keyed by (path, mtime_ns, size); a changed file is
compiled again at its next use.  Every method here blocks (stat, read): the reactor
calls them through the worker pool.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mailsuite import fsutil
from mailsuite.sieve.grammar import compile_script
from mailsuite.sieve.interpreter import Script
from mailsuite.sieve.parser import SieveSyntaxError

SCRIPT_DIR = "sieve"
ACTIVE = "active"
SUFFIX = ".sieve"
MAX_NAME = 128


class BadScriptName(ValueError):
    pass


def check_name(name: str) -> str:
    """RFC 5804 1.6 script names, minus what cannot be a file name here."""
    if (not name or len(name) > MAX_NAME or name in (".", "..") or name.startswith(".")
            or any(c in name for c in "/\\") or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name)
            ):
        raise BadScriptName(f"invalid script name {name!r}")
    return name


class CompileCache:
    """Compiled scripts by path, dropped when the file's mtime or size changes."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[int, int, Script | SieveSyntaxError]] = {}
        self.max_entries = max_entries
        self.compiles = 0  # for tests: how many times a file was really parsed

    def get(self, path: Path | str, name: str | None = None) -> Script | None:
        """The compiled script at ``path``; None if there is no file; SieveSyntaxError
        (cached too) if it does not compile."""
        key = str(path)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            with self._lock:
                self._entries.pop(key, None)
            return None
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
            result = hit[2]
        else:
            with open(path, "rb") as f:
                src = f.read()
            self.compiles += 1
            try:
                commands, required = compile_script(src)
                result = Script(name or Path(path).stem, commands, required)
            except SieveSyntaxError as e:
                result = e
            with self._lock:
                if len(self._entries) >= self.max_entries:
                    self._entries.pop(next(iter(self._entries)))
                self._entries[key] = (st.st_mtime_ns, st.st_size, result)
        if isinstance(result, SieveSyntaxError):
            raise result
        return result


class UserScripts:
    """One account's script directory (used by ManageSieve, delivery and the CLI)."""

    def __init__(self, account_root: Path) -> None:
        self.root = account_root
        self.dir = account_root / SCRIPT_DIR

    def path(self, name: str) -> Path:
        return self.dir / (check_name(name) + SUFFIX)

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(e[: -len(SUFFIX)] for e in entries if e.endswith(SUFFIX) and not e.startswith("."))

    def active(self) -> str | None:
        try:
            target = os.readlink(self.dir / ACTIVE)
        except (FileNotFoundError, OSError):
            return None
        base = os.path.basename(target)
        if not base.endswith(SUFFIX):
            return None
        name = base[: -len(SUFFIX)]
        return name if (self.dir / base).is_file() else None

    def active_path(self) -> Path | None:
        name = self.active()
        return None if name is None else self.dir / (name + SUFFIX)

    def read(self, name: str) -> bytes:
        with open(self.path(name), "rb") as f:
            return f.read()

    def size_used(self, except_name: str | None = None) -> tuple[int, int]:
        """(number of scripts, bytes) stored, leaving out ``except_name``."""
        count = size = 0
        for n in self.names():
            if n == except_name:
                continue
            count += 1
            try:
                size += os.stat(self.dir / (n + SUFFIX)).st_size
            except FileNotFoundError:
                pass
        return count, size

    def write(self, name: str, data: bytes) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        fsutil.atomic_write(self.path(name), data)

    def set_active(self, name: str | None) -> None:
        """Make ``name`` the active script (None: none active), atomically."""
        link = self.dir / ACTIVE
        if name is None:
            try:
                os.unlink(link)
            except FileNotFoundError:
                return
            fsutil.fsync_dir(self.dir)
            return
        if not self.path(name).is_file():
            raise FileNotFoundError(name)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        _atomic_symlink(name + SUFFIX, link)

    def delete(self, name: str) -> None:
        os.unlink(self.path(name))
        fsutil.fsync_dir(self.dir)

    def rename(self, old: str, new: str) -> None:
        src, dst = self.path(old), self.path(new)
        if dst.exists():
            raise FileExistsError(new)
        was_active = self.active() == old
        os.link(src, dst)  # fails if dst appeared meanwhile: no silent overwrite
        if was_active:
            _atomic_symlink(new + SUFFIX, self.dir / ACTIVE)
        os.unlink(src)
        fsutil.fsync_dir(self.dir)


def _atomic_symlink(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` in one step (a new link renamed over the old)."""
    tmp = fsutil.temp_name(link)
    os.symlink(target, tmp)
    try:
        os.rename(tmp, link)
    except BaseException:
        os.unlink(tmp)
        raise
    fsutil.fsync_dir(link.parent)
