"""The admin pages with a plain HTTPS client: what is refused (no TLS, no session, no
CSRF token, a non-admin, a wrong password, counted by the shared throttle) and what
each page shows and does."""

from __future__ import annotations

import re

from tests.support.admin import ADMIN, ADMIN_PW, send_queued
from tests.support.waiting import wait_for
from tests.support.web import AdminClient, get, request

PAGES = ("/admin/", "/admin/accounts", "/admin/aliases", "/admin/queue", "/admin/dns")


def logged_in(server) -> AdminClient:  # type: ignore[no-untyped-def]
    c = AdminClient(server)
    r = c.login(ADMIN, ADMIN_PW)
    assert r.status == 303 and r.header("location") == "/admin/"
    return c


def test_no_page_without_login(admin_setup) -> None:
    srv = admin_setup.server
    for path in PAGES + ("/admin/queue/ANYTHING",):
        r = request(srv, "GET", path, tls=True)
        assert r.status == 303, path
        assert r.header("location") == "/admin/login"
        assert b"alice" not in r.body
    r = request(srv, "POST", "/admin/accounts/add", tls=True, body=b"address=x%40example.test&password=p",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 303 and r.header("location") == "/admin/login"


def test_admin_pages_only_over_tls(admin_setup) -> None:
    r = get(admin_setup.server, "/admin/login")
    assert r.status == 403
    assert b"HTTPS" in r.body


def test_session_cookie_is_secure_httponly_strict_and_pages_forbid_framing(admin_setup) -> None:
    c = AdminClient(admin_setup.server)
    c.get("/admin/login")
    r = c.post("/admin/login", {"username": ADMIN, "password": ADMIN_PW})
    (cookie,) = [h for h in r.headers.get_all("Set-Cookie") if h.startswith("__Host-mailsuite-session=")]
    attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= attrs
    page = c.get("/admin/")
    assert "frame-ancestors 'none'" in page.header("content-security-policy")
    assert page.header("cache-control") == "no-store"
    assert b'name="viewport"' in page.body


def test_post_without_csrf_token_is_refused(admin_setup) -> None:
    c = logged_in(admin_setup.server)
    c.get("/admin/accounts")
    for path, fields in (("/admin/accounts/add", {"address": "mallory@example.test", "password": "x"}),
                         ("/admin/queue/delete", {"id": "whatever"}),
                         ("/admin/logout", {})):
        assert c.post(path, fields, csrf=False).status == 403
        assert c.post(path, {**fields, "csrf": "forged"}, csrf=False).status == 403
    assert b"mallory" not in c.get("/admin/accounts").body
    # The login form has its own token too (bound to a cookie), so a forged login is refused.
    fresh = AdminClient(admin_setup.server)
    assert fresh.post("/admin/login", {"username": ADMIN, "password": ADMIN_PW}, csrf=False).status == 403


def test_non_admins_and_wrong_passwords_cannot_log_in(admin_setup) -> None:
    srv = admin_setup.server
    for user, pw in (("bob@example.test", "bob-pw"), (ADMIN, "wrong")):
        c = AdminClient(srv)
        r = c.login(user, pw)
        assert r.status == 200 and b"Login failed" in r.body
        assert "__Host-mailsuite-session" not in c.cookies
    assert "mailsuite auth failure: proto=http rip=127.0.0.1 user=alice@example.test" in srv.log()


def test_every_form_carries_the_csrf_token(admin_setup) -> None:
    c = logged_in(admin_setup.server)
    for path in PAGES:
        body = c.get(path).body.decode()
        forms = re.findall(r"<form[^>]*method=\"post\".*?</form>", body, re.S)
        assert forms, path
        for f in forms:
            assert f'name="csrf" value="{c.csrf}"' in f, (path, f)


def test_accounts_add_password_quota_delete(admin_setup) -> None:
    import imaplib

    srv = admin_setup.server
    c = logged_in(srv)
    c.get("/admin/accounts")
    r = c.post("/admin/accounts/add", {"address": "dave@example.test", "password": "dave-pw", "quota": "2M"})
    assert r.status == 303
    page = c.get("/admin/accounts").body
    assert b"Added dave@example.test." in page and b"2 MiB" in page
    imap = imaplib.IMAP4("127.0.0.1", srv.ports["imap"])
    imap.starttls()
    imap.login("dave@example.test", "dave-pw")  # the running server knows the new account at once
    imap.logout()
    c.post("/admin/accounts/password", {"address": "dave@example.test", "password": "new-pw"})
    c.post("/admin/accounts/quota", {"address": "dave@example.test", "quota": ""})
    page = c.get("/admin/accounts").body
    assert b"Password of dave@example.test changed." in page
    assert b"Quota of dave@example.test set to none." in page
    confirm = c.post("/admin/accounts/delete", {"address": "dave@example.test"})
    assert confirm.status == 200 and b"Delete dave@example.test?" in confirm.body  # asks first
    assert "dave@example.test" in (srv.root / "users").read_text()
    c.post("/admin/accounts/delete", {"address": "dave@example.test", "confirm": "yes"})
    assert b"Deleted dave@example.test." in c.get("/admin/accounts").body
    assert "dave@example.test" not in (srv.root / "users").read_text()
    # Bad input is an error message, not a traceback.
    c.post("/admin/accounts/add", {"address": "eve@elsewhere.test", "password": "x"})
    assert b"not an address in a local domain" in c.get("/admin/accounts").body
    c.post("/admin/accounts/add", {"address": "../x@example.test", "password": "x"})
    assert b"class=\"flash error\"" in c.get("/admin/accounts").body
    assert "Traceback" not in srv.log()


def test_aliases_add_and_delete(admin_setup) -> None:
    srv = admin_setup.server
    c = logged_in(srv)
    c.get("/admin/aliases")
    c.post("/admin/aliases/set", {"alias": "info@example.test", "targets": "alice, bob@example.test"})
    page = c.get("/admin/aliases").body
    assert b"info@example.test" in page and b"alice@example.test, bob@example.test" in page
    assert "info@example.test: alice@example.test, bob@example.test" in (srv.root / "aliases").read_text()
    c.post("/admin/aliases/delete", {"alias": "info@example.test"})
    assert b"Alias info@example.test deleted." in c.get("/admin/aliases").body


def test_queue_list_show_retry_delete(admin_setup) -> None:
    srv = admin_setup.server
    c = logged_in(srv)
    page = c.get("/admin/queue").body.decode()
    (qid,) = re.findall(r'href="/admin/queue/([^"]+)"', page)
    assert "someone@remote.test" in page and "451 4.7.1 greylisted" in page
    detail = c.get(f"/admin/queue/{qid}").body.decode()
    assert "Subject: waiting" in detail and "deferred" in detail
    admin_setup.script.rcpt = lambda a: "250 2.1.5 Ok"
    c.post("/admin/queue/retry", {"id": qid})
    wait_for(lambda: f"relay: {qid}: to=<someone@remote.test>" in srv.log() and "status=sent" in srv.log(),
             what="delivery after retry", server=srv)
    assert b"0 message(s) in the queue" in c.get("/admin/queue").body
    admin_setup.script.rcpt = lambda a: "451 4.7.1 not now"
    send_queued(srv, "second")
    wait_for(lambda: srv.log().count("status=deferred") >= 2, what="second deferral", server=srv)
    qid2 = re.findall(r'href="/admin/queue/([^"]+)"', c.get("/admin/queue").body.decode())[0]
    c.post("/admin/queue/delete", {"id": qid2})
    assert f"{qid2}: deleted.".encode() in c.get("/admin/queue").body


def test_dns_page_says_which_records_are_live(admin_setup) -> None:
    c = logged_in(admin_setup.server)
    page = c.get("/admin/dns").body.decode()
    assert "example.test:" in page and "other.test:" in page
    mx = re.search(r"<code>example\.test</code></td><td data-label=\"Type\">MX</td>.*?data-label=\"Live\" class=\"(\w+)\"",
                   page, re.S)
    assert mx and mx.group(1) == "ok"
    dmarc = re.search(r"<code>_dmarc\.example\.test</code>.*?data-label=\"Live\" class=\"(\w+)\"", page, re.S)
    assert dmarc and dmarc.group(1) == "differs"
    assert re.search(r"<code>autoconfig\.example\.test</code>.*?class=\"missing\"", page, re.S)


def test_dashboard_shows_todays_counts(admin_setup) -> None:
    page = logged_in(admin_setup.server).get("/admin/").body.decode()
    received = re.search(r'<div class="n">(\d+)</div><div class="l">received</div>', page)
    assert received and int(received.group(1)) == 1
    assert re.search(r'<div class="n">1</div><div class="l">in the queue</div>', page)


def test_logout_ends_the_session(admin_setup) -> None:
    c = logged_in(admin_setup.server)
    c.get("/admin/")
    session = dict(c.cookies)
    assert c.post("/admin/logout", {}).header("location") == "/admin/login"
    c.cookies = session  # the old cookie is worthless now
    assert c.get("/admin/").status == 303


def test_repeated_wrong_admin_passwords_are_throttled_like_any_login(admin_setup) -> None:
    from tests.test_web_metrics import scrape, value

    srv = admin_setup.server
    for _ in range(4):  # limits.auth_delay_after = 3: the fourth answer is delayed
        assert b"Login failed" in AdminClient(srv).login(ADMIN, "wrong").body
    m = scrape(srv)
    assert value(m, "mailsuite_logins_total", protocol="http", result="failed") == 4
    assert value(m, "mailsuite_auth_throttle_events_total", action="delayed") >= 1
    assert logged_in(srv).get("/admin/").status == 200  # the right password still works afterwards
    assert value(scrape(srv), "mailsuite_logins_total", protocol="http", result="ok") == 1


def test_admin_pages_with_several_processes(server_factory, peers, dns_factory) -> None:
    """[server] processes = 2: each request may land on another worker.  Sessions are
    shared, and the queue page works from a worker through the spool and the control
    requests of `mailsuite queue`."""
    from tests.support.admin import send_queued
    from tests.support.relay import Script, relay_server

    script = Script(rcpt=lambda a: "451 4.7.1 greylisted, come back later")
    peer = peers(script)
    srv = relay_server(server_factory, transport={"remote.test": peer.hop}, backoff_min=3600, backoff_max=3600,
                       control_poll_interval=0.1)
    srv.sections["server"]["processes"] = 2
    srv.sections.setdefault("http", {}).update(admins=[ADMIN])
    srv.start()
    send_queued(srv)
    wait_for(lambda: "status=deferred" in srv.log(), what="the message deferred", server=srv)
    c = logged_in(srv)
    # With several processes the parent writes the queue gauges every second and
    # today's counts every TODAY_REFRESH (15) seconds.
    wait_for(lambda: all(f'<div class="n">1</div><div class="l">{label}</div>' in page
                         for page in [c.get("/admin/").body.decode()] for label in ("in the queue", "received")),
             timeout=40, what="the queue and today's gauges on the dashboard")
    for _ in range(6):  # new connections, spread over both workers; each shows every process's counts
        page = c.get("/admin/").body.decode()
        assert re.search(r'<div class="n">1</div><div class="l">received</div>', page)
        assert re.search(r'<div class="n">1</div><div class="l">in the queue</div>', page)
    page = c.get("/admin/queue").body.decode()
    (qid,) = re.findall(r'href="/admin/queue/([^"]+)"', page)
    assert "451 4.7.1 greylisted" in page
    assert "Subject: waiting" in c.get(f"/admin/queue/{qid}").body.decode()
    script.rcpt = lambda a: "250 2.1.5 Ok"
    c.get("/admin/queue")
    assert c.post("/admin/queue/retry", {"id": qid}).status == 303
    assert f"{qid}: retrying now.".encode() in c.get("/admin/queue").body  # the parent answered
    wait_for(lambda: "status=sent" in srv.log(), what="delivery after the retry", server=srv)
    wait_for(lambda: b"0 message(s) in the queue" in c.get("/admin/queue").body, what="an empty queue")
