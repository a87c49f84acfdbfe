"""IMAP command parsing (RFC 3501 §9 grammar): one complete command in, a Command out.

Pure code, no I/O.  The protocol frames a command as ``segments`` (the lines, CRLF
removed; every segment but the last ends with a literal announcement ``{n}`` or
``{n+}``) and ``literals`` (the bytes of each literal, in order); :func:`parse_command`
turns that into a :class:`Command` whose ``args`` are typed per command.  Anything that
does not follow the grammar raises :class:`ParseError` (tagged BAD, or untagged BAD
when not even the tag could be read).

Helpers the framing layer needs before a command is complete live here too:
:func:`literal_announcement` (does this line end in ``{n}`` / ``{n+}``?) and
:func:`peek_tag_and_name` (the tag and verb, to pick the literal size limit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = [
    "ParseError",
    "SeqSet",
    "FetchAtt",
    "Command",
    "parse_command",
    "parse_seqset",
    "literal_announcement",
    "peek_tag_and_name",
]

MAX_NUMBER = 2**32 - 1


class ParseError(ValueError):
    """Malformed command; ``tag`` is set when the tag could be read."""

    def __init__(self, message: str, tag: bytes | None = None) -> None:
        super().__init__(message)
        self.tag = tag


# --- character classes (RFC 3501 §9) ------------------------------------------------

_CTL = set(range(0x00, 0x20)) | {0x7F}
_ATOM_SPECIALS = set(b'(){ %*"\\]') | _CTL
ATOM_CHARS = frozenset(c for c in range(0x01, 0x80) if c not in _ATOM_SPECIALS)
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
LIST_CHARS = ATOM_CHARS | {ord("%"), ord("*"), ord("]")}
TAG_CHARS = ASTRING_CHARS - {ord("+")}
# Fetch attribute atoms stop at '[' and '<' as well (BODY[...]<...>).
_LITERAL_RE = re.compile(rb"\{(\d{1,10})(\+?)\}$")


def literal_announcement(line: bytes) -> tuple[int, bool] | None:
    """``(size, non_synchronizing)`` if ``line`` (CRLF removed) ends in ``{n}``/``{n+}``."""
    if not line.endswith(b"}"):
        return None
    m = _LITERAL_RE.search(line)
    if m is None:
        return None
    return int(m.group(1)), m.group(2) == b"+"


def peek_tag_and_name(line: bytes) -> tuple[bytes, str]:
    """The tag and upper-case verb of a command's first line ("UID FETCH" for UID);
    empty strings where they cannot be read.  Used before the command is complete."""
    parts = line.split(b" ", 3)
    tag = parts[0] if parts and parts[0] and all(c in TAG_CHARS for c in parts[0]) else b""
    name = parts[1].upper().decode("ascii", "replace") if len(parts) > 1 else ""
    if name == "UID" and len(parts) > 2:
        name = "UID " + parts[2].upper().decode("ascii", "replace")
    return tag, name


# --- values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeqSet:
    """A sequence set; each range is ``(low, high)`` as sent, None standing for ``*``.
    ``saved`` is RFC 5182's ``$`` (the result a SEARCH RETURN (SAVE) kept; no ranges):
    the selected mailbox resolves it."""

    ranges: tuple[tuple[int | None, int | None], ...]
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Ranges with ``*`` replaced by ``largest`` and low <= high (RFC 3501 §9:
        ``4:2`` is ``2:4``)."""
        out = []
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            out.append((a, b) if a <= b else (b, a))
        return out

    def __str__(self) -> str:
        def n(x: int | None) -> str:
            return "*" if x is None else str(x)

        if self.saved:
            return "$"
        return ",".join(n(lo) if lo == hi else f"{n(lo)}:{n(hi)}" for lo, hi in self.ranges)


SAVED = SeqSet((), saved=True)


def parse_seqset(text: bytes | str) -> SeqSet:
    """``b"1:5,7,9:*"`` → SeqSet(((1, 5), (7, 7), (9, None))); ParseError if malformed."""
    if isinstance(text, str):
        text = text.encode("ascii", "replace")
    if not text:
        raise ParseError("empty sequence set")
    ranges = []
    for item in text.split(b","):
        lo_s, colon, hi_s = item.partition(b":")
        lo = _seq_number(lo_s)
        hi = _seq_number(hi_s) if colon else lo
        ranges.append((lo, hi))
    return SeqSet(tuple(ranges))


