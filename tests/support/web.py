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


class AdminClient:
    """A plain HTTPS client for /admin/ that keeps cookies the way a browser does and
    reads the CSRF token from the last page it got."""

    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        self.server = server
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = dict(extra or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return h

    def _remember(self, reply: Reply) -> Reply:
        import re

        for raw in reply.headers.get_all("Set-Cookie") or []:
            name, _, rest = raw.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in raw.lower() or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        m = re.search(rb'name="csrf" value="([^"]+)"', reply.body)
        if m:
            self.csrf = m.group(1).decode()
        return reply

    def get(self, path: str) -> Reply:
        return self._remember(request(self.server, "GET", path, tls=True, headers=self._headers()))

    def post(self, path: str, fields: dict[str, str], csrf: bool = True) -> Reply:
        from urllib.parse import urlencode

        if csrf:
            fields = {"csrf": self.csrf, **fields}
        body = urlencode(fields).encode()
        return self._remember(request(self.server, "POST", path, tls=True, body=body, headers=self._headers(
            {"Content-Type": "application/x-www-form-urlencoded"})))

    def login(self, user: str, password: str) -> Reply:
        self.get("/admin/login")
        return self.post("/admin/login", {"username": user, "password": password})
