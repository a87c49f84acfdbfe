"""The vacation auto-reply (RFC 5230, RFC 6131 :seconds, RFC 3834): whether to answer,
and the answer.

:func:`reply_for` applies the rules that keep an auto-responder from doing harm:
no reply to the null sender, to ourselves, to list and system addresses, to mail
that is auto-submitted, bulk or from a list, or to mail that was not sent to one of
the user's own addresses (To/Cc/Bcc/Resent-*); and at most one reply per sender and
handle within the period, remembered on disk (:mod:`mailsuite.sieve.memory`).  The
reply goes out with the null envelope sender (RFC 3834 3.3) and
``Auto-Submitted: auto-replied``.
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass

from mailsuite.sieve.interpreter import Vacation
from mailsuite.sieve.memory import Memory
from mailsuite.sieve.message import Message, addresses

MIN_SECONDS = 1  # RFC 6131: :seconds 0 means "every time"; :days minimum is 1 day
_SYSTEM_LOCALPARTS = re.compile(
    r"^(mailer-daemon|postmaster|listserv|majordomo|mailman|noreply|no-reply|do-not-reply|donotreply|"
    r"bounce[s]?|owner-.*|.*-request|.*-owner|.*-bounces?)$", re.IGNORECASE)
_LIST_HEADERS = ("list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner",
                 "list-archive")


@dataclass(frozen=True)
class Reply:
    recipient: str  # envelope and To:
    data: bytes  # the message, LF line ends


def why_not(msg: Message, sender: str, own: list[str], vac: Vacation) -> str | None:
    """Why no reply may be sent (a reason for the log), or None if one may."""
    if not sender:
        return "null sender"
    own_lower = {a.lower() for a in own + vac.addresses}
    if sender.lower() in own_lower:
        return "sender is the recipient"
    if _SYSTEM_LOCALPARTS.match(sender.rpartition("@")[0]):
        return "sender is a system or list address"
    auto = " ".join(msg.values("auto-submitted")).strip().lower()
    if auto and not auto.startswith("no"):
        return "message is auto-submitted"
    prec = " ".join(msg.values("precedence")).strip().lower()
    if prec in ("bulk", "list", "junk"):
        return f"precedence {prec}"
    if any(msg.has(h) for h in _LIST_HEADERS):
        return "message is from a mailing list"
    if msg.has("x-auto-response-suppress") and re.search(
            r"\b(all|oof|autoreply)\b", " ".join(msg.values("x-auto-response-suppress")), re.IGNORECASE):
        return "sender asked for no auto replies"
    sent_to: list[str] = []
    for h in ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"):
        sent_to.extend(a.lower() for a in addresses(msg.raw_values(h)))
    if not own_lower.intersection(sent_to):
        return "not addressed to the user by name"
    return None


def reply_for(msg: Message, sender: str, recipient: str, own: list[str], vac: Vacation, memory: Memory,
              hostname: str, now: float | None = None) -> tuple[Reply | None, str]:
    """(the reply to send, or None; what was decided, for the log).  Records the
    reply in ``memory`` when it returns one."""
    now = time.time() if now is None else now
    why = why_not(msg, sender, own, vac)
    if why is not None:
        return None, f"vacation: no reply ({why})"
    if vac.seconds > 0 and memory.seen(vac.handle, sender, now):
        return None, f"vacation: no reply (already answered <{sender}> within the period)"
    reply = Reply(sender, compose(msg, sender, recipient, vac, hostname, now))
    if vac.seconds > 0:
        memory.record(vac.handle, sender, max(vac.seconds, MIN_SECONDS), now)
    return reply, f"vacation: reply sent to <{sender}>"


def compose(msg: Message, sender: str, recipient: str, vac: Vacation, hostname: str, now: float) -> bytes:
    subject = vac.subject
    if subject is None:
        orig = (msg.values("subject") or [""])[0]
        subject = orig if orig.lower().startswith("auto:") else f"Auto: {orig}".rstrip()
    from_ = vac.from_ or recipient
    msgid = (msg.values("message-id") or [""])[0].strip()
    refs = " ".join(v.strip() for v in msg.values("references"))
    lines = [
        f"From: {_header(from_)}",
        f"To: <{sender}>",
        f"Subject: {_header(subject)}",
        f"Date: {email.utils.formatdate(now, localtime=True)}",
        f"Message-ID: {email.utils.make_msgid(domain=hostname)}",
        "Auto-Submitted: auto-replied (vacation)",
        "Precedence: bulk",
    ]
    if msgid:
        lines.append(f"In-Reply-To: {msgid}")
        lines.append(f"References: {(refs + ' ' + msgid).strip()}")
    lines.append("MIME-Version: 1.0")
    reason = vac.reason.replace("\r\n", "\n")
    if vac.mime:
        # RFC 5230 4.4: the reason is a MIME entity, headers included.
        return ("\n".join(lines) + "\n" + reason).encode("utf-8")
    lines += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    if not reason.endswith("\n"):
        reason += "\n"
    return ("\n".join(lines) + "\n\n" + reason).encode("utf-8")


def _header(value: str) -> str:
    if value.isascii():
        return value.replace("\n", " ").replace("\r", " ")
    from email.header import Header

    return Header(value, "utf-8").encode()
