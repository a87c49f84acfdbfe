"""Wires the web service into the application: one Site on every ``[http]`` listener
(``listen`` plain, ``listen_tls`` behind the same reloadable TLS context and handshake
gate as the mail listeners)."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from mailsuite.web.admin import IAdmin
from mailsuite.web.admin.pages import AdminPages
from mailsuite.web.site import WebSite, build_root


def add_services(suite: Any, parent: service.MultiService) -> None:
    cfg = suite.config
    if not (cfg.http.listen or cfg.http.listen_tls):
        return
    # The admin login asks the shared realm for the directory's Account.
    suite.realm.register(IAdmin, lambda account: account)
    site = WebSite(build_root(cfg, suite.metrics, AdminPages(suite)))
    for desc in cfg.http.listen:
        suite.listener(parent, desc, site, False)
    for desc in cfg.http.listen_tls:
        suite.listener(parent, desc, site, True, context=suite.tls_for("http"),
                       max_handshakes_per_ip=cfg.tls.max_handshakes_per_ip)
