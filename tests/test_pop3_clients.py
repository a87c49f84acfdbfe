"""Debian's fetchmail and getmail6 fetching from the running server, keep and delete
modes, over STLS (fetchmail; getmail6 has no STLS) and implicit TLS.  Each runs with
a temporary HOME; certificate checks are off (self-signed test certificate)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.pop3 import PASSWORD, fresh_user, put, start_pop3_server
from tests.support.programs import needs
from tests.support.server import Server

pytestmark = needs(("fetchmail", "fetchmail"), ("getmail", "getmail6"), ("setpriv", "util-linux"))

NOBODY = NOGROUP = 65534
MESSAGES = [b"Subject: m%d\n\n.dot line\nbody %d\n" % (i, i) for i in range(3)]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_pop3_server(tmp_path_factory.mktemp("pop3clients"))
    try:
        yield server
    finally:
        server.stop()


def server_count(server: Server, user: str) -> int:
    base = server.maildir(user)
    return sum(len(os.listdir(base / sub)) for sub in ("new", "cur"))


def fetchmail(server: Server, home: Path, user: str, implicit: bool, keep: bool) -> str:
    home.mkdir(exist_ok=True)
    out = home / "out.mbox"
    rc = home / ".fetchmailrc"
    port = server.ports["pop3s" if implicit else "pop3"]
    tls = "ssl" if implicit else 'sslproto "TLS1.2+"'  # an explicit sslproto makes STLS mandatory
    rc.write_text(
        "set no bouncemail\nset no syslog\n"
        f"poll 127.0.0.1 with proto POP3 port {port} uidl\n"
        f'  user "{user}" there with password "{PASSWORD}" is "root" here\n'
        f"  {tls} no sslcertck {'keep' if keep else 'nokeep'}\n"
        f"  mda \"/bin/sh -c 'cat >> {out}'\"\n"
    )
    rc.chmod(0o600)
    r = subprocess.run(
        ["fetchmail", "-v", "-f", str(rc), "--pidfile", str(home / "pid"), "-i", str(home / "ids")],
        env=dict(os.environ, HOME=str(home)), capture_output=True, text=True, timeout=60,
    )
    # 0: mail fetched; 1: no mail.
    assert r.returncode in (0, 1), r.stdout + r.stderr
    if not implicit:
        assert "POP3> STLS" in r.stdout and "upgrade to TLS succeeded" in r.stdout
    return out.read_text() if out.exists() else ""


@pytest.fixture
def nobody_home() -> Iterator[Path]:
    """getmail6 refuses to deliver as root: it runs as nobody in a home under /tmp."""
    home = Path(tempfile.mkdtemp(prefix="getmail-home-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def getmail(server: Server, home: Path, user: str, keep: bool) -> list[bytes]:
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    rc = home / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = 127.0.0.1\n"
        f"port = {server.ports['pop3s']}\nusername = {user}\npassword = {PASSWORD}\n"
        f"[destination]\ntype = Maildir\npath = {maildir}/\n"
        f"[options]\nread_all = false\ndelete = {'false' if keep else 'true'}\nverbose = 2\n"
    )
    for p in [home, *home.rglob("*")]:
        os.chown(p, NOBODY, NOGROUP)
    r = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOGROUP}", "--clear-groups",
         "getmail", "--getmaildir", str(home), "--rcfile", str(rc)],
        env=dict(os.environ, HOME=str(home)), capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return [(maildir / "new" / n).read_bytes() for n in sorted(os.listdir(maildir / "new"))]


@pytest.mark.parametrize("implicit", [False, True], ids=["stls", "implicit-tls"])
def test_fetchmail_keep_fetches_once_and_leaves_mail(srv: Server, tmp_path: Path, implicit: bool) -> None:
    user = fresh_user()
    for m in MESSAGES:
        put(srv, user, m)
    out = fetchmail(srv, tmp_path / "home", user, implicit, keep=True)
    assert out.count("Subject: m") == 3 and "\n.dot line\n" in out
    assert server_count(srv, user) == 3
    again = fetchmail(srv, tmp_path / "home", user, implicit, keep=True)
    assert again.count("Subject: m") == 3  # UIDL: nothing fetched twice


@pytest.mark.parametrize("implicit", [False, True], ids=["stls", "implicit-tls"])
def test_fetchmail_delete_mode_empties_the_maildrop(srv: Server, tmp_path: Path, implicit: bool) -> None:
    user = fresh_user()
    for m in MESSAGES:
        put(srv, user, m)
    out = fetchmail(srv, tmp_path / "home", user, implicit, keep=False)
    assert out.count("Subject: m") == 3
    assert server_count(srv, user) == 0


def test_getmail_keep_fetches_once_and_leaves_mail(srv: Server, nobody_home: Path) -> None:
    user = fresh_user()
    for m in MESSAGES:
        put(srv, user, m)
    got = getmail(srv, nobody_home, user, keep=True)
    assert len(got) == 3 and all(b"\n.dot line\n" in m for m in got)
    assert server_count(srv, user) == 3
    put(srv, user, b"Subject: later\n\nx\n")
    got = getmail(srv, nobody_home, user, keep=True)
    assert len(got) == 4 and sum(b"Subject: later" in m for m in got) == 1


def test_getmail_delete_mode_empties_the_maildrop(srv: Server, nobody_home: Path) -> None:
    user = fresh_user()
    for m in MESSAGES:
        put(srv, user, m)
    got = getmail(srv, nobody_home, user, keep=False)
    assert len(got) == 3
    assert server_count(srv, user) == 0
