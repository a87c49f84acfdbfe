"""Submission: users may send only as themselves (envelope sender and From:), the
switches that relax it, the headers an MSA adds (RFC 6409 8) and the Received line."""

from __future__ import annotations

import re
import smtplib
from email import message_from_bytes
from typing import Iterator

import pytest

from tests.support.server import Server, started
from tests.support.smtp import HOST, message, submit_session
from tests.support.tls import client_context

ALIASES = "sales@example.test: alice\nteam@example.test: alice, bob\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(tmp_path_factory.mktemp("sender") / "srv", aliases=ALIASES,
                       submission={"any_sender_users": ["bob@example.test"]})


@pytest.fixture(scope="module")
def relaxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from started(tmp_path_factory.mktemp("relaxed") / "srv",
                       submission={"enforce_sender": False, "add_missing_headers": False})


def delivered(server: Server, account: str, subject: str) -> list[bytes]:
    return [m for m in server.messages(account) if f"Subject: {subject}\n".encode() in m]


def send(server: Server, user: str, password: str, sender: str, to: str, body: bytes) -> dict:
    with submit_session(server, user, password) as s:
        return s.sendmail(sender, [to], body)


# -- envelope sender --------------------------------------------------------------------


def test_foreign_envelope_sender_gets_553(srv: Server) -> None:
    with submit_session(srv) as s:
        s.ehlo()
        code, text = s.mail("carol@other.test")
    assert code == 553
    assert text.startswith(b"5.7.1")


def test_own_address_as_envelope_sender_is_accepted(srv: Server) -> None:
    send(srv, "alice@example.test", "alice-pw", "alice@example.test", "bob@example.test",
         message("alice@example.test", "bob@example.test", "own"))
    assert delivered(srv, "bob@example.test", "own")


def test_envelope_sender_compares_case_insensitively(srv: Server) -> None:
    with submit_session(srv) as s:
        s.ehlo()
        assert s.mail("Alice@Example.TEST")[0] == 250


def test_alias_of_the_user_may_be_the_sender(srv: Server) -> None:
    send(srv, "alice@example.test", "alice-pw", "sales@example.test", "bob@example.test",
         message('"Sales" <sales@example.test>', "bob@example.test", "alias"))
    assert delivered(srv, "bob@example.test", "alias")


def test_alias_of_someone_else_is_refused(srv: Server) -> None:
    with submit_session(srv, "carol@other.test", "carol-pw") as s:
        s.ehlo()
        assert s.mail("sales@example.test")[0] == 553


def test_null_sender_is_allowed(srv: Server) -> None:
    send(srv, "alice@example.test", "alice-pw", "", "bob@example.test",
         message("alice@example.test", "bob@example.test", "nullsender"))
    assert delivered(srv, "bob@example.test", "nullsender")


# -- From: header -----------------------------------------------------------------------------


def test_foreign_from_header_gets_553_and_nothing_is_delivered(srv: Server) -> None:
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(srv, "alice@example.test", "alice-pw", "alice@example.test", "bob@example.test",
             message("The Boss <carol@other.test>", "bob@example.test", "forged-from"))
    assert info.value.smtp_code == 553
    assert info.value.smtp_error.startswith(b"5.7.1")
    assert not delivered(srv, "bob@example.test", "forged-from")


def test_from_header_with_one_foreign_address_of_several_gets_553(srv: Server) -> None:
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(srv, "alice@example.test", "alice-pw", "alice@example.test", "bob@example.test",
             message("alice@example.test, carol@other.test", "bob@example.test", "two-from"))
    assert info.value.smtp_code == 553


def test_folded_from_header_is_checked(srv: Server) -> None:
    body = b"From: \"Alice\"\r\n <carol@other.test>\r\nSubject: folded\r\n\r\nhi\r\n"
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(srv, "alice@example.test", "alice-pw", "alice@example.test", "bob@example.test", body)
    assert info.value.smtp_code == 553


def test_from_header_after_many_headers_is_still_checked(srv: Server) -> None:
    filler = "".join(f"X-Filler-{i}: {'x' * 200}\r\n" for i in range(400))  # ~80 KB of headers
    body = f"{filler}From: carol@other.test\r\nSubject: late-from\r\n\r\nhi\r\n".encode()
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(srv, "alice@example.test", "alice-pw", "alice@example.test", "bob@example.test", body)
    assert info.value.smtp_code == 553


def test_from_in_the_body_is_not_a_header(srv: Server) -> None:
    body = b"From: alice@example.test\r\nSubject: body-from\r\n\r\nFrom: carol@other.test\r\n"
    send(srv, "alice@example.test", "alice-pw", "alice@example.test", "bob@example.test", body)
    assert delivered(srv, "bob@example.test", "body-from")


def test_the_session_goes_on_after_a_refused_from(srv: Server) -> None:
    with submit_session(srv) as s:
        with pytest.raises(smtplib.SMTPDataError):
            s.sendmail("alice@example.test", ["bob@example.test"],
                       message("carol@other.test", "bob@example.test", "refused-first"))
        s.sendmail("alice@example.test", ["bob@example.test"],
                   message("alice@example.test", "bob@example.test", "accepted-second"))
    assert delivered(srv, "bob@example.test", "accepted-second")
    assert not delivered(srv, "bob@example.test", "refused-first")


