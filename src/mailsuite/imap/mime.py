"""The IMAP view of one stored message: structure, ENVELOPE, BODYSTRUCTURE, BODY[section].

Pure functions over bytes; no I/O, no Twisted. The IMAP server and the store use it:

- ``parse(data)`` splits a message ONCE into a tree of :class:`Part` (offsets of each
  part's header and body in the wire form) and returns a :class:`Message`
  (``.data`` = the wire bytes, ``.root`` = the tree). Everything else formats from it.
- ``envelope(msg)`` / ``bodystructure(msg)`` / ``body(msg)`` return complete IMAP
  values as plain ``bytes`` (e.g. ``b'("Mon, 1 Jan ..." "subj" ((...)) ...)'``), ready to
  put after ``ENVELOPE `` / ``BODYSTRUCTURE `` / ``BODY `` and cheap to cache in the
  per-folder index.
- ``parse_section(b"1.2.HEADER.FIELDS (From To)")`` → :class:`Section`;
  ``section(msg, sec)`` → the section's bytes (``None`` when the part does not exist);
  ``section_label(sec)`` → what to echo between the brackets in the response;
  ``partial(data, origin, length)`` slices ``<origin.length>`` (the response echoes
  only ``<origin>``, RFC 3501 §6.4.5).
- ``literal_or_quoted(b)`` / ``nstring(b)``: IMAP string formatting used throughout.
- ``format_internaldate(ts)`` / ``parse_internaldate(text)`` for INTERNALDATE and
  APPEND's date-time.
- For SEARCH: ``split_header(data)``, ``header_values(header, name)``,
  ``decode_header_text(raw)``, ``body_text(msg)``, ``parse_date_header(raw)``.

Line ends: files are stored with LF; the wire form is CRLF (``to_wire``: every bare LF
becomes CRLF, existing CRLF kept, a bare CR kept as is, like Dovecot, so the size
matches the ``W=`` size in Maildir file names). All offsets in :class:`Part` are into
the wire form. Parsing treats a bare CR as a line end too, so old Mac-style messages
still get a structure.

We generate everything ourselves instead of using Twisted's ``imap4`` helpers, which
lower-case parameter values, split parameters naively (a trailing ';' drops the
connection), never emit content-location and crash on 8-bit headers
(research/twisted-mail.md §4.5). The stdlib ``email`` package is not used for
structure either: it rewrites what it parses and is several times slower than
scanning the bytes for header ends and boundary lines.

Malformed input never raises: a missing boundary makes the multipart a part with no
children (BODYSTRUCTURE then shows a minimal text/plain of the body, like Dovecot), an
unterminated multipart ends at the end of its parent, nesting deeper than
``MAX_DEPTH`` is treated as opaque application/octet-stream... (see ``parse``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "MAX_DEPTH",
    "Part",
    "Message",
    "Section",
    "to_wire",
    "wire_size",
    "parse",
    "envelope",
    "bodystructure",
    "body",
    "parse_section",
    "section",
    "section_label",
    "partial",
    "quoted_or_literal",
    "nstring",
    "format_internaldate",
    "parse_internaldate",
    "split_header",
    "header_values",
    "decode_header_text",
    "body_text",
    "parse_date_header",
]

MAX_DEPTH = 40  # multipart / message nesting deeper than this is not descended into


@dataclass(frozen=True, slots=True)
class Part:
    """One MIME entity in the wire form of a message.

    ``header`` is ``data[start:body_start]`` (including the blank line that ends it, if
    there is one); the body is ``data[body_start:end]``. ``children`` are the parts of a
    multipart; ``message`` is the encapsulated message of a message/rfc822 part (its
    ``start`` equals this part's ``body_start``). Type names are lower case; parameter
    names lower case, values as sent (quotes removed, RFC 2231 continuations joined)."""

    start: int
    body_start: int
    end: int
    maintype: str
    subtype: str
    params: tuple[tuple[str, str], ...]
    children: tuple["Part", ...] = ()
    message: "Part | None" = None


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed message: the wire bytes and the part tree over them."""

    data: bytes
    root: Part


@dataclass(frozen=True, slots=True)
class Section:
    """A BODY[...] section specifier (RFC 3501 §6.4.5).

    ``parts``: the part number path ((), (1,), (1, 2), ...); ``text``: one of ``""``,
    ``"HEADER"``, ``"HEADER.FIELDS"``, ``"HEADER.FIELDS.NOT"``, ``"TEXT"``, ``"MIME"``;
    ``fields``: the header field names for the HEADER.FIELDS forms (as bytes, in the
    order given)."""

    parts: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[bytes, ...] = ()


def to_wire(data: bytes) -> bytes:
    """The wire (CRLF) form of stored message bytes: bare LF → CRLF."""
    raise NotImplementedError


def wire_size(data: bytes) -> int:
    """``len(to_wire(data))`` without building the copy."""
    raise NotImplementedError


def parse(data: bytes, *, wire: bool = False) -> Message:
    """Parse a message once. ``data`` is the stored form (LF, CRLF or mixed) unless
    ``wire`` says it is already CRLF. Never raises on malformed MIME."""
    raise NotImplementedError


def envelope(msg: Message) -> bytes:
    """The ENVELOPE value of the message, e.g. ``b'("date" "subject" ((...)) ...)'``."""
    raise NotImplementedError


def bodystructure(msg: Message, extended: bool = True) -> bytes:
    """BODYSTRUCTURE (``extended=True``) or BODY (``extended=False``) value."""
    raise NotImplementedError


def body(msg: Message) -> bytes:
    """The non-extensible BODY value (same as ``bodystructure(msg, extended=False)``)."""
    return bodystructure(msg, extended=False)


def parse_section(spec: bytes | str) -> Section:
    """Parse what is between the brackets of ``BODY[...]``, e.g. ``b"1.2.MIME"`` or
    ``b'HEADER.FIELDS (From "To")'``. Raises ValueError (→ BAD) for bad syntax."""
    raise NotImplementedError


def section(msg: Message, sec: Section) -> bytes | None:
    """The bytes of ``sec`` in ``msg`` (wire form); ``None`` if the part does not exist
    or the section text does not apply to it (e.g. ``1.HEADER`` on a text part)."""
    raise NotImplementedError


def section_label(sec: Section) -> bytes:
    """The section as echoed in a FETCH response, e.g. ``b'1.HEADER.FIELDS (FROM TO)'``."""
    raise NotImplementedError


def partial(data: bytes, origin: int, length: int | None) -> bytes:
    """``data`` sliced for ``<origin.length>`` (empty past the end)."""
    if origin >= len(data):
        return b""
    return data[origin:] if length is None else data[origin : origin + length]


def quoted_or_literal(value: bytes) -> bytes:
    """``value`` as an IMAP string: quoted if it is short 7-bit text without CR/LF,
    else a ``{n}\\r\\n`` literal."""
    raise NotImplementedError


def nstring(value: bytes | None) -> bytes:
    """``NIL`` for None, else ``quoted_or_literal(value)``."""
    return b"NIL" if value is None else quoted_or_literal(value)


def format_internaldate(ts: float, utcoffset: int | None = None) -> bytes:
    """INTERNALDATE value (with quotes) for epoch seconds ``ts``, e.g.
    ``b'"17-Jul-1996 02:44:25 -0700"'``. ``utcoffset`` in seconds; default: the
    server's local time zone at that instant."""
    raise NotImplementedError


def parse_internaldate(text: bytes | str) -> float:
    """Epoch seconds of an IMAP date-time (``"17-Jul-1996 02:44:25 -0700"``, quotes
    optional). Raises ValueError."""
    raise NotImplementedError


def split_header(data: bytes) -> tuple[bytes, int]:
    """``(header, body_offset)`` of raw message bytes (any line ends): the header block
    including its terminating blank line, and where the body starts."""
    raise NotImplementedError


def header_values(header: bytes, name: bytes | str) -> list[bytes]:
    """Unfolded raw values of every field called ``name`` (case-insensitive) in a header
    block, in order. Leading/trailing white space stripped; 8-bit bytes kept."""
    raise NotImplementedError


def decode_header_text(raw: bytes) -> str:
    """A header value as text: RFC 2047 encoded-words decoded, raw 8-bit taken as
    UTF-8 (RFC 6532) or Latin-1 when that fails. Never raises."""
    raise NotImplementedError


def body_text(msg: Message) -> str:
    """All text of the message for SEARCH BODY: each text/* (and unlabelled) leaf part's
    body with its Content-Transfer-Encoding (base64, quoted-printable) undone and its
    charset decoded, joined by newlines. Never raises."""
    raise NotImplementedError


def parse_date_header(raw: bytes) -> tuple[int, int, int] | None:
    """The (year, month, day) of an RFC 5322 Date: value in its own time zone (what
    SENTBEFORE/SENTON/SENTSINCE compare), or None if it cannot be parsed."""
    raise NotImplementedError
