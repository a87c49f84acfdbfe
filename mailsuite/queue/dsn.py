"""Delivery status notifications (RFC 3464): bounces and delay warnings.

A DSN is a multipart/report with three parts: a human-readable explanation, the
message/delivery-status fields (one block per recipient), and the original message's
headers (text/rfc822-headers).  It is sent from the null sender <> so that a DSN about
a DSN is never sent (RFC 5321 §4.5.5); the scheduler enforces that.

For a message that came with SMTPUTF8 the report is the internationalised one of
RFC 6533: ``message/global-delivery-status`` fields (UTF-8, addresses with a non-ASCII
local part typed ``utf-8``) and ``message/global-headers``, because its headers and
addresses may not be ASCII.
"""

from __future__ import annotations

import os
import re
import time
from email.utils import formatdate, make_msgid
from typing import Iterable

from mailsuite.queue.spool import Record, Recipient

_SAID = re.compile(r"^host \S+ said: ")


def _date(t: float) -> str:
    return formatdate(t, localtime=False, usegmt=True)


def _recipient_address(r: Recipient) -> str:
    return r.orcpt if r.kind == "local" and r.orcpt else r.address


def build(
    record: Record,
    recipients: Iterable[Recipient],
    headers: bytes,
    hostname: str,
    action: str = "failed",
    retry_until: float | None = None,
    now: float | None = None,
    full: bool = False,
) -> bytes:
    """The DSN message (LF line ends) for ``recipients`` of ``record``.
    ``action`` is "failed" (a bounce) or "delayed" (a warning)."""
    now = time.time() if now is None else now
    rcpts = list(recipients)
    boundary = f"{record.id}.{int(now)}.{os.urandom(4).hex()}/{hostname}"
    failed = action == "failed"
    success = action in ("delivered", "relayed")
    utf8 = record.smtputf8
    report_type = "global-delivery-status" if utf8 else "delivery-status"
    subject = ("Undelivered Mail Returned to Sender" if failed else
               "Successful Mail Delivery Report" if success else "Delayed Mail (still being retried)")
    lines = [
        f"From: MAILER-DAEMON@{hostname} (Mail Delivery System)",
        f"To: <{record.sender}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: {make_msgid(domain=hostname)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={report_type};\n\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 8bit",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"This is the mail system at host {hostname}.",
        "",
    ]
    if failed:
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. It's attached below.",
        ]
    elif action == "delivered":
        lines.append("Your message was successfully delivered to the destination(s) listed below.")
    elif action == "relayed":
        lines += [
            "Your message was successfully delivered to the destination(s) listed below,",
            "which do not report delivery: you will receive no further notice.",
        ]
    else:
        lines += [
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            "Your message could not be delivered for some time.",
        ]
        if retry_until is not None:
            lines.append(f"It will be retried until {_date(retry_until)}.")
    lines.append("")
    for r in rcpts:
        lines.append(f"<{_recipient_address(r)}>: {r.error or r.dsn}")
    lines += [
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        f"Content-Type: message/{report_type}",
        "",
        f"Reporting-MTA: dns; {hostname}",
        f"X-Mailsuite-Queue-ID: {record.id}",
        f"X-Mailsuite-Sender: {_typed(record.sender)}",
    ]
    if record.envid:
        lines.append(f"Original-Envelope-Id: {_one_line(record.envid)}")  # RFC 3464 2.2.1
    lines += [
        f"Arrival-Date: {_date(record.arrival)}",
    ]
    for r in rcpts:
        lines += [
            "",
            f"Final-Recipient: {_typed(_recipient_address(r))}",
        ]
        if r.original:
            # The ORCPT the client gave (RFC 3461 4.2), with its own address type.
            addr_type, _, addr = r.original.partition(";")
            lines.append(f"Original-Recipient: {addr_type}; {addr}")
        elif r.orcpt and r.orcpt != _recipient_address(r):
            lines.append(f"Original-Recipient: {_typed(r.orcpt)}")
        lines += [f"Action: {action}", f"Status: {r.dsn or ('5.0.0' if failed else '2.0.0' if success else '4.0.0')}"]
        relay = r.relay
        if relay and relay not in ("none", "local"):
            lines.append(f"Remote-MTA: dns; {relay.partition('[')[0]}")
        if r.error:
            # The peer's own reply, without our "host X said:" (RFC 3464 §2.3.6).
            lines.append(f"Diagnostic-Code: smtp; {_one_line(_SAID.sub('', r.error))}")
        if r.last_attempt:
            lines.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")
        if not failed and retry_until is not None:
            lines.append(f"Will-Retry-Until: {_date(retry_until)}")
    lines += [
        "",
        f"--{boundary}",
        "Content-Description: " + ("Undelivered Message" if failed and full else
                                   "Undelivered Message Headers" if failed else
                                   "Delivered Message Headers" if success else "Delayed Message Headers"),
        # RET=FULL: the message itself (RFC 3462 3); else its header block.
        "Content-Type: " + (("message/global" if utf8 else "message/rfc822") if full else
                            ("message/global-headers" if utf8 else "text/rfc822-headers")),
        "",
    ]
    out = "\n".join(lines).encode("utf-8") + b"\n" + headers
    if not out.endswith(b"\n"):
        out += b"\n"
    return out + f"\n--{boundary}--\n".encode()


def _typed(address: str) -> str:
    """An address with its RFC 3464 type: ``utf-8`` for a non-ASCII one (RFC 6533 3,
    unitext form, allowed in message/global-delivery-status), else ``rfc822``."""
    return f"rfc822; {address}" if address.isascii() else f"utf-8; {address}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:900]
