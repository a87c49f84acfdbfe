"""mailauth/dkim_verify.py gives dkimpy's verdict on every signature: on generated
messages signed with rsa-sha256 and ed25519-sha256, every canonicalisation, chosen,
missing and oversigned header fields, with and without l=, LF or CRLF line ends, and
then broken in the ways mail breaks (body or header changed, whitespace changed, an
extra From:, a damaged b= or bh=, a missing or wrong key, odd tags, a signature from
the future); on the RFC 6376 and RFC 8463 examples; and the common cases are answered
by the fast path itself, not handed back to dkimpy."""

from __future__ import annotations

import base64
import re
import time

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.util import InvalidTagValueList, parse_tag_value
from hypothesis import given, settings, strategies as st

from mailsuite.mailauth.dkim_verify import BTAG, SignedMessage, key_name, parse_tags, surely_valid
from tests.support.dkim_examples import RFC6376_HEADERS, RFC6376_MESSAGE, RFC8463_KEYS, RFC8463_MESSAGE

_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
RSA_PEM = _rsa.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
RSA_PUB = b"v=DKIM1; k=rsa; p=" + base64.b64encode(_rsa.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
_ed = ed25519.Ed25519PrivateKey.generate()
ED_SEED = base64.b64encode(_ed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                             serialization.NoEncryption()))
ED_PUB = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(_ed.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw))
KEYS = {"rsa._domainkey.sender.test": RSA_PUB, "ed._domainkey.sender.test": ED_PUB}
CANONS = [(b"relaxed", b"relaxed"), (b"relaxed", b"simple"), (b"simple", b"simple"), (b"simple", b"relaxed")]


def dkimpy(message: bytes, idx: int, keys: dict[str, bytes | None]) -> bool:
    """The reference: dkimpy's verdict as the checker took it before (an exception
    is a failed signature)."""
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return keys.get(name.decode("ascii", "replace").lower().rstrip("."))

    try:
        return bool(dkim.DKIM(message).verify(idx=idx, dnsfunc=dnsfunc))
    except Exception:  # noqa: BLE001
        return False


def fast(message: bytes, idx: int, keys: dict[str, bytes | None]) -> bool | None:
    """The fast path alone (None: handed to dkimpy)."""
    try:
        parsed = SignedMessage(message)
    except Exception:  # noqa: BLE001 - dkimpy's parse refuses it too: the caller asks dkimpy
        return None
    return parsed.verify(idx, keys)


def assert_same(message: bytes, keys: dict[str, bytes | None], n: int) -> list[bool | None]:
    """Every signature (and one past the last) gets dkimpy's verdict; returns the fast
    path's own answers."""
    answers = []
    for idx in range(n + 1):
        want = dkimpy(message, idx, keys)
        got = fast(message, idx, keys)
        answers.append(got)
        assert (want if got is None else got) == want, (idx, got, want, message)
    return answers


def sign(message: bytes, algorithm: bytes, canon: tuple[bytes, bytes], include: list[bytes],
         length: bool = False, identity: bytes | None = None) -> bytes:
    selector, key = (b"rsa", RSA_PEM) if algorithm == b"rsa-sha256" else (b"ed", ED_SEED)
    signer = dkim.DKIM(message, signature_algorithm=algorithm)
    signer.should_not_sign.discard(b"received")  # RFC 6376 Appendix A signs it
    return signer.sign(selector, b"sender.test", key, identity=identity, canonicalize=canon,
                       include_headers=include, length=length)


# -- generated messages -----------------------------------------------------------------

WSP = st.sampled_from([b" ", b"  ", b"\t", b" \t", b""])
words = st.lists(st.sampled_from([b"dinner", b"ready?", b"<joe@sender.test>", b"Joe", b"=?utf-8?q?x?=", b"a;b"]),
                 min_size=1, max_size=4)


@st.composite
def header_value(draw: st.DrawFn) -> bytes:
    out = draw(WSP)
    for w in draw(words):
        out += w + draw(WSP)
        if draw(st.booleans()) and draw(st.integers(0, 4)) == 0:
            out += b"\r\n" + draw(st.sampled_from([b" ", b"\t", b"  "]))  # folded
    return out or b"x"


