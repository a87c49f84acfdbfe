"""Admin sessions: random tokens in memory, each with its own CSRF token.

A session ends ``session_timeout`` seconds after its last request, at logout, or
when the process restarts (admins log in again; nothing else is lost).  At most
``MAX_SESSIONS`` live at once: beyond, the least recently used goes, so a stream of
logins cannot grow memory.  Tokens are compared through a dict lookup of the whole
32-byte random value, which gives nothing away about near misses.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

MAX_SESSIONS = 1000


@dataclass
class Session:
    user: str
    csrf: str
    last_seen: float
    flash: list[str] = field(default_factory=list)


class SessionStore:
    def __init__(self, timeout: float, clock: Any) -> None:
        self.timeout = timeout
        self.clock = clock
        self._sessions: dict[str, Session] = {}

    def create(self, user: str) -> tuple[str, Session]:
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda t: self._sessions[t].last_seen)
            del self._sessions[oldest]
        token = secrets.token_urlsafe(32)
        s = self._sessions[token] = Session(user, secrets.token_urlsafe(32), self.clock.seconds())
        return token, s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        s = self._sessions.get(token)
        if s is None:
            return None
        now = self.clock.seconds()
        if now - s.last_seen > self.timeout:
            del self._sessions[token]
            return None
        s.last_seen = now
        return s

    def drop(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def drop_user(self, user: str) -> None:
        """End every session of ``user`` (their account was deleted)."""
        for t in [t for t, s in self._sessions.items() if s.user == user]:
            del self._sessions[t]
