"""Password hashes: make and check them.

New hashes are bcrypt (``$2b$``).  Checking also accepts SHA512-crypt (``$6$``, what
many Dovecot passwd-files hold, so users can bring theirs) when the platform's crypt()
offers it, and ``{PLAIN}secret`` only where the config allows plaintext passwords.
Both functions are slow on purpose and must run off the reactor thread.
"""

from __future__ import annotations

import hmac
import warnings

import bcrypt

BCRYPT_ROUNDS = 10

# Checked when the login is unknown, so that an unknown user costs as much time as a
# wrong password (no user enumeration by timing).
_DUMMY_HASH = bcrypt.hashpw(b"not a password", bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(BCRYPT_ROUNDS)).decode("ascii")


def is_supported(stored: str, allow_plaintext: bool = False) -> bool:
    if stored.startswith(("$2b$", "$2y$", "$2a$")):
        return True
    if stored.startswith("$6$"):
        return _crypt() is not None
    return allow_plaintext and stored.startswith("{PLAIN}")


def _crypt():  # type: ignore[no-untyped-def]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # removed in Python 3.13; SHA512-crypt is then unavailable
    except ImportError:
        return None
    return crypt.crypt


def check_password(password: str, stored: str | None, allow_plaintext: bool = False) -> bool:
    """True if ``password`` matches ``stored``; ``stored=None`` means an unknown user and
    still spends the time of one bcrypt check."""
    pw = password.encode("utf-8")
    if stored is None or not stored:
        bcrypt.checkpw(pw, _DUMMY_HASH.encode())
        return False
    if stored.startswith(("$2b$", "$2y$", "$2a$")):
        try:
            return bcrypt.checkpw(pw, stored.encode("ascii"))
        except ValueError:
            return False
    if stored.startswith("$6$"):
        crypt = _crypt()
        if crypt is None:
            return False
        return hmac.compare_digest(crypt(password, stored) or "", stored)
    if stored.startswith("{PLAIN}") and allow_plaintext:
        bcrypt.checkpw(pw, _DUMMY_HASH.encode())  # same cost as a real check
        return hmac.compare_digest(pw, stored[len("{PLAIN}"):].encode("utf-8"))
    bcrypt.checkpw(pw, _DUMMY_HASH.encode())
    return False
