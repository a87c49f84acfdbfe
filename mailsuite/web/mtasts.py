"""The MTA-STS policy (RFC 8461) of each local domain, at
``https://mta-sts.<domain>/.well-known/mta-sts.txt``.

Senders fetch it only from the host ``mta-sts.<domain>``, so the Host header picks the
domain and any other host gets 404; ``mode = "none"`` in the config serves no policy
at all (404) rather than a "none" policy, so that switching MTA-STS on is one edit
plus the ``_mta-sts`` TXT record (its ``id`` is :func:`policy_id`, shown on the admin
DNS page).  Redirects are never used (RFC 8461 3.3 forbids following them).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from twisted.web import resource
from twisted.web.server import Request

from mailsuite.web.endpoints import public_hostname

if TYPE_CHECKING:  # annotations only: the config module validates with code that uses this package
    from mailsuite import config as config_mod


def policy_text(cfg: config_mod.Config) -> str:
    sts = cfg.http.mta_sts
    mx = sts.mx or (public_hostname(cfg),)
    lines = ["version: STSv1", f"mode: {sts.mode}", *(f"mx: {m}" for m in mx), f"max_age: {sts.max_age}"]
    return "\r\n".join(lines) + "\r\n"  # RFC 8461 3.2: CRLF-separated key/value pairs


def policy_id(cfg: config_mod.Config) -> str:
    """The ``id=`` of the ``_mta-sts`` TXT record: changes whenever the policy does."""
    return hashlib.sha256(policy_text(cfg).encode()).hexdigest()[:20]


class MTASTSPolicy(resource.Resource):
    isLeaf = True

    def __init__(self, cfg: config_mod.Config) -> None:
        super().__init__()
        self.cfg = cfg

    def render_GET(self, request: Request) -> bytes:
        host = (request.getRequestHostname() or b"").decode("ascii", "replace").lower().rstrip(".")
        domain = host[len("mta-sts."):] if host.startswith("mta-sts.") else ""
        if self.cfg.http.mta_sts.mode == "none" or domain not in self.cfg.server.domains:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"no MTA-STS policy here\n"
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"max-age=300")
        return policy_text(self.cfg).encode()
