"""The message as a Sieve script sees it: header fields, addresses, body parts.

Built from the raw bytes (LF line ends, as the store keeps them) once per delivery
and shared by the user's script and the global ones.  Headers are parsed by hand
(name, raw value, in order) because editheader changes them and the delivered copy
must keep every other byte as it came; values are unfolded and RFC 2047-decoded for
the ``header`` test (RFC 5228 5.7).  The MIME tree for the ``body`` test is built only
when a script asks for it.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from email.header import decode_header, make_header
from typing import Iterator


class Message:
    def __init__(self, raw: bytes) -> None:
        head, sep, body = raw.partition(b"\n\n")
        if not sep:
            if raw.startswith(b"\n"):
                head, body = b"", raw[1:]
            else:
                head, body = raw, b""
        self.body = body
        self.headers: list[tuple[str, str]] = _split_headers(head)  # (name, raw value incl. folding)
        self.edited = False
        self.size_override: int | None = None  # the whole message's size when only its start was read
        self._decoded: dict[str, list[str]] | None = None
        self._addresses: dict[str, list[list[str]]] = {}
        self._mime: email.message.Message | None = None

    @property
    def size(self) -> int:
        """Octets of the message as sent on the wire (CRLF line ends)."""
        if self.size_override is not None:
            return self.size_override
        head = self.header_bytes()
        return len(head) + head.count(b"\n") + 1 + len(self.body) + self.body.count(b"\n") + 1

    def header_bytes(self) -> bytes:
        return b"".join((f"{n}:{v}\n" if v is not None else f"{n}\n").encode("utf-8", "surrogateescape")
                        for n, v in self.headers)

    def as_bytes(self) -> bytes:
        return self.header_bytes() + b"\n" + self.body

    def values(self, name: str) -> list[str]:
        """Unfolded, RFC 2047-decoded values of every field called ``name``, in order."""
        if self._decoded is None:
            decoded: dict[str, list[str]] = {}
            for n, v in self.headers:
                if v is None:
                    continue
                decoded.setdefault(n.lower(), []).append(_decode(v))
            self._decoded = decoded
        return self._decoded.get(name.lower(), [])

    def addresses(self, name: str) -> list[list[str]]:
        """Per field called ``name``, the addresses in it (parsed once per message)."""
        key = name.lower()
        cached = self._addresses.get(key)
        if cached is None:
            cached = self._addresses[key] = [addresses([v]) for v in self.raw_values(name)]
        return cached

    def raw_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [_unfold(v).strip() for n, v in self.headers if v is not None and n.lower() == lname]

    def has(self, name: str) -> bool:
        return bool(self.values(name))

    def add_header(self, name: str, value: str, last: bool = False) -> None:
        folded = " " + value.replace("\r\n", "\n").replace("\n", "\n ")
        if last:
            self.headers.append((name, folded))
        else:
            self.headers.insert(0, (name, folded))
        self._changed()

    def delete_header(self, index: int) -> None:
        del self.headers[index]
        self._changed()

    def _changed(self) -> None:
        self.edited = True
        self._decoded = None
        self._addresses = {}

    def mime(self) -> email.message.Message:
        if self._mime is None:
            self._mime = email.message_from_bytes(self.as_bytes(), policy=email.policy.compat32)
        return self._mime

    def text_parts(self, types: list[str] | None) -> Iterator[str]:
        """Decoded text of the parts whose type is in ``types`` (RFC 5173 :content;
        None is :text: the text/* parts).  An empty string in ``types`` matches all."""
        for part in self.mime().walk():
            if part.is_multipart():
                if types is not None and _type_matches(part.get_content_type(), types):
                    # RFC 5173: for a multipart type, the prologue and epilogue.
                    yield (part.preamble or "") + (part.epilogue or "")
                continue
            ctype = part.get_content_type()
            if types is None:
                if not ctype.startswith("text/"):
                    continue
            elif not _type_matches(ctype, types):
                continue
            if ctype.startswith("text/") or types is not None:
                payload = part.get_payload(decode=True) or b""
                charset = part.get_content_charset() or "us-ascii"
                try:
                    yield payload.decode(charset, "replace")
                except LookupError:
                    yield payload.decode("latin-1")


def _type_matches(ctype: str, types: list[str]) -> bool:
    main = ctype.split("/")[0]
    for t in types:
        t = t.lower()
        if t == "" or t == ctype or ("/" not in t and t == main):
            return True
    return False


def _split_headers(head: bytes) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    text = head.decode("utf-8", "surrogateescape")
    for line in text.split("\n"):
        if not line:
            continue
        if line[0] in " \t" and out:
            name, value = out[-1]
            # A continuation of a field, or of a line that is no field (kept as it is).
            out[-1] = (name, value + "\n" + line) if value is not None else (name + "\n" + line, None)
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or any(c in name for c in " \t"):
            # Not a header field (an mbox "From " line, garbage): kept as it is, so an
            # edited copy still has every byte; tests never see it.
            out.append((line, None))  # type: ignore[arg-type]
            continue
        out.append((name, value))
    return out


def _unfold(value: str) -> str:
    return value.replace("\r\n", "").replace("\n", "").replace("\r", "")


def _decode(value: str) -> str:
    value = _unfold(value).strip()
    if "=?" not in value:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, AssertionError):
        return value


# "addr@x", "<addr@x>" and "Name <addr@x>": most From/To values, parsed without the
# email package's tokenizer (a tenth of the time of a 20-rule script went there).
_SIMPLE_ADDRESS = re.compile(
    r'\s*(?:[^"<>,;:@()\\]*<([^<>\s,;:"()\\]+@[^<>\s,;:"()\\]+)>|([^<>\s,;:"()\\]+@[^<>\s,;:"()\\]+))\s*\Z')


def addresses(values: list[str]) -> list[str]:
    """The addr-specs in address header values (groups flattened, bad ones skipped)."""
    out = []
    for value in values:
        m = _SIMPLE_ADDRESS.match(value)
        if m is not None:
            out.append(m.group(1) or m.group(2))
            continue
        for _, addr in email.utils.getaddresses([value]):
            if addr:
                out.append(addr)
    return out
