"""Issue 16, what a hostile client did to authentication, against the running server
with real clients: the authorization identity (finding 7)."""

from __future__ import annotations

import base64
import imaplib
import poplib
from typing import Iterator

import pytest

from tests.support.server import Server, started
from tests.support.smtp import Raw, plain

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


# -- finding 2: passwords over 72 bytes answer alike for known and unknown users -------------

LONG_PW = "ä" * 40  # 80 bytes: bcrypt refused it, and the unknown-user path raised


def test_a_long_password_gets_the_same_answer_for_known_and_unknown_users(srv: Server) -> None:
    answers = {}
    for user in (ALICE, "nobody@example.test"):
        with Raw(srv.ports["submission"]) as r:
            r.cmd("EHLO client.test")
            smtp = r.cmd("AUTH PLAIN " + plain(user, LONG_PW))
        with imaplib.IMAP4("127.0.0.1", srv.ports["imap"]) as m:
            m._encoding = "utf-8"  # type: ignore[attr-defined]  # imaplib sends ASCII only by default
            try:
                m.login(user, LONG_PW)
                imap = "OK"
            except imaplib.IMAP4.error as e:
                imap = str(e)
        p = poplib.POP3("127.0.0.1", srv.ports["pop3"])
        try:
            p.user(user)
            p.pass_(LONG_PW)
            pop = "+OK"
        except poplib.error_proto as e:
            pop = str(e)
        finally:
            p.close()
        answers[user] = (smtp, imap, pop)
    assert answers[ALICE] == answers["nobody@example.test"]
    smtp, imap, pop = answers[ALICE]
    assert smtp[0] == 535 and "AUTHENTICATIONFAILED" in imap and "[AUTH]" in pop
    log = srv.log()
    assert "Traceback" not in log and "CRITICAL" not in log
    # Each probe was counted by the throttle (its fail2ban line), the unknown user's too.
    counted = [line for line in log.splitlines() if "mailsuite auth failure:" in line and "nobody@example.test" in line]
    assert len(counted) == 3


def test_an_account_with_a_long_password_logs_in(tmp_path_factory: pytest.TempPathFactory) -> None:
    users = {ALICE: LONG_PW + "-ok"}
    for s in started(tmp_path_factory.mktemp("long-pw") / "srv", users=users, server={"allow_plaintext_auth": True}):
        with imaplib.IMAP4("127.0.0.1", s.ports["imap"]) as m:
            m._encoding = "utf-8"  # type: ignore[attr-defined]
            assert m.login(ALICE, LONG_PW + "-ok")[0] == "OK"
