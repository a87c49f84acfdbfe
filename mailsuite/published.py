"""What this server publishes to mail clients and to DNS, derived from the config: the
host, port and socket type of each configured IMAP, POP3 and submission listener, the
public host name, and the MTA-STS policy.  The web pages (autoconfig, MTA-STS) and
the DNS records tool (mailsuite.mailauth.records) both read it from here, so neither
imports the other.

One source for every autoconfiguration format (Thunderbird XML, Outlook POX, Apple
profile) and for the RFC 6186 SRV records on the admin DNS page, so they all agree
with the listeners that actually run.  Implicit TLS comes first (RFC 8314 prefers it);
a plain listener is published with STARTTLS when a certificate is configured, and as
"plain" only when ``server.allow_plaintext_auth`` lets a password cross it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # annotations only: the config module validates with code that uses this package
    from mailsuite import config as config_mod


SocketType = Literal["SSL", "STARTTLS", "plain"]


@dataclass(frozen=True)
class ClientEndpoint:
    protocol: Literal["imap", "pop3", "smtp"]  # smtp: the submission service
    hostname: str
    port: int
    socket_type: SocketType

    @property
    def tls(self) -> bool:
        return self.socket_type != "plain"


def public_hostname(cfg: config_mod.Config) -> str:
    return cfg.http.public_hostname or cfg.server.hostname


def endpoint_port(desc: str) -> int | None:
    """The TCP port of a server endpoint string, or None (a UNIX socket, say)."""
    from twisted.internet.endpoints import _parseServer  # noqa: PLC2701 - parse only

    try:
        kind, args, kwargs = _parseServer(desc, None)
    except Exception:  # validated by config.py already; never fatal here
        return None
    if isinstance(kind, str):
        if kind not in ("TCP", "SSL"):
            return None
        port = args[0] if args else kwargs.get("port")
    else:  # plugin parsers (tcp6:) keep their arguments as keywords
        port = kwargs.get("port", args[0] if args else None)
    try:
        return int(port)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _has_tls(cfg: config_mod.Config, service: str) -> bool:
    override = getattr(cfg.tls, service)
    return cfg.tls.certificate is not None or override.certificate is not None


def client_endpoints(cfg: config_mod.Config) -> list[ClientEndpoint]:
    host = public_hostname(cfg)
    out: list[ClientEndpoint] = []
    for protocol, section in (("imap", "imap"), ("pop3", "pop3"), ("smtp", "submission")):
        svc = getattr(cfg, section)
        for desc in svc.listen_tls:
            port = endpoint_port(desc)
            if port is not None:
                out.append(ClientEndpoint(protocol, host, port, "SSL"))  # type: ignore[arg-type]
        for desc in svc.listen:
            port = endpoint_port(desc)
            if port is None:
                continue
            if _has_tls(cfg, section):
                out.append(ClientEndpoint(protocol, host, port, "STARTTLS"))  # type: ignore[arg-type]
            elif cfg.server.allow_plaintext_auth:
                out.append(ClientEndpoint(protocol, host, port, "plain"))  # type: ignore[arg-type]
    return out


def policy_text(cfg: config_mod.Config) -> str:
    """The MTA-STS policy file served at /.well-known/mta-sts.txt."""
    sts = cfg.http.mta_sts
    mx = sts.mx or (public_hostname(cfg),)
    lines = ["version: STSv1", f"mode: {sts.mode}", *(f"mx: {m}" for m in mx), f"max_age: {sts.max_age}"]
    return "\r\n".join(lines) + "\r\n"  # RFC 8461 3.2: CRLF-separated key/value pairs


def policy_id(cfg: config_mod.Config) -> str:
    """The ``id=`` of the ``_mta-sts`` TXT record: changes whenever the policy does."""
    return hashlib.sha256(policy_text(cfg).encode()).hexdigest()[:20]
