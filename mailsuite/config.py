"""The configuration: one TOML file turned into frozen, validated objects.

Nothing else in mailsuite reads the file.  Every default lives here, in the dataclass
fields; ``etc/mailsuite.toml`` documents each key and a test checks it against these
defaults.  Validation collects every problem (``smtp.max_message_size: expected an
integer``) instead of stopping at the first, so ``mailsuite check-config`` can print them
all.  Relative paths resolve against the folder of the config file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """The config file is missing or invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _default_hostname() -> str:
    return socket.getfqdn() or "localhost"


@dataclass(frozen=True)
class ServerConfig:
    hostname: str = field(default_factory=_default_hostname)
    data_dir: Path = Path("data")
    # The mail tree; default <data_dir>/mail.  Nodes sharing one tree on NFSv4/CephFS
    # point this at the shared mount and keep data_dir (spool, caches) local.
    mail_dir: Path | None = None
    domains: tuple[str, ...] = ()
    relay_networks: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    allow_plaintext_auth: bool = False
    postmaster: str = ""
    # Characters that separate an address extension: with "+", bob+lists@ reaches
    # bob@.  Several characters: each one is a delimiter ("+-").  Empty: none.
    recipient_delimiter: str = "+"
    # Threads for blocking work (fsync, password hashing, LDAP).
    thread_pool_size: int = 16
    # Worker processes serving the protocols; 0 = one per core, 1 = one process.
    processes: int = 0


@dataclass(frozen=True)
class TLSOverride:
    """``[tls.<service>]``: a certificate for one service instead of the shared one."""

    certificate: Path | None = None
    private_key: Path | None = None


# Mozilla "intermediate" (TLS 1.2 part): forward secrecy and AEAD only.  TLS 1.3
# suites are not governed by this string.
DEFAULT_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


@dataclass(frozen=True)
class TLSConfig:
    certificate: Path | None = None
    private_key: Path | None = None
    generate_self_signed: bool = False
    min_version: Literal["1.2", "1.3"] = "1.2"
    handshake_timeout: int = 30
    ciphers: str = DEFAULT_CIPHERS
    # TLS handshakes in progress from one client IP on one implicit-TLS listener.
    max_handshakes_per_ip: int = 20
    smtp: TLSOverride = field(default_factory=TLSOverride)
    submission: TLSOverride = field(default_factory=TLSOverride)
    imap: TLSOverride = field(default_factory=TLSOverride)
    pop3: TLSOverride = field(default_factory=TLSOverride)
    http: TLSOverride = field(default_factory=TLSOverride)
    managesieve: TLSOverride = field(default_factory=TLSOverride)


@dataclass(frozen=True)
class LDAPConfig:
    """``[directory.ldap]``: accounts and addresses from an LDAP directory (issue 7).
    Filter templates are filled by mailsuite.directory.ldap_filters, which escapes every
    value; the reference config explains each key."""

    servers: tuple[str, ...] = ()
    server_strategy: Literal["first", "round_robin", "random"] = "first"
    start_tls: bool = False
    ca_file: Path | None = None
    verify_certificates: bool = True
    bind_dn: str = ""
    bind_password_file: Path | None = None
    base_dn: str = ""
    user_filter: str = "(&(objectClass=inetOrgPerson)(|(uid={login})(mail={login})))"
    address_filter: str = "(|(mail={address})(mailAlternateAddress={address}))"
    catchall_filter: str = ""
    address_attributes: tuple[str, ...] = ("mail", "mailAlternateAddress")
    quota_attribute: str = ""
    quota_messages_attribute: str = ""
    required_group: str = ""
    group_filter: str = "(|(member={dn})(uniqueMember={dn}))"
    expand_groups: bool = False
    member_attributes: tuple[str, ...] = ("member", "uniqueMember")
    max_group_members: int = 1000
    connect_timeout: float = 3.0
    timeout: float = 5.0
    request_timeout: float = 10.0
    retry_interval: int = 30
    pool_size: int = 8
    max_pending: int = 256
    cache_ttl: float = 300.0
    negative_cache_ttl: float = 60.0
    auth_cache_ttl: float = 60.0


