"""The store's Folder: UIDs, flags in file names, keywords, expunge, append, copy/move,
index, and agreement between two Folder objects (two processes) on one Maildir."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailsuite.store import names
from mailsuite.store.errors import MessageGone, TooManyKeywords
from mailsuite.store.folder import FolderDisk
from mailsuite.store.maildir import account_dir
from mailsuite.store.mailstore import MaildirStore
from tests.support.store import ACCOUNT, HeldWorkers, SlowSyncWorkers, deliver, resolve, same_store

MSG = b"From: a@b.test\nSubject: hi\n\nhello\n"


def open_inbox(store: MaildirStore):  # type: ignore[no-untyped-def]
    return resolve(store.open_folder(ACCOUNT, "INBOX"))


def inbox_dir(store: MaildirStore) -> Path:
    return account_dir(store.mail_dir, ACCOUNT)


def test_delivered_messages_get_ascending_uids_and_move_to_cur(store: MaildirStore) -> None:
    for _ in range(3):
        deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    assert [r.uid for r in folder.messages()] == [1, 2, 3]
    assert folder.uidnext == 4
    assert os.listdir(inbox_dir(store) / "new") == []
    assert all(":2," in n for n in os.listdir(inbox_dir(store) / "cur"))


def test_size_is_crlf_octets_from_the_file_name(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    (rec,) = open_inbox(store).messages()
    assert rec.size == len(MSG.replace(b"\n", b"\r\n"))


def test_size_is_computed_for_a_file_without_w_in_its_name(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    new = inbox_dir(store) / "new"
    (name,) = os.listdir(new)
    os.rename(new / name, new / names.base_name(name))
    (rec,) = open_inbox(store).messages()
    assert rec.size == len(MSG.replace(b"\n", b"\r\n"))


def test_uids_survive_a_restart(store: MaildirStore, tmp_path: Path) -> None:
    for _ in range(3):
        deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    before = [(r.uid, r.base) for r in folder.messages()]
    validity = folder.uidvalidity
    resolve(folder.close())
    again = resolve(same_store(store).open_folder(ACCOUNT, "INBOX"))
    assert [(r.uid, r.base) for r in again.messages()] == before
    assert again.uidvalidity == validity


def test_uids_survive_a_restart_without_an_index(store: MaildirStore) -> None:
    for _ in range(3):
        deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    resolve(folder.expunge([1]))
    resolve(folder.close())
    (inbox_dir(store) / "mailsuite-index").unlink()
    deliver(store.mail_dir, MSG)
    again = resolve(same_store(store).open_folder(ACCOUNT, "INBOX"))
    assert [r.uid for r in again.messages()] == [2, 3, 4]


def test_expunged_uid_is_never_reused(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    assert resolve(folder.expunge([2])) == [2]
    resolve(folder.close())
    deliver(store.mail_dir, MSG)
    again = resolve(same_store(store).open_folder(ACCOUNT, "INBOX"))
    assert [r.uid for r in again.messages()] == [1, 3]


def test_flags_live_in_the_file_name(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    (rec,) = resolve(folder.store_flags([1], ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Forwarded"], "+"))
    assert rec.filename.endswith(":2,DFPRST")
    assert os.listdir(inbox_dir(store) / "cur") == [rec.filename]
    (rec,) = resolve(folder.store_flags([1], ["\\Seen"], "="))
    assert rec.filename.endswith(":2,S") and rec.flags == {"\\Seen"}
    (rec,) = resolve(folder.store_flags([1], ["\\Seen"], "-"))
    assert rec.filename.endswith(":2,") and rec.flags == frozenset()


def test_flag_change_keeps_the_uid_and_bumps_modseq(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    before = folder.get(1)
    (rec,) = resolve(folder.store_flags([1], ["\\Seen"], "+"))
    assert rec.uid == 1 and rec.modseq > before.modseq
    assert folder.highest_modseq == rec.modseq


def test_storing_flags_a_message_already_has_changes_nothing(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    resolve(folder.store_flags([1], ["\\Seen"], "+"))
    assert resolve(folder.store_flags([1], ["\\Seen"], "+")) == []


def test_keywords_map_to_letters_through_the_keywords_file(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    (rec,) = resolve(folder.store_flags([1], ["Work", "$Junk"], "+"))
    assert rec.flags == {"Work", "$Junk"}
    text = (inbox_dir(store) / "dovecot-keywords").read_text()
    assert text == "0 $Junk\n1 Work\n"
    assert rec.filename.endswith(":2,ab")
    assert sorted(folder.keywords()) == ["$Junk", "Work"]


def test_keywords_compare_case_insensitively(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    resolve(folder.store_flags([1], ["Work"], "+"))
    (rec,) = resolve(folder.store_flags([1], ["WORK"], "-"))
    assert rec.flags == frozenset()


def test_a_27th_keyword_is_refused(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    resolve(folder.store_flags([1], [f"k{i}" for i in range(26)], "+"))
    assert not folder.can_add_keywords()
    with pytest.raises(TooManyKeywords):
        resolve(folder.store_flags([1], ["one-too-many"], "+"))


def test_flag_change_by_another_tool_is_seen_at_sync(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    cur = inbox_dir(store) / "cur"
    (name,) = os.listdir(cur)
    os.rename(cur / name, cur / names.with_flags(name, "FS"))
    changes = resolve(folder.sync())
    assert changes.flags == [1]
    assert folder.get(1).flags == {"\\Seen", "\\Flagged"}


def test_store_flags_survives_a_rename_by_another_tool(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    cur = inbox_dir(store) / "cur"
    (name,) = os.listdir(cur)
    os.rename(cur / name, cur / names.with_flags(name, "F"))
    (rec,) = resolve(folder.store_flags([1], ["\\Seen"], "+"))
    assert rec.flags == {"\\Seen", "\\Flagged"}
    assert os.listdir(cur) == [rec.filename]


def test_file_removed_by_another_tool_is_an_expunge_at_sync(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    (inbox_dir(store) / "cur" / folder.get(1).filename).unlink()
    assert resolve(folder.sync()).expunged == [1]
    assert [r.uid for r in folder.messages()] == [2]


def test_sync_is_cheap_when_nothing_changed(store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    resolve(folder.sync())  # sees its own move from new/ to cur/
    folder._disk.dirty = False  # as if 1 s had passed (the same-tick window)
    calls = []
    monkeypatch.setattr(os, "listdir", lambda *a: calls.append(a) or [])
    assert not resolve(folder.sync())
    assert calls == []


def test_sync_within_the_same_clock_tick_rescans(store: MaildirStore) -> None:
    folder = open_inbox(store)
    deliver(store.mail_dir, MSG)
    # The listing at open was taken less than 1 s after the mtime: not trusted.
    assert folder._disk.needs_scan()
    assert resolve(folder.sync()).added == [1]


def test_a_listing_is_not_trusted_for_a_stall_between_the_stats_and_the_clock(
        store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same-tick window measures how old the mtimes were when they were seen: a
    worker thread that stalls 2 s after its stats (GIL, a loaded machine) must not
    take a just-changed directory for quiet, or a change in the same clock tick on a
    coarse-clock file system would stay hidden (issue 16)."""
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    disk = folder._disk
    real_stat, real_time_ns = os.stat, time.time_ns
    stalled = [False]

    def stat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        st = real_stat(path, *args, **kwargs)
        if str(path) == str(disk.cur):
            stalled[0] = True
        return st

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() + (2_000_000_000 if stalled[0] else 0))
    disk.scan()  # the directories changed well within the last second (the delivery)
    assert disk.recheck_ns and folder._disk.needs_scan()


