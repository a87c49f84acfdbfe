"""Tagged NO and BAD answers as exceptions, and the store errors they stand for.

A command handler raises :class:`No` or :class:`Bad`; the protocol
(:mod:`mailsuite.imap.server`) writes the tagged answer.  :func:`store_error` maps each
:mod:`mailsuite.store.errors` exception to one NO with its RFC 5530 response code.  A
module of its own so that the protocol and the command modules import it without
importing each other.
"""

from __future__ import annotations

from twisted.python.failure import Failure

from mailsuite.imap import wire
from mailsuite.store import errors as store_errors


class No(Exception):
    """A tagged NO; ``code`` is the response code without brackets (e.g. TRYCREATE)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.code = code

    def line(self) -> bytes:
        prefix = f"[{self.code}] " if self.code else ""
        return wire.text(prefix + str(self))


class Bad(No):
    """A tagged BAD."""


def store_error(e: Exception) -> Exception:
    """The NO for a store error (other exceptions are returned unchanged)."""
    if isinstance(e, store_errors.NoSuchFolder):
        return No(str(e) or "No such mailbox", "NONEXISTENT")
    if isinstance(e, store_errors.FolderExists):
        return No(str(e) or "Mailbox exists", "ALREADYEXISTS")
    if isinstance(e, store_errors.UnsafeName):
        return No("Invalid mailbox name", "CANNOT")
    if isinstance(e, store_errors.TooManyKeywords):
        return No(str(e) or "Too many keywords", "LIMIT")
    if isinstance(e, store_errors.FolderHasChildren):
        return No(str(e) or "Mailbox has children", "CANNOT")
    if isinstance(e, store_errors.StoreError):
        return No(str(e) or "Operation failed", "CANNOT")
    return e


def trap_store(f: Failure) -> Failure:
    """Errback: a store error becomes its NO; anything else passes on."""
    f.trap(store_errors.StoreError, store_errors.UnsafeName)
    raise store_error(f.value)
