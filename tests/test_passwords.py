"""Password hashes: argon2id for new ones, bcrypt and SHA512-crypt accepted, plaintext
only if allowed; no password length makes a check raise (issue 16 finding 2)."""

from __future__ import annotations

import time

import bcrypt
import pytest

from mailsuite.directory import passwords
from mailsuite.directory.passwords import check_password, hash_password, is_supported

# SHA512-crypt of "secret" with salt "saltsalt" (as in a Dovecot passwd-file).
SHA512_SECRET = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1"


def test_new_hashes_are_argon2id() -> None:
    h = hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert "correct horse" not in h


def test_bcrypt_hashes_of_earlier_versions_still_check() -> None:
    stored = bcrypt.hashpw(b"old-pw", bcrypt.gensalt(4)).decode()
    assert is_supported(stored)
    assert check_password("old-pw", stored) and not check_password("old-px", stored)


LONG = "ä" * 40  # 80 bytes: bcrypt raises ValueError above 72


def test_passwords_over_72_bytes_hash_and_check() -> None:
    h = hash_password(LONG + "x")
    assert check_password(LONG + "x", h) and not check_password(LONG + "y", h)


@pytest.mark.parametrize("stored", [None, "", "$2b$04$" + "a" * 53, "{PLAIN}pw", "$1$md5$x"])
def test_a_long_password_is_a_plain_mismatch_for_every_kind_of_entry(stored: str | None) -> None:
    """Known user (bcrypt), unknown user, odd entries: all say no, none raises."""
    if stored and stored.startswith("$2b$"):
        stored = bcrypt.hashpw(b"short", bcrypt.gensalt(4)).decode()
    assert check_password(LONG, stored, allow_plaintext=True) is False


def test_hashes_are_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_right_password_checks() -> None:
    assert check_password("pw-ü", hash_password("pw-ü"))


def test_wrong_password_fails() -> None:
    assert not check_password("wrong", hash_password("right"))


def test_unknown_user_fails() -> None:
    assert not check_password("anything", None)
    assert not check_password("anything", "")


def test_unknown_user_costs_as_much_as_a_wrong_password() -> None:
    stored = hash_password("right")

    def timed(stored_hash: str | None) -> float:
        best = 1e9
        for _ in range(3):
            t0 = time.perf_counter()
            check_password("wrong", stored_hash)
            best = min(best, time.perf_counter() - t0)
        return best

    wrong, unknown = timed(stored), timed(None)
    assert 0.5 < unknown / wrong < 2.0


def test_sha512_crypt_is_accepted() -> None:
    if passwords._crypt() is None:
        pytest.skip("crypt module not available on this Python")
    assert is_supported(SHA512_SECRET)
    assert check_password("secret", SHA512_SECRET)
    assert not check_password("Secret", SHA512_SECRET)


def test_plaintext_only_when_allowed() -> None:
    assert not is_supported("{PLAIN}pw")
    assert not check_password("pw", "{PLAIN}pw")
    assert is_supported("{PLAIN}pw", allow_plaintext=True)
    assert check_password("pw", "{PLAIN}pw", allow_plaintext=True)
    assert not check_password("px", "{PLAIN}pw", allow_plaintext=True)


def test_unsupported_scheme_fails_closed() -> None:
    assert not is_supported("$1$md5salt$hash")
    assert not check_password("pw", "$1$md5salt$hash")
    assert not check_password("pw", "pw")  # a bare string is never a password


def test_corrupt_bcrypt_hash_fails_without_error() -> None:
    assert not check_password("pw", "$2b$10$tooshort")