@dataclass(frozen=True)
class DirectoryConfig:
    backend: Literal["file", "ldap"] = "file"
    users_file: Path = Path("users")
    aliases_file: Path = Path("aliases")
    allow_plaintext_passwords: bool = False
    ldap: LDAPConfig = field(default_factory=LDAPConfig)


@dataclass(frozen=True)
class SMTPListenerConfig:
    """What the MX and submission roles share: listeners and per-session limits."""

    listen: tuple[str, ...] = ()
    listen_tls: tuple[str, ...] = ()
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    max_connections_per_ip: int = 20
    command_timeout: int = 300
    data_timeout: int = 600
    # Slow clients (Postfix's smtpd_per_request_deadline and smtpd_min_data_rate): a
    # request (a command line, a message's DATA, a literal) must arrive whole within
    # request_deadline seconds plus one second per min_data_rate bytes received.
    # 0 turns the deadline off (then only silence is timed).
    request_deadline: int = 300
    min_data_rate: int = 500
    max_line_length: int = 1000
    # A bare CR or LF in message data (Postfix's smtpd_forbid_bare_newline): "normalize"
    # takes it for a line end (only CR LF . CR LF ends DATA); "reject" refuses the
    # message with 550 5.5.2.
    bare_newline: Literal["normalize", "reject"] = "normalize"
    max_errors: int = 20
    # Received: lines after which a message is taken for a mail loop (554 5.4.6),
    # like Postfix's hopcount_limit.
    max_hops: int = 50


@dataclass(frozen=True)
class SMTPConfig(SMTPListenerConfig):
    """The MX role: mail from the world to our domains."""

    listen: tuple[str, ...] = ("tcp:25",)
    # AUTH on the MX port: off, users submit on 587/465.
    offer_auth: bool = False
    # SPF, DKIM, ARC and DMARC checks of mail from the world (not of authenticated
    # or relay_networks clients), with one Authentication-Results field added.
    check_authentication: bool = True
    # DMARC p=reject failing: "reject" (550 5.7.1 after DATA) or "junk" (the
    # recipients' Junk folder).  p=quarantine always goes to Junk.
    dmarc_reject_action: Literal["reject", "junk"] = "reject"
    # SPF "fail" (-all) without any DKIM pass (and no DMARC pass): "reject" (550 5.7.1),
    # "junk", or "none" (only recorded in Authentication-Results).
    spf_fail_action: Literal["reject", "junk", "none"] = "reject"
    # DNS block lists (e.g. "zen.spamhaus.org"): a listed client outside relay_networks
    # is refused with 554 5.7.1 and the list's reason, at the greeting ("connect") or
    # at each RCPT except to postmaster@ ("rcpt").  Clients on a dnswl zone are exempt.
    dnsbl: tuple[str, ...] = ()
    dnswl: tuple[str, ...] = ()
    dnsbl_check_at: Literal["connect", "rcpt"] = "connect"


@dataclass(frozen=True)
class SubmissionConfig(SMTPListenerConfig):
    """Mail from our own users, authenticated (RFC 6409 / RFC 8314)."""

    listen: tuple[str, ...] = ("tcp:587",)
    listen_tls: tuple[str, ...] = ("tcp:465",)
    # Envelope sender and From: must be the user's own addresses (553 5.7.1 otherwise).
    enforce_sender: bool = True
    # Accounts that may send as any address (shared mailboxes, ticket systems).
    any_sender_users: tuple[str, ...] = ()
    # Add Message-ID and Date when the client left them out (RFC 6409 8.2, 8.3).
    add_missing_headers: bool = True


