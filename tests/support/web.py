"""An HTTP(S) client for the web service tests: one request on a fresh connection to
the server's loopback listener, with any Host header (the tests cannot resolve
``autoconfig.example.test``, so they send the name as a browser behind DNS would)."""

from __future__ import annotations

import http.client
from dataclasses import dataclass

from tests.support.tls import trusting_context


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


def request(server, method: str, path: str, *, host: str | None = None, tls: bool = False,  # type: ignore[no-untyped-def]
            body: bytes | None = None, headers: dict[str, str] | None = None, port: int | None = None) -> Reply:
    if tls:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port or server.ports["https"], context=trusting_context(server), timeout=10)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port or server.ports["http"], timeout=10)
    hdrs = dict(headers or {})
    if host is not None:
        hdrs["Host"] = host
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        conn.close()


def get(server, path: str, **kw) -> Reply:  # type: ignore[no-untyped-def]
    return request(server, "GET", path, **kw)
