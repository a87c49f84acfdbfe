"""The Maildir++ store: where an account's folders live, and durable delivery.

Layout: ``<mail_dir>/<domain>/<local>/{cur,new,tmp}`` is INBOX; subfolders are
``.Sent``, ``.Drafts``, ``.Trash``, ``.Junk``, ``.Archive`` (nested with ``.``), each
with a ``maildirfolder`` marker.  A delivery is written to ``tmp/``, fsynced, renamed
into ``new/``, and ``new/`` is fsynced, all before the caller may say 250.

The blocking functions here (``deliver_copies``, ``ensure_account``) run in the worker
pool; :class:`MaildirStore` offers Deferred-returning wrappers for the reactor thread.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer

from mailsuite import fsutil, workers
from mailsuite.handoff import BodyFile
from mailsuite.store import names, notify

SPECIAL_FOLDERS = ("Sent", "Drafts", "Trash", "Junk", "Archive")


class UnsafeName(ValueError):
    """A login, address part or folder name that would leave the user's Maildir."""


class DeliveryError(Exception):
    """A delivery failed for a reason worth a temporary reply (disk full, permissions)."""


def _check_component(part: str, what: str) -> str:
    if (
        not part
        or part in (".", "..")
        or part.startswith(".")
        or any(c in part for c in "/\\\x00")
        or any(ord(c) < 0x20 for c in part)
        or len(part) > 255
    ):
        raise UnsafeName(f"unsafe {what}: {part!r}")
    return part


def account_dir(mail_dir: Path, account: str) -> Path:
    local, _, domain = account.rpartition("@")
    return mail_dir / _check_component(domain, "domain") / _check_component(local, "local part")


def make_maildir(path: Path, folder_marker: bool = False) -> None:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(path / sub, mode=0o700, exist_ok=True)
    if folder_marker:
        marker = path / "maildirfolder"
        if not marker.exists():
            marker.touch(mode=0o600)


def ensure_account(mail_dir: Path, account: str) -> Path:
    """Create INBOX and the special folders of an account if missing (blocking)."""
    root = account_dir(mail_dir, account)
    if not (root / "new").is_dir():
        make_maildir(root)
    for folder in SPECIAL_FOLDERS:
        path = root / f".{folder}"
        if not (path / "new").is_dir():
            make_maildir(path, folder_marker=True)
    return root


def _already_delivered(maildir: Path, base: str) -> str | None:
    """The name of a file in new/ or cur/ with this base name, if one is there."""
    for sub in ("new", "cur"):
        try:
            entries = os.listdir(maildir / sub)
        except FileNotFoundError:
            continue
        for name in entries:
            if name.startswith(base) and names.base_name(name) == base:
                return name
    return None


