"""IMAP listeners: STARTTLS on ``[imap] listen``, implicit TLS on ``[imap] listen_tls``.

``add_services(suite, parent)`` is called by mailsuite.service; it registers the IMAP
avatar with the shared realm and adds one listener per configured endpoint.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service

from mailsuite.frontend import ConnectionCounts
from mailsuite.delivery.quota import Limits
from mailsuite.imap.account import IMAPAccount
from mailsuite.imap.server import IIMAPAccount, IMAPFactoryConfig, IMAPServerFactory
from mailsuite.store.interface import IMailStore


class _Shutdown(service.Service):
    """At shutdown, say BYE to every IMAP client, then write the index of every folder
    still open (sessions, lingering folders), so the next start opens big folders
    without a rescan."""

    def __init__(self, store: IMailStore) -> None:
        self.store = store
        self.factories: list[IMAPServerFactory] = []

    def stopService(self) -> Any:
        super().stopService()
        for factory in self.factories:
            factory.shutdown()
        return self.store.close_all()


def add_services(suite: Any, parent: service.MultiService) -> None:
    cfg = suite.config
    store = suite.store
    suite.realm.register(IIMAPAccount, lambda account: IMAPAccount(store.account(account.name), suite.quotas,
                                                                   Limits.of(account)).prepare())
    svc = cfg.imap
    spool = cfg.server.data_dir / "imap-spool"

    def clean_spool() -> None:
        # Big APPEND literals in flight when the process stopped are garbage now.
        spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in spool.iterdir():
            leftover.unlink(missing_ok=True)

    suite.on_start.append(clean_spool)
    shutdown = _Shutdown(store)
    shutdown.setServiceParent(parent)
    ctx = suite.tls_for("imap")
    connections = ConnectionCounts()  # one count per client IP for 143 and 993 together
    for desc, implicit in [(d, False) for d in svc.listen] + [(d, True) for d in svc.listen_tls]:
        conf = IMAPFactoryConfig(
            hostname=cfg.server.hostname,
            service=svc,
            portal=suite.portal,
            tls_context=ctx,
            implicit_tls=implicit,
            allow_plaintext_auth=cfg.server.allow_plaintext_auth,
            throttle=suite.throttle,
            spool_dir=spool,
        )
        factory = IMAPServerFactory(conf, connections)
        shutdown.factories.append(factory)
        suite.listener(parent, desc, factory, implicit, context=ctx,
                       max_handshakes_per_ip=cfg.tls.max_handshakes_per_ip)
