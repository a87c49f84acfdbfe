"""Modified UTF-7 (RFC 3501 5.1.3), the Courier/Dovecot encoding of folder names on disk.

The store takes Unicode folder names and writes their modified UTF-7 form into the
Maildir++ directory names (``.Entw&APw-rfe``), as Dovecot and Courier do, so a Maildir
moves between them and us unchanged.  :func:`decode` is strict (canonical input only)
so two directory names never decode to the same folder.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["encode", "decode"]


def _is_direct(c: str) -> bool:
    return "\x20" <= c <= "\x7e" and c != "&"


def encode(name: str) -> str:
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            raw = "".join(run).encode("utf-16-be", "strict")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            run.clear()

    for c in name:
        if _is_direct(c):
            flush()
            out.append(c)
        elif c == "&":
            flush()
            out.append("&-")
        else:
            run.append(c)
    flush()
    return "".join(out)


def decode(text: str) -> str:
    """Decode; raise ValueError on anything that is not the canonical encoding."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "&":
            if not _is_direct(c):
                raise ValueError(f"character {c!r} must be encoded")
            out.append(c)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated shift sequence")
        chunk = text[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        pad = "=" * (-len(chunk) % 4)
        try:
            raw = base64.b64decode(chunk.replace(",", "/") + pad, validate=True)
            decoded = raw.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ValueError(f"bad shift sequence &{chunk}-") from None
        if not decoded or any(_is_direct(ch) or ch == "&" for ch in decoded):
            raise ValueError("non-canonical encoding")
        out.append(decoded)
    result = "".join(out)
    if encode(result) != text:
        raise ValueError("non-canonical encoding")
    return result