@dataclass(frozen=True)
class LimitsConfig:
    """``[limits]``: abuse limits shared by SMTP AUTH, IMAP and POP3 (auth/throttle.py)."""

    # Failures of one login (any IP) before its answers are delayed; failures of one
    # login from one IP before that pair is refused (auth/throttle.py).
    auth_delay_after: int = 3
    auth_refuse_after: int = 10
    # The same for one client IP (higher: an office shares one NAT address).
    auth_ip_delay_after: int = 5
    auth_ip_refuse_after: int = 30
    # Seconds of delay per failure beyond the threshold, and its ceiling.
    auth_delay: float = 1.0
    auth_max_delay: float = 10.0
    # Seconds a refused login or IP stays refused.
    auth_cooldown: float = 900.0
    # Failures are forgotten this many seconds after the last one.
    auth_window: float = 900.0
    # Client networks never delayed or refused (a trusted office network).
    auth_exempt_networks: tuple[IPNetwork, ...] = ()
    # Messages one authenticated user may submit per window (0: no limit; 450 4.7.1 beyond).
    messages_per_user: int = 500
    message_rate_window: float = 3600.0


@dataclass(frozen=True)
class IMAPConfig:
    listen: tuple[str, ...] = ("tcp:143",)
    listen_tls: tuple[str, ...] = ("tcp:993",)
    max_connections_per_ip: int = 50
    # Largest APPEND message in bytes (advertised as APPENDLIMIT; refused before reading).
    append_limit: int = 50 * 1024 * 1024
    # Longest command line (without literals), like Dovecot's imap_max_line_length.
    max_line_length: int = 65536
    # Seconds of silence before the connection is closed: logged in (RFC 3501 5.4
    # says at least 30 minutes) and before login.
    idle_timeout: int = 1800
    login_timeout: int = 60
    # Slow clients (Postfix's smtpd_per_request_deadline and smtpd_min_data_rate): a
    # request (a command line, a message's DATA, a literal) must arrive whole within
    # request_deadline seconds plus one second per min_data_rate bytes received.
    # 0 turns the deadline off (then only silence is timed).
    request_deadline: int = 300
    min_data_rate: int = 500
    # Seconds between checks for changes by other processes while a client IDLEs
    # (changes made in this process are pushed at once).
    idle_check_interval: float = 10.0
    # Seconds between checks of open folders for changes by other machines sharing
    # the mail tree (NFS, CephFS), where inotify does not see them; 0 = inotify only.
    change_poll_interval: float = 0.0
    # Protocol errors (BAD) after which the connection is closed.
    max_errors: int = 20


@dataclass(frozen=True)
class POP3Config:
    listen: tuple[str, ...] = ("tcp:110",)
    listen_tls: tuple[str, ...] = ("tcp:995",)
    max_connections_per_ip: int = 20
    # Seconds of silence before the server closes a session (RFC 1939: at least 600).
    idle_timeout: int = 600
    # Slow clients (Postfix's smtpd_per_request_deadline and smtpd_min_data_rate): a
    # request (a command line, a message's DATA, a literal) must arrive whole within
    # request_deadline seconds plus one second per min_data_rate bytes received.
    # 0 turns the deadline off (then only silence is timed).
    request_deadline: int = 300
    min_data_rate: int = 500
    # Longest command line in octets, CRLF included (an AUTH PLAIN response fits).
    max_line_length: int = 2048
    # Bad commands after which the connection is closed.
    max_errors: int = 20


@dataclass(frozen=True)
class SieveConfig:
    """Sieve filtering at local delivery (RFC 5228)."""

    # Run the users' active scripts at delivery (false: every local copy goes to INBOX).
    enabled: bool = True
    # Admin scripts run before and after each user's script (e.g. file
    # DMARC-quarantined mail into Junk).  A stop in any script ends the run.
    before: Path | None = None
    after: Path | None = None
    # Where `include :global "name"` finds name.sieve.
    global_dir: Path | None = None
    # Seconds a user's active script is used before the disk is asked again (a change
    # made through ManageSieve is seen at once; one copied in by hand within this time).
    script_check_interval: float = 2.0


