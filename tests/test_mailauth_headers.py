"""mailauth/headers.py reads a header block without regex work per byte or per tag,
and finds what the regular expressions it replaced found: the end of the header
block (``\\r?\\n\\r?\\n``) on generated text full of CRs and LFs, and the tag values
of a DKIM signature with every whitespace character removed (``\\s+``)."""

from __future__ import annotations

import re

from hypothesis import given, settings, strategies as st

from mailsuite.mailauth.headers import header_block, tags

PIECES = [b"a", b"Subject: x", b" ", b"\r", b"\n", b"\r\n", b"\n\n", b"\r\n\r\n", b"\n\r\n", b"\r\r", b"\r\n\n"]


def regex_header_block(message: bytes) -> bytes:
    m = re.search(rb"\r?\n\r?\n", message)
    return message[: m.start() + 1] if m else message


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join))
def test_header_block_ends_where_the_regex_said(message: bytes) -> None:
    assert header_block(message) == regex_header_block(message)


def test_header_block_of_lf_and_crlf_messages() -> None:
    assert header_block(b"A: b\nC: d\n\nbody\n\n") == b"A: b\nC: d\n"
    assert header_block(b"A: b\r\n\r\nbody") == b"A: b\r"  # as the regex had it: one byte into the match
    assert header_block(b"A: b\n") == b"A: b\n"


def test_tag_values_lose_every_whitespace_character_a_regex_would_remove() -> None:
    """tags() removes whitespace with str.split(): the same characters as r"\\s+", for
    every code point."""
    for c in map(chr, range(0x110000)):
        assert ("".join(f"a{c}b".split()) == "ab") == bool(re.fullmatch(r"\s", c)), hex(ord(c))
    assert tags("v=1; d = ex ample.org;\r\n\tb=ab\r\n cd;") == {"v": "1", "d": "example.org", "b": "abcd"}
