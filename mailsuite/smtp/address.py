"""RFC 5321 paths and ESMTP parameters, as MAIL FROM and RCPT TO carry them.

Replaces twisted.mail.smtp.Address: that parser accepts bytes in odd forms and leaves
parameters unparsed (twisted#8128).
"""

from __future__ import annotations

import re

_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_LITERAL = r"\[(?:IPv6:[0-9A-Fa-f:.]+|[0-9]{1,3}(?:\.[0-9]{1,3}){3})\]"
_MAILBOX = rf"(?:{_DOT_STRING}|{_QUOTED})@(?:{_DOMAIN}|{_LITERAL})"
_ADL = rf"(?:@{_DOMAIN}(?:,@{_DOMAIN})*:)"  # source routes: accepted and ignored (RFC 5321 C)
_PATH_RE = re.compile(rf"<{_ADL}?({_MAILBOX})>")
_PARAM_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?")

MAX_LOCAL = 64
MAX_PATH = 256


class BadPath(ValueError):
    pass


def parse_path(arg: str, allow_null: bool) -> tuple[str, dict[str, str | None]]:
    """Parse ``<path> [params]`` (the text after ``MAIL FROM:`` / ``RCPT TO:``).

    Returns the mailbox (``""`` for the null path) and the parameters, upper-cased keys.
    A missing pair of angle brackets is tolerated for a bare mailbox, as Postfix does,
    because some scripts send ``MAIL FROM:user@host``.
    """
    arg = arg.strip()
    if arg.startswith("<>"):
        if not allow_null:
            raise BadPath("null path not allowed here")
        mailbox, rest = "", arg[2:]
    elif arg.startswith("<"):
        m = _PATH_RE.match(arg)
        if not m:
            raise BadPath("malformed address")
        mailbox, rest = m.group(1), arg[m.end() :]
    else:
        word, sep, rest = arg.partition(" ")
        rest = sep + rest  # keep the space the parameter check below expects
        m = _PATH_RE.fullmatch(f"<{word}>")
        if not m:
            raise BadPath("malformed address")
        mailbox = m.group(1)
    if rest and not rest.startswith(" "):
        raise BadPath("malformed address")
    local = mailbox.rpartition("@")[0]
    if len(local) > MAX_LOCAL or len(mailbox) > MAX_PATH:
        raise BadPath("address too long")
    params: dict[str, str | None] = {}
    for word in rest.split():
        pm = _PARAM_RE.fullmatch(word)
        if not pm:
            raise BadPath(f"malformed parameter {word[:40]!r}")
        params[pm.group(1).upper()] = pm.group(2)
    return mailbox, params


def domain_of(mailbox: str) -> str:
    return mailbox.rpartition("@")[2].lower()
