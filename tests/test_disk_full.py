"""Disk full (issue 16, faults of the machine): the data folder is a small tmpfs the
test mounts (root only) and fills.  SMTP answers 452 4.3.1 (never 5xx), IMAP APPEND
a temporary NO, nothing partial is left in new/, tmp/ or the spool, and the service
resumes by itself once space returns."""

from __future__ import annotations

import imaplib
import os
import smtplib
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.imap import imap_tracebacks
from tests.support.server import Server, make_server

ALICE, ALICE_PW = "alice@example.test", "alice-pw"


def can_mount() -> bool:
    return os.geteuid() == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if not can_mount():
        if os.environ.get("CI") == "true":
            pytest.fail("the disk-full test mounts a tmpfs: run the suite as root")
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def srv(tmp_path: Path, small_disk: Path) -> Iterator[Server]:
    s = make_server(tmp_path / "srv", server={"data_dir": str(small_disk / "data"), "allow_plaintext_auth": True},
                    relay={"transport": {"remote.test": "127.0.0.1:1"}})
    s.start()
    try:
        yield s
    finally:
        s.stop()


def fill(folder: Path) -> Path:
    """Write a file until the filesystem is full; returns it (remove it to free space)."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def send(server: Server, rcpt: str, size: int = 20000) -> tuple[int, bytes]:
    body = b"Subject: disk\r\n\r\n" + (b"x" * 70 + b"\r\n") * (size // 72)
    try:
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
            s.sendmail("sender@remote.test" if rcpt.endswith("example.test") else ALICE, [rcpt], body)
        return 250, b""
    except smtplib.SMTPResponseException as e:
        return e.smtp_code, e.smtp_error
    except smtplib.SMTPRecipientsRefused as e:
        code, text = next(iter(e.recipients.values()))
        return code, text


def files_under(folder: Path, *names: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.parent.name in names]


def test_disk_full_is_a_temporary_failure_and_service_resumes(srv: Server, small_disk: Path) -> None:
    data = small_disk / "data"
    assert send(srv, ALICE)[0] == 250  # the mailbox exists, with its uid list
    m = imaplib.IMAP4("127.0.0.1", srv.ports["imap"])
    m.login(ALICE, ALICE_PW)
    m.create("Saved")
    m.select("INBOX")
    first_uid = m.uid("SEARCH", "ALL")[1][0]
    before_new = files_under(data, "new", "cur")
    filler = fill(small_disk)

    # SMTP, local and remote recipients: 452 4.3.1, never 5xx.
    for rcpt in (ALICE, "someone@remote.test"):
        code, text = send(srv, rcpt, size=200000)
        assert (code, text[:5]) == (452, b"4.3.1"), (rcpt, code, text)
    # IMAP APPEND: a temporary NO.
    typ, resp = m.append("INBOX", None, None, b"Subject: append\r\n\r\n" + b"y" * 200000)
    assert typ == "NO" and b"[UNAVAILABLE]" in resp[0], resp
    # COPY makes hard links, but the target's uid list must be written: OK if that
    # still fits, else the same temporary NO; never a server bug.
    typ, resp = m.copy("1", "Saved")
    assert typ == "OK" or b"[UNAVAILABLE]" in resp[0], resp
    # Nothing partial anywhere.
    assert files_under(data, "new", "cur") == before_new
    assert files_under(data, "tmp") == []
    assert files_under(data / "queue", "incoming", "spool") == []

    # Space comes back: everything works again, without a restart.
    filler.unlink()
    assert send(srv, ALICE)[0] == 250
    typ, resp = m.append("INBOX", None, None, b"Subject: append\r\n\r\nback\r\n")
    assert typ == "OK", resp
    assert m.copy("1", "Saved")[0] == "OK"
    m.select("INBOX")
    typ, uids = m.uid("SEARCH", "ALL")
    assert len(uids[0].split()) == 3  # the first message, the SMTP one and the APPEND
    assert uids[0].split()[0] == first_uid  # the uid list stayed as it was
    m.logout()
    log = srv.log()
    assert "Traceback" not in log, log[-3000:]
    assert imap_tracebacks(log) == []


def test_a_full_disk_is_recognised_through_the_cause_chain() -> None:
    import errno

    from mailsuite.fsutil import is_disk_full
    from mailsuite.handoff import NO_SPACE_STATUS, TemporaryFailure, temporary_failure

    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError as e:
            raise RuntimeError("write failed") from e
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied")) and not is_disk_full(None)
    t = temporary_failure(full)
    assert isinstance(t, TemporaryFailure) and t.status == NO_SPACE_STATUS and t.reply
    assert temporary_failure(OSError(errno.EIO, "I/O error")).status == "4.3.0"
