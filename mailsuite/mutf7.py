"""Modified UTF-7 (RFC 3501 §5.1.3), both ways, strictly: IMAP mailbox names on the
wire, and Maildir++ folder names on disk (the Courier/Dovecot convention).

``encode(str) -> bytes`` gives the one canonical form; ``decode(bytes) -> str`` accepts
only canonical input and raises ValueError otherwise, so two different wire names can
never map to the same folder on disk. We do not use Twisted's registered
``imap4-utf-7`` codec: it accepts non-canonical forms (encoded printable ASCII, split
shift sequences, non-zero padding bits), which would let a name alias another one.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["encode", "decode"]

# Printable US-ASCII represents itself (except '&', written "&-"); everything else is
# base64 (with ',' instead of '/') of UTF-16BE, between '&' and '-'.
_DIRECT = re.compile(r"[\x20-\x25\x27-\x7e]+")
_B64_CHARS = re.compile(rb"[A-Za-z0-9+,]*")


def _b64(chunk: str) -> bytes:
    try:
        raw = chunk.encode("utf-16-be")
    except UnicodeEncodeError as exc:  # a lone surrogate has no UTF-16 form
        raise ValueError(f"cannot encode lone surrogate in mailbox name: {exc}") from None
    return b"&" + base64.b64encode(raw).rstrip(b"=").replace(b"/", b",") + b"-"


def encode(name: str) -> bytes:
    """The modified UTF-7 form of ``name``. Raises ValueError for lone surrogates."""
    if name.isascii() and "&" not in name and name.isprintable():
        return name.encode("ascii")  # the common case, and the fast one
    out: list[bytes] = []
    pos = 0
    for m in _DIRECT.finditer(name):
        if m.start() > pos:
            out.append(_encode_run(name[pos : m.start()]))
        out.append(m.group().encode("ascii"))
        pos = m.end()
    if pos < len(name):
        out.append(_encode_run(name[pos:]))
    return b"".join(out)


def _encode_run(run: str) -> bytes:
    # A run of characters that are not printable ASCII-except-'&'; each '&' alone
    # becomes "&-", everything else one base64 section per maximal stretch.
    out: list[bytes] = []
    for i, piece in enumerate(run.split("&")):
        if i:
            out.append(b"&-")
        if piece:
            out.append(_b64(piece))
    return b"".join(out)


def decode(data: bytes | str) -> str:
    """The mailbox name that ``data`` (modified UTF-7) stands for.

    Raises ValueError for anything that is not the canonical encoding of some name:
    8-bit or control bytes, an unterminated or malformed shift sequence, base64 that
    encodes printable ASCII, two shift sequences in a row, non-zero padding bits, or
    invalid UTF-16 (lone surrogates)."""
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("mailbox name has non-ASCII characters") from None
    if b"&" not in data:
        if not _printable(data):
            raise ValueError("mailbox name has control or 8-bit characters")
        return data.decode("ascii")
    out: list[str] = []
    pos = 0
    n = len(data)
    last_was_b64 = False
    while pos < n:
        amp = data.find(b"&", pos)
        if amp < 0:
            amp = n
        if amp > pos:
            direct = data[pos:amp]
            if not _printable(direct):
                raise ValueError("mailbox name has control or 8-bit characters")
            out.append(direct.decode("ascii"))
            last_was_b64 = False
        if amp == n:
            break
        m = _B64_CHARS.match(data, amp + 1)
        assert m is not None
        end = m.end()
        if end >= n or data[end] != 0x2D:  # '-'
            raise ValueError("unterminated '&' shift sequence in mailbox name")
        b64 = m.group()
        if not b64:
            out.append("&")
            last_was_b64 = False
        else:
            if last_was_b64:
                raise ValueError("two adjacent shift sequences in mailbox name")
            out.append(_decode_b64(b64))
            last_was_b64 = True
        pos = end + 1
    return "".join(out)


def _printable(b: bytes) -> bool:
    return all(0x20 <= c <= 0x7E for c in b)


def _decode_b64(b64: bytes) -> str:
    if len(b64) % 4 == 1:
        raise ValueError("truncated base64 in mailbox name")
    padded = b64.replace(b",", b"/") + b"=" * (-len(b64) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise ValueError("bad base64 in mailbox name") from None
    # Canonical form only: re-encoding must give the same characters (this catches
    # non-zero padding bits, which b64decode silently drops).
    if base64.b64encode(raw).rstrip(b"=") != b64.replace(b",", b"/"):
        raise ValueError("non-canonical base64 in mailbox name")
    if len(raw) % 2:
        raise ValueError("odd number of UTF-16 bytes in mailbox name")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError:
        raise ValueError("invalid UTF-16 in mailbox name") from None
    for ch in text:
        if "\x20" <= ch <= "\x7e":
            raise ValueError("printable ASCII must not be base64-encoded in a mailbox name")
    return text
