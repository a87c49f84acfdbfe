"""mailauth/dkim_fast.py gives byte for byte what dkimpy's own functions give: the
message split and the relaxed canonicalisation, on generated messages full of the
cases that matter (CR without LF, LF without CR, runs of blanks and tabs before line
ends, folded fields, a From_ line, no blank line), and signatures made and checked
with the fast functions verify with dkimpy's own (and the other way round)."""

from __future__ import annotations

import dkim
import dkim.canonicalization as canon
import pytest
from hypothesis import given, settings, strategies as st

from mailsuite.mailauth import dkim_fast
from mailsuite.mailauth.dkim_fast import ORIGINALS

PIECES = [b"a", b"Subject", b":", b" ", b"  ", b"\t", b" \t ", b"\r", b"\n", b"\r\n", b"\r\r\n", b"\n\n",
          b"\r\n\r\n", b"x: y", b"From ", b"=", b";", b"\x00", b"\xff", b"b=abc", b" \r\n", b"\t\r\n"]
blobs = st.lists(st.sampled_from(PIECES), max_size=60).map(b"".join)


def _both(name: str, *args: bytes):  # type: ignore[no-untyped-def]
    fast = getattr(dkim_fast, name)
    try:
        want = ("ok", ORIGINALS[name](*args))
    except Exception as e:  # noqa: BLE001 - the same exception type is part of "the same"
        want = ("raised", type(e))
    try:
        got = ("ok", fast(*args))
    except Exception as e:  # noqa: BLE001
        got = ("raised", type(e))
    assert got == want


@settings(max_examples=600, deadline=None)
@given(blobs)
def test_same_as_dkimpy(data: bytes) -> None:
    for name in ("unfold_header_value", "compress_whitespace", "strip_trailing_whitespace"):
        _both(name, data)
    _both("rfc822_parse", b"Subject: x\r\n" + data)
    _both("rfc822_parse", data)


def test_installed() -> None:
    assert dkim.rfc822_parse is dkim_fast.rfc822_parse
    assert canon.compress_whitespace is dkim_fast.compress_whitespace


@pytest.mark.parametrize("body", [
    b"plain text\r\n" * 40,
    b"tabs\there \t and  runs   \r\ntrailing blanks \t \r\n\r\n\r\n",
    b"bare LF\nmixed\r\nline ends \n",
])
def test_signatures_interoperate(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    import base64
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = b"v=DKIM1; k=rsa; p=" + base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    msg = (b"From: A <a@x.test>\r\nTo:  b@y.test\r\nSubject: folded\r\n \tsubject  with\t tabs\r\n\r\n" + body)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return pub

    for c in ((b"relaxed", b"relaxed"), (b"simple", b"simple"), (b"relaxed", b"simple")):
        fast_sig = dkim.sign(msg, b"s", b"x.test", pem, canonicalize=c)
        with monkeypatch.context() as m:  # dkimpy's own functions
            m.setattr(dkim, "rfc822_parse", ORIGINALS["rfc822_parse"])
            for name in ("unfold_header_value", "compress_whitespace", "strip_trailing_whitespace"):
                m.setattr(canon, name, ORIGINALS[name])
            slow_sig = dkim.sign(msg, b"s", b"x.test", pem, canonicalize=c)
            assert dkim.verify(fast_sig + msg, dnsfunc=dns, minkey=1024)
        assert dkim.verify(slow_sig + msg, dnsfunc=dns, minkey=1024)
