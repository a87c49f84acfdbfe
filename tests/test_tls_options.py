"""tls.py without a server: building contexts, reload keeping the old context on bad
files, the self-signed check; and tls.min_version = "1.3" against a running server."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from mailsuite.config import DEFAULT_CIPHERS
from mailsuite.tls import ReloadableContextFactory, TLSConfigError, build_options, generate_self_signed, is_self_signed
from tests.support.server import Server
from tests.support.tls import make_chain, s_client


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    generate_self_signed(cert, key, "mail.example.test")
    return cert, key


def test_context_builds_from_a_pair_with_the_default_ciphers(pair: tuple[Path, Path]) -> None:
    assert build_options(*pair, ciphers=DEFAULT_CIPHERS).getContext() is not None


def test_unknown_cipher_string_is_a_config_error(pair: tuple[Path, Path]) -> None:
    with pytest.raises(TLSConfigError, match="tls.ciphers"):
        build_options(*pair, ciphers="NO-SUCH-CIPHER")


def test_key_of_another_certificate_is_a_config_error(pair: tuple[Path, Path], tmp_path: Path) -> None:
    other_cert, other_key = tmp_path / "o.pem", tmp_path / "ok.pem"
    generate_self_signed(other_cert, other_key, "other.example.test")
    with pytest.raises(TLSConfigError):
        build_options(pair[0], other_key)


def test_reload_with_a_mismatched_key_keeps_the_old_context(pair: tuple[Path, Path], tmp_path: Path) -> None:
    ctx = ReloadableContextFactory(*pair, ciphers=DEFAULT_CIPHERS)
    before = ctx.getContext()
    generate_self_signed(tmp_path / "o.pem", tmp_path / "ok.pem", "other.example.test")
    shutil.copy(tmp_path / "o.pem", pair[0])  # new certificate, old key
    assert ctx.reload() is False
    assert ctx.getContext() is before
    shutil.copy(tmp_path / "ok.pem", pair[1])  # now the matching key arrives too
    assert ctx.reload() is True
    assert ctx.getContext() is not before


def test_self_signed_is_recognised(pair: tuple[Path, Path], tmp_path: Path) -> None:
    assert is_self_signed(pair[0])
    chain = make_chain(tmp_path / "chain")
    assert not is_self_signed(chain["fullchain"])


def test_min_version_1_3_refuses_tls_1_2(server_factory: Callable[..., Server]) -> None:
    srv = server_factory("tls13", tls={"min_version": "1.3"}).start()
    assert s_client(srv.ports["submissions"], "-tls1_2").returncode != 0
    r = s_client(srv.ports["submissions"], "-tls1_3")
    assert r.returncode == 0 and b"TLSv1.3" in r.stdout
