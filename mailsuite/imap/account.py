"""The IMAP avatar: one logged-in account's folders, through the storage interface.

The realm builds an :class:`IMAPAccount` per login (``realm.register(IIMAPAccount,
...)`` in imap/service.py) around the store's
:class:`~mailsuite.store.interface.IAccountStore` for that account; it holds nothing
else, so an idle authenticated connection costs little memory.  Folder names are
Unicode with ``.`` as the hierarchy delimiter; the protocol converts them from and to
modified UTF-7.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from mailsuite.delivery.quota import Limits
from mailsuite.store.interface import IAccountStore, IFolder


class IMAPAccount:
    """``quotas`` (mailsuite.delivery.quota.Quotas) and ``limits`` (the account's, read
    from the directory at login, as Dovecot does) serve GETQUOTA and OVERQUOTA."""

    __slots__ = ("mailbox", "quotas", "limits")

    def __init__(self, mailbox: IAccountStore, quotas: Any = None, limits: Limits = Limits()) -> None:
        self.mailbox = mailbox
        self.quotas = quotas
        self.limits = limits

    async def quota_refusal(self, size: int, count: int) -> str | None:
        """The text of NO [OVERQUOTA] if ``count`` messages of ``size`` octets in all
        may not enter this account (RFC 9208 4.3), else None."""
        if self.quotas is None or not self.limits:
            return None
        refusal = await self.quotas.refusal(self.name, size, count, self.limits)
        return refusal.text if refusal is not None else None

    def usage(self) -> defer.Deferred:
        return self.quotas.usage(self.name)

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