@dataclass(frozen=True)
class ManageSieveConfig:
    """ManageSieve (RFC 5804): clients upload and activate their scripts."""

    listen: tuple[str, ...] = ("tcp:4190",)
    listen_tls: tuple[str, ...] = ()
    # Scripts per user and bytes per script (PUTSCRIPT answers NO (QUOTA/...) beyond).
    max_scripts: int = 20
    max_script_size: int = 64 * 1024
    max_connections_per_ip: int = 20
    # Seconds of silence before the connection is closed, after and before login.
    idle_timeout: int = 1800
    login_timeout: int = 60
    # Slow clients: a command with its literals must arrive within request_deadline
    # seconds plus one second per min_data_rate bytes (0: no deadline).
    request_deadline: int = 300
    min_data_rate: int = 500
    max_line_length: int = 8192
    max_errors: int = 20


@dataclass(frozen=True)
class RelayConfig:
    """Outbound delivery: routing (smarthost, transport map, MX), TLS, retries."""

    # "host:port" (or "[ipv6]:port") every remote message goes to; empty: MX lookup.
    smarthost: str = ""
    # A file whose first line is "username:password" for AUTH at the smarthost.
    smarthost_auth_file: Path | None = None
    smarthost_tls: Literal["none", "may", "verify"] = "verify"
    # TLS policy for MX and transport-map destinations, and per-domain exceptions.
    tls_policy: Literal["none", "may", "verify"] = "may"
    tls_policies: dict[str, Literal["none", "may", "verify"]] = field(default_factory=dict)
    # PEM bundle of CAs trusted for "verify"; none: the system's trust store.
    ca_file: Path | None = None
    # Per-domain next hop, "host:port", bypassing MX lookup (".domain" covers subdomains).
    transport: dict[str, str] = field(default_factory=dict)
    # Port for MX hosts (Postfix's smtp_tcp_port); tests point it at loopback peers.
    smtp_port: int = 25
    backoff_min: int = 300
    backoff_max: int = 3600
    max_lifetime: int = 5 * 86400
    delay_warning: int = 0  # seconds; 0: no delay warnings
    destination_concurrency: int = 20
    connect_timeout: int = 30
    command_timeout: int = 300
    data_timeout: int = 600
    connection_cache_time: int = 2
    control_poll_interval: float = 1.0
    # Verified TLS towards MX hosts: MTA-STS policies (RFC 8461), DANE (RFC 7672; only
    # with a validating resolver named in [dns] nameservers), TLS-RPT (RFC 8460).
    mta_sts: bool = True
    dane: bool = False
    tls_reports: bool = True
    # Port of the MTA-STS policy servers (https://mta-sts.<domain>); tests change it.
    mta_sts_port: int = 443