def deliver_one(maildir: Path, prefix: bytes, body: BodyFile, stable_base: str | None = None,
                check_existing: bool = False, flags: str | None = None) -> str:
    """Write prefix + body into ``maildir``/new durably; return the file name (blocking).

    With ``flags`` (Maildir info letters, e.g. "FS", from a Sieve ``:flags``) the copy
    goes to cur/ with those flags, as an IMAP APPEND with flags would.

    ``stable_base`` (from :func:`names.stable_name`) names a delivery the queue may repeat
    after a crash; with ``check_existing`` a copy already in new/ or cur/ under that name
    is kept and not made again (nothing delivered twice after kill -9).
    """
    if stable_base is not None and check_existing:
        existing = _already_delivered(maildir, stable_base)
        if existing is not None:
            return existing
    base = stable_base or names.unique_name()
    tmp = maildir / "tmp" / base
    # A stable name's tmp/ file can only be a crashed earlier attempt's: overwrite it.
    mode = os.O_TRUNC if stable_base is not None else os.O_EXCL
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | mode, 0o600)
    try:
        try:
            fsutil.copy_synced(fd, prefix, body.data, body.path, body.size)
        finally:
            os.close(fd)
        size = len(prefix) + body.size
        final = names.with_sizes(base, size, size + prefix.count(b"\n") + body.lines)
        sub = "new"
        if flags is not None:
            final, sub = f"{final}:2,{flags}", "cur"
        os.rename(tmp, maildir / sub / final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsutil.fsync_dir(maildir / sub)
    return final


def deliver_copies(mail_dir: Path, prefixes: dict[str, bytes], body: BodyFile,
                   stable_base: str | None = None, check_existing: bool = False,
                   folders: dict[str, str] | None = None) -> dict[str, str]:
    """Deliver one copy per account, all or nothing (blocking).

    ``prefixes`` maps account name to the header lines only that copy gets
    (Return-Path, Delivered-To).  ``folders`` maps an account to the folder its copy
    goes to (default INBOX; a missing folder is created, as Dovecot's
    ``lda_mailbox_autocreate``).  Returns account -> file name.  If one copy fails
    (disk full, permissions) the copies already made are removed again and
    DeliveryError is raised, so the sender's retry does not duplicate them.
    """
    done: dict[str, Path] = {}
    folders = folders or {}
    # Every name checked (UnsafeName) before the first copy is written.
    paths = {account: _delivery_dir(mail_dir, account, folders.get(account, "INBOX")) for account in prefixes}
    try:
        for account, prefix in prefixes.items():
            folder, path = folders.get(account, "INBOX"), paths[account]
            try:
                done[account] = path / "new" / deliver_one(path, prefix, body, stable_base, check_existing)
            except FileNotFoundError:
                # First delivery: create INBOX and the special folders.  Trying first
                # saves six stat() calls per message for every existing account.
                root = ensure_account(mail_dir, account)
                if folder != "INBOX" and not (path / "new").is_dir():
                    from mailsuite.store import folders as folders_mod
                    from mailsuite.store.errors import FolderExists

                    try:
                        folders_mod.create_folder(root, folder)
                    except FolderExists:  # made meanwhile by another session
                        pass
                done[account] = path / "new" / deliver_one(path, prefix, body, stable_base, check_existing)
    except OSError as e:
        for made in done.values():  # not "account": the message below names the failed one
            try:
                os.unlink(made)
                # Durably gone, or a crash now would keep a copy the client's retry repeats.
                fsutil.fsync_dir(made.parent)
            except OSError:
                pass
        code = errno.errorcode.get(e.errno or 0, "error")
        raise DeliveryError(f"delivery to {account} failed: {code} {e.strerror}") from e
    return {account: made.name for account, made in done.items()}


def _delivery_dir(mail_dir: Path, account: str, folder: str) -> Path:
    root = account_dir(mail_dir, account)
    if folder == "INBOX":
        return root
    from mailsuite.store import folders as folders_mod

    return folders_mod.folder_path(root, folders_mod.normalize(folder))


def _normalized(folder: str) -> str:
    from mailsuite.store import folders as folders_mod

    return folders_mod.normalize(folder)


TMP_MAX_AGE = 36 * 3600  # Maildir spec and Dovecot: a tmp/ file this old is abandoned


def clean_tmp(mail_dir: Path, max_age: float = TMP_MAX_AGE, now: float | None = None) -> int:
    """Remove abandoned files from every Maildir's tmp/ (blocking; returns how many).

    A delivery killed mid-write (kill -9, power loss) leaves its file in tmp/; it was
    never acknowledged and never visible.  Only old files go: a recent one may belong to
    a delivery still in progress, in this process or another MDA's.
    """
    now = time.time() if now is None else now
    removed = 0
    for tmp in mail_dir.glob("*/*/tmp"):
        removed += _clean_one_tmp(tmp, now - max_age)
    for tmp in mail_dir.glob("*/*/.*/tmp"):
        removed += _clean_one_tmp(tmp, now - max_age)
    return removed


def _clean_one_tmp(tmp: Path, cutoff: float) -> int:
    removed = 0
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


class _FolderRegistry:
    """Folder methods of :class:`MaildirStore` (kept apart from delivery).

    Folder names are Unicode with ``.`` as delimiter (see :mod:`mailsuite.store.folders`);
    every method that takes a name raises (or fails with) UnsafeName for a bad one.
    """

    mail_dir: Path
    linger: float
    _open: dict[tuple[str, str], Any]
    _opening: dict[tuple[str, str], list[defer.Deferred]]

    def folder_names(self, account: str) -> list[Any]:
        """Every folder of ``account`` as FolderInfo, INBOX first (sync: one listdir)."""
        from mailsuite.store import folders

        return folders.list_folders(account_dir(self.mail_dir, account))

    def _folder_op(self, account: str, f: Any, *args: Any) -> defer.Deferred:
        root = account_dir(self.mail_dir, account)
        return workers.run(f, root, *args)

    def create_folder(self, account: str, name: str) -> defer.Deferred:
        """Create a folder; fires with its normalised name; FolderExists / UnsafeName."""
        from mailsuite.store import folders

        return self._folder_op(account, folders.create_folder, name)

    def delete_folder(self, account: str, name: str) -> defer.Deferred:
        """Delete a folder and its messages (RFC 3501 6.3.4); children stay.  Open
        Folder objects of it see everything expunged and become ``gone``."""
        from mailsuite.store import folders

        d = self._folder_op(account, folders.delete_folder, name)
        return d.addCallback(self._resync_open, account)

    def rename_folder(self, account: str, old: str, new: str) -> defer.Deferred:
        """Rename a folder and its children (INBOX: move its messages, RFC 3501 6.3.5);
        fires with [(old, new)] pairs.  FolderExists / NoSuchFolder / UnsafeName."""
        from mailsuite.store import folders

        d = self._folder_op(account, folders.rename_folder, old, new)

        def renamed(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
            for src, _ in pairs:
                self._resync_open(src, account)
            return pairs

        return d.addCallback(renamed)

    def subscribe(self, account: str, name: str) -> defer.Deferred:
        from mailsuite.store import folders

        return self._folder_op(account, folders.set_subscribed, name, True)

    def unsubscribe(self, account: str, name: str) -> defer.Deferred:
        from mailsuite.store import folders

        return self._folder_op(account, folders.set_subscribed, name, False)

    def _resync_open(self, name: str, account: str) -> str:
        folder = self._open.get((account, name))
        if folder is not None:
            folder._disk.dirty = True
            folder.sync().addErrback(lambda f: None)
        return name

    def open_folder(self, account: str, name: str) -> defer.Deferred:
        """Fire with the shared Folder for (account, name), opened and synced; each
        caller must ``close()`` it once.  NoSuchFolder / UnsafeName."""
        from mailsuite.store import folders

        try:
            name = folders.normalize(name)
            path = folders.folder_path(account_dir(self.mail_dir, account), name)
        except UnsafeName as e:
            return defer.fail(e)
        key = (account, name)
        folder = self._open.get(key)
        if folder is not None and not folder.gone:
            if folder.linger_call is not None and folder.linger_call.active():
                folder.linger_call.cancel()
            folder.linger_call = None
            folder.refs += 1
            return folder.sync().addCallback(lambda _: folder)
        waiting = self._opening.get(key)
        d: defer.Deferred = defer.Deferred()
        if waiting is not None:
            waiting.append(d)
            return d
        self._opening[key] = [d]
        self._load_folder(key, path)
        return d

    def _load_folder(self, key: tuple[str, str], path: Path) -> None:
        from mailsuite.store.folder import Folder, FolderDisk

        disk = FolderDisk(path)

        def load() -> Any:
            # A logged-in user's INBOX exists even before the first delivery.
            ensure_account(self.mail_dir, key[0])
            self._ensured.add(key[0])
            return disk.open()

        def opened(_: Any) -> None:
            folder = Folder(self, key[0], key[1], disk)
            self._open[key] = folder
            notify.subscribe(key[0], key[1], folder.notified)
            for d in self._opening.pop(key):
                folder.refs += 1
                d.callback(folder)

        def failed(f: Any) -> None:
            for d in self._opening.pop(key):
                d.errback(f)

        workers.run(load).addCallbacks(opened, failed)

    def _release(self, folder: Any) -> defer.Deferred:
        folder.refs -= 1
        if folder.refs > 0:
            return defer.succeed(None)
        if self.linger > 0 and not folder.gone:
            # Keep it loaded a while: POP3 clients and IMAP STATUS/SELECT often come
            # back within seconds, and reloading a big index costs more than keeping it.
            from twisted.internet import reactor

            # The index is saved when it unloads (and 30 s after changes): saving it
            # now would hold the folder's lock just when a client logs in again.
            folder.linger_call = reactor.callLater(self.linger, self._expire, folder)  # type: ignore[attr-defined]
            return defer.succeed(None)
        return self._expire(folder)

    def _expire(self, folder: Any) -> defer.Deferred:
        folder.linger_call = None
        if folder.refs > 0:
            return defer.succeed(None)
        key = (folder.account, folder.name)
        if self._open.get(key) is folder:
            del self._open[key]
        notify.unsubscribe(key[0], key[1], folder.notified)
        return folder.save_index()

    def close_all(self) -> defer.Deferred:
        """Save every open folder's index (at shutdown)."""
        return defer.DeferredList([f.save_index() for f in list(self._open.values())])


class MaildirStore(_FolderRegistry):
    """The store as the reactor thread sees it: Deferred wrappers over the above,
    and the folders (:class:`_FolderRegistry`, :mod:`mailsuite.store.folder`)."""

    def __init__(self, mail_dir: Path, linger: float = 30.0) -> None:
        self.mail_dir = mail_dir
        # Seconds an open folder stays loaded after its last user closed it.
        self.linger = linger
        self._ensured: set[str] = set()
        self._open: dict[tuple[str, str], Any] = {}
        self._opening: dict[tuple[str, str], list[defer.Deferred]] = {}

    def account_dir(self, account: str) -> Path:
        return account_dir(self.mail_dir, account)

    def ensure_account(self, account: str) -> defer.Deferred:
        if account in self._ensured:
            return defer.succeed(self.account_dir(account))
        d = workers.run(ensure_account, self.mail_dir, account)

        def done(path: Path) -> Path:
            self._ensured.add(account)
            return path

        return d.addCallback(done)

    def deliver(self, prefixes: dict[str, bytes], body: BodyFile, stable_base: str | None = None,
                check_existing: bool = False, folders: dict[str, str] | None = None) -> defer.Deferred:
        """Deliver durably to each account; fires with account → file name.  See
        :func:`deliver_one` for ``stable_base`` and ``check_existing``, and
        :func:`deliver_copies` for ``folders``."""
        d = workers.run(deliver_copies, self.mail_dir, prefixes, body, stable_base, check_existing, folders)

        def delivered(result: dict[str, str]) -> dict[str, str]:
            for account in result:
                self._ensured.add(account)
                folder = folders.get(account, "INBOX") if folders else "INBOX"
                notify.changed(account, folder if folder == "INBOX" else _normalized(folder))
            return result

        return d.addCallback(delivered)
