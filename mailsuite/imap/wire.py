"""Small IMAP response formatting helpers: strings, mailbox names, flag lists.

Everything returns bytes ready to be joined into a response line.  Message data
(ENVELOPE, BODYSTRUCTURE, sections) is formatted by mime.py; this module covers what
the protocol itself says.
"""

from __future__ import annotations

from typing import Iterable

from mailsuite import mutf7

_QUOTE_SAFE = frozenset(range(0x20, 0x7F)) - {0x22, 0x5C}


def string(value: bytes) -> bytes:
    """An IMAP string: quoted when short printable ASCII, else a literal."""
    if len(value) < 1024 and all(c in _QUOTE_SAFE for c in value):
        return b'"' + value + b'"'
    if len(value) < 1024 and all(0x20 <= c < 0x7F for c in value):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(value) + value


def mailbox(name: str) -> bytes:
    """A mailbox name on the wire: modified UTF-7, quoted (or a literal)."""
    return string(mutf7.encode(name))


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + " ".join(flags).encode("ascii", "replace") + b")"


def text(value: str) -> bytes:
    """Human-readable response text: one line, ASCII."""
    return value.replace("\r", " ").replace("\n", " ").encode("ascii", "replace")
