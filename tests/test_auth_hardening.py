"""Issue 16, what a hostile client did to authentication, against the running server
with real clients: the authorization identity (finding 7)."""

from __future__ import annotations

import base64
import imaplib
import poplib
from typing import Iterator

import pytest

from tests.harness import Server
from tests.submission_client import Raw, plain, started

ALICE, ALICE_PW = "alice@example.test", "alice-pw"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(tmp_path_factory.mktemp("auth-hardening") / "srv",
                       server={"allow_plaintext_auth": True})


# -- finding 7: an authzid other than the authenticated user is refused everywhere ------------


def test_imap_authenticate_plain_as_another_user_is_refused(srv: Server) -> None:
    """Alice's password with authzid bob must not log in as anybody (it logged in as alice)."""
    with imaplib.IMAP4("127.0.0.1", srv.ports["imap"]) as m:
        with pytest.raises(imaplib.IMAP4.error, match=r"AUTHORIZATIONFAILED"):
            m.authenticate("PLAIN", lambda _: f"bob@example.test\0{ALICE}\0{ALICE_PW}".encode())
        assert m.state == "NONAUTH"
        # The session is still unauthenticated: the right credentials work afterwards.
        typ, _ = m.authenticate("PLAIN", lambda _: f"{ALICE}\0{ALICE}\0{ALICE_PW}".encode())
        assert typ == "OK"


def test_smtp_and_pop3_refuse_another_authzid_too(srv: Server) -> None:
    with Raw(srv.ports["submission"]) as r:
        r.cmd("EHLO client.test")
        assert r.cmd("AUTH PLAIN " + plain(ALICE, ALICE_PW, authzid="bob@example.test"))[0] == 535
        assert r.cmd("AUTH PLAIN " + plain("alice", ALICE_PW, authzid=ALICE))[0] == 235
    p = poplib.POP3("127.0.0.1", srv.ports["pop3"])
    try:
        token = base64.b64encode(f"bob@example.test\0{ALICE}\0{ALICE_PW}".encode()).decode()
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            p._shortcmd("AUTH PLAIN " + token)
    finally:
        p.close()
