"""The twistd plugin: listed by twistd, refuses bad configs clearly, daemonizes."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import time
from pathlib import Path

from tests.support.server import TWISTD, make_server


def twistd(*args: str, cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([TWISTD, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_twistd_lists_mailsuite() -> None:
    p = twistd("--help")
    assert p.returncode == 0
    assert any(line.split()[:1] == ["mailsuite"] for line in p.stdout.splitlines())


def test_plugin_help_names_the_config_option() -> None:
    p = twistd("mailsuite", "--help")
    assert p.returncode == 0 and "--config" in p.stdout


def test_missing_config_exits_with_one_line(tmp_path: Path) -> None:
    p = twistd("-n", "--pidfile=", "mailsuite", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert p.returncode != 0
    assert p.stderr.splitlines() == [f"mailsuite: invalid config {tmp_path / 'nope.toml'}:",
                                     f"  {tmp_path / 'nope.toml'}: config file not found"]
    assert "Traceback" not in p.stdout + p.stderr


def test_invalid_config_exits_with_one_line_per_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text('[server]\ndomains = ["a.test"]\n[smtp]\nmax_message_size = "big"\nlisten = ["nonsense:1"]\n'
                   "[submission]\nlisten_tls = []\n[imap]\nlisten_tls = []\n[pop3]\nlisten_tls = []\n[http]\nlisten_tls = []\n[bogus]\n")
    p = twistd("-n", "--pidfile=", "mailsuite", "--config", str(cfg), cwd=tmp_path)
    assert p.returncode != 0
    lines = p.stderr.splitlines()
    assert lines[0] == f"mailsuite: invalid config {cfg}:"
    assert sorted(l.strip().split(":")[0] for l in lines[1:]) == ["bogus", "smtp.listen", "smtp.max_message_size"]
    assert "Traceback" not in p.stdout + p.stderr
    assert "Usage:" not in p.stdout + p.stderr


def test_unreadable_certificate_is_a_config_problem(tmp_path: Path) -> None:
    s = make_server(tmp_path / "srv")
    (s.root / "tls" / "cert.pem").write_text("not a certificate\n")
    s.write_config()
    p = twistd("-n", "--pidfile=", "mailsuite", "--config", str(s.config_path), cwd=s.root)
    assert p.returncode != 0
    assert p.stderr.splitlines()[1].startswith("  tls.certificate: ")
    assert "Traceback" not in p.stderr


def test_daemon_mode_writes_a_pidfile_and_stops_on_sigterm(tmp_path: Path) -> None:
    s = make_server(tmp_path / "srv")
    s.write_config()
    pidfile, logfile = s.root / "twistd.pid", s.root / "daemon.log"
    p = twistd(f"--pidfile={pidfile}", f"--logfile={logfile}", "mailsuite", "--config", str(s.config_path), cwd=s.root)
    assert p.returncode == 0, p.stdout + p.stderr
    deadline = time.time() + 20
    while not pidfile.exists() and time.time() < deadline:
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    try:
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", s.ports["smtp"]), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        with smtplib.SMTP("127.0.0.1", s.ports["smtp"]) as c:
            c.sendmail("a@remote.test", ["alice@example.test"], b"Subject: daemon\r\n\r\nhi\r\n")
        assert len(s.messages("alice@example.test")) == 1
        assert os.getpgid(pid) != os.getpgid(0)  # detached from our process group
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("daemon did not stop on SIGTERM")
    assert not pidfile.exists()  # twistd removes it on a clean stop
    assert "mailsuite started" in logfile.read_text()


def test_port_in_use_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    s = make_server(tmp_path / "srv")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", s.ports["smtp"]))
        blocker.listen()
        s.write_config()
        p = twistd("-n", "--pidfile=", "--logfile=-", "mailsuite", "--config", str(s.config_path), cwd=s.root)
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert f"mailsuite: cannot listen on 127.0.0.1:{s.ports['smtp']}: [Errno 98] Address already in use" in out
    assert "Traceback" not in out
