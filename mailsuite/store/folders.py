"""Folder names and the folder tree of an account (Maildir++), blocking functions.

Names: the store speaks Unicode folder names with ``.`` as the hierarchy delimiter
(:data:`DELIMITER`, Dovecot's default for Maildir++), e.g. ``"Archive.2024"``.  INBOX
is case-insensitive and always spelled ``INBOX``; its children (``INBOX.Lists``) are
ordinary folders.  On disk a folder is ``<account>/.<c1>.<c2>`` where each component is
the modified UTF-7 form of the name's component (Courier/Dovecot convention), with a
``maildirfolder`` marker.  A name with an empty component (``..``, a leading or trailing
``.``), ``/``, ``\\``, NUL, control characters, the LIST wildcards ``*`` and ``%``, or
a component over 200 octets on disk is refused with :class:`UnsafeName`.

A parent that has no directory of its own (``.A.B`` exists but ``.A`` does not) is
listed as ``noselect`` (LIST ``\\Noselect``/``\\NonExistent``), as in Dovecot.

Subscriptions: the ``subscriptions`` file in the account root, one UTF-8 name per line,
rewritten atomically (temp, fsync, rename).

These functions block (listdir, rename, rmtree, fsync): the reactor calls them through
:class:`mailsuite.store.mailstore.MaildirStore`, which runs them in the worker pool.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from mailsuite import fsutil, mutf7
from mailsuite.store.errors import FolderExists, FolderHasChildren, NoSuchFolder, StoreError, UnsafeName
from mailsuite.fsutil import fsync_dir as _fsync_dir
from mailsuite.store.interface import FolderInfo

SPECIAL_FOLDERS = ("Sent", "Drafts", "Trash", "Junk", "Archive")
DELIMITER = "."
INBOX = "INBOX"
SUBSCRIPTIONS = "subscriptions"
SPECIAL_USE = {name: "\\" + name for name in SPECIAL_FOLDERS}  # Sent -> \Sent, ...
_MAX_COMPONENT = 200  # octets on disk, leaving room under NAME_MAX for ".", parents
_MAX_NAME = 1000  # characters in a whole name
_FORBIDDEN = set("/\\*%\x00\x7f")


def make_maildir(path: Path, folder_marker: bool = False) -> None:
    """cur/, new/ and tmp/ under ``path`` (and the ``maildirfolder`` marker of a
    subfolder), leaving whatever exists."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(path / sub, mode=0o700, exist_ok=True)
    if folder_marker:
        marker = path / "maildirfolder"
        if not marker.exists():
            marker.touch(mode=0o600)


def normalize(name: str) -> str:
    """The canonical form of a client's folder name; raises UnsafeName.

    ``inbox`` → ``INBOX`` (also as first component: ``Inbox.x`` → ``INBOX.x``).
    """
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
        raise UnsafeName(f"bad folder name {name!r}")
    parts = name.split(DELIMITER)
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    for part in parts:
        if not part:
            raise UnsafeName(f"empty component in folder name {name!r}")
        if any(c in _FORBIDDEN or ord(c) < 0x20 or 0x80 <= ord(c) < 0xA0 for c in part):
            raise UnsafeName(f"forbidden character in folder name {name!r}")
        try:
            encoded = mutf7.encode(part).decode("ascii")
        except ValueError:  # lone surrogates have no encoding
            raise UnsafeName(f"folder name {name!r} is not valid Unicode") from None
        if len(encoded) > _MAX_COMPONENT:
            raise UnsafeName(f"folder name component too long: {part[:40]!r}...")
    return DELIMITER.join(parts)


def dir_name(name: str) -> str:
    """The directory name under the account root (``""`` for INBOX)."""
    name = normalize(name)
    if name == INBOX:
        return ""
    return "." + DELIMITER.join(mutf7.encode(p).decode("ascii") for p in name.split(DELIMITER))


def folder_path(root: Path, name: str) -> Path:
    d = dir_name(name)
    return root / d if d else root


def name_of_dir(entry: str) -> str | None:
    """The folder name of a directory entry ``.A.B`` of the account root, or None if
    the entry is not a (validly named) Maildir++ folder."""
    if not entry.startswith(".") or entry in (".", ".."):
        return None
    try:
        parts = [mutf7.decode(p) for p in entry[1:].split(DELIMITER)]
        return normalize(DELIMITER.join(parts))
    except (ValueError, UnsafeName):
        return None


def _exists(path: Path) -> bool:
    return (path / "cur").is_dir()


def folder_exists(root: Path, name: str) -> bool:
    return _exists(folder_path(root, name))


def _all_names(root: Path) -> list[str]:
    out = []
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return []
    for entry in entries:
        name = name_of_dir(entry)
        if name is not None and _exists(root / entry):
            out.append(name)
    return out


def read_subscriptions(root: Path) -> list[str]:
    try:
        text = (root / SUBSCRIPTIONS).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(normalize(line.strip()))
        except UnsafeName:
            continue
    return list(dict.fromkeys(out))


