"""dkimpy's message split and relaxed canonicalisation without per-byte regex work.

dkimpy splits a message into lines with ``re.split(b"\\r?\\n")`` and canonicalises
with ``re.sub``: ``[\\t ]+`` -> ``" "`` rewrites every single space of the body (about
700 substitutions for a 4 KB text message), and every header field goes through two
more substitutions.  Those calls were two thirds of the CPU of verifying a 4 KB
message (bench/mailauth.py, cProfile).  Importing this module replaces, once per
process, the four module functions dkimpy looks up at call time by equivalent ones:

* ``rfc822_parse``: CRLF -> LF with ``bytes.replace``, then ``bytes.split`` of the
  header lines (the same lines as the regex split: a CR is dropped only right before
  an LF) and dkimpy's own loop over them; the body's LFs become CRLFs in one replace;
* ``unfold_header_value``: the same removals (every LF and the CR right before it) by
  two ``bytes.replace``;
* ``compress_whitespace`` and ``strip_trailing_whitespace``: return the input when a
  substring search shows there is nothing to change (the usual case), else a regex
  that matches only runs that change (a tab, or two or more blanks);
* ``evaluate_pk`` (a key record -> the parsed key): remembered per record text, so a
  sender's key is parsed once, not for every message (failures are not remembered:
  they raise again, with the name in their message).

The results are byte for byte those of dkimpy's functions (tests/test_dkim_fast.py
compares them on generated input); only the speed differs.
"""

from __future__ import annotations

import re

import dkim
import dkim.canonicalization as canon

_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")
# A run of WSP that "[\t ]+" -> " " changes: one starting with a tab, or a space
# followed by more WSP.  A lone space (most of them) is left alone.
_CHANGING_WSP = re.compile(rb"\t[\t ]*| [\t ]+")
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")


def rfc822_parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's ``rfc822_parse``: (headers as [name, value + CRLF] lists, CRLF body)."""
    headers: list[list[bytes]] = []
    # Bodies reach the checks with LF line ends: a one-byte search (memchr, 0.2 us on
    # 4 KB) spares the two-byte replace that finds nothing (3.9 us).
    text = message.replace(b"\r\n", b"\n") if b"\r" in message else message
    # The body is what follows the first empty line; only the lines before it are
    # split (the body's LFs become CRLFs in one replace, not a split and a join).
    if text[:1] == b"\n":
        return headers, text[1:].replace(b"\n", b"\r\n")
    end = text.find(b"\n\n")
    body = b"" if end < 0 else text[end + 2:].replace(b"\n", b"\r\n")
    for line in (text if end < 0 else text[:end]).split(b"\n"):
        if not line:
            break  # the last line ended the text: no body
        if line[0] in (0x09, 0x20):
            headers[-1][1] += line + b"\r\n"
        else:
            m = _FIELD_NAME.match(line)
            if m is not None:
                headers.append([m.group(1), line[m.end(0):] + b"\r\n"])
            elif not line.startswith(b"From "):
                raise dkim.MessageFormatError("Unexpected characters in RFC822 header: %s" % line)
    return headers, body


def unfold_header_value(content: bytes) -> bytes:
    return content.replace(b"\r\n", b"").replace(b"\n", b"")


def compress_whitespace(content: bytes) -> bytes:
    if b"\t" not in content and b"  " not in content:
        return content
    return _CHANGING_WSP.sub(b" ", content)


def strip_trailing_whitespace(content: bytes) -> bytes:
    if b" \r\n" not in content and b"\t\r\n" not in content:
        return content
    return _TRAILING_WSP.sub(b"\r\n", content)


_evaluate_pk = dkim.evaluate_pk
_parsed_keys: dict[bytes | str, tuple] = {}


def evaluate_pk(name: bytes, s: bytes | str | None) -> tuple:
    if not s:
        return _evaluate_pk(name, s)  # type: ignore[no-any-return]
    hit = _parsed_keys.get(s)
    if hit is None:
        hit = _evaluate_pk(name, s)
        if len(_parsed_keys) >= 1024:
            _parsed_keys.clear()
        _parsed_keys[s] = hit
    return hit


ORIGINALS = {
    "evaluate_pk": _evaluate_pk,
    "rfc822_parse": dkim.rfc822_parse,
    "unfold_header_value": canon.unfold_header_value,
    "compress_whitespace": canon.compress_whitespace,
    "strip_trailing_whitespace": canon.strip_trailing_whitespace,
}


def _install() -> None:
    if getattr(dkim, "_mailsuite_fast", False):
        return
    dkim.rfc822_parse = rfc822_parse
    dkim.evaluate_pk = evaluate_pk
    canon.unfold_header_value = unfold_header_value
    canon.compress_whitespace = compress_whitespace
    canon.strip_trailing_whitespace = strip_trailing_whitespace
    dkim._mailsuite_fast = True


_install()
