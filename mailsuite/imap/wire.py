"""Small IMAP response formatting helpers: strings, mailbox names, flag lists.

Everything returns bytes ready to be joined into a response line.  Message data
(ENVELOPE, BODYSTRUCTURE, sections) is formatted by bodystructure.py; this module covers
what the protocol itself says (strings, mailbox names, flag lists, UID sets).
"""

from __future__ import annotations

from typing import Any, Iterable

from mailsuite import mutf7

# The system flags a client may set (\\Recent is the server's), in FLAGS order.
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")

_QUOTE_SAFE = frozenset(range(0x20, 0x7F)) - {0x22, 0x5C}


def string(value: bytes) -> bytes:
    """An IMAP string: quoted when short printable ASCII, else a literal."""
    if len(value) < 1024 and all(c in _QUOTE_SAFE for c in value):
        return b'"' + value + b'"'
    if len(value) < 1024 and all(0x20 <= c < 0x7F for c in value):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(value) + value


def mailbox(name: str, utf8: bool = False) -> bytes:
    """A mailbox name on the wire: modified UTF-7, quoted (or a literal); after
    ENABLE UTF8=ACCEPT the name in UTF-8, which RFC 6855 3 allows in a quoted string."""
    if not utf8:
        return string(mutf7.encode(name))
    raw = name.encode("utf-8")
    if len(raw) < 1024 and b"\r" not in raw and b"\n" not in raw:
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return string(raw)


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + " ".join(flags).encode("ascii", "replace") + b")"


_flag_text: dict[tuple[frozenset, bool], bytes] = {}


def flags_bytes(flags: frozenset[str], recent: bool = False) -> bytes:
    """``(\\Flagged \\Seen)``; memoised: a folder has few distinct flag sets, and
    FETCH 1:* (FLAGS) formats one per message."""
    key = (flags, recent)
    out = _flag_text.get(key)
    if out is None:
        items = sorted(flags)
        if recent:
            items.append("\\Recent")
        out = ("(" + " ".join(items) + ")").encode("utf-8", "replace")
        if len(_flag_text) > 4096:
            _flag_text.clear()
        _flag_text[key] = out
    return out


def flag_fetch_lines(pairs: Iterable[tuple[int, Any]], recent: set[int], with_uid: bool) -> list[bytes]:
    """``* n FETCH (FLAGS (...))`` (``(UID u FLAGS (...))`` with ``with_uid``) for each
    (sequence number, record): what STORE answers and UID FETCH 1:* (FLAGS) sends.
    The flag text is memoised per flag set here, not through flags_bytes' own memo (a
    key tuple and a call per message): 10,000 lines 3.0 -> 2.6 ms."""
    memo: dict[frozenset[str], bytes] = {}
    out = []
    append = out.append
    for seq, r in pairs:
        u, f = r.uid, r.flags
        if u in recent:
            text = flags_bytes(f, True)
        else:
            text = memo.get(f)  # type: ignore[assignment]
            if text is None:
                text = memo[f] = flags_bytes(f, False)
        append(b"* %d FETCH (UID %d FLAGS %s)\r\n" % (seq, u, text) if with_uid else
               b"* %d FETCH (FLAGS %s)\r\n" % (seq, text))
    return out


def uid_set_text(uids: Iterable[int]) -> bytes:
    """``[1, 2, 3, 5]`` → ``b"1:3,5"`` (order kept, runs compressed)."""
    out: list[str] = []
    start = prev = None
    for u in uids:
        if start is None:
            start = prev = u
        elif u == prev + 1:
            prev = u
        else:
            out.append(str(start) if start == prev else f"{start}:{prev}")
            start = prev = u
    if start is not None:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out).encode("ascii")


def text(value: str) -> bytes:
    """Human-readable response text: one line, ASCII."""
    return value.replace("\r", " ").replace("\n", " ").encode("ascii", "replace")
