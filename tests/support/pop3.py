"""Shared setup for the POP3 end-to-end tests: one server per module with many
accounts, messages put straight into the Maildir, poplib clients over TLS."""

from __future__ import annotations

import itertools
import poplib
import socket
from pathlib import Path
from typing import Any

from mailsuite.store.maildir import BodyFile, deliver_copies
from tests.support.server import Server, make_server
from tests.support.tls import client_context

PASSWORD = "pop-secret-pw"
N_USERS = 60
USERS = {f"u{i}@example.test": PASSWORD for i in range(N_USERS)}
_counter = itertools.count()


def start_pop3_server(root: Path, **overrides: Any) -> Server:
    sections: dict[str, Any] = {
        "pop3": {"idle_timeout": 60, "max_connections_per_ip": 12},
        "limits": {"auth_ip_delay_after": 1000, "auth_ip_refuse_after": 0, "auth_delay_after": 2,
                   "auth_delay": 0.6, "auth_refuse_after": 6},
    }
    for k, v in overrides.items():
        sections.setdefault(k, {}).update(v)
    return make_server(root, users=USERS, **sections).start()


def fresh_user() -> str:
    return f"u{next(_counter)}@example.test"


def put(server: Server, user: str, text: bytes) -> str:
    """Deliver ``text`` (LF line ends) into ``user``'s INBOX as SMTP would."""
    body = server.root / "body.tmp"
    body.write_bytes(text)
    return deliver_copies(server.mail_dir, {user: b""}, BodyFile(str(body), len(text), text.count(b"\n")))[user]


def login(server: Server, user: str, implicit: bool = True) -> poplib.POP3:
    if implicit:
        p: poplib.POP3 = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=client_context(), timeout=20)
    else:
        p = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=20)
        p.stls(client_context())
    p.user(user)
    p.pass_(PASSWORD)
    return p


def raw(server: Server, implicit: bool = True) -> Any:
    """A raw socket (TLS on the implicit port) with the greeting read."""
    s = socket.create_connection(("127.0.0.1", server.ports["pop3s" if implicit else "pop3"]), timeout=10)
    if implicit:
        s = client_context().wrap_socket(s)
    f = s.makefile("rb")
    greeting = f.readline()
    assert greeting.startswith(b"+OK")
    return s, f
