"""dkimpy's RSA through OpenSSL (``cryptography``).

dkimpy does RSA in pure Python: about 20 ms per 2048-bit signature and, when
verifying, a byte-by-byte integer conversion that is a quarter of the verification
time.  Importing this module replaces, once per process, the four functions dkimpy's
``dkim`` module looks up for RSA (parse a PEM private key, sign, parse a public key,
verify) by wrappers that keep dkimpy's parsed-key dicts (its checks read them) and
add the OpenSSL key object; signing and verifying then go through OpenSSL (about
1 ms and 50 us).  A key OpenSSL cannot load falls back to dkimpy's own code, so the
results never differ, only the speed.
"""

from __future__ import annotations

from typing import Any

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, utils as asym_utils


class _Key(dict):
    """dkimpy's parsed-key dict, carrying the OpenSSL key it came from."""

    openssl: Any = None


_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


def _install() -> None:
    if getattr(dkim, "_mailsuite_openssl", False):
        return
    parse_priv = dkim.parse_pem_private_key
    sign_orig = dkim.RSASSA_PKCS1_v1_5_sign
    parse_pub = dkim.parse_public_key
    verify_orig = dkim.RSASSA_PKCS1_v1_5_verify
    priv_cache: dict[bytes, _Key] = {}
    pub_cache: dict[bytes, _Key] = {}

    def parse_private(data: bytes) -> Any:
        hit = priv_cache.get(data)
        if hit is not None:
            return hit
        pk = _Key(parse_priv(data))
        try:
            pk.openssl = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            pk.openssl = None
        if len(priv_cache) < 64:
            priv_cache[data] = pk
        return pk

    def parse_public(data: bytes) -> Any:
        hit = pub_cache.get(data)
        if hit is not None:
            return hit
        pk = _Key(parse_pub(data))
        try:
            pk.openssl = serialization.load_der_public_key(data)
        except (ValueError, TypeError):
            pk.openssl = None
        if len(pub_cache) >= 1024:
            pub_cache.clear()
        pub_cache[data] = pk
        return pk

    def sign(h: Any, private_key: Any) -> bytes:
        key = getattr(private_key, "openssl", None)
        algo = _HASHES.get(getattr(h, "name", ""))
        if key is None or algo is None:
            return sign_orig(h, private_key)
        return key.sign(h.digest(), padding.PKCS1v15(), asym_utils.Prehashed(algo()))

    def verify(h: Any, signature: bytes, public_key: Any) -> bool:
        key = getattr(public_key, "openssl", None)
        algo = _HASHES.get(getattr(h, "name", ""))
        if key is None or algo is None or not hasattr(key, "verify"):
            return verify_orig(h, signature, public_key)
        try:
            key.verify(bytes(signature), h.digest(), padding.PKCS1v15(), asym_utils.Prehashed(algo()))
        except (InvalidSignature, ValueError):
            return False
        return True

    dkim.parse_pem_private_key = parse_private
    dkim.RSASSA_PKCS1_v1_5_sign = sign
    dkim.parse_public_key = parse_public
    dkim.RSASSA_PKCS1_v1_5_verify = verify
    dkim._mailsuite_openssl = True


_install()
