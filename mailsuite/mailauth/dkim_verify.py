"""DKIM signatures verified without dkimpy's per-message object, for the common cases.

dkimpy's ``DKIM(message).verify(idx)`` parses the whole message again for every
signature, canonicalises every header field of the message (not only the signed
ones), formats debug strings that no logger reads, and wraps each hash in its own
object.  :class:`SignedMessage` parses the message once and verifies each signature
with the same steps in the same order, on the same helpers of dkimpy's where they
decide something (``validate_signature_fields``, unless :func:`surely_valid` already
knows it would pass, ``select_headers``, the
canonicalisation classes, ``evaluate_pk``, and the RSA verify that
:mod:`mailsuite.mailauth.dkim_openssl` puts on OpenSSL) or on equivalents without
per-character regex work (:func:`parse_tags` for ``parse_tag_value``, :data:`BTAG`
for ``RE_BTAG``), and one body hash per (body canonicalisation, algorithm) shared by
the signatures.

It handles: ``a=rsa-sha256`` with an RSA key and ``a=ed25519-sha256`` with an
ed25519 key, relaxed or simple canonicalisation, the tags of RFC 6376 3.5 other than
``l=`` and ``z=``.  Anything else (an ``l=`` tag, an unknown tag, rsa-sha1, a key
record dkimpy refuses, a tlsrpt key, any exception) answers None: the caller asks
dkimpy, whose answer then stands.  So the result is always dkimpy's;
tests/test_dkim_verify.py compares the two on generated signed messages and the
RFC 6376/8463 examples.

Measured in-process on bench/mailauth.py's message (4 KB, one relaxed/relaxed
rsa-sha256 2048 signature, key cached): the checker's signature step took 0.27 ms
through dkimpy, 0.09 ms through this (a third of it the RSA verify and the hashes).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from typing import Any

import dkim
import dkim.canonicalization as canon
import nacl.exceptions

from mailsuite.mailauth import dkim_fast  # noqa: F401 - the fast split and canonicalisation
from mailsuite.mailauth import dkim_openssl  # noqa: F401 - RSA through OpenSSL

_TAGS = frozenset((b"v", b"a", b"b", b"bh", b"c", b"d", b"h", b"i", b"q", b"s", b"t", b"x"))
_KEY_TYPE = {b"rsa-sha256": b"rsa", b"ed25519-sha256": b"ed25519"}
_CANON = {b"relaxed": canon.Relaxed, b"simple": canon.Simple}
# dkimpy's RE_BTAG (the b= tag and its value, to be emptied before hashing the
# signature field) spelled so that the value is one character-class run instead of a
# group per character: 38 us -> 2 us on a 2048-bit signature field.  The same
# matches: its FWS, ``(?:(?:\s*\r?\n)?\s+)?``, matches exactly the runs of zero or
# more whitespace characters, so ``(?:FWS[b64])*`` is the longest run of whitespace
# and base64 characters that ends in a base64 character, which is what
# ``[\s b64]*[b64]`` backtracks to (tests/test_dkim_verify.py compares the two).
BTAG = re.compile(rb"([;\s]b\s*=)(?:[\sa-zA-Z0-9+/=]*[a-zA-Z0-9+/=])?(?:\r?\n\Z)?")
_H_SPLIT = re.compile(rb"\s*:\s*")
MIN_RSA_BITS = 1024  # dkimpy's default minkey: a pass with a smaller key is a failure
# What re's bytes \s matches: deleting these with bytes.translate is re.sub(rb"\s+", b"")
# without the regex (0.3 us instead of 2-4 us on a b= value).
WSP = b" \t\n\r\x0b\x0c"
_B64_OR_WSP = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" + WSP
_SPECIALS = re.compile(rb"[\(\)<>\[\]:;@\\,]")
_SLOP = 36000  # dkimpy's 10 hours of leeway for t= and x=


def parse_tags(value: bytes) -> dict[bytes, bytes] | None:
    """dkimpy's ``parse_tag_value``, None where it raises: its key test,
    ``re.match(br"^[a-zA-Z](\\w)*", key)``, only asks for an ASCII letter first (bytes'
    ``isalpha`` is ASCII only), so no regex call per tag."""
    tags: dict[bytes, bytes] = {}
    specs = value.strip().split(b";")
    if not specs[-1]:
        specs.pop()  # a trailing semicolon is allowed
    for spec in specs:
        key, sep, v = spec.partition(b"=")
        key = key.strip()
        if not sep or not key[:1].isalpha() or key in tags:
            return None
        tags[key] = v.strip()
    return tags


def surely_valid(sig: dict[bytes, bytes], now: int) -> bool:
    """True only where dkimpy's ``validate_signature_fields(sig)`` (at time ``now``)
    does not raise, for a DKIM-Signature whose tags are among :data:`_TAGS` without
    ``l=``: its tests without its regex calls (17 of them, 10 us a signature).  False
    means "not sure": the caller then asks dkimpy's.  Where this is stricter than
    dkimpy (a t= with a trailing newline, a d= that is not ASCII, an i= equal to d=,
    a b= of only "=" and blanks) it answers False."""
    for tag in (b"v", b"a", b"b", b"bh", b"d", b"h", b"s"):
        if tag not in sig:
            return False
    if sig[b"v"] != b"1" or sig[b"a"] not in _KEY_TYPE or b"l" in sig:
        return False
    # dkimpy: re.match(rb"[\s0-9A-Za-z+/]+[\s=]*$", b) (for bh= it tests b= again), and
    # both without blanks a multiple of 4 long.  Without the trailing blanks and "=",
    # what is left must be base64 or blanks, and not empty.
    b = sig[b"b"]
    core = b.rstrip(WSP + b"=")
    if not core or core.translate(None, _B64_OR_WSP):
        return False
    if len(b.translate(None, WSP)) % 4 or len(sig[b"bh"].translate(None, WSP)) % 4:
        return False
    d = sig[b"d"]
    if not d or not d.isascii() or _SPECIALS.search(d):
        return False
    i = sig.get(b"i")
    if i is not None and not (len(i) > len(d) and i.lower().endswith(d.lower()) and i[-len(d) - 1] in (0x40, 0x2E)):
        return False
    if sig.get(b"q", b"dns/txt") != b"dns/txt":
        return False
    t = sig.get(b"t")
    if t is not None and not (t.isdigit() and int(t) <= now + _SLOP):
        return False
    x = sig.get(b"x")
    if x is not None and not (x.isdigit() and int(x) >= now - _SLOP and (t is None or int(x) >= int(t))):
        return False
    return True


def key_name(s: bytes, d: bytes) -> str:
    """The key's DNS name as the checker's key table spells it (what dkimpy asks its
    dnsfunc for, lower case, without the final dot)."""
    return (s + b"._domainkey." + d).decode("ascii", "replace").lower().rstrip(".")


class SignedMessage:
    """One message parsed as dkimpy parses it (raises what dkimpy's parse raises)."""

    def __init__(self, message: bytes) -> None:
        self.headers, self.body = dkim.rfc822_parse(message)
        self.signatures = [(x, y) for x, y in self.headers if x.lower() == b"dkim-signature"]
        self._body_hashes: dict[tuple[Any, bytes], bytes] = {}

    def verify(self, idx: int, keys: dict[str, bytes | None]) -> bool | None:
        """dkimpy's verdict on signature ``idx`` (the topmost is 0) against the key
        records in ``keys`` (by :func:`key_name`), or None for a case left to dkimpy."""
        if idx >= len(self.signatures):
            return False
        try:
            return self._verify(self.signatures[idx], keys)
        except Exception:  # noqa: BLE001 - whatever it is, dkimpy decides
            return None

    def _verify(self, sig_header: tuple[bytes, bytes], keys: dict[str, bytes | None]) -> bool | None:
        name, value = sig_header
        sig = parse_tags(value)
        if sig is None or not _TAGS.issuperset(sig):
            return None
        if not surely_valid(sig, int(time.time())):
            dkim.validate_signature_fields(sig)  # raises where the fields are wrong
        algorithm = sig[b"a"]
        want_type = _KEY_TYPE.get(algorithm)
        if want_type is None:
            return None
        c = sig.get(b"c", b"simple/simple").split(b"/")
        if len(c) == 1:
            c.append(b"simple")
        if len(c) != 2 or c[0] not in _CANON or c[1] not in _CANON:
            return None
        header_canon, body_canon = _CANON[c[0]], _CANON[c[1]]
        record = keys.get(key_name(sig[b"s"], sig[b"d"]))
        pk, keysize, ktag, tlsrpt = dkim.evaluate_pk(sig[b"s"] + b"._domainkey." + sig[b"d"] + b".", record)
        if tlsrpt or ktag != want_type:
            return None

        body_hash = self._body_hashes.get((body_canon, algorithm))
        if body_hash is None:
            body_hash = hashlib.sha256(body_canon.canonicalize_body(self.body)).digest()
            self._body_hashes[(body_canon, algorithm)] = body_hash
        if body_hash != base64.b64decode(sig[b"bh"].translate(None, WSP)):
            return False

        include = [x.lower() for x in _H_SPLIT.split(sig[b"h"])]
        if b"from" in include:
            include.append(b"from")  # dkimpy: an added From: field breaks the signature
        # Selecting first and canonicalising only what was selected gives what dkimpy's
        # canonicalise-all-then-select gives: selection compares lower-cased names, and
        # canonicalisation only lower-cases a name.
        signed = dkim.select_headers(self.headers, include)
        h = hashlib.sha256()
        for x, y in header_canon.canonicalize_headers(signed):
            h.update(x + b":" + y)
        for x, y in header_canon.canonicalize_headers([(name, BTAG.sub(b"\\1", value))]):
            h.update(x + b":" + y.rstrip())
        signature = base64.b64decode(sig[b"b"].translate(None, WSP))
        if ktag == b"rsa":
            return bool(dkim.RSASSA_PKCS1_v1_5_verify(h, signature, pk)) and keysize >= MIN_RSA_BITS
        try:
            pk.verify(h.digest(), signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True
