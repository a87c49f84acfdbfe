"""Errors the store raises to its callers (IMAP, POP3), each mapped to one protocol answer.

A module of its own, importing nothing of the store, so that every store module and
every caller can import it without a cycle.
"""

from __future__ import annotations

__all__ = [
    "StoreError",
    "UnsafeName",
    "NoSuchFolder",
    "FolderExists",
    "FolderHasChildren",
    "FolderGone",
    "TooManyKeywords",
    "MessageGone",
]


class UnsafeName(ValueError):
    """A login, address part or folder name that would leave the user's Maildir."""


class StoreError(Exception):
    """Base class; ``str(e)`` is a short reason fit for a NO / -ERR answer."""


class NoSuchFolder(StoreError):
    """The folder does not exist (IMAP: NO [NONEXISTENT])."""


class FolderExists(StoreError):
    """CREATE/RENAME target exists already (IMAP: NO [ALREADYEXISTS])."""


class FolderHasChildren(StoreError):
    """DELETE of a name that only exists as a parent (\\Noselect) of other folders
    (RFC 3501 6.3.4: NO)."""


class FolderGone(StoreError):
    """An open folder was deleted or renamed underneath its sessions."""


class TooManyKeywords(StoreError):
    """All 26 keyword letters of the folder are taken (IMAP: NO [LIMIT])."""


class MessageGone(StoreError):
    """The message was expunged (by another session or agent) before it could be read."""