@dataclass(frozen=True)
class DNSConfig:
    """``[dns]``: the one resolver every lookup goes through (mailsuite.dns.resolver)."""

    # "ip", "ip:port" or "[ipv6]:port"; empty: the servers of /etc/resolv.conf.
    nameservers: tuple[str, ...] = ()
    # Seconds a lookup may take in all (tries included) before it counts as a
    # temporary failure.
    timeout: float = 5.0
    # Answers kept in memory (least recently used dropped first; each expires by its TTL).
    cache_size: int = 10000
    # Lookups in flight at once (each waits in its own thread).
    threads: int = 16


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: how log lines are written (where: twistd's --logfile / -n / --syslog)."""

    # "text": twistd's lines; "json": one JSON object per line with the same fields.
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class MTASTSConfig:
    """``[http.mta_sts]``: the MTA-STS policy (RFC 8461) served at
    ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` for every local domain."""

    # "none" serves no policy (404); "testing" asks senders to report only; "enforce".
    mode: Literal["none", "testing", "enforce"] = "none"
    # MX host patterns senders may deliver to ("mail.example.org", "*.example.org").
    # Empty: the published host name (http.public_hostname, else server.hostname).
    mx: tuple[str, ...] = ()
    # Seconds senders cache the policy (RFC 8461 3.2: at most 31557600).
    max_age: int = 604800


@dataclass(frozen=True)
class HTTPConfig:
    """``[http]``: the web service (mailsuite/web/): client autoconfiguration, the
    MTA-STS policy, Prometheus metrics and the admin pages."""

    listen: tuple[str, ...] = ("tcp:8080",)
    listen_tls: tuple[str, ...] = ("tcp:8443",)
    # Accounts (addresses in the directory) that may log in to /admin/ (over TLS only).
    admins: tuple[str, ...] = ()
    # Clients that may read /metrics.
    metrics_networks: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    # The host name mail clients are told to use for IMAP, POP3 and submission.
    # Empty: server.hostname.
    public_hostname: str = ""
    # Seconds an admin session lasts without a request.
    session_timeout: int = 3600
    # Collect Prometheus metrics (served at /metrics, shown on the admin dashboard).
    metrics: bool = True
    mta_sts: MTASTSConfig = field(default_factory=MTASTSConfig)


@dataclass(frozen=True)
class DKIMConfig:
    """``[dkim]``: signing of mail from our own users (mailsuite.mailauth.dkim_sign).
    Keys live in <data_dir>/dkim/<domain>/<selector>.key (``mailsuite dkim keygen``)."""

    sign: bool = True
    # The selector that signs (rsa-sha256), and per-domain exceptions.
    selector: str = "mail"
    selectors: dict[str, str] = field(default_factory=dict)
    # A second, ed25519-sha256 signature (RFC 8463) with this selector ("": none),
    # and per-domain exceptions.
    ed25519_selector: str = ""
    ed25519_selectors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SRSConfig:
    """``[srs]``: mail from the world forwarded by an alias to an outside address
    (mailsuite.mailauth.srs): SRS envelope sender and an ARC seal."""

    enabled: bool = True
    # The domain of SRS addresses (and of the ARC seal's key); "": the first of
    # server.domains.
    domain: str = ""


@dataclass(frozen=True)
class ProxyConfig:
    """``[proxy]``: IMAP, POP3 and submission listeners that log the user in and pass
    the session to the user's own backend node (mailsuite.proxy), like Dovecot's
    proxy with a host field, so each user's folders stay on one node's caches."""

    imap_listen: tuple[str, ...] = ()
    pop3_listen: tuple[str, ...] = ()
    submission_listen: tuple[str, ...] = ()
    # The LDAP attribute naming a user's backend (host or host:port-less name); with
    # the users file, a "host=NAME" field on the user's line.
    host_attribute: str = "mailHost"
    # The backend of users whose entry names none; "": such users cannot log in here.
    default_host: str = ""
    imap_port: int = 143
    pop3_port: int = 110
    submission_port: int = 587
    # STARTTLS towards the backends ("none" only on a trusted private network);
    # their certificates are verified against backend_ca_file (default: the system's).
    backend_tls: Literal["starttls", "none"] = "starttls"
    backend_ca_file: Path | None = None
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class Config:
    path: Path
    server: ServerConfig
    tls: TLSConfig
    directory: DirectoryConfig
    smtp: SMTPConfig
    submission: SubmissionConfig
    imap: IMAPConfig
    pop3: POP3Config
    relay: RelayConfig = field(default_factory=RelayConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dkim: DKIMConfig = field(default_factory=DKIMConfig)
    sieve: SieveConfig = field(default_factory=SieveConfig)
    managesieve: ManageSieveConfig = field(default_factory=ManageSieveConfig)
    srs: SRSConfig = field(default_factory=SRSConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)

    @property
    def mail_dir(self) -> Path:
        return self.server.mail_dir or self.server.data_dir / "mail"

    @property
    def queue_dir(self) -> Path:
        return self.server.data_dir / "queue"

    def is_local_domain(self, domain: str) -> bool:
        from mailsuite.idn import canonical_domain

        return canonical_domain(domain) in self.server.domains


# Sections of the file, in order; each maps to one dataclass above.
SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "tls": TLSConfig,
    "directory": DirectoryConfig,
    "smtp": SMTPConfig,
    "submission": SubmissionConfig,
    "imap": IMAPConfig,
    "pop3": POP3Config,
    "relay": RelayConfig,
    "limits": LimitsConfig,
    "dns": DNSConfig,
    "http": HTTPConfig,
    "log": LogConfig,
    "dkim": DKIMConfig,
    "sieve": SieveConfig,
    "managesieve": ManageSieveConfig,
    "srs": SRSConfig,
    "proxy": ProxyConfig,
}

# Sections built by later work: accepted but named by check-config as not yet active.
INACTIVE_SECTIONS: dict[str, str] = {}


# ---------------------------------------------------------------------------
# Conversion of one TOML value to the annotated field type.


class _Invalid(Exception):
    pass


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    float: "a number",
    Path: "a path (string)",
}


