"""Smoke test: the real server accepts a message over SMTP into the Maildir."""

import smtplib

from tests.support.server import Server


def test_message_to_local_user_lands_in_maildir(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.sendmail("sender@remote.test", ["alice@example.test"], b"Subject: hi\r\n\r\nhello\r\n")
    (msg,) = server.messages("alice@example.test")
    assert msg.startswith(b"Return-Path: <sender@remote.test>\nDelivered-To: alice@example.test\nReceived: ")
    assert msg.endswith(b"Subject: hi\n\nhello\n")
