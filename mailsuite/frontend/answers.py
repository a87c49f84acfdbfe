"""One mapping of failures to answers: which are temporary (the client keeps the
message or the password and tries again later) and which are permanent, and what each
protocol says for each.

A front end asks :func:`classify` what kind of failure a Deferred ended with and
answers from its table below.  Temporary means: the directory cannot answer, the disk
or a file failed, or a fault of ours; a client must never be told its password is
wrong or its message refused because of any of these (DESIGN.md rule 4).

Tables:
* SMTP: ``(code, enhanced status, text)`` (RFC 4954 6, RFC 3463);
* IMAP: ``(BAD or NO, response code or None, text)`` (RFC 5530 codes);
* POP3: the ``-ERR`` text with its RFC 2449/3206 code.
"""

from __future__ import annotations

import errno
from enum import Enum

from twisted.cred import error as cred_error
from twisted.python.failure import Failure


class Outcome(Enum):
    CANCELLED = "cancelled"  # the client sent "*"
    UNDECODABLE = "undecodable"  # a response that is not strict base64
    MALFORMED = "malformed"  # a PLAIN message without three fields or without a user
    UNSUPPORTED = "unsupported"  # a SASL mechanism we do not offer
    INVALID = "invalid"  # wrong login or password (permanent, counted by the throttle)
    AUTHZ = "authz"  # an authorization identity other than the authenticated user
    REFUSED = "refused"  # the throttle's cool-down: temporary, not checked
    TEMPORARY = "temporary"  # directory down, disk failure, a fault of ours


# Disk errors that pass by themselves (space freed, quota raised): temporary.
TEMPORARY_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EMFILE, errno.ENFILE})


def classify(failure: Failure) -> Outcome:
    """INVALID for a refused credential, REFUSED for a cool-down, TEMPORARY otherwise
    (the directory being down, OSError, and any unexpected exception)."""
    from mailsuite.auth.throttle import AuthRefused
    from mailsuite.frontend.login import LoginFailed
    from mailsuite.frontend.sasl import SASLError

    if failure.check(LoginFailed, SASLError):
        return failure.value.outcome
    if failure.check(AuthRefused):
        return Outcome.REFUSED
    if failure.check(cred_error.UnauthorizedLogin, cred_error.UnhandledCredentials):
        return Outcome.INVALID
    return Outcome.TEMPORARY


SMTP_ANSWERS: dict[Outcome, tuple[int, str, str]] = {
    Outcome.CANCELLED: (501, "5.7.0", "Authentication cancelled"),
    Outcome.UNDECODABLE: (501, "5.5.2", "Cannot decode response"),
    Outcome.MALFORMED: (501, "5.5.2", "Malformed PLAIN response"),
    Outcome.UNSUPPORTED: (504, "5.5.4", "Unrecognized authentication type"),
    Outcome.INVALID: (535, "5.7.8", "Authentication credentials invalid"),
    Outcome.AUTHZ: (535, "5.7.8", "Authentication credentials invalid"),
    Outcome.REFUSED: (454, "4.7.0", "Too many authentication failures, try again later"),
    Outcome.TEMPORARY: (454, "4.7.0", "Temporary authentication failure"),
}

IMAP_ANSWERS: dict[Outcome, tuple[str, str | None, str]] = {
    Outcome.CANCELLED: ("BAD", None, "AUTHENTICATE cancelled"),
    Outcome.UNDECODABLE: ("BAD", None, "Invalid base64 in AUTHENTICATE"),
    Outcome.MALFORMED: ("BAD", None, "Malformed PLAIN response"),
    Outcome.UNSUPPORTED: ("NO", "CANNOT", "Unsupported authentication mechanism"),
    Outcome.INVALID: ("NO", "AUTHENTICATIONFAILED", "Authentication failed"),
    Outcome.AUTHZ: ("NO", "AUTHORIZATIONFAILED", "Not allowed to act as another user"),
    Outcome.REFUSED: ("NO", "UNAVAILABLE", "Too many failed logins; try again later"),
    Outcome.TEMPORARY: ("NO", "UNAVAILABLE", "Temporary failure, try again later"),
}

POP3_ANSWERS: dict[Outcome, bytes] = {
    Outcome.CANCELLED: b"-ERR Authentication cancelled.",
    Outcome.UNDECODABLE: b"-ERR Invalid base64 data.",
    Outcome.MALFORMED: b"-ERR [AUTH] Invalid PLAIN response.",
    Outcome.UNSUPPORTED: b"-ERR Unsupported authentication mechanism.",
    Outcome.INVALID: b"-ERR [AUTH] Authentication failed.",
    Outcome.AUTHZ: b"-ERR [AUTH] Logging in as another user is not allowed.",
    Outcome.REFUSED: b"-ERR [AUTH] Too many authentication failures; try again later.",
    Outcome.TEMPORARY: b"-ERR [SYS/TEMP] Authentication is temporarily unavailable; try again later.",
}

# ManageSieve (RFC 5804): (response code or "", text) of the NO / BYE answer.
MANAGESIEVE_ANSWERS: dict[Outcome, tuple[str, str]] = {
    Outcome.CANCELLED: ("", "Authentication cancelled."),
    Outcome.UNDECODABLE: ("", "Invalid base64 data."),
    Outcome.MALFORMED: ("", "Invalid PLAIN response."),
    Outcome.UNSUPPORTED: ("", "Unsupported authentication mechanism."),
    Outcome.INVALID: ("", "Authentication failed."),
    Outcome.AUTHZ: ("", "Logging in as another user is not allowed."),
    Outcome.REFUSED: ("TRYLATER", "Too many authentication failures; try again later."),
    Outcome.TEMPORARY: ("TRYLATER", "Authentication is temporarily unavailable; try again later."),
}
