"""What Sieve remembers between deliveries: vacation replies sent, duplicate ids seen.

One small file per remembered (handle, key) under ``<account>/sieve/.state/<kind>/``,
named by a hash (so no address reaches a file name) and holding the time it expires.
A file per key needs no lock between concurrent deliveries in the worker pool, and a
lost write costs at most one extra vacation reply, so these writes are not fsynced.
Expired files are swept now and then by :meth:`Memory.record`.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

from mailsuite import fsutil

STATE_DIR = ".state"
SWEEP_CHANCE = 0.01


class Memory:
    def __init__(self, account_root: Path, kind: str) -> None:
        self.dir = account_root / "sieve" / STATE_DIR / kind

    def _path(self, handle: str, key: str) -> Path:
        digest = hashlib.sha256(f"{handle}\0{key.lower()}".encode("utf-8", "surrogateescape")).hexdigest()
        return self.dir / digest[:40]

    def seen(self, handle: str, key: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        try:
            with open(self._path(handle, key), "rb") as f:
                expires = float(f.read(64).decode("ascii", "replace") or 0)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return False
        return expires > now

    def record(self, handle: str, key: str, seconds: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        fsutil.atomic_write(self._path(handle, key), f"{now + seconds:.0f}".encode(), sync=False, sync_dir=False)
        if random.random() < SWEEP_CHANCE:
            self.sweep(now)

    def sweep(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return 0
        for e in entries:
            try:
                with open(e.path, "rb") as f:
                    if float(f.read(64) or 0) <= now:
                        os.unlink(e.path)
                        removed += 1
            except (OSError, ValueError):
                continue
        return removed
