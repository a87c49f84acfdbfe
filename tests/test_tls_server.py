"""TLS on every SMTP listener, checked with ``openssl s_client``: versions, ciphers,
compression, the full chain, per-service certificates, SIGHUP reload, self-signed
generation, and handshakes that fail or stall."""

from __future__ import annotations

import re
import signal
import socket
import time
from typing import Callable, Iterator

import pytest
from cryptography import x509

from mailsuite.tls import generate_self_signed
from tests.support.server import Server, started
from tests.support.smtp import HOST, Raw
from tests.support.sockets import closed
from tests.support.tls import make_chain, peer_certificate, s_client

# Debian's OpenSSL refuses TLS 1.1 on the client side at the default security level;
# level 0 makes sure it is the server that says no.
OLD_CLIENT = ("-cipher", "DEFAULT@SECLEVEL=0")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(tmp_path_factory.mktemp("tls") / "srv",
                       tls={"handshake_timeout": 1, "max_handshakes_per_ip": 3},
                       submission={"max_connections_per_ip": 1})


@pytest.fixture(scope="module")
def chain_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared certificate is a chain under "Test Root CA"; submission has its own
    under "Other Test Root CA"."""
    root = tmp_path_factory.mktemp("chain") / "srv"
    make_chain(root / "shared")
    make_chain(root / "sub", prefix="Other ")
    yield from started(root, tls={"certificate": "shared/fullchain.pem", "private_key": "shared/key.pem"},
                       **{"tls.submission": {"certificate": "sub/fullchain.pem", "private_key": "sub/key.pem"}})


def listeners(server: Server) -> list[tuple[int, bool]]:
    return [(server.ports["submissions"], False), (server.ports["submission"], True), (server.ports["smtp"], True)]


def handshake_ok(result) -> bool:  # type: ignore[no-untyped-def]
    out = result.stdout.decode(errors="replace")
    return result.returncode == 0 and "Cipher is (NONE)" not in out and "New, " in out


# -- versions, ciphers, compression ------------------------------------------------------------


@pytest.mark.parametrize("which", ["submissions", "submission", "smtp"])
def test_tls_1_1_is_refused(srv: Server, which: str) -> None:
    r = s_client(srv.ports[which], "-tls1_1", *OLD_CLIENT, starttls=which != "submissions")
    assert not handshake_ok(r)
    assert b"protocol version" in r.stdout + r.stderr or b"unsupported protocol" in r.stdout + r.stderr


def test_tls_1_0_is_refused(srv: Server) -> None:
    r = s_client(srv.ports["submissions"], "-tls1", *OLD_CLIENT)
    assert not handshake_ok(r)


@pytest.mark.parametrize("which", ["submissions", "submission", "smtp"])
def test_tls_1_2_gets_an_ecdhe_aead_cipher_without_compression(srv: Server, which: str) -> None:
    r = s_client(srv.ports[which], "-tls1_2", starttls=which != "submissions")
    out = r.stdout.decode()
    assert handshake_ok(r), out
    assert re.search(r"Cipher is ECDHE-\w+-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)", out), out
    assert "Compression: NONE" in out


def test_tls_1_3_is_offered(srv: Server) -> None:
    r = s_client(srv.ports["submissions"], "-tls1_3")
    assert handshake_ok(r)
    assert "TLSv1.3" in r.stdout.decode()


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-GCM-SHA256"])
def test_cbc_and_static_key_exchange_ciphers_are_refused(srv: Server, cipher: str) -> None:
    r = s_client(srv.ports["submissions"], "-tls1_2", "-cipher", cipher)
    assert not handshake_ok(r)


# -- certificates ------------------------------------------------------------------------------


def test_full_chain_is_sent_and_verifies(chain_srv: Server) -> None:
    r = s_client(chain_srv.ports["smtp"], "-showcerts", "-CAfile", str(chain_srv.root / "shared" / "root.pem"),
                 "-verify_return_error", "-verify_hostname", "mail.example.test", starttls=True)
    out = r.stdout.decode()
    assert handshake_ok(r), out + r.stderr.decode()
    assert out.count("-----BEGIN CERTIFICATE-----") == 2
    assert "Verify return code: 0 (ok)" in out


def test_service_with_its_own_certificate_presents_it(chain_srv: Server) -> None:
    for port, starttls in ((chain_srv.ports["submissions"], False), (chain_srv.ports["submission"], True)):
        cert = peer_certificate(port, starttls=starttls)
        assert cert.issuer.rfc4514_string() == "CN=Other Test Intermediate CA"
    assert peer_certificate(chain_srv.ports["smtp"], starttls=True).issuer.rfc4514_string() == "CN=Test Intermediate CA"


def test_sighup_reload_is_seen_by_new_connections_and_keeps_old_ones(server_factory: Callable[..., Server]) -> None:
    srv = server_factory("reload").start()
    port = srv.ports["submissions"]
    before = peer_certificate(port)
    established = Raw(port, implicit_tls=True)
    established.cmd("EHLO client.test")
    old_der = established.sock.getpeercert(binary_form=True)

    (srv.root / "tls" / "cert.pem").unlink()
    generate_self_signed(srv.root / "tls" / "cert.pem", srv.root / "tls" / "key.pem", "mail.example.test")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while "certificate reloaded" not in srv.log() and time.time() < deadline:
        time.sleep(0.05)
    assert "certificate reloaded" in srv.log()

    after = peer_certificate(port)
    assert after.serial_number != before.serial_number
    assert peer_certificate(srv.ports["submission"], starttls=True).serial_number == after.serial_number
    # The connection made before the reload is still up, with its old certificate.
    assert established.cmd("NOOP")[0] == 250
    assert x509.load_der_x509_certificate(old_der).serial_number == before.serial_number
    established.close()


def test_sighup_with_a_broken_certificate_keeps_the_old_one(server_factory: Callable[..., Server]) -> None:
    srv = server_factory("badreload").start()
    port = srv.ports["submissions"]
    before = peer_certificate(port)
    (srv.root / "tls" / "cert.pem").write_text("not a certificate\n")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while "reload failed" not in srv.log() and time.time() < deadline:
        time.sleep(0.05)
    assert "reload failed, keeping the current certificate" in srv.log()
    assert peer_certificate(port).serial_number == before.serial_number


def test_self_signed_pair_is_generated_only_when_asked_and_logged(server_factory: Callable[..., Server]) -> None:
    srv = server_factory("gen")
    for name in ("cert.pem", "key.pem"):
        (srv.root / "tls" / name).unlink()
    srv.sections["tls"]["generate_self_signed"] = True
    srv.start()
    assert (srv.root / "tls" / "cert.pem").exists()
    assert "generated a SELF-SIGNED certificate" in srv.log()
    assert peer_certificate(srv.ports["submissions"]).subject.rfc4514_string() == "CN=mail.example.test"


# -- handshakes that fail or stall ------------------------------------------------------------


def test_stalled_handshake_on_465_is_closed_after_the_timeout(srv: Server) -> None:
    stalled = socket.create_connection((HOST, srv.ports["submissions"]))
    started_at = time.time()
    assert closed(stalled, 5)
    assert 0.8 < time.time() - started_at < 4
    stalled.close()
    assert "TLS handshake not finished in 1s" in srv.log()


def test_stalled_handshake_holds_no_connection_slot(srv: Server) -> None:
    # max_connections_per_ip is 1 for submission: a stalled handshake must not take it.
    stalled = socket.create_connection((HOST, srv.ports["submissions"]))
    try:
        with Raw(srv.ports["submissions"], implicit_tls=True) as r:
            assert r.greeting[0] == 220
    finally:
        stalled.close()


def test_half_finished_handshake_is_closed_after_the_timeout(srv: Server) -> None:
    stalled = socket.create_connection((HOST, srv.ports["submissions"]))
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
    assert closed(stalled, 5)
    stalled.close()


def test_failed_handshake_is_closed_and_logged(srv: Server) -> None:
    with socket.create_connection((HOST, srv.ports["submissions"])) as bad:
        bad.sendall(b"EHLO not-tls.test\r\n")
        bad.settimeout(5)
        try:
            data = bad.recv(100)
            assert b"220" not in data
        except ConnectionResetError:
            pass
    with Raw(srv.ports["submissions"], implicit_tls=True) as r:
        assert r.greeting[0] == 220
    assert "TLS handshake failed" in srv.log()


def test_handshakes_in_progress_per_ip_are_limited(srv: Server) -> None:
    socks = [socket.create_connection((HOST, srv.ports["submissions"])) for _ in range(4)]
    try:
        assert closed(socks[-1], 0.5)  # the fourth is closed at once (limit 3)
        assert not closed(socks[0], 0.2)
    finally:
        for s in socks:
            s.close()
    assert "too many TLS handshakes in progress" in srv.log()


def test_stalled_starttls_handshake_is_closed_after_the_timeout(srv: Server) -> None:
    with Raw(srv.ports["smtp"]) as r:
        r.cmd("EHLO client.test")
        assert r.cmd("STARTTLS")[0] == 220
        started_at = time.time()
        assert r.closed_by_server(wait=5)
        assert time.time() - started_at < 4
    assert "TLS handshake not finished in 1s; closed" in srv.log()


def test_failed_starttls_handshake_frees_the_connection_slot(srv: Server) -> None:
    # submission allows one connection per IP here; a failed STARTTLS must give it back.
    with Raw(srv.ports["submission"]) as r:
        r.cmd("EHLO client.test")
        assert r.cmd("STARTTLS")[0] == 220
        r.send(b"garbage, not a ClientHello\r\n")
        assert r.closed_by_server(wait=5)
    time.sleep(0.2)
    with Raw(srv.ports["submission"]) as r:
        assert r.greeting[0] == 220
