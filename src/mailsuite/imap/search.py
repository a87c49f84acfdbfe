"""IMAP SEARCH (RFC 3501 §6.4.4): the key tree, its parser, and the matcher.

Token input for ``parse`` (what the server's command parser hands over, everything
after ``SEARCH`` / ``UID SEARCH``)::

    Token = str | bytes | list[Token]
      str   -- an atom exactly as sent: "SUBJECT", "1:5,7:*", "\\Seen", "UTF-8", "10"
      bytes -- a quoted string (escapes already removed) or the content of a literal
      list  -- a parenthesized group, its tokens inside

Search keys must be atoms; string arguments may be atoms, quoted strings or literals.
A leading ``CHARSET <name>`` is handled here (UTF-8 and US-ASCII; strings are decoded
with it). ``parse`` raises :class:`SearchSyntaxError` (answer BAD) or
:class:`BadCharset` (answer ``NO [BADCHARSET (UTF-8 US-ASCII)]``).

Matching: ``Matcher(key, max_seq=, max_uid=)`` once per command, then
``matcher.match(record, seq, source)`` per message, where ``record`` has ``uid``,
``flags`` (system flags such as ``"\\Seen"``), ``keywords``, ``size`` (wire octets),
``internaldate`` (epoch seconds) and ``recent`` (this session's \\Recent), and
``source`` lazily gives the message bytes (:class:`MessageSource`). ``matcher.needs``
says whether a search touches headers or bodies at all, so the server can skip
opening files; header keys only read the header block (``source.header()``), never
the whole message. Text keys match case-insensitively as substrings of the decoded
text (RFC 2047 words, transfer encodings, charsets), like Dovecot.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Protocol, Sequence, Union

__all__ = [
    "Token",
    "SearchSyntaxError",
    "BadCharset",
    "Key",
    "All",
    "And",
    "Or",
    "Not",
    "SequenceSet",
    "UidSet",
    "Flag",
    "Keyword",
    "DateKey",
    "Size",
    "Header",
    "Body",
    "Text",
    "parse",
    "parse_sequence_set",
    "MessageSource",
    "Matcher",
]

Token = Union[str, bytes, list]

SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")


class SearchSyntaxError(ValueError):
    """The search program is malformed (tagged BAD, with ``str(exc)`` as the text)."""


class BadCharset(SearchSyntaxError):
    """CHARSET names a charset we do not support (tagged NO [BADCHARSET ...])."""


# --- the key tree -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class All:
    """ALL: every message."""


@dataclass(frozen=True, slots=True)
class And:
    keys: tuple["Key", ...]


@dataclass(frozen=True, slots=True)
class Or:
    left: "Key"
    right: "Key"


@dataclass(frozen=True, slots=True)
class Not:
    key: "Key"


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """Message sequence numbers; each range is (low, high) with None for ``*``."""

    ranges: tuple[tuple[int | None, int | None], ...]


@dataclass(frozen=True, slots=True)
class UidSet:
    """UID set; each range is (low, high) with None for ``*``."""

    ranges: tuple[tuple[int | None, int | None], ...]


@dataclass(frozen=True, slots=True)
class Flag:
    """A system flag such as ``"\\Seen"`` (ANSWERED, DELETED, DRAFT, FLAGGED, SEEN,
    RECENT); compared case-insensitively. NEW/OLD/UNxxx are built from it with Not/And."""

    name: str


@dataclass(frozen=True, slots=True)
class Keyword:
    """KEYWORD flag (UNKEYWORD is ``Not(Keyword(...))``); case-insensitive."""

    name: str


@dataclass(frozen=True, slots=True)
class DateKey:
    """BEFORE/ON/SINCE (``sent=False``: internal date) and SENTBEFORE/SENTON/SENTSINCE
    (``sent=True``: the Date: header). ``op`` is ``"before"``, ``"on"`` or ``"since"``;
    only the date counts, not the time or zone."""

    op: str
    day: _dt.date
    sent: bool


@dataclass(frozen=True, slots=True)
class Size:
    """LARGER (``op=">"``) / SMALLER (``op="<"``) than ``octets`` (RFC822.SIZE)."""

    op: str
    octets: int


@dataclass(frozen=True, slots=True)
class Header:
    """HEADER field string; FROM/TO/CC/BCC/SUBJECT are Header with that field. ``name``
    is lower case; an empty ``value`` matches every message that has the field."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Body:
    """BODY string: in the decoded body text."""

    value: str


@dataclass(frozen=True, slots=True)
class Text:
    """TEXT string: in the header or the decoded body text."""

    value: str


Key = Union[All, And, Or, Not, SequenceSet, UidSet, Flag, Keyword, DateKey, Size, Header, Body, Text]


def parse(tokens: Sequence[Token]) -> Key:
    """The key tree of a SEARCH program (see the module docstring for ``tokens``).
    Several top-level keys are an And. Raises SearchSyntaxError / BadCharset."""
    raise NotImplementedError


def parse_sequence_set(atom: str) -> tuple[tuple[int | None, int | None], ...]:
    """``"1:5,7,9:*"`` → ``((1, 5), (7, 7), (9, None))``. Numbers must be 1..2**32-1;
    ``*`` is None. Raises SearchSyntaxError."""
    raise NotImplementedError


class MessageSource(Protocol):
    """Lazy access to one message's bytes for the matcher (called at most once each)."""

    def header(self) -> bytes:
        """The raw header block (any line ends); reading only the file's start is fine."""

    def message(self) -> bytes:
        """The whole raw message (any line ends)."""


class Matcher:
    """A compiled search for one command: ``needs`` is ``"none"``, ``"header"`` or
    ``"message"`` (what ``match`` may ask of its source)."""

    needs: str

    def __init__(self, key: Key, *, max_seq: int, max_uid: int) -> None:
        raise NotImplementedError

    def match(self, record: object, seq: int, source: MessageSource | None = None) -> bool:
        """Whether message ``seq`` (with ``record``, see module docstring) matches."""
        raise NotImplementedError
