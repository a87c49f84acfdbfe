"""Turning a message file (LF line ends on disk) into a POP3 multi-line response body.

Every bare LF goes out as CRLF, every line that starts with '.' gets one more '.'
(RFC 1939 3), a last line without a line end gets one, and the caller appends the
terminating ``.\\r\\n``.  The state that spans chunk boundaries (a CR at the end of a
chunk whose LF starts the next one; whether the next chunk starts a line) is carried in
:class:`Encoder`, which is what Twisted's pop3 gets wrong: its FileWrapper stuffs dots
per 16 KiB chunk, so a line starting with '.' right after a chunk boundary goes out
unstuffed and a '.' line there ends the response early (research §2.5/§5).

Whole chunks are transformed with bytes.replace (no Python loop per line): RETR of a
large message costs a few passes over memory per 64 KiB.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

CHUNK = 1 << 16


class Encoder:
    """Feed raw file bytes in any chunking; get wire bytes out."""

    def __init__(self) -> None:
        self._at_line_start = True
        self._held_cr = False
        self._empty = True

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if data.endswith(b"\r"):
            # Its LF may be in the next chunk: decide then whether this CR ends a line.
            data = data[:-1]
            self._held_cr = True
            if not data:
                return b""
        self._empty = False
        out = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").replace(b"\n.", b"\n..")
        if self._at_line_start and out[:1] == b".":
            out = b"." + out
        self._at_line_start = out.endswith(b"\n")
        return out

    def finish(self) -> bytes:
        """The end of the message: a pending CR, and a line end if the last line lacks
        one (the terminator must start a line)."""
        tail = b""
        if self._held_cr:
            self._held_cr = False
            tail = b"\r"
            self._at_line_start = False
        if self._empty and not tail:
            return b""
        if not self._at_line_start:
            tail += b"\r\n"
            self._at_line_start = True
        return tail


def encode_all(data: bytes) -> bytes:
    """A whole message (small) → its stuffed body, without the terminator."""
    enc = Encoder()
    return enc.feed(data) + enc.finish()


def iter_encoded(f: BinaryIO, chunk: int = CHUNK) -> Iterator[bytes]:
    """The stuffed body of a message file, chunk by chunk (without the terminator)."""
    enc = Encoder()
    while block := f.read(chunk):
        out = enc.feed(block)
        if out:
            yield out
    tail = enc.finish()
    if tail:
        yield tail


def top_lines(f: BinaryIO, body_lines: int, max_line: int = CHUNK) -> bytes:
    """TOP: the header, the blank line, and the first ``body_lines`` lines of the body,
    stuffed, without the terminator.  Reads only as much of the file as it needs."""
    head = f.read(CHUNK)
    cut = _top_cut(head, body_lines, len(head) < CHUNK)
    if cut is not None:
        return encode_all(head[:cut])
    f.seek(0)  # a long header or many lines: go line by line
    return _top_by_lines(f, body_lines, max_line)


def _top_cut(data: bytes, body_lines: int, whole: bool) -> int | None:
    """Where TOP's answer ends in ``data`` (the file's first bytes; ``whole`` if that
    is all of it), or None if ``data`` is not enough to tell."""
    if data[:1] == b"\n":
        pos = 1
    elif data[:2] == b"\r\n":
        pos = 2
    else:
        ends = [i for i in (data.find(b"\n\n"), data.find(b"\n\r\n")) if i >= 0]
        if not ends:
            return len(data) if whole else None
        i = min(ends)
        pos = i + (2 if data[i + 1 : i + 2] == b"\n" else 3)
    for _ in range(body_lines):
        nl = data.find(b"\n", pos)
        if nl < 0:
            return len(data) if whole else None
        pos = nl + 1
    return pos


def _top_by_lines(f: BinaryIO, body_lines: int, max_line: int) -> bytes:
    enc = Encoder()
    out = []
    in_header = True
    remaining = body_lines
    while True:
        if not in_header and remaining <= 0:
            break
        line = f.readline(max_line)
        if not line:
            break
        complete = line.endswith(b"\n")
        out.append(enc.feed(line))
        if not complete:
            continue  # a very long line: the rest of it counts as the same line
        if in_header:
            if line in (b"\n", b"\r\n"):
                in_header = False
        else:
            remaining -= 1
    out.append(enc.finish())
    return b"".join(out)
