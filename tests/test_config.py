"""The config loader: every error names its key; defaults live in config.py and the
reference etc/mailsuite.toml documents each of them."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import typing
from pathlib import Path

import pytest

from mailsuite import config as config_mod
from mailsuite.config import ConfigError, load, parse

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "etc" / "mailsuite.toml"

# Enough for a valid config: a domain, and a certificate for the default TLS listeners.
MINIMAL = """
[server]
domains = ["example.org"]
[tls]
certificate = "tls/cert.pem"
private_key = "tls/key.pem"
"""


def problems_of(text: str, path: Path = Path("/etc/mailsuite/mailsuite.toml")) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, path)
    return info.value.problems


def test_minimal_config_is_valid() -> None:
    cfg = parse(MINIMAL, Path("/srv/mail/mailsuite.toml"))
    assert cfg.server.domains == ("example.org",)
    assert cfg.smtp.max_message_size == 50 * 1024 * 1024


def test_unknown_section_is_named() -> None:
    assert "smpt: unknown section" in problems_of(MINIMAL + "[smpt]\nlisten = []\n")


def test_unknown_key_is_named() -> None:
    assert "smtp.max_mesage_size: unknown key" in problems_of(MINIMAL + "[smtp]\nmax_mesage_size = 5\n")


@pytest.mark.parametrize(
    "section, line, expected",
    [
        ("smtp", 'max_message_size = "big"', "smtp.max_message_size: expected an integer"),
        ("smtp", "max_message_size = 1.5", "smtp.max_message_size: expected an integer"),
        ("smtp", "max_message_size = true", "smtp.max_message_size: expected an integer"),
        ("smtp", "max_recipients = -1", "smtp.max_recipients: expected a non-negative integer"),
        ("smtp", 'listen = "tcp:25"', "smtp.listen: expected a list"),
        ("smtp", "listen = [25]", "smtp.listen: item 1: expected a string"),
        ("server", 'allow_plaintext_auth = "no"', "server.allow_plaintext_auth: expected true or false"),
        ("server", "hostname = 7", "server.hostname: expected a string"),
        ("server", 'data_dir = ""', "server.data_dir: expected a path"),
        ("server", 'relay_networks = ["10.0.0.0/33"]', "server.relay_networks: item 1: not a network in CIDR form"),
        ("server", 'relay_networks = "10.0.0.0/8"', "server.relay_networks: expected a list"),
        ("tls", 'min_version = "1.1"', "tls.min_version: expected one of '1.2', '1.3'"),
        ("directory", 'backend = "sql"', "directory.backend: expected one of 'file', 'ldap'"),
        ("pop3", 'max_connections_per_ip = "20"', "pop3.max_connections_per_ip: expected an integer"),
    ],
)
def test_wrong_type_names_the_key(section: str, line: str, expected: str) -> None:
    text = MINIMAL.replace(f"[{section}]\n", f"[{section}]\n{line}\n") if f"[{section}]" in MINIMAL else MINIMAL + f"[{section}]\n{line}\n"
    found = problems_of(text)
    assert any(p.startswith(expected) for p in found), found


def test_section_that_is_not_a_table() -> None:
    assert "smtp: expected a table" in problems_of('smtp = "yes"\n' + MINIMAL)


def test_every_problem_is_reported_at_once() -> None:
    found = problems_of(
        '[server]\ndomains = []\nthread_pool_size = "x"\n[smtp]\nmax_errors = "many"\nbogus = 1\n[nope]\n'
    )
    assert "nope: unknown section" in found
    assert "smtp.bogus: unknown key" in found
    assert "smtp.max_errors: expected an integer" in found
    assert "server.thread_pool_size: expected an integer" in found
    assert "server.domains: at least one local domain is required" in found


def test_missing_domains_is_an_error() -> None:
    found = problems_of('[tls]\ncertificate = "c"\nprivate_key = "k"\n')
    assert found == ["server.domains: at least one local domain is required"]


def test_domains_must_be_lower_case_names() -> None:
    found = problems_of(MINIMAL.replace('["example.org"]', '["Example.org", "a@b"]'))
    assert "server.domains: 'Example.org' is not a lower-case domain name" in found
    assert "server.domains: 'a@b' is not a lower-case domain name" in found


def test_postmaster_must_be_an_address() -> None:
    found = problems_of(MINIMAL.replace("[server]\n", '[server]\npostmaster = "root"\n'))
    assert found == ["server.postmaster: expected an address like postmaster@example.org"]


def test_thread_pool_needs_a_thread() -> None:
    assert problems_of(MINIMAL.replace("[server]\n", "[server]\nthread_pool_size = 0\n")) == [
        "server.thread_pool_size: expected at least 1"
    ]


@pytest.mark.parametrize(
    "endpoint, fragment",
    [
        ("bogus:25", "smtp.listen: bad endpoint 'bogus:25'"),
        ("tcp:abc", "smtp.listen: bad endpoint 'tcp:abc'"),
        ("ssl:465", "smtp.listen: 'ssl:465': use a tcp: endpoint"),
    ],
)
def test_bad_endpoint_is_named(endpoint: str, fragment: str) -> None:
    found = problems_of(MINIMAL + f'[smtp]\nlisten = ["{endpoint}"]\n')
    assert any(p.startswith(fragment) for p in found), found


def test_ipv6_endpoints_are_accepted() -> None:
    cfg = parse(MINIMAL + '[smtp]\nlisten = ["tcp6:2525:interface=\\\\:\\\\:1", "tcp:2526"]\n', Path("/x/m.toml"))
    assert cfg.smtp.listen[0] == "tcp6:2525:interface=\\:\\:1"


def test_tls_listener_needs_a_certificate() -> None:
    found = problems_of('[server]\ndomains = ["example.org"]\n')
    assert found == ["tls.certificate: required because a listen_tls listener is configured"]


def test_no_tls_listener_needs_no_certificate() -> None:
    text = '[server]\ndomains = ["example.org"]\n' + "".join(
        f"[{s}]\nlisten_tls = []\n" for s in ("submission", "imap", "pop3", "http", "managesieve")
    )
    assert parse(text, Path("/x/m.toml")).tls.certificate is None


def test_certificate_without_key_is_an_error() -> None:
    found = problems_of('[server]\ndomains = ["example.org"]\n[tls]\ncertificate = "c.pem"\n')
    assert "tls: set both tls.certificate and tls.private_key, or neither" in found


def test_line_length_floor() -> None:
    found = problems_of(MINIMAL + "[smtp]\nmax_line_length = 20\n")
    assert found == ["smtp.max_line_length: expected at least 80"]


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    cfg_file = tmp_path / "conf" / "mailsuite.toml"
    cfg_file.parent.mkdir()
    cfg_file.write_text(MINIMAL + '[directory]\nusers_file = "db/users"\n')
    cfg = load(cfg_file)
    base = cfg_file.parent.resolve()
    assert cfg.directory.users_file == base / "db" / "users"
    assert cfg.directory.aliases_file == base / "aliases"  # a default path, too
    assert cfg.server.data_dir == base / "data"
    assert cfg.tls.certificate == base / "tls" / "cert.pem"
    assert cfg.mail_dir == base / "data" / "mail"
    assert cfg.queue_dir == base / "data" / "queue"


def test_absolute_paths_stay(tmp_path: Path) -> None:
    cfg = parse(MINIMAL.replace("[server]\n", '[server]\ndata_dir = "/var/mail/suite"\n'), tmp_path / "m.toml")
    assert cfg.server.data_dir == Path("/var/mail/suite")


def test_relay_networks_parse_as_networks() -> None:
    cfg = parse(MINIMAL.replace("[server]\n", '[server]\nrelay_networks = ["192.168.1.7/24", "fd00::/8"]\n'), Path("/x/m.toml"))
    assert cfg.server.relay_networks == (ipaddress.ip_network("192.168.1.0/24"), ipaddress.ip_network("fd00::/8"))


def test_config_objects_are_frozen() -> None:
    cfg = parse(MINIMAL, Path("/x/m.toml"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.smtp.max_recipients = 5  # type: ignore[misc]


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.toml")
    assert info.value.problems == [f"{tmp_path / 'nope.toml'}: config file not found"]


def test_invalid_toml_is_one_clear_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[server\n")
    with pytest.raises(ConfigError) as info:
        load(p)
    (line,) = info.value.problems
    assert line.startswith(f"{p}: not valid TOML")


def test_non_utf8_file_is_one_clear_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_bytes(b"[server]\nhostname = \"\xff\"\n")
    with pytest.raises(ConfigError) as info:
        load(p)
    assert info.value.problems[0].startswith(f"{p}: cannot read config file")


def test_check_files_names_missing_certificate_and_folders(tmp_path: Path) -> None:
    cfg = parse(MINIMAL + '[directory]\nusers_file = "nodir/users"\n', tmp_path / "m.toml")
    found = config_mod.check_files(cfg)
    assert any(p.startswith("tls.certificate: ") and "does not exist" in p for p in found)
    assert any(p.startswith("tls.private_key: ") for p in found)
    assert any(p.startswith("directory.users_file: folder ") for p in found)


def test_check_files_accepts_generated_certificate(tmp_path: Path) -> None:
    cfg = parse(MINIMAL.replace("[tls]\n", "[tls]\ngenerate_self_signed = true\n"), tmp_path / "m.toml")
    assert config_mod.check_files(cfg) == []


def test_default_path_follows_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSUITE_CONFIG", "/etc/x.toml")
    assert config_mod.default_path() == Path("/etc/x.toml")
    monkeypatch.delenv("MAILSUITE_CONFIG")
    assert config_mod.default_path() == Path("etc/mailsuite.toml")


# ---------------------------------------------------------------------------
# The reference file against the dataclass defaults.

# Keys whose value in the reference config is a site value, not the default.
SITE_VALUES = {
    "server.hostname",  # default: the machine's name
    "server.domains",  # required, no default
    "tls.certificate",  # default: none
    "tls.private_key",
}


def _fields(cls: type, prefix: str) -> typing.Iterator[tuple[str, dataclasses.Field, typing.Any]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _fields(hints[f.name], name)
        else:
            yield name, f, hints[f.name]


def _value(obj: typing.Any, dotted: str) -> typing.Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_reference_config_is_valid() -> None:
    load(REFERENCE)


def test_reference_config_shows_every_default() -> None:
    reference = load(REFERENCE)
    # The defaults, as loaded from the same folder (so relative paths compare equal).
    minimal = "".join(
        f"[{s}]\n" + "".join(f"{k.split('.', 1)[1]} = {v}\n" for k, v in (
            ("server.domains", '["example.org"]'), ("tls.certificate", '"c"'), ("tls.private_key", '"k"'),
        ) if k.startswith(s + "."))
        for s in ("server", "tls")
    )
    defaults = parse(minimal, REFERENCE)
    differ = []
    for section, cls in config_mod.SECTIONS.items():
        for name, _f, _tp in _fields(cls, section):
            if name in SITE_VALUES:
                continue
            if _value(reference, name) != _value(defaults, name):
                differ.append(f"{name}: reference {_value(reference, name)!r} != default {_value(defaults, name)!r}")
    assert differ == []


def test_reference_config_documents_every_key() -> None:
    """Each key appears in its section as ``key = ...`` (commented out is fine for keys
    whose default is computed, like the host name)."""
    text = REFERENCE.read_text()
    sections: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        m = re.match(r"^\s*#?\s*\[([A-Za-z0-9_.]+)\]\s*$", line)
        if m:
            current = m.group(1)
            continue
        sections[current] = sections.get(current, "") + line + "\n"
    missing = []
    for section, cls in config_mod.SECTIONS.items():
        for name, _f, _tp in _fields(cls, section):
            table, _, key = name.rpartition(".")
            body = sections.get(table, "")
            if not re.search(rf"^\s*#?\s*{re.escape(key)}\s*=", body, re.M):
                missing.append(name)
    assert missing == []


def test_reference_config_comments_every_key() -> None:
    """Every key has a comment line somewhere above it in its block."""
    lines = REFERENCE.read_text().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        m = re.match(r"^([a-z_]+)\s*=", line)
        if not m:
            continue
        j = i - 1
        while j >= 0 and re.match(r"^([a-z_]+\s*=|\[)", lines[j]):
            j -= 1
        if j < 0 or not lines[j].lstrip().startswith("#"):
            uncommented.append(m.group(1))
    assert uncommented == []
