"""The MTA-STS policy (RFC 8461) of each local domain, at
``https://mta-sts.<domain>/.well-known/mta-sts.txt``.

Senders fetch it only from the host ``mta-sts.<domain>``, so the Host header picks the
domain and any other host gets 404; ``mode = "none"`` in the config serves no policy
at all (404) rather than a "none" policy, so that switching MTA-STS on is one edit
plus the ``_mta-sts`` TXT record (its ``id`` is :func:`policy_id`, shown on the admin
DNS page).  Redirects are never used (RFC 8461 3.3 forbids following them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web import resource
from twisted.web.server import Request

from mailsuite.published import policy_text

if TYPE_CHECKING:  # annotations only: the config module validates with code that uses this package
    from mailsuite import config as config_mod


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