def _seq_number(s: bytes) -> int | None:
    if s == b"*":
        return None
    if not s or not s.isdigit() or s[0] == ord("0") or len(s) > 10:
        raise ParseError(f"bad sequence number {s.decode('ascii', 'replace')!r}")
    n = int(s)
    if n > MAX_NUMBER:
        raise ParseError("sequence number out of range")
    return n


@dataclass(frozen=True, slots=True)
class FetchAtt:
    """One FETCH data item.  ``name``: ENVELOPE, FLAGS, INTERNALDATE, RFC822,
    RFC822.HEADER, RFC822.SIZE, RFC822.TEXT, BODY, BODYSTRUCTURE, UID, BINARY[] and
    BINARY.SIZE (RFC 3516, ``peek`` for BINARY.PEEK), or BODY[] for the section forms (``section`` = the raw text between the brackets, ``peek``
    for BODY.PEEK, ``partial`` = (origin, length))."""

    name: str
    section: bytes | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None


@dataclass(frozen=True)
class Command:
    tag: bytes
    name: str  # upper case; "UID FETCH" etc. for UID commands
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def uid(self) -> bool:
        return self.name.startswith("UID ")


# --- the reader over segments and literals -----------------------------------------


class Reader:
    def __init__(self, segments: Sequence[bytes], literals: Sequence[bytes]) -> None:
        if len(literals) != len(segments) - 1:
            raise ParseError("literal count does not match the command's lines")
        self.segs = segments
        self.lits = literals
        self.i = 0
        self.pos = 0
        self.line = segments[0]

    # position helpers
    def peek(self) -> int:
        return self.line[self.pos] if self.pos < len(self.line) else -1

    def at_end(self) -> bool:
        return self.pos >= len(self.line) and self.i == len(self.segs) - 1

    def end(self) -> None:
        if not self.at_end():
            rest = self.line[self.pos : self.pos + 20].decode("ascii", "replace")
            raise ParseError(f"unexpected characters at end of command: {rest!r}")

    def expect(self, token: bytes) -> None:
        if self.line[self.pos : self.pos + len(token)] != token:
            got = self.line[self.pos : self.pos + 10].decode("ascii", "replace")
            raise ParseError(f"expected {token.decode()!r}, got {got!r}")
        self.pos += len(token)

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise ParseError("expected a space" if not self.at_end() else "missing argument")
        self.pos += 1

    def maybe(self, token: bytes) -> bool:
        if self.line[self.pos : self.pos + len(token)] == token:
            self.pos += len(token)
            return True
        return False

    def maybe_ci(self, token: bytes) -> bool:
        if self.line[self.pos : self.pos + len(token)].upper() == token:
            self.pos += len(token)
            return True
        return False

    def _run(self, allowed: frozenset[int] | set[int]) -> bytes:
        start = self.pos
        line = self.line
        n = len(line)
        p = start
        while p < n and line[p] in allowed:
            p += 1
        self.pos = p
        return line[start:p]

    # grammar pieces
    def atom(self) -> bytes:
        a = self._run(ATOM_CHARS)
        if not a:
            raise ParseError("expected an atom" if not self.at_end() else "missing argument")
        return a

    def number(self, nonzero: bool = False) -> int:
        s = self._run(frozenset(b"0123456789"))
        if not s or len(s) > 10:
            raise ParseError("expected a number")
        n = int(s)
        if n > MAX_NUMBER or (nonzero and n == 0):
            raise ParseError("number out of range")
        return n

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        line = self.line
        p = self.pos
        while True:
            if p >= len(line):
                raise ParseError("unterminated quoted string")
            c = line[p]
            if c == 0x22:
                self.pos = p + 1
                return bytes(out)
            if c == 0x5C:
                p += 1
                if p >= len(line) or line[p] not in (0x22, 0x5C):
                    raise ParseError("bad escape in quoted string")
                c = line[p]
            elif c in (0x00, 0x0D, 0x0A):
                raise ParseError("bad character in quoted string")
            out.append(c)
            p += 1

    def literal(self) -> bytes:
        m = _LITERAL_RE.match(self.line, self.pos)
        if m is None or m.end() != len(self.line) or self.i >= len(self.lits):
            raise ParseError("bad literal")
        value = self.lits[self.i]
        if len(value) != int(m.group(1)):
            raise ParseError("literal size mismatch")
        self.i += 1
        self.line = self.segs[self.i]
        self.pos = 0
        return value

    def string(self) -> bytes:
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()
        raise ParseError("expected a string" if not self.at_end() else "missing argument")

    def astring(self) -> bytes:
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string()
        a = self._run(ASTRING_CHARS)
        if not a:
            raise ParseError("expected a string or atom" if not self.at_end() else "missing argument")
        return a

    def nstring(self) -> bytes | None:
        if self.line[self.pos : self.pos + 3].upper() == b"NIL" and (
            self.pos + 3 == len(self.line) or self.line[self.pos + 3] in b" )"
        ):
            self.pos += 3
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string()
        a = self._run(LIST_CHARS)
        if not a:
            raise ParseError("expected a mailbox pattern")
        return a

    def flag(self) -> str:
        start = self.pos
        if self.maybe(b"\\"):
            if self.maybe(b"*"):
                return "\\*"
            a = self.atom()
            return "\\" + a.decode("ascii")
        del start
        return self.atom().decode("ascii")

    def flag_list(self) -> list[str]:
        self.expect(b"(")
        flags: list[str] = []
        if self.maybe(b")"):
            return flags
        while True:
            flags.append(self.flag())
            if self.maybe(b")"):
                return flags
            self.sp()

    def seqset(self) -> SeqSet:
        if self.peek() == 0x24:  # '$': the saved search result (RFC 5182)
            self.pos += 1
            return SAVED
        s = self._run(frozenset(b"0123456789:,*"))
        if not s:
            raise ParseError("expected a sequence set" if not self.at_end() else "missing argument")
        return parse_seqset(s)

    def date_time(self) -> bytes:
        """The date-time of APPEND, quoted; its text (validated by msgdata.parse_internaldate)."""
        return self.quoted()

    def tokens(self, depth: int = 0) -> list[Any]:
        """Generic tokens up to the end of the command or a ')' (for SEARCH, ID...):
        str atoms, bytes strings, lists for parentheses."""
        out: list[Any] = []
        if depth > 32:
            raise ParseError("too deeply nested")
        while True:
            c = self.peek()
            if c == -1 and self.at_end():
                if depth:
                    raise ParseError("missing ')'")
                return out
            if c == 0x29:  # ')'
                if not depth:
                    raise ParseError("unexpected ')'")
                return out
            if out:
                self.sp()
                c = self.peek()
            if c == 0x28:
                self.pos += 1
                inner = self.tokens(depth + 1)
                self.expect(b")")
                out.append(inner)
            elif c in (0x22, 0x7B):
                out.append(self.string())
            else:
                # atoms, plus the few specials that appear in search atoms (1:*, \Seen)
                a = self._run(ATOM_CHARS | {ord("*"), ord("\\"), ord("]")})
                if not a:
                    raise ParseError("unexpected character")
                out.append(a.decode("ascii"))


