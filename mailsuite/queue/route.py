"""Routing: which next hop a remote recipient's domain goes to, and with what TLS.

Order (as Postfix): the transport map (``[relay.transport]``, exact domain, then
``.parent`` entries for subdomains), then the smarthost if one is set, then direct
delivery by MX lookup.  A :class:`Destination` is what the scheduler limits
concurrency on and what the connection cache is keyed by.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TLS_POLICIES = ("none", "may", "verify")


def parse_nexthop(value: str, default_port: int = 25) -> tuple[str, int]:
    """``host:port``, ``[v6addr]:port``, ``host`` or ``[v6addr]`` → (host, port);
    raises ValueError with a reason."""
    value = value.strip()
    if not value:
        raise ValueError("empty next hop")
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"{value!r}: missing ']'")
        host, rest = value[1:end], value[end + 1 :]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
        if rest and not rest.startswith(":"):
            raise ValueError(f"{value!r}: expected :port after ']'")
        port_s = rest[1:] if rest else ""
    else:
        host, sep, port_s = value.rpartition(":")
        if not sep:
            host, port_s = value, ""
        elif ":" in host:
            raise ValueError(f"{value!r}: write an IPv6 address as [addr]:port")
    if not host or any(c.isspace() for c in host) or "/" in host or "@" in host:
        raise ValueError(f"{value!r}: not a host name or address")
    if port_s:
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ValueError(f"{value!r}: bad port {port_s!r}")
        return host.lower(), int(port_s)
    return host.lower(), default_port


@dataclass(frozen=True)
class Destination:
    """Where a group of recipients goes.  ``kind`` is "mx" (look up ``host``'s MX
    records), or "host" (connect to ``host``:``port`` directly)."""

    key: str  # what concurrency and the connection cache are per
    kind: str
    host: str
    port: int
    tls: str  # none | may | verify
    auth: tuple[str, str] | None = None

    def __repr__(self) -> str:  # never show the password
        return f"Destination({self.key!r}, {self.kind}, {self.host}:{self.port}, tls={self.tls})"


def read_auth_file(path: Path) -> tuple[str, str]:
    """The first ``username:password`` line of ``path``; raises ValueError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror}") from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"{path}: expected a 'username:password' line")
        return user, password
    raise ValueError(f"{path}: no 'username:password' line")


class Router:
    def __init__(self, relay: Any, auth: tuple[str, str] | None = None) -> None:
        self.relay = relay
        self.auth = auth
        self._transport = {k.lower(): parse_nexthop(v) for k, v in relay.transport.items()}
        self._smarthost = parse_nexthop(relay.smarthost, 25) if relay.smarthost else None
        self._cache: dict[str, Destination] = {}

    def tls_for(self, domain: str) -> str:
        policies = self.relay.tls_policies
        return policies.get(domain, self.relay.tls_policy)

    def route(self, domain: str) -> Destination:
        domain = domain.lower()
        dest = self._cache.get(domain)
        if dest is None:
            dest = self._route(domain)
            if len(self._cache) >= 10_000:  # bounded: routes are cheap to compute again
                self._cache.clear()
            self._cache[domain] = dest
        return dest

    def _route(self, domain: str) -> Destination:
        hop = self._transport.get(domain)
        if hop is None:
            labels = domain.split(".")
            for i in range(1, len(labels)):
                hop = self._transport.get("." + ".".join(labels[i:]))
                if hop is not None:
                    break
        if hop is not None:
            host, port = hop
            tls = self.tls_for(domain)
            # The TLS policy is part of the key: a cached plaintext session to a next
            # hop must not carry mail for a domain that requires verified TLS.
            return Destination(f"transport:{host}:{port}:{tls}", "host", host, port, tls)
        if self._smarthost is not None:
            host, port = self._smarthost
            return Destination(f"smarthost:{host}:{port}", "host", host, port, self.relay.smarthost_tls, self.auth)
        return Destination(f"mx:{domain}", "mx", domain, self.relay.smtp_port, self.tls_for(domain))


def check_relay_config(relay: Any) -> list[str]:
    """Cross-field problems of a RelayConfig (called by config._check)."""
    problems = []
    if relay.smarthost:
        try:
            parse_nexthop(relay.smarthost)
        except ValueError as e:
            problems.append(f"relay.smarthost: {e}")
    for domain, hop in relay.transport.items():
        try:
            parse_nexthop(hop)
        except ValueError as e:
            problems.append(f"relay.transport.{domain}: {e}")
    if relay.smarthost_auth_file is not None and not relay.smarthost:
        problems.append("relay.smarthost_auth_file: set only together with relay.smarthost")
    if relay.backoff_min < 1:
        problems.append("relay.backoff_min: expected at least 1 second")
    if relay.backoff_max < relay.backoff_min:
        problems.append("relay.backoff_max: expected at least relay.backoff_min")
    if not 0 < relay.smtp_port < 65536:
        problems.append("relay.smtp_port: expected a port number")
    if relay.destination_concurrency < 1:
        problems.append("relay.destination_concurrency: expected at least 1")
    for key in ("connect_timeout", "command_timeout", "data_timeout", "max_lifetime"):
        if getattr(relay, key) < 1:
            problems.append(f"relay.{key}: expected at least 1 second")
    if relay.control_poll_interval <= 0:
        problems.append("relay.control_poll_interval: expected a positive number of seconds")
    return problems


def check_relay_files(relay: Any) -> list[str]:
    """Problems with the files the relay reads at start (called by config.check_files)."""
    problems = []
    if relay.smarthost_auth_file is not None:
        try:
            read_auth_file(relay.smarthost_auth_file)
        except ValueError as e:
            problems.append(f"relay.smarthost_auth_file: {e}")
    if relay.ca_file is not None:
        try:
            data = relay.ca_file.read_bytes()
        except OSError as e:
            problems.append(f"relay.ca_file: {relay.ca_file}: cannot read: {e.strerror}")
        else:
            if b"-----BEGIN CERTIFICATE-----" not in data:
                problems.append(f"relay.ca_file: {relay.ca_file}: no PEM certificate found")
    return problems
