"""Admin sessions, shared by every process: one small file per session under
``<data_dir>/web/sessions/``.

With ``[server] processes`` above 1 each HTTP connection may land on another worker,
so a session kept in one process's memory would be unknown to the next request.  A
file per session is the simplest state they all see: it holds the user, the CSRF
token and pending flash messages; its mtime is the last request (a session ends
``session_timeout`` seconds after it); logout removes it.  The file is named by the
SHA-256 of the cookie's random token, so the folder never holds a usable cookie.
Session files are written without fsync (losing them in a crash only logs admins
out).  Every function here blocks: the pages call them through the worker pool.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailsuite import fsutil

# Sessions kept at most; beyond, the least recently used go.
MAX_SESSIONS = 1000


@dataclass
class Session:
    user: str
    csrf: str
    flash: list[str] = field(default_factory=list)


class SessionStore:
    def __init__(self, folder: Path, timeout: float) -> None:
        self.folder = folder
        self.timeout = timeout

    def _path(self, token: str) -> Path | None:
        if not token or len(token) > 128:
            return None
        return self.folder / hashlib.sha256(token.encode("ascii", "replace")).hexdigest()

    def create(self, user: str) -> tuple[str, Session]:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._prune()
        token = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32))
        self.save(token, session)
        return token, session

    def get(self, token: str | None) -> Session | None:
        path = self._path(token or "")
        if path is None:
            return None
        try:
            st = path.stat()
            if time.time() - st.st_mtime > self.timeout:
                path.unlink(missing_ok=True)
                return None
            data = json.loads(path.read_text("utf-8"))
            os.utime(path)  # the session lasts session_timeout after its last request
            return Session(str(data["user"]), str(data["csrf"]), [str(f) for f in data.get("flash", [])])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, token: str, session: Session) -> None:
        path = self._path(token)
        if path is None or not self.folder.is_dir():
            return
        body = json.dumps({"user": session.user, "csrf": session.csrf, "flash": session.flash[-20:]})
        fsutil.atomic_write(path, body.encode("utf-8"), mode=0o600, sync=False, sync_dir=False)

    def drop(self, token: str | None) -> None:
        path = self._path(token or "")
        if path is not None:
            path.unlink(missing_ok=True)

    def drop_user(self, user: str) -> None:
        """End every session of ``user`` (their account was deleted)."""
        for path in self._files():
            try:
                if json.loads(path.read_text("utf-8")).get("user") == user:
                    path.unlink(missing_ok=True)
            except (OSError, ValueError):
                continue

    def _files(self) -> list[Path]:
        try:
            return [p for p in self.folder.iterdir() if len(p.name) == 64]
        except FileNotFoundError:
            return []

    def _prune(self) -> None:
        now = time.time()
        alive = []
        for path in self._files():
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            if now - mtime > self.timeout:
                path.unlink(missing_ok=True)
            else:
                alive.append((mtime, path))
        alive.sort()
        for _mtime, path in alive[: max(0, len(alive) - MAX_SESSIONS + 1)]:
            path.unlink(missing_ok=True)
