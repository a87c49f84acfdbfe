"""Who may send what to whom: the decisions behind MAIL FROM and RCPT TO.

The MX role accepts mail for local addresses from anyone and relays only for
``relay_networks`` or authenticated clients (never an open relay).  The submission
role additionally requires AUTH before MAIL.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.logger import Logger

from mailsuite.directory.interface import DirectoryUnavailable, IDirectory, Resolution
from mailsuite.smtp.address import domain_of
from mailsuite.smtp.reply import Reply

log = Logger(namespace="mailsuite.smtp")


@dataclass
class Session:
    """What the server knows about one SMTP client connection."""

    client_ip: str
    helo: str | None = None
    esmtp: bool = False
    tls: str = ""  # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384" once TLS is up
    auth_user: str = ""  # the account name after AUTH
    submission: bool = False
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)

    def reset(self) -> None:
        self.sender = None
        self.recipients = []
        self.resolutions = []


@dataclass(frozen=True)
class Policy:
    directory: IDirectory
    domains: tuple[str, ...]
    relay_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def may_relay(self, session: Session) -> bool:
        if session.auth_user:
            return True
        try:
            ip = ipaddress.ip_address(session.client_ip)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.relay_networks)

    def check_sender(self, session: Session, sender: str) -> defer.Deferred:
        """Fires when MAIL FROM may proceed; fails with a Reply otherwise."""
        if session.submission and not session.auth_user:
            return defer.fail(Reply(530, "5.7.0", "Authentication required"))
        return defer.succeed(None)

    def check_recipient(self, session: Session, rcpt: str) -> defer.Deferred:
        """Fires with the Resolution for ``rcpt``; fails with a Reply otherwise."""
        domain = domain_of(rcpt)
        if domain not in self.domains:
            if self.may_relay(session):
                return defer.succeed(Resolution(forwards=(rcpt,)))
            return defer.fail(Reply(554, "5.7.1", f"<{rcpt}>: Relay access denied"))
        d = self.directory.resolve(rcpt)

        def resolved(res: Resolution | None) -> Resolution:
            if not res:
                raise Reply(550, "5.1.1", f"<{rcpt}>: Recipient address rejected: User unknown")
            return res

        def unavailable(f):  # type: ignore[no-untyped-def]
            f.trap(DirectoryUnavailable)
            log.warn("smtp: directory unavailable for <{rcpt}>: {why}", rcpt=rcpt, why=str(f.value))
            raise Reply(451, "4.4.3", "Directory temporarily unavailable, try again later")

        return d.addCallbacks(resolved, unavailable)
