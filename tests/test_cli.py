"""The `mailsuite` admin command: check-config and user add/passwd/del/list."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mailsuite import cli
from mailsuite.directory.passwords import check_password

CONFIG = """
[server]
domains = ["example.test", "other.test"]
[tls]
certificate = "tls/cert.pem"
private_key = "tls/key.pem"
generate_self_signed = true
[directory]
users_file = "users"
aliases_file = "aliases"
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    p = tmp_path / "mailsuite.toml"
    p.write_text(CONFIG)
    return p


def run(*args: str, stdin: str = "", env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailsuite.cli", *args], input=stdin, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=60)


def main(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "") -> tuple[int, str, str]:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        rc = cli.main(list(args))
    except SystemExit as e:
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def test_console_script_is_installed() -> None:
    exe = shutil.which("mailsuite") or str(Path(sys.executable).with_name("mailsuite"))
    p = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "check-config" in p.stdout and "user" in p.stdout


def _all_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _all_commands(sub, prefix + (name,))
    return out


def test_help_on_every_subcommand(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = _all_commands(cli.build_parser())
    assert ("user", "add") in commands and ("check-config",) in commands
    for command in commands:
        rc, out, err = main(capsys, monkeypatch, *command, "--help")
        assert rc == 0, (command, err)
        assert out.startswith("usage: mailsuite"), command
        if command not in ((), ("user",)) and command[0] in ("check-config", "user"):
            assert "--config" in out, command


# -- check-config ---------------------------------------------------------------------


def test_check_config_ok(cfg: Path) -> None:
    p = run("check-config", str(cfg))
    assert p.returncode == 0, p.stdout
    assert p.stdout.strip().splitlines()[-1] == "OK"


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\ndomains = []\n[smtp]\nmax_message_size = "big"\ncolour = 1\n')
    p = run("check-config", str(bad))
    assert p.returncode == 1
    lines = p.stdout.strip().splitlines()
    assert "smtp.max_message_size: expected an integer" in lines
    assert "smtp.colour: unknown key" in lines
    assert "server.domains: at least one local domain is required" in lines
    assert "Traceback" not in p.stdout + p.stderr


def test_check_config_missing_file(tmp_path: Path) -> None:
    p = run("check-config", str(tmp_path / "none.toml"))
    assert p.returncode == 1
    assert p.stdout.strip() == f"{tmp_path / 'none.toml'}: config file not found"


def test_check_config_reports_missing_files(tmp_path: Path) -> None:
    p = tmp_path / "m.toml"
    p.write_text(CONFIG.replace("generate_self_signed = true", "generate_self_signed = false"))
    out = run("check-config", "--config", str(p))
    assert out.returncode == 1
    assert any(line.startswith("tls.certificate: ") for line in out.stdout.splitlines())


def test_config_path_from_environment(cfg: Path) -> None:
    p = run("check-config", env={"MAILSUITE_CONFIG": str(cfg)})
    assert p.returncode == 0 and "OK" in p.stdout


def test_default_config_path_is_etc_mailsuite_toml(cfg: Path, tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    shutil.copy(cfg, tmp_path / "etc" / "mailsuite.toml")
    env = {k: v for k, v in os.environ.items() if k != "MAILSUITE_CONFIG"}
    p = subprocess.run([sys.executable, "-m", "mailsuite.cli", "check-config"], capture_output=True, text=True,
                       env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr


# -- users -------------------------------------------------------------------------


def users_file(cfg: Path) -> Path:
    return cfg.parent / "users"


def test_user_add_stores_only_a_hash(cfg: Path) -> None:
    p = run("user", "add", "alice@example.test", "--password-stdin", "--config", str(cfg), stdin="s3cret-Pw\n")
    assert p.returncode == 0, p.stderr
    text = users_file(cfg).read_text()
    assert "s3cret-Pw" not in text
    address, hashed = text.strip().split(":", 1)
    assert address == "alice@example.test"
    assert hashed.startswith("$argon2id$") and check_password("s3cret-Pw", hashed)
    assert stat.S_IMODE(users_file(cfg).stat().st_mode) == 0o600


def test_user_add_takes_a_password_over_72_bytes(cfg: Path) -> None:
    """Issue 16 finding 2: bcrypt refused these and the command crashed."""
    long_pw = "ä" * 40 + "-and-more"  # 89 bytes in UTF-8
    p = run("user", "add", "alice@example.test", "--password-stdin", "--config", str(cfg), stdin=long_pw + "\n")
    assert p.returncode == 0, p.stderr
    hashed = users_file(cfg).read_text().strip().split(":", 1)[1]
    assert check_password(long_pw, hashed) and not check_password(long_pw[:-1], hashed)


def test_user_add_with_quota_and_list(cfg: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(capsys, monkeypatch, "user", "add", "Bob@Example.test", "--password-stdin", "--quota", "5000",
                "--config", str(cfg), stdin="pw\n")[0] == 0
    assert main(capsys, monkeypatch, "user", "add", "carol@other.test", "--password-stdin", "--config", str(cfg),
                stdin="pw\n")[0] == 0
    rc, out, _ = main(capsys, monkeypatch, "user", "list", "--config", str(cfg))
    assert rc == 0
    assert out.splitlines() == ["bob@example.test  quota=5000", "carol@other.test"]


def test_user_add_refuses_duplicates(cfg: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    main(capsys, monkeypatch, "user", "add", "a@example.test", "--password-stdin", "--config", str(cfg), stdin="pw\n")
    rc, _, err = main(capsys, monkeypatch, "user", "add", "a@example.test", "--password-stdin", "--config", str(cfg),
                      stdin="pw\n")
    assert rc == 1 and "exists" in err


@pytest.mark.parametrize("address", ["a@elsewhere.test", "no-at-sign", "a:b@example.test", "../x@example.test",
                                     ".hidden@example.test", "a b@example.test"])
def test_user_add_refuses_bad_addresses(cfg: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                         address: str) -> None:
    rc, _, err = main(capsys, monkeypatch, "user", "add", address, "--password-stdin", "--config", str(cfg), stdin="pw\n")
    assert rc == 1 and err.startswith("error: ")
    assert not users_file(cfg).exists() or users_file(cfg).read_text() == ""


def test_empty_password_is_refused(cfg: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    rc, _, err = main(capsys, monkeypatch, "user", "add", "a@example.test", "--password-stdin", "--config", str(cfg),
                      stdin="\n")
    assert rc == 1 and "empty password" in err


def test_password_is_never_an_argument(cfg: Path) -> None:
    p = run("user", "add", "a@example.test", "secret-on-argv", "--config", str(cfg))
    assert p.returncode == 2 and "unrecognized arguments" in p.stderr


def test_user_passwd_changes_the_hash_atomically(cfg: Path) -> None:
    run("user", "add", "a@example.test", "--password-stdin", "--config", str(cfg), stdin="old-pw\n")
    run("user", "add", "b@example.test", "--password-stdin", "--config", str(cfg), stdin="b-pw\n")
    before = users_file(cfg).stat().st_ino
    b_line = [l for l in users_file(cfg).read_text().splitlines() if l.startswith("b@")]
    p = run("user", "passwd", "a@example.test", "--password-stdin", "--config", str(cfg), stdin="new-pw\n")
    assert p.returncode == 0, p.stderr
    assert users_file(cfg).stat().st_ino != before  # a new file renamed into place
    assert sorted(os.listdir(cfg.parent)) == ["mailsuite.toml", "users"]  # no temp file left
    lines = users_file(cfg).read_text().splitlines()
    a_hash = [l for l in lines if l.startswith("a@")][0].split(":", 1)[1]
    assert check_password("new-pw", a_hash) and not check_password("old-pw", a_hash)
    assert [l for l in lines if l.startswith("b@")] == b_line  # other accounts untouched


def test_user_passwd_unknown_user(cfg: Path) -> None:
    p = run("user", "passwd", "ghost@example.test", "--password-stdin", "--config", str(cfg), stdin="x\n")
    assert p.returncode == 1 and "no such user" in p.stderr


def test_user_del(cfg: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    for a in ("a@example.test", "b@example.test"):
        main(capsys, monkeypatch, "user", "add", a, "--password-stdin", "--config", str(cfg), stdin="pw\n")
    rc, out, _ = main(capsys, monkeypatch, "user", "del", "a@example.test", "--config", str(cfg))
    assert rc == 0 and "Maildir is kept" in out
    assert main(capsys, monkeypatch, "user", "list", "--config", str(cfg))[1].split() == ["b@example.test"]
    rc, _, err = main(capsys, monkeypatch, "user", "del", "a@example.test", "--config", str(cfg))
    assert rc == 1 and "no such user" in err


def test_user_commands_with_a_broken_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\ndomains = 3\n")
    p = run("user", "list", "--config", str(bad))
    assert p.returncode == 2
    assert "error: server.domains: expected a list" in p.stderr
    assert "Traceback" not in p.stderr


def test_users_added_by_the_cli_can_log_in(cfg: Path) -> None:
    from mailsuite.directory.files import FileDirectory
    from mailsuite.workers import InlineWorkers

    run("user", "add", "a@example.test", "--password-stdin", "--config", str(cfg), stdin="pw-a\n")
    d = FileDirectory(users_file(cfg), cfg.parent / "aliases", ("example.test",), workers=InlineWorkers())
    got: list = []
    d.authenticate("a@example.test", "pw-a").addBoth(got.append)
    assert got[0].name == "a@example.test"


def test_check_config_reports_a_certificate_that_does_not_load(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "c.pem").write_text("not a certificate\n")
    (tmp_path / "k.pem").write_text("not a key\n")
    cfg = tmp_path / "m.toml"
    cfg.write_text('[server]\ndomains = ["a.test"]\n[tls]\ncertificate = "c.pem"\nprivate_key = "k.pem"\n')
    exe = str(Path(sys.executable).with_name("mailsuite"))
    out = subprocess.run([exe, "check-config", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stdout.startswith("tls.certificate:") and "OK" not in out.stdout


@pytest.mark.parametrize("script", ["soak", "demo"])
def test_the_scripts_answer_help_and_refuse_unknown_arguments(script: str) -> None:
    """`scripts/soak --help` once ran a 30-minute soak: both scripts print their usage
    at once and refuse an argument they do not know, doing nothing else."""
    path = Path(__file__).resolve().parent.parent / "scripts" / script
    ok = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=10)
    assert ok.returncode == 0 and ok.stdout.startswith(f"usage: scripts/{script}"), ok
    bad = subprocess.run([str(path), "--bogus"], capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "--bogus" in bad.stderr, bad
