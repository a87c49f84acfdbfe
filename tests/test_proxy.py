"""Proxy mode ([proxy]): a front node logs users in against LDAP and hands each session
to the backend named by the user's mailHost, over STARTTLS verified against the
backends' CA.  Two backend nodes (127.0.0.2 and 127.0.0.3, same ports) share one
mail tree, as docs/scaling.md lays out; the log of the backend that served a login
proves where the proxy sent it."""

from __future__ import annotations

import imaplib
import poplib
import shutil
import smtplib
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.server import Server, free_port, make_server
from tests.support.slapd import SERVICE_DN, SERVICE_PW, SUFFIX, Person, Slapd, base_ldif, require_slapd
from tests.support.tls import client_context, make_ca

require_slapd()

ERIN = Person("erin", "erin-pw", "erin@example.test", host="127.0.0.2")
FRANK = Person("frank", "frank-pw", "frank@example.test", host="127.0.0.3")
BACKENDS = ("127.0.0.2", "127.0.0.3")


def ldap_sections(srv: Server, slapd: Slapd, ca: Any) -> None:
    (srv.root / "ldap-password").write_text(SERVICE_PW + "\n")
    srv.sections["directory"] = {"backend": "ldap"}
    srv.sections["directory.ldap"] = {
        "servers": [slapd.url], "base_dn": SUFFIX, "bind_dn": SERVICE_DN, "bind_password_file": "ldap-password",
        "ca_file": str(ca.ca_cert), "connect_timeout": 2.0, "timeout": 2.0, "request_timeout": 4.0,
    }


def wait_greeting(host: str, port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), 0.5) as s:
                if s.recv(1):
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing greets on {host}:{port}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("proxy")
    ca = make_ca(tmp / "ca", ("mail.example.test",), BACKENDS)
    slapd = Slapd(Path(tempfile.mkdtemp(prefix="slapd-")), ca, ldif=base_ldif((ERIN, FRANK))).start()
    ports = {p: free_port() for p in ("smtp", "imap", "pop3", "submission")}
    shared = tmp / "shared-mail"
    started: list[Server] = []
    try:
        backends = {}
        for ip in BACKENDS:
            b = make_server(tmp / ip, server={"hostname": f"node-{ip}.example.test", "mail_dir": str(shared)},
                            tls={"certificate": str(ca.server_cert), "private_key": str(ca.server_key)})
            for proto, section in (("smtp", "smtp"), ("imap", "imap"), ("pop3", "pop3"), ("submission", "submission")):
                b.sections[section]["listen"] = [f"tcp:{ports[proto]}:interface={ip}"]
                b.sections[section]["listen_tls"] = []
            for section in ("http", "managesieve"):
                b.sections[section] = {"listen": [], "listen_tls": []}
            ldap_sections(b, slapd, ca)
            b.wait_ports = {}
            b.start()
            started.append(b)
            for proto in ports:
                wait_greeting(ip, ports[proto])
            backends[ip] = b
        front = make_server(tmp / "front", server={"hostname": "proxy.example.test"})
        for section in ("smtp", "submission", "imap", "pop3", "http", "managesieve"):
            front.sections[section] = {"listen": [], "listen_tls": []}
        fports = {p: free_port() for p in ("imap", "pop3", "submission")}
        front.sections["proxy"] = {
            "imap_listen": [f"tcp:{fports['imap']}:interface=127.0.0.1"],
            "pop3_listen": [f"tcp:{fports['pop3']}:interface=127.0.0.1"],
            "submission_listen": [f"tcp:{fports['submission']}:interface=127.0.0.1"],
            "imap_port": ports["imap"], "pop3_port": ports["pop3"], "submission_port": ports["submission"],
            "backend_ca_file": str(ca.ca_cert),
        }
        ldap_sections(front, slapd, ca)
        front.wait_ports = fports
        front.ports.update({f"proxy_{k}": v for k, v in fports.items()})
        front.start()
        started.append(front)
        yield {"front": front, "backends": backends, "ports": ports, "fports": fports}
    finally:
        for s in started:
            s.stop()
        slapd.stop()
        shutil.rmtree(slapd.root, ignore_errors=True)


def imap_via_proxy(cluster: dict[str, Any]) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", cluster["fports"]["imap"])
    m.starttls(client_context())
    return m


