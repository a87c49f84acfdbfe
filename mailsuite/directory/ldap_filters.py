"""LDAP filter templates and the checks of the ``[directory.ldap]`` config table.

A template is an RFC 4515 filter with named placeholders (``{login}``, ``{address}``...).
:func:`fill` puts values in with every special character escaped
(``ldap3.utils.conv.escape_filter_chars``), so a login like ``*)(uid=*`` is searched for
literally and matches nothing.  Only the placeholders named here exist; everything else
in a template, braces included, is taken as written.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from ldap3.utils.conv import escape_filter_chars

# Which placeholders each template may use, and which of them it must use at least one of.
PLACEHOLDERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "user_filter": (frozenset({"login", "user", "domain"}), frozenset({"login", "user"})),
    "address_filter": (frozenset({"address", "local", "domain"}), frozenset({"address", "local"})),
    "group_filter": (frozenset({"dn", "login", "user", "domain"}), frozenset({"dn", "login", "user"})),
    "catchall_filter": (frozenset({"domain"}), frozenset({"domain"})),
}

_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")
_ATTRIBUTE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)$")


def split_login(login: str) -> dict[str, str]:
    """The values a login offers to a template: the whole login, the part before the
    last ``@`` (``user``) and the part after it (``domain``, empty without ``@``)."""
    user, at, domain = login.rpartition("@")
    if not at:
        user, domain = login, ""
    return {"login": login, "user": user, "domain": domain}


def fill(template: str, **values: str) -> str:
    """The filter with each ``{name}`` replaced by the escaped value of ``name``."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            return m.group(0)  # check_ldap_config refuses unknown names; keep it literal
        return escape_filter_chars(values[name])

    return _PLACEHOLDER.sub(sub, template)


def template_problems(key: str, template: str) -> list[str]:
    allowed, needed = PLACEHOLDERS[key]
    where = f"directory.ldap.{key}"
    out: list[str] = []
    used = set(_PLACEHOLDER.findall(template))
    unknown = used - allowed
    if unknown:
        out.append(f"{where}: unknown placeholder(s) {', '.join('{' + u + '}' for u in sorted(unknown))}; "
                   f"use {', '.join('{' + a + '}' for a in sorted(allowed))}")
    if not used & needed:
        out.append(f"{where}: must contain {' or '.join('{' + n + '}' for n in sorted(needed))}")
    depth = 0
    for ch in template:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            break
    if not template.startswith("(") or depth != 0:
        out.append(f"{where}: not an LDAP filter in parentheses: {template!r}")
    elif not unknown:
        from ldap3.core.exceptions import LDAPException
        from ldap3.operation.search import parse_filter

        sample = fill(template, login="a@b.c", user="a", domain="b.c", address="a@b.c", local="a", dn="cn=a,dc=b")
        try:
            parse_filter(sample, None, True, True, None, False)
        except (LDAPException, ValueError, IndexError, TypeError) as e:
            out.append(f"{where}: not a valid LDAP filter: {e}")
    return out


def url_problems(url: str, start_tls: bool) -> list[str]:
    where = "directory.ldap.servers"
    parts = urlsplit(url)
    if parts.scheme not in ("ldap", "ldaps"):
        return [f"{where}: {url!r}: expected ldap://host[:port] or ldaps://host[:port]"]
    try:
        port = parts.port
    except ValueError:
        return [f"{where}: {url!r}: bad port"]
    if not parts.hostname:
        return [f"{where}: {url!r}: no host name"]
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return [f"{where}: {url!r}: only scheme, host and port are used; put the base in directory.ldap.base_dn"]
    if port == 0:
        return [f"{where}: {url!r}: bad port"]
    if start_tls and parts.scheme == "ldaps":
        return [f"{where}: {url!r}: ldaps:// is already encrypted; start_tls applies to ldap:// URLs only"]
    return []


def check_ldap_config(c: Any, active: bool) -> list[str]:
    """Problems with an LDAPConfig; ``active`` when directory.backend is "ldap" (only then
    are servers and base_dn required)."""
    p: list[str] = []
    w = "directory.ldap"
    if active:
        if not c.servers:
            p.append(f"{w}.servers: at least one ldap:// or ldaps:// URL is required when directory.backend = \"ldap\"")
        if not c.base_dn:
            p.append(f"{w}.base_dn: required when directory.backend = \"ldap\"")
    for url in c.servers:
        p.extend(url_problems(url, c.start_tls))
    if c.bind_dn and c.bind_password_file is None:
        p.append(f"{w}.bind_password_file: required with bind_dn (the file holds the service account's password)")
    if c.bind_password_file is not None and not c.bind_dn:
        p.append(f"{w}.bind_dn: required with bind_password_file (leave both empty to search anonymously)")
    if c.ca_file is not None and not c.verify_certificates:
        p.append(f"{w}.ca_file: has no effect with verify_certificates = false")
    for key in ("user_filter", "address_filter", "group_filter"):
        p.extend(template_problems(key, getattr(c, key)))
    if c.catchall_filter:
        p.extend(template_problems("catchall_filter", c.catchall_filter))
    if not c.address_attributes:
        p.append(f"{w}.address_attributes: at least one attribute (the first names the mailbox)")
    for key in ("address_attributes", "member_attributes"):
        for a in getattr(c, key):
            if not _ATTRIBUTE.match(a):
                p.append(f"{w}.{key}: {a!r} is not an attribute name")
    if c.quota_attribute and not _ATTRIBUTE.match(c.quota_attribute):
        p.append(f"{w}.quota_attribute: {c.quota_attribute!r} is not an attribute name")
    if c.quota_messages_attribute and not _ATTRIBUTE.match(c.quota_messages_attribute):
        p.append(f"{w}.quota_messages_attribute: {c.quota_messages_attribute!r} is not an attribute name")
    if c.expand_groups and not c.member_attributes:
        p.append(f"{w}.member_attributes: at least one attribute when expand_groups = true")
    for key in ("connect_timeout", "timeout", "request_timeout"):
        if getattr(c, key) <= 0:
            p.append(f"{w}.{key}: expected more than 0 seconds")
    if c.pool_size < 1:
        p.append(f"{w}.pool_size: expected at least 1")
    if c.max_pending < 1:
        p.append(f"{w}.max_pending: expected at least 1")
    return p
