"""The URL tree of the web service and the Site that serves it.

``/.well-known/autoconfig/mail/config-v1.1.xml`` and ``/mail/config-v1.1.xml``
(Thunderbird), ``/autodiscover/autodiscover.xml`` and ``.json`` (Outlook, any case of
the first letter, as Outlook sends both), ``/mobileconfig`` (Apple),
``/.well-known/mta-sts.txt``, and whatever the later parts add (``/metrics``,
``/admin/``).

:class:`WebSite` bounds what a client can make the server hold: request bodies (a
POST larger than ``MAX_BODY`` is answered 413 and the connection closed, where
twisted.web would spool any size to a temporary file), header count and size
(twisted.web's own limits), and idle connections (``timeout``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web import resource, server

from mailsuite.web.autoconfig import AutodiscoverJSON, AutodiscoverXML, MobileConfig, ThunderbirdConfig
from mailsuite.web.metrics_page import MetricsPage
from mailsuite.web.mtasts import MTASTSPolicy

if TYPE_CHECKING:  # annotations only: the config module validates with code that uses this package
    from mailsuite import config as config_mod

MAX_BODY = 64 * 1024
IDLE_TIMEOUT = 60

_INDEX = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>mailsuite</title></head>
<body style="font-family:system-ui,sans-serif;max-width:36rem;margin:1rem auto;padding:0 1rem">
<h1>Mail server</h1><ul>
<li><a href="/mobileconfig">Mail settings for iPhone, iPad and Mac</a></li>
<li><a href="/admin/">Administration</a></li></ul></body></html>
"""


class LimitedRequest(server.Request):
    """A request whose body may not exceed ``MAX_BODY`` bytes."""

    _body_seen = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > MAX_BODY:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._body_seen += len(data)
        if self._body_seen > MAX_BODY:
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self) -> None:
        transport = self.channel.transport if self.channel else None
        if transport is not None and not getattr(self, "_refused", False):
            self._refused = True
            transport.write(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            transport.loseConnection()


class WebSite(server.Site):
    requestFactory = LimitedRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, root: resource.Resource, **kw: Any) -> None:
        super().__init__(root, timeout=IDLE_TIMEOUT, **kw)


class _Index(resource.Resource):
    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return _INDEX


def build_root(cfg: config_mod.Config, metrics: Any = None, admin: resource.Resource | None = None) -> resource.Resource:
    root = _Index()
    if admin is not None:
        root.putChild(b"admin", admin)
    if metrics is not None:
        root.putChild(b"metrics", MetricsPage(metrics, cfg.http.metrics_networks))
    thunderbird = ThunderbirdConfig(cfg)
    well_known = resource.Resource()
    root.putChild(b".well-known", well_known)
    tb_dir = resource.Resource()
    well_known.putChild(b"autoconfig", tb_dir)
    mail = resource.Resource()
    tb_dir.putChild(b"mail", mail)
    mail.putChild(b"config-v1.1.xml", thunderbird)
    mail2 = resource.Resource()
    root.putChild(b"mail", mail2)
    mail2.putChild(b"config-v1.1.xml", thunderbird)
    well_known.putChild(b"mta-sts.txt", MTASTSPolicy(cfg))
    autodiscover = resource.Resource()
    pox, js = AutodiscoverXML(cfg), AutodiscoverJSON(cfg)
    for name in (b"autodiscover", b"Autodiscover"):
        root.putChild(name, autodiscover)
        autodiscover.putChild(name + b".xml", pox)
        autodiscover.putChild(name + b".json", js)
    root.putChild(b"mobileconfig", MobileConfig(cfg))
    return root
