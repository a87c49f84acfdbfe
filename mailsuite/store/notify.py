"""In-process change notices: a delivery or another session changed a folder.

IMAP IDLE and concurrent sessions subscribe to (account, folder) on the store's
:class:`ChangeHub`; the store calls :meth:`ChangeHub.changed` after it has changed the
folder on disk.  Callbacks run in the reactor thread.  ``mailsuite/service.py`` makes
one hub per process and hands it to the store (no module-level listener table).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

from twisted.logger import Logger

log = Logger(namespace="mailsuite.store")

Listener = Callable[[str, str], None]


class ChangeHub:
    def __init__(self) -> None:
        self._listeners: dict[tuple[str, str], set[Listener]] = defaultdict(set)

    def subscribe(self, account: str, folder: str, listener: Listener) -> None:
        self._listeners[(account, folder)].add(listener)

    def unsubscribe(self, account: str, folder: str, listener: Listener) -> None:
        key = (account, folder)
        self._listeners[key].discard(listener)
        if not self._listeners[key]:
            del self._listeners[key]

    def changed(self, account: str, folder: str) -> None:
        for listener in list(self._listeners.get((account, folder), ())):
            try:
                listener(account, folder)
            except Exception:
                log.failure("store: change listener failed")
