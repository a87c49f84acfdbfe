"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3): known answers, round trips, and
refusal of every non-canonical or malformed form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite import mutf7 as utf7


@pytest.mark.parametrize(
    "name, wire",
    [
        ("INBOX", b"INBOX"),
        ("", b""),
        ("&", b"&-"),
        ("a&b&&", b"a&-b&-&-"),
        ("Ärger", b"&AMQ-rger"),
        ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 example
        ("Entwürfe", b"Entw&APw-rfe"),
        ("🎉", b"&2DzfiQ-"),  # outside the BMP: a surrogate pair
        ("tab\there", b"tab&AAk-here"),  # control characters are encoded too
        ("Ä&Ö", b"&AMQ-&-&ANY-"),
    ],
)
def test_known_names_encode_and_decode(name: str, wire: bytes) -> None:
    assert utf7.encode(name) == wire
    assert utf7.decode(wire) == name


def test_decode_accepts_str_too() -> None:
    assert utf7.decode("&AMQ-rger") == "Ärger"


@pytest.mark.parametrize(
    "bad",
    [
        b"&",  # unterminated shift
        b"&AMQ",  # unterminated shift
        b"&AMQ-&AOQ-",  # two shift sequences in a row must be one
        b"&AEE-",  # encodes printable ASCII "A"
        b"&ACY-",  # encodes "&", which must be "&-"
        b"&AMR-",  # non-zero padding bits
        b"&A-",  # truncated base64
        b"&2D0-",  # lone high surrogate
        b"&3gA-",  # lone low surrogate
        b"&AM!-",  # not base64
        b"caf\xc3\xa9",  # raw 8-bit
        b"a\x00b",  # NUL
        b"a\nb",  # control character
        b"\x7f",
    ],
)
def test_malformed_or_non_canonical_names_are_refused(bad: bytes) -> None:
    with pytest.raises(ValueError):
        utf7.decode(bad)


def test_decode_refuses_non_ascii_str() -> None:
    with pytest.raises(ValueError):
        utf7.decode("Ärger")


def test_encode_refuses_lone_surrogate() -> None:
    with pytest.raises(ValueError):
        utf7.encode("a\ud800b")


@given(st.text())
def test_any_name_round_trips(name: str) -> None:
    wire = utf7.encode(name)
    assert all(0x20 <= c <= 0x7E for c in wire)
    assert utf7.decode(wire) == name


@settings(max_examples=300)
@given(st.binary(max_size=40) | st.text(alphabet="&-ABCDEFabcdef+,0123456789 /.", max_size=30).map(str.encode))
def test_decode_accepts_only_canonical_forms(wire: bytes) -> None:
    try:
        name = utf7.decode(wire)
    except ValueError:
        return
    assert utf7.encode(name) == wire  # so two wire names never map to one folder
