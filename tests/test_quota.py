"""Mailbox quotas (RFC 9208 QUOTA, QUOTA=RES-STORAGE, QUOTA=RES-MESSAGE), enforced
wherever mail enters a mailbox: SMTP RCPT (452 4.2.2 when full), the end of DATA
(452 4.2.2 when this message would not fit, 552 5.2.2 when it never can), the
queue's local copies (deferred, or bounced with 5.2.2), IMAP APPEND/COPY
(NO [OVERQUOTA]); MOVE and POP3 are not limited.  Limits come from the users file
(``:quota=BYTES:quota_messages=N``) or LDAP; usage from the Maildir itself."""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import smtplib
from pathlib import Path
from typing import Iterator

import pytest

from mailsuite.store.usage import Usage, UsageCounter
from tests.support.server import Server, hashed, make_server
from tests.support.waiting import wait_for

PW = "quota-pw"
# address -> users file options
QUOTAS = {
    "info@example.test": ":quota=10240:quota_messages=5",  # GETQUOTAROOT numbers
    "count@example.test": ":quota_messages=1",  # full after one message
    "small@example.test": ":quota=4000",  # DATA: would exceed / never fits
    "imapq@example.test": ":quota=4000",  # APPEND / COPY / MOVE
    "relayq@example.test": ":quota=2000",  # the queue's local copy, never fits
    "relayd@example.test": ":quota=4000",  # the queue's local copy, deferred
    "popq@example.test": ":quota_messages=1",  # POP3 unaffected, frees room
    "free@example.test": "",  # no quota
    "alice@example.test": "",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("quota"), users={a: PW for a in QUOTAS},
                      server={"allow_plaintext_auth": True})
    # The same users file the admin writes, with the quota fields.
    (srv.root / "users").write_text("".join(f"{a}:{hashed(PW)}{q}\n" for a, q in QUOTAS.items()))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def body(size: int, subject: str = "quota") -> bytes:
    head = f"From: s@remote.test\r\nTo: x@example.test\r\nSubject: {subject}\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    text = line * ((size - len(head)) // len(line) + 1)
    return head + text[: size - len(head)]


def smtp(server: Server) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=20)


def imap(server: Server, user: str) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=20)
    m.login(user, PW)
    return m


def disk_usage(server: Server, account: str) -> tuple[int, int]:
    """(octets, messages) on disk in every folder, as the server should count them."""
    root = server.maildir(account)
    total = count = 0
    if not root.exists():
        return 0, 0
    for folder in [root] + [root / e for e in os.listdir(root) if e.startswith(".")]:
        for sub in ("cur", "new"):
            d = folder / sub
            if d.is_dir():
                for name in os.listdir(d):
                    total += (d / name).stat().st_size
                    count += 1
    return total, count


# -- usage -----------------------------------------------------------------------------


