"""SASL PLAIN (RFC 4616) and LOGIN, decoded once for every protocol.

The protocols differ only in how a challenge and a response travel (SMTP ``334``,
IMAP and POP3 ``+``), so an exchange here deals in the base64 text of a response
and the raw bytes of a challenge.  The rules kept here:

* ``*`` cancels (RFC 4954 4, RFC 3501 6.2.2, RFC 5034 4);
* ``=`` is an empty initial response (RFC 4954 4, SASL-IR);
* strict base64 (anything else is malformed, never guessed at);
* PLAIN has exactly three NUL-separated fields and a non-empty authentication
  identity.  The authorization identity (authzid) is handed on in
  :class:`Credentials`: :class:`mailsuite.frontend.login.LoginGate` refuses one that
  names anybody but the authenticated user, since nobody here may act for another.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from mailsuite.frontend.answers import Outcome

MECHANISMS = ("PLAIN", "LOGIN")


class SASLError(Exception):
    """The exchange ended without credentials: ``outcome`` is CANCELLED, UNDECODABLE,
    MALFORMED or UNSUPPORTED (an unknown mechanism)."""

    def __init__(self, outcome: Outcome, text: str) -> None:
        super().__init__(text)
        self.outcome = outcome


@dataclass(frozen=True)
class Credentials:
    """What an exchange yields.  ``authzid`` is b"" when the client asked for none."""

    authcid: bytes
    password: bytes
    authzid: bytes = b""


def decode_response(line: bytes, initial: bool = False) -> bytes:
    """One client response: base64 to bytes; raises SASLError on ``*`` or bad base64."""
    line = line.strip()
    if line == b"*":
        raise SASLError(Outcome.CANCELLED, "Authentication cancelled")
    if initial and line == b"=":
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise SASLError(Outcome.UNDECODABLE, "Invalid base64 data") from None


def parse_plain(message: bytes) -> Credentials:
    """authzid NUL authcid NUL passwd (RFC 4616 2)."""
    parts = message.split(b"\x00")
    if len(parts) != 3 or not parts[1]:
        raise SASLError(Outcome.MALFORMED, "Malformed PLAIN response")
    authzid, authcid, password = parts
    return Credentials(authcid, password, authzid)


class SASLExchange:
    """One PLAIN or LOGIN exchange.

    ``start(initial)`` takes the initial response as sent (base64 text, or None when
    the client sent none) and ``respond(line)`` each later response; both return the
    next challenge (raw bytes: the protocol base64-encodes and frames it) or the
    finished :class:`Credentials`, and raise :class:`SASLError`."""

    def __init__(self, mechanism: str | bytes) -> None:
        if isinstance(mechanism, bytes):
            mechanism = mechanism.decode("ascii", "replace")
        self.mechanism = mechanism.upper()
        if self.mechanism not in MECHANISMS:
            raise SASLError(Outcome.UNSUPPORTED, "Unsupported authentication mechanism")
        self._user: bytes | None = None

    def start(self, initial: bytes | None) -> bytes | Credentials:
        if self.mechanism == "PLAIN":
            if initial is None:
                return b""
            return parse_plain(decode_response(initial, initial=True) if initial.strip() else b"")
        if initial is None or initial.strip() in (b"", b"="):
            return b"Username:"
        self._user = decode_response(initial, initial=True)
        return b"Password:"

    def respond(self, line: bytes) -> bytes | Credentials:
        data = decode_response(line)
        if self.mechanism == "PLAIN":
            return parse_plain(data)
        if self._user is None:
            self._user = data
            return b"Password:"
        return Credentials(self._user, data)
