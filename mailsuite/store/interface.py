"""The storage interface: what IMAP and POP3 (and later Sieve, quota) may ask of the store.

As Dovecot's protocols sit on lib-storage, ours sit on these three interfaces and know
nothing of Maildir file names, uid lists or directories:

* :class:`IMailStore` — the whole store of the process: an account's view
  (:meth:`IMailStore.account`), delivery, and shutdown.
* :class:`IAccountStore` — one account: its folder tree (list, create, delete, rename,
  subscriptions) and :meth:`IAccountStore.open` for a folder.
* :class:`IFolder` — one open folder, shared by every session of the process that has
  it open: the published message list (``messages()``, a sequence of
  :class:`~mailsuite.store.index.MessageRecord` sorted by UID), UIDVALIDITY and
  UIDNEXT, flags and keywords, append / copy / move / expunge, change notification
  (listeners), and message reading: a streaming file object, the whole message, the
  header block, per-message cached values (ENVELOPE, BODYSTRUCTURE) and the header
  fields SEARCH asks for most.

Every method that touches the disk returns a Deferred (the work runs in the worker
pool), except the reading methods marked *blocking*, which callers run in the worker
pool themselves (FETCH reads many files in one pool call).  Errors are those of
:mod:`mailsuite.store.errors`.  The implementation is :mod:`mailsuite.store.mailstore`
(Maildir++).
"""

from __future__ import annotations

from dataclasses import dataclass

from zope.interface import Attribute, Interface

from mailsuite.store.index import MessageRecord
from mailsuite.store.messages import SEARCH_CACHE_KEY, SEARCH_FIELDS

__all__ = ["IMailStore", "IAccountStore", "IFolder", "FolderInfo", "MessageRecord", "SEARCH_CACHE_KEY", "SEARCH_FIELDS"]


@dataclass(frozen=True)
class FolderInfo:
    """One entry of :meth:`IAccountStore.list_folders` (what IMAP LIST needs)."""

    name: str  # Unicode, "."-separated, INBOX normalised
    special_use: str | None  # "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive" or None
    has_children: bool
    subscribed: bool
    noselect: bool = False  # a parent that exists only because children exist


class IMailStore(Interface):
    """The store of all accounts."""

    def account(name: str) -> "IAccountStore":
        """The account ``name`` (``local@domain``) as an :class:`IAccountStore`; no I/O.
        Raises UnsafeName for a name that cannot be a Maildir."""

    def deliver(prefixes: dict, body: object, stable_base: str | None = None, check_existing: bool = False,
                folders: dict | None = None) -> object:
        """Deliver one message durably to each account of ``prefixes`` (account ->
        header bytes that copy alone gets), into INBOX or the folder ``folders`` names
        for it; fires with account -> file name after file and directory are fsynced,
        and tells open folders."""

    def close_all() -> object:
        """Save the index of every open folder (at shutdown); a Deferred."""


class IAccountStore(Interface):
    """One account's folders.  Names are Unicode with ``.`` as the hierarchy delimiter;
    ``INBOX`` is case-insensitive."""

    name = Attribute("the account name, local@domain")

    def prepare() -> object:
        """Create INBOX and the special folders if missing; fires with self."""

    def list_folders() -> object:
        """Fires with every folder as :class:`~mailsuite.store.folders.FolderInfo`,
        INBOX first."""

    def subscriptions() -> object:
        """Fires with the subscribed names (they need not exist)."""

    def create(name: str) -> object:
        """Create a folder; fires with its normalised name.  FolderExists / UnsafeName."""

    def delete(name: str) -> object:
        """Delete a folder and its messages (its children stay).  Open folders of it
        see every message expunged and become ``gone``."""

    def rename(old: str, new: str) -> object:
        """Rename a folder and its children (INBOX: move its messages); fires with the
        (old, new) pairs."""

    def subscribe(name: str, on: bool) -> object:
        """Subscribe (``on``) or unsubscribe a name."""

    def open(name: str) -> object:
        """Fires with the shared :class:`IFolder`, opened and synced; the caller gives
        it back once with :meth:`IFolder.close`.  NoSuchFolder / UnsafeName."""


