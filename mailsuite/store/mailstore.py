"""The Maildir++ store behind the storage interface: accounts, open folders, delivery.

:class:`MaildirStore` implements :class:`~mailsuite.store.interface.IMailStore`; its
:meth:`~MaildirStore.account` gives a :class:`MaildirAccount`
(:class:`~mailsuite.store.interface.IAccountStore`) per account, which IMAP and POP3
avatars hold.  Open folders are shared: :meth:`MaildirStore.open_folder` hands every
session of an (account, folder) the same :class:`~mailsuite.store.folder.Folder`,
counted; the last ``close()`` keeps it loaded ``linger`` seconds (clients that
reconnect for every check find it warm), then saves its index and unloads it.

Every blocking step (listdir, rename, fsync) runs in the worker pool the store is
given (:class:`mailsuite.workers.IWorkers`); change notices go through its
:class:`~mailsuite.store.notify.ChangeHub`; the folder tree functions are in
:mod:`mailsuite.store.folders`, the delivery functions in :mod:`mailsuite.store.maildir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.store import folders as folder_tree
from mailsuite.store.errors import UnsafeName
from mailsuite.store.folder import Folder, FolderDisk
from mailsuite.store.interface import FolderInfo, IAccountStore, IMailStore
from mailsuite.store.watch import IFolderWatcher, NullWatcher
from mailsuite.store.maildir import BodyFile, account_dir, deliver_copies, ensure_account, normalized_folder
from mailsuite.store.notify import ChangeHub
from mailsuite.workers import IWorkers

log = Logger(namespace="mailsuite.store")


@implementer(IAccountStore)
class MaildirAccount:
    """One account's folders (see IAccountStore); holds only its name and the store, so
    an idle logged-in connection costs little."""

    __slots__ = ("name", "_store")

    def __init__(self, store: "MaildirStore", name: str) -> None:
        self.name = name
        self._store = store

    def prepare(self) -> defer.Deferred:
        return self._store.ensure_account(self.name).addCallback(lambda _: self)

    def list_folders(self) -> defer.Deferred:
        return defer.succeed(self._store.folder_names(self.name))

    def subscriptions(self) -> defer.Deferred:
        return defer.succeed(folder_tree.read_subscriptions(self._store.account_dir(self.name)))

    def create(self, name: str) -> defer.Deferred:
        return defer.maybeDeferred(self._store.create_folder, self.name, name)

    def delete(self, name: str) -> defer.Deferred:
        return defer.maybeDeferred(self._store.delete_folder, self.name, name)

    def rename(self, old: str, new: str) -> defer.Deferred:
        return defer.maybeDeferred(self._store.rename_folder, self.name, old, new)

    def subscribe(self, name: str, on: bool) -> defer.Deferred:
        f = self._store.subscribe if on else self._store.unsubscribe
        return defer.maybeDeferred(f, self.name, name)

    def open(self, name: str) -> defer.Deferred:
        return self._store.open_folder(self.name, name)


@implementer(IMailStore)
class MaildirStore:
    """The store as the reactor thread sees it (see the module docstring)."""

    def __init__(self, mail_dir: Path, workers: IWorkers, hub: ChangeHub, reactor: Any, linger: float = 30.0,
                 watcher: IFolderWatcher | None = None) -> None:
        """``workers`` runs the blocking file work; ``hub`` carries change notices
        between sessions and deliveries of this process; ``reactor`` times the
        lingering of closed folders and the folders' index saves."""
        self.mail_dir = mail_dir
        self.workers = workers
        self.hub = hub
        self.reactor = reactor
        # Wakes a loaded folder when another process or node changes it (store/watch.py).
        self.watcher: IFolderWatcher = watcher or NullWatcher()
        self._watches: dict[tuple[str, str], Any] = {}
        # Seconds an open folder stays loaded after its last user closed it.
        self.linger = linger
        self._ensured: set[str] = set()
        self._open: dict[tuple[str, str], Folder] = {}
        self._opening: dict[tuple[str, str], list[defer.Deferred]] = {}

    # -- accounts ------------------------------------------------------------------------

    def account(self, name: str) -> MaildirAccount:
        account_dir(self.mail_dir, name)  # UnsafeName now, not at the first folder operation
        return MaildirAccount(self, name)

    def account_dir(self, account: str) -> Path:
        return account_dir(self.mail_dir, account)

    def ensure_account(self, account: str) -> defer.Deferred:
        if account in self._ensured:
            return defer.succeed(self.account_dir(account))
        d = self.workers.run(ensure_account, self.mail_dir, account)

        def done(path: Path) -> Path:
            self._ensured.add(account)
            return path

        return d.addCallback(done)

    # -- delivery ------------------------------------------------------------------------

    def deliver(self, prefixes: dict[str, bytes], body: BodyFile, stable_base: str | None = None,
                check_existing: bool = False, folders: dict[str, str] | None = None) -> defer.Deferred:
        """Deliver durably to each account; fires with account → file name.  See
        :func:`~mailsuite.store.maildir.deliver_one` for ``stable_base`` and
        ``check_existing``, and :func:`~mailsuite.store.maildir.deliver_copies` for
        ``folders``."""
        d = self.workers.run(deliver_copies, self.mail_dir, prefixes, body, stable_base, check_existing, folders)

        def delivered(result: dict[str, str]) -> dict[str, str]:
            for account in result:
                self._ensured.add(account)
                folder = folders.get(account, "INBOX") if folders else "INBOX"
                self.hub.changed(account, folder if folder == "INBOX" else normalized_folder(folder))
            return result

        return d.addCallback(delivered)

    # -- the folder tree -----------------------------------------------------------------
    # Folder names are Unicode with ``.`` as delimiter (see mailsuite.store.folders);
    # every method that takes a name raises (or fails with) UnsafeName for a bad one.

    def folder_names(self, account: str) -> list[FolderInfo]:
        """Every folder of ``account`` as FolderInfo, INBOX first (sync: one listdir)."""
        return folder_tree.list_folders(account_dir(self.mail_dir, account))

    def _folder_op(self, account: str, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        root = account_dir(self.mail_dir, account)
        return self.workers.run(f, root, *args)

    def create_folder(self, account: str, name: str) -> defer.Deferred:
        """Create a folder; fires with its normalised name; FolderExists / UnsafeName."""
        return self._folder_op(account, folder_tree.create_folder, name)

    def delete_folder(self, account: str, name: str) -> defer.Deferred:
        """Delete a folder and its messages (RFC 3501 6.3.4); children stay.  Open
        Folder objects of it see everything expunged and become ``gone``."""
        d = self._folder_op(account, folder_tree.delete_folder, name)
        return d.addCallback(self._resync_open, account)

    def rename_folder(self, account: str, old: str, new: str) -> defer.Deferred:
        """Rename a folder and its children (INBOX: move its messages, RFC 3501 6.3.5);
        fires with [(old, new)] pairs.  FolderExists / NoSuchFolder / UnsafeName."""
        d = self._folder_op(account, folder_tree.rename_folder, old, new)

        def renamed(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
            for src, _ in pairs:
                self._resync_open(src, account)
            return pairs

        return d.addCallback(renamed)

    def subscribe(self, account: str, name: str) -> defer.Deferred:
        return self._folder_op(account, folder_tree.set_subscribed, name, True)

    def unsubscribe(self, account: str, name: str) -> defer.Deferred:
        return self._folder_op(account, folder_tree.set_subscribed, name, False)

    def _resync_open(self, name: str, account: str) -> str:
        folder = self._open.get((account, name))
        if folder is not None:
            folder.mark_dirty()
            folder.sync().addErrback(lambda f: None)
        return name

    # -- open folders --------------------------------------------------------------------

    def open_folder(self, account: str, name: str) -> defer.Deferred:
        """Fire with the shared Folder for (account, name), opened and synced; each
        caller must ``close()`` it once.  NoSuchFolder / UnsafeName."""
        try:
            name = folder_tree.normalize(name)
            path = folder_tree.folder_path(account_dir(self.mail_dir, account), name)
        except UnsafeName as e:
            return defer.fail(e)
        key = (account, name)
        folder = self._open.get(key)
        if folder is not None and not folder.gone:
            if folder.linger_call is not None and folder.linger_call.active():
                folder.linger_call.cancel()
            folder.linger_call = None
            folder.refs += 1

            def synced(_: Any) -> Any:
                if folder.gone:
                    # The sync found it deleted (or replaced): let this one go and
                    # load what is there now.
                    return folder.close().addCallback(lambda _: self.open_folder(account, name))
                return folder

            return folder.sync().addCallback(synced)
        waiting = self._opening.get(key)
        d: defer.Deferred = defer.Deferred()
        if waiting is not None:
            waiting.append(d)
            return d
        self._opening[key] = [d]
        self._load_folder(key, path)
        return d

    def _load_folder(self, key: tuple[str, str], path: Path) -> None:
        disk = FolderDisk(path)

        def load() -> Any:
            # A logged-in user's INBOX exists even before the first delivery.
            ensure_account(self.mail_dir, key[0])
            self._ensured.add(key[0])
            return disk.open()

        def opened(_: Any) -> None:
            folder = Folder(self._release, key[0], key[1], disk, self.workers, self.reactor)
            self._open[key] = folder
            self.hub.subscribe(key[0], key[1], folder.notified)
            self._watches[key] = self.watcher.watch(path, folder.notified)
            for d in self._opening.pop(key):
                folder.refs += 1
                d.callback(folder)

        def failed(f: Any) -> None:
            for d in self._opening.pop(key):
                d.errback(f)

        self.workers.run(load).addCallbacks(opened, failed)

    def _release(self, folder: Folder) -> defer.Deferred:
        folder.refs -= 1
        if folder.refs > 0:
            return defer.succeed(None)
        if self.linger > 0 and not folder.gone:
            # Keep it loaded a while: POP3 clients and IMAP STATUS/SELECT often come
            # back within seconds, and reloading a big index costs more than keeping it.
            # The index is saved when it unloads (and 30 s after changes): saving it
            # now would hold the folder's lock just when a client logs in again.
            folder.linger_call = self.reactor.callLater(self.linger, self._expire, folder)
            return defer.succeed(None)
        return self._expire(folder)

    def _expire(self, folder: Folder) -> defer.Deferred:
        folder.linger_call = None
        if folder.refs > 0:
            return defer.succeed(None)
        key = (folder.account, folder.name)
        if self._open.get(key) is folder:
            del self._open[key]
        self.hub.unsubscribe(key[0], key[1], folder.notified)
        self.watcher.unwatch(self._watches.pop(key, None))
        return folder.save_index()

    def close_all(self) -> defer.Deferred:
        """Save every open folder's index (at shutdown)."""
        return defer.DeferredList([f.save_index() for f in list(self._open.values())])
