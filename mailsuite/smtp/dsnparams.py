"""The DSN extension's ESMTP parameters (RFC 3461): NOTIFY and ORCPT on RCPT, RET and
ENVID on MAIL, and the xtext encoding they travel in.

Pure functions: the SMTP server parses with them (every bad value is a ValueError,
which the server answers with 501), the relay encodes with them when it passes the
parameters on to a next hop that offers DSN.
"""

from __future__ import annotations

import re

NOTIFY_VALUES = ("SUCCESS", "FAILURE", "DELAY")
MAX_ENVID = 100  # RFC 3461 4.4: at most 100 characters
MAX_ORCPT = 500
_ADDR_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def xtext_decode(value: str) -> str:
    """RFC 3461 4: ``+XX`` is the octet XX (upper-case hex); other characters are
    printable ASCII except ``+`` and ``=``.  The result is read as UTF-8 (an
    internationalised ORCPT, RFC 6533 3)."""
    out = bytearray()
    i = 0
    while i < len(value):
        c = value[i]
        if c == "+":
            h = value[i + 1 : i + 3]
            if len(h) != 2 or any(x not in "0123456789ABCDEF" for x in h):
                raise ValueError(f"bad xtext escape {value[i:i + 3]!r}")
            out.append(int(h, 16))
            i += 3
            continue
        if not ("!" <= c <= "~") or c == "=":
            raise ValueError(f"bad character {c!r} in xtext")
        out.append(ord(c))
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("xtext is not UTF-8") from None


def xtext_encode(value: str) -> str:
    """The xtext form of ``value``: every octet outside ``!``..``~`` and ``+``/``=``
    as ``+XX``; non-ASCII characters in UTF-8 (RFC 6533's utf-8-addr-xtext writes
    them as ``\\x{HEX}``, which is itself printable ASCII)."""
    text = "".join(c if c.isascii() else f"\\x{{{ord(c):X}}}" for c in value)
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}" for c in text)


def parse_notify(value: str | None) -> str:
    """``NEVER``, or a comma list of SUCCESS/FAILURE/DELAY (canonical order)."""
    if not value:
        raise ValueError("NOTIFY needs a value")
    words = [w.upper() for w in value.split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    if any(w not in NOTIFY_VALUES for w in words) or len(set(words)) != len(words):
        raise ValueError("NOTIFY is NEVER or a list of SUCCESS, FAILURE, DELAY")
    return ",".join(w for w in NOTIFY_VALUES if w in words)


def parse_orcpt(value: str | None) -> str:
    """``addr-type;xtext`` → ``addr-type;address`` (decoded; the type lower case)."""
    if not value or ";" not in value:
        raise ValueError("ORCPT is addr-type;address")
    addr_type, _, raw = value.partition(";")
    if not _ADDR_TYPE.match(addr_type) or not raw or len(value) > MAX_ORCPT:
        raise ValueError("ORCPT is addr-type;address")
    address = xtext_decode(raw)
    if addr_type.lower() == "utf-8":
        address = _UTF8_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), address)
    return f"{addr_type.lower()};{address}"


def parse_ret(value: str | None) -> str:
    v = (value or "").upper()
    if v not in ("FULL", "HDRS"):
        raise ValueError("RET is FULL or HDRS")
    return v


def parse_envid(value: str | None) -> str:
    if not value:
        raise ValueError("ENVID needs a value")
    envid = xtext_decode(value)
    if len(envid) > MAX_ENVID:
        raise ValueError(f"ENVID longer than {MAX_ENVID} characters")
    return envid


def wants(notify: str, what: str) -> bool:
    """Does a recipient with this NOTIFY get a ``what`` (SUCCESS, FAILURE, DELAY) DSN?
    Without NOTIFY: failures and delays, as RFC 3461 4.1 leaves to the MTA (Postfix)."""
    if not notify:
        return what != "SUCCESS"
    return what in notify.split(",")
