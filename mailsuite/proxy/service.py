"""Proxy listeners ([proxy] imap_listen, pop3_listen, submission_listen): built by
``mailsuite.service`` like the other protocols, on the same binder (so they run in
the worker processes too), the same TLS certificate, portal and throttle."""

from __future__ import annotations

from typing import Any

from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust, trustRootFromCertificates

from mailsuite.frontend import LoginGate
from mailsuite.proxy.backend import Backend
from mailsuite.proxy.front import FrontConfig, IMAPProxy, IProxyAccount, POP3Proxy, ProxyFactory, SubmissionProxy


def _trust(cfg: Any) -> Any:
    if cfg.backend_ca_file is None:
        return platformTrust()
    pem = cfg.backend_ca_file.read_bytes()
    certs = [Certificate.loadPEM(b"-----BEGIN CERTIFICATE-----" + part)
             for part in pem.split(b"-----BEGIN CERTIFICATE-----")[1:]]
    return trustRootFromCertificates(certs)


def backend_chooser(cfg: Any, port: int) -> Any:
    """Host from the directory (or default_host) -> Backend for one protocol."""
    trust = _trust(cfg) if cfg.backend_tls == "starttls" else None

    def choose(host: str) -> Backend | None:
        host = (host or cfg.default_host).strip()
        if not host:
            return None
        tls = optionsForClientTLS(host, trustRoot=trust) if trust is not None else None
        return Backend(host, port, tls, cfg.connect_timeout)

    return choose


def add_services(suite: Any, parent: Any) -> None:
    cfg = suite.config
    px = cfg.proxy
    listeners = ((px.imap_listen, IMAPProxy, px.imap_port, "imap"),
                 (px.pop3_listen, POP3Proxy, px.pop3_port, "pop3"),
                 (px.submission_listen, SubmissionProxy, px.submission_port, "submission"))
    if not any(descs for descs, *_ in listeners):
        return
    suite.realm.register(IProxyAccount, lambda account: account)
    for descs, cls, port, role in listeners:
        if not descs:
            continue
        conf = FrontConfig(
            hostname=cfg.server.hostname,
            gate=LoginGate(suite.portal, suite.throttle, role),
            tls_context=suite.tls_for(role),
            allow_plaintext_auth=cfg.server.allow_plaintext_auth,
            backend=backend_chooser(px, port),
        )
        factory = ProxyFactory(cls, conf, suite.reactor)
        for desc in descs:
            suite.listener(parent, desc, factory, False)