def test_delivery_notice_syncs_and_calls_listeners(store: MaildirStore) -> None:
    folder = open_inbox(store)
    seen = []
    folder.add_listener(lambda f: seen.append([r.uid for r in f.messages()]))
    deliver(store.mail_dir, MSG)
    store.hub.changed(ACCOUNT, "INBOX")
    assert seen == [[1]]
    resolve(folder.close())


def test_new_messages_are_recent_for_one_claimer(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    assert folder.claim_recent() == {1}
    assert folder.claim_recent() == set()


def test_a_folder_nobody_claims_recent_from_forgets_expunged_messages(store: MaildirStore) -> None:
    """A POP3 maildrop: messages arrive and are deleted, no read-write SELECT ever
    claims \\Recent.  What the folder keeps for them must go with them (issue 16: the
    soak's workers kept every UID that had ever arrived)."""
    folder = open_inbox(store)
    for _ in range(5):
        for _ in range(20):
            deliver(store.mail_dir, MSG)
        resolve(folder.sync())
        resolve(folder.expunge([r.uid for r in folder.messages()][:-2]))
    assert len(folder.messages()) == 2
    assert folder.recent_count() == 2
    assert len(folder._unclaimed) <= 2
    assert folder.claim_recent(readonly=True) == {r.uid for r in folder.messages()}


def test_append_is_stored_with_lf_flags_and_date(store: MaildirStore) -> None:
    folder = open_inbox(store)
    uid = resolve(folder.append(b"Subject: x\r\n\r\nbody\r\n", ["\\Seen"], 1_000_000_000.0))
    rec = folder.get(uid)
    assert uid == 1 and rec.flags == {"\\Seen"} and rec.internaldate == 1_000_000_000.0
    assert rec.size == len(b"Subject: x\r\n\r\nbody\r\n")
    with folder.open_message(uid) as f:
        assert f.read() == b"Subject: x\n\nbody\n"
    assert os.listdir(inbox_dir(store) / "tmp") == []


def test_append_from_a_file_streams_and_counts_crlf(store: MaildirStore, tmp_path: Path) -> None:
    data = (b"line\r\n" * 30000) + b"bare\nend\r"
    src = tmp_path / "literal"
    src.write_bytes(data)
    folder = open_inbox(store)
    uid = resolve(folder.append(src, [], None))
    with folder.open_message(uid) as f:
        stored = f.read()
    assert stored == data.replace(b"\r\n", b"\n")
    assert folder.get(uid).size == len(data) + 1  # the bare LF goes out as CRLF


def test_append_is_fsynced_before_the_uid_is_given(store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = open_inbox(store)
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    resolve(folder.append(b"x\r\n", [], None))
    assert len(synced) >= 3  # message file, cur/ directory, uidlist


def test_copy_keeps_flags_and_gives_new_uids(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    deliver(store.mail_dir, MSG)
    inbox = open_inbox(store)
    resolve(inbox.store_flags([2], ["\\Flagged", "Work"], "+"))
    trash = resolve(store.open_folder(ACCOUNT, "Trash"))
    assert resolve(inbox.copy([2, 1, 99], trash)) == [(2, 1), (1, 2)]
    assert trash.get(1).flags == {"\\Flagged", "Work"}
    assert [r.uid for r in inbox.messages()] == [1, 2]
    src = inbox.message_path(2)
    assert os.stat(src).st_ino == os.stat(trash.message_path(1)).st_ino  # hard link


def test_move_expunges_the_source(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    inbox = open_inbox(store)
    archive = resolve(store.open_folder(ACCOUNT, "Archive"))
    assert resolve(inbox.move([1], archive)) == [(1, 1)]
    assert inbox.messages() == [] and [r.uid for r in archive.messages()] == [1]


def test_expunge_removes_file_and_is_durable(store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    assert resolve(folder.expunge([1, 5])) == [1]
    assert os.listdir(inbox_dir(store) / "cur") == [] and synced


def test_open_message_of_an_expunged_uid_raises_message_gone(store: MaildirStore) -> None:
    folder = open_inbox(store)
    with pytest.raises(MessageGone):
        folder.open_message(1)


def test_open_message_finds_a_file_renamed_by_another_tool(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    cur = inbox_dir(store) / "cur"
    (name,) = os.listdir(cur)
    os.rename(cur / name, cur / names.with_flags(name, "S"))
    with folder.open_message(1) as f:
        assert f.read() == MSG


def test_two_stores_agree_on_uids_flags_and_expunges(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    a = open_inbox(store)
    b = resolve(same_store(store).open_folder(ACCOUNT, "INBOX"))
    assert [r.uid for r in b.messages()] == [1]
    uid = resolve(a.append(b"x\r\n", [], None))
    deliver(store.mail_dir, MSG)
    b.mark_dirty()
    resolve(b.sync())
    a.mark_dirty()
    resolve(a.sync())
    assert [(r.uid, r.base) for r in a.messages()] == [(r.uid, r.base) for r in b.messages()] == [
        (r.uid, r.base) for r in a.messages()
    ]
    assert uid == 2 and [r.uid for r in a.messages()] == [1, 2, 3]
    resolve(b.store_flags([1], ["\\Seen"], "+"))
    resolve(b.expunge([2]))
    a.mark_dirty()
    changes = resolve(a.sync())
    assert changes.expunged == [2] and changes.flags == [1]


def _dirs_at(path: Path, seconds_ago: float) -> None:
    """Set new/ and cur/ mtimes in the past: the last change was long enough ago for a
    listing to be trusted (the same-tick window has passed)."""
    past = time.time_ns() - int(seconds_ago * 1e9)
    for sub in ("new", "cur"):
        os.utime(path / sub, ns=(past, past))


def test_sync_does_not_trust_a_listing_the_reactor_has_not_seen_yet(store: MaildirStore) -> None:
    """Issue 16 (POP3 "removed by another session" under two workers): process B's
    worker has listed the folder after process A's expunge, and the reactor has not
    yet run the callback that publishes that listing.  A session opening the folder
    in that moment must not take the old published list for current because the
    mtimes the worker just recorded match the disk."""
    for _ in range(3):
        deliver(store.mail_dir, MSG)
    path = inbox_dir(store)
    workers = HeldWorkers()
    from mailsuite.store.notify import ChangeHub

    b_store = MaildirStore(store.mail_dir, workers, ChangeHub(), store.reactor, linger=30)
    b = resolve(b_store.open_folder(ACCOUNT, "INBOX"))
    _dirs_at(path, 120)
    resolve(b.sync())
    assert [r.uid for r in b.messages()] == [1, 2, 3] and not b._disk.needs_scan()
    resolve(b.close())  # lingers, as a POP3 maildrop does between sessions
    a = open_inbox(store)  # process A: a POP3 session deletes everything and QUITs
    assert resolve(a.expunge([1, 2, 3])) == [1, 2, 3]
    _dirs_at(path, 60)  # a second later: B's next listing is trusted
    workers.holding = True
    b.sync()  # a sync of B's (a session's command): the scan runs, its result not yet in the reactor
    assert workers.held and b._disk.records == {}
    opened: list[list[int]] = []
    b_store.open_folder(ACCOUNT, "INBOX").addCallback(lambda f: opened.append([r.uid for r in f.messages()]))
    workers.release()
    assert opened == [[]]


def test_a_lingering_folder_is_not_synced_on_notice_but_when_opened_again(store: MaildirStore) -> None:
    """A folder nobody holds does not take the folder lock for each change another
    process makes (a STORE 1:* there made the lingering copy list and take in every
    rename under the lock); whoever opens it next syncs it first."""
    for _ in range(3):
        deliver(store.mail_dir, MSG)
    b_store = same_store(store)
    b = resolve(b_store.open_folder(ACCOUNT, "INBOX"))
    resolve(b.close())  # lingers
    a = open_inbox(store)
    assert resolve(a.expunge([1])) == [1]
    version = b._disk.version
    b.notified()
    assert b._disk.version == version and [r.uid for r in b.messages()] == [1, 2, 3]
    again = resolve(b_store.open_folder(ACCOUNT, "INBOX"))
    assert again is b and [r.uid for r in again.messages()] == [2, 3]
    resolve(a.expunge([2]))
    again.notified()  # held now: a notice syncs it at once
    assert [r.uid for r in again.messages()] == [3]


def test_cache_values_persist_with_the_index(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    folder.cache_put(1, "envelope", ["a", None, [1, 2]])
    resolve(folder.close())
    again = resolve(same_store(store).open_folder(ACCOUNT, "INBOX"))
    assert again.cache_get(1, "envelope") == ["a", None, [1, 2]]
    assert again.cache_get(1, "bodystructure") is None


def test_dovecot_uidlist_is_imported(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    new = inbox_dir(store) / "new"
    (name,) = os.listdir(new)
    base = names.base_name(name)
    (inbox_dir(store) / "dovecot-uidlist").write_text(f"3 V1234 N50 Gabc\n42 :{base}\n")
    folder = open_inbox(store)
    assert folder.uidvalidity == 1234 and folder.uidnext == 50
    assert [r.uid for r in folder.messages()] == [42]


def test_a_corrupt_uidlist_gets_a_new_uidvalidity(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    (inbox_dir(store) / "mailsuite-uidlist").write_text("mailsuite-uidlist 1 V1000 N7\n")
    folder = open_inbox(store)
    assert folder.uidvalidity == 1000
    old = folder.uidvalidity
    resolve(folder.close())
    (inbox_dir(store) / "mailsuite-uidlist").write_text("garbage")
    (inbox_dir(store) / "mailsuite-index").unlink()
    again = resolve(same_store(store).open_folder(ACCOUNT, "INBOX"))
    assert again.uidvalidity > old and [r.uid for r in again.messages()] == [1]


_WORKER = r"""
import sys
from pathlib import Path
from mailsuite.store.folder import FolderDisk
d = FolderDisk(Path(sys.argv[1]))
d.open()
for i in range(int(sys.argv[2])):
    d.append(b"Subject: %d\r\n\r\nx\r\n" % i, ["\\Seen"] if i % 2 else [], None)
    if i % 5 == 0:
        d.scan()
"""


def test_concurrent_processes_never_share_or_change_a_uid(store: MaildirStore, tmp_path: Path) -> None:
    for _ in range(5):
        deliver(store.mail_dir, MSG)
    path = inbox_dir(store)
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(path), "40"]) for _ in range(3)]
    for _ in range(20):
        deliver(store.mail_dir, MSG)
    assert all(p.wait(60) == 0 for p in procs)
    disk = FolderDisk(path)
    disk.open()
    disk.scan()
    uids = sorted(disk.records)
    assert len(uids) == 5 + 20 + 120 == len(set(uids))
    bases = [r.base for r in disk.records.values()]
    assert len(set(bases)) == len(bases)
    mapping = {}
    for line in (path / "mailsuite-uidlist").read_text().splitlines()[1:]:
        uid, base = line.split(" ", 1)
        assert mapping.setdefault(base, uid) == uid
    assert len(mapping) == len(bases)


def _old_dirs(path: Path) -> None:
    past = time.time() - 60
    for sub in ("new", "cur"):
        os.utime(path / sub, (past, past))


def test_indexed_folder_opens_without_listing_or_reading_messages(store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    path = inbox_dir(store)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(path / sub, exist_ok=True)
    for i in range(20000):
        (path / "cur" / f"{1700000000 + i}.M{i}P1Q{i}.host,S=10,W=11:2,S").write_bytes(b"x" * 10)
    _old_dirs(path)
    folder = open_inbox(store)
    resolve(folder.close())
    monkeypatch.setattr(os, "listdir", lambda *a: pytest.fail("listed a directory"))
    started = time.perf_counter()
    again = resolve(same_store(store).open_folder(ACCOUNT, "INBOX"))
    elapsed = time.perf_counter() - started
    assert len(again.messages()) == 20000 and again.get(20000).flags == {"\\Seen"}
    assert elapsed < 1.0  # ~0.04 s here; 100,000 messages take ~0.15-0.2 s


def test_stale_index_is_corrected_by_a_rescan(store: MaildirStore) -> None:
    for _ in range(3):
        deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    resolve(folder.close())
    path = inbox_dir(store)
    (path / "cur" / folder.get(2).filename).unlink()  # behind the index's back
    deliver(store.mail_dir, MSG)
    again = resolve(same_store(store).open_folder(ACCOUNT, "INBOX"))
    assert [r.uid for r in again.messages()] == [1, 3, 4]


def test_message_moved_back_to_new_keeps_its_uid(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    resolve(folder.close())
    again = resolve(same_store(store).open_folder(ACCOUNT, "INBOX"))
    path = inbox_dir(store)
    name = again.get(1).filename
    os.rename(path / "cur" / name, path / "new" / names.base_name(name))
    again.mark_dirty()
    changes = resolve(again.sync())
    assert [r.uid for r in again.messages()] == [1, 2] and not changes.added


def test_uidlist_is_compacted_when_mostly_expunged_and_keeps_uidnext(store: MaildirStore) -> None:
    path = inbox_dir(store)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(path / sub, exist_ok=True)
    for i in range(1100):
        (path / "new" / f"{1700000000 + i}.M{i}P1Q{i}.host,S=2,W=3").write_bytes(b"x\n")
    folder = open_inbox(store)
    assert folder.uidnext == 1101
    resolve(folder.expunge(range(1, 1100)))
    lines = (path / "mailsuite-uidlist").read_text().splitlines()
    assert "N1101" in lines[0].split() and lines[1:] == [f"1100 {folder.get(1100).base}"]
    deliver(store.mail_dir, MSG)
    folder.mark_dirty()
    assert resolve(folder.sync()).added == [1101]


@pytest.mark.parametrize("from_index", [False, True])
def test_a_torn_last_uidlist_line_is_repaired(store: MaildirStore, from_index: bool) -> None:
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    if from_index:  # the fast open path holds only part of the uidlist in memory
        resolve(folder.close())
        folder = resolve(same_store(store, linger=0).open_folder(ACCOUNT, "INBOX"))
    with open(inbox_dir(store) / "mailsuite-uidlist", "a") as f:
        f.write("7 half-writ")  # a writer died mid-append
    deliver(store.mail_dir, MSG)
    folder.mark_dirty()
    assert resolve(folder.sync()).added == [2]
    lines = (inbox_dir(store) / "mailsuite-uidlist").read_text().splitlines()
    assert [l.split()[0] for l in lines[1:]] == ["1", "2"]


def test_syncs_queued_behind_one_another_share_one_scan(store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = open_inbox(store)
    deliver(store.mail_dir, MSG)
    resolve(folder._lock.acquire())  # an operation in progress holds the folder
    scans = []
    real_scan = folder._disk.scan
    monkeypatch.setattr(folder._disk, "scan", lambda: scans.append(1) or real_scan())
    results = [folder.sync() for _ in range(5)]
    folder._lock.release()
    changes = [resolve(d) for d in results]
    assert len(scans) == 1 and all(c.added == [1] for c in changes)


def test_a_folder_deleted_and_created_again_elsewhere_is_a_new_folder_here(store: MaildirStore) -> None:
    """DELETE u; CREATE u by another process (or before our queued sync ran), with no
    inotify watch to tell us (out of watches): the next open finds the new folder, and
    APPEND works there; the old Folder object is gone (was: APPEND wrote through the
    old folder into a modseq log that no longer existed, NO [SERVERBUG])."""
    resolve(store.create_folder(ACCOUNT, "u"))
    a = resolve(store.open_folder(ACCOUNT, "u"))
    resolve(a.append(b"x\r\n", [], None))
    v1 = a.uidvalidity
    other = same_store(store)
    resolve(other.delete_folder(ACCOUNT, "u"))
    resolve(other.create_folder(ACCOUNT, "u"))
    a.mark_dirty()  # what a delivery notice, a poll or a DELETE in this process does
    b = resolve(store.open_folder(ACCOUNT, "u"))
    assert a.gone and not b.gone
    assert b.uidvalidity > v1
    assert resolve(b.append(b"y\r\n", [], None)) == 1
    assert [r.uid for r in b.messages()] == [1]


# -- what waits for the disk -----------------------------------------------------------------


def slow_disk_store(store: MaildirStore) -> tuple[MaildirStore, SlowSyncWorkers]:
    workers = SlowSyncWorkers()
    return MaildirStore(store.mail_dir, workers, store.hub, store.reactor, linger=0), workers


def test_an_expunge_is_durable_before_it_fires_but_does_not_hold_the_folder_meanwhile(store: MaildirStore) -> None:
    for _ in range(3):
        deliver(store.mail_dir, MSG)
    slow, workers = slow_disk_store(store)
    folder = open_inbox(slow)
    fired: list = []
    folder.expunge([1]).addCallback(fired.append)
    assert fired == [] and len(workers.syncs) == 1  # waiting for the fsync of cur/
    # Meanwhile the folder serves the next operation (it used to wait behind the fsync).
    (rec,) = resolve(folder.store_flags([2], ["\\Seen"], "+"))
    assert rec.uid == 2 and [r.uid for r in folder.messages()] == [2, 3]
    workers.finish_syncs()
    assert fired == [[1]]


def test_an_append_is_durable_before_it_fires_but_does_not_hold_the_folder_meanwhile(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    slow, workers = slow_disk_store(store)
    folder = open_inbox(slow)
    fired: list = []
    folder.append(b"Subject: new\r\n\r\nbody\r\n").addCallback(fired.append)
    assert fired == [] and len(workers.syncs) == 1
    # The uid list is already durable: the UID others may see is never given again.
    assert "2 " in (inbox_dir(store) / "mailsuite-uidlist").read_text()
    (rec,) = resolve(folder.store_flags([1], ["\\Seen"], "+"))  # the folder's queue is free
    assert rec.uid == 1
    workers.finish_syncs()
    assert fired == [2]


def _quiet_listing(store: MaildirStore, n: int = 3):  # type: ignore[no-untyped-def]
    """An open INBOX of ``n`` messages whose listing is trusted (the directories last
    changed long ago)."""
    for _ in range(n):
        deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    _dirs_at(inbox_dir(store), 120)
    folder.mark_dirty()
    resolve(folder.sync())
    assert not folder._disk.needs_scan()
    return folder


def _count_listdir(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = os.listdir

    def listdir(path):  # type: ignore[no-untyped-def]
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    return calls


def test_an_own_change_does_not_make_the_next_sync_list_the_folder(
        store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ten sessions on one folder: nearly every sync listed all of cur/ for changes the
    # process had made itself (184 listings in 1,000 commands, 2,000 messages).
    folder = _quiet_listing(store)
    listed = _count_listdir(monkeypatch)
    resolve(folder.store_flags([1], ["\\Seen"], "+"))
    assert not resolve(folder.sync())
    uid = resolve(folder.append(b"Subject: x\r\n\r\nx\r\n"))
    assert not resolve(folder.sync())
    assert resolve(folder.expunge([uid])) == [uid]
    assert not resolve(folder.sync())
    assert listed == []


def test_a_change_by_another_program_in_the_same_tick_as_an_own_change_is_found_when_the_window_ends(
        store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _quiet_listing(store)
    path = inbox_dir(store)
    seen: list[list[int]] = []
    folder.add_listener(lambda f: seen.append(sorted(r.uid for r in f.messages() if "\\Flagged" in r.flags)))
    resolve(folder.store_flags([1], ["\\Seen"], "+"))
    # Another MUA renames message 2 within the same clock tick: cur/'s mtime does not move.
    listed_at = os.stat(path / "cur").st_mtime_ns
    name = folder.get(2).filename
    os.rename(path / "cur" / name, path / "cur" / (name + "F"))
    os.utime(path / "cur", ns=(listed_at, listed_at))
    resolve(folder.sync())  # within the window it may not be seen yet (a listing a second later finds it)
    real_time_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() + 1_100_000_000)
    store.reactor.advance(1.1)  # the recheck a waiting (IDLE) session relies on
    assert seen[-1] == [2]


def test_another_processs_change_in_the_same_tick_is_seen_at_the_next_sync(
        store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 16's guard: another worker's expunge must show at once, not a second later;
    # it is in the modseq log even when cur/'s mtime did not move.
    folder = _quiet_listing(store)
    path = inbox_dir(store)
    resolve(folder.store_flags([1], ["\\Seen"], "+"))
    listed_at = os.stat(path / "cur").st_mtime_ns
    other = FolderDisk(path)
    other.open()
    assert other.expunge([2]) == [2]
    os.utime(path / "cur", ns=(listed_at, listed_at))
    assert resolve(folder.sync()).expunged == [2]


def _uidlist_fsyncs(monkeypatch: pytest.MonkeyPatch, events: list[str]) -> None:
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("mailsuite-uidlist"):
            events.append("uidlist fsync")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_operations_queued_behind_one_another_run_as_one_batch_with_one_uidlist_fsync(
        store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: what queued while the folder was busy runs in one trip to the pool
    under one hold of the lock; the new UIDs of every APPEND in it are fsynced once,
    before any of them answers; one failing operation fails alone."""
    deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    events: list[str] = []
    _uidlist_fsyncs(monkeypatch, events)
    changes: list[int] = []
    folder.add_listener(lambda f: changes.append(1))
    resolve(folder._lock.acquire())  # an operation in progress holds the folder
    appends = [folder.append(b"Subject: %d\r\n\r\nx\r\n" % i) for i in range(4)]
    for d in appends:
        d.addCallback(lambda uid: events.append(f"answer {uid}") or uid)
    flagged = folder.store_flags([1], ["\\Flagged"], "+")
    bad = folder.store_flags([1], ["\\Seen"], "?")  # not a mode: this one fails
    assert events == []
    folder._lock.release()
    assert [resolve(d) for d in appends] == [2, 3, 4, 5]
    assert events == ["uidlist fsync", "answer 2", "answer 3", "answer 4", "answer 5"]
    assert [r.uid for r in resolve(flagged)] == [1]
    with pytest.raises(ValueError):
        resolve(bad)
    assert len(changes) == 1  # listeners hear of the batch once
    assert [r.uid for r in folder.messages()] == [1, 2, 3, 4, 5]
    assert "\\Flagged" in folder.get(1).flags
    text = (inbox_dir(store) / "mailsuite-uidlist").read_text()
    assert all(f"\n{u} " in text for u in (2, 3, 4, 5))


def test_a_single_operation_still_fsyncs_its_uids_itself(store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = open_inbox(store)
    events: list[str] = []
    _uidlist_fsyncs(monkeypatch, events)
    assert resolve(folder.append(b"x\r\n")) == 1
    assert events == ["uidlist fsync"]


def test_a_batch_whose_uidlist_fsync_fails_answers_every_operation_with_the_error(
        store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = open_inbox(store)
    resolve(folder._lock.acquire())
    appends = [folder.append(b"Subject: %d\r\n\r\nx\r\n" % i) for i in range(2)]
    from mailsuite.store.uidlist import UidList

    def broken(self: UidList) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(UidList, "sync_deferred", broken)
    folder._lock.release()
    for d in appends:
        with pytest.raises(OSError):
            resolve(d)


def test_values_one_process_caches_reach_another_that_has_the_folder_open(
        store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers serving one folder: what one caches (an ENVELOPE) is in the file
    within a second, and the other reads it at its next miss instead of parsing the
    message again (a FETCH 1:* (ENVELOPE) of 10,000 messages: 900 ms -> 120 ms)."""
    from mailsuite.store import index as index_mod

    for _ in range(3):
        deliver(store.mail_dir, MSG)
    a = open_inbox(store)
    other = same_store(store)
    b = resolve(other.open_folder(ACCOUNT, "INBOX"))
    assert b.cache_get(1, "ENVELOPE") is None  # b has read the (empty) cache file
    a.cache_put(1, "ENVELOPE", "(a's envelope)")
    a.cache_put(2, "ENVELOPE", "(another)")
    store.reactor.advance(1.0)  # the flush a cache_put schedules
    monkeypatch.setattr(index_mod, "TAIL_EVERY", 0.0)  # (b looks at most every 0.5 s)
    assert b.cache_get(1, "ENVELOPE") == "(a's envelope)"
    assert b.cache_get(2, "ENVELOPE") == "(another)"
    # b's own values go the other way.
    b.cache_put(3, "ENVELOPE", "(b's)")
    other.reactor.advance(1.0)
    assert a.cache_get(3, "ENVELOPE") == "(b's)"


def test_flushes_of_two_processes_append_and_keep_both_sets_of_values(store: MaildirStore) -> None:
    """Each flush appends (one write() on an O_APPEND descriptor, so one process's
    batch stays whole lines): 2000 values from each of two writers all read back."""
    from mailsuite.store.index import Cache

    folder = open_inbox(store)
    path = inbox_dir(store)
    one, two = Cache(path, folder.uidvalidity), Cache(path, folder.uidvalidity)
    one.load()
    two.load()
    for uid in range(1, 2001):
        one.put(uid, "K", "x" * 50)
        two.put(uid, "L", "y" * 50)
    one.flush()
    two.flush()
    again = Cache(path, folder.uidvalidity)
    again.load()
    assert again.values is not None
    assert sum(1 for k in again.values if k[1] == "K") == sum(1 for k in again.values if k[1] == "L") == 2000
