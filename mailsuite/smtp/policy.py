"""Who may send what to whom: the decisions behind MAIL FROM and RCPT TO, and the
From: check at the end of DATA.

The MX role accepts mail for local addresses from anyone and relays only for
``relay_networks`` or authenticated clients (never an open relay).  The submission
role additionally requires AUTH before MAIL, keeps each user to their own addresses
(envelope sender and From:, unless ``enforce_sender`` is off or the user is in
``any_sender_users``) and to ``[limits] messages_per_user``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from mailsuite.directory.interface import DirectoryUnavailable, IDirectory, Resolution
from mailsuite.logtext import escaped, quoted
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
    # The authenticated user's own addresses, looked up at the first MAIL (lower case).
    sender_addresses: frozenset[str] | None = None
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)
    smtputf8: bool = False  # MAIL FROM carried SMTPUTF8 (RFC 6531)
    body: str = ""  # BODY=: "", "8BITMIME" or "BINARYMIME"
    ret: str = ""  # RFC 3461 RET
    requiretls: bool = False  # RFC 8689 REQUIRETLS on MAIL
    envid: str = ""  # RFC 3461 ENVID (decoded)
    rcpt_dsn: dict[str, tuple[str, str]] = field(default_factory=dict)  # RCPT -> (NOTIFY, ORCPT)

    def reset(self) -> None:
        self.sender = None
        self.recipients = []
        self.resolutions = []
        self.smtputf8 = False
        self.body = ""
        self.ret = self.envid = ""
        self.requiretls = False
        self.rcpt_dsn = {}


@dataclass(frozen=True)
class Policy:
    directory: IDirectory
    domains: tuple[str, ...]
    relay_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    enforce_sender: bool = False
    any_sender_users: frozenset[str] = frozenset()
    message_rate: Any = None  # auth.throttle.MessageRate for the submission role
    quotas: Any = None  # mailsuite.delivery.quota.Quotas: a full mailbox gets 452 4.2.2 at RCPT

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
        user = session.auth_user
        if user and self.message_rate is not None and not self.message_rate.allowed(user):
            log.warn("smtp: [{ip}] {user} is over the message rate limit", ip=session.client_ip, user=user)
            return defer.fail(Reply(450, "4.7.1", "Error: message rate limit exceeded, try again later"))
        if not self.sender_enforced(session):
            return defer.succeed(None)
        d = self._own_addresses(session)

        def check(own: frozenset[str]) -> None:
            # The null sender (MDNs, vacation replies) carries no address to forge;
            # From: is still checked at the end of DATA.
            if sender and sender.lower() not in own:
                log.info("smtp: [{ip}] {user} may not use sender <{sender}>", ip=session.client_ip,
                         user=user, sender=escaped(sender))
                raise Reply(553, "5.7.1", f"<{sender}>: Sender address rejected: not owned by user {user}")

        return d.addCallback(check)

    def sender_enforced(self, session: Session) -> bool:
        return bool(self.enforce_sender and session.auth_user
                    and session.auth_user.lower() not in self.any_sender_users)

    def _own_addresses(self, session: Session) -> defer.Deferred:
        if session.sender_addresses is not None:
            return defer.succeed(session.sender_addresses)
        d = self.directory.sender_addresses(session.auth_user)

        def got(addresses: Any) -> frozenset[str]:
            own = frozenset(a.lower() for a in addresses) | {session.auth_user.lower()}
            session.sender_addresses = own
            return own

        def unavailable(f):  # type: ignore[no-untyped-def]
            f.trap(DirectoryUnavailable)
            log.warn("smtp: directory unavailable for the addresses of {user}", user=session.auth_user)
            raise Reply(451, "4.4.3", "Directory temporarily unavailable, try again later")

        return d.addCallbacks(got, unavailable)

    def check_from_header(self, session: Session, from_values: list[str]) -> Reply | None:
        """The reply refusing a message whose From: is not the user's, or None.

        ``from_values`` are the unfolded From: field bodies of the message (usually
        one); a message without From: passes (it names nobody)."""
        if not from_values or not self.sender_enforced(session):
            return None
        own = session.sender_addresses or frozenset()
        addresses = [addr for _name, addr in getaddresses(from_values)]
        bad = [a for a in addresses if a.lower() not in own] or ([] if addresses else ["(none)"])
        if bad:
            log.info("smtp: [{ip}] {user} may not use From: {bad}", ip=session.client_ip,
                     user=session.auth_user, bad=", ".join(quoted(b, 100) for b in bad[:5]))
            return Reply(553, "5.7.1", f"From: <{bad[0][:100]}> rejected: not owned by user {session.auth_user}")
        return None

    def message_accepted(self, session: Session) -> None:
        """Count a message of the authenticated user against the rate limit."""
        if session.auth_user and self.message_rate is not None:
            self.message_rate.sent(session.auth_user)

    def check_recipient(self, session: Session, rcpt: str) -> defer.Deferred:
        """Fires with the Resolution for ``rcpt``; fails with a Reply otherwise."""
        domain = domain_of(rcpt)
        if domain not in self.domains:
            if self.may_relay(session):
                return defer.succeed(Resolution(forwards=(rcpt,)))
            return defer.fail(Reply(554, "5.7.1", f"<{rcpt}>: Relay access denied"))
        d = self.directory.resolve(rcpt)

        def resolved(res: Resolution | None) -> Any:
            if not res:
                raise Reply(550, "5.1.1", f"<{rcpt}>: Recipient address rejected: User unknown")
            if self.quotas is not None and res.mailboxes and not res.forwards:
                return defer.ensureDeferred(self._check_full(session, rcpt, res))
            return res

        def unavailable(f):  # type: ignore[no-untyped-def]
            f.trap(DirectoryUnavailable)
            log.warn("smtp: directory unavailable for <{rcpt}>: {why}", rcpt=escaped(rcpt), why=str(f.value))
            raise Reply(451, "4.4.3", "Directory temporarily unavailable, try again later")

        return d.addCallback(resolved).addErrback(unavailable)

    async def _check_full(self, session: Session, rcpt: str, res: Resolution) -> Resolution:
        """RFC 5321 4.5.3.1.10 / RFC 3463 X.2.2: a recipient whose every mailbox is full
        gets a temporary 452 4.2.2 (the sender keeps trying while the user makes room).
        A mailbox that is full among others is left to delivery, which defers that copy."""
        for account in res.mailboxes:
            if await self.quotas.refusal(account) is None:
                return res
        log.info("smtp: [{ip}] <{rcpt}>: mailbox full, 452 4.2.2", ip=session.client_ip, rcpt=escaped(rcpt))
        raise Reply(452, "4.2.2", f"<{rcpt}>: Mailbox full, try again later")