class IFolder(Interface):
    """One open folder, shared by all sessions (see :mod:`mailsuite.store.folder`)."""

    account = Attribute("the account name")
    name = Attribute("the normalised folder name")
    uidvalidity = Attribute("UIDVALIDITY (strictly increasing per account)")
    uidnext = Attribute("the UID the next message will get")
    highest_modseq = Attribute("the highest modseq of any change so far (durable, shared by all processes, "
                               "never going back for one UIDVALIDITY)")
    gone = Attribute("True once the folder was deleted or renamed away")
    workers = Attribute("the worker pool (mailsuite.workers.IWorkers) for blocking reads of its messages")
    reactor = Attribute("the reactor the store runs on (for timers)")

    # -- the message list ------------------------------------------------------------

    def messages() -> object:
        """The messages now, sorted by UID; replaced (never mutated) on every change."""

    def get(uid: int) -> object:
        """The MessageRecord of ``uid`` or None."""

    def keywords() -> list:
        """Keywords defined in this folder (for FLAGS / PERMANENTFLAGS)."""

    def can_add_keywords() -> bool:
        """Whether a new keyword can still be stored."""

    def claim_recent(readonly: bool = False) -> set:
        """The \\Recent UIDs not yet given to a session; a read-write caller gets them
        and no later caller does, a read-only caller only looks (RFC 3501 2.3.2)."""

    def recent_count() -> int:
        """How many messages are \\Recent and not yet claimed (STATUS RECENT)."""

    def sync() -> object:
        """Pick up changes made outside this process; fires with the Changes."""

    # -- changes ---------------------------------------------------------------------

    def store_flags(uids: object, flags: object, mode: str) -> object:
        """'+', '-' or '=' flags; fires with the changed records.  TooManyKeywords."""

    def store_flags_unchanged_since(uids: object, flags: object, mode: str, modseq: int) -> object:
        """A conditional store (RFC 7162 UNCHANGEDSINCE): fires with (changed records,
        UIDs whose modseq was above ``modseq`` and were left alone)."""

    def expunged_since(modseq: int) -> object:
        """Fires with (UIDs expunged after ``modseq``, complete): complete is False when
        expunges that old are no longer remembered."""

    def expunge(uids: object) -> object:
        """Remove messages durably; fires with the sorted UIDs removed."""

    def append(source: object, flags: object = (), internaldate: float | None = None) -> object:
        """Store a message (bytes or a file path); fires with its UID once durable."""

    def append_many(items: object) -> object:
        """Store ``(source, flags, internaldate)`` messages all or none; fires with
        their UIDs in order once all are durable (IMAP MULTIAPPEND)."""

    def copy(uids: object, dest: "IFolder") -> object:
        """Fires with [(source uid, new uid)] once the copies are durable."""

    def move(uids: object, dest: "IFolder") -> object:
        """Like copy, then the originals are expunged; fires with [(source, new)]."""

    def add_listener(cb: object) -> None:
        """Call ``cb(folder)`` in the reactor thread after every change."""

    def remove_listener(cb: object) -> None:
        """Stop calling ``cb``."""

    # -- reading -----------------------------------------------------------------------

    def open_message(uid: int) -> object:
        """The message file opened for binary reading, LF line ends (blocking; for
        streaming big messages).  MessageGone."""

    def read_message(uid: int) -> bytes:
        """The stored bytes, LF line ends (blocking).  MessageGone."""

    def read_header(uid: int) -> bytes:
        """The header block up to and including the blank line, reading only that much
        of the file (blocking).  MessageGone."""

    def cached(uid: int, key: str, compute: object) -> bytes:
        """A per-message value (bytes) from the folder's cache, computed by
        ``compute()`` and remembered on a miss (reactor thread)."""

    def search_header(uid: int) -> bytes | None:
        """The cached header fields SEARCH asks for most (From, To, Cc, Bcc, Subject)
        or None when not cached yet (reactor thread)."""

    def remember_header(uid: int, header: bytes) -> None:
        """Keep the SEARCH fields of a header block just read (reactor thread)."""

    def close() -> object:
        """Give back this user's reference."""
