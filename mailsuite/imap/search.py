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

``$`` (RFC 5182), alone or after ``UID``, is the :class:`Saved` key: the messages the
session's last SEARCH RETURN (SAVE) kept, handed to the Matcher as ``saved`` UIDs.

Matching: ``Matcher(key, max_seq=, max_uid=, saved=)`` once per command, then
``matcher.match(record, seq, source)`` per message, where ``record`` has ``uid``,
``flags`` (system flags such as ``"\\Seen"``), ``keywords``, ``size`` (wire octets),
``internaldate`` (epoch seconds) and ``recent`` (this session's \\Recent), and
``source`` lazily gives the message bytes (:class:`MessageSource`). ``matcher.needs``
says whether a search touches headers or bodies at all, so the server can skip
opening files; header keys only read the header block (``source.header()``), never
the whole message. Text keys match case-insensitively as substrings of the decoded
text (RFC 2047 words, transfer encodings, charsets). As in Dovecot, BODY looks in the
text parts only (also those of attached messages) and TEXT in those and in every
header of every part; tests/test_imap_search.py checks the results against Dovecot's
own SEARCH when Dovecot is installed.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence, Union

from mailsuite import mime

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
    "Saved",
    "Flag",
    "Keyword",
    "DateKey",
    "Size",
    "Header",
    "Body",
    "Text",
    "ModSeq",
    "parse",
    "parse_sequence_set",
    "resolve_ranges",
    "MessageSource",
    "Matcher",
    "iter_keys",
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
class Saved:
    """``$``: the saved search result (RFC 5182)."""


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


@dataclass(frozen=True, slots=True)
class ModSeq:
    """MODSEQ [entry-name entry-type] n (RFC 7162 3.1.5): modseq >= n.  We keep one
    modseq per message, so the entry (a flag's own modseq) is checked and ignored."""

    modseq: int


Key = Union[All, And, Or, Not, SequenceSet, UidSet, Saved, Flag, Keyword, DateKey, Size, Header, Body, Text, ModSeq]



# --- parser -------------------------------------------------------------------------

_SYSTEM = {
    "ANSWERED": "\\Answered",
    "DELETED": "\\Deleted",
    "DRAFT": "\\Draft",
    "FLAGGED": "\\Flagged",
    "SEEN": "\\Seen",
    "RECENT": "\\Recent",
}
_HEADER_KEYS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc", "SUBJECT": "subject"}
_DATE_KEYS = {
    "BEFORE": ("before", False),
    "ON": ("on", False),
    "SINCE": ("since", False),
    "SENTBEFORE": ("before", True),
    "SENTON": ("on", True),
    "SENTSINCE": ("since", True),
}
_SEQ_SET = re.compile(r"^(?:\d+|\*)(?::(?:\d+|\*))?(?:,(?:\d+|\*)(?::(?:\d+|\*))?)*$")
_ATOM = re.compile(r'^[^\x00-\x20(){%*"\\\]\x7f]+$')
_DATE = re.compile(r"^(\d{1,2})-([A-Za-z]{3})-(\d{4})$")
_MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_MAX_NUMBER = 2**32 - 1


def parse(tokens: Sequence[Token]) -> Key:
    """The key tree of a SEARCH program (see the module docstring for ``tokens``).
    Several top-level keys are an And. Raises SearchSyntaxError / BadCharset."""
    toks = list(tokens)
    charset = None
    if toks and isinstance(toks[0], str) and toks[0].upper() == "CHARSET":
        if len(toks) < 2 or isinstance(toks[1], list):
            raise SearchSyntaxError("CHARSET needs a charset name")
        name = toks[1] if isinstance(toks[1], str) else toks[1].decode("ascii", "replace")
        charset = name.upper()
        if charset not in SUPPORTED_CHARSETS:
            raise BadCharset(f"Unsupported charset {name}")
        toks = toks[2:]
    if not toks:
        raise SearchSyntaxError("Missing search keys")
    p = _Parser(toks, charset)
    keys = []
    while not p.done():
        keys.append(p.key())
    return keys[0] if len(keys) == 1 else And(tuple(keys))


# How deep NOT, OR and parentheses may nest in one program.  Real clients nest a
# few levels; a program of 1000 NOTs used to exhaust Python's stack (RecursionError,
# issue 16 finding 6).  Deeper programs are a syntax error (BAD).
MAX_DEPTH = 64


class _Parser:
    def __init__(self, toks: list[Token], charset: str | None, depth: int = 0) -> None:
        self.toks = toks
        self.i = 0
        self.charset = charset
        self.depth = depth

    def nested(self) -> Key:
        """A key one level further down (after NOT or OR)."""
        if self.depth >= MAX_DEPTH:
            raise SearchSyntaxError(f"Search keys nested too deep (more than {MAX_DEPTH} levels)")
        self.depth += 1
        try:
            return self.key()
        finally:
            self.depth -= 1

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def next(self, what: str) -> Token:
        if self.i >= len(self.toks):
            raise SearchSyntaxError(f"Missing {what}")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def string(self, key: str) -> str:
        tok = self.next(f"string after {key}")
        if isinstance(tok, list):
            raise SearchSyntaxError(f"{key} needs a string, not a list")
        if isinstance(tok, str):
            return tok
        try:
            return tok.decode("utf-8" if self.charset in (None, "UTF-8") else "ascii")
        except UnicodeDecodeError:
            if self.charset is None:
                return tok.decode("latin-1")  # no CHARSET: be lenient with 8-bit
            raise SearchSyntaxError(f"{key} string is not valid {self.charset}") from None

    def atom(self, what: str) -> str:
        tok = self.next(what)
        if not isinstance(tok, str):
            raise SearchSyntaxError(f"Expected {what}")
        return tok

    def number(self, key: str) -> int:
        tok = self.atom(f"number after {key}")
        if not tok.isdigit() or not tok.isascii() or int(tok) > 2**63 - 1:
            raise SearchSyntaxError(f"{key} needs a number")
        return int(tok)

    def date(self, key: str) -> _dt.date:
        tok = self.next(f"date after {key}")
        if isinstance(tok, list):
            raise SearchSyntaxError(f"{key} needs a date")
        text = tok if isinstance(tok, str) else tok.decode("ascii", "replace")
        m = _DATE.match(text)
        month = _MONTHS.get(m.group(2).lower()) if m else None
        if not m or month is None:
            raise SearchSyntaxError(f"{key} needs a date like 1-Feb-1994")
        try:
            return _dt.date(int(m.group(3)), month, int(m.group(1)))
        except ValueError:
            raise SearchSyntaxError(f"{key}: no such date {text}") from None

    def key(self) -> Key:
        tok = self.next("search key")
        if isinstance(tok, list):
            if not tok:
                raise SearchSyntaxError("Empty parenthesized search key list")
            if self.depth >= MAX_DEPTH:
                raise SearchSyntaxError(f"Search keys nested too deep (more than {MAX_DEPTH} levels)")
            sub = _Parser(tok, self.charset, self.depth + 1)
            keys = []
            while not sub.done():
                keys.append(sub.key())
            return keys[0] if len(keys) == 1 else And(tuple(keys))
        if isinstance(tok, bytes):
            raise SearchSyntaxError("Search key expected, got a string")
        word = tok.upper()
        if word in _SYSTEM:
            return Flag(_SYSTEM[word])
        if word.startswith("UN") and word[2:] in _SYSTEM and word != "UNRECENT":
            return Not(Flag(_SYSTEM[word[2:]]))
        if word in _HEADER_KEYS:
            return Header(_HEADER_KEYS[word], self.string(word))
        if word in _DATE_KEYS:
            op, sent = _DATE_KEYS[word]
            return DateKey(op, self.date(word), sent)
        if word == "ALL":
            return All()
        if word == "NEW":
            return And((Flag("\\Recent"), Not(Flag("\\Seen"))))
        if word == "OLD":
            return Not(Flag("\\Recent"))
        if word in ("KEYWORD", "UNKEYWORD"):
            name = self.atom(f"flag keyword after {word}")
            if not _ATOM.match(name[1:] if name.startswith("\\") else name):
                raise SearchSyntaxError(f"{word} needs a flag keyword")
            k: Key = Flag(_canonical_flag(name)) if name.startswith("\\") else Keyword(name)
            return k if word == "KEYWORD" else Not(k)
        if word == "HEADER":
            field = self.string("HEADER field name")
            if not field or not all(0x21 <= ord(c) <= 0x7E and c != ":" for c in field):
                raise SearchSyntaxError("HEADER needs a field name")
            return Header(field.lower(), self.string("HEADER"))
        if word == "BODY":
            return Body(self.string(word))
        if word == "TEXT":
            return Text(self.string(word))
        if word == "LARGER":
            return Size(">", self.number(word))
        if word == "SMALLER":
            return Size("<", self.number(word))
        if word == "MODSEQ":
            tok2 = self.next("MODSEQ value")
            if isinstance(tok2, bytes):  # entry name ("/flags/\\seen"), then its type
                kind = self.atom("MODSEQ entry type").lower()
                if kind not in ("priv", "shared", "all"):
                    raise SearchSyntaxError("MODSEQ entry type must be priv, shared or all")
                tok2 = self.next("MODSEQ value")
            if not isinstance(tok2, str) or not tok2.isdigit() or not tok2.isascii() or int(tok2) > 2**63 - 1:
                raise SearchSyntaxError("MODSEQ needs a number")
            return ModSeq(int(tok2))
        if word == "NOT":
            return Not(self.nested())
        if word == "OR":
            return Or(self.nested(), self.nested())
        if tok == "$":
            return Saved()
        if word == "UID":
            if self.toks[self.i : self.i + 1] == ["$"]:
                self.i += 1
                return Saved()
            return UidSet(parse_sequence_set(self.atom("UID set")))
        if _SEQ_SET.match(tok):
            return SequenceSet(parse_sequence_set(tok))
        raise SearchSyntaxError(f"Unknown search key {tok[:40]}")


def _canonical_flag(name: str) -> str:
    for canon in _SYSTEM.values():
        if canon.lower() == name.lower():
            return canon
    return name


def parse_sequence_set(atom: str) -> tuple[tuple[int | None, int | None], ...]:
    """``"1:5,7,9:*"`` → ``((1, 5), (7, 7), (9, None))``. Numbers must be 1..2**32-1;
    ``*`` is None. Raises SearchSyntaxError."""
    if not isinstance(atom, str) or not atom.isascii() or not _SEQ_SET.match(atom):
        raise SearchSyntaxError(f"Invalid sequence set {str(atom)[:40]!r}")
    out = []
    for item in atom.split(","):
        lo, _, hi = item.partition(":")
        a = _seq_number(lo)
        b = _seq_number(hi) if hi else a
        out.append((a, b))
    return tuple(out)


def _seq_number(text: str) -> int | None:
    if text == "*":
        return None
    n = int(text)
    if not 1 <= n <= _MAX_NUMBER:
        raise SearchSyntaxError(f"Invalid number {text} in sequence set")
    return n


def resolve_ranges(
    ranges: tuple[tuple[int | None, int | None], ...], largest: int
) -> list[tuple[int, int]]:
    """Ranges with ``*`` replaced by ``largest`` and each ordered low-high (so ``5:*``
    with 3 messages is 3:5, as RFC 3501 says)."""
    out = []
    for a, b in ranges:
        lo = largest if a is None else a
        hi = largest if b is None else b
        out.append((lo, hi) if lo <= hi else (hi, lo))
    return out


# --- matcher ------------------------------------------------------------------------


class MessageSource(Protocol):
    """Lazy access to one message's bytes for the matcher (called at most once each)."""

    def header(self) -> bytes:
        """The raw header block (any line ends); reading only the file's start is fine."""

    def message(self) -> bytes:
        """The whole raw message (any line ends)."""


class _Ctx:
    """What one match call has found out about one message so far."""

    __slots__ = ("rec", "seq", "source", "_header", "_lower", "_body", "_sent", "_raw", "_plain", "_msg",
                 "_all_headers")

    def __init__(self, rec: object, seq: int, source: MessageSource | None) -> None:
        self.rec = rec
        self.seq = seq
        self.source = source
        self._header: bytes | None = None
        self._lower: bytes | None = None
        self._body: str | None = None
        self._sent: tuple[int, int, int] | None | bool = False
        self._raw: bytes | None = None
        self._plain: bytes | None = None
        self._msg: mime.Message | None = None
        self._all_headers: str | None = None

    def parsed(self) -> mime.Message:
        if self._msg is None:
            self._msg = mime.parse(self.raw())
        return self._msg

    def all_headers_text(self) -> str:
        if self._all_headers is None:
            self._all_headers = _norm(mime.headers_text(self.parsed()))
        return self._all_headers

    def raw(self) -> bytes:
        if self._raw is None:
            if self.source is None:
                raise ValueError("this search needs the message body but got no source")
            self._raw = self.source.message()
        return self._raw

    def plain_lower(self) -> bytes:
        """For a 7-bit single-part message whose header asks for no decoding (no
        multipart, no transfer encoding, no encoded words, no UTF-16-like charset):
        the whole message lower-cased, where an ASCII search string is present iff
        it is present in the decoded text. Else b"" (meaning: decode to be sure)."""
        if self._plain is None:
            raw = self.raw()
            self._plain = b""
            if raw.isascii():
                header, _ = mime.split_header(raw)
                hl = header.lower()
                if not any(w in hl for w in _DECODING_NEEDED):
                    self._plain = raw.lower()
        return self._plain

    def header(self) -> bytes:
        if self._header is None:
            if self.source is None:
                raise ValueError("this search needs the message header but got no source")
            # The whole message, when a body key already read it, saves a second read.
            raw = self._raw if self._raw is not None else self.source.header()
            self._header = mime.split_header(raw)[0]
        return self._header

    def field_values(self, name: bytes) -> list[bytes]:
        header = self.header()
        if self._lower is None:
            self._lower = header.lower()
        return mime.header_values(header, name, self._lower)

    def body_text(self) -> str:
        if self._body is None:
            if self.source is None:
                raise ValueError("this search needs the message body but got no source")
            self._body = mime.body_text(self.parsed()).casefold()
        return self._body

    def sent_date(self) -> tuple[int, int, int] | None:
        if self._sent is False:
            values = self.field_values(b"date")
            self._sent = mime.parse_date_header(values[0]) if values else None
        return self._sent  # type: ignore[return-value]


_Fn = Callable[[_Ctx], bool]
_COST = {"none": 0, "header": 1, "message": 2}


# Header words after which the raw bytes may differ from the decoded text (lower case).
_DECODING_NEEDED = (b"multipart", b"message/", b"base64", b"quoted-printable", b"=?", b"utf-16", b"utf-32", b"utf-7", b"ucs-", b"unicode")


def _local_date(ts: float) -> tuple[int, int, int]:
    t = time.localtime(ts)
    return (t.tm_year, t.tm_mon, t.tm_mday)


def _norm(text: str) -> str:
    # Case-insensitive, and folded white space counts as one space.
    return " ".join(text.split()).casefold() if ("\n" in text or "\r" in text or "\t" in text) else text.casefold()


class Matcher:
    """A compiled search for one command: ``needs`` is ``"none"``, ``"header"`` or
    ``"message"`` (what ``match`` may ask of its source)."""

    needs: str

    def __init__(self, key: Key, *, max_seq: int, max_uid: int, saved: frozenset[int] = frozenset()) -> None:
        self.max_seq = max_seq
        self.max_uid = max_uid
        self.saved = saved
        self._fn, cost = self._compile(key)
        self.needs = {v: k for k, v in _COST.items()}[cost]

    def match(self, record: object, seq: int, source: MessageSource | None = None) -> bool:
        """Whether message ``seq`` (with ``record``, see module docstring) matches."""
        return self._fn(_Ctx(record, seq, source))

    def _compile(self, key: Key) -> tuple[_Fn, int]:
        # Each key becomes a closure; And/Or try cheap keys first, so a search that
        # combines flags with text opens only the files the flags let through.
        if isinstance(key, All):
            return (lambda c: True), 0
        if isinstance(key, And):
            parts = sorted((self._compile(k) for k in key.keys), key=lambda fc: fc[1])
            fns = tuple(f for f, _ in parts)
            return (lambda c: all(f(c) for f in fns)), max(cost for _, cost in parts)
        if isinstance(key, Or):
            (f1, c1), (f2, c2) = sorted((self._compile(key.left), self._compile(key.right)), key=lambda fc: fc[1])
            return (lambda c: f1(c) or f2(c)), max(c1, c2)
        if isinstance(key, Not):
            f, cost = self._compile(key.key)
            return (lambda c: not f(c)), cost
        if isinstance(key, SequenceSet):
            ranges = resolve_ranges(key.ranges, self.max_seq)
            return (lambda c: any(lo <= c.seq <= hi for lo, hi in ranges)), 0
        if isinstance(key, Saved):
            saved = self.saved
            return (lambda c: c.rec.uid in saved), 0  # type: ignore[attr-defined]
        if isinstance(key, UidSet):
            ranges = resolve_ranges(key.ranges, self.max_uid)
            return (lambda c: any(lo <= c.rec.uid <= hi for lo, hi in ranges)), 0  # type: ignore[attr-defined]
        if isinstance(key, Flag):
            name = key.name.lower()
            if name == "\\recent":
                return (lambda c: bool(c.rec.recent)), 0  # type: ignore[attr-defined]
            return (lambda c: any(f.lower() == name for f in c.rec.flags)), 0  # type: ignore[attr-defined]
        if isinstance(key, Keyword):
            kw = key.name.lower()
            # Keywords may sit in ``keywords`` or, depending on the store, in ``flags``.
            return (
                lambda c: any(f.lower() == kw for f in c.rec.keywords)  # type: ignore[attr-defined]
                or any(f.lower() == kw for f in c.rec.flags)  # type: ignore[attr-defined]
            ), 0
        if isinstance(key, ModSeq):
            least = key.modseq
            return (lambda c: c.rec.modseq >= least), 0  # type: ignore[attr-defined]
        if isinstance(key, Size):
            n = key.octets
            if key.op == ">":
                return (lambda c: c.rec.size > n), 0  # type: ignore[attr-defined]
            return (lambda c: c.rec.size < n), 0  # type: ignore[attr-defined]
        if isinstance(key, DateKey):
            return self._date(key)
        if isinstance(key, Header):
            name = key.name.lower().encode("ascii", "replace")
            want = _norm(key.value)

            address_field = name in mime.ADDRESS_FIELDS

            def header_match(c: _Ctx) -> bool:
                for raw in c.field_values(name):
                    if not want or want in _norm(mime.decode_header_text(raw)):
                        return True
                    # An address field also matches on its addresses as ENVELOPE shows
                    # them, without comments, quoting and folding (as Dovecot does):
                    # "<user (c)@ (c) domain.org>" is found by "user@domain.org".
                    if address_field and want in _norm(mime.addresses_text(raw)):
                        return True
                return False

            return header_match, 1
        if isinstance(key, (Body, Text)):
            want = _norm(key.value)
            # An ASCII search string absent from a plain 7-bit message cannot match
            # after decoding either: skip the MIME parse for (nearly) every message
            # that does not match, which is what makes SEARCH BODY over a big folder
            # affordable.
            quick = want.encode("ascii") if want.isascii() and want == want.strip() and " " not in want else None
            if isinstance(key, Body):

                def body_match(c: _Ctx) -> bool:
                    if quick is not None:
                        plain = c.plain_lower()
                        if plain and quick not in plain:
                            return False
                    return want in c.body_text()

                return body_match, 2

            def text_match(c: _Ctx) -> bool:
                if quick is not None:
                    plain = c.plain_lower()
                    if plain and quick not in plain:
                        return False
                # Every header of every part (Dovecot's TEXT), then the decoded bodies.
                return want in c.all_headers_text() or want in c.body_text()

            return text_match, 2
        raise TypeError(f"not a search key: {key!r}")

    def _date(self, key: DateKey) -> tuple[_Fn, int]:
        day = (key.day.year, key.day.month, key.day.day)
        op = key.op

        def cmp(d: tuple[int, int, int]) -> bool:
            if op == "before":
                return d < day
            if op == "on":
                return d == day
            return d >= day

        if not key.sent:
            return (lambda c: cmp(_local_date(c.rec.internaldate))), 0  # type: ignore[attr-defined]

        def sent(c: _Ctx) -> bool:
            d = c.sent_date()
            # No usable Date: header: fall back to the internal date, as Dovecot does.
            return cmp(d if d is not None else _local_date(c.rec.internaldate))  # type: ignore[attr-defined]

        return sent, 1


def iter_keys(key: Key) -> Iterator[Key]:
    """Every key in the tree, depth first (for the server's logging/limits)."""
    yield key
    if isinstance(key, And):
        for k in key.keys:
            yield from iter_keys(k)
    elif isinstance(key, Or):
        yield from iter_keys(key.left)
        yield from iter_keys(key.right)
    elif isinstance(key, Not):
        yield from iter_keys(key.key)
