"""The real server (``twistd -n mailsuite``) with ``[directory] backend = "ldap"`` against
a real slapd: SMTP AUTH on submission after STARTTLS, RCPT checks and delivery through
aliases and groups, temporary answers while LDAP hangs or is down, recovery, and IMAP /
POP3 logins when those servers are built.  Also the ``mailsuite ldap`` admin commands.
"""

from __future__ import annotations

import importlib.util
import imaplib
import poplib
import shutil
import smtplib
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.server import Server, free_port, make_server
from tests.support.slapd import MAIL_GROUP, SERVICE_DN, SERVICE_PW, SUFFIX, Slapd, require_slapd
from tests.support.tls import client_context, make_ca
from tests.support.waiting import wait_for

require_slapd()

HAVE_IMAP = importlib.util.find_spec("mailsuite.imap.service") is not None
HAVE_POP3 = importlib.util.find_spec("mailsuite.pop3.service") is not None
MSG = b"Subject: hello\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def shared_slapd(ca: Any) -> Iterator[Slapd]:
    root = Path(tempfile.mkdtemp(prefix="slapd-"))
    s = Slapd(root, ca).start()
    yield s
    s.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_slapd(ca: Any, tmp_path: Path) -> Iterator[Slapd]:
    s = Slapd(tmp_path / "slapd", ca).start()
    yield s
    s.stop()


def ldap_server(root: Path, slapd_urls: list[str], ca: Any, **ldap: Any) -> Server:
    srv = make_server(root)
    (root / "ldap-password").write_text(SERVICE_PW + "\n")
    settings = {
        "servers": slapd_urls,
        "base_dn": SUFFIX,
        "bind_dn": SERVICE_DN,
        "bind_password_file": "ldap-password",
        "required_group": MAIL_GROUP,
        "expand_groups": True,
        "quota_attribute": "mailQuota",
        "ca_file": str(ca.ca_cert),
        "connect_timeout": 1.0,
        "timeout": 0.5,
        "request_timeout": 1.5,
        "retry_interval": 1,
    }
    settings.update(ldap)
    srv.sections["directory"] = {"backend": "ldap"}
    srv.sections["directory.ldap"] = settings
    return srv


@pytest.fixture
def server(tmp_path: Path, shared_slapd: Slapd, ca: Any) -> Iterator[Server]:
    srv = ldap_server(tmp_path / "srv", [shared_slapd.url], ca).start()
    yield srv
    srv.stop()


def submission(srv: Server) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=10)
    s.starttls(context=client_context())
    return s