def _maildir(root: Path) -> Path:
    for sub in ("cur", "new", "tmp", ".Sent/cur", ".Sent/new"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def test_usage_sums_sizes_of_every_folder_and_sees_changes_by_others(tmp_path: Path) -> None:
    acct = _maildir(tmp_path / "a")
    (acct / "new" / "1.M1P1Q1.h,S=100,W=104").write_bytes(b"x" * 100)
    (acct / ".Sent" / "cur" / "2.M1P1Q2.h,S=50,W=52:2,S").write_bytes(b"y" * 50)
    (acct / "cur" / "3.other-program:2,").write_bytes(b"z" * 30)  # no S=: stat-ed
    now = [2e9]  # far after every mtime: sums are remembered
    counter = UsageCounter(clock=lambda: now[0])
    assert counter.usage(acct) == Usage(180, 3)
    # Another process delivers and expunges: the directories' mtimes change.
    os.utime(acct / "new", ns=(1, 1))  # make sure the mtime moves even within one tick
    (acct / "new" / "4.M1P1Q4.h,S=1000,W=1010").write_bytes(b"x" * 1000)
    (acct / ".Sent" / "cur" / "2.M1P1Q2.h,S=50,W=52:2,S").unlink()
    assert counter.usage(acct) == Usage(1130, 3)
    assert counter.usage(tmp_path / "missing") == Usage(0, 0)


# -- IMAP: GETQUOTAROOT, GETQUOTA, SETQUOTA, STATUS --------------------------------------


def test_capability_advertises_quota_resources(server: Server) -> None:
    m = imap(server, "free@example.test")
    try:
        typ, data = m.capability()
        assert {b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE"} <= set(data[0].split())
    finally:
        m.logout()


def test_getquotaroot_reports_usage_in_kib_and_messages(server: Server) -> None:
    with smtp(server) as s:
        s.sendmail("s@remote.test", ["info@example.test"], body(3000))
    octets, count = disk_usage(server, "info@example.test")
    assert count == 1 and 3000 < octets < 3500
    m = imap(server, "info@example.test")
    try:
        typ, data = m.getquotaroot("INBOX")
        assert typ == "OK"
        roots, quotas = data
        assert roots == [b'"INBOX" ""']
        # RFC 9208 5.1: STORAGE in units of 1024 octets; used rounded up.
        kib = -(-octets // 1024)
        assert quotas == [f'"" (STORAGE {kib} 10 MESSAGE 1 5)'.encode()]
        typ, data = m.getquota('""')
        assert typ == "OK" and data == [f'"" (STORAGE {kib} 10 MESSAGE 1 5)'.encode()]
        typ, data = m.getquota("other")
        assert typ == "NO" and data[0].startswith(b"[NONEXISTENT]")
        # Quotas come from the directory: SETQUOTA is refused (RFC 9208 4.1.3).
        typ, data = m._simple_command("SETQUOTA", '""', "(STORAGE 100)")
        assert typ == "NO" and data[0].startswith(b"[CANNOT]"), data
    finally:
        m.logout()


def test_account_without_quota_has_no_quota_root(server: Server) -> None:
    m = imap(server, "free@example.test")
    try:
        typ, data = m.getquotaroot("INBOX")
        assert typ == "OK" and data[0] == [b'"INBOX"']
        typ, data = m._simple_command("GETQUOTAROOT", "NoSuchFolder")
        assert typ == "NO" and data[0].startswith(b"[NONEXISTENT]")
    finally:
        m.logout()


def test_status_deleted_and_deleted_storage(server: Server) -> None:
    m = imap(server, "free@example.test")
    try:
        m.create("Del")
        m.append("Del", "(\\Deleted)", None, body(2048))
        m.append("Del", "()", None, body(100))
        typ, data = m.status("Del", "(MESSAGES DELETED DELETED-STORAGE)")
        assert typ == "OK"
        assert b"MESSAGES 2 DELETED 1 DELETED-STORAGE 2" in data[0]
    finally:
        m.logout()


# -- SMTP -------------------------------------------------------------------------------


def test_rcpt_to_a_full_mailbox_gets_452_4_2_2(server: Server) -> None:
    with smtp(server) as s:
        s.sendmail("s@remote.test", ["count@example.test"], body(500))
        s.mail("s@remote.test")
        code, text = s.rcpt("count@example.test")
        assert (code, text[:5]) == (452, b"4.2.2"), text
        assert s.rcpt("free@example.test")[0] == 250  # other recipients still welcome
        s.rset()
    assert disk_usage(server, "count@example.test")[1] == 1
    assert "mailbox full, 452 4.2.2" in server.log()


def test_data_that_would_exceed_is_deferred_and_too_big_is_refused(server: Server) -> None:
    with smtp(server) as s:
        s.sendmail("s@remote.test", ["small@example.test"], body(2500))
        # Fits an emptier mailbox: temporary (RFC 3463 X.2.2, "persistent transient").
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("s@remote.test", ["small@example.test"], body(2500))
        assert e.value.smtp_code == 452 and e.value.smtp_error.startswith(b"4.2.2")
        # Larger than the whole quota: it can never be delivered (552, RFC 5321 4.2.2).
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("s@remote.test", ["small@example.test"], body(5000))
        assert e.value.smtp_code == 552 and e.value.smtp_error.startswith(b"5.2.2")
    assert disk_usage(server, "small@example.test")[1] == 1


def test_queue_local_copy_over_quota_is_bounced_with_5_2_2(server: Server) -> None:
    # A remote recipient too: the message goes through the queue, which delivers the
    # local copy through the same delivery filters.
    with smtp(server) as s:
        s.sendmail("alice@example.test", ["relayq@example.test", "someone@far.test"], body(3000, "too big"))
    wait_for(lambda: re.search(r"to=<relayq@example.test>.*dsn=5\.2\.2, status=bounced", server.log()),
             timeout=30, what="the local copy bounced")
    assert disk_usage(server, "relayq@example.test")[1] == 0
    wait_for(lambda: any(b"5.2.2" in msg for msg in server.messages("alice@example.test")), timeout=30,
             what="the DSN to the sender")


def test_queue_local_copy_that_would_exceed_is_deferred_4_2_2(server: Server) -> None:
    with smtp(server) as s:
        s.sendmail("s@remote.test", ["relayd@example.test"], body(3000))
        s.sendmail("alice@example.test", ["relayd@example.test", "someone@far.test"], body(2000, "later"))
    wait_for(lambda: re.search(r"to=<relayd@example.test>.*dsn=4\.2\.2, status=deferred", server.log()),
             timeout=30, what="the local copy deferred")
    assert disk_usage(server, "relayd@example.test")[1] == 1


# -- IMAP APPEND / COPY / MOVE -----------------------------------------------------------


def test_append_and_copy_over_quota_answer_overquota_move_does_not(server: Server) -> None:
    m = imap(server, "imapq@example.test")
    try:
        assert m.append("INBOX", "()", None, body(2500))[0] == "OK"
        typ, data = m.append("INBOX", "()", None, body(2500))
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
        m.select("INBOX")
        typ, data = m.copy("1", "Archive")
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
        # MOVE within the account's one quota root takes no more room.
        typ, data = m._simple_command("MOVE", "1", "Archive")
        assert typ == "OK", data
        assert disk_usage(server, "imapq@example.test")[1] == 1
    finally:
        m.logout()


# -- POP3 -------------------------------------------------------------------------------


def test_pop3_is_unaffected_and_deleting_makes_room(server: Server) -> None:
    with smtp(server) as s:
        s.sendmail("s@remote.test", ["popq@example.test"], body(300))
        s.mail("s@remote.test")
        assert s.rcpt("popq@example.test")[0] == 452
        s.rset()
    p = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=20)
    try:
        p.user("popq@example.test")
        p.pass_(PW)
        assert len(p.retr(1)[1]) > 0
        p.dele(1)
    finally:
        p.quit()
    with smtp(server) as s:  # the room is seen at once (the directory's mtime changed)
        s.sendmail("s@remote.test", ["popq@example.test"], body(300))
    assert disk_usage(server, "popq@example.test")[1] == 1


# -- LDAP -------------------------------------------------------------------------------


def test_storage_quota_from_ldap(tmp_path: Path) -> None:
    from tests.support.slapd import MAIL_GROUP, SERVICE_DN, SERVICE_PW, SUFFIX, Person, Slapd, base_ldif, require_slapd
    from tests.support.tls import make_ca

    require_slapd()
    ca = make_ca(tmp_path / "ca")
    slapd = Slapd(tmp_path / "slapd", ca, ldif=base_ldif((Person("quinn", "quinn-pw", "quinn@example.test",
                                                                 quota="3K"),))).start()
    srv = make_server(tmp_path / "srv", server={"allow_plaintext_auth": True})
    (srv.root / "ldap-password").write_text(SERVICE_PW + "\n")
    srv.sections["directory"] = {"backend": "ldap"}
    srv.sections["directory.ldap"] = {
        "servers": [slapd.url], "base_dn": SUFFIX, "bind_dn": SERVICE_DN, "bind_password_file": "ldap-password",
        "required_group": MAIL_GROUP, "quota_attribute": "mailQuota", "ca_file": str(ca.ca_cert),
    }
    try:
        srv.start()
        with smtp(srv) as s:
            s.sendmail("s@remote.test", ["quinn@example.test"], body(2000))
            with pytest.raises(smtplib.SMTPDataError) as e:  # 3K = 3072 octets
                s.sendmail("s@remote.test", ["quinn@example.test"], body(2000))
            assert e.value.smtp_code == 452
        octets, _ = disk_usage(srv, "quinn@example.test")
        m = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=20)
        try:
            m.login("quinn", "quinn-pw")
            typ, data = m.getquotaroot("INBOX")
            assert typ == "OK" and data[1] == [f'"" (STORAGE {-(-octets // 1024)} 3)'.encode()]
        finally:
            m.logout()
    finally:
        srv.stop()
        slapd.stop()
