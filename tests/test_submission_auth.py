"""Submission (587 STARTTLS, 465 implicit TLS) and the MX listener: who is offered
AUTH when, and every answer of AUTH and STARTTLS (RFC 4954, RFC 3207, RFC 8314)."""

from __future__ import annotations

import smtplib
import ssl
from typing import Iterator

import pytest

from tests.support.server import Server, started
from tests.support.smtp import HOST, Raw, b64, message, plain, submit_session, swaks
from tests.support.tls import client_context


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(tmp_path_factory.mktemp("auth") / "srv")


@pytest.fixture(scope="module")
def plain_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """allow_plaintext_auth, and AUTH offered on the MX listener too."""
    yield from started(tmp_path_factory.mktemp("plain") / "srv",
                       server={"allow_plaintext_auth": True}, smtp={"offer_auth": True})


def tls_session(port: int) -> Raw:
    r = Raw(port)
    r.cmd("EHLO client.test")
    r.starttls()
    r.cmd("EHLO client.test")
    return r


# -- what is offered when ---------------------------------------------------------------


def test_submission_offers_starttls_but_not_auth_before_tls(srv: Server) -> None:
    with Raw(srv.ports["submission"]) as r:
        code, text = r.cmd("EHLO client.test")
    assert code == 250
    assert "STARTTLS" in text.splitlines()
    assert not any(line.startswith("AUTH") for line in text.splitlines())


def test_submission_offers_auth_plain_login_after_starttls(srv: Server) -> None:
    with Raw(srv.ports["submission"]) as r:
        r.cmd("EHLO client.test")
        r.starttls()
        code, text = r.cmd("EHLO client.test")
    assert "AUTH PLAIN LOGIN" in text.splitlines()
    assert "STARTTLS" not in text.splitlines()


def test_implicit_tls_port_offers_auth_and_no_starttls(srv: Server) -> None:
    with Raw(srv.ports["submissions"], implicit_tls=True) as r:
        assert r.greeting[0] == 220
        code, text = r.cmd("EHLO client.test")
    assert "AUTH PLAIN LOGIN" in text.splitlines()
    assert "STARTTLS" not in text.splitlines()


def test_auth_before_starttls_is_refused_with_530(srv: Server) -> None:
    with Raw(srv.ports["submission"]) as r:
        r.cmd("EHLO client.test")
        assert r.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-pw")) == (
            530, "5.7.0 Must issue a STARTTLS command first")


