"""IMAP message data of one message: ENVELOPE, BODYSTRUCTURE/BODY, BODY[section], dates.

Formatting only: the message is parsed by :mod:`mailsuite.mime` (``parse``) and this
module writes the IMAP values from the part tree, as plain ``bytes``:

- ``envelope(msg)`` / ``bodystructure(msg)`` / ``body(msg)`` return complete IMAP
  values (e.g. ``b'("Mon, 1 Jan ..." "subj" ((...)) ...)'``), ready to put after
  ``ENVELOPE `` / ``BODYSTRUCTURE `` / ``BODY `` and cheap to cache in the folder's
  cache.
- ``header_only(sec)`` / ``header_section(header, sec)`` / ``header_envelope(header)``:
  the same answers from the header block alone (``mime.split_header``), for
  HEADER.FIELDS and ENVELOPE without reading the body.
- ``parse_section(b"1.2.HEADER.FIELDS (From To)")`` → :class:`Section`;
  ``section(msg, sec)`` → the section's bytes (``b""`` when the part does not exist);
  ``section_label(sec)`` → what to echo between the brackets in the response;
  ``partial(data, origin, length)`` slices ``<origin.length>`` (the response echoes
  only ``<origin>``, RFC 3501 §6.4.5).
- ``quoted_or_literal(b)`` / ``nstring(b)``: IMAP string formatting used throughout.
- ``format_internaldate(ts)`` / ``parse_internaldate(text)`` for INTERNALDATE and
  APPEND's date-time.

Fidelity: the output is byte-for-byte Dovecot 2.3's on a corpus of normal and broken
messages (tests/test_imap_mime.py), including repeated Subject/Date taking the last
value, an empty text/plain child for a multipart without parts, and an empty envelope
and body for a message/rfc822 that cannot be parsed.

We generate everything ourselves instead of using Twisted's ``imap4`` helpers, which
lower-case parameter values, split parameters naively (a trailing ';' drops the
connection), never emit content-location and crash on 8-bit headers
(research/twisted-mail.md §4.5).
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

from mailsuite.mime import (
    EOL,
    MONTH_NUM,
    MONTHS,
    TOKEN_RE,
    Message,
    Part,
    address_tokens,
    content_fields,
    find_part,
    param,
    parse,
    parse_addresses,
    parse_params,
    quoted_string,
    skip_cfws,
    to_wire,
    unfold,
)

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


# --- IMAP strings -------------------------------------------------------------------

_QUOTED_MAX = 4096  # longer values go as literals, like most servers do


def quoted_or_literal(value: bytes) -> bytes:
    """``value`` as an IMAP string: quoted if it is 7-bit text without CR/LF/NUL (and
    not huge), else a ``{n}\\r\\n`` literal (NUL, never allowed, becomes 0x80)."""
    n = len(value)
    if n <= _QUOTED_MAX and value.isascii():
        # bytes.translate is the cheapest test for "none of these bytes" (5x a regex);
        # this runs ~10 times per ENVELOPE.
        if len(value.translate(None, b'\x00\r\n"\\')) == n:
            return b'"' + value + b'"'
        if len(value.translate(None, b"\x00\r\n")) == n:
            return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    if b"\x00" in value:
        value = value.replace(b"\x00", b"\x80")
    return b"{%d}\r\n%s" % (n, value)


def nstring(value: bytes | None) -> bytes:
    """``NIL`` for None, else ``quoted_or_literal(value)``."""
    return b"NIL" if value is None else quoted_or_literal(value)


def _ns(value: bytes | None) -> bytes:
    # A field that is present but empty is "" (as in Dovecot); only a missing one is NIL.
    return b"NIL" if value is None else quoted_or_literal(value)


# --- ENVELOPE -----------------------------------------------------------------------


def _no_tab(value: bytes | None) -> bytes:
    # Dovecot shows a TAB in a subject or display name as a space.
    return b"NIL" if value is None else quoted_or_literal(value.replace(b"\t", b" ") if b"\t" in value else value)


def _address_list(values: list[bytes] | None) -> bytes:
    if not values:
        return b"NIL"
    addrs = [a for v in values for a in parse_addresses(v)]
    if not addrs:
        return b"NIL"
    return b"(" + b"".join(
        b"(%s %s %s %s)" % (_no_tab(a[0]), nstring(a[1]), nstring(a[2]), nstring(a[3])) for a in addrs
    ) + b")"


_ADDRESS_FIELDS = frozenset((b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc"))


_ENV_ALT = rb"(date|subject|from|sender|reply-to|to|cc|bcc|in-reply-to|message-id)[ \t]*:([^\r\n]*(?:" + EOL + rb"[ \t][^\r\n]*)*)"
_ENVELOPE_FIELD = re.compile(rb"^" + _ENV_ALT, re.MULTILINE | re.IGNORECASE)
# Also after a bare CR; three times slower, so only for headers that have one.
_ENVELOPE_FIELD_CR = re.compile(rb"(?:^|(?<=\r))" + _ENV_ALT, re.MULTILINE | re.IGNORECASE)


def _envelope_fields(header: bytes) -> tuple[dict[bytes, bytes], dict[bytes, list[bytes]]]:
    # Like Dovecot: a repeated text field counts with its last value, a repeated
    # address field adds its addresses.
    text: dict[bytes, bytes] = {}
    addrs: dict[bytes, list[bytes]] = {}
    pattern = _ENVELOPE_FIELD if header.count(b"\r") == header.count(b"\r\n") else _ENVELOPE_FIELD_CR
    for name, value in pattern.findall(header):
        name = name.lower()
        if name in _ADDRESS_FIELDS:
            addrs.setdefault(name, []).append(unfold(value))
        else:
            text[name] = unfold(value)
    return text, addrs


def _envelope_of(d: bytes, part: Part) -> bytes:
    return _envelope_from_header(d[part.start : part.body_start])


def envelope_of_header(head: bytes) -> bytes:
    """``envelope(mime.parse(head))`` for a message's header block alone (what FETCH
    ENVELOPE reads), without parsing the MIME structure ENVELOPE does not use: that
    parse was a fifth of a cold ``FETCH 1:* (ENVELOPE)``.  A header with a bare CR or a
    NUL, or with mixed line ends, takes the full parse (its line ends and bytes are
    rewritten first)."""
    if b"\x00" in head:
        return envelope(parse(head))
    if b"\r" not in head:
        d = head.replace(b"\n", b"\r\n")  # as mime.parse stores an LF message
    else:
        crlf = head.count(b"\r\n")
        if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
            return envelope(parse(head))
        d = head
    if d.startswith(b"\r\n"):
        return _envelope_from_header(d[:2])
    i = d.find(b"\r\n\r\n")
    return _envelope_from_header(d if i < 0 else d[: i + 4])


def _envelope_from_header(header: bytes) -> bytes:
    f, a = _envelope_fields(header)
    frm = _address_list(a.get(b"from"))
    sender = _address_list(a.get(b"sender"))
    reply_to = _address_list(a.get(b"reply-to"))
    return b"(%s %s %s %s %s %s %s %s %s %s)" % (
        _ns(f.get(b"date")),
        _no_tab(f.get(b"subject")),
        frm,
        frm if sender == b"NIL" else sender,  # RFC 3501: default to From
        frm if reply_to == b"NIL" else reply_to,
        _address_list(a.get(b"to")),
        _address_list(a.get(b"cc")),
        _address_list(a.get(b"bcc")),
        _ns(f.get(b"in-reply-to")),
        _ns(f.get(b"message-id")),
    )


def envelope(msg: Message) -> bytes:
    """The ENVELOPE value of the message, e.g. ``b'("date" "subject" ((...)) ...)'``."""
    return _envelope_of(msg.data, msg.root)


# --- BODYSTRUCTURE ------------------------------------------------------------------

_EMPTY_BODY = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
_EMPTY_BODY_EXT = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'


_EMPTY_ENVELOPE = b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def bodystructure(msg: Message, extended: bool = True) -> bytes:
    """BODYSTRUCTURE (``extended=True``) or BODY (``extended=False``) value."""
    out: list[bytes] = []
    _write_part(msg.data, msg.root, extended, out, True)
    return b"".join(out)


def _param_list(params: tuple[tuple[str, bytes], ...]) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(quoted_or_literal(k.encode("ascii", "replace")) + b" " + quoted_or_literal(v) for k, v in params) + b")"


def _disposition(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    i = skip_cfws(value, 0)
    m = TOKEN_RE.match(value, i)
    if not m:
        return b'("" NIL)'  # present but unreadable, as Dovecot shows it
    return b"(%s %s)" % (quoted_or_literal(m.group()), _param_list(parse_params(value, m.end())))


def _language(value: bytes | None) -> bytes:
    if not value:
        return b"NIL"
    langs = [t[1] for t in address_tokens(value) if t[0] == b"a"]
    if not langs:
        return b"NIL"
    return b"(" + b" ".join(quoted_or_literal(x) for x in langs) + b")"


def _lines(d: bytes, start: int, end: int) -> int:
    # The number of line ends in the body, as Dovecot counts: a last line without one
    # (before a boundary, whose CRLF belongs to the boundary) does not count.
    return d.count(b"\n", start, end)


def _write_part(d: bytes, part: Part, ext: bool, out: list[bytes], message_root: bool) -> None:
    f = content_fields(d, part, message_root)
    if part.maintype == "multipart":
        out.append(b"(")
        if part.children:
            for child in part.children:
                _write_part(d, child, ext, out, False)
        else:
            out.append(_EMPTY_BODY_EXT if ext else _EMPTY_BODY)  # RFC 3501 wants ≥ 1 part
        subtype = part.shown_type[1] if part.shown_type else part.subtype
        out.append(b" " + quoted_or_literal(subtype.encode("ascii")))
        if ext:
            out.append(
                b" %s %s %s %s"
                % (
                    _param_list(part.params),
                    _disposition(f.get(b"content-disposition")),
                    _language(f.get(b"content-language")),
                    _ns(f.get(b"content-location")),
                )
            )
        out.append(b")")
        return
    params = part.params
    if part.maintype == "text" and param(params, "charset") is None:
        params = params + (("charset", b"us-ascii"),)  # RFC 2045's default, as Dovecot adds it
    maintype, subtype = part.shown_type or (part.maintype, part.subtype)
    if part.maintype == "message" and part.subtype == "rfc822":
        maintype, subtype = "message", "rfc822"  # Dovecot writes this one in lower case
    cte = f.get(b"content-transfer-encoding")
    if cte and not TOKEN_RE.fullmatch(cte):
        cte = None  # not one token: "7bit", as Dovecot shows it
    size = part.end - part.body_start
    out.append(
        b"(%s %s %s %s %s %s %d"
        % (
            quoted_or_literal(maintype.encode("ascii")),
            quoted_or_literal(subtype.encode("ascii")),
            _param_list(params),
            _ns(f.get(b"content-id")),
            _ns(f.get(b"content-description")),
            quoted_or_literal(cte or b"7bit"),
            size,
        )
    )
    if part.message is not None:
        out.append(b" " + _envelope_of(d, part.message) + b" ")
        _write_part(d, part.message, ext, out, True)
        out.append(b" %d" % _lines(d, part.body_start, part.end))
    elif part.maintype == "message" and part.subtype == "rfc822":
        # Not parsed (encoded, or nested too deep): still the message form the grammar
        # and clients expect, with an empty envelope and body, as Dovecot answers.
        empty = _EMPTY_BODY_EXT if ext else _EMPTY_BODY
        out.append(b" %s %s %d" % (_EMPTY_ENVELOPE, empty, _lines(d, part.body_start, part.end)))
    elif part.maintype == "text":
        out.append(b" %d" % _lines(d, part.body_start, part.end))
    if ext:
        out.append(
            b" %s %s %s %s"
            % (
                _ns(f.get(b"content-md5")),
                _disposition(f.get(b"content-disposition")),
                _language(f.get(b"content-language")),
                _ns(f.get(b"content-location")),
            )
        )
    out.append(b")")


def body(msg: Message) -> bytes:
    """The non-extensible BODY value (same as ``bodystructure(msg, extended=False)``)."""
    return bodystructure(msg, extended=False)


# --- BODY[section] ------------------------------------------------------------------

_SECTION_TEXTS = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")
_ASTRING_ATOM = re.compile(rb'[^\x00-\x20(){%*"\\\]\x7f-\xff]+')


def parse_section(spec: bytes | str) -> Section:
    """Parse what is between the brackets of ``BODY[...]``, e.g. ``b"1.2.MIME"`` or
    ``b'HEADER.FIELDS (From "To")'``. Raises ValueError (→ BAD) for bad syntax."""
    if isinstance(spec, str):
        spec = spec.encode("utf-8")
    s = spec
    parts: list[int] = []
    i = 0
    n = len(s)
    while i < n and 0x30 <= s[i] <= 0x39:
        j = i
        while j < n and 0x30 <= s[j] <= 0x39:
            j += 1
        num = int(s[i:j])
        if s[i] == 0x30 or num > 0xFFFFFFFF:
            raise ValueError("bad part number in section")
        parts.append(num)
        i = j
        if i == n:
            return Section(tuple(parts))
        if s[i] != 0x2E:
            raise ValueError("bad section specifier")
        i += 1
        if i == n:
            raise ValueError("section ends with '.'")
    rest = s[i:]
    upper = rest.upper()
    for text in _SECTION_TEXTS:
        t = text.encode()
        if upper.startswith(t) and (len(upper) == len(t) or not upper[len(t) : len(t) + 1].isalnum() and upper[len(t)] != 0x2E):
            break
    else:
        if not rest and not parts:
            return Section()
        raise ValueError("unknown section text")
    if text == "MIME" and not parts:
        raise ValueError("MIME needs a part number")
    tail = rest[len(text) :]
    if not text.startswith("HEADER.FIELDS"):
        if tail:
            raise ValueError("junk after section text")
        return Section(tuple(parts), text)
    return Section(tuple(parts), text, _header_list(tail))


def _header_list(tail: bytes) -> tuple[bytes, ...]:
    if not tail.startswith(b" (") or not tail.endswith(b")"):
        raise ValueError("HEADER.FIELDS needs a parenthesized list of field names")
    s = tail[2:-1]
    names: list[bytes] = []
    i = 0
    n = len(s)
    while i < n:
        if names:
            if s[i] != 0x20:
                raise ValueError("bad header field list")
            i += 1
        if i < n and s[i] == 0x22:
            j, value = quoted_string(s, i)
            if j > n or s[j - 1] != 0x22 or j - 1 == i:
                raise ValueError("unterminated quoted field name")
            names.append(value)
            i = j
            continue
        m = _ASTRING_ATOM.match(s, i)
        if not m:
            raise ValueError("bad header field name")
        names.append(m.group())
        i = m.end()
    if not names:
        raise ValueError("empty header field list")
    return tuple(names)


def header_only(sec: Section) -> bool:
    """Whether ``sec`` needs nothing but the message's header block (HEADER,
    HEADER.FIELDS, HEADER.FIELDS.NOT of the message itself): then ``header_section``
    answers it from the start of the file, without reading or parsing the body."""
    return not sec.parts and sec.text.startswith("HEADER")


def header_section(header: bytes, sec: Section) -> bytes:
    """The bytes of a ``header_only`` section from the header block alone (as
    ``split_header`` returns it; stored or wire form): the same bytes that
    ``section(parse(message), sec)`` gives. Clients fetch HEADER.FIELDS for every
    message when they open a folder, so this path matters."""
    wire = to_wire(header)
    if sec.text == "HEADER":
        return wire
    return _header_fields(wire, sec.fields, sec.text == "HEADER.FIELDS.NOT")


def header_envelope(header: bytes) -> bytes:
    """ENVELOPE from the header block alone (same bytes as ``envelope(parse(message))``)."""
    return envelope(parse(header))


def section_label(sec: Section) -> bytes:
    """The section as echoed in a FETCH response, e.g. ``b'1.HEADER.FIELDS (FROM TO)'``."""
    out = b".".join(b"%d" % p for p in sec.parts)
    if sec.text:
        out = out + b"." + sec.text.encode() if out else sec.text.encode()
    if sec.fields:
        out += b" (" + b" ".join(_label_field(f) for f in sec.fields) + b")"
    return out


def _label_field(name: bytes) -> bytes:
    name = name.upper()
    return name if _ASTRING_ATOM.fullmatch(name) else quoted_or_literal(name)


def section(msg: Message, sec: Section) -> bytes:
    """The bytes of ``sec`` in ``msg`` (wire form). A part that does not exist, or a
    section text that does not apply to it (``1.HEADER`` of a text part), gives
    ``b""``: Dovecot answers those with an empty string too, and clients cope."""
    d = msg.data
    part = find_part(msg.root, sec.parts)
    if part is None:
        return b""
    text = sec.text
    if sec.parts:
        if text == "":
            return d[part.body_start : part.end]
        if text == "MIME":
            return d[part.start : part.body_start]
        if part.message is None:
            return b""
        part = part.message
    elif text == "":
        return d
    if text == "HEADER":
        return d[part.start : part.body_start]
    if text == "TEXT":
        return d[part.body_start : part.end]
    return _header_fields(d[part.start : part.body_start], sec.fields, text == "HEADER.FIELDS.NOT")


def _header_fields(header: bytes, names: tuple[bytes, ...], negate: bool) -> bytes:
    wanted = {n.lower() for n in names}
    out: list[bytes] = []
    for m in _FIELD_LINE.finditer(header):
        if (m.group(1).lower() in wanted) != negate:
            line = m.group()
            if line.endswith(b"\r\n"):
                out.append(line)
            else:  # the wire form always ends lines with CRLF
                out.append(line.rstrip(b"\r\n") + b"\r\n")
    if header.endswith((b"\n", b"\r")):  # the end of the header (Dovecot: unless its
        out.append(b"\r\n")  # last line was cut off by the end of data or a boundary)
    return b"".join(out)


# A whole field, folds and final line end included.
_FIELD_LINE = re.compile(
    rb"(?:\A|(?<=[\r\n]))([\x21-\x39\x3b-\x7e]+)[ \t]*:[^\r\n]*(?:" + EOL + rb"[ \t][^\r\n]*)*(?:" + EOL + rb"|\Z)"
)


def partial(data: bytes, origin: int, length: int | None) -> bytes:
    """``data`` sliced for ``<origin.length>`` (empty past the end)."""
    if origin >= len(data):
        return b""
    return data[origin:] if length is None else data[origin : origin + length]


def format_internaldate(ts: float, utcoffset: int | None = None) -> bytes:
    """INTERNALDATE value (with quotes) for epoch seconds ``ts``, e.g.
    ``b'"17-Jul-1996 02:44:25 -0700"'``. ``utcoffset`` in seconds; default: the
    server's local time zone at that instant."""
    secs = int(ts)
    if utcoffset is None:
        utcoffset = time.localtime(secs).tm_gmtoff
    t = time.gmtime(secs + utcoffset)
    sign = "-" if utcoffset < 0 else "+"
    off = abs(utcoffset) // 60
    return (
        f'"{t.tm_mday:02d}-{MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} '
        f'{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{off // 60:02d}{off % 60:02d}"'
    ).encode("ascii")


_IMAP_DATETIME = re.compile(
    r'^"?([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"?$'
)


def parse_internaldate(text: bytes | str) -> float:
    """Epoch seconds of an IMAP date-time (``"17-Jul-1996 02:44:25 -0700"``, quotes
    optional). Raises ValueError."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    m = _IMAP_DATETIME.match(text)
    if not m:
        raise ValueError(f"bad date-time: {text!r}")
    day, mon, year, hh, mm, ss, sign, oh, om = m.groups()
    month = MONTH_NUM.get(mon.lower())
    if month is None:
        raise ValueError(f"bad month in date-time: {text!r}")
    d, h, mi, s = int(day), int(hh), int(mm), int(ss)
    if not (1 <= d <= calendar.monthrange(int(year), month)[1]) or h > 23 or mi > 59 or s > 60:
        raise ValueError(f"date-time out of range: {text!r}")
    off = (int(oh) * 60 + int(om)) * 60
    if int(om) > 59:
        raise ValueError(f"bad zone in date-time: {text!r}")
    return float(calendar.timegm((int(year), month, d, h, mi, s, 0, 0, 0)) - (off if sign == "+" else -off))