def rcpt(srv: Server, address: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as s:
        s.ehlo("client.test")
        s.mail("sender@remote.test")
        return s.rcpt(address)


# -- SMTP AUTH -------------------------------------------------------------------------


def test_submission_auth_with_ldap_password_after_starttls(server: Server) -> None:
    with submission(server) as s:
        code, _ = s.login("alice", "alice-pw")
        assert code == 235
        s.sendmail("alice@example.test", ["robert@example.test"], MSG)
    (msg,) = server.messages("bob@example.test")
    assert b"Authenticated sender: alice@example.test" in msg


def test_alternate_addresses_from_ldap_may_be_used_as_sender(server: Server) -> None:
    with submission(server) as s:
        s.login("alice", "alice-pw")
        s.sendmail("a.smith@example.test", ["bob@example.test"], b"From: a.smith@example.test\r\n" + MSG)
        code, text = s.mail("bob@example.test")
        assert (code, text[:5]) == (553, b"5.7.1")  # bob's address is not alice's
    assert len(server.messages("bob@example.test")) == 1


def test_submission_auth_by_mail_address(server: Server) -> None:
    with submission(server) as s:
        assert s.login("Bob@Example.test", "bob-pw")[0] == 235


@pytest.mark.parametrize("login,password", [
    ("alice", "wrong"),
    ("alice", ""),
    ("carol", "carol-pw"),  # outside the required group
    ("*)(uid=*", "alice-pw"),
    ("*", "alice-pw"),
])
def test_submission_auth_refused(server: Server, login: str, password: str) -> None:
    with submission(server) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login(login, password)
        assert e.value.smtp_code == 535


# -- RCPT and delivery ---------------------------------------------------------------


@pytest.mark.parametrize("address", ["alice@example.test", "a.smith@example.test", "alice+x@example.test", "staff@example.test"])
def test_rcpt_for_ldap_addresses_is_accepted(server: Server, address: str) -> None:
    assert rcpt(server, address)[0] == 250


@pytest.mark.parametrize("address", ["nobody@example.test", "carol@example.test", "*@example.test", "\"*)(mail=*\"@example.test"])
def test_rcpt_for_unknown_addresses_is_refused_permanently(server: Server, address: str) -> None:
    code, text = rcpt(server, address)
    assert (code, text[:5]) == (550, b"5.1.1")


def test_alternate_address_delivers_to_the_owner_mailbox(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.sendmail("sender@remote.test", ["a.smith@example.test", "alice@other.test"], MSG)
    (msg,) = server.messages("alice@example.test")  # one copy for both aliases
    assert msg.endswith(b"hello\n")
    assert not server.maildir("a.smith@example.test").exists()


def test_group_address_delivers_to_each_member(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.sendmail("sender@remote.test", ["staff@example.test"], MSG)
    assert len(server.messages("alice@example.test")) == 1
    assert len(server.messages("bob@example.test")) == 1


# -- LDAP trouble ----------------------------------------------------------------------


def test_hung_ldap_gives_temporary_answers_then_recovers(tmp_path: Path, own_slapd: Slapd, ca: Any) -> None:
    srv = ldap_server(tmp_path / "srv", [own_slapd.url], ca, cache_ttl=0, negative_cache_ttl=0, auth_cache_ttl=0).start()
    try:
        assert rcpt(srv, "alice@example.test")[0] == 250
        own_slapd.pause()
        code, text = rcpt(srv, "bob@example.test")
        assert (code, text[:5]) == (451, b"4.4.3")
        with submission(srv) as s:
            with pytest.raises(smtplib.SMTPAuthenticationError) as e:
                s.login("alice", "alice-pw")
            assert e.value.smtp_code == 454  # temporary: the client keeps the password
        own_slapd.resume()
        assert wait_for(lambda: rcpt(srv, "bob@example.test")[0] == 250, 6, "bob accepted", interval=0.2)
        with submission(srv) as s:
            assert s.login("alice", "alice-pw")[0] == 235
    finally:
        own_slapd.resume()
        srv.stop()
    assert "directory unavailable" in srv.log()


def test_stopped_ldap_gives_temporary_answers_and_recovers_after_restart(tmp_path: Path, own_slapd: Slapd, ca: Any) -> None:
    srv = ldap_server(tmp_path / "srv", [own_slapd.url], ca, cache_ttl=0, negative_cache_ttl=0, auth_cache_ttl=0).start()
    try:
        assert rcpt(srv, "alice@example.test")[0] == 250
        own_slapd.stop()
        assert rcpt(srv, "alice@example.test")[0] == 451
        assert rcpt(srv, "nobody@example.test")[0] == 451  # unknown is not claimed while LDAP is down
        own_slapd.start()
        assert wait_for(lambda: rcpt(srv, "alice@example.test")[0] == 250, 6, "alice accepted", interval=0.2)
        assert rcpt(srv, "nobody@example.test")[0] == 550
    finally:
        srv.stop()


def test_failover_to_the_second_slapd(tmp_path: Path, own_slapd: Slapd, shared_slapd: Slapd, ca: Any) -> None:
    srv = ldap_server(tmp_path / "srv", [own_slapd.url, shared_slapd.url], ca, cache_ttl=0, auth_cache_ttl=0).start()
    try:
        assert rcpt(srv, "alice@example.test")[0] == 250
        own_slapd.stop()
        assert rcpt(srv, "robert@example.test")[0] == 250
        with submission(srv) as s:
            assert s.login("alice", "alice-pw")[0] == 235
    finally:
        srv.stop()


def test_ldaps_with_the_test_ca(tmp_path: Path, shared_slapd: Slapd, ca: Any) -> None:
    srv = ldap_server(tmp_path / "srv", [shared_slapd.ldaps_url], ca).start()
    try:
        with submission(srv) as s:
            assert s.login("alice", "alice-pw")[0] == 235
    finally:
        srv.stop()


# -- IMAP and POP3 (when built) --------------------------------------------------------


@pytest.mark.skipif(not HAVE_IMAP, reason="the IMAP server is not built yet (mailsuite.imap.service)")
def test_imap_login_through_ldap(tmp_path: Path, own_slapd: Slapd, ca: Any) -> None:
    srv = ldap_server(tmp_path / "srv", [own_slapd.url], ca, auth_cache_ttl=0).start()
    try:
        with imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=client_context()) as c:
            assert c.login("alice", "alice-pw")[0] == "OK"
        with imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=client_context()) as c:
            with pytest.raises(imaplib.IMAP4.error):
                c.login("alice", "wrong")
        own_slapd.pause()
        with imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=client_context()) as c:
            with pytest.raises(imaplib.IMAP4.error, match=r"UNAVAILABLE"):
                c.login("bob", "bob-pw")
    finally:
        own_slapd.resume()
        srv.stop()