def test_mail_before_auth_is_refused_with_530(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        code, text = r.cmd("MAIL FROM:<alice@example.test>")
    assert (code, text[:5]) == (530, "5.7.0")


def test_mx_listener_offers_starttls_and_no_auth(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as r:
        _, before = r.cmd("EHLO client.test")
        r.starttls()
        _, after = r.cmd("EHLO client.test")
        code, _ = r.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-pw"))
    assert "STARTTLS" in before.splitlines()
    assert not any(line.startswith("AUTH") for line in before.splitlines() + after.splitlines())
    assert code == 503


def test_mx_listener_does_not_require_tls(srv: Server) -> None:
    with smtplib.SMTP(HOST, srv.ports["smtp"], timeout=10) as s:
        assert s.sendmail("x@remote.test", ["bob@example.test"], message("x@remote.test", "bob@example.test")) == {}


def test_mx_listener_offers_auth_after_tls_when_configured(plain_srv: Server) -> None:
    with Raw(plain_srv.ports["smtp"]) as r:
        r.cmd("EHLO client.test")
        r.starttls()
        _, text = r.cmd("EHLO client.test")
    assert "AUTH PLAIN LOGIN" in text.splitlines()


def test_allow_plaintext_auth_offers_and_accepts_auth_without_tls(plain_srv: Server) -> None:
    with Raw(plain_srv.ports["submission"]) as r:
        _, text = r.cmd("EHLO client.test")
        assert "AUTH PLAIN LOGIN" in text.splitlines()
        assert r.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-pw"))[0] == 235


# -- successful AUTH with real clients ----------------------------------------------------


def test_smtplib_starttls_and_auth_plain_sends_a_message(srv: Server) -> None:
    with submit_session(srv) as s:
        s.sendmail("alice@example.test", ["bob@example.test"], message("alice@example.test", "bob@example.test", "plain"))
    assert any(b"Subject: plain" in m for m in srv.messages("bob@example.test"))


def test_smtplib_auth_login_on_587(srv: Server) -> None:
    with smtplib.SMTP(HOST, srv.ports["submission"], timeout=10) as s:
        s.starttls(context=client_context())
        s.ehlo()
        s.user, s.password = "alice@example.test", "alice-pw"
        assert s.auth("LOGIN", s.auth_login)[0] == 235


def test_smtplib_login_on_465_implicit_tls(srv: Server) -> None:
    with smtplib.SMTP_SSL(HOST, srv.ports["submissions"], context=client_context(), timeout=10) as s:
        assert s.login("bob@example.test", "bob-pw")[0] == 235
        s.sendmail("bob@example.test", ["alice@example.test"], message("bob@example.test", "alice@example.test", "via465"))
    assert any(b"Subject: via465" in m for m in srv.messages("alice@example.test"))


def test_authenticated_user_may_relay_to_any_domain(srv: Server) -> None:
    with submit_session(srv) as s:
        s.ehlo()
        assert s.mail("alice@example.test")[0] == 250
        assert s.rcpt("someone@elsewhere.example")[0] == 250
        s.rset()


def test_authenticated_user_message_to_another_domain_is_queued(srv: Server) -> None:
    with submit_session(srv) as s:
        refused = s.sendmail("alice@example.test", ["someone@elsewhere.example"],
                             message("alice@example.test", "someone@elsewhere.example", "outbound"))
    assert refused == {}
    assert "to=<someone@elsewhere.example>" in srv.log()


def test_unauthenticated_mx_client_may_not_relay(srv: Server) -> None:
    # 127.0.0.1 is in the default relay_networks, so the MX port would relay for it;
    # the point here is that submission without AUTH never gets as far as RCPT.
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("MAIL FROM:<alice@example.test>")[0] == 530
        assert r.cmd("RCPT TO:<someone@elsewhere.example>")[0] == 503


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_starttls_auth_on_587(srv: Server, mechanism: str) -> None:
    r = swaks("--port", str(srv.ports["submission"]), "--tls", "--auth", mechanism,
              "--auth-user", "alice@example.test", "--auth-password", "alice-pw",
              "--from", "alice@example.test", "--to", "bob@example.test",
              "--header", f"Subject: swaks-{mechanism}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0" in r.stdout
    assert any(f"Subject: swaks-{mechanism}".encode() in m for m in srv.messages("bob@example.test"))


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_implicit_tls_auth_on_465(srv: Server, mechanism: str) -> None:
    r = swaks("--port", str(srv.ports["submissions"]), "--tlsc", "--auth", mechanism,
              "--auth-user", "bob@example.test", "--auth-password", "bob-pw",
              "--from", "bob@example.test", "--to", "alice@example.test",
              "--header", f"Subject: swaks465-{mechanism}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert any(f"Subject: swaks465-{mechanism}".encode() in m for m in srv.messages("alice@example.test"))


def test_swaks_wrong_password_gets_535(srv: Server) -> None:
    r = swaks("--port", str(srv.ports["submission"]), "--tls", "--auth", "LOGIN",
              "--auth-user", "carol@other.test", "--auth-password", "wrong",
              "--from", "carol@other.test", "--to", "bob@example.test")
    assert r.returncode != 0
    assert "535 5.7.8" in r.stdout


# -- AUTH answers ---------------------------------------------------------------------------


def test_wrong_password_gets_535(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("AUTH PLAIN " + plain("carol@other.test", "nope")) == (
            535, "5.7.8 Authentication credentials invalid")


def test_unknown_user_gets_the_same_535(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("AUTH PLAIN " + plain("nobody@example.test", "nope")) == (
            535, "5.7.8 Authentication credentials invalid")


def test_auth_plain_with_challenge(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("AUTH PLAIN") == (334, "")
        assert r.cmd(plain("alice@example.test", "alice-pw"))[0] == 235


def test_auth_login_prompts_for_username_and_password(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("AUTH LOGIN") == (334, b64("Username:"))
        assert r.cmd(b64("alice@example.test")) == (334, b64("Password:"))
        assert r.cmd(b64("alice-pw"))[0] == 235


def test_auth_login_with_initial_username(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("AUTH LOGIN " + b64("alice@example.test")) == (334, b64("Password:"))
        assert r.cmd(b64("alice-pw"))[0] == 235


def test_auth_with_bad_base64_gets_501(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("AUTH PLAIN %%%not-base64%%%")[0] == 501
        assert r.cmd("AUTH LOGIN") [0] == 334
        assert r.cmd("!!!")[0] == 501
        assert r.cmd("NOOP")[0] == 250  # the exchange is over


def test_auth_with_unknown_mechanism_gets_504(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("AUTH CRAM-MD5") == (504, "5.5.4 Unrecognized authentication type")


def test_auth_without_mechanism_gets_501(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("AUTH")[0] == 501


def test_cancelled_auth_exchange_gets_501(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("AUTH LOGIN")[0] == 334
        assert r.cmd("*") == (501, "5.7.0 Authentication cancelled")
        assert r.cmd("AUTH PLAIN")[0] == 334
        assert r.cmd("*")[0] == 501


def test_malformed_plain_response_gets_501(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("AUTH PLAIN " + b64("no-nul-separators"))[0] == 501


def test_plain_acting_for_another_identity_is_refused(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        code, _ = r.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-pw", authzid="bob@example.test"))
    assert code == 535


def test_second_auth_gets_503(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-pw"))[0] == 235
        assert r.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-pw"))[0] == 503


def test_auth_inside_a_mail_transaction_gets_503(plain_srv: Server) -> None:
    # Only the MX port lets MAIL come before AUTH.
    with Raw(plain_srv.ports["smtp"]) as r:
        r.cmd("EHLO client.test")
        assert r.cmd("MAIL FROM:<x@remote.test>")[0] == 250
        assert r.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-pw"))[0] == 503


# -- STARTTLS answers -----------------------------------------------------------------------


def test_starttls_twice_gets_503(srv: Server) -> None:
    with tls_session(srv.ports["submission"]) as r:
        assert r.cmd("STARTTLS") == (503, "5.5.1 Error: TLS already active")


def test_starttls_on_implicit_tls_port_gets_503(srv: Server) -> None:
    with Raw(srv.ports["submissions"], implicit_tls=True) as r:
        r.cmd("EHLO client.test")
        assert r.cmd("STARTTLS")[0] == 503


def test_starttls_after_auth_gets_503(plain_srv: Server) -> None:
    with Raw(plain_srv.ports["submission"]) as r:
        r.cmd("EHLO client.test")
        assert r.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-pw"))[0] == 235
        assert r.cmd("STARTTLS") == (503, "5.5.1 Error: already authenticated")


def test_starttls_with_argument_gets_501(srv: Server) -> None:
    with Raw(srv.ports["submission"]) as r:
        r.cmd("EHLO client.test")
        assert r.cmd("STARTTLS now")[0] == 501


def test_starttls_forgets_the_helo(srv: Server) -> None:
    # RFC 3207 4.2: the client must EHLO again; MAIL without it is out of sequence.
    with Raw(srv.ports["submission"]) as r:
        r.cmd("EHLO client.test")
        r.starttls()
        assert r.cmd("MAIL FROM:<alice@example.test>")[0] == 503


def test_commands_pipelined_behind_starttls_are_discarded(srv: Server) -> None:
    """CVE-2011-0411 class: "STARTTLS\\r\\nRSET\\r\\n" in one packet; the RSET must not
    be answered inside the TLS session."""
    with Raw(srv.ports["submission"]) as r:
        r.cmd("EHLO client.test")
        r.send(b"STARTTLS\r\nRSET\r\n")
        assert r.reply()[0] == 220
        assert r.buf == b""
        r.sock = client_context().wrap_socket(r.sock)
        # Nothing may arrive on its own: the RSET was thrown away.
        r.sock.settimeout(0.5)
        with pytest.raises((TimeoutError, ssl.SSLError)):
            r.sock.recv(100)
        r.sock.settimeout(10)
        code, text = r.cmd("EHLO client.test")
        assert code == 250 and text.startswith("mail.example.test")
    assert "discarded" in srv.log() and "pipelined after STARTTLS" in srv.log()


def test_commands_pipelined_behind_starttls_on_mx_are_discarded(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as r:
        r.cmd("EHLO client.test")
        r.send(b"STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\n")
        assert r.reply()[0] == 220
        r.sock = client_context().wrap_socket(r.sock)
        r.cmd("EHLO client.test")
        # Had the MAIL survived, this would be a nested MAIL (503).
        assert r.cmd("MAIL FROM:<good@remote.test>")[0] == 250
