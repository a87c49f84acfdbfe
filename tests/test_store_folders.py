"""Folder tree of an account: names, modified UTF-7 on disk, create/delete/rename/list,
subscriptions, unsafe names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailsuite.store import folders
from mailsuite.store.errors import FolderExists, FolderHasChildren, NoSuchFolder, StoreError, UnsafeName
from mailsuite.store.maildir import account_dir
from mailsuite.store.mailstore import MaildirStore
from tests.support.store import ACCOUNT, deliver, resolve

MSG = b"Subject: x\n\nbody\n"


def root(store: MaildirStore) -> Path:
    return account_dir(store.mail_dir, ACCOUNT)


def names_of(store: MaildirStore) -> dict[str, folders.FolderInfo]:
    return {f.name: f for f in store.folder_names(ACCOUNT)}


def test_new_account_lists_inbox_and_special_folders(store: MaildirStore) -> None:
    resolve(store.ensure_account(ACCOUNT))
    infos = store.folder_names(ACCOUNT)
    assert [f.name for f in infos] == ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]
    assert {f.name: f.special_use for f in infos}["Sent"] == "\\Sent"


def test_create_writes_a_maildirplusplus_folder_in_modified_utf7(store: MaildirStore) -> None:
    resolve(store.ensure_account(ACCOUNT))
    assert resolve(store.create_folder(ACCOUNT, "Entwürfe.2024")) == "Entwürfe.2024"
    path = root(store) / ".Entw&APw-rfe.2024"
    assert (path / "cur").is_dir() and (path / "maildirfolder").exists()
    info = names_of(store)
    assert info["Entwürfe"].noselect and info["Entwürfe"].has_children
    assert not info["Entwürfe.2024"].noselect


def test_create_of_an_existing_folder_is_refused(store: MaildirStore) -> None:
    resolve(store.ensure_account(ACCOUNT))
    with pytest.raises(FolderExists):
        resolve(store.create_folder(ACCOUNT, "Sent"))
    with pytest.raises(FolderExists):
        resolve(store.create_folder(ACCOUNT, "inbox"))


@pytest.mark.parametrize(
    "name", ["..", "a..b", ".hidden", "a/b", "../../etc", "a\x00b", "a\nb", "tab\there", "x.", "a*", "b%", "back\\slash", ""]
)
def test_unsafe_names_are_refused(store: MaildirStore, name: str) -> None:
    resolve(store.ensure_account(ACCOUNT))
    with pytest.raises(UnsafeName):
        resolve(store.create_folder(ACCOUNT, name))
    assert sorted(os.listdir(root(store))) == sorted(os.listdir(root(store)))  # nothing new outside
    assert not any(p.name.startswith("tmp-") for p in root(store).iterdir())


def test_inbox_is_case_insensitive(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    folder = resolve(store.open_folder(ACCOUNT, "iNbOx"))
    assert folder.name == "INBOX" and len(folder.messages()) == 1
    assert folders.normalize("inbox.Lists") == "INBOX.Lists"


def test_open_of_a_missing_folder_fails(store: MaildirStore) -> None:
    with pytest.raises(NoSuchFolder):
        resolve(store.open_folder(ACCOUNT, "Nope"))


def test_delete_removes_folder_and_messages(store: MaildirStore) -> None:
    resolve(store.ensure_account(ACCOUNT))
    resolve(store.create_folder(ACCOUNT, "Old"))
    resolve(store.subscribe(ACCOUNT, "Old"))
    resolve(store.delete_folder(ACCOUNT, "Old"))
    assert "Old" not in names_of(store) and not (root(store) / ".Old").exists()
    assert folders.read_subscriptions(root(store)) == []


def test_delete_of_a_parent_keeps_children_and_leaves_noselect(store: MaildirStore) -> None:
    resolve(store.ensure_account(ACCOUNT))
    resolve(store.create_folder(ACCOUNT, "P"))
    resolve(store.create_folder(ACCOUNT, "P.C"))
    resolve(store.delete_folder(ACCOUNT, "P"))
    info = names_of(store)
    assert info["P"].noselect and "P.C" in info
    with pytest.raises(FolderHasChildren):
        resolve(store.delete_folder(ACCOUNT, "P"))


def test_delete_of_inbox_or_a_missing_folder_is_refused(store: MaildirStore) -> None:
    resolve(store.ensure_account(ACCOUNT))
    with pytest.raises(StoreError):
        resolve(store.delete_folder(ACCOUNT, "INBOX"))
    with pytest.raises(NoSuchFolder):
        resolve(store.delete_folder(ACCOUNT, "Missing"))


def test_delete_makes_an_open_folder_gone(store: MaildirStore) -> None:
    resolve(store.ensure_account(ACCOUNT))
    resolve(store.create_folder(ACCOUNT, "Tmp"))
    folder = resolve(store.open_folder(ACCOUNT, "Tmp"))
    resolve(folder.append(b"x\r\n"))
    resolve(store.delete_folder(ACCOUNT, "Tmp"))
    assert folder.gone and folder.messages() == []


def test_rename_moves_children_and_subscriptions_and_keeps_uids(store: MaildirStore) -> None:
    resolve(store.ensure_account(ACCOUNT))
    resolve(store.create_folder(ACCOUNT, "A"))
    resolve(store.create_folder(ACCOUNT, "A.B"))
    resolve(store.subscribe(ACCOUNT, "A.B"))
    folder = resolve(store.open_folder(ACCOUNT, "A"))
    uid = resolve(folder.append(b"x\r\n"))
    validity = folder.uidvalidity
    resolve(folder.close())
    assert resolve(store.rename_folder(ACCOUNT, "A", "Z")) == [("A", "Z"), ("A.B", "Z.B")]
    info = names_of(store)
    assert "A" not in info and "Z.B" in info and info["Z.B"].subscribed
    moved = resolve(store.open_folder(ACCOUNT, "Z"))
    assert [r.uid for r in moved.messages()] == [uid] and moved.uidvalidity == validity


def test_rename_onto_an_existing_name_or_into_itself_is_refused(store: MaildirStore) -> None:
    resolve(store.ensure_account(ACCOUNT))
    resolve(store.create_folder(ACCOUNT, "A"))
    with pytest.raises(FolderExists):
        resolve(store.rename_folder(ACCOUNT, "A", "Sent"))
    with pytest.raises(StoreError):
        resolve(store.rename_folder(ACCOUNT, "A", "A.B"))
    with pytest.raises(NoSuchFolder):
        resolve(store.rename_folder(ACCOUNT, "Missing", "B"))


def test_rename_of_inbox_moves_its_messages_and_keeps_inbox(store: MaildirStore) -> None:
    deliver(store.mail_dir, MSG)
    deliver(store.mail_dir, MSG)
    resolve(store.rename_folder(ACCOUNT, "INBOX", "Old Mail"))
    inbox = resolve(store.open_folder(ACCOUNT, "INBOX"))
    old = resolve(store.open_folder(ACCOUNT, "Old Mail"))
    assert inbox.messages() == [] and len(old.messages()) == 2


def test_subscribe_and_unsubscribe_persist(store: MaildirStore) -> None:
    resolve(store.ensure_account(ACCOUNT))
    resolve(store.subscribe(ACCOUNT, "Sent"))
    resolve(store.subscribe(ACCOUNT, "Not.Yet.There"))
    assert names_of(store)["Sent"].subscribed
    assert folders.read_subscriptions(root(store)) == ["Sent", "Not.Yet.There"]
    resolve(store.unsubscribe(ACCOUNT, "Sent"))
    assert folders.read_subscriptions(root(store)) == ["Not.Yet.There"]


def test_foreign_directories_are_not_listed(store: MaildirStore) -> None:
    resolve(store.ensure_account(ACCOUNT))
    os.mkdir(root(store) / ".bad&-name")  # not a maildir (no cur/)
    os.makedirs(root(store) / ".&Jjo" / "cur")  # not valid modified UTF-7
    names = names_of(store)
    assert ".bad&-name" not in str(names) and len(names) == 6


