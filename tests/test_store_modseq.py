"""Durable, monotonic modseqs (RFC 7162 needs them): the modseq log ``mailsuite-modseq``.

HIGHESTMODSEQ never goes back for one UIDVALIDITY: not when the index is deleted, not
across restarts; two processes (two ``FolderDisk`` objects on one Maildir) number every
change alike, changes by another program get one modseq that all agree on, and
expunges are remembered for QRESYNC's VANISHED (EARLIER).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mailsuite.store import index as index_mod, modseq as modseq_mod
from mailsuite.store.folder import FolderDisk
from mailsuite.store.maildir import account_dir
from mailsuite.store.mailstore import MaildirStore
from mailsuite.store.modseq import MODLOG, parse_uid_set, uid_set
from tests.support.store import ACCOUNT, deliver

MSG = b"From: a@b.test\nSubject: hi\n\nhello\n"


def inbox(store: MaildirStore, n: int = 3) -> Path:
    for _ in range(n):
        deliver(store.mail_dir, MSG)
    return account_dir(store.mail_dir, ACCOUNT)


def opened(path: Path) -> FolderDisk:
    disk = FolderDisk(path)
    disk.open()
    return disk


def test_uid_sets_round_trip() -> None:
    assert uid_set([7, 1, 2, 3, 3, 9, 10]) == "1:3,7,9:10"
    assert parse_uid_set("1:3,7,9:10") == [1, 2, 3, 7, 9, 10]
    assert uid_set([]) == ""


def test_every_change_gets_a_higher_modseq_and_is_logged(store: MaildirStore) -> None:
    disk = opened(inbox(store))
    start = disk.highest_modseq
    (rec,) = disk.store_flags([2], ["\\Seen"], "+")
    assert rec.modseq == disk.highest_modseq > start
    disk.expunge([3])
    assert disk.highest_modseq == rec.modseq + 1
    uid = disk.append(b"x\r\n", [], None)
    assert disk.records[uid].modseq == disk.highest_modseq == rec.modseq + 2
    log = (disk.path / MODLOG).read_text().splitlines()
    assert log[-3:] == [f"{rec.modseq} =S 2", f"{rec.modseq + 1} - 3", f"{rec.modseq + 2} = {uid}"]


def test_deleting_the_index_does_not_take_highestmodseq_back(store: MaildirStore) -> None:
    path = inbox(store)
    disk = opened(path)
    for i in range(5):
        disk.store_flags([1], ["\\Flagged"], "+" if i % 2 == 0 else "-")
    disk.store_flags([2], ["\\Seen"], "+")
    disk.save_index()
    highest, modseqs = disk.highest_modseq, {u: r.modseq for u, r in disk.records.items()}
    os.unlink(path / index_mod.INDEX)
    again = opened(path)
    assert again.uidlist.uidvalidity == disk.uidlist.uidvalidity
    assert again.highest_modseq >= highest
    # Each message keeps the modseq of its last change: a client's CHANGEDSINCE sees
    # nothing changed that did not change.
    assert {u: r.modseq for u, r in again.records.items()} == modseqs
    (rec,) = again.store_flags([3], ["\\Answered"], "+")
    assert rec.modseq > highest


def test_a_rebuilt_index_without_log_lines_gives_modseqs_above_the_old_highest(store: MaildirStore) -> None:
    # A folder from before the log: its messages have no lines.  The index's
    # HIGHESTMODSEQ seeds the log, and messages found by a rebuild come above it.
    path = inbox(store)
    disk = opened(path)
    disk.store_flags([1], ["\\Seen"], "+")
    disk.save_index()
    highest = disk.highest_modseq
    (path / MODLOG).write_text(f"mailsuite-modseq 1 V{disk.uidlist.uidvalidity} F{highest}\n")
    os.unlink(path / index_mod.INDEX)
    again = opened(path)
    assert again.highest_modseq > highest
    assert all(r.modseq > highest for r in again.records.values())


def test_a_lost_log_starts_a_new_uidvalidity(store: MaildirStore) -> None:
    path = inbox(store)
    disk = opened(path)
    disk.store_flags([1], ["\\Seen"], "+")
    disk.save_index()
    os.unlink(path / MODLOG)
    again = opened(path)
    assert again.uidlist.uidvalidity > disk.uidlist.uidvalidity
    assert len(again.records) == 3


def test_a_folder_from_before_the_log_keeps_its_uidvalidity(store: MaildirStore) -> None:
    path = inbox(store)
    disk = opened(path)
    os.unlink(path / MODLOG)
    uidlist = path / "mailsuite-uidlist"
    uidlist.write_text(uidlist.read_text().replace(" M1\n", "\n", 1))
    again = opened(path)
    assert again.uidlist.uidvalidity == disk.uidlist.uidvalidity
    assert "M1" in uidlist.read_text().splitlines()[0].split()


def test_two_processes_agree_on_modseqs(store: MaildirStore) -> None:
    path = inbox(store)
    a, b = opened(path), opened(path)
    (rec,) = a.store_flags([1], ["\\Seen"], "+")
    changes = b.scan()
    assert changes.flags == [1]
    assert b.records[1].modseq == rec.modseq and b.highest_modseq == a.highest_modseq
    # b's own change comes after a's, whatever b had seen.
    (rec_b,) = b.store_flags([2], ["\\Flagged"], "+")
    assert rec_b.modseq == rec.modseq + 1
    a.scan()
    assert a.records[2].modseq == rec_b.modseq and a.highest_modseq == b.highest_modseq


def test_a_change_logged_by_another_process_is_seen_before_an_own_change(store: MaildirStore) -> None:
    # b has not listed the folder since a's change; its own STORE must not publish a
    # HIGHESTMODSEQ above a change it does not show.
    path = inbox(store)
    a, b = opened(path), opened(path)
    (ra,) = a.store_flags([1], ["\\Seen"], "+")
    (rb,) = b.store_flags([2], ["\\Seen"], "+")
    assert b.records[1].modseq == ra.modseq and "\\Seen" in b.records[1].flags
    assert rb.modseq == b.highest_modseq == ra.modseq + 1


def test_another_programs_change_gets_one_modseq_that_both_processes_share(store: MaildirStore) -> None:
    path = inbox(store)
    a, b = opened(path), opened(path)
    before = a.highest_modseq
    old = a.records[1].filename
    os.rename(path / "cur" / old, path / "cur" / (old.partition(":2,")[0] + ":2,FS"))  # like mutt
    os.unlink(path / "cur" / a.records[3].filename)  # like a Dovecot expunge
    a.scan()
    b.scan()
    assert a.records[1].modseq == b.records[1].modseq == before + 1
    assert 3 not in a.records and 3 not in b.records
    assert a.highest_modseq == b.highest_modseq == before + 1
    assert a.modlog.expunged_since(before) == ({3}, True)


def test_expunges_are_remembered_for_vanished_earlier(store: MaildirStore) -> None:
    disk = opened(inbox(store, 5))
    mark = disk.highest_modseq
    disk.expunge([2])
    later = disk.highest_modseq
    disk.expunge([4, 5])
    assert disk.modlog.expunged_since(mark) == ({2, 4, 5}, True)
    assert disk.modlog.expunged_since(later) == ({4, 5}, True)


def test_compaction_keeps_highestmodseq_latest_modseqs_and_bounds_expunges(store: MaildirStore, monkeypatch) -> None:
    monkeypatch.setattr(modseq_mod, "_COMPACT_MIN_LINES", 20)
    monkeypatch.setattr(modseq_mod, "KEEP_EXPUNGED", 3)
    path = inbox(store, 10)
    disk = opened(path)
    for i in range(30):
        disk.store_flags([1 + i % 4], ["\\Seen"], "+" if i % 8 < 4 else "-")
    disk.expunge([6])
    disk.expunge([7, 8, 9])
    with disk.locked():
        disk.modlog.compact()
    modseqs = {u: r.modseq for u, r in disk.records.items()}
    highest = disk.highest_modseq
    lines = (path / MODLOG).read_text().splitlines()
    assert len(lines) < 15
    floor = int(lines[0].split()[3][1:])
    gone, complete = disk.modlog.expunged_since(floor)
    assert gone == {7, 8, 9} and complete and floor >= modseqs[10]
    assert disk.modlog.expunged_since(floor - 1)[1] is False
    os.unlink(path / index_mod.INDEX) if (path / index_mod.INDEX).exists() else None
    again = opened(path)
    assert again.highest_modseq == highest
    assert {u: r.modseq for u, r in again.records.items() if r.modseq > floor} == \
        {u: m for u, m in modseqs.items() if m > floor}


def test_a_second_process_changing_flags_is_seen_with_a_higher_modseq(store: MaildirStore) -> None:
    # A real second process (its own pid and flock), as a second worker would be.
    path = inbox(store)
    here = opened(path)
    before = here.highest_modseq
    code = ("import sys; from pathlib import Path; from mailsuite.store.folder import FolderDisk\n"
            "d = FolderDisk(Path(sys.argv[1])); d.open(); (r,) = d.store_flags([2], ['$Work'], '+'); print(r.modseq)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True)
    theirs = int(out.stdout.strip())
    assert theirs > before
    assert here.scan().flags == [2]
    assert here.records[2].modseq == theirs == here.highest_modseq
    assert "$Work" in here.records[2].flags


# -- modseqs reserved durably, lines not fsynced one by one --------------------------------


def count_fsyncs(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = modseq_mod.fsutil.fsync_fd

    def counted(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(modseq_mod.fsutil, "fsync_fd", counted)
    return calls


def test_flag_changes_and_expunges_do_not_each_wait_for_an_fsync_of_the_log(store: MaildirStore, monkeypatch) -> None:
    disk = opened(inbox(store, 5))
    disk.store_flags([1], ["\\Seen"], "+")  # the first change reserves modseqs (fsynced)
    calls = count_fsyncs(monkeypatch)
    for i in range(20):
        disk.store_flags([2], ["\\Flagged"], "+" if i % 2 == 0 else "-")
    disk.expunge([3])
    assert calls == []
    assert disk.highest_modseq <= disk.modlog.reserved


def test_running_past_the_reservation_fsyncs_a_new_one(store: MaildirStore, monkeypatch) -> None:
    monkeypatch.setattr(modseq_mod, "RESERVE", 3)
    disk = opened(inbox(store))
    calls = count_fsyncs(monkeypatch)
    for i in range(10):
        disk.store_flags([1], ["\\Seen"], "+" if i % 2 == 0 else "-")
        assert disk.highest_modseq <= disk.modlog.reserved
    assert 2 <= len(calls) <= 4
    reservations = [line for line in (disk.path / MODLOG).read_text().splitlines() if " ! " in line]
    assert reservations[-1].split()[2] == str(disk.modlog.reserved)


def test_without_a_boot_id_every_change_is_fsynced(store: MaildirStore, monkeypatch) -> None:
    monkeypatch.setattr(modseq_mod, "_boot_id", "")
    disk = opened(inbox(store))
    calls = count_fsyncs(monkeypatch)
    for i in range(4):
        disk.store_flags([1], ["\\Seen"], "+" if i % 2 == 0 else "-")
    assert len(calls) == 4
    assert " ! " not in (disk.path / MODLOG).read_text()


def power_loss(path: Path, durable: bytes, monkeypatch) -> None:
    """What a crash of the machine may leave: the log as its last fsync made it (the
    lines after it lost), and a new boot."""
    (path / MODLOG).write_bytes(durable)
    monkeypatch.setattr(modseq_mod, "_boot_id", "another-boot")


def test_after_a_machine_crash_modseqs_never_go_back_nor_are_given_twice(store: MaildirStore, monkeypatch) -> None:
    path = inbox(store)
    disk = opened(path)
    disk.store_flags([1], ["\\Seen"], "+")  # reserves (fsynced): what survives a crash
    durable = (path / MODLOG).read_bytes()
    given = set()
    for i in range(6):
        (rec,) = disk.store_flags([2], ["\\Flagged"], "+" if i % 2 == 0 else "-")
        given.add(rec.modseq)
    shown = disk.highest_modseq
    disk.save_index()
    power_loss(path, durable, monkeypatch)
    a, b = opened(path), opened(path)  # two processes of the new boot agree
    assert a.highest_modseq == b.highest_modseq >= shown
    (rec,) = a.store_flags([3], ["\\Answered"], "+")
    assert rec.modseq > shown and rec.modseq not in given
    b.scan()
    assert b.records[3].modseq == rec.modseq == b.highest_modseq
    # The jump is made once: a later open in the same boot does not move it again.
    assert opened(path).highest_modseq == rec.modseq


def test_a_crash_before_the_index_was_read_fast_also_jumps(store: MaildirStore, monkeypatch) -> None:
    # The index remembers how far the log was read; after a crash that kept every
    # line (same size), the fast open must still take the reservation as highest.
    path = inbox(store)
    disk = opened(path)
    disk.store_flags([1], ["\\Seen"], "+")
    disk.store_flags([2], ["\\Seen"], "+")
    disk.save_index()
    shown = disk.highest_modseq
    power_loss(path, (path / MODLOG).read_bytes(), monkeypatch)
    again = opened(path)
    assert again.highest_modseq >= disk.modlog.reserved > shown
    (rec,) = again.store_flags([3], ["\\Seen"], "+")
    assert rec.modseq > disk.modlog.reserved


def test_compaction_keeps_the_reservation(store: MaildirStore, monkeypatch) -> None:
    path = inbox(store, 4)
    disk = opened(path)
    for i in range(5):
        disk.store_flags([1], ["\\Seen"], "+" if i % 2 == 0 else "-")
    reserved, highest = disk.modlog.reserved, disk.highest_modseq
    with disk.locked():
        disk.modlog.compact()
    lines = (path / MODLOG).read_text().splitlines()
    assert lines[1] == f"{highest} ! {reserved} {modseq_mod.boot_id()}"
    power_loss(path, (path / MODLOG).read_bytes(), monkeypatch)
    os.unlink(path / index_mod.INDEX) if (path / index_mod.INDEX).exists() else None
    assert opened(path).highest_modseq >= reserved


def count_listings(disk: FolderDisk, monkeypatch) -> list[int]:
    calls: list[int] = []
    real = disk._scan

    def counted():  # type: ignore[no-untyped-def]
        calls.append(1)
        return real()

    monkeypatch.setattr(disk, "_scan", counted)
    return calls


def test_another_processs_flag_changes_and_expunges_are_taken_from_the_log_without_a_listing(
        store: MaildirStore, monkeypatch) -> None:
    path = inbox(store, 5)
    a, b = opened(path), opened(path)
    (r1,) = a.store_flags([1], ["\\Seen", "$Work"], "+")
    a.expunge([2])
    (r3,) = a.store_flags([3], ["\\Flagged"], "+")
    listed = count_listings(b, monkeypatch)
    (own,) = b.store_flags([4], ["\\Answered"], "+")
    assert listed == []
    assert sorted(b.records) == [1, 3, 4, 5]
    assert (b.records[1].filename, b.records[1].flags, b.records[1].modseq) == \
        (a.records[1].filename, frozenset({"\\Seen", "$Work"}), r1.modseq)
    assert b.records[3].modseq == r3.modseq and own.modseq == r3.modseq + 1 == b.highest_modseq
    assert (path / "cur" / b.records[1].filename).exists()


def test_another_processs_arrival_still_lists_the_folder(store: MaildirStore, monkeypatch) -> None:
    path = inbox(store)
    a, b = opened(path), opened(path)
    uid = a.append(b"Subject: x\r\n\r\nx\r\n", [], None)
    listed = count_listings(b, monkeypatch)
    b.store_flags([1], ["\\Seen"], "+")
    assert listed == [1] and uid in b.records


def test_a_flag_change_the_log_names_wrongly_falls_back_to_a_listing(store: MaildirStore, monkeypatch) -> None:
    # Another program renamed the file after the line was written: the stat misses,
    # and the listing finds it.
    path = inbox(store)
    a, b = opened(path), opened(path)
    (rec,) = a.store_flags([1], ["\\Seen"], "+")
    os.rename(path / "cur" / rec.filename, path / "cur" / rec.filename.replace(":2,S", ":2,FS"))
    listed = count_listings(b, monkeypatch)
    b.store_flags([2], ["\\Seen"], "+")
    assert listed == [1] and b.records[1].flags == frozenset({"\\Seen", "\\Flagged"})


def count_calls(monkeypatch, module, name: str) -> list[str]:
    calls: list[str] = []
    real = getattr(module, name)

    def counted(*args):  # type: ignore[no-untyped-def]
        calls.append(str(args[0]))
        return real(*args)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_another_processs_change_to_most_of_the_folder_is_checked_with_one_listing(
        store: MaildirStore, monkeypatch) -> None:
    # STORE 1:* by another process: one listing of cur/ costs less than a stat per
    # message (0.59 against 2.7 us a name, 10,000 messages), and less than a scan.
    path = inbox(store, 100)
    a, b = opened(path), opened(path)
    a.store_flags(list(range(2, 101)), ["\\Flagged"], "+")
    listed = count_listings(b, monkeypatch)
    stats = count_calls(monkeypatch, os.path, "exists")
    listdirs = count_calls(monkeypatch, os, "listdir")
    b.store_flags([1], ["\\Seen"], "+")
    assert listed == [] and stats == [] and listdirs == [str(path / "cur")]
    assert all(b.records[u].filename == a.records[u].filename for u in range(2, 101))
    assert b.records[2].flags == frozenset({"\\Flagged"}) and b.records[1].flags == frozenset({"\\Seen"})


def test_a_few_changes_by_another_process_are_checked_with_a_stat_each(store: MaildirStore, monkeypatch) -> None:
    path = inbox(store, 100)
    a, b = opened(path), opened(path)
    a.store_flags([1, 2, 3], ["\\Flagged"], "+")
    stats = count_calls(monkeypatch, os.path, "exists")
    listdirs = count_calls(monkeypatch, os, "listdir")
    b.store_flags([4], ["\\Seen"], "+")
    assert len(stats) == 3 and listdirs == []
