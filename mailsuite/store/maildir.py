"""The Maildir++ layout on disk: where an account's folders live, and durable delivery.

Layout: ``<mail_dir>/<domain>/<local>/{cur,new,tmp}`` is INBOX; subfolders are
``.Sent``, ``.Drafts``, ``.Trash``, ``.Junk``, ``.Archive`` (nested with ``.``), each
with a ``maildirfolder`` marker.  A delivery is written to ``tmp/``, fsynced, renamed
into ``new/``, and ``new/`` is fsynced, all before the caller may say 250.

The functions here block (``deliver_copies``, ``ensure_account``, ``clean_tmp``) and run
in the worker pool; :class:`mailsuite.store.mailstore.MaildirStore` offers them to the
reactor thread, behind the storage interface.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from mailsuite import fsutil
from mailsuite.handoff import BodyFile
from mailsuite.store import folders as folders_mod, names
from mailsuite.store.errors import FolderExists, UnsafeName
from mailsuite.store.folders import SPECIAL_FOLDERS, make_maildir

__all__ = ["SPECIAL_FOLDERS", "BodyFile", "DeliveryError", "UnsafeName", "account_dir", "clean_tmp", "deliver_copies",
           "deliver_one", "ensure_account", "make_maildir", "normalized_folder"]


class DeliveryError(Exception):
    """A delivery failed for a reason worth a temporary reply (disk full, permissions)."""


def _check_component(part: str, what: str) -> str:
    if (
        not part
        or part in (".", "..")
        or part.startswith(".")
        or any(c in part for c in "/\\\x00")
        or any(ord(c) < 0x20 for c in part)
        or len(part) > 255
    ):
        raise UnsafeName(f"unsafe {what}: {part!r}")
    return part


def account_dir(mail_dir: Path, account: str) -> Path:
    local, _, domain = account.rpartition("@")
    return mail_dir / _check_component(domain, "domain") / _check_component(local, "local part")


def ensure_account(mail_dir: Path, account: str) -> Path:
    """Create INBOX and the special folders of an account if missing (blocking)."""
    root = account_dir(mail_dir, account)
    if not (root / "new").is_dir():
        make_maildir(root)
    for folder in SPECIAL_FOLDERS:
        path = root / f".{folder}"
        if not (path / "new").is_dir():
            make_maildir(path, folder_marker=True)
    return root


def _already_delivered(maildir: Path, base: str) -> str | None:
    """The name of a file in new/ or cur/ with this base name, if one is there."""
    for sub in ("new", "cur"):
        try:
            entries = os.listdir(maildir / sub)
        except FileNotFoundError:
            continue
        for name in entries:
            if name.startswith(base) and names.base_name(name) == base:
                return name
    return None


def deliver_one(maildir: Path, prefix: bytes, body: BodyFile, stable_base: str | None = None,
                check_existing: bool = False, flags: str | None = None) -> str:
    """Write prefix + body into ``maildir``/new durably; return the file name (blocking).

    With ``flags`` (Maildir info letters, e.g. "FS", from a Sieve ``:flags``) the copy
    goes to cur/ with those flags, as an IMAP APPEND with flags would.

    ``stable_base`` (from :func:`names.stable_name`) names a delivery the queue may repeat
    after a crash; with ``check_existing`` a copy already in new/ or cur/ under that name
    is kept and not made again (nothing delivered twice after kill -9).
    """
    if stable_base is not None and check_existing:
        existing = _already_delivered(maildir, stable_base)
        if existing is not None:
            return existing
    base = stable_base or names.unique_name()
    tmp = maildir / "tmp" / base
    # A stable name's tmp/ file can only be a crashed earlier attempt's: overwrite it.
    mode = os.O_TRUNC if stable_base is not None else os.O_EXCL
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | mode, 0o600)
    try:
        try:
            fsutil.copy_synced(fd, prefix, body.data, body.path, body.size)
        finally:
            os.close(fd)
        size = len(prefix) + body.size
        final = names.with_sizes(base, size, size + prefix.count(b"\n") + body.lines)
        sub = "new"
        if flags is not None:
            final, sub = f"{final}:2,{flags}", "cur"
        os.rename(tmp, maildir / sub / final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsutil.fsync_dir(maildir / sub)
    return final


def deliver_copies(mail_dir: Path, prefixes: dict[str, bytes], body: BodyFile,
                   stable_base: str | None = None, check_existing: bool = False,
                   folders: dict[str, str] | None = None) -> dict[str, str]:
    """Deliver one copy per account, all or nothing (blocking).

    ``prefixes`` maps account name to the header lines only that copy gets
    (Return-Path, Delivered-To).  ``folders`` maps an account to the folder its copy
    goes to (default INBOX; a missing folder is created, as Dovecot's
    ``lda_mailbox_autocreate``).  Returns account -> file name.  If one copy fails
    (disk full, permissions) the copies already made are removed again and
    DeliveryError is raised, so the sender's retry does not duplicate them.
    """
    done: dict[str, Path] = {}
    folders = folders or {}
    # Every name checked (UnsafeName) before the first copy is written.
    paths = {account: _delivery_dir(mail_dir, account, folders.get(account, "INBOX")) for account in prefixes}
    try:
        for account, prefix in prefixes.items():
            folder, path = folders.get(account, "INBOX"), paths[account]
            try:
                done[account] = path / "new" / deliver_one(path, prefix, body, stable_base, check_existing)
            except FileNotFoundError:
                # First delivery: create INBOX and the special folders.  Trying first
                # saves six stat() calls per message for every existing account.
                root = ensure_account(mail_dir, account)
                if folder != "INBOX" and not (path / "new").is_dir():
                    try:
                        folders_mod.create_folder(root, folder)
                    except FolderExists:  # made meanwhile by another session
                        pass
                done[account] = path / "new" / deliver_one(path, prefix, body, stable_base, check_existing)
    except OSError as e:
        for made in done.values():  # not "account": the message below names the failed one
            try:
                os.unlink(made)
                # Durably gone, or a crash now would keep a copy the client's retry repeats.
                fsutil.fsync_dir(made.parent)
            except OSError:
                pass
        code = errno.errorcode.get(e.errno or 0, "error")
        raise DeliveryError(f"delivery to {account} failed: {code} {e.strerror}") from e
    return {account: made.name for account, made in done.items()}


def _delivery_dir(mail_dir: Path, account: str, folder: str) -> Path:
    root = account_dir(mail_dir, account)
    if folder == "INBOX":
        return root
    return folders_mod.folder_path(root, folders_mod.normalize(folder))


def normalized_folder(folder: str) -> str:
    """The folder name a delivery into ``folder`` goes to (for change notices)."""
    return folders_mod.normalize(folder)


TMP_MAX_AGE = 36 * 3600  # Maildir spec and Dovecot: a tmp/ file this old is abandoned


def clean_tmp(mail_dir: Path, max_age: float = TMP_MAX_AGE, now: float | None = None) -> int:
    """Remove abandoned files from every Maildir's tmp/ (blocking; returns how many).

    A delivery killed mid-write (kill -9, power loss) leaves its file in tmp/; it was
    never acknowledged and never visible.  Only old files go: a recent one may belong to
    a delivery still in progress, in this process or another MDA's.
    """
    now = time.time() if now is None else now
    removed = 0
    for tmp in mail_dir.glob("*/*/tmp"):
        removed += _clean_one_tmp(tmp, now - max_age)
    for tmp in mail_dir.glob("*/*/.*/tmp"):
        removed += _clean_one_tmp(tmp, now - max_age)
    return removed


def _clean_one_tmp(tmp: Path, cutoff: float) -> int:
    removed = 0
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed
