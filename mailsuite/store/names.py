"""Maildir file names: making unique ones and reading the parts of existing ones.

Format (DESIGN.md): ``<sec>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<crlf size>:2,<flags>``.
``S=`` is the size on disk (LF line ends), ``W=`` the size with CRLF line ends (what
IMAP's RFC822.SIZE and POP3's LIST report), so neither needs the file opened.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import time

_counter = itertools.count(1)
STANDARD_FLAGS = "DFPRST"  # Draft Flagged Passed Replied Seen Trashed, in ASCII order

_SIZE_RE = re.compile(r",S=(\d+)")
_WSIZE_RE = re.compile(r",W=(\d+)")


def _hostname() -> str:
    # The Maildir spec's escapes for the two characters that would break the name.
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


_HOST = _hostname()


def unique_name() -> str:
    """A name no other delivery on this host will pick: time, microseconds, the pid at
    call time (twistd forks after import), and a process-wide counter."""
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{_HOST}"


def stable_name(arrival: float, delivery_id: str) -> str:
    """The base name of a delivery that may be repeated after a crash (the queue's):
    the same message id always gives the same name, so a repeat can see the first copy."""
    return f"{int(arrival)}.M0P0Q{delivery_id}.{_HOST}"


def with_sizes(base: str, size: int, crlf_size: int) -> str:
    return f"{base},S={size},W={crlf_size}"


def split_info(filename: str) -> tuple[str, str]:
    """``(base, flags)`` of a file name; flags is '' for a name without ``:2,``."""
    base, sep, info = filename.partition(":2,")
    return base, info if sep else ""


def base_name(filename: str) -> str:
    """The part that identifies a message for ever: everything before ``,S=`` / ``:``."""
    return filename.partition(":")[0].partition(",")[0]


def size_of(filename: str) -> int | None:
    m = _SIZE_RE.search(filename)
    return int(m.group(1)) if m else None


def crlf_size_of(filename: str) -> int | None:
    m = _WSIZE_RE.search(filename)
    return int(m.group(1)) if m else None


def with_flags(filename: str, flags: str) -> str:
    """The cur/ name carrying ``flags`` (letters), sorted and without duplicates."""
    base, _ = split_info(filename)
    letters = "".join(sorted(set(flags)))
    return f"{base}:2,{letters}"
