"""Other real IMAP clients against the server: fetchmail and getmail6 over IMAPS."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.imap import PASSWORD, Accounts, deliver
from tests.support.programs import needs
from tests.support.server import Server


@pytest.fixture
def user(accounts: Accounts) -> str:
    return accounts.take()


def _deliver_three(server: Server, user: str) -> None:
    for i in range(3):
        deliver(server, user, f"From: a@remote.test\r\nSubject: m{i}\r\n\r\nbody {i}\r\n".encode())


@needs(("fetchmail", "fetchmail"))
def test_fetchmail_over_imaps_fetches_every_message_and_marks_it_seen(imap_server: Server, user: str,
                                                                     tmp_path: Path) -> None:
    _deliver_three(imap_server, user)
    out = tmp_path / "mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 protocol IMAP port {imap_server.ports["imaps"]} user "{user}" password "{PASSWORD}" '
        f'ssl sslcertfile {imap_server.root / "tls" / "cert.pem"} sslcertck sslcommonname mail.example.test '
        f"mda \"/bin/sh -c 'cat >> {out}'\" keep\n")
    rc.chmod(0o600)
    p = subprocess.run(["fetchmail", "-f", str(rc), "--nodetach", "--pidfile", str(tmp_path / "pid")],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, HOME=str(tmp_path)))
    assert p.returncode == 0, p.stdout + p.stderr
    text = out.read_text()
    assert [f"Subject: m{i}" in text for i in range(3)] == [True] * 3
    assert all(name.endswith(":2,S") for name in os.listdir(imap_server.maildir(user) / "cur"))


@needs(("getmail", "getmail6"))
def test_getmail_over_imaps_into_a_maildir(imap_server: Server, user: str, tmp_path: Path) -> None:
    _deliver_three(imap_server, user)
    # getmail will not deliver as root: it delivers as nobody, into a folder nobody can reach.
    outer = Path(tempfile.mkdtemp(prefix="getmail-"))
    outer.chmod(0o777)
    dest = outer / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (dest / sub).mkdir(parents=True)
        (dest / sub).chmod(0o777)
    rc = tmp_path / "getmailrc"
    rc.write_text(f"""[retriever]
type = SimpleIMAPSSLRetriever
server = 127.0.0.1
port = {imap_server.ports["imaps"]}
username = {user}
password = {PASSWORD}
ca_certs = {imap_server.root / "tls" / "cert.pem"}
mailboxes = ("INBOX",)

[destination]
type = Maildir
path = {dest}/
user = nobody

[options]
read_all = true
delete = false
""")
    p = subprocess.run(["getmail", "--getmaildir", str(tmp_path), "--rcfile", str(rc)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    try:
        got = sorted((dest / "new" / n).read_bytes() for n in os.listdir(dest / "new"))
        assert len(got) == 3 and all(b"body " in m for m in got)
    finally:
        shutil.rmtree(outer, ignore_errors=True)
