"""Reading a stored message: the header block alone, and the fields SEARCH asks for most.

Pure functions over open files and bytes (no folder state), used by
:class:`mailsuite.store.folder.Folder`'s reading methods.  The search fields are kept
per message in the folder's cache (key ``"hdr"``) so that a repeated SEARCH FROM /
SUBJECT over a big folder does not open every file again.
"""

from __future__ import annotations

from typing import BinaryIO

# Header fields SEARCH asks for most (FROM/TO/CC/BCC/SUBJECT keys).
SEARCH_FIELDS = (b"from", b"to", b"cc", b"bcc", b"subject")


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
    out = []
    keep = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.partition(b":")[0].strip().lower()
        keep = name in SEARCH_FIELDS
        if keep:
            out.append(line)
    return b"".join(out) + b"\n"
