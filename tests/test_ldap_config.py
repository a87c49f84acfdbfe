"""The [directory.ldap] table, filter templates and value escaping (no server needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from mailsuite import config as config_mod
from mailsuite.config import LDAPConfig
from mailsuite.directory.ldap_client import clean_address, parse_quota
from mailsuite.directory.ldap_filters import check_ldap_config, fill, split_login

ETC = Path(__file__).resolve().parent.parent / "etc"
BASE = '[server]\ndomains = ["example.org"]\n[tls]\ncertificate = "c"\nprivate_key = "k"\n'
LDAP_OK = '[directory]\nbackend = "ldap"\n[directory.ldap]\nservers = ["ldap://127.0.0.1"]\nbase_dn = "dc=example,dc=org"\n'


def problems(text: str) -> list[str]:
    try:
        config_mod.parse(BASE + text, Path("/etc/mailsuite/mailsuite.toml"))
    except config_mod.ConfigError as e:
        return e.problems
    return []


def test_a_minimal_ldap_table_is_valid() -> None:
    assert problems(LDAP_OK) == []


def test_defaults_are_valid_when_the_backend_is_file() -> None:
    assert check_ldap_config(LDAPConfig(), active=False) == []


def test_servers_and_base_dn_are_required_for_the_ldap_backend() -> None:
    assert problems('[directory]\nbackend = "ldap"\n') == [
        'directory.ldap.servers: at least one ldap:// or ldaps:// URL is required when directory.backend = "ldap"',
        'directory.ldap.base_dn: required when directory.backend = "ldap"',
    ]


@pytest.mark.parametrize("url,why", [
    ("http://ldap.example.org", "expected ldap://host[:port] or ldaps://host[:port]"),
    ("ldap://", "no host name"),
    ("ldap://host:99999", "bad port"),
    ("ldap://host/dc=example,dc=org", "put the base in directory.ldap.base_dn"),
])
def test_bad_server_urls_are_named(url: str, why: str) -> None:
    (p,) = problems(LDAP_OK.replace('"ldap://127.0.0.1"', f'"{url}"'))
    assert p.startswith("directory.ldap.servers:") and why in p


def test_start_tls_with_ldaps_is_refused() -> None:
    (p,) = problems(LDAP_OK.replace("ldap://", "ldaps://") + "start_tls = true\n")
    assert "start_tls applies to ldap:// URLs only" in p


def test_bind_dn_needs_a_password_file_and_the_other_way_round() -> None:
    assert problems(LDAP_OK + 'bind_dn = "cn=x"\n') == [
        "directory.ldap.bind_password_file: required with bind_dn (the file holds the service account's password)"]
    assert problems(LDAP_OK + 'bind_password_file = "pw"\n') == [
        "directory.ldap.bind_dn: required with bind_password_file (leave both empty to search anonymously)"]


@pytest.mark.parametrize("key,template,why", [
    ("user_filter", "(uid={name})", "unknown placeholder(s) {name}"),
    ("user_filter", "(uid=alice)", "must contain {login} or {user}"),
    ("address_filter", "(mail={login})", "unknown placeholder(s) {login}"),
    ("address_filter", "(mail={address}", "not an LDAP filter in parentheses"),
    ("user_filter", "uid={login}", "not an LDAP filter in parentheses"),
    ("group_filter", "(member=x)", "must contain {dn} or {login} or {user}"),
])
def test_bad_filter_templates_are_named(key: str, template: str, why: str) -> None:
    ps = problems(LDAP_OK + f'{key} = "{template}"\n')
    assert any(p.startswith(f"directory.ldap.{key}:") and why in p for p in ps), ps


def test_attribute_names_are_checked() -> None:
    ps = problems(LDAP_OK + 'address_attributes = ["mail", "bad name"]\nquota_attribute = "x;y"\n')
    assert ps == [
        "directory.ldap.address_attributes: 'bad name' is not an attribute name",
        "directory.ldap.quota_attribute: 'x;y' is not an attribute name",
    ]


def test_timeouts_must_be_positive_and_types_are_checked() -> None:
    ps = problems(LDAP_OK + "timeout = 0\npool_size = \"8\"\n")
    assert "directory.ldap.timeout: expected more than 0 seconds" in ps
    assert "directory.ldap.pool_size: expected an integer" in ps


def test_unknown_keys_in_the_ldap_table_are_named() -> None:
    assert problems(LDAP_OK + "server = 1\n") == ["directory.ldap.server: unknown key"]


@pytest.mark.parametrize("name", ["ldap-openldap.toml", "ldap-active-directory.toml"])
def test_the_example_snippets_are_valid_configs(name: str) -> None:
    cfg = config_mod.parse(BASE + (ETC / name).read_text(), ETC / "mailsuite.toml")
    assert cfg.directory.backend == "ldap"
    assert len(cfg.directory.ldap.servers) == 2


# -- escaping -----------------------------------------------------------------------

_ESCAPE = re.compile(r"\\[0-9a-fA-F]{2}")


def structure(f: str) -> str:
    """The filter's parentheses, wildcards and backslashes once escapes are taken out
    (``&|!`` are operators only right after "(", so they are left out)."""
    return "".join(c for c in _ESCAPE.sub("", f) if c in "()*\\")


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_no_login_changes_the_structure_of_the_user_filter(login: str) -> None:
    template = LDAPConfig().user_filter
    assert structure(fill(template, **split_login(login))) == structure(template)


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_no_address_changes_the_structure_of_the_address_filter(address: str) -> None:
    template = LDAPConfig().address_filter
    local, _, domain = address.rpartition("@")
    assert structure(fill(template, address=address, local=local, domain=domain)) == structure(template)


def test_the_classic_injection_is_escaped() -> None:
    assert fill("(uid={login})", login="*)(uid=*") == r"(uid=\2a\29\28uid=\2a)"


def test_split_login() -> None:
    assert split_login("alice@example.org") == {"login": "alice@example.org", "user": "alice", "domain": "example.org"}
    assert split_login("alice") == {"login": "alice", "user": "alice", "domain": ""}


# -- values read from entries ----------------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    ("Alice@Example.ORG", "alice@example.org"),
    ("SMTP:Alice@Example.org", "alice@example.org"),
    ("smtp:alias@example.org", "alias@example.org"),
    ("X500:/o=Org/cn=alice", None),
    ("sip:alice@example.org", None),
    ("alice", None),
    ("../x@example.org", None),
    (".hidden@example.org", None),
    ("a/b@example.org", None),
    ("a b@example.org", None),
])
def test_clean_address(value: str, expected: str | None) -> None:
    assert clean_address(value) == expected


@pytest.mark.parametrize("value,expected", [
    ("1073741824", 1 << 30), ("1G", 1 << 30), ("500M", 500 << 20), ("10 KB", 10 << 10), ("lots", None), ("-1", None),
])
def test_parse_quota(value: str, expected: int | None) -> None:
    assert parse_quota(value) == expected
