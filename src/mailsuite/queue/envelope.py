"""The envelope of an accepted message: who sent it, to whom, and how it arrived."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field


def new_queue_id() -> str:
    """12 upper-case hex digits, time-ordered like Postfix's short queue ids."""
    return f"{int(time.time() * 1000) & 0xFFFFFFFFF:09X}{os.urandom(2).hex().upper()[:3]}"


@dataclass(frozen=True)
class Envelope:
    queue_id: str
    sender: str  # "" is the null sender <>
    recipients: tuple[str, ...]  # addresses as given in RCPT TO
    mailboxes: dict[str, str] = field(default_factory=dict)  # local account -> the RCPT that led there
    forwards: tuple[str, ...] = ()  # remote addresses (RCPTs and alias targets)
    client_ip: str = ""
    helo: str = ""
    auth_user: str = ""
    arrival: float = field(default_factory=time.time)
