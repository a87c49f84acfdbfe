"""Addressing: a catch-all per domain (``@example.org: target`` in the aliases file,
``[directory.ldap] catchall_filter`` in LDAP), the recipient delimiter
(``[server] recipient_delimiter``: "+", "-" or several characters), and IDN domains
in either form in the directory."""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import ldap3
import pytest

from mailsuite.config import LDAPConfig
from mailsuite.directory.files import FileDirectory, parse_aliases
from mailsuite.directory.interface import Resolution, base_address
from mailsuite.directory.ldap_client import LDAPClient
from mailsuite.workers import InlineWorkers
from tests.support.server import Server
from tests.support.slapd import ADMIN_DN, ADMIN_PW, SERVICE_DN, SERVICE_PW, SUFFIX, Person, Slapd, base_ldif, slapd_available
from tests.support.tls import make_ca

# -- the delimiter ---------------------------------------------------------------------


@pytest.mark.parametrize("address, delims, base", [
    ("bob+lists@example.org", "+", "bob@example.org"),
    ("bob-lists@example.org", "+", None),
    ("bob-lists@example.org", "-", "bob@example.org"),
    ("bob-lists+x@example.org", "+-", "bob@example.org"),  # the first delimiter wins
    ("bob+x-y@example.org", "-+", "bob@example.org"),
    ("+bob@example.org", "+", None),  # no empty base
    ("jörg+news@bücher.example", "+", "jörg@bücher.example"),
])
def test_base_address(address: str, delims: str, base: str | None) -> None:
    assert base_address(address, delims) == base


# -- the file backend --------------------------------------------------------------------


def file_directory(tmp_path: Path, aliases: str, delimiter: str = "+") -> FileDirectory:
    (tmp_path / "users").write_text("alice@example.test:x\nbob@example.test:x\nyves@other.test:x\n")
    (tmp_path / "aliases").write_text(aliases)
    return FileDirectory(tmp_path / "users", tmp_path / "aliases", ("example.test", "other.test"),
                         recipient_delimiter=delimiter, workers=InlineWorkers())


def test_catch_all_takes_unknown_addresses_of_its_domain_only(tmp_path: Path) -> None:
    d = file_directory(tmp_path, "@example.test: alice\ninfo@example.test: bob\n")
    assert d.resolve_now("whoever@example.test") == Resolution(("alice@example.test",))
    assert d.resolve_now("bob@example.test") == Resolution(("bob@example.test",))  # an account wins
    assert d.resolve_now("info@example.test") == Resolution(("bob@example.test",))  # an alias wins
    assert d.resolve_now("bob+tag@example.test") == Resolution(("bob@example.test",))  # the base wins
    assert d.resolve_now("whoever@other.test") is None  # no catch-all there


def test_catch_all_may_forward_and_is_no_sender_address(tmp_path: Path) -> None:
    d = file_directory(tmp_path, "@other.test: archive@elsewhere.example, yves\n")
    assert d.resolve_now("x@other.test") == Resolution(("yves@other.test",), ("archive@elsewhere.example",))
    assert d.sender_addresses_now("yves@other.test") == ("yves@other.test",)


def test_catch_all_line_needs_a_domain(tmp_path: Path) -> None:
    assert parse_aliases("@example.test: alice\n") == {"@example.test": ("alice@example.test",)}
    with pytest.raises(ValueError):
        parse_aliases("example.test@: alice\n")


@pytest.mark.parametrize("delimiter, address, found", [
    ("+", "alice+x@example.test", True),
    ("+", "alice-x@example.test", False),
    ("-", "alice-x@example.test", True),
    ("-", "alice+x@example.test", False),
    ("+-", "alice-x@example.test", True),
    ("", "alice+x@example.test", False),
])
def test_recipient_delimiter_is_configurable(tmp_path: Path, delimiter: str, address: str, found: bool) -> None:
    d = file_directory(tmp_path, "", delimiter)
    assert bool(d.resolve_now(address)) is found


def test_idn_domain_in_either_form_in_users_and_aliases(tmp_path: Path) -> None:
    (tmp_path / "users").write_text("jörg@xn--bcher-kva.example:x\n")
    (tmp_path / "aliases").write_text("@bücher.example: jörg\n")
    d = FileDirectory(tmp_path / "users", tmp_path / "aliases", ("bücher.example",), workers=InlineWorkers())
    assert d.resolve_now("JÖRG@bücher.example") == Resolution(("jörg@bücher.example",))
    assert d.resolve_now("other@xn--bcher-kva.example") == Resolution(("jörg@bücher.example",))


# -- end to end over SMTP ----------------------------------------------------------------