def logins_in(srv: Server, user: str) -> int:
    return srv.log().count(f"login {user}")


def test_imap_sessions_go_to_the_backend_ldap_names(cluster: dict[str, Any]) -> None:
    b2, b3 = cluster["backends"]["127.0.0.2"], cluster["backends"]["127.0.0.3"]
    with smtplib.SMTP("127.0.0.2", cluster["ports"]["smtp"]) as s:
        s.sendmail("x@remote.test", ["erin@example.test"], b"Subject: for erin\r\n\r\nhi\r\n")
    m = imap_via_proxy(cluster)
    assert "IMAP4REV2" in m.capabilities  # the proxy advertises what its backends speak
    assert m.login("erin", "erin-pw")[0] == "OK"
    typ, data = m._simple_command("ENABLE", "IMAP4rev2")  # spliced through to the backend
    assert m._untagged_response(typ, data, "ENABLED") == ("OK", [b"IMAP4rev2"])
    assert m.select("INBOX") == ("OK", [b"1"])
    typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"for erin" in data[0][1]
    m.logout()
    m = imap_via_proxy(cluster)
    m.login("frank@example.test", "frank-pw")
    assert m.select("INBOX") == ("OK", [b"0"])
    m.logout()
    time.sleep(0.5)
    assert logins_in(b2, "erin@example.test") == 1 and logins_in(b3, "erin@example.test") == 0
    assert logins_in(b3, "frank@example.test") == 1 and logins_in(b2, "frank@example.test") == 0
    assert "proxied to 127.0.0.2" in cluster["front"].log()


def test_pop3_and_submission_are_pinned_too(cluster: dict[str, Any]) -> None:
    b3 = cluster["backends"]["127.0.0.3"]
    with smtplib.SMTP("127.0.0.1", cluster["fports"]["submission"]) as s:
        s.starttls(context=client_context())
        s.login("erin@example.test", "erin-pw")
        s.sendmail("erin@example.test", ["frank@example.test"], b"Subject: from erin\r\n\r\nhello frank\r\n")
    before = b3.log().count("pop3: [")
    p = poplib.POP3("127.0.0.1", cluster["fports"]["pop3"])
    p.stls(client_context())
    p.user("frank@example.test")
    p.pass_("frank-pw")
    count, _ = p.stat()
    assert count == 1
    assert b"hello frank" in b"\r\n".join(p.retr(1)[1])
    p.quit()
    assert b3.log().count("pop3: [") > before
    assert "submission-proxy: [127.0.0.1] erin@example.test proxied to 127.0.0.2" in cluster["front"].log()


def test_wrong_password_is_refused_by_the_proxy_itself(cluster: dict[str, Any]) -> None:
    m = imap_via_proxy(cluster)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login("erin", "wrong")
    m.logout()
    assert "auth failure: proto=imap" in cluster["front"].log()


def test_no_password_before_tls_and_no_backend_for_an_unpinned_user(cluster: dict[str, Any]) -> None:
    m = imaplib.IMAP4("127.0.0.1", cluster["fports"]["imap"])
    assert "LOGINDISABLED" in m.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        m.login("erin", "erin-pw")
    m.logout()
    m = imap_via_proxy(cluster)
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        m.login("bob", "bob-pw")  # no mailHost, no default_host
    m.logout()


def test_authenticate_plain_and_a_literal_login(cluster: dict[str, Any]) -> None:
    m = imap_via_proxy(cluster)
    typ, _ = m.authenticate("PLAIN", lambda _: b"\0frank@example.test\0frank-pw")
    assert typ == "OK"
    assert m.select("INBOX")[0] == "OK"
    m.logout()
    raw = socket.create_connection(("127.0.0.1", cluster["fports"]["imap"]))
    raw.recv(4096)
    raw.sendall(b"a STARTTLS\r\n")
    assert b"a OK" in raw.recv(4096)
    tls = client_context().wrap_socket(raw, server_hostname="mail.example.test")
    tls.sendall(b"b LOGIN {4}\r\n")
    assert tls.recv(4096).startswith(b"+ ")
    tls.sendall(b"erin {7+}\r\nerin-pw\r\n")
    reply = b""
    while b"b " not in reply:
        reply += tls.recv(4096)
    assert b"b OK" in reply
    tls.sendall(b"c LOGOUT\r\n")
    tls.close()
