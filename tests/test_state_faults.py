"""Corrupt or truncated state files (issue 16, faults of the machine): each is
recovered or set aside, no message is lost, and no surviving message's UID changes
when the information to keep it still exists."""

from __future__ import annotations

from pathlib import Path

from mailsuite.store.mailstore import MaildirStore
from tests.support.store import ACCOUNT, deliver, resolve, same_store
from tests.test_store_folder import MSG, inbox_dir, open_inbox


def three_messages(store: MaildirStore) -> tuple[int, list[int]]:
    for _ in range(3):
        deliver(store.mail_dir, MSG)
    folder = open_inbox(store)
    uids = [r.uid for r in folder.messages()]
    validity = folder.uidvalidity
    resolve(folder.close())
    return validity, uids


def reopen(store: MaildirStore):  # type: ignore[no-untyped-def]
    return resolve(same_store(store).open_folder(ACCOUNT, "INBOX"))


def test_a_uidlist_cut_mid_line_keeps_every_uid(store: MaildirStore) -> None:
    validity, uids = three_messages(store)
    path = inbox_dir(store) / "mailsuite-uidlist"
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # the last entry loses its tail and newline
    folder = reopen(store)
    assert folder.uidvalidity == validity
    assert [r.uid for r in folder.messages()] == uids


def test_garbage_index_and_cache_are_rebuilt_with_the_same_uids(store: MaildirStore) -> None:
    validity, uids = three_messages(store)
    for name in ("mailsuite-index", "mailsuite-cache"):
        p = inbox_dir(store) / name
        if p.exists():
            p.write_bytes(b"\x00garbage\xff" * 10)
    folder = reopen(store)
    assert folder.uidvalidity == validity and [r.uid for r in folder.messages()] == uids


def test_a_garbage_uidlist_with_its_index_intact_keeps_uidvalidity_and_uids(store: MaildirStore) -> None:
    validity, uids = three_messages(store)
    (inbox_dir(store) / "mailsuite-uidlist").write_bytes(b"\x00\x01 this is not a uid list\n")
    folder = reopen(store)
    assert (inbox_dir(store) / "mailsuite-uidlist.corrupt").exists()  # set aside, not lost
    assert folder.uidvalidity == validity
    assert [r.uid for r in folder.messages()] == uids
    # ... and a new message gets a new, larger UID.
    resolve(folder.close())
    deliver(store.mail_dir, MSG)
    folder = reopen(store)
    assert [r.uid for r in folder.messages()][:3] == uids and folder.messages()[-1].uid > max(uids)


def test_a_garbage_keywords_file_is_set_aside_and_no_message_is_lost(store: MaildirStore) -> None:
    validity, uids = three_messages(store)
    folder = open_inbox(store)
    resolve(folder.store_flags([uids[0]], ["$label1"], "+"))
    resolve(folder.close())
    kw = inbox_dir(store) / "dovecot-keywords"
    kw.write_bytes(b"\xff\xfe garbage without structure\n\x00\x00")
    folder = reopen(store)
    assert [r.uid for r in folder.messages()] == uids
    assert folder.uidvalidity == validity


def test_users_file_cut_mid_edit_keeps_the_last_good_accounts(tmp_path: Path) -> None:
    from twisted.cred.error import UnauthorizedLogin

    from mailsuite.directory.files import FileDirectory
    from mailsuite.directory.passwords import hash_password
    from mailsuite.workers import InlineWorkers  # password checks inline: Deferreds fire at once

    users = tmp_path / "users"
    aliases = tmp_path / "aliases"
    aliases.write_text("")
    users.write_text(f"alice@example.test:{hash_password('alice-pw')}\nbob@example.test:{hash_password('bob-pw')}\n")
    d = FileDirectory(users, aliases, ("example.test",), workers=InlineWorkers())
    assert resolve(d.authenticate("alice@example.test", "alice-pw")).name == "alice@example.test"
    users.write_text("alice@example.test:$2b$10$trunc")  # an editor died mid-write
    import os
    import time as _t

    os.utime(users, (_t.time() + 5, _t.time() + 5))
    # The half-written file does not lock everybody out: the last good version stays.
    account = resolve(d.authenticate("bob@example.test", "bob-pw"))
    assert account.name == "bob@example.test"
    try:
        resolve(d.authenticate("nobody@example.test", "x"))
    except UnauthorizedLogin:
        pass