NAMES = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Received", b"X-Mailer", b"from", b"SUBJECT"]
BODY_PIECES = [b"Hi.", b" ", b"  ", b"\t", b"\r\n", b"\r\n\r\n", b"text with  runs\t of blanks", b" \r\n",
               b"\t\r\n", b"\n", b"="]


@st.composite
def message(draw: st.DrawFn) -> bytes:
    fields = [(b"From", draw(header_value()))]
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=6)):
        fields.append((name, draw(header_value())))
    order = draw(st.permutations(fields))
    head = b"".join(n + b":" + v + b"\r\n" for n, v in order)
    body = b"".join(draw(st.lists(st.sampled_from(BODY_PIECES), max_size=30)))
    return head + b"\r\n" + body


INCLUDE = [b"from", b"to", b"subject", b"date", b"message-id", b"received", b"x-mailer", b"cc", b"reply-to"]

MUTATIONS = ["none", "body-append", "body-blanks", "body-trailing-lines", "header-case", "header-blanks",
             "header-refold", "extra-from", "drop-subject", "bad-b", "bad-bh", "no-key", "other-key", "tlsrpt-key",
             "unknown-tag", "sha1", "future", "expired", "wrong-d", "lf", "lf-body-append"]


def mutate(msg: bytes, how: str, keys: dict[str, bytes | None]) -> tuple[bytes, dict[str, bytes | None]]:
    keys = dict(keys)
    if how == "body-append":
        msg += b"-- \r\nA footer\r\n"
    elif how == "body-blanks":
        msg = msg.replace(b"\r\n\r\n", b"\r\n\r\n \t", 1) + b"x  y \r\n"
    elif how == "body-trailing-lines":
        msg += b"\r\n\r\n\r\n"
    elif how == "header-case":
        msg = msg.replace(b"From:", b"FROM:", 1)
    elif how == "header-blanks":
        msg = msg.replace(b"Subject:", b"Subject:  \t", 1).replace(b"From:", b"From: ", 1)
    elif how == "header-refold":
        msg = msg.replace(b"From:", b"From:\r\n ", 1)
    elif how == "extra-from":
        msg = b"From: someone@else.test\r\n" + msg
    elif how == "drop-subject":
        head, sep, body = msg.partition(b"\r\n\r\n")
        head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"subject:"))
        msg = head + sep + body
    elif how == "bad-b":  # a character in the top signature's b= (the field's last tag)
        end = re.search(rb"\r\n(?![ \t])", msg).start()  # type: ignore[union-attr]
        start = list(re.finditer(rb"[;\s]b=", msg[:end]))[-1].end()
        letters = [j for j in range(start, end) if msg[j:j + 1].isalnum()]
        i = letters[len(letters) // 2]
        msg = msg[:i] + (b"A" if msg[i:i + 1] != b"A" else b"B") + msg[i + 1:]
    elif how == "bad-bh":
        i = msg.index(b"bh=") + 5
        msg = msg[:i] + (b"A" if msg[i:i + 1] != b"A" else b"B") + msg[i + 1:]
    elif how == "no-key":
        keys = {k: None for k in keys}
    elif how == "other-key":
        keys = {k: (ED_PUB if v == RSA_PUB else RSA_PUB) for k, v in keys.items()}
    elif how == "tlsrpt-key":
        keys = {k: v + b"; s=tlsrpt" for k, v in keys.items() if v}
    elif how == "unknown-tag":
        msg = msg.replace(b"v=1;", b"v=1; z=From:x@y.test; zz=1;", 1)
    elif how == "sha1":
        msg = msg.replace(b"a=rsa-sha256", b"a=rsa-sha1", 1)
    elif how == "future":
        msg = msg.replace(b"; t=", b"; t=9", 1)
    elif how == "expired":
        msg = msg.replace(b"v=1;", b"v=1; x=%d;" % (time.time() - 86400 * 30), 1)
    elif how == "wrong-d":
        msg = msg.replace(b"d=sender.test", b"d=other.test", 1)
    elif how == "lf":
        msg = msg.replace(b"\r\n", b"\n")
    elif how == "lf-body-append":
        msg = msg.replace(b"\r\n", b"\n") + b"more\n"
    return msg, keys


@settings(max_examples=400, deadline=None)
@given(message(), st.sampled_from([b"rsa-sha256", b"ed25519-sha256"]), st.sampled_from(CANONS),
       st.lists(st.sampled_from(INCLUDE), max_size=8), st.booleans(), st.sampled_from([None, b"@sender.test",
                                                                                      b"joe@mail.sender.test"]),
       st.booleans(), st.sampled_from(MUTATIONS))
def test_same_verdict_as_dkimpy(msg: bytes, algorithm: bytes, canon: tuple[bytes, bytes], include: list[bytes],
                                length: bool, identity: bytes | None, twice: bool, how: str) -> None:
    include = [b"from"] + include
    signed = sign(msg, algorithm, canon, include, length, identity) + msg
    if twice:  # a second signature on top, the other algorithm, relaxed/relaxed
        other = b"ed25519-sha256" if algorithm == b"rsa-sha256" else b"rsa-sha256"
        signed = sign(signed, other, (b"relaxed", b"relaxed"), [b"from", b"subject", b"to"]) + signed
    signed, keys = mutate(signed, how, KEYS)
    answers = assert_same(signed, keys, 2 if twice else 1)
    one_from = len(re.findall(rb"^from:", msg, re.I | re.M)) == 1  # dkimpy fails a second From: always
    if how in ("none", "lf") and not length and one_from:
        assert answers[:2 if twice else 1] == [True] * (2 if twice else 1)  # answered here, and pass


def test_rfc8463_examples() -> None:
    keys = {name: value["TXT"][0].encode() for name, value in RFC8463_KEYS.items()}
    assert assert_same(RFC8463_MESSAGE, keys, 2) == [True, True, False]
    assert assert_same(RFC8463_MESSAGE.replace(b"\r\n", b"\n"), keys, 2) == [True, True, False]
    changed = RFC8463_MESSAGE.replace(b"Is dinner ready?", b"Is dinner ready!")
    assert assert_same(changed, keys, 2) == [False, False, False]


@pytest.mark.parametrize("algorithm", [b"rsa-sha256", b"ed25519-sha256"])
@pytest.mark.parametrize("canon", CANONS)
def test_rfc6376_example(algorithm: bytes, canon: tuple[bytes, bytes]) -> None:
    """The appendix message, signed with its tags (i= a sub-domain of d=, Received
    signed), then forwarded with a Received on top, and with its body changed."""
    signed = sign(RFC6376_MESSAGE, algorithm, canon, RFC6376_HEADERS, identity=b"joe@football.sender.test")
    signed += RFC6376_MESSAGE
    assert assert_same(signed, KEYS, 1) == [True, False]
    forwarded = b"Received: from mx.sender.test by mx.example.net; Fri, 11 Jul 2003 21:05:00 -0700\r\n" + signed
    assert assert_same(forwarded, KEYS, 1) == [True, False]
    assert assert_same(signed.replace(b"hungry", b"angry"), KEYS, 1)[0] is False


def test_key_names_are_the_checkers() -> None:
    assert key_name(b"Sel", b"Example.ORG.") == "sel._domainkey.example.org"


# -- the pieces that replace dkimpy's regex work ------------------------------------------

TAG_PIECES = [b"v=1", b";", b" ", b"\r\n ", b"\t", b"b=", b"bh=", b" b =", b"abc+/", b"==", b"=", b"h=from:to",
              b"1x=", b"_k=", b"b", b"\r\n", b"\n", b"x", b"\xff", b"\x0b"]
tag_lists = st.lists(st.sampled_from(TAG_PIECES), max_size=30).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(tag_lists)
def test_btag_removal_is_dkimpys(value: bytes) -> None:
    assert BTAG.sub(b"\\1", value) == dkim.RE_BTAG.sub(b"\\1", value)


@settings(max_examples=1500, deadline=None)
@given(tag_lists)
def test_tag_parse_is_dkimpys(value: bytes) -> None:
    try:
        want = parse_tag_value(value)
    except InvalidTagValueList:
        want = None
    assert parse_tags(value) == want



NOW = 1_800_000_000
B64_PIECES = [b"", b"abcd", b"AB+/", b"a", b"==", b"=", b" ", b"\r\n ", b"\t", b"\x0b", b"\n", b"-", b"ab=c"]
b64ish = st.lists(st.sampled_from(B64_PIECES), max_size=6).map(b"".join)
TIMES = [str(NOW + d).encode() for d in (-36001, -36000, -1, 0, 1, 35999, 36000, 36001)] + [b"0", b"12\n", b"x", b""]
DOMAINS = [b"sender.test", b"Sender.TEST", b"", b"a;b.test", b"\xc3\xa9.test", b"x(y).test"]
IDS = [b"@sender.test", b"u@mail.sender.test", b"sender.test", b"u@other.test", b"u.sender.test", b"@SENDER.test",
       b"xsender.test"]


GOOD = {b"v": b"1", b"a": b"rsa-sha256", b"c": b"relaxed/relaxed", b"d": b"sender.test", b"i": b"@sender.test",
        b"q": b"dns/txt", b"s": b"sel", b"t": str(NOW).encode(), b"x": str(NOW + 86400).encode(),
        b"h": b"from : to", b"bh": b"iPezWQzCJxi98PzGCpA0IFNoY89ttTkEzNMkcvsyEPk=",
        b"b": b"MIBJRGP//6+omp0pBreQ\r\n 4fNEF/+lccNdZJokIrmlwA==\r\n"}
MISSING = object()
REQUIRED_ONLY_DROPS = (b"i", b"t", b"x", b"q", b"c")
CHOICES = {b"v": [b"1", b"2", b""], b"a": [b"rsa-sha256", b"ed25519-sha256", b"rsa-sha1", b"hmac"],
           b"d": DOMAINS, b"i": IDS, b"q": [b"dns/txt", b"dns"], b"t": TIMES, b"x": TIMES, b"l": [b"10", b"x"],
           b"h": [b"from"], b"s": [b"sel"], b"c": [b"simple"]}


@st.composite
def signature_tags(draw: st.DrawFn) -> dict[bytes, bytes]:
    """A valid signature's tags (all of them, or only the required ones) with up to
    three of them changed or removed."""
    sig = dict(GOOD) if draw(st.booleans()) else {k: v for k, v in GOOD.items() if k not in REQUIRED_ONLY_DROPS}
    for _ in range(draw(st.integers(0, 3))):
        tag = draw(st.sampled_from(sorted(GOOD) + [b"l"]))
        value = draw(st.sampled_from([MISSING] + (CHOICES[tag] if tag in CHOICES else [draw(b64ish)])))
        if value is MISSING:
            sig.pop(tag, None)
        else:
            sig[tag] = value
    return sig


@settings(max_examples=3000, deadline=None)
@given(signature_tags())
def test_fields_surely_valid_only_where_dkimpy_accepts_them(sig: dict[bytes, bytes]) -> None:
    """surely_valid may say "not sure" (dkimpy then decides), never "valid" where
    dkimpy's validate_signature_fields raises."""
    real_time = time.time
    time.time = lambda: NOW + 0.5  # type: ignore[assignment] - dkimpy reads time.time() itself
    try:
        try:
            dkim.validate_signature_fields(sig)
            dkimpy_ok = True
        except Exception:  # noqa: BLE001 - ValidationError, or IndexError on an i= as long as d=
            dkimpy_ok = False
        if surely_valid(sig, NOW):
            assert dkimpy_ok
    finally:
        time.time = real_time  # type: ignore[assignment]


def test_fields_of_a_common_signature_are_surely_valid() -> None:
    assert surely_valid(GOOD, NOW)
