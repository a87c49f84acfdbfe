"""The IMAP avatar: one logged-in account's folders, through the storage interface.

The realm builds an :class:`IMAPAccount` per login (``realm.register(IIMAPAccount,
...)`` in imap/service.py) around the store's
:class:`~mailsuite.store.interface.IAccountStore` for that account; it holds nothing
else, so an idle authenticated connection costs little memory.  Folder names are
Unicode with ``.`` as the hierarchy delimiter; the protocol converts them from and to
modified UTF-7.
"""

from __future__ import annotations

from twisted.internet import defer

from mailsuite.store.interface import IAccountStore, IFolder


class IMAPAccount:
    __slots__ = ("mailbox",)

    def __init__(self, mailbox: IAccountStore) -> None:
        self.mailbox = mailbox

    @property
    def name(self) -> str:
        return self.mailbox.name

    def prepare(self) -> defer.Deferred:
        """Make sure INBOX and the special folders exist (first login of a new account)."""
        return self.mailbox.prepare().addCallback(lambda _: self)

    def open(self, name: str) -> defer.Deferred:
        """The shared IFolder (caller closes it); fails with NoSuchFolder / UnsafeName."""
        return self.mailbox.open(name)

    def list_folders(self) -> defer.Deferred:
        return self.mailbox.list_folders()

    def subscriptions(self) -> defer.Deferred:
        return self.mailbox.subscriptions()

    def create(self, name: str) -> defer.Deferred:
        return self.mailbox.create(name)

    def delete(self, name: str) -> defer.Deferred:
        return self.mailbox.delete(name)

    def rename(self, old: str, new: str) -> defer.Deferred:
        return self.mailbox.rename(old, new)

    def subscribe(self, name: str, on: bool) -> defer.Deferred:
        return self.mailbox.subscribe(name, on)

    def keywords(self, folder: IFolder) -> list[str]:
        return list(folder.keywords())

    def logout(self) -> None:
        pass