def test_user_listed_in_any_sender_users_may_send_as_anyone(srv: Server) -> None:
    send(srv, "bob@example.test", "bob-pw", "ceo@elsewhere.example", "alice@example.test",
         message("ceo@elsewhere.example", "alice@example.test", "any-sender"))
    assert delivered(srv, "alice@example.test", "any-sender")


def test_enforce_sender_false_lets_everyone_send_as_anyone(relaxed: Server) -> None:
    send(relaxed, "alice@example.test", "alice-pw", "carol@other.test", "bob@example.test",
         message("carol@other.test", "bob@example.test", "relaxed"))
    assert delivered(relaxed, "bob@example.test", "relaxed")


# -- headers added by the MSA, Received -------------------------------------------------------


def test_missing_message_id_and_date_are_added(srv: Server) -> None:
    send(srv, "alice@example.test", "alice-pw", "alice@example.test", "bob@example.test",
         b"From: alice@example.test\r\nSubject: bare\r\n\r\nbody\r\n")
    (raw,) = delivered(srv, "bob@example.test", "bare")
    msg = message_from_bytes(raw)
    assert re.fullmatch(r"<[^<>@\s]+@mail\.example\.test>", msg["Message-ID"])
    assert msg["Date"]
    # Added inside the header block, before the blank line; the body is untouched.
    assert raw.endswith(b"\n\nbody\n")


def test_present_message_id_and_date_are_kept(srv: Server) -> None:
    send(srv, "alice@example.test", "alice-pw", "alice@example.test", "bob@example.test",
         b"From: alice@example.test\r\nMessage-ID: <given@client>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
         b"Subject: kept\r\n\r\nbody\r\n")
    (raw,) = delivered(srv, "bob@example.test", "kept")
    msg = message_from_bytes(raw)
    assert msg.get_all("Message-ID") == ["<given@client>"]
    assert msg.get_all("Date") == ["Mon, 1 Jan 2024 00:00:00 +0000"]


def test_message_without_body_gets_the_headers_too(srv: Server) -> None:
    send(srv, "alice@example.test", "alice-pw", "alice@example.test", "bob@example.test",
         b"From: alice@example.test\r\nSubject: headers-only\r\n")
    (raw,) = delivered(srv, "bob@example.test", "headers-only")
    msg = message_from_bytes(raw)
    assert msg["Message-ID"] and msg["Date"]


def test_add_missing_headers_can_be_turned_off(relaxed: Server) -> None:
    send(relaxed, "alice@example.test", "alice-pw", "alice@example.test", "bob@example.test",
         b"From: alice@example.test\r\nSubject: no-add\r\n\r\nbody\r\n")
    (raw,) = delivered(relaxed, "bob@example.test", "no-add")
    assert message_from_bytes(raw)["Message-ID"] is None


def test_mx_listener_adds_no_headers(srv: Server) -> None:
    with smtplib.SMTP(HOST, srv.ports["smtp"], timeout=10) as s:
        s.sendmail("x@remote.test", ["bob@example.test"], b"From: x@remote.test\r\nSubject: mx-bare\r\n\r\nb\r\n")
    (raw,) = delivered(srv, "bob@example.test", "mx-bare")
    assert message_from_bytes(raw)["Message-ID"] is None


def test_received_records_tls_version_cipher_and_user_on_587(srv: Server) -> None:
    send(srv, "alice@example.test", "alice-pw", "alice@example.test", "bob@example.test",
         message("alice@example.test", "bob@example.test", "received587"))
    (raw,) = delivered(srv, "bob@example.test", "received587")
    received = message_from_bytes(raw)["Received"]
    assert re.search(r"\(using TLSv1\.[23] \S+\)", received), received
    assert "(Authenticated sender: alice@example.test)" in received
    assert "with ESMTPSA" in received


def test_received_records_tls_on_465(srv: Server) -> None:
    with smtplib.SMTP_SSL(HOST, srv.ports["submissions"], context=client_context(), timeout=10) as s:
        s.login("alice@example.test", "alice-pw")
        s.sendmail("alice@example.test", ["bob@example.test"], message("alice@example.test", "bob@example.test", "received465"))
    (raw,) = delivered(srv, "bob@example.test", "received465")
    received = message_from_bytes(raw)["Received"]
    assert re.search(r"\(using TLSv1\.3 TLS_\S+\)", received), received
    assert "(Authenticated sender: alice@example.test)" in received


def test_received_on_mx_without_tls_says_no_tls_and_no_user(srv: Server) -> None:
    with smtplib.SMTP(HOST, srv.ports["smtp"], timeout=10) as s:
        s.sendmail("x@remote.test", ["bob@example.test"], message("x@remote.test", "bob@example.test", "mx-plain"))
    (raw,) = delivered(srv, "bob@example.test", "mx-plain")
    received = message_from_bytes(raw)["Received"]
    assert "using" not in received and "Authenticated" not in received
    assert "with ESMTP id" in received
