"""In-process change notices: a delivery or another session changed a folder.

IMAP IDLE and concurrent sessions subscribe to (account, folder); the store calls
:func:`changed` after it has changed the folder on disk.  Callbacks run in the reactor
thread.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

from twisted.logger import Logger

log = Logger(namespace="mailsuite.store")

Listener = Callable[[str, str], None]
_listeners: dict[tuple[str, str], set[Listener]] = defaultdict(set)


def subscribe(account: str, folder: str, listener: Listener) -> None:
    _listeners[(account, folder)].add(listener)


def unsubscribe(account: str, folder: str, listener: Listener) -> None:
    key = (account, folder)
    _listeners[key].discard(listener)
    if not _listeners[key]:
        del _listeners[key]


def changed(account: str, folder: str) -> None:
    for listener in list(_listeners.get((account, folder), ())):
        try:
            listener(account, folder)
        except Exception:
            log.failure("store: change listener failed")
