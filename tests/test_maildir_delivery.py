"""Maildir++ delivery: unique names, tmp -> new with fsync, sizes in the name,
all-or-nothing copies, and names that could leave the mail folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mailsuite.handoff import BodyFile, IncomingMessage, clean_incoming
from mailsuite.store import maildir, names
from mailsuite.store.maildir import (
    SPECIAL_FOLDERS,
    DeliveryError,
    UnsafeName,
    account_dir,
    deliver_copies,
    deliver_one,
    ensure_account,
)

NAME_RE = re.compile(r"^\d+\.M\d+P\d+Q\d+\.[^/:,]+,S=\d+,W=\d+$")


def body_file(tmp_path: Path, data: bytes, in_memory: bool = False) -> BodyFile:
    path = tmp_path / "body"
    if in_memory:
        return BodyFile(str(path), len(data), data.count(b"\n"), data)
    path.write_bytes(data)
    return BodyFile(str(path), len(data), data.count(b"\n"))


def files(d: Path) -> list[str]:
    return sorted(os.listdir(d)) if d.is_dir() else []


# -- names ----------------------------------------------------------------------


def test_unique_names_do_not_repeat() -> None:
    made = {names.unique_name() for _ in range(20000)}
    assert len(made) == 20000


def test_unique_name_has_time_usec_pid_counter_host() -> None:
    n = names.unique_name()
    assert re.fullmatch(rf"\d+\.M\d+P{os.getpid()}Q\d+\..+", n)
    assert "/" not in n and ":" not in n


def test_sizes_in_the_name() -> None:
    n = names.with_sizes("123.M4P5Q6.host", 100, 110)
    assert names.size_of(n) == 100
    assert names.crlf_size_of(n) == 110
    assert names.base_name(n + ":2,S") == "123.M4P5Q6.host"


def test_flags_are_sorted_and_unique() -> None:
    assert names.with_flags("1.M2P3Q4.h,S=5,W=6", "SRFS") == "1.M2P3Q4.h,S=5,W=6:2,FRS"
    assert names.split_info("1.M2P3Q4.h,S=5,W=6:2,FRS") == ("1.M2P3Q4.h,S=5,W=6", "FRS")
    assert names.split_info("1.M2P3Q4.h,S=5,W=6") == ("1.M2P3Q4.h,S=5,W=6", "")


# -- delivery --------------------------------------------------------------------


@pytest.mark.parametrize("in_memory", [False, True], ids=["from-file", "from-memory"])
def test_delivery_lands_in_new_with_sizes(tmp_path: Path, in_memory: bool) -> None:
    root = ensure_account(tmp_path / "mail", "alice@example.test")
    data = b"Subject: x\n\nline one\nline two\n"
    prefix = b"Return-Path: <s@x.test>\nDelivered-To: alice@example.test\n"
    name = deliver_one(root, prefix, body_file(tmp_path, data, in_memory))
    assert NAME_RE.match(name)
    content = (root / "new" / name).read_bytes()
    assert content == prefix + data
    assert names.size_of(name) == len(content)
    assert names.crlf_size_of(name) == len(content) + content.count(b"\n")
    assert files(root / "tmp") == []


def test_delivery_fsyncs_file_then_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = ensure_account(tmp_path / "mail", "alice@example.test")
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append("fsync-dir" if os.path.isdir(target) else "fsync-file:" + Path(target).parent.name)
        real_fsync(fd)

    def rename(a, b):  # type: ignore[no-untyped-def]
        events.append("rename")
        real_rename(a, b)

    monkeypatch.setattr(maildir.os, "fsync", fsync)
    monkeypatch.setattr(maildir.os, "rename", rename)
    deliver_one(root, b"", body_file(tmp_path, b"x\n"))
    assert events == ["fsync-file:tmp", "rename", "fsync-dir"]


def test_ensure_account_makes_inbox_and_special_folders(tmp_path: Path) -> None:
    root = ensure_account(tmp_path / "mail", "alice@example.test")
    assert root == tmp_path / "mail" / "example.test" / "alice"
    for sub in ("cur", "new", "tmp"):
        assert (root / sub).is_dir()
    for folder in SPECIAL_FOLDERS:
        assert (root / f".{folder}" / "new").is_dir()
        assert (root / f".{folder}" / "maildirfolder").is_file()
    assert not (root / "maildirfolder").exists()


def test_first_delivery_creates_the_account(tmp_path: Path) -> None:
    done = deliver_copies(tmp_path / "mail", {"new@example.test": b""}, body_file(tmp_path, b"hi\n"))
    root = tmp_path / "mail" / "example.test" / "new"
    assert files(root / "new") == [done["new@example.test"]]
    assert (root / ".Trash" / "cur").is_dir()


def test_one_copy_per_recipient_with_its_own_headers(tmp_path: Path) -> None:
    mail = tmp_path / "mail"
    prefixes = {a: f"Delivered-To: {a}\n".encode() for a in ("a@x.test", "b@x.test", "c@y.test")}
    done = deliver_copies(mail, prefixes, body_file(tmp_path, b"body\n"))
    for account, name in done.items():
        content = (account_dir(mail, account) / "new" / name).read_bytes()
        assert content == f"Delivered-To: {account}\nbody\n".encode()


def test_failed_copy_removes_the_copies_already_made(tmp_path: Path) -> None:
    mail = tmp_path / "mail"
    ensure_account(mail, "a@x.test")
    broken = ensure_account(mail, "b@x.test")
    # Root is not stopped by permissions: a file where new/ should be really fails.
    os.rmdir(broken / "new")
    (broken / "new").write_text("not a directory")
    with pytest.raises(DeliveryError, match="b@x.test"):
        deliver_copies(mail, {"a@x.test": b"", "b@x.test": b""}, body_file(tmp_path, b"body\n"))
    assert files(account_dir(mail, "a@x.test") / "new") == []
    assert files(account_dir(mail, "a@x.test") / "tmp") == []
    assert files(broken / "tmp") == []


def test_write_failure_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = ensure_account(tmp_path / "mail", "a@x.test")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(maildir.os, "fsync", full)
    with pytest.raises(DeliveryError, match="ENOSPC"):
        deliver_copies(tmp_path / "mail", {"a@x.test": b""}, body_file(tmp_path, b"x\n"))
    assert files(root / "tmp") == [] and files(root / "new") == []


@pytest.mark.parametrize(
    "account",
    ["../x@example.test", "a/b@example.test", "x@..", "x@a/b", ".hidden@example.test", "x\x00@example.test",
     "@example.test", "x@", "x\n@example.test", "x@.example.test"],
)
def test_unsafe_names_never_reach_a_path(tmp_path: Path, account: str) -> None:
    with pytest.raises(UnsafeName):
        account_dir(tmp_path, account)
    with pytest.raises(UnsafeName):
        deliver_copies(tmp_path / "mail", {account: b""}, body_file(tmp_path, b"x\n"))
    assert not (tmp_path / "mail").exists() or not any((tmp_path / "mail").rglob("new"))


# -- the incoming message ---------------------------------------------------------


def test_small_message_stays_in_memory(tmp_path: Path) -> None:
    m = IncomingMessage(tmp_path, "Q1", spill_at=100)
    m.write(b"a\nb\n")
    body = m.finish()
    assert body.data == b"a\nb\n" and (body.size, body.lines) == (4, 2)
    assert files(tmp_path) == []


def test_large_message_streams_to_a_file(tmp_path: Path) -> None:
    m = IncomingMessage(tmp_path, "Q1", spill_at=100)
    for _ in range(50):
        m.write(b"0123456789\n")
    body = m.finish()
    assert body.data is None
    assert Path(body.path).read_bytes() == b"0123456789\n" * 50
    assert (body.size, body.lines) == (550, 50)


def test_discard_leaves_nothing(tmp_path: Path) -> None:
    for n in (10, 1000):
        m = IncomingMessage(tmp_path, f"Q{n}", spill_at=100)
        m.write(b"x" * n + b"\n")
        m.discard()
    assert files(tmp_path) == []


def test_spill_failure_raises_and_discard_is_quiet(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.write_text("not a folder")
    m = IncomingMessage(folder, "Q1", spill_at=10)
    m.write(b"short\n")
    with pytest.raises(OSError):
        m.write(b"this pushes it over the limit\n")
    assert not m.on_disk
    m.discard()  # no error: there is nothing on disk to remove


def test_clean_incoming_removes_leftovers(tmp_path: Path) -> None:
    inc = tmp_path / "incoming"
    inc.mkdir()
    (inc / "A").write_bytes(b"partial")
    (inc / "B").write_bytes(b"partial")
    assert clean_incoming(inc) == 2
    assert files(inc) == []


def test_clean_tmp_removes_only_abandoned_files(tmp_path: Path) -> None:
    import time as _time

    from mailsuite.store.maildir import clean_tmp, ensure_account

    root = ensure_account(tmp_path, "alice@example.test")
    old_inbox = root / "tmp" / "old"
    old_sent = root / ".Sent" / "tmp" / "old"
    fresh = root / "tmp" / "fresh"
    for p in (old_inbox, old_sent, fresh):
        p.write_bytes(b"partial")
    long_ago = _time.time() - 40 * 3600
    for p in (old_inbox, old_sent):
        os.utime(p, (long_ago, long_ago))
    assert clean_tmp(tmp_path) == 2
    assert not old_inbox.exists() and not old_sent.exists()
    assert fresh.exists()


def test_a_repeated_stable_delivery_after_a_crash_keeps_one_copy(tmp_path: Path) -> None:
    from mailsuite.store.maildir import deliver_copies
    from mailsuite.store.names import stable_name

    body = BodyFile("", 6, 1, data=b"hello\n")
    base = stable_name(1_700_000_000.5, "ABC123")
    first = deliver_copies(tmp_path, {"alice@example.test": b"X: 1\n"}, body, base)
    # The queue crashed before recording the result; the spool's retry looks first.
    again = deliver_copies(tmp_path, {"alice@example.test": b"X: 1\n"}, body, base, check_existing=True)
    assert again == first
    inbox = tmp_path / "example.test" / "alice"
    assert len(os.listdir(inbox / "new")) == 1 and os.listdir(inbox / "tmp") == []


def test_a_stable_delivery_overwrites_its_own_abandoned_tmp_file(tmp_path: Path) -> None:
    from mailsuite.store.maildir import deliver_copies, ensure_account
    from mailsuite.store.names import stable_name

    base = stable_name(1_700_000_000, "DEF456")
    root = ensure_account(tmp_path, "alice@example.test")
    (root / "tmp" / base).write_bytes(b"half a mess")
    deliver_copies(tmp_path, {"alice@example.test": b""}, BodyFile("", 3, 1, data=b"ok\n"), base, check_existing=True)
    (name,) = os.listdir(root / "new")
    assert (root / "new" / name).read_bytes() == b"ok\n"
