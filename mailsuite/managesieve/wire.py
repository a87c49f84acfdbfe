"""ManageSieve's wire syntax (RFC 5804 4): commands in, responses out.

A command is an atom followed by strings (quoted, or literals ``{n+}``/``{n}`` with
the octets after the CRLF) and numbers, ended by CRLF.  :func:`parse_command` reads
one from the front of a buffer and says how many bytes it used, or that more bytes
are needed; it never copies a literal more than once.  A literal longer than the
limit raises :class:`LiteralTooBig` so the server can skip it and answer NO.
"""

from __future__ import annotations

import re

_ATOM = re.compile(rb"[A-Za-z]+")
_NUMBER = re.compile(rb"[0-9]+")
_LITERAL = re.compile(rb"\{([0-9]{1,10})(\+?)\}\r?\n")


class ParseError(Exception):
    pass


class LiteralTooBig(Exception):
    def __init__(self, size: int, skip_from: int) -> None:
        super().__init__(f"literal of {size} octets is too big")
        self.size = size
        self.skip_from = skip_from  # where the literal's octets start in the buffer


def parse_command(buf: bytes, max_literal: int, max_line: int) -> tuple[list[bytes | int], int] | None:
    """(tokens, bytes consumed) of the first command in ``buf``, or None if it is not
    complete yet.  The first token is the command name (upper-cased bytes); strings
    are bytes, numbers ints."""
    pos = 0
    tokens: list[bytes | int] = []
    n = len(buf)
    line_start = 0
    while True:
        while pos < n and buf[pos] == 0x20:
            pos += 1
        if pos >= n:
            if pos - line_start > max_line:
                raise ParseError("line too long")
            return None
        c = buf[pos]
        if c == 0x0D or c == 0x0A:
            if c == 0x0D:
                if pos + 1 >= n:
                    return None
                if buf[pos + 1] != 0x0A:
                    raise ParseError("CR without LF")
                pos += 1
            pos += 1
            if not tokens:
                raise ParseError("empty command")
            return tokens, pos
        if pos - line_start > max_line:
            raise ParseError("line too long")
        if not tokens:
            m = _ATOM.match(buf, pos)
            if m is None:
                raise ParseError("expected a command name")
            tokens.append(m.group().upper())
            pos = m.end()
            if pos < n and buf[pos] not in b" \r\n":
                raise ParseError("expected a command name")
            continue
        if c == 0x22:  # quoted string
            out = bytearray()
            i = pos + 1
            while True:
                if i >= n:
                    if i - line_start > max_line:
                        raise ParseError("line too long")
                    return None
                ch = buf[i]
                if ch == 0x5C:
                    if i + 1 >= n:
                        return None
                    nxt = buf[i + 1]
                    if nxt not in b'"\\':
                        raise ParseError("bad escape in quoted string")
                    out.append(nxt)
                    i += 2
                    continue
                if ch == 0x22:
                    break
                if ch in (0x0D, 0x0A, 0x00):
                    raise ParseError("line break in quoted string")
                out.append(ch)
                i += 1
            tokens.append(bytes(out))
            pos = i + 1
        elif c == 0x7B:  # literal
            m = _LITERAL.match(buf, pos)
            if m is None:
                if b"\n" in buf[pos:pos + 16] or n - pos >= 16:
                    raise ParseError("bad literal")
                return None
            size = int(m.group(1))
            if size > max_literal:
                raise LiteralTooBig(size, m.end())
            end = m.end() + size
            if end > n:
                return None
            tokens.append(buf[m.end():end])
            pos = end
            line_start = pos
        elif 0x30 <= c <= 0x39:
            m = _NUMBER.match(buf, pos)
            assert m is not None
            if len(m.group()) > 10:
                raise ParseError("number too large")
            tokens.append(int(m.group()))
            pos = m.end()
        else:
            raise ParseError("unexpected character")
        if pos < n and buf[pos] not in b" \r\n":
            raise ParseError("expected a space")


def quote(value: str | bytes) -> bytes:
    """A string as a quoted string if it fits, else as a literal (RFC 5804 4)."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) < 1024 and b"\r" not in raw and b"\n" not in raw and b"\x00" not in raw:
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(raw) + raw
