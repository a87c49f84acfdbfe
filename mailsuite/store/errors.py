"""Errors the store raises to its callers (IMAP, POP3), each mapped to one protocol answer.

``UnsafeName`` stays in :mod:`mailsuite.store.maildir` (delivery uses it) and is
re-exported here so callers can import every store error from one place.
"""

from __future__ import annotations

from mailsuite.store.maildir import UnsafeName

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
