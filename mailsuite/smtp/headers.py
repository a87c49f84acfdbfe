"""The header block of a message as it streams past: a few fields captured, missing
fields added, nothing buffered beyond one line.

:class:`HeaderScanner` sits between :class:`~mailsuite.smtp.data.DataReader` (LF
line ends, dots unstuffed) and the incoming file.  It passes the bytes through,
remembers which fields the header block has and the values of the few the server
checks (From: for sender enforcement), each capped, and at the end of the header
block (the blank line, the first line that is not a header field, or the end of the
message) inserts whatever ``extra(present)`` returns, e.g. the Message-ID and Date
an MSA adds (RFC 6409 8.2, 8.3).  A body that starts without a header block gets the
extra fields and a blank line in front of it.  Pure: no I/O, fuzzed by the tests.
"""

from __future__ import annotations

import re
from typing import Callable

# field-name = 1*ftext, printable US-ASCII except ":" (RFC 5322 3.6.8).
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
MAX_VALUE = 8192  # octets kept per captured field
MAX_VALUES = 16  # captured occurrences per field name


class HeaderScanner:
    def __init__(
        self,
        capture: tuple[str, ...] = ("from",),
        extra: Callable[[frozenset[str]], bytes] | None = None,
    ) -> None:
        self.capture = frozenset(c.lower() for c in capture)
        self.extra = extra
        self.in_headers = True
        self.present: set[str] = set()
        self.received = 0  # Received: fields seen (hops, for the loop limit)
        self.values: dict[str, list[bytes]] = {}
        self._current: str | None = None  # the captured field a continuation extends
        self._partial = b""  # an incomplete line (only while in the header block)

    def feed(self, data: bytes) -> bytes:
        """Bytes to store for ``data`` (the same bytes, plus any inserted fields)."""
        if not self.in_headers or not data:
            return data
        buf = self._partial + data
        self._partial = b""
        out: list[bytes] = []
        pos = 0
        while self.in_headers:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                self._partial = buf[pos:]
                break
            line = buf[pos:nl]
            if line in (b"", b"\r"):
                out.append(self._end_of_headers(blank_needed=False))
                out.append(buf[pos:])  # the blank line and everything after it
                return b"".join(out)
            if line[:1] in (b" ", b"\t") and self.present:
                self._continue(line)
            else:
                m = _FIELD.match(line)
                if m is None:
                    out.append(self._end_of_headers(blank_needed=True))
                    out.append(buf[pos:])
                    return b"".join(out)
                self._field(m.group(1).decode("ascii").lower(), line[m.end():])
            out.append(buf[pos : nl + 1])
            pos = nl + 1
        return b"".join(out)

    def finish(self) -> bytes:
        """Bytes to store at the end of the message (a header-only message still gets
        its extra fields)."""
        if not self.in_headers:
            return b""
        line, self._partial = self._partial, b""
        if not line:
            return self._end_of_headers(blank_needed=False)
        m = _FIELD.match(line)
        if m is None and not (line[:1] in (b" ", b"\t") and self.present):
            return self._end_of_headers(blank_needed=True) + line
        if m is not None:
            self._field(m.group(1).decode("ascii").lower(), line[m.end():])
        else:
            self._continue(line)
        added = self._end_of_headers(blank_needed=False)
        # The last line had no line end: give it one before anything is added after it.
        return line + (b"\n" + added if added else b"")

    def field_values(self, name: str) -> list[str]:
        """Unfolded values of a captured field, decoded leniently."""
        out = []
        for raw in self.values.get(name.lower(), []):
            text = raw.decode("utf-8", "replace")
            out.append(re.sub(r"\r?\n[ \t]", " ", text).strip())
        return out

    # -- internals -------------------------------------------------------------------

    def _field(self, name: str, value: bytes) -> None:
        self.present.add(name)
        if name == "received":
            self.received += 1
        if name in self.capture:
            values = self.values.setdefault(name, [])
            if len(values) < MAX_VALUES:
                values.append(value[:MAX_VALUE])
                self._current = name
                return
        self._current = None

    def _continue(self, line: bytes) -> None:
        if self._current is not None:
            values = self.values[self._current]
            room = MAX_VALUE - len(values[-1])
            if room > 0:
                values[-1] += (b"\n" + line)[:room]

    def _end_of_headers(self, blank_needed: bool) -> bytes:
        """The bytes inserted where the header block ends; ``blank_needed`` when no
        blank line separates it from the body: then one follows the added fields (a
        message nothing is added to is left exactly as it came)."""
        self.in_headers = False
        self._current = None
        added = self.extra(frozenset(self.present)) if self.extra else b""
        if blank_needed and added:
            return added + b"\n"
        return added