def _write_subscriptions(root: Path, names: list[str]) -> None:
    fsutil.atomic_write(root / SUBSCRIPTIONS, "".join(n + "\n" for n in names).encode("utf-8"))


def list_folders(root: Path) -> list[FolderInfo]:
    """Every folder of the account, INBOX first, then by name; parents that exist only
    through their children are included with ``noselect=True``."""
    real = set(_all_names(root))
    real.add(INBOX)
    every = set(real)
    for name in real:
        parts = name.split(DELIMITER)
        for i in range(1, len(parts)):
            every.add(DELIMITER.join(parts[:i]))
    subs = set(read_subscriptions(root))
    parents = set()
    for name in every:
        head, sep, _ = name.rpartition(DELIMITER)
        if sep:
            parents.add(head)
    out = []
    for name in sorted(every, key=lambda n: (n != INBOX, n)):
        out.append(
            FolderInfo(
                name=name,
                special_use=SPECIAL_USE.get(name),
                has_children=name in parents,
                subscribed=name in subs,
                noselect=name not in real,
            )
        )
    return out


def create_folder(root: Path, name: str) -> str:
    """Create a folder (and nothing else); returns the normalised name."""
    name = normalize(name)
    path = folder_path(root, name)
    if name == INBOX or _exists(path):
        raise FolderExists(f"folder {name} exists already")
    tmp = root / f"tmp-create.{uuid.uuid4().hex}"
    make_maildir(tmp, folder_marker=True)
    try:
        os.rename(tmp, path)  # appears complete or not at all
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if _exists(path):
            raise FolderExists(f"folder {name} exists already") from None
        raise
    _fsync_dir(root)
    return name


def delete_folder(root: Path, name: str) -> str:
    """Delete a folder and its messages (RFC 3501 6.3.4): its children stay, and the
    name then lists as \\Noselect.  A \\Noselect name with children cannot be deleted;
    INBOX cannot be deleted."""
    name = normalize(name)
    if name == INBOX:
        raise StoreError("INBOX cannot be deleted")
    path = folder_path(root, name)
    if not _exists(path):
        prefix = name + DELIMITER
        if any(n.startswith(prefix) for n in _all_names(root)):
            raise FolderHasChildren(f"{name} has child folders and no messages of its own")
        raise NoSuchFolder(f"no folder named {name}")
    # Rename out of sight first so the folder vanishes atomically, then remove it.
    trash = root / f"tmp-delete.{uuid.uuid4().hex}"
    os.rename(path, trash)
    _fsync_dir(root)
    shutil.rmtree(trash, ignore_errors=True)
    subs = read_subscriptions(root)
    if name in subs:
        _write_subscriptions(root, [s for s in subs if s != name])
    return name


def rename_folder(root: Path, old: str, new: str) -> list[tuple[str, str]]:
    """Rename a folder and all its children; returns the (old, new) pairs renamed.

    Renaming INBOX moves its messages into a new folder ``new`` and leaves INBOX empty
    (RFC 3501 6.3.5); INBOX's children stay where they are.  Subscriptions follow.
    """
    old, new = normalize(old), normalize(new)
    if new == INBOX or folder_exists(root, new):
        raise FolderExists(f"folder {new} exists already")
    if new.startswith(old + DELIMITER):
        raise StoreError(f"cannot rename {old} into itself")
    if old == INBOX:
        create_folder(root, new)
        dst = folder_path(root, new)
        for sub in ("new", "cur"):
            for entry in os.listdir(root / sub):
                try:
                    os.rename(root / sub / entry, dst / sub / entry)
                except FileNotFoundError:
                    pass  # expunged meanwhile
            _fsync_dir(dst / sub)
            _fsync_dir(root / sub)
        return [(old, new)]
    pairs = []
    prefix = old + DELIMITER
    for name in _all_names(root):
        if name == old or name.startswith(prefix):
            target = new + name[len(old):]
            normalize(target)  # length limits
            if folder_exists(root, target):
                raise FolderExists(f"folder {target} exists already")
            pairs.append((name, target))
    if not pairs:
        raise NoSuchFolder(f"no folder named {old}")
    pairs.sort(key=lambda p: len(p[0]))
    for src, dst in pairs:
        os.rename(folder_path(root, src), folder_path(root, dst))
    _fsync_dir(root)
    subs = read_subscriptions(root)
    mapping = dict(pairs)
    if any(s in mapping for s in subs):
        _write_subscriptions(root, [mapping.get(s, s) for s in subs])
    return pairs


def set_subscribed(root: Path, name: str, subscribed: bool) -> str:
    """Subscribe or unsubscribe a name (it need not exist, RFC 3501 6.3.6)."""
    name = normalize(name)
    subs = read_subscriptions(root)
    if subscribed and name not in subs:
        _write_subscriptions(root, subs + [name])
    elif not subscribed and name in subs:
        _write_subscriptions(root, [s for s in subs if s != name])
    return name
