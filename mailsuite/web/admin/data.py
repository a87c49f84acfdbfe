"""Edits of the file directory made from the admin pages.  Every function here blocks
(reads, password hashing, atomic rewrites) and runs in the worker pool; the pages
serialise them with one lock, so two admins' edits never overwrite each other.

The users and aliases files are re-read by the running directory when they change,
so an edit applies at once, as it does with ``mailsuite user``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mailsuite import fsutil
from mailsuite.directory.files import UserEntry, parse_aliases, read_users, write_users
from mailsuite.directory.interface import normalize_address
from mailsuite.directory.passwords import hash_password
from mailsuite.store.maildir import UnsafeName, account_dir


class EditError(ValueError):
    """A refused edit; the message is shown to the admin."""


def check_address(domains: tuple[str, ...], mail_dir: Path, address: str) -> str:
    address = normalize_address(address)
    local, _, domain = address.rpartition("@")
    if not local or domain not in domains:
        raise EditError(f"{address}: not an address in a local domain ({', '.join(domains)})")
    if ":" in address or "," in address or "#" in address or any(c.isspace() for c in address):
        raise EditError(f"{address}: not a valid address")
    try:
        account_dir(mail_dir, address)
    except UnsafeName as e:
        raise EditError(f"{address}: {e}") from None
    return address


def parse_quota(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    mult = units.get(text[-1].lower(), 1)
    number = text[:-1] if text[-1].lower() in units else text
    try:
        value = int(number) * mult
    except ValueError:
        raise EditError(f"quota {text!r}: expected bytes, or a number with K, M or G") from None
    if value < 0:
        raise EditError("quota: expected a non-negative size")
    return value


def list_users(path: Path) -> dict[str, UserEntry]:
    return read_users(path)


def add_user(path: Path, address: str, password: str, quota: int | None) -> None:
    if not password:
        raise EditError("the password is empty")
    users = read_users(path)
    if address in users:
        raise EditError(f"{address} exists")
    users[address] = UserEntry(address, hash_password(password), quota)
    write_users(path, users)


def set_password(path: Path, address: str, password: str) -> None:
    if not password:
        raise EditError("the password is empty")
    users = read_users(path)
    if address not in users:
        raise EditError(f"{address}: no such account")
    users[address] = dataclasses.replace(users[address], password_hash=hash_password(password))
    write_users(path, users)


def set_quota(path: Path, address: str, quota: int | None) -> None:
    users = read_users(path)
    if address not in users:
        raise EditError(f"{address}: no such account")
    users[address] = dataclasses.replace(users[address], quota=quota)
    write_users(path, users)


def delete_user(path: Path, address: str) -> None:
    users = read_users(path)
    if address not in users:
        raise EditError(f"{address}: no such account")
    del users[address]
    write_users(path, users)


def list_aliases(path: Path) -> dict[str, tuple[str, ...]]:
    try:
        return parse_aliases(path.read_text("utf-8"), str(path))
    except FileNotFoundError:
        return {}


def _write_aliases(path: Path, aliases: dict[str, tuple[str, ...]]) -> None:
    body = "".join(f"{a}: {', '.join(t)}\n" for a, t in sorted(aliases.items()))
    fsutil.atomic_write(path, body.encode("utf-8"), mode=0o644)


def set_alias(path: Path, alias: str, targets: str) -> None:
    domain = alias.rpartition("@")[2]
    out = []
    for t in targets.replace(",", " ").split():
        t = normalize_address(t)
        if ":" in t or "#" in t:
            raise EditError(f"{t}: not a valid address")
        out.append(t if "@" in t else f"{t}@{domain}")
    if not out:
        raise EditError("an alias needs at least one target")
    aliases = list_aliases(path)
    aliases[alias] = tuple(out)
    _write_aliases(path, aliases)


def delete_alias(path: Path, alias: str) -> None:
    aliases = list_aliases(path)
    if alias not in aliases:
        raise EditError(f"{alias}: no such alias")
    del aliases[alias]
    _write_aliases(path, aliases)


# -- the queue, from any process (the spool on disk and the control requests) ----------


def spool_records(queue_dir: Path) -> list:
    from mailsuite.queue import spool

    return spool.scan(spool.SpoolPaths(queue_dir), clean=False).records


def spool_headers(queue_dir: Path, qid: str) -> bytes:
    from mailsuite.queue import spool

    paths = spool.SpoolPaths(queue_dir)
    if paths.body(qid).parent != paths.spool:  # a queue ID is a file name, nothing more
        raise OSError("not a queue ID")
    return b"".join(spool.iter_headers(paths.body(qid)))


def queue_request(queue_dir: Path, op: str, qid: str) -> tuple[bool, str]:
    """Ask the process that runs the queue to ``op`` (retry, delete) message ``qid``."""
    from mailsuite.queue import control, spool

    try:
        return control.request(spool.SpoolPaths(queue_dir).control, op, qid)
    except TimeoutError as e:
        return False, str(e)
