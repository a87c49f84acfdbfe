"""offlineimap against the server (which offers CONDSTORE and QRESYNC): INBOX synced to
a local Maildir and back, flags and deletions round-tripping in both directions."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.imap import PASSWORD, Accounts, login
from tests.support.programs import needs
from tests.support.server import Server

pytestmark = needs(("offlineimap", "offlineimap"))


def message(n: int) -> bytes:
    return f"From: a{n}@remote.test\r\nSubject: note {n}\r\nMessage-ID: <n{n}@remote.test>\r\n\r\nbody {n}\r\n".encode()


def write_rc(tmp: Path, srv: Server, user: str, compression: bool = False) -> Path:
    rc = tmp / "offlineimaprc"
    rc.write_text(f"""
[general]
accounts = test
metadata = {tmp}/meta
ui = quiet

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {tmp}/mail

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {srv.ports['imap']}
remoteuser = {user}
remotepass = {PASSWORD}
ssl = no
starttls = no
folderfilter = lambda f: f == 'INBOX'
usecompression = {'yes' if compression else 'no'}
""")
    return rc


def run(rc: Path) -> None:
    # "-u basic": its log of what it copied and deleted, for a failure's message.
    out = subprocess.run([shutil.which("offlineimap") or "offlineimap", "-c", str(rc), "-o", "-u", "basic"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ERROR" not in out.stdout + out.stderr, out.stdout + out.stderr


def local_files(tmp: Path) -> dict[str, str]:
    """Subject -> the flag letters of the local copy."""
    out = {}
    for sub in ("cur", "new"):
        d = tmp / "mail" / "INBOX" / sub
        for name in os.listdir(d) if d.is_dir() else ():
            subject = next(line for line in (d / name).read_text().splitlines() if line.startswith("Subject:"))
            out[subject[9:]] = name.partition(":2,")[2]
    return out


def server_flags(srv: Server, user: str) -> dict[str, str]:
    m = login(srv, user)
    m.select("INBOX", readonly=True)
    _, data = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    out = {}
    for item in data:
        if isinstance(item, tuple):
            flags = item[0].decode()
            subject = item[1].decode().strip()[9:]
            out[subject] = flags
    m.logout()
    return out


@pytest.fixture
def user(accounts: Accounts) -> str:
    u = accounts.take()
    m = login(accounts.server, u)
    for n in range(1, 6):
        assert m.append("INBOX", None, None, message(n))[0] == "OK"
    m.logout()
    return u


def test_offlineimap_syncs_flags_and_expunges_both_ways(imap_server: Server, user: str, tmp_path: Path) -> None:
    rc = write_rc(tmp_path, imap_server, user)
    run(rc)
    assert sorted(local_files(tmp_path)) == [f"note {n}" for n in range(1, 6)]
    # Server side: another client flags one message and expunges another.
    m = login(imap_server, user)
    m.select("INBOX")
    m.uid("STORE", "2", "+FLAGS", "(\\Flagged)")
    m.uid("STORE", "3", "+FLAGS", "(\\Deleted)")
    m.expunge()
    m.logout()
    run(rc)
    local = local_files(tmp_path)
    assert "note 3" not in local and "F" in local["note 2"]
    # Local side: read one message, delete another.
    inbox = tmp_path / "mail" / "INBOX"
    for sub in ("new", "cur"):  # offlineimap puts unseen messages in new/
        for name in os.listdir(inbox / sub):
            text = (inbox / sub / name).read_text()
            if "Subject: note 4" in text:
                base, _, letters = name.partition(":2,")
                os.rename(inbox / sub / name, inbox / "cur" / f"{base}:2,{''.join(sorted(letters + 'S'))}")
            elif "Subject: note 5" in text:
                os.unlink(inbox / sub / name)
    run(rc)
    remote = server_flags(imap_server, user)
    assert sorted(remote) == ["note 1", "note 2", "note 4"], remote
    assert "\\Seen" in remote["note 4"] and "\\Flagged" in remote["note 2"]


def test_offlineimap_with_compression(imap_server: Server, user: str, tmp_path: Path) -> None:
    """usecompression = yes: offlineimap's imaplib2 sends COMPRESS DEFLATE (RFC 4978)."""
    rc = write_rc(tmp_path, imap_server, user, compression=True)
    before = imap_server.log().count("COMPRESS=DEFLATE on")
    run(rc)
    assert sorted(local_files(tmp_path)) == [f"note {n}" for n in range(1, 6)]
    m = login(imap_server, user)
    m.select("INBOX")
    m.uid("STORE", "2", "+FLAGS", "(\\Flagged)")
    m.logout()
    run(rc)
    assert "F" in local_files(tmp_path)["note 2"]
    assert imap_server.log().count("COMPRESS=DEFLATE on") >= before + 2  # both runs compressed
