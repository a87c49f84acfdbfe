"""The ``/admin/`` resource: TLS check, login, session and CSRF checks, then one
handler per page.

Every request: not over TLS → 403 (a password never crosses plain HTTP); no valid
session → 303 to the login page; a POST whose ``csrf`` field is not the session's
token → 403.  A POST that changes something answers 303 back to its page (so a
reload does not repeat it) with the outcome as a one-time flash message.  Pages are
tag trees flattened by twisted.web.template, which escapes every value.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server
from twisted.web.template import Tag, flatten, tags

from mailsuite.frontend import Credentials, LoginFailed, LoginGate
from mailsuite.web.admin import IAdmin, data
from mailsuite.web.admin.layout import CSS, cell, frame, post_form, table
from mailsuite.web.admin.sessions import Session, SessionStore

log = Logger(namespace="mailsuite.web")

SESSION_COOKIE = b"__Host-mailsuite-session"
LOGIN_COOKIE = b"__Host-mailsuite-login"
MAX_FIELD = 4096

SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                                b"frame-ancestors 'none'; base-uri 'none'",
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}


class Redirect(Exception):
    def __init__(self, location: str) -> None:
        self.location = location


class Forbidden(Exception):
    pass


def _field(request: server.Request, name: str) -> str:
    values = request.args.get(name.encode())
    if not values:
        return ""
    return values[0][:MAX_FIELD].decode("utf-8", "replace")


def _client_ip(request: server.Request) -> str:
    return getattr(request.getClientAddress(), "host", "") or ""


def _age(seconds: float) -> str:
    from mailsuite.queue.cli import _age as queue_age  # the same wording as `mailsuite queue list`

    return queue_age(seconds)


class AdminPages(resource.Resource):
    isLeaf = True

    def __init__(self, suite: Any) -> None:
        super().__init__()
        self.suite = suite
        self.cfg = suite.config
        self.admins = frozenset(a.lower() for a in self.cfg.http.admins)
        # In files, so that every worker process knows every session.
        self.sessions = SessionStore(self.cfg.server.data_dir / "web" / "sessions", self.cfg.http.session_timeout)
        self.gate = LoginGate(suite.portal, suite.throttle, "http")
        self.edits = defer.DeferredLock()  # one edit of the users/aliases files at a time
        self.file_backend = self.cfg.directory.backend == "file"

    # -- request plumbing -----------------------------------------------------------------

    def render(self, request: server.Request) -> Any:
        for k, v in SECURITY_HEADERS.items():
            request.setHeader(k, v)
        path = "/".join(p.decode("utf-8", "replace") for p in request.postpath).strip("/")
        if path == "style.css":
            request.setHeader(b"content-type", b"text/css; charset=utf-8")
            request.setHeader(b"cache-control", b"max-age=3600")
            return CSS
        if not request.isSecure():
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"The admin pages answer only over HTTPS (http.listen_tls).\n"
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD", "POST"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, POST")
            return b""
        d = defer.ensureDeferred(self._dispatch(request, method, path))
        d.addCallback(self._write, request)
        d.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    async def _dispatch(self, request: server.Request, method: str, path: str) -> Tag:
        if path == "login":
            return await (self._login_post(request) if method == "POST" else self._login_form(request))
        token = (request.getCookie(SESSION_COOKIE) or b"").decode("ascii", "replace")
        session = await self.suite.workers.run(self.sessions.get, token)
        if session is None:
            raise Redirect("/admin/login")
        if method == "POST":
            if not hmac.compare_digest(_field(request, "csrf").encode(), session.csrf.encode()):
                log.info("web: [{ip}] admin POST /admin/{path} without a valid CSRF token refused",
                         ip=_client_ip(request), path=path[:64])
                raise Forbidden()
            if path == "logout":
                await self.suite.workers.run(self.sessions.drop, token)
                raise Redirect("/admin/login")
        head, _, rest = path.partition("/")
        handler = self.PAGES.get((method if method != "HEAD" else "GET", head))
        if handler is None:
            request.setResponseCode(404)
            return frame("Not found", tags.p("No such page."), user=session.user, csrf=session.csrf)
        flash = list(session.flash)
        try:
            return await handler(self, request, session, rest)
        finally:
            if session.flash != flash:  # shown (cleared) or added: other processes must see it
                await self.suite.workers.run(self.sessions.save, token, session)

    def _write(self, tree: Tag, request: server.Request) -> Any:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.write(b"<!DOCTYPE html>\n")
        d = flatten(request, tree, request.write)
        d.addCallback(lambda _: request.finish())
        d.addErrback(self._failed, request)
        return d

    def _failed(self, f: Any, request: server.Request) -> None:
        if request.finished or request._disconnected:  # noqa: SLF001 - twisted.web offers no public flag
            return
        if f.check(Redirect):
            request.setResponseCode(303)
            request.setHeader(b"location", f.value.location.encode())
            request.finish()
            return
        if f.check(Forbidden):
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.write(b"forbidden: missing or wrong CSRF token\n")
            request.finish()
            return
        log.failure("web: admin page failed", f)
        request.setResponseCode(500)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.write(b"internal error; see the server log\n")
        request.finish()

    def _page(self, session: Session, title: str, active: str, body: Any) -> Tag:
        flash, session.flash = session.flash, []
        return frame(title, body, user=session.user, csrf=session.csrf, active=active, flash=flash)

    async def _edit(self, session: Session, f: Callable[..., Any], *args: Any, done: str) -> None:
        """Run a blocking edit in the worker pool under the edit lock; flash the outcome."""
        await self.edits.acquire()
        try:
            await self.suite.workers.run(f, *args)
            session.flash.append(done)
            log.info("web: admin {user}: {what}", user=session.user, what=done)
        except data.EditError as e:
            session.flash.append("!" + str(e))
        finally:
            self.edits.release()

    # -- login ------------------------------------------------------------------------------

    async def _login_form(self, request: server.Request, error: str = "") -> Tag:
        token = secrets.token_urlsafe(24)
        request.addCookie(LOGIN_COOKIE, token.encode(), path=b"/", secure=True, httpOnly=True, sameSite="strict")
        form = tags.form(
            tags.input(type="hidden", name="csrf", value=token),
            tags.label("Address", tags.input(name="username", type="email", autocomplete="username", required="")),
            tags.label("Password", tags.input(name="password", type="password", autocomplete="current-password",
                                              required="")),
            tags.button("Log in", type="submit"),
            method="post", action="/admin/login",
        )
        body = tags.div(form, tags.p("For the accounts listed in http.admins.", **{"class": "note"}),
                        **{"class": "login panel"})
        return frame("Log in", body, flash=["!" + error] if error else [])

    async def _login_post(self, request: server.Request) -> Tag:
        cookie = (request.getCookie(LOGIN_COOKIE) or b"").decode("ascii", "replace")
        if not cookie or not hmac.compare_digest(cookie.encode(), _field(request, "csrf").encode()):
            raise Forbidden()
        login = _field(request, "username").strip()
        password = _field(request, "password")
        ip = _client_ip(request)
        if not login or not password:
            return await self._login_form(request, "Enter your address and password.")
        try:
            result = await self.gate.login(ip, Credentials(login.encode(), password.encode()), IAdmin)
        except LoginFailed:
            return await self._login_form(request, "Login failed.")
        result.logout()
        name = result.name.lower()
        if name not in self.admins:
            log.info("web: [{ip}] {user} is not in http.admins; admin login refused", ip=ip, user=name)
            return await self._login_form(request, "Login failed.")
        token, _session = await self.suite.workers.run(self.sessions.create, name)
        request.addCookie(SESSION_COOKIE, token.encode(), path=b"/", secure=True, httpOnly=True, sameSite="strict")
        request.addCookie(LOGIN_COOKIE, b"", path=b"/", secure=True, httpOnly=True, sameSite="strict", max_age="0")
        log.info("web: [{ip}] admin login {user}", ip=ip, user=name)
        raise Redirect("/admin/")

    # -- dashboard -------------------------------------------------------------------------

    async def page_dashboard(self, request: server.Request, session: Session, rest: str) -> Tag:
        return self._page(session, "Dashboard", "", dashboard_body(self.suite))

    # -- accounts --------------------------------------------------------------------------

    async def page_accounts(self, request: server.Request, session: Session, rest: str) -> Tag:
        if not self.file_backend:
            return self._page(session, "Accounts", "accounts", await self._ldap_accounts(request, session))
        users = await self.suite.workers.run(data.list_users, self.cfg.directory.users_file)
        c = session.csrf
        add = tags.div(tags.h2("Add an account"), post_form(
            "/admin/accounts/add", c,
            tags.label("Address", tags.input(name="address", type="email", required="",
                                             placeholder=f"name@{self.cfg.server.domains[0]}")),
            tags.label("Password", tags.input(name="password", type="password", autocomplete="new-password",
                                              required="")),
            tags.label("Quota (e.g. 2G, empty: none)", tags.input(name="quota")),
            tags.button("Add account", type="submit"), cls="add"), **{"class": "panel"})
        rows = []
        for address, entry in sorted(users.items()):
            q = _size(entry.quota) if entry.quota is not None else "none"
            rows.append(tags.tr(
                cell("Account", tags.strong(address)),
                cell("Quota", q),
                cell("New password", post_form("/admin/accounts/password", c,
                                           tags.input(type="hidden", name="address", value=address),
                                           tags.input(name="password", type="password", placeholder="new password",
                                                      autocomplete="new-password", required="",
                                                      **{"aria-label": f"new password for {address}"}),
                                           tags.button("Set", type="submit"))),
                cell("New quota", post_form("/admin/accounts/quota", c,
                                        tags.input(type="hidden", name="address", value=address),
                                        tags.input(name="quota", value="" if entry.quota is None else str(entry.quota),
                                                   placeholder="none", **{"aria-label": f"quota for {address}"}),
                                        tags.button("Set", type="submit"))),
                cell("", post_form("/admin/accounts/delete", c,
                                         tags.input(type="hidden", name="address", value=address),
                                         tags.button("Delete", type="submit", **{"class": "danger"}))),
            ))
        listing = table(("Account", "Quota", "Reset password", "Change quota", ""), rows) if rows else \
            tags.p("No accounts yet.")
        note = tags.p("Deleting an account keeps its Maildir on disk.", **{"class": "note"})
        return self._page(session, "Accounts", "accounts", [add, tags.h2(f"{len(users)} accounts"), listing, note])

    async def _ldap_accounts(self, request: server.Request, session: Session) -> Any:
        q = _field(request, "q").strip().lower()
        out: list[Any] = [
            tags.p("Accounts come from LDAP (directory.backend = \"ldap\") and are managed there; this page "
                   "only shows what the directory answers.", **{"class": "note"}),
            tags.div(tags.form(tags.label("Address or login", tags.input(name="q", value=q, type="search")),
                               tags.button("Look up", type="submit"), method="get", action="/admin/accounts"),
                     **{"class": "panel"}),
        ]
        if q:
            d = self.suite.directory
            try:
                resolution = await d.resolve(q) if "@" in q else None
                account = await d.account(q)
                if account is None and resolution and len(resolution.mailboxes) == 1:
                    account = await d.account(resolution.mailboxes[0])  # an alternate address
                addresses = await d.sender_addresses(account.name) if account is not None else ()
            except Exception as e:  # noqa: BLE001 - DirectoryUnavailable and friends: show them
                out.append(tags.p(f"The directory did not answer: {e}", **{"class": "bad"}))
                return out
            rows = [tags.tr(cell("Field", "Account"), cell("Value", account.name if account else "none"))]
            if account is not None:
                rows.append(tags.tr(cell("Field", "Quota"),
                                    cell("Value", _size(account.quota) if account.quota is not None else "none")))
                rows.append(tags.tr(cell("Field", "Addresses"), cell("Value", ", ".join(addresses))))
            if resolution:
                rows.append(tags.tr(cell("Field", "Delivers to"), cell("Value", ", ".join(
                    [*resolution.mailboxes, *resolution.forwards]))))
            out.append(table(("Field", "Value"), rows))
        return out

    async def post_accounts(self, request: server.Request, session: Session, rest: str) -> Tag:
        if not self.file_backend:
            session.flash.append("!Accounts are read-only with the LDAP backend.")
            raise Redirect("/admin/accounts")
        path = self.cfg.directory.users_file
        try:
            address = data.check_address(self.cfg.server.domains, self.cfg.mail_dir, _field(request, "address"))
            if rest == "add":
                quota = data.parse_quota(_field(request, "quota"))
                await self._edit(session, data.add_user, path, address, _field(request, "password"), quota,
                                 done=f"Added {address}.")
            elif rest == "password":
                await self._edit(session, data.set_password, path, address, _field(request, "password"),
                                 done=f"Password of {address} changed.")
            elif rest == "quota":
                quota = data.parse_quota(_field(request, "quota"))
                await self._edit(session, data.set_quota, path, address, quota,
                                 done=f"Quota of {address} set to {_size(quota) if quota is not None else 'none'}.")
            elif rest == "delete" and _field(request, "confirm") != "yes":
                # No JavaScript confirm(): one more page, with its own form.
                return self._page(session, "Delete an account", "accounts", [
                    tags.p(f"Delete {address}? It can no longer log in or receive mail; its Maildir stays on "
                           "disk."),
                    post_form("/admin/accounts/delete", session.csrf,
                              tags.input(type="hidden", name="address", value=address),
                              tags.input(type="hidden", name="confirm", value="yes"),
                              tags.button(f"Delete {address}", type="submit", **{"class": "danger"}),
                              tags.a("Cancel", href="/admin/accounts")),
                ])
            elif rest == "delete":
                await self._edit(session, data.delete_user, path, address, done=f"Deleted {address}.")
                await self.suite.workers.run(self.sessions.drop_user, address)
        except data.EditError as e:
            session.flash.append("!" + str(e))
        raise Redirect("/admin/accounts")

    # -- aliases ---------------------------------------------------------------------------

    async def page_aliases(self, request: server.Request, session: Session, rest: str) -> Tag:
        if not self.file_backend:
            body = tags.p("Aliases come from LDAP with directory.backend = \"ldap\"; look an address up on the "
                          "Accounts page to see where it delivers.", **{"class": "note"})
            return self._page(session, "Aliases", "aliases", body)
        aliases = await self.suite.workers.run(data.list_aliases, self.cfg.directory.aliases_file)
        c = session.csrf
        add = tags.div(tags.h2("Add or change an alias"), post_form(
            "/admin/aliases/set", c,
            tags.label("Alias", tags.input(name="alias", type="email", required="",
                                           placeholder=f"info@{self.cfg.server.domains[0]}")),
            tags.label("Targets (comma-separated)", tags.input(name="targets", required="",
                                                              placeholder="alice, bob@example.org")),
            tags.button("Save alias", type="submit"), cls="add"), **{"class": "panel"})
        rows = [tags.tr(cell("Alias", tags.strong(a)), cell("Delivers to", ", ".join(t)),
                        cell("", post_form("/admin/aliases/delete", c, tags.input(type="hidden", name="alias", value=a),
                                           tags.button("Delete", type="submit", **{"class": "danger"}))))
                for a, t in sorted(aliases.items())]
        listing = table(("Alias", "Delivers to", ""), rows) if rows else tags.p("No aliases.")
        return self._page(session, "Aliases", "aliases", [add, tags.h2(f"{len(aliases)} aliases"), listing])

    async def post_aliases(self, request: server.Request, session: Session, rest: str) -> Tag:
        if not self.file_backend:
            raise Redirect("/admin/aliases")
        path = self.cfg.directory.aliases_file
        try:
            alias = data.check_address(self.cfg.server.domains, self.cfg.mail_dir, _field(request, "alias"))
            if rest == "set":
                await self._edit(session, data.set_alias, path, alias, _field(request, "targets"),
                                 done=f"Alias {alias} saved.")
            elif rest == "delete":
                await self._edit(session, data.delete_alias, path, alias, done=f"Alias {alias} deleted.")
        except data.EditError as e:
            session.flash.append("!" + str(e))
        raise Redirect("/admin/aliases")

    # -- queue -----------------------------------------------------------------------------
    # In one process the queue manager is right here; with [server] processes > 1 it
    # runs in the parent and this page may be served by a worker, which then reads the
    # spool and asks the parent through the control requests `mailsuite queue` uses.

    def _manager(self) -> Any:
        from mailsuite.queue.scheduler import QueueManager

        q = getattr(self.suite, "queue", None)
        return q if isinstance(q, QueueManager) and q.owns_spool else None

    async def _queued(self) -> list[tuple[Any, bool]]:
        """(record, being delivered now) for each queued message, oldest first."""
        manager = self._manager()
        if manager is not None:
            out = [(e.record, e.busy) for e in manager.entries.values() if not e.deleted]
        else:
            out = [(r, False) for r in await self.suite.workers.run(data.spool_records, self.cfg.queue_dir)]
        return sorted(out, key=lambda rb: rb[0].arrival)

    async def page_queue(self, request: server.Request, session: Session, rest: str) -> Tag:
        if rest:
            return await self._queue_message(session, rest)
        now = time.time()
        c = session.csrf
        rows = []
        for rec, busy in await self._queued():
            qid = rec.id
            pending = [r for r in rec.recipients if not r.final]
            state = "being delivered" if busy else ("deferred" if any(r.attempts for r in pending) else "waiting")
            errors = sorted({r.error for r in pending if r.error})
            rows.append(tags.tr(
                cell("Queue ID", tags.a(qid, href=f"/admin/queue/{quote(qid)}")),
                cell("Age", _age(now - rec.arrival)),
                cell("From", f"<{rec.sender}>"),
                cell("To", ", ".join(r.address for r in pending) or "-"),
                cell("State", state),
                cell("Last error", "; ".join(errors) or "-"),
                cell("", post_form("/admin/queue/retry", c, tags.input(type="hidden", name="id", value=qid),
                                   tags.button("Retry now", type="submit")),
                     post_form("/admin/queue/delete", c, tags.input(type="hidden", name="id", value=qid),
                               tags.button("Delete", type="submit", **{"class": "danger"}))),
            ))
        body = [tags.p(f"{len(rows)} message(s) in the queue.")]
        if rows:
            body.append(table(("Queue ID", "Age", "From", "To", "State", "Last error", ""), rows))
            body.append(tags.p("Delete removes a message without a bounce to its sender.", **{"class": "note"}))
        return self._page(session, "Queue", "queue", body)

    async def _queue_message(self, session: Session, qid: str) -> Tag:
        rec = next((r for r, _busy in await self._queued() if r.id == qid), None)
        if rec is None:
            session.flash.append(f"!{qid}: not in the queue (delivered or deleted).")
            raise Redirect("/admin/queue")
        now = time.time()
        rows = [tags.tr(cell("Recipient", r.address), cell("State", r.state if r.final else
                                                          ("deferred" if r.attempts else "waiting")),
                        cell("Attempts", str(r.attempts)),
                        cell("Next attempt", _age(r.next_attempt - now) if not r.final and r.next_attempt > now else "-"),
                        cell("Last error", f"{r.dsn} {r.error}".strip() or "-"))
                for r in rec.recipients]
        try:
            headers = await self.suite.workers.run(data.spool_headers, self.cfg.queue_dir, qid)
        except OSError as e:
            headers = f"(headers unreadable: {e})".encode()
        c = session.csrf
        body = [
            tags.p(f"From <{rec.sender}>, {rec.size} bytes, arrived {_age(now - rec.arrival)} ago from "
                   f"{rec.client_ip or 'local'}{', user ' + rec.auth_user if rec.auth_user else ''}."),
            table(("Recipient", "State", "Attempts", "Next attempt", "Last error"), rows),
            tags.div(post_form("/admin/queue/retry", c, tags.input(type="hidden", name="id", value=qid),
                               tags.button("Retry now", type="submit")),
                     post_form("/admin/queue/delete", c, tags.input(type="hidden", name="id", value=qid),
                               tags.button("Delete", type="submit", **{"class": "danger"}))),
            tags.h2("Headers"), tags.pre(headers.decode("utf-8", "replace")),
        ]
        return self._page(session, f"Message {qid}", "queue", body)

    async def post_queue(self, request: server.Request, session: Session, rest: str) -> Tag:
        qid = _field(request, "id")
        if rest not in ("retry", "delete") or not qid:
            raise Redirect("/admin/queue")
        manager = self._manager()
        if manager is not None:
            ok = manager.retry(qid) if rest == "retry" else await manager.delete(qid)
            message = ""
        else:
            ok, message = await self.suite.workers.run(data.queue_request, self.cfg.queue_dir, rest, qid)
        if ok:
            session.flash.append(f"{qid}: retrying now." if rest == "retry" else f"{qid}: deleted.")
        else:
            session.flash.append(f"!{qid}: {message or 'not in the queue'}.")
        log.info("web: admin {user}: queue {op} {qid}", user=session.user, op=rest, qid=qid[:40])
        raise Redirect("/admin/queue")

    # -- DNS -------------------------------------------------------------------------------

    async def page_dns(self, request: server.Request, session: Session, rest: str) -> Tag:
        from mailsuite.mailauth.records import check, records_for

        body: list[Any] = [tags.p("What each domain should publish, looked up now through the server's resolver "
                                  "(" + (", ".join(self.cfg.dns.nameservers) or "/etc/resolv.conf") + ").",
                                  **{"class": "note"})]
        for domain in self.cfg.server.domains:
            records = records_for(self.cfg, domain)
            # One worker job per record: the page waits for the slowest lookup, not the sum.
            parts = await defer.gatherResults([self.suite.workers.run(check, self.suite.resolver, [r]) for r in records])
            results = [r for part in parts for r in part]
            rows = [tags.tr(
                cell("Name", tags.code(r.record.name)), cell("Type", r.record.rtype),
                cell("Value", tags.code(r.record.value), cls="v"),
                cell("Live", r.status, *([tags.br(), "found: " + "; ".join(r.found)] if r.status != "ok" and r.found else []),
                     cls=r.status),
                cell("Purpose", r.record.purpose),
            ) for r in results]
            ok = sum(1 for r in results if r.status == "ok")
            body += [tags.h2(f"{domain}: {ok} of {len(results)} published"),
                     table(("Name", "Type", "Value", "Live", "Purpose"), rows)]
        return self._page(session, "DNS records", "dns", body)

    PAGES: dict[tuple[str, str], Callable[..., Awaitable[Tag]]] = {
        ("GET", ""): page_dashboard,
        ("GET", "accounts"): page_accounts,
        ("POST", "accounts"): post_accounts,
        ("GET", "aliases"): page_aliases,
        ("POST", "aliases"): post_aliases,
        ("GET", "queue"): page_queue,
        ("POST", "queue"): post_queue,
        ("GET", "dns"): page_dns,
    }


def _size(n: int | None) -> str:
    if n is None:
        return "none"
    for unit, div in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= div:
            return f"{n / div:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def dashboard_body(suite: Any) -> Any:
    from mailsuite.web.dashboard import families_of, figures

    m = suite.metrics
    if not m.enabled:
        return [tags.p("Metrics are off (http.metrics = false): no counts.", **{"class": "note"})]
    # What /metrics shows (every process's values when there are several).
    f = figures(families_of(m.scrape_registry()))

    def card(label: str, value: Any, warn: bool = False) -> Tag:
        return tags.div(tags.div(str(value), **{"class": "n"}), tags.div(label, **{"class": "l"}),
                        **{"class": "card warn" if warn else "card"})

    t = f["today"]
    counts = tags.div(
        card("received", t["received"]), card("delivered", t["delivered"]), card("queued", t["queued"]),
        card("deferred", t["deferred"], t["deferred"] > 0), card("bounced", t["bounced"], t["bounced"] > 0),
        card("rejected", t["rejected"]), card("failed logins", t["logins_failed"], t["logins_failed"] > 0),
        **{"class": "cards"})
    queue = tags.div(
        card("in the queue", f["queue_messages"], f["queue_messages"] > 0),
        card("oldest", _age(f["queue_oldest_age"]) if f["queue_messages"] else "-"),
        **{"class": "cards"})
    live = tags.div(*[card(f"{p} connections", v) for p, v in f["connections_open"].items()],
                    card("reactor lag", f"{f['reactor_lag'] * 1000:.0f} ms", f["reactor_lag"] > 0.1),
                    card("up", _age(f["uptime"]) if f["uptime"] is not None else "-"), **{"class": "cards"})
    note = tags.p("Counts since midnight (server time), from the same metrics as /metrics and "
                  "mailsuite status.", **{"class": "note"})
    return [tags.h2("Today"), counts, tags.h2("Queue"), queue, tags.h2("Now"), live, note]