# --- commands -------------------------------------------------------------------------


def parse_command(segments: Sequence[bytes], literals: Sequence[bytes] = ()) -> Command:
    r = Reader(segments, literals)
    tag = r._run(TAG_CHARS)
    if tag and r.at_end():
        raise ParseError("Missing command", tag)
    if not tag or r.peek() != 0x20:
        raise ParseError("Missing or malformed tag")
    try:
        r.sp()
        name = r.atom().decode("ascii").upper()
        if name == "UID":
            r.sp()
            sub = r.atom().decode("ascii").upper()
            if sub not in _UID_COMMANDS:
                raise ParseError(f"Unknown command UID {sub[:20]}")
            name = "UID " + sub
            parser = _uid_expunge if sub == "EXPUNGE" else _PARSERS[sub]
        else:
            parser = _PARSERS.get(name)
            if parser is None:
                raise ParseError(f"Unknown command {name[:20]}")
        args = parser(r)
        r.end()
    except ParseError as e:
        e.tag = tag
        raise
    return Command(tag, name, args)


_UID_COMMANDS = {"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD"}


def _none(r: Reader) -> dict[str, Any]:
    return {}


def _mailbox(r: Reader) -> bytes:
    return r.astring()


def _one_mailbox(r: Reader) -> dict[str, Any]:
    r.sp()
    return {"mailbox": _mailbox(r)}


