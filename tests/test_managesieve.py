"""ManageSieve (RFC 5804) with real clients: Debian's sieve-connect and sievelib's
client over STARTTLS with the test certificate, plus the protocol's edges on a raw
socket (literals, errors with their line, quotas, login only after TLS)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.programs import require
from tests.support.server import Server
from tests.support.sockets import LineClient
from tests.support.tls import verifying_context

ALICE, PW = "alice@example.test", "alice-pw"
HOST = "mail.example.test"  # the name in the test certificate
GOOD = 'require "fileinto";\r\nif header :contains "subject" "[list]" { fileinto "Lists"; }\r\n'


@pytest.fixture
def srv(server_factory) -> Server:  # type: ignore[no-untyped-def]
    s = server_factory(managesieve={"max_scripts": 3, "max_script_size": 2000})
    return s.start()


def sieve_connect(srv: Server, *args: str, password: str = PW) -> subprocess.CompletedProcess:
    exe = require("sieve-connect", "sieve-connect")
    r, w = os.pipe()
    os.write(w, password.encode() + b"\n")
    os.close(w)
    try:
        return subprocess.run(
            [exe, "-s", "127.0.0.1", "-p", str(srv.ports["managesieve"]), "-u", ALICE, "--passwordfd", str(r),
             "--tlscafile", str(srv.root / "tls" / "cert.pem"), "--tlshostname", HOST, "--noclearauth", *args],
            pass_fds=(r,), capture_output=True, text=True, timeout=30, cwd=srv.root)
    finally:
        os.close(r)


def test_sieve_connect_upload_activate_list_download(srv: Server, tmp_path: Path) -> None:
    local = tmp_path / "rules.sieve"
    local.write_text(GOOD)
    r = sieve_connect(srv, "--upload", "--localsieve", str(local), "--remotesieve", "rules")
    assert r.returncode == 0, r.stderr
    r = sieve_connect(srv, "--activate", "--remotesieve", "rules")
    assert r.returncode == 0, r.stderr
    r = sieve_connect(srv, "--list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ['"rules" ACTIVE']
    out = tmp_path / "back.sieve"
    r = sieve_connect(srv, "--download", "--remotesieve", "rules", "--localsieve", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes().replace(b"\r\n", b"\n") == GOOD.replace("\r\n", "\n").encode()
    # On disk: sieve/rules.sieve and the active link (Pigeonhole's ~/sieve layout).
    d = srv.maildir(ALICE) / "sieve"
    assert os.readlink(d / "active") == "rules.sieve"
    bad = tmp_path / "bad.sieve"
    bad.write_text('require "fileinto";\nfileinto "x"\nkeep;\n')
    r = sieve_connect(srv, "--checkscript", "--localsieve", str(bad))
    assert r.returncode != 0 and "line 2" in (r.stdout + r.stderr)
    r = sieve_connect(srv, "--list", password="wrong")
    assert r.returncode != 0
    # Counted by the shared throttle, with the line fail2ban reads.
    assert f"mailsuite auth failure: proto=managesieve rip=127.0.0.1 user={ALICE}" in srv.log()


def test_sievelib_client(srv: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from sievelib.managesieve import Client

    monkeypatch.setenv("SSL_CERT_FILE", str(srv.root / "tls" / "cert.pem"))
    c = Client("127.0.0.1", srv.ports["managesieve"], srvhostname=HOST)
    assert c.connect(ALICE, PW, starttls=True, authmech="PLAIN")
    assert "vacation" in c.get_sieve_capabilities() and "editheader" in c.get_sieve_capabilities()
    assert c.checkscript(GOOD)
    assert not c.checkscript('if true { keep; ')
    assert c.putscript("a", GOOD) and c.putscript("b", 'require "vacation"; vacation "away";')
    assert c.havespace("c", 100)
    assert not c.havespace("c", 5000)  # over max_script_size
    assert c.setactive("b")
    active, others = c.listscripts()
    assert active == "b" and others == ["a"]
    assert c.getscript("a").replace("\r\n", "\n").rstrip() == GOOD.replace("\r\n", "\n").rstrip()
    assert not c.deletescript("b")  # the active script cannot be deleted
    assert c.renamescript("b", "vacation")
    active, others = c.listscripts()
    assert active == "vacation"
    assert c.putscript("c", "keep;")
    assert not c.putscript("d", "keep;")  # max_scripts = 3
    assert c.setactive("") and c.listscripts()[0] is None
    assert c.deletescript("c") and c.deletescript("a")
    c.logout()


class Raw(LineClient):
    """ManageSieve over a plain socket: responses up to their OK/NO/BYE line."""

    def __init__(self, port: int) -> None:
        super().__init__(socket.create_connection(("127.0.0.1", port), timeout=10))

    def read_until_status(self) -> bytes:
        while True:
            for line in self.buf.split(b"\r\n"):
                if line[:2] in (b"OK", b"NO") or line[:3] == b"BYE":
                    end = self.buf.index(line) + len(line) + 2
                    out, self.buf = self.buf[:end], self.buf[end:]
                    return out
            data = self.sock.recv(65536)
            if not data:
                out, self.buf = self.buf, b""
                return out
            self.buf += data

    def cmd(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.read_until_status()

    def starttls(self, cafile: Path) -> bytes:
        assert self.cmd(b"STARTTLS").startswith(b"OK")
        self.sock = verifying_context(cafile).wrap_socket(self.sock, server_hostname=HOST)
        return self.read_until_status()


def test_protocol_edges(srv: Server) -> None:
    import base64

    c = Raw(srv.ports["managesieve"])
    greeting = c.read_until_status()
    assert b'"STARTTLS"' in greeting and b'"SASL" ""' in greeting and b'"VERSION" "1.0"' in greeting
    plain = base64.b64encode(f"\0{ALICE}\0{PW}".encode())
    assert c.cmd(b'AUTHENTICATE "PLAIN" "' + plain + b'"').startswith(b"NO (ENCRYPT-NEEDED)")
    assert c.cmd(b"LISTSCRIPTS").startswith(b"NO")  # not logged in
    caps = c.starttls(srv.root / "tls" / "cert.pem")
    assert b'"SASL" "PLAIN LOGIN"' in caps and b"STARTTLS" not in caps
    # SASL LOGIN with its two challenges
    c.sock.sendall(b'AUTHENTICATE "LOGIN"\r\n')
    assert c.line() == b'"VXNlcm5hbWU6"'  # "Username:"
    c.sock.sendall(b'"' + base64.b64encode(ALICE.encode()) + b'"\r\n')
    assert c.line() == b'"UGFzc3dvcmQ6"'  # "Password:"
    c.sock.sendall(b"{%d+}\r\n" % len(base64.b64encode(PW.encode())) + base64.b64encode(PW.encode()) + b"\r\n")
    assert c.read_until_status().startswith(b"OK")
    # PUTSCRIPT with a non-synchronizing literal; an error names its line.
    script = b'require "fileinto";\r\nfileinto "x"\r\nkeep;\r\n'
    r = c.cmd(b'PUTSCRIPT "x" {%d+}\r\n' % len(script) + script)
    assert r.startswith(b"NO") and b"line 2" in r
    # A literal over max_script_size is skipped, not buffered, and the session goes on.
    big = b"#" * 5000 + b"\r\n"
    r = c.cmd(b'PUTSCRIPT "big" {%d+}\r\n' % len(big) + big)
    assert r.startswith(b"NO (QUOTA/MAXSIZE)")
    assert c.cmd(b'NOOP "abc"') == b'OK (TAG "abc") "Done."\r\n'
    assert c.cmd(b'SETACTIVE "nosuch"').startswith(b"NO (NONEXISTENT)")
    assert c.cmd(b'PUTSCRIPT "../evil" "keep;"').startswith(b"NO")
    assert c.cmd(b'GETSCRIPT "nosuch"').startswith(b"NO (NONEXISTENT)")
    assert c.cmd(b"BOGUS").startswith(b"NO")
    assert c.cmd(b"UNAUTHENTICATE").startswith(b"OK")
    assert c.cmd(b"LISTSCRIPTS").startswith(b"NO")
    assert c.cmd(b"LOGOUT").startswith(b"OK")


def test_implicit_tls_listener_and_limits(server_factory, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from sievelib.managesieve import Client

    from tests.support.server import free_port

    port = free_port()
    srv = server_factory(managesieve={"listen_tls": [f"tcp:{port}:interface=127.0.0.1"],
                                      "max_connections_per_ip": 3}).start()
    monkeypatch.setenv("SSL_CERT_FILE", str(srv.root / "tls" / "cert.pem"))
    c = Client("127.0.0.1", port, srvhostname=HOST)
    assert c.connect(ALICE, PW, ssl=True, authmech="LOGIN")
    assert c.putscript("x", "keep;") and c.listscripts() == (None, ["x"])
    c.logout()  # sievelib leaves its socket open: the server aborts it after the grace period
    time.sleep(6)
    # Connections per IP: the fourth is told to come back later.
    socks = [Raw(srv.ports["managesieve"]) for _ in range(3)]
    for s in socks:
        assert s.read_until_status().splitlines()[-1].startswith(b"OK")
    extra = Raw(srv.ports["managesieve"])
    assert extra.read_until_status().startswith(b"BYE (TRYLATER)")


def test_an_activated_script_applies_to_the_next_message(srv: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Delivery reuses its "no script" answer for [sieve] script_check_interval (2 s),
    but a script activated through ManageSieve applies at once."""
    import smtplib

    from sievelib.managesieve import Client

    def send(subject: str) -> None:
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
            s.sendmail("bob@example.test", [ALICE], f"Subject: {subject}\r\n\r\nhi\r\n".encode())

    send("before")  # delivery now knows alice has no script
    monkeypatch.setenv("SSL_CERT_FILE", str(srv.root / "tls" / "cert.pem"))
    c = Client("127.0.0.1", srv.ports["managesieve"], srvhostname=HOST)
    assert c.connect(ALICE, PW, starttls=True, authmech="PLAIN")
    assert c.putscript("f", 'require ["fileinto"]; fileinto "Archive";') and c.setactive("f")
    send("after")
    assert len(srv.messages(ALICE)) == 1 and len(srv.messages(ALICE, "Archive")) == 1
    c.logout()


