"""Internationalised domain names and addresses (RFC 5890, RFC 6531).

One domain has two spellings: U-labels (``bücher.example``) and A-labels
(``xn--bcher-kva.example``).  Everything inside mailsuite compares and stores the
U-label form, lower case (what a user writes in the users file and what an SMTPUTF8
client sends); the A-label form is used only where the wire or DNS needs ASCII (MX
lookups, RCPT TO to a next hop, EHLO names).

Why the ``idna`` package with ``uts46=True`` and never Python's ``"idna"`` codec: the
codec implements IDNA 2003, which maps ``faß.de`` to ``fass.de`` (another domain) and
cannot decode many valid A-labels (research/wave2-libraries.md §7).
"""

from __future__ import annotations

import idna


def _ascii_lower(domain: str) -> str | None:
    if domain.isascii() and "xn--" not in domain.lower():
        return domain.lower()
    return None


def canonical_domain(domain: str) -> str:
    """The domain in lower-case U-label form; a domain idna refuses (an address
    literal, a name with ``_``) is only lower-cased, so lookups still work on it."""
    domain = domain.strip().rstrip(".")
    plain = _ascii_lower(domain)
    if plain is not None:
        return plain
    try:
        return idna.decode(idna.encode(domain, uts46=True))
    except idna.IDNAError:
        return domain.lower()
    except UnicodeError:
        return domain.lower()


def ascii_domain(domain: str) -> str:
    """The domain in A-label form, for DNS and the SMTP wire; raises ValueError when
    it has no valid A-label form (the caller bounces or refuses)."""
    domain = domain.strip().rstrip(".")
    plain = _ascii_lower(domain)
    if plain is not None:
        return plain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as e:
        raise ValueError(f"{domain!r} is not a valid internationalised domain name: {e}") from None


def valid_domain(domain: str) -> bool:
    try:
        ascii_domain(domain)
    except ValueError:
        return False
    return True


def canonical_address(address: str) -> str:
    """``local@domain`` with the domain in canonical form; the local part as given."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    if domain.startswith("["):
        return f"{local}@{domain.lower()}"
    return f"{local}@{canonical_domain(domain)}"


def ascii_address(address: str) -> str:
    """``local@domain`` with the domain in A-label form (RFC 6531 3.2: A-labels on the
    wire towards a server; the local part cannot be converted and stays as it is)."""
    local, at, domain = address.rpartition("@")
    if not at or domain.startswith("["):
        return address
    return f"{local}@{ascii_domain(domain)}"


def needs_smtputf8(address: str) -> bool:
    """True when the address cannot travel without SMTPUTF8 even with an A-label
    domain: its local part is not ASCII."""
    return not address.rpartition("@")[0].isascii()
