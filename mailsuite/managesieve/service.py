"""ManageSieve listeners: ``[managesieve] listen`` (STARTTLS) and ``listen_tls``
(implicit TLS), sharing one per-IP connection count; the realm learns to build
ManageSieve avatars here."""

from __future__ import annotations

from typing import Any

from mailsuite.frontend import ConnectionCounts
from mailsuite.managesieve.server import (
    IManageSieveAccount,
    ManageSieveAccount,
    ManageSieveConfigBundle,
    ManageSieveFactory,
)


def add_services(suite: Any, parent: Any) -> None:
    cfg = suite.config
    svc = cfg.managesieve
    if not (svc.listen or svc.listen_tls):
        return
    suite.realm.register(IManageSieveAccount, lambda account: ManageSieveAccount(account.name))
    connections = ConnectionCounts()  # one count per IP for both listeners
    # Delivery sees a script stored or activated here at once.
    sieve = getattr(suite, "sieve", None)
    tls = suite.tls_for("managesieve")
    for desc, implicit in [(d, False) for d in svc.listen] + [(d, True) for d in svc.listen_tls]:
        conf = ManageSieveConfigBundle(
            hostname=cfg.server.hostname,
            service=svc,
            mail_dir=cfg.mail_dir,
            portal=suite.portal,
            throttle=suite.throttle,
            tls_context=tls,
            implicit_tls=implicit,
            allow_plaintext_auth=cfg.server.allow_plaintext_auth,
            on_change=sieve.engine.invalidate if sieve is not None else None,
            workers=suite.workers,
        )
        factory = ManageSieveFactory(conf, connections)
        if implicit:
            suite.listener(parent, desc, factory, True, context=tls,
                           max_handshakes_per_ip=cfg.tls.max_handshakes_per_ip)
        else:
            suite.listener(parent, desc, factory, False)