def _login(r: Reader) -> dict[str, Any]:
    r.sp()
    user = r.astring()
    r.sp()
    return {"user": user, "password": r.astring()}


def _authenticate(r: Reader) -> dict[str, Any]:
    r.sp()
    mech = r.atom().decode("ascii").upper()
    initial = None
    if r.maybe(b" "):
        if r.maybe(b"="):
            initial = b""
        else:
            initial = r._run(frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="))
            if not initial:
                raise ParseError("bad initial response")
    return {"mechanism": mech, "initial": initial}


def _create(r: Reader) -> dict[str, Any]:
    r.sp()
    mbox = _mailbox(r)
    use: list[str] = []
    if r.maybe(b" "):
        # RFC 6154 CREATE-SPECIAL-USE: (USE (\Sent))
        r.expect(b"(")
        if not r.maybe_ci(b"USE"):
            raise ParseError("expected USE")
        r.sp()
        use = r.flag_list()
        r.expect(b")")
    return {"mailbox": mbox, "use": use}


def _rename(r: Reader) -> dict[str, Any]:
    r.sp()
    old = _mailbox(r)
    r.sp()
    return {"old": old, "new": _mailbox(r)}


def _spaced_list(r: Reader, item: Callable[[], bytes]) -> list[bytes]:
    """``(a b c)``: items read by ``item``, separated by single spaces; may be empty."""
    r.expect(b"(")
    out: list[bytes] = []
    while not r.maybe(b")"):
        if out:
            r.sp()
        out.append(item())
    return out


def _list(r: Reader) -> dict[str, Any]:
    """LIST / LSUB, with LIST-EXTENDED (RFC 5258): ``(selection options)`` before the
    reference, a parenthesized list of patterns, ``RETURN (options)`` after.
    ``extended`` says whether any of that was used (options are checked by the command)."""
    r.sp()
    select_opts: list[str] = []
    extended = False
    if r.peek() == 0x28:
        extended = True
        select_opts = [a.decode("ascii").upper() for a in _spaced_list(r, r.atom)]
        r.sp()
    ref = _mailbox(r)
    r.sp()
    if r.peek() == 0x28:
        extended = True
        patterns = _spaced_list(r, r.list_mailbox)
        if not patterns:
            raise ParseError("empty mailbox pattern list")
    else:
        patterns = [r.list_mailbox()]
    returns: list[str] = []
    if r.maybe(b" "):
        extended = True
        if not r.maybe_ci(b"RETURN"):
            raise ParseError("expected RETURN")
        r.sp()
        r.expect(b"(")
        while not r.maybe(b")"):
            if returns:
                r.sp()
            opt = r.atom().decode("ascii").upper()
            if opt == "STATUS":
                r.sp()
                returns.append("STATUS")
                returns.extend("STATUS:" + a for a in _status_atts(r))
            else:
                returns.append(opt)
    return {"reference": ref, "pattern": patterns[0], "patterns": patterns, "select": select_opts,
            "return": returns, "extended": extended}


_STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ", "APPENDLIMIT",
                 "DELETED", "DELETED-STORAGE"}


def _status_atts(r: Reader) -> list[str]:
    r.expect(b"(")
    items = []
    while not r.maybe(b")"):
        if items:
            r.sp()
        item = r.atom().decode("ascii").upper()
        if item not in _STATUS_ITEMS:
            raise ParseError(f"unknown STATUS item {item[:20]}")
        items.append(item)
    if not items:
        raise ParseError("empty STATUS item list")
    return items


def _status(r: Reader) -> dict[str, Any]:
    r.sp()
    mbox = _mailbox(r)
    r.sp()
    return {"mailbox": mbox, "items": _status_atts(r)}


