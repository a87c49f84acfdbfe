"""mbsync (isync) against the server: an account synced to a local Maildir and back,
with flags, moves and deletions round-tripping in both directions."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import imapclient
import pytest

from tests.support.imap import PASSWORD, deliver, imap_tracebacks, start_imap_server
from tests.support.programs import needs
from tests.support.server import Server
from tests.support.tls import trusting_context

USER = "u0@example.test"
MBSYNC = shutil.which("mbsync")
pytestmark = needs(("mbsync", "isync"))


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    s = start_imap_server(tmp_path / "srv", server={"allow_plaintext_auth": False})
    try:
        yield s
    finally:
        s.stop()


def write_rc(tmp: Path, srv: Server, ssl_type: str) -> Path:
    local = tmp / "local"
    local.mkdir(exist_ok=True)
    port = srv.ports["imaps"] if ssl_type == "IMAPS" else srv.ports["imap"]
    rc = tmp / "mbsyncrc"
    rc.write_text(f"""
IMAPAccount test
Host 127.0.0.1
Port {port}
User {USER}
Pass {PASSWORD}
SSLType {ssl_type}
CertificateFile {srv.root / 'tls' / 'cert.pem'}

IMAPStore remote
Account test

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Remove Both
Expunge Both
SyncState *
Sync All
""")
    return rc


def mbsync(rc: Path) -> str:
    p = subprocess.run([MBSYNC, "-c", str(rc), "-a"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout + p.stderr


def local_files(tmp: Path, folder: str) -> dict[str, str]:
    """Subject → Maildir flags of the local copies in ``folder``."""
    out = {}
    for sub in ("cur", "new"):
        d = tmp / "local" / folder / sub
        if not d.is_dir():
            continue
        for name in os.listdir(d):
            data = (d / name).read_bytes()
            subject = next(line for line in data.split(b"\n") if line.startswith(b"Subject:"))[9:].decode()
            out[subject] = name.partition(":2,")[2]
    return out


def remote(srv: Server) -> imapclient.IMAPClient:
    c = imapclient.IMAPClient("127.0.0.1", port=srv.ports["imaps"], ssl=True, ssl_context=trusting_context(srv))
    c.login(USER, PASSWORD)
    return c


def remote_state(srv: Server, folder: str) -> dict[str, set[bytes]]:
    c = remote(srv)
    c.select_folder(folder)
    out = {}
    for uid, data in c.fetch(c.search(["ALL"]), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items():
        subject = data[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip()[9:].decode()
        out[subject] = set(data[b"FLAGS"])
    c.logout()
    return out


@pytest.mark.parametrize("ssl_type", ["IMAPS", "STARTTLS"])
def test_mbsync_round_trip(srv: Server, tmp_path: Path, ssl_type: str) -> None:
    for i in range(4):
        deliver(srv, USER, f"From: a@remote.test\r\nSubject: m{i}\r\n\r\nbody {i}\r\n".encode())
    c = remote(srv)
    c.create_folder("Projects")
    c.append("Projects", b"Subject: p0\r\n\r\nproject\r\n", flags=["\\Flagged"])
    c.logout()

    rc = write_rc(tmp_path, srv, ssl_type)
    mbsync(rc)
    assert set(local_files(tmp_path, "INBOX")) == {"m0", "m1", "m2", "m3"}
    assert local_files(tmp_path, "Projects") == {"p0": "F"}

    # Local changes: m0 read, m1 deleted, m2 moved to Projects.
    inbox = tmp_path / "local" / "INBOX"
    for sub in ("cur", "new"):
        for name in os.listdir(inbox / sub):
            path = inbox / sub / name
            data = path.read_bytes()
            base = name.partition(":2,")[0]
            if b"Subject: m0" in data:
                os.rename(path, inbox / "cur" / (base + ":2,S"))
            elif b"Subject: m1" in data:
                os.unlink(path)
            elif b"Subject: m2" in data:
                # a client's move: a new file in the other folder, without mbsync's ,U=
                os.rename(path, tmp_path / "local" / "Projects" / "cur" / base.partition(",U=")[0])
    out = mbsync(rc)
    state = remote_state(srv, "INBOX")
    assert set(state) == {"m0", "m3"}, out
    assert b"\\Seen" in state["m0"]
    assert set(remote_state(srv, "Projects")) == {"p0", "m2"}

    # Remote changes: m3 flagged, m0 deleted+expunged, p0 moved to Archive.
    c = remote(srv)
    c.select_folder("INBOX")
    uids = {d[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip()[9:].decode(): u
            for u, d in c.fetch(c.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items()}
    c.add_flags([uids["m3"]], ["\\Flagged"])
    c.delete_messages([uids["m0"]])
    c.expunge()
    c.select_folder("Projects")
    p_uids = {d[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip()[9:].decode(): u
              for u, d in c.fetch(c.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items()}
    c.move([p_uids["p0"]], "Archive")
    c.logout()
    mbsync(rc)
    assert local_files(tmp_path, "INBOX") == {"m3": "F"}
    assert set(local_files(tmp_path, "Projects")) == {"m2"}
    assert local_files(tmp_path, "Archive") == {"p0": "F"}

    # A second sync with no changes changes nothing.
    mbsync(rc)
    assert local_files(tmp_path, "INBOX") == {"m3": "F"}
    assert imap_tracebacks(srv.log()) == []


@pytest.mark.parametrize("ssl_type", ["IMAPS", "STARTTLS"])
def test_mbsync_compresses_the_connection(srv: Server, tmp_path: Path, ssl_type: str) -> None:
    """isync 1.4 sends COMPRESS DEFLATE (RFC 4978) whenever the server offers it; its
    debug output (-Dn: network) shows the exchange, and the sync still round-trips."""
    for i in range(3):
        body = "text text text\r\n" * 500
        deliver(srv, USER, f"From: a@remote.test\r\nSubject: z{i}\r\n\r\n{body}".encode())
    rc = write_rc(tmp_path, srv, ssl_type)
    p = subprocess.run([MBSYNC, "-Dn", "-c", str(rc), "-a"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout + p.stderr
    assert "COMPRESS DEFLATE" in out, out[-3000:]
    assert "OK DEFLATE active" in out
    assert set(local_files(tmp_path, "INBOX")) == {"z0", "z1", "z2"}
    assert imap_tracebacks(srv.log()) == []
