"""IMAP BINARY (RFC 3516): FETCH BINARY[part]<partial>, BINARY.PEEK and BINARY.SIZE.

``BINARY[1.2]`` is the content of a body part with its Content-Transfer-Encoding
undone: base64 and quoted-printable are decoded, 7bit/8bit/binary (or no encoding)
pass through, and any other encoding is ``NO [UNKNOWN-CTE]`` (RFC 3516 4.3).  A
composite part (multipart, message/rfc822) and the whole message (``BINARY[]``) are
never encoded as a whole (RFC 2045 6.4), so they are returned as they are.  Content
holding a NUL is sent as a literal8 ``~{n}`` (RFC 3516 4.2); here, unlike in BODY[],
NUL stays NUL.  ``BINARY.SIZE`` is the length of the decoded content.

Parsing of the section (part numbers only) is :func:`parse_section`; what FETCH sends
for one item is :func:`fetch_item`.  APPEND of a literal8 is accepted by the parser
and stored like any other message.
"""

from __future__ import annotations

import base64
import binascii
import re

from mailsuite import mime
from mailsuite.imap import msgdata
from mailsuite.imap.errors import No
from mailsuite.imap.parser import FetchAtt

IDENTITY = frozenset((b"", b"7bit", b"8bit", b"binary"))
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")
_TOKEN = re.compile(rb"[^\s()<>@,;:\\\"/\[\]?=]+")


def parse_section(spec: bytes | None) -> tuple[int, ...]:
    """The part numbers of ``BINARY[1.2.3]`` (section-binary = [section-part]);
    ValueError (BAD) for anything else: BINARY takes no HEADER, TEXT or MIME."""
    if not spec:
        return ()
    parts = []
    for num in spec.split(b"."):
        if not num.isdigit() or num[0] == 0x30 or len(num) > 10 or int(num) > 0xFFFFFFFF:
            raise ValueError("BINARY takes only part numbers")
        parts.append(int(num))
    return tuple(parts)


def _exact(msg: mime.Message, stored: bytes | None) -> bytes:
    """The wire bytes of the message with NUL kept (BODY[] shows NUL as 0x80, which
    keeps every offset: the part tree of ``msg`` fits these bytes too)."""
    if stored is not None and b"\x00" in stored:
        return stored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return msg.data


def cte_of(data: bytes, part: mime.Part, message_root: bool) -> bytes:
    """The Content-Transfer-Encoding token of a part, lower case (b"" when none)."""
    value = mime.content_fields(data, part, message_root).get(b"content-transfer-encoding")
    if not value:
        return b""
    m = _TOKEN.search(mime.unfold(value))
    return m.group().lower() if m else b""


def decode(body: bytes, cte: bytes) -> bytes:
    """``body`` with transfer encoding ``cte`` undone; No [UNKNOWN-CTE] for one we do
    not know.  Broken base64 decodes as far as it goes (characters outside the
    alphabet are skipped, a cut-off last group is completed), as mail readers do."""
    if cte in IDENTITY:
        return body
    if cte == b"base64":
        clean = _NOT_BASE64.sub(b"", body)
        rest = len(clean) % 4
        if rest == 1:
            clean = clean[:-1]
        elif rest:
            clean += b"=" * (4 - rest)
        try:
            return base64.b64decode(clean)
        except (binascii.Error, ValueError):  # pragma: no cover - clean input decodes
            return b""
    if cte == b"quoted-printable":
        return binascii.a2b_qp(body)
    raise No(f"Unknown Content-Transfer-Encoding {cte[:30].decode('ascii', 'replace')}", "UNKNOWN-CTE")


def content(msg: mime.Message, stored: bytes | None, parts: tuple[int, ...]) -> bytes:
    """The decoded content BINARY[parts] names (b"" for a part that does not exist,
    as BODY[] answers)."""
    data = _exact(msg, stored)
    if not parts:
        return data
    part = mime.find_part(msg.root, parts)
    if part is None:
        return b""
    body = data[part.body_start : part.end]
    if part.children or part.message is not None or part.maintype in ("multipart", "message"):
        return body
    return decode(body, cte_of(data, part, part is msg.root))


def fetch_item(att: FetchAtt, parts: tuple[int, ...], msg: mime.Message, stored: bytes | None) -> list[bytes]:
    """The pieces of one ``BINARY[...]`` / ``BINARY.SIZE[...]`` FETCH item."""
    label = b".".join(b"%d" % p for p in parts)
    data = content(msg, stored, parts)
    if att.name == "BINARY.SIZE":
        return [b"BINARY.SIZE[%s] %d" % (label, len(data))]
    head = b"BINARY[%s]" % label
    if att.partial is not None:
        origin, length = att.partial
        head += b"<%d>" % origin
        data = msgdata.partial(data, origin, length)
    if not data:
        return [head + b' ""']
    # RFC 3516 4.2: a literal8 where the content has a NUL, a plain literal otherwise.
    return [head + (b" ~{%d}\r\n" if b"\x00" in data else b" {%d}\r\n") % len(data), data]