def _append(r: Reader) -> dict[str, Any]:
    """APPEND, with MULTIAPPEND (RFC 3502): after the mailbox one or more messages, each
    ``[flag-list SP] [date-time SP] literal``.  ``messages`` lists (flags, date,
    message); flags/date/message are the first one's."""
    r.sp()
    mbox = _mailbox(r)
    messages = []
    while True:
        r.sp()
        flags: list[str] = []
        date = None
        if r.peek() == 0x28:
            flags = r.flag_list()
            r.sp()
        if r.peek() == 0x22:
            date = r.date_time()
            r.sp()
        if r.peek() == 0x7E and r.line[r.pos + 1 : r.pos + 2] == b"{":
            r.pos += 1  # a literal8 (RFC 3516 4.4): the message may hold any octet
        elif r.peek() != 0x7B:
            raise ParseError("APPEND needs the message as a literal")
        messages.append((flags, date, r.literal()))
        if r.at_end():
            break
    flags, date, message = messages[0]
    return {"mailbox": mbox, "flags": flags, "date": date, "message": message, "messages": messages}


def _quota_root(r: Reader) -> dict[str, Any]:
    r.sp()
    return {"root": r.astring()}


def _setquota(r: Reader) -> dict[str, Any]:
    """RFC 9208 SETQUOTA root (resource limit ...): parsed so that it gets its NO."""
    r.sp()
    root = r.astring()
    r.sp()
    r.expect(b"(")
    limits: list[tuple[str, int]] = []
    while not r.maybe(b")"):
        if limits:
            r.sp()
        resource = r.atom().upper()
        r.sp()
        limits.append((resource, r.number()))
        if len(limits) > 10:
            raise ParseError("too many SETQUOTA resources")
    return {"root": root, "limits": limits}


def _select(r: Reader) -> dict[str, Any]:
    r.sp()
    mbox = _mailbox(r)
    params: list[Any] = []
    if r.maybe(b" "):
        r.expect(b"(")
        params = r.tokens(1)
        r.expect(b")")
    return {"mailbox": mbox, "params": params}


_FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_ATTS = {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
                "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ"}
_FETCH_ATOM = frozenset(ATOM_CHARS - {ord("["), ord("<")})


def _fetch_att(r: Reader) -> FetchAtt:
    name = r._run(_FETCH_ATOM).decode("ascii").upper()
    if not name:
        raise ParseError("expected a fetch attribute")
    if name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE") and r.peek() == 0x5B:
        r.pos += 1
        start = r.pos
        depth = 0
        line = r.line
        while True:
            if r.pos >= len(line):
                raise ParseError("missing ']' in section")
            c = line[r.pos]
            if c == 0x28:
                depth += 1
            elif c == 0x29:
                depth -= 1
            elif c == 0x22:
                r.quoted()
                continue
            elif c == 0x5D and depth <= 0:
                break
            r.pos += 1
        section = line[start : r.pos]
        r.pos += 1
        partial = None
        if name != "BINARY.SIZE" and r.maybe(b"<"):
            origin = r.number()
            r.expect(b".")
            length = r.number(nonzero=True)
            r.expect(b">")
            partial = (origin, length)
        if name.startswith("BINARY"):  # RFC 3516; the section is checked by imap/binary.py
            return FetchAtt("BINARY.SIZE" if name == "BINARY.SIZE" else "BINARY[]", section, name == "BINARY.PEEK",
                            partial)
        return FetchAtt("BODY[]", section, name == "BODY.PEEK", partial)
    if name not in _SIMPLE_ATTS:
        raise ParseError(f"unknown fetch attribute {name[:30]}")
    return FetchAtt(name)


def _fetch(r: Reader) -> dict[str, Any]:
    r.sp()
    seqset = r.seqset()
    r.sp()
    atts: list[FetchAtt] = []
    if r.maybe(b"("):
        while True:
            atts.append(_fetch_att(r))
            if r.maybe(b")"):
                break
            r.sp()
    else:
        save = r.pos
        word = r._run(_FETCH_ATOM).decode("ascii").upper()
        if word in _FETCH_MACROS:
            atts = [FetchAtt(n) for n in _FETCH_MACROS[word]]
        else:
            r.pos = save
            atts.append(_fetch_att(r))
    modifiers: list[Any] = []
    if r.maybe(b" "):  # fetch modifiers: (CHANGEDSINCE n [VANISHED]), RFC 7162
        r.expect(b"(")
        modifiers = r.tokens(1)
        r.expect(b")")
    return {"set": seqset, "atts": atts, "modifiers": modifiers}


