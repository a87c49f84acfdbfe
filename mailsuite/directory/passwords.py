"""Password hashes: make and check them.

New hashes are argon2id (``$argon2id$``, argon2-cffi with its RFC 9106 "low memory"
defaults: t=3, m=64 MiB, p=4, as Dovecot's ARGON2ID): no length limit, memory-hard.
Checking also accepts bcrypt (``$2b$``, what earlier versions wrote), SHA512-crypt
(``$6$``, what many Dovecot passwd-files hold, so users can bring theirs) when the
platform's crypt() offers it, and ``{PLAIN}secret`` only where the config allows
plaintext passwords.

Every path answers the same way for the same input: bcrypt cannot take more than 72
bytes (it raises ValueError), so a longer password is simply a mismatch for a bcrypt
hash, checked at the cost of the dummy hash, exactly as for an unknown user (issue 16
finding 2: the unknown-user path used to raise, which answered "temporary failure"
and told an attacker which accounts exist).  An unknown user costs one check of the
dummy hash, made with the parameters of new hashes.

Both functions are slow on purpose and must run off the reactor thread (the worker
pool, ``mailsuite.workers.run``); at most ``MAX_CONCURRENT`` argon2 computations run
at once (64 MiB each), whatever the pool size.
"""

from __future__ import annotations

import hmac
import threading
import warnings

import argon2
import bcrypt

MAX_CONCURRENT = 4
_slots = threading.BoundedSemaphore(MAX_CONCURRENT)  # bounds memory, not the reactor
_hasher = argon2.PasswordHasher()  # argon2id, RFC 9106 low-memory profile

# Checked when the login is unknown (or the hash cannot take this password), so that
# such a probe costs as much time as a wrong password (no enumeration by timing).
_DUMMY_HASH = _hasher.hash("not a password")

_BCRYPT = ("$2b$", "$2y$", "$2a$")


def hash_password(password: str) -> str:
    with _slots:
        return _hasher.hash(password)


def is_supported(stored: str, allow_plaintext: bool = False) -> bool:
    if stored.startswith(("$argon2id$", "$argon2i$")) or stored.startswith(_BCRYPT):
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


def _argon2(password: bytes, stored: str) -> bool:
    with _slots:
        try:
            return _hasher.verify(stored, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False


def _dummy(password: bytes) -> bool:
    """Spend the time of one real check, and say no."""
    _argon2(password, _DUMMY_HASH)
    return False


def check_password(password: str, stored: str | None, allow_plaintext: bool = False) -> bool:
    """True if ``password`` matches ``stored``; ``stored=None`` means an unknown user and
    still spends the time of one check.  Never raises for any password or hash."""
    pw = password.encode("utf-8", "surrogateescape")
    if not stored:
        return _dummy(pw)
    if stored.startswith(("$argon2id$", "$argon2i$")):
        return _argon2(pw, stored)
    if stored.startswith(_BCRYPT):
        if len(pw) > 72:
            return _dummy(pw)  # bcrypt refuses these; no hash of ours can match
        try:
            return bcrypt.checkpw(pw, stored.encode("ascii"))
        except ValueError:
            return False
    if stored.startswith("$6$"):
        crypt = _crypt()
        if crypt is None:
            return _dummy(pw)
        return hmac.compare_digest(crypt(password, stored) or "", stored)
    if stored.startswith("{PLAIN}") and allow_plaintext:
        _dummy(pw)  # same cost as a real check
        return hmac.compare_digest(pw, stored[len("{PLAIN}"):].encode("utf-8"))
    return _dummy(pw)
