"""POP3 listeners: ``[pop3] listen`` (STLS) and ``listen_tls`` (implicit TLS), sharing
one per-IP connection count and one maildrop lock table; the realm learns to build
POP3 avatars here."""

from __future__ import annotations

from typing import Any

from mailsuite.frontend import ConnectionCounts
from mailsuite.pop3.server import IPOP3Account, MaildropLocks, POP3Account, POP3FactoryConfig, POP3ServerFactory


def add_services(suite: Any, parent: Any) -> None:
    cfg = suite.config
    svc = cfg.pop3
    if not (svc.listen or svc.listen_tls):
        return
    store = suite.store
    suite.realm.register(IPOP3Account, lambda account: POP3Account(store.account(account.name)))
    connections = ConnectionCounts()
    locks = MaildropLocks(suite.store.account_dir)
    tls = suite.tls_for("pop3")
    for desc, implicit in [(d, False) for d in svc.listen] + [(d, True) for d in svc.listen_tls]:
        conf = POP3FactoryConfig(
            hostname=cfg.server.hostname,
            service=svc,
            portal=suite.portal,
            throttle=suite.throttle,
            tls_context=tls,
            implicit_tls=implicit,
            allow_plaintext_auth=cfg.server.allow_plaintext_auth,
        )
        factory = POP3ServerFactory(conf, connections, locks)
        if implicit:
            suite.listener(parent, desc, factory, True, context=tls,
                           max_handshakes_per_ip=cfg.tls.max_handshakes_per_ip)
        else:
            suite.listener(parent, desc, factory, False)
