"""``mailsuite sieve check`` and ``mailsuite sieve test``, run as an admin would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailsuite.directory.passwords import hash_password

CONFIG = """
[server]
domains = ["example.test"]
data_dir = "data"
[directory]
users_file = "users"
aliases_file = "aliases"
[sieve]
before = "before.sieve"
""" + "".join(f"[{s}]\nlisten_tls = []\n" for s in ("submission", "imap", "pop3", "http"))

MESSAGE = (b"From: Boss <boss@example.org>\r\nTo: alice@example.test\r\nSubject: [list] quarterly numbers\r\n"
           b"Message-ID: <1@example.org>\r\n\r\nPlease read.\r\n")


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailsuite.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60, env={**os.environ, "MAILSUITE_CONFIG": str(cwd / "m.toml")})


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "m.toml").write_text(CONFIG)
    (tmp_path / "users").write_text(f"alice@example.test:{hash_password('pw')}\n")
    (tmp_path / "aliases").write_text("team@example.test: alice\n")
    (tmp_path / "before.sieve").write_text('require "imap4flags"; if header :contains "subject" "numbers" '
                                          '{ addflag "$Important"; }')
    sieve = tmp_path / "data" / "mail" / "example.test" / "alice" / "sieve"
    sieve.mkdir(parents=True)
    (sieve / "main.sieve").write_text(
        'require ["fileinto", "vacation", "imap4flags"];\n'
        'if header :contains "subject" "[list]" { fileinto :flags "\\\\Seen" "Lists"; }\n'
        'vacation :days 3 "Away until Monday.";\n')
    os.symlink("main.sieve", sieve / "active")
    (tmp_path / "msg.eml").write_bytes(MESSAGE)
    return tmp_path


def test_check_ok_and_error_with_line(site: Path) -> None:
    good = site / "good.sieve"
    good.write_text('require ["fileinto", "vacation"]; fileinto "x"; vacation "y";')
    r = run(site, "sieve", "check", str(good))
    assert r.returncode == 0 and r.stdout.strip() == f"OK: {good} (requires fileinto, vacation)"
    bad = site / "bad.sieve"
    bad.write_text('require "fileinto";\nif header :contains "subject" "x" {\n  fileinto "y"\n}\n')
    r = run(site, "sieve", "check", str(bad))
    assert r.returncode == 1 and r.stderr.startswith(f"{bad}:4:1: ")
    assert run(site, "sieve", "check", str(site / "missing.sieve")).returncode == 2


def test_test_shows_what_delivery_would_do(site: Path) -> None:
    r = run(site, "sieve", "test", "team@example.test", str(site / "msg.eml"), "--sender", "boss@example.org")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "account: alice@example.test"
    assert lines[1] == "scripts: before, main"
    assert "  store in Lists flags \\Seen" in lines  # :flags replaces the flags (RFC 5232 5)
    assert "  vacation: would reply to <boss@example.org>" in lines
    # Nothing was delivered or remembered.
    root = site / "data" / "mail" / "example.test" / "alice"
    assert not (root / "new").exists() and not (root / "sieve" / ".state").exists()
    other = site / "other.sieve"
    other.write_text("discard;")
    r = run(site, "sieve", "test", "alice@example.test", str(site / "msg.eml"), "--script", str(other))
    assert "  discard" in r.stdout.splitlines()
    r = run(site, "sieve", "test", "nobody@example.test", str(site / "msg.eml"))
    assert r.returncode == 2 and "not a local mailbox" in r.stderr


def test_check_config_compiles_the_global_scripts(site: Path) -> None:
    assert run(site, "check-config").returncode == 0
    (site / "before.sieve").write_text('fileinto "Junk";')
    r = run(site, "check-config")
    assert r.returncode != 0 and "sieve.before:" in r.stdout + r.stderr and "line 1" in r.stdout + r.stderr


def test_import_from_a_dovecot_home(site: Path) -> None:
    home = site / "dovecot-home"
    (home / "sieve").mkdir(parents=True)
    (home / "sieve" / "vacation.sieve").write_text('require "vacation"; vacation "away";')
    (home / "sieve" / "rules.sieve").write_text('require "fileinto"; fileinto "Lists";')
    (home / "sieve" / "rules.svbin").write_bytes(b"\x00compiled")  # Pigeonhole's binary: ignored
    os.symlink("sieve/rules.sieve", home / ".dovecot.sieve")
    r = run(site, "sieve", "import", str(home), "bob@example.test")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["imported rules", "imported vacation", "active: rules"]
    d = site / "data" / "mail" / "example.test" / "bob" / "sieve"
    assert sorted(os.listdir(d)) == ["active", "rules.sieve", "vacation.sieve"]
    assert os.readlink(d / "active") == "rules.sieve"