def test_a_trickled_command_is_cut_off(server_factory) -> None:  # type: ignore[no-untyped-def]
    """The request deadline (frontend/pacing.py) applies: 1 s here, plus 1 s per 500 bytes."""
    srv = server_factory(managesieve={"request_deadline": 1}).start()
    c = Raw(srv.ports["managesieve"])
    c.read_until_status()
    c.sock.sendall(b"NOOP")  # ... and nothing more
    time.sleep(2.5)
    assert c.read_until_status().startswith(b'BYE "Request too slow."')


def test_a_literal_whose_crlf_comes_in_a_second_write_is_acked_at_once(srv: Server) -> None:
    """A client without TCP_NODELAY that sends a PUTSCRIPT literal and the CRLF ending
    the command in two writes waits for the literal's ACK (Nagle); the server ACKs at
    once instead of after its delayed-ACK timer (~40 ms per command)."""
    import base64
    import time

    c = Raw(srv.ports["managesieve"])
    c.read_until_status()
    c.starttls(srv.root / "tls" / "cert.pem")
    plain = base64.b64encode(f"\0{ALICE}\0{PW}".encode())
    assert c.cmd(b'AUTHENTICATE "PLAIN" "' + plain + b'"').startswith(b"OK")
    script = b"keep;\r\n"
    started = time.monotonic()
    for i in range(25):
        c.sock.sendall(b'PUTSCRIPT "s%d" {%d+}\r\n' % (i % 3, len(script)) + script)
        c.sock.sendall(b"\r\n")
        assert c.read_until_status().startswith(b"OK")
    took = time.monotonic() - started
    assert took < 0.8, f"25 PUTSCRIPTs took {took:.2f} s (40 ms each would be 1 s)"