@pytest.mark.skipif(not HAVE_POP3, reason="the POP3 server is not built yet (mailsuite.pop3.service)")
def test_pop3_login_through_ldap(tmp_path: Path, own_slapd: Slapd, ca: Any) -> None:
    srv = ldap_server(tmp_path / "srv", [own_slapd.url], ca, auth_cache_ttl=0).start()
    try:
        c = poplib.POP3_SSL("127.0.0.1", srv.ports["pop3s"], context=client_context())
        c.user("alice")
        assert c.pass_("alice-pw").startswith(b"+OK")
        c.quit()
        own_slapd.pause()
        c = poplib.POP3_SSL("127.0.0.1", srv.ports["pop3s"], context=client_context())
        c.user("bob")
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            c.pass_("bob-pw")
        c.close()
    finally:
        own_slapd.resume()
        srv.stop()


# -- mailsuite ldap ... ----------------------------------------------------------------


def test_cli_ldap_test_shows_the_entry_and_checks_the_password(tmp_path: Path, shared_slapd: Slapd, ca: Any) -> None:
    srv = ldap_server(tmp_path / "srv", [shared_slapd.url], ca)
    r = srv.cli("ldap", "test", "alice", "--password-stdin", stdin="alice-pw\n")
    assert r.returncode == 0, r.stderr
    assert "uid=alice,ou=people,dc=example,dc=test" in r.stdout
    assert "mailbox:    alice@example.test" in r.stdout
    assert "quota:      1073741824 bytes" in r.stdout
    assert "password accepted; logs in as alice@example.test" in r.stdout
    assert SERVICE_PW not in r.stdout + r.stderr and "alice-pw" not in r.stdout + r.stderr
    r = srv.cli("ldap", "test", "alice", "--password-stdin", stdin="wrong\n")
    assert r.returncode == 1 and "password refused" in r.stdout


def test_cli_ldap_test_explains_a_user_outside_the_required_group(tmp_path: Path, shared_slapd: Slapd, ca: Any) -> None:
    r = ldap_server(tmp_path / "srv", [shared_slapd.url], ca).cli("ldap", "test", "carol", "--password-stdin", stdin="carol-pw\n")
    assert r.returncode == 1
    assert "NO (may not use mail)" in r.stdout


def test_cli_ldap_lookup_shows_where_mail_goes(tmp_path: Path, shared_slapd: Slapd, ca: Any) -> None:
    srv = ldap_server(tmp_path / "srv", [shared_slapd.url], ca)
    r = srv.cli("ldap", "lookup", "team@example.test")
    assert r.returncode == 0, r.stderr
    assert "delivers to mailbox alice@example.test" in r.stdout
    assert "delivers to mailbox bob@example.test" in r.stdout
    assert "forwards to dave@partner.test" in r.stdout
    r = srv.cli("ldap", "lookup", "nobody@example.test")
    assert r.returncode == 1 and "550 5.1.1" in r.stdout


def test_cli_ldap_lookup_when_ldap_is_down(tmp_path: Path, ca: Any) -> None:
    dead = f"ldap://127.0.0.1:{free_port()}"
    r = ldap_server(tmp_path / "srv", [dead], ca).cli("ldap", "lookup", "alice@example.test")
    assert r.returncode == 3
    assert "451 4.4.3" in r.stderr


def test_cli_ldap_help() -> None:
    r = subprocess.run([sys.executable, "-m", "mailsuite.cli", "ldap", "test", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--password-stdin" in r.stdout and "--config" in r.stdout