def _describe(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list, each item " + _describe(typing.get_args(tp)[0])
    if tp is IPNetwork:
        return "a network in CIDR form"
    return str(tp)


def _convert(value: Any, tp: Any, base: Path) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if set(args) == {ipaddress.IPv4Network, ipaddress.IPv6Network}:
            if not isinstance(value, str):
                raise _Invalid("expected a network in CIDR form")
            try:
                return ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise _Invalid(f"not a network in CIDR form: {value!r}") from None
        non_none = [a for a in args if a is not type(None)]
        return _convert(value, non_none[0], base)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _Invalid(f"expected {_describe(tp)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _Invalid(f"expected {_describe(tp)}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_convert(item, item_tp, base))
            except _Invalid as e:
                raise _Invalid(f"item {i + 1}: {e}") from None
        return tuple(out)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise _Invalid("expected a table")
        return types.MappingProxyType(
            {str(k): _convert(v, val_tp, base) for k, v in value.items()}
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise _Invalid("expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid("expected an integer")
        if value < 0:
            raise _Invalid("expected a non-negative integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid("expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Invalid("expected a string")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise _Invalid("expected a path (string)")
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else (base / p)
    raise _Invalid(f"unsupported type {tp}")  # a programming error in this module


def build_section(cls: type, table: Any, prefix: str, base: Path, problems: list[str]) -> Any:
    """Build dataclass ``cls`` from a TOML table; add a line to ``problems`` per error.

    Nested dataclass fields are nested tables; they are validated the same way.  Later
    modules (ldap, relay) may call this for their own sub-tables.
    """
    if not isinstance(table, dict):
        problems.append(f"{prefix}: expected a table")
        table = {}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in names:
            problems.append(f"{prefix}.{key}: unknown key")
    for f in dataclasses.fields(cls):
        if f.name not in table:
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp) and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                kwargs[f.name] = build_section(tp, {}, f"{prefix}.{f.name}", base, problems)
            elif isinstance(f.default, Path) and not f.default.is_absolute():
                kwargs[f.name] = base / f.default
            continue
        tp = hints[f.name]
        value = table[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = build_section(tp, value, f"{prefix}.{f.name}", base, problems)
            continue
        try:
            kwargs[f.name] = _convert(value, tp, base)
        except _Invalid as e:
            problems.append(f"{prefix}.{f.name}: {e}")
    return cls(**kwargs)


# ---------------------------------------------------------------------------
# Cross-field checks.


def _check(cfg: Config, problems: list[str]) -> None:
    from twisted.internet.endpoints import _parseServer  # noqa: PLC2701 - syntax check only

    if not cfg.server.domains:
        problems.append("server.domains: at least one local domain is required")
    from mailsuite.idn import valid_domain

    for d in cfg.server.domains:
        # U-labels or A-labels (RFC 5890) are both fine: they are one domain.
        if not d or "@" in d or " " in d or d != d.lower() or not valid_domain(d):
            problems.append(f"server.domains: {d!r} is not a lower-case domain name")
    if cfg.server.postmaster and "@" not in cfg.server.postmaster:
        problems.append("server.postmaster: expected an address like postmaster@example.org")
    if cfg.server.processes < 0:
        problems.append("server.processes: expected 0 (one per core) or more")
    delim = cfg.server.recipient_delimiter
    if any(c in delim for c in "@ \t\"\\") or not delim.isascii() or len(delim) > 8:
        problems.append(f"server.recipient_delimiter: {delim!r}: expected up to 8 ASCII characters, not @, space or quote")
    if cfg.relay.dane and not cfg.dns.nameservers:
        problems.append("relay.dane: needs a validating resolver named in [dns] nameservers "
                        "(the AD bit of /etc/resolv.conf's servers is not to be trusted)")
    if not 0 < cfg.relay.mta_sts_port < 65536:
        problems.append("relay.mta_sts_port: expected a port number")
    if cfg.server.thread_pool_size < 1:
        problems.append("server.thread_pool_size: expected at least 1")
    for name in ("smtp", "submission", "imap", "pop3", "http"):
        svc = getattr(cfg, name)
        for key in ("listen", "listen_tls"):
            for desc in getattr(svc, key):
                # Judge the kind by the prefix: ssl: would try to load server.pem, and
                # plugin endpoints (tcp6:) return a parser object, not a name.
                if desc.partition(":")[0].strip().lower() == "ssl":
                    problems.append(
                        f"{name}.{key}: {desc!r}: use a tcp: endpoint; TLS comes from [tls] "
                        "(listen_tls wraps it) so certificates can be reloaded"
                    )
                    continue
                try:
                    _parseServer(desc, None)
                except Exception as e:  # the parser raises several types
                    problems.append(f"{name}.{key}: bad endpoint {desc!r}: {e}")
    tls_needed = any(getattr(cfg, n).listen_tls for n in ("smtp", "submission", "imap", "pop3", "http"))
    t = cfg.tls
    if (t.certificate is None) != (t.private_key is None):
        problems.append("tls: set both tls.certificate and tls.private_key, or neither")
    if t.certificate is None and tls_needed:
        problems.append("tls.certificate: required because a listen_tls listener is configured")
    for name in ("smtp", "submission", "imap", "pop3", "http"):
        o = getattr(t, name)
        if (o.certificate is None) != (o.private_key is None):
            problems.append(f"tls.{name}: set both certificate and private_key, or neither")
    if t.max_handshakes_per_ip < 1:
        problems.append("tls.max_handshakes_per_ip: expected at least 1")
    for name in ("smtp", "submission"):
        svc = getattr(cfg, name)
        if svc.max_line_length < 80:
            problems.append(f"{name}.max_line_length: expected at least 80")
    if cfg.pop3.max_line_length < 255:
        problems.append("pop3.max_line_length: expected at least 255 (RFC 2449 4)")
    for name in ("smtp", "submission", "imap", "pop3"):
        svc = getattr(cfg, name)
        if svc.request_deadline < 0:
            problems.append(f"{name}.request_deadline: expected 0 (off) or a number of seconds")
        if svc.min_data_rate < 1:
            problems.append(f"{name}.min_data_rate: expected at least 1 byte per second")
    for admin in cfg.http.admins:
        if "@" not in admin or admin != admin.strip().lower():
            problems.append(f"http.admins: {admin!r} is not a lower-case address")
    if cfg.http.mta_sts.max_age > 31557600:
        problems.append("http.mta_sts.max_age: at most 31557600 seconds (RFC 8461 3.2)")
    if cfg.http.session_timeout < 60:
        problems.append("http.session_timeout: expected at least 60 seconds")
    if cfg.pop3.idle_timeout < 1:
        problems.append("pop3.idle_timeout: expected at least 1 second")
    from mailsuite.directory.ldap_filters import check_ldap_config

    problems.extend(check_ldap_config(cfg.directory.ldap, cfg.directory.backend == "ldap"))
    from mailsuite.queue.route import check_relay_config

    for i, ns in enumerate(cfg.dns.nameservers):
        from mailsuite.dns.resolver import parse_nameserver

        try:
            parse_nameserver(ns)
        except ValueError:
            problems.append(f"dns.nameservers: item {i + 1}: expected an IP address with an optional port, got {ns!r}")
    if cfg.dns.timeout <= 0:
        problems.append("dns.timeout: expected a positive number of seconds")
    if cfg.dns.threads < 1:
        problems.append("dns.threads: expected at least 1")
    from mailsuite.mailauth.dkim_keys import DKIMKeyError, check_names

    for key, sel in [("selector", cfg.dkim.selector), ("ed25519_selector", cfg.dkim.ed25519_selector)] + [
        (f"selectors.{d}", s) for d, s in cfg.dkim.selectors.items()
    ] + [(f"ed25519_selectors.{d}", s) for d, s in cfg.dkim.ed25519_selectors.items()]:
        if sel or key == "selector":
            try:
                check_names("example.org", sel)
            except DKIMKeyError as e:
                problems.append(f"dkim.{key}: {e}")

    problems.extend(check_relay_config(cfg.relay))


def check_files(cfg: Config) -> list[str]:
    """Problems with files the running server needs (not needed to manage users)."""
    problems: list[str] = []
    t = cfg.tls
    if t.certificate is not None and not t.generate_self_signed:
        for key in ("certificate", "private_key"):
            p = getattr(t, key)
            if p is not None and not p.exists():
                problems.append(f"tls.{key}: {p} does not exist (set tls.generate_self_signed = true to create one)")
    for name in ("smtp", "submission", "imap", "pop3", "http", "managesieve"):
        for key in ("certificate", "private_key"):
            p = getattr(getattr(t, name), key)
            if p is not None and not p.exists():
                problems.append(f"tls.{name}.{key}: {p} does not exist")
    d = cfg.directory
    if d.backend == "file":
        for key in ("users_file", "aliases_file"):
            p = getattr(d, key)
            if not p.parent.is_dir():
                problems.append(f"directory.{key}: folder {p.parent} does not exist")
    if d.backend == "ldap":
        for key in ("bind_password_file", "ca_file"):
            p = getattr(d.ldap, key)
            if p is not None and not os.access(p, os.R_OK):
                problems.append(f"directory.ldap.{key}: {p} does not exist or is not readable")
    from mailsuite.queue.route import check_relay_files

    problems.extend(check_relay_files(cfg.relay))
    problems.extend(_check_sieve_files(cfg.sieve))
    return problems


def _check_sieve_files(s: SieveConfig) -> list[str]:
    """The global Sieve scripts exist and compile (a broken one would be skipped at
    every delivery, with an error line each time)."""
    from mailsuite.sieve.grammar import compile_script
    from mailsuite.sieve.parser import SieveSyntaxError

    problems = []
    for key in ("before", "after"):
        p = getattr(s, key)
        if p is None:
            continue
        try:
            compile_script(p.read_bytes())
        except OSError as e:
            problems.append(f"sieve.{key}: {p}: {e.strerror}")
        except SieveSyntaxError as e:
            problems.append(f"sieve.{key}: {p}: {e}")
    if s.global_dir is not None and not s.global_dir.is_dir():
        problems.append(f"sieve.global_dir: {s.global_dir} is not a directory")
    return problems


def parse(text: str, path: Path) -> Config:
    """Parse and validate config text; raise ConfigError listing every problem."""
    problems: list[str] = []
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
    base = path.parent.resolve()
    sections: dict[str, Any] = {}
    for key in raw:
        if key not in SECTIONS and key not in INACTIVE_SECTIONS:
            problems.append(f"{key}: unknown section")
    for name, cls in SECTIONS.items():
        sections[name] = build_section(cls, raw.get(name, {}), name, base, problems)
    cfg = Config(path=path.resolve(), **sections)
    # Cross-field checks run even after type errors (so every problem is listed), but
    # say nothing more about a key already reported: its value is only a stand-in default.
    reported = {p.partition(":")[0] for p in problems}
    extra: list[str] = []
    _check(cfg, extra)
    problems += [p for p in extra if p.partition(":")[0] not in reported]
    if problems:
        raise ConfigError(problems)
    return _canonical(cfg)


def _canonical(cfg: Config) -> Config:
    """Local domains in the one form every lookup compares (lower-case U-labels), so
    ``xn--bcher-kva.example`` in the file and ``bücher.example`` on the wire match."""
    from mailsuite.idn import canonical_domain

    domains = tuple(dict.fromkeys(canonical_domain(d) for d in cfg.server.domains))
    if domains == cfg.server.domains:
        return cfg
    return dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, domains=domains))


def load(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{p}: config file not found"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{p}: cannot read config file: {e}"]) from None
    return parse(text, p)


def default_path() -> Path:
    return Path(os.environ.get("MAILSUITE_CONFIG") or "etc/mailsuite.toml")
