"""The web side with ``[directory] backend = "ldap"`` against a real slapd: LDAP
requests, errors and latency in /metrics, and the admin Accounts page showing what
LDAP says (read-only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.slapd import Slapd
from tests.support.web import AdminClient
from tests.test_ldap_server import ca, ldap_server, own_slapd, rcpt  # noqa: F401 - fixtures
from tests.test_web_metrics import scrape, value


def test_ldap_requests_errors_and_latency_are_counted(tmp_path: Path, own_slapd: Slapd, ca: Any) -> None:  # noqa: F811
    srv = ldap_server(tmp_path / "srv", [own_slapd.url], ca, cache_ttl=0, negative_cache_ttl=0,
                      auth_cache_ttl=0).start()
    try:
        assert rcpt(srv, "alice@example.test")[0] == 250
        own_slapd.pause()
        assert rcpt(srv, "bob@example.test")[0] == 451
        own_slapd.resume()
        m = scrape(srv)
        assert value(m, "mailsuite_ldap_requests_total", operation="resolve") >= 2
        assert value(m, "mailsuite_ldap_errors_total", operation="resolve") >= 1
        assert value(m, "mailsuite_ldap_request_seconds_count") >= 2
        # The hung request took at least the request timeout (1.5 s) to fail.
        slow = value(m, "mailsuite_ldap_request_seconds_count") - value(
            m, "mailsuite_ldap_request_seconds_bucket", le="1.0")
        assert slow >= 1
    finally:
        own_slapd.resume()
        srv.stop()


def test_admin_accounts_page_shows_what_ldap_says(tmp_path: Path, own_slapd: Slapd, ca: Any) -> None:  # noqa: F811
    srv = ldap_server(tmp_path / "srv", [own_slapd.url], ca)
    srv.sections.setdefault("http", {}).update(admins=["alice@example.test"])
    srv.start()
    try:
        c = AdminClient(srv)
        assert c.login("alice@example.test", "alice-pw").status == 303
        page = c.get("/admin/accounts").body.decode()
        assert "managed there" in page and "Add an account" not in page
        page = c.get("/admin/accounts?q=a.smith%40example.test").body.decode()
        assert "alice@example.test" in page and "1 GiB" in page and "alice@other.test" in page
        # Edits are refused, politely.
        c.post("/admin/accounts/add", {"address": "x@example.test", "password": "p"})
        assert "read-only with the LDAP backend" in c.get("/admin/accounts").body.decode()
    finally:
        srv.stop()
