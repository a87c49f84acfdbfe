"""RFC 5321 paths and ESMTP parameters, as MAIL FROM and RCPT TO carry them.

Replaces twisted.mail.smtp.Address: that parser accepts bytes in odd forms and leaves
parameters unparsed (twisted#8128).

With ``utf8=True`` (the client said SMTPUTF8, RFC 6531 3.3) local parts may hold UTF-8
characters and domains U-labels; such a domain must also pass IDNA2008/UTS 46 (the
``idna`` package), so a string that merely looks like a domain is still refused.
"""

from __future__ import annotations

import re

from mailsuite.idn import canonical_domain, valid_domain

_LITERAL = r"\[(?:IPv6:[0-9A-Fa-f:.]+|[0-9]{1,3}(?:\.[0-9]{1,3}){3})\]"
_ASCII_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ASCII_DOMAIN = rf"{_ASCII_LABEL}(?:\.{_ASCII_LABEL})*"
_ADL = rf"(?:@{_ASCII_DOMAIN}(?:,@{_ASCII_DOMAIN})*:)"  # source routes: accepted and ignored (RFC 5321 C)


def _path_re(extra: str) -> re.Pattern[str]:
    """RFC 5321 4.1.2's Path; ``extra`` adds characters to atext, qtextSMTP and the
    letters of a label (RFC 6531 3.3: UTF8-non-ascii and U-labels)."""
    atext = rf"[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{extra}]"
    dot_string = rf"{atext}+(?:\.{atext}+)*"
    quoted = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{extra}]|\\[\x20-\x7e])*"'
    label = rf"[A-Za-z0-9{extra}](?:[A-Za-z0-9{extra}-]{{0,61}}[A-Za-z0-9{extra}])?"
    domain = rf"{label}(?:\.{label})*"
    mailbox = rf"(?:{dot_string}|{quoted})@(?:{domain}|{_LITERAL})"
    return re.compile(rf"<{_ADL}?({mailbox})>")


_PATH_RE = _path_re("")
_UPATH_RE = _path_re("\u0080-\U0010ffff")
_PARAM_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?")

MAX_LOCAL = 64
MAX_PATH = 256


class BadPath(ValueError):
    pass


def parse_path(arg: str, allow_null: bool, utf8: bool = False) -> tuple[str, dict[str, str | None]]:
    """Parse ``<path> [params]`` (the text after ``MAIL FROM:`` / ``RCPT TO:``).

    Returns the mailbox (``""`` for the null path) and the parameters, upper-cased keys.
    A missing pair of angle brackets is tolerated for a bare mailbox, as Postfix does,
    because some scripts send ``MAIL FROM:user@host``.
    """
    path_re = _UPATH_RE if utf8 else _PATH_RE
    arg = arg.strip()
    if arg.startswith("<>"):
        if not allow_null:
            raise BadPath("null path not allowed here")
        mailbox, rest = "", arg[2:]
    elif arg.startswith("<"):
        m = path_re.match(arg)
        if not m:
            raise BadPath("malformed address")
        mailbox, rest = m.group(1), arg[m.end() :]
    else:
        word, sep, rest = arg.partition(" ")
        rest = sep + rest  # keep the space the parameter check below expects
        m = path_re.fullmatch(f"<{word}>")
        if not m:
            raise BadPath("malformed address")
        mailbox = m.group(1)
    if rest and not rest.startswith(" "):
        raise BadPath("malformed address")
    local, _, domain = mailbox.rpartition("@")
    # The limits are in octets (RFC 5321 4.5.3.1), which UTF-8 makes longer than characters.
    if len(local.encode("utf-8")) > MAX_LOCAL or len(mailbox.encode("utf-8")) > MAX_PATH:
        raise BadPath("address too long")
    if not domain.isascii() and not valid_domain(domain):
        raise BadPath("invalid internationalised domain name")
    params: dict[str, str | None] = {}
    for word in rest.split():
        pm = _PARAM_RE.fullmatch(word)
        if not pm:
            raise BadPath(f"malformed parameter {word[:40]!r}")
        params[pm.group(1).upper()] = pm.group(2)
    return mailbox, params


def domain_of(mailbox: str) -> str:
    """The domain in canonical form (lower-case U-labels): ``xn--bcher-kva.example``
    and ``BÜCHER.example`` are the same domain."""
    return canonical_domain(mailbox.rpartition("@")[2])