def _store(r: Reader) -> dict[str, Any]:
    r.sp()
    seqset = r.seqset()
    r.sp()
    modifiers: list[Any] = []
    if r.maybe(b"("):  # store modifiers: (UNCHANGEDSINCE n), RFC 7162
        modifiers = r.tokens(1)
        r.expect(b")")
        r.sp()
    mode = "="
    if r.maybe(b"+"):
        mode = "+"
    elif r.maybe(b"-"):
        mode = "-"
    item = r.atom().decode("ascii").upper()
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise ParseError("expected FLAGS or FLAGS.SILENT")
    r.sp()
    if r.peek() == 0x28:
        flags = r.flag_list()
    else:
        flags = [r.flag()]
        while r.maybe(b" "):
            flags.append(r.flag())
    if "\\*" in flags:
        raise ParseError("\\* is not a flag")
    return {"set": seqset, "mode": mode, "silent": item.endswith(".SILENT"), "flags": flags, "modifiers": modifiers}


def _copy(r: Reader) -> dict[str, Any]:
    r.sp()
    seqset = r.seqset()
    r.sp()
    return {"set": seqset, "mailbox": _mailbox(r)}


def _uid_expunge(r: Reader) -> dict[str, Any]:
    r.sp()
    return {"set": r.seqset()}


def _search(r: Reader) -> dict[str, Any]:
    r.sp()
    return {"tokens": r.tokens()}


def _sort(r: Reader) -> dict[str, Any]:
    """SORT (RFC 5256): ``(sort-criterion ...) charset search-key...``; the criteria
    are checked by mailsuite.imap.sort, the search keys by the SEARCH parser."""
    r.sp()
    criteria = [a.decode("ascii") for a in _spaced_list(r, r.atom)]
    if not criteria:
        raise ParseError("empty sort criteria")
    r.sp()
    charset = r.astring()
    r.sp()
    return {"criteria": criteria, "charset": charset, "tokens": r.tokens()}


def _thread(r: Reader) -> dict[str, Any]:
    """THREAD (RFC 5256): ``algorithm charset search-key...``."""
    r.sp()
    algorithm = r.atom().decode("ascii")
    r.sp()
    charset = r.astring()
    r.sp()
    return {"algorithm": algorithm, "charset": charset, "tokens": r.tokens()}


def _compress(r: Reader) -> dict[str, Any]:
    """COMPRESS (RFC 4978): one mechanism name."""
    r.sp()
    return {"mechanism": r.atom().decode("ascii").upper()}


def _enable(r: Reader) -> dict[str, Any]:
    caps = []
    while r.maybe(b" "):
        caps.append(r.atom().decode("ascii").upper())
    if not caps:
        raise ParseError("ENABLE needs a capability")
    return {"capabilities": caps}


def _id(r: Reader) -> dict[str, Any]:
    r.sp()
    if r.maybe_ci(b"NIL"):
        return {"params": None}
    r.expect(b"(")
    params: dict[str, bytes | None] = {}
    first = True
    while not r.maybe(b")"):
        if not first:
            r.sp()
        first = False
        key = r.string()
        r.sp()
        params[key.decode("utf-8", "replace")[:30]] = r.nstring()
        if len(params) > 30:
            raise ParseError("too many ID parameters")
    return {"params": params}


_PARSERS = {
    "CAPABILITY": _none,
    "NOOP": _none,
    "LOGOUT": _none,
    "STARTTLS": _none,
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "SELECT": _select,
    "EXAMINE": _select,
    "CREATE": _create,
    "DELETE": _one_mailbox,
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox,
    "UNSUBSCRIBE": _one_mailbox,
    "LIST": _list,
    "LSUB": _list,
    "STATUS": _status,
    "APPEND": _append,
    "CHECK": _none,
    "CLOSE": _none,
    "UNSELECT": _none,
    "EXPUNGE": _none,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _copy,
    "IDLE": _none,
    "NAMESPACE": _none,
    "ID": _id,
    "ENABLE": _enable,
    "GETQUOTA": _quota_root,
    "GETQUOTAROOT": _one_mailbox,
    "SETQUOTA": _setquota,
    "SORT": _sort,
    "THREAD": _thread,
    "COMPRESS": _compress,
}
