"""Reading a stored message: the header block alone, and the fields SEARCH asks for most.

Pure functions over open files and bytes (no folder state), used by
:class:`mailsuite.store.folder.Folder`'s reading methods.  The search fields are kept
per message in the folder's cache (key :data:`SEARCH_CACHE_KEY`) so that a repeated
SEARCH FROM / SUBJECT over a big folder does not open every file again.  An address
field written with comments, quoting or spaces around its ``@`` is kept a second time
as IMAP's ENVELOPE shows it (``user@domain.org`` for ``<user (c)@ (c) domain.org>``),
so that a search can skip every message whose cached text lacks the search string.
"""

from __future__ import annotations

from typing import BinaryIO

from mailsuite import mime

# Header fields SEARCH asks for most (FROM/TO/CC/BCC/SUBJECT keys).
SEARCH_FIELDS = (b"from", b"to", b"cc", b"bcc", b"subject")
# The cache key; "hdr2" since the plain address forms were added (older entries lack them).
SEARCH_CACHE_KEY = "hdr2"
_ADDRESS_NOISE = (b"(", b"\\", b'"@', b" @", b"@ ", b"\t@", b"@\t", b"@\r", b"@\n")


def header_block(f: BinaryIO) -> bytes:
    """The header block of an open message file (up to and including the blank line),
    reading only as much of the file as it takes; the whole file if it has no blank
    line."""
    data = f.read(8192)
    while True:
        end = data.find(b"\n\n")
        if end < 0:
            end2 = data.find(b"\r\n\r\n")
            if end2 >= 0:
                return data[: end2 + 4]
        else:
            return data[: end + 2]
        more = f.read(65536)
        if not more:
            return data
        data += more


def search_fields(header: bytes) -> bytes:
    """The SEARCH_FIELDS lines (with their folded continuations) of a header block."""
    out: list[bytes] = []
    fields: list[tuple[bytes, list[bytes]]] = []
    keep = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
                fields[-1][1].append(line)
            continue
        name = line.partition(b":")[0].strip().lower()
        keep = name in SEARCH_FIELDS
        if keep:
            out.append(line)
            fields.append((name, [line]))
    for name, lines in fields:
        if name in mime.ADDRESS_FIELDS:
            raw = b"".join(lines)
            if any(n in raw for n in _ADDRESS_NOISE):
                value = raw.partition(b":")[2]
                plain = mime.addresses_text(value).encode("utf-8", "replace")
                if plain and plain not in raw:
                    out.append(name + b": " + plain + b"\n")
    return b"".join(out) + b"\n"