def test_catch_all_and_dash_delimiter_over_smtp(server_factory) -> None:
    srv: Server = server_factory("addr", aliases="@other.test: bob@example.test\n",
                                 server={"recipient_delimiter": "-+"}).start()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("x@remote.test", ["alice-news@example.test"], b"Subject: 1\r\n\r\nx\r\n")
        s.sendmail("x@remote.test", ["alice+news@example.test"], b"Subject: 2\r\n\r\nx\r\n")
        s.sendmail("x@remote.test", ["anything@other.test"], b"Subject: 3\r\n\r\nx\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("x@remote.test", ["nobody@example.test"], b"Subject: 4\r\n\r\nx\r\n")
    assert len(srv.messages("alice@example.test")) == 2
    (msg,) = srv.messages("bob@example.test")
    assert b"Delivered-To: bob@example.test" in msg


def test_bad_delimiter_is_a_config_error(tmp_path: Path) -> None:
    from mailsuite.config import ConfigError, parse
    from tests.support.server import make_server

    srv = make_server(tmp_path / "c", server={"recipient_delimiter": "@"})
    srv.write_config()
    with pytest.raises(ConfigError, match="server.recipient_delimiter"):
        parse(srv.config_path.read_text(), srv.config_path)


# -- LDAP --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A slapd with a catch-all entry for other.test and an IDN address stored in
    A-labels (``mail`` is IA5String in the standard schema)."""
    if not slapd_available():
        pytest.skip("slapd not installed")
    tmp = tmp_path_factory.mktemp("ldap-addr")
    extra = (
        Person("post", "post-pw", "post@example.test", ("@other.test",)),
        Person("jorg", "jorg-pw", "jorg@xn--bcher-kva.example"),
    )
    server = Slapd(tmp / "slapd", make_ca(tmp / "ca"), ldif=base_ldif(extra)).start()
    # A UTF-8 address needs a UTF-8 attribute (the test schema's mailUTF8Address).
    conn = ldap3.Connection(server.url, ADMIN_DN, ADMIN_PW, auto_bind=True)
    conn.modify(f"uid=jorg,ou=people,{SUFFIX}", {"mailUTF8Address": [(ldap3.MODIFY_ADD, ["Jörg@bücher.example"])]})
    assert conn.result["result"] == 0, conn.result
    conn.unbind()
    yield server
    server.stop()


def ldap_client(slapd: Slapd, **kw: Any) -> LDAPClient:
    """The blocking client under LDAPDirectory (which only moves its calls to threads)."""
    settings: dict[str, Any] = dict(servers=(slapd.url,), base_dn=SUFFIX, bind_dn=SERVICE_DN,
                                    required_group="", connect_timeout=1.0, timeout=1.0, request_timeout=3.0)
    settings.update(kw)
    return LDAPClient(LDAPConfig(**settings), SERVICE_PW, ("example.test", "other.test", "bücher.example"))


def test_ldap_catch_all_filter_finds_the_entry_listing_at_domain(slapd: Slapd) -> None:
    c = ldap_client(slapd, catchall_filter="(mailAlternateAddress=@{domain})")
    assert c.resolve("whoever@other.test") == Resolution(("post@example.test",))
    assert c.resolve("alice@other.test") == Resolution(("alice@example.test",))  # a real address still wins
    assert c.resolve("whoever@example.test") is None  # no catch-all for that domain


def test_ldap_without_catch_all_filter_unknown_is_unknown(slapd: Slapd) -> None:
    assert ldap_client(slapd).resolve("whoever@other.test") is None


def test_ldap_idn_address_stored_as_a_labels_is_found_by_u_labels(slapd: Slapd) -> None:
    c = ldap_client(slapd)
    assert c.resolve("jorg@bücher.example") == Resolution(("jorg@bücher.example",))
    assert c.resolve("jorg+tag@xn--bcher-kva.example") == Resolution(("jorg@bücher.example",))


def test_catchall_filter_must_use_domain() -> None:
    from mailsuite.directory.ldap_filters import check_ldap_config

    problems = check_ldap_config(LDAPConfig(servers=("ldap://127.0.0.1",), base_dn=SUFFIX,
                                            catchall_filter="(mail=@example.org)"), True)
    assert any("catchall_filter" in p for p in problems)


def test_ldap_utf8_local_part_in_a_utf8_attribute(slapd: Slapd) -> None:
    c = ldap_client(slapd, address_filter="(|(mail={address})(mailUTF8Address={address}))",
                    address_attributes=("mail", "mailUTF8Address"))
    # The mailbox is named by the primary (ASCII) address; the UTF-8 one delivers there.
    assert c.resolve("JÖRG@xn--bcher-kva.example") == Resolution(("jorg@bücher.example",))
    assert c.resolve("jörg+tag@bücher.example") == Resolution(("jorg@bücher.example",))
    entry = c.account("jorg@bücher.example")
    assert entry is not None and "jörg@bücher.example" in entry.addresses
