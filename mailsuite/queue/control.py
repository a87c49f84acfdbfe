"""How ``mailsuite queue`` talks to a running server: a lock file and request files.

The server holds an exclusive ``flock`` on ``<queue>/lock`` for as long as it runs.
The admin command tries the same lock without waiting:

* it gets the lock: no server runs, so the command edits the spool files itself
  (and holds the lock meanwhile, so a server starting up waits for it);
* the lock is taken: the command writes a request ``<queue>/control/<name>.req``
  (temp → rename, so the server never reads half a request) and waits for the
  server's answer in ``<name>.done``.  The server polls that folder every
  ``relay.control_poll_interval`` seconds (one listdir of an empty folder), acts
  on the spool in its own process (so it never races its own deliveries), and
  writes the answer.

Files rather than a control socket: a UNIX socket path under a deep data_dir can
exceed the 108-byte limit, and files need no listener to secure.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mailsuite import filelock
from typing import Any

from mailsuite import fsutil

OPS = ("flush", "retry", "delete", "tls-reports")


class QueueLocked(Exception):
    """Another process (a running server) holds the queue lock."""


def try_lock(path: Path) -> int:
    """An fd holding the exclusive lock on ``path``; raises QueueLocked."""
    fd = filelock.try_lock(path)
    if fd is None:
        raise QueueLocked(str(path))
    return fd


unlock = filelock.unlock


# -- the server side (blocking; run in the worker pool) -------------------------------


def read_requests(control_dir: Path) -> list[tuple[str, dict[str, Any] | None]]:
    """(name, request or None if unreadable) for each waiting request."""
    out = []
    try:
        names = sorted(os.listdir(control_dir))
    except FileNotFoundError:
        return out
    for name in names:
        if not name.endswith(".req"):
            continue
        stem = name[: -len(".req")]
        try:
            req = json.loads((control_dir / name).read_text(encoding="utf-8"))
            if not isinstance(req, dict) or req.get("op") not in OPS:
                req = None
        except (OSError, ValueError):
            req = None
        out.append((stem, req))
    return out


def answer(control_dir: Path, stem: str, ok: bool, message: str) -> None:
    # Whole or not at all; not durable: a request lost in a crash is asked again.
    fsutil.atomic_write(control_dir / f"{stem}.done", json.dumps({"ok": ok, "message": message}).encode(),
                        sync=False, sync_dir=False)
    try:
        os.unlink(control_dir / f"{stem}.req")
    except FileNotFoundError:
        pass


# -- the client side ---------------------------------------------------------------------


def request(control_dir: Path, op: str, qid: str = "", timeout: float = 15.0) -> tuple[bool, str]:
    """Ask the running server; (ok, message).  Raises TimeoutError if it does not answer."""
    control_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = f"{time.time():.6f}-{os.getpid()}-{os.urandom(3).hex()}"
    fsutil.atomic_write(control_dir / f"{stem}.req", json.dumps({"op": op, "id": qid}).encode(),
                        sync=False, sync_dir=False)
    done = control_dir / f"{stem}.done"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = json.loads(done.read_text(encoding="utf-8"))
        except FileNotFoundError:
            time.sleep(0.05)  # the mailsuite CLI's own process waiting for the server, never a reactor
            continue
        os.unlink(done)
        return bool(reply.get("ok")), str(reply.get("message", ""))
    try:
        os.unlink(control_dir / f"{stem}.req")
    except FileNotFoundError:
        pass
    raise TimeoutError("the running server did not answer")
