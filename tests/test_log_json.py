"""``[log] format = "json"``: every line of the real server's log is one JSON object
with the text line's fields (time, system, message) plus the event's own."""

from __future__ import annotations

import json
import smtplib

from tests.support.waiting import wait_for


def records(server) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in server.log().splitlines() if line.strip()]


def test_log_lines_are_json_with_the_same_fields(server_factory) -> None:
    srv = server_factory(log={"format": "json"}).start()
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"]) as s:
        s.ehlo()
        s.starttls()
        try:
            s.login("alice@example.test", "wrong")
        except smtplib.SMTPAuthenticationError:
            pass
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"]) as s:
        s.sendmail("x@far.test", ["bob@example.test"], b"Subject: json\r\n\r\nhi\r\n")
    wait_for(lambda: any("result=delivered" in r["message"] for r in records(srv)), what="the delivery line")
    recs = records(srv)  # every line parses
    assert all({"time", "level", "namespace", "system", "message"} <= set(r) for r in recs)
    delivered = next(r for r in recs if "result=delivered" in r["message"])
    assert delivered["namespace"].startswith("mailsuite.smtp")
    assert delivered["level"] == "info"
    assert delivered["system"] == f"{delivered['namespace']}#info"
    assert delivered["qid"] and delivered["ip"] == "127.0.0.1"  # the event's own fields
    assert "client=[127.0.0.1]" in delivered["message"]  # the text line's message, unchanged
    failure = next(r for r in recs if "mailsuite auth failure" in r["message"])
    assert failure["message"] == "mailsuite auth failure: proto=smtp rip=127.0.0.1 user=alice@example.test"
    assert "wrong" not in srv.log()  # the password is never a field
    assert recs[0]["time"][:4].isdigit()
