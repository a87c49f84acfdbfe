"""Client-supplied text as it may appear in a log line: one helper for every front end.

A log line is read by people and by fail2ban.  Text a client chose (IMAP ID values,
logins, HELO names, addresses, command words, header values) must not be able to
forge a line, a field or a prefix of ours: issue 16 finding 1 got any address banned
by sending an ID value that looked like our fail2ban line.  So client text is logged

* :func:`quoted`: inside double quotes, with ``\\`` and ``"`` escaped and every control
  or non-printable character (C0, DEL, C1, line and paragraph separators, bidi
  controls...) written as ``\\xNN`` / ``\\uNNNN``, and cut at a bounded length; or
* :func:`printable`: our own text that embeds client text (a reply), with only the
  control and non-printable characters escaped;
* :func:`escaped`: the escapes of :func:`quoted` without the quotes, inside Postfix's ``<...>``; or
* :func:`token`: a bare word (the login of the fail2ban line, Postfix/Dovecot style
  ``user=...``): anything that is not a printable non-space character becomes ``?``.
"""

from __future__ import annotations

QUOTED_MAX = 200
TOKEN_MAX = 128


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


def _escape(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if c == '"':
        return '\\"'
    if c.isprintable():
        return c
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def quoted(value: str | bytes | None, limit: int = QUOTED_MAX) -> str:
    """``"text"``, escaped; longer text ends in ``..."``."""
    text = _text(value)
    cut = len(text) > limit
    body = "".join(_escape(c) for c in text[:limit])
    return f'"{body}{"..." if cut else ""}"'


def printable(value: str | bytes | None, limit: int = QUOTED_MAX) -> str:
    """Our own text that embeds client text (a reply such as ``<addr>: Relay access
    denied``), as Postfix logs it: control and non-printable characters escaped."""
    text = _text(value)
    body = "".join(c if c.isprintable() else _escape(c) for c in text[:limit])
    return body + ("..." if len(text) > limit else "")


def escaped(value: str | bytes | None, limit: int = QUOTED_MAX) -> str:
    """Like :func:`quoted` without the quotes, for Postfix's ``from=<...>`` fields;
    ``<`` and ``>`` are escaped too, so the field cannot end early."""
    text = _text(value)
    body = "".join(_escape(c) if c not in "<>" else f"\\x{ord(c):02x}" for c in text[:limit])
    return body + ("..." if len(text) > limit else "")


def token(value: str | bytes | None, limit: int = TOKEN_MAX) -> str:
    """A bare word: no space, quote or control character can start another field."""
    out = "".join(c if c.isprintable() and not c.isspace() else "?" for c in _text(value)[:limit])
    return out or "-"
