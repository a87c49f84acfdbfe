"""The one durability module (mailsuite/fsutil.py): an atomic write is temp file in the
same folder, write all, fsync, rename, fsync the folder, in that order, and every
writer of the suite goes through it (keywords and the users file used to differ)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailsuite import fsutil


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every fsync (of a file or of a folder) and rename, in order."""
    out: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        kind = "fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file"
        out.append((kind, os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst) -> None:  # type: ignore[no-untyped-def]
        out.append(("rename", str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    return out


def test_atomic_write_is_file_fsync_then_rename_then_folder_fsync(tmp_path: Path, events) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "state"
    target.write_bytes(b"old")
    fsutil.atomic_write(target, b"new content")
    assert target.read_bytes() == b"new content"
    kinds = [e[0] for e in events]
    assert kinds == ["fsync-file", "rename", "fsync-dir"]
    assert events[0][1].startswith(str(tmp_path / "state.")) and events[0][1].endswith(".tmp")  # same folder
    assert events[1][1] == str(target) and events[2][1] == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_content_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state"
    target.write_bytes(b"old")

    def full(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        fsutil.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_a_rebuildable_file_skips_the_folder_fsync_but_never_tears(tmp_path: Path, events) -> None:  # type: ignore[no-untyped-def]
    fsutil.atomic_write(tmp_path / "index", b"x", sync_dir=False)
    assert [e[0] for e in events] == ["fsync-file", "rename"]
    events.clear()
    fsutil.atomic_write(tmp_path / "cache", b"x", sync=False, sync_dir=False)
    assert [e[0] for e in events] == ["rename"]


def test_keywords_file_now_fsyncs_its_folder(tmp_path: Path, events) -> None:  # type: ignore[no-untyped-def]
    from mailsuite.store.keywords import Keywords

    Keywords(tmp_path).letters_for({"$Forwarded"})
    assert [e[0] for e in events] == ["fsync-file", "rename", "fsync-dir"]
    assert events[-1][1] == str(tmp_path)


def test_users_file_is_written_whole_and_private(tmp_path: Path, events) -> None:  # type: ignore[no-untyped-def]
    from mailsuite.directory.files import UserEntry, read_users, write_users
    from mailsuite.directory.passwords import hash_password

    pw = hash_password("pw")
    users = {f"u{i}@example.test": UserEntry(f"u{i}@example.test", pw) for i in range(500)}
    path = tmp_path / "users"
    write_users(path, users)
    assert read_users(path).keys() == users.keys()
    assert [e[0] for e in events] == ["fsync-file", "rename", "fsync-dir"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_spool_writes_body_and_envelope_with_one_folder_fsync(tmp_path: Path, events) -> None:  # type: ignore[no-untyped-def]
    from mailsuite.handoff import BodyFile
    from mailsuite.queue.spool import Record, Recipient, SpoolPaths, write_new

    paths = SpoolPaths(tmp_path / "queue")
    paths.make()
    rec = Record("ABC000000001", "a@example.test", 1.0, (Recipient("x@remote.test", "remote"),), size=2, lines=1)
    write_new(paths, rec, BodyFile(str(tmp_path / "in"), 2, 1, b"x\n"))
    assert [e[0] for e in events] == ["fsync-file", "fsync-file", "rename", "fsync-dir"]
    assert events[2][1] == str(paths.envelope(rec.id))  # the envelope's name comes last


def test_nothing_but_fsutil_calls_fsync() -> None:
    root = Path(__file__).resolve().parent.parent / "mailsuite"
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "fsutil.py" and "os.fsync(" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []
