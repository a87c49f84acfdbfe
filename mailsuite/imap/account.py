"""The IMAP avatar: one logged-in account's folders, as the store offers them.

The realm builds an :class:`IMAPAccount` per login (``realm.register(IIMAPAccount,
...)`` in service.py); it holds only the account name and the shared store, so an idle
authenticated connection costs little memory.  Folder names are Unicode with ``.`` as
the hierarchy delimiter; the protocol converts them from and to modified UTF-7.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.internet import defer

from mailsuite.store import folders as store_folders


class IMAPAccount:
    __slots__ = ("name", "store")

    def __init__(self, name: str, store: Any) -> None:
        self.name = name
        self.store = store

    def prepare(self) -> defer.Deferred:
        """Make sure INBOX and the special folders exist (first login of a new account)."""
        return self.store.ensure_account(self.name).addCallback(lambda _: self)

    def open(self, name: str) -> defer.Deferred:
        """The shared Folder (caller closes it); fails with NoSuchFolder / UnsafeName."""
        return self.store.open_folder(self.name, name)

    def list_folders(self) -> defer.Deferred:
        return defer.succeed(self.store.folder_names(self.name))

    def subscriptions(self) -> defer.Deferred:
        root = self.store.account_dir(self.name)
        return defer.succeed(store_folders.read_subscriptions(root))

    def create(self, name: str) -> defer.Deferred:
        return defer.maybeDeferred(self.store.create_folder, self.name, name)

    def delete(self, name: str) -> defer.Deferred:
        return defer.maybeDeferred(self.store.delete_folder, self.name, name)

    def rename(self, old: str, new: str) -> defer.Deferred:
        return defer.maybeDeferred(self.store.rename_folder, self.name, old, new)

    def subscribe(self, name: str, on: bool) -> defer.Deferred:
        f = self.store.subscribe if on else self.store.unsubscribe
        return defer.maybeDeferred(f, self.name, name)

    def keywords(self, folder: Any, records: Iterable[Any]) -> list[str]:
        return list(folder.keywords())

    def logout(self) -> None:
        pass
