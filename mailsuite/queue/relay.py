"""Delivering one message's recipients for one destination, over SMTP.

Finds the addresses (:mod:`mailsuite.queue.mx`), connects to each in turn until one
greets, applies the destination's TLS policy, and runs the transaction.  Outcomes
are per recipient: 2xx sent, 4xx or no connection deferred, 5xx bounced.

TLS policy: ``none`` never starts TLS; ``may`` starts it when offered and, if the
handshake fails, connects again in plain (twisted#10334 has no such fallback);
``verify`` requires STARTTLS and a certificate that service-identity verifies for
the host name (the MX name, or the next hop's name).

Verified TLS towards MX hosts, decided per candidate host (:class:`TLSPlan`), in
the order RFC 8461 2 gives: DANE (RFC 7672, ``[relay] dane``: TLSA records from a
validated answer) wins over MTA-STS (RFC 8461, ``[relay] mta_sts``, :mod:`.mtasts`),
which wins over the configured ``tls_policy``.  An MTA-STS ``enforce`` policy keeps
only MX hosts it names and requires a certificate verified for the MX name; ``testing``
tries that, reports a failure in the log and delivers anyway.  A REQUIRETLS message
(RFC 8689) goes only over verified TLS to a host that offers REQUIRETLS (else 5.7.30).
The plan's name goes into every outcome, so the relay log and ``mailsuite queue
show`` say which policy applied and why a delivery was deferred.

A session that delivered cleanly stays open for ``connection_cache_time`` seconds and
carries the next message for the same destination (Postfix's connection cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, endpoints, error as net_error, ssl
from twisted.logger import Logger

from mailsuite.queue import dane
from mailsuite.queue.mx import Candidate, MXResolver, RouteError
from mailsuite.queue.route import Destination
from mailsuite.tls import _split_pem  # one PEM splitter for the project
from mailsuite.smtp.outbound import (
    ClientFactory,
    PeerReply,
    Session,
    SessionError,
    Timeouts,
    Transaction,
)

log = Logger(namespace="mailsuite.relay")

MAX_MESSAGES_PER_SESSION = 100


@dataclass(frozen=True)
class Outcome:
    """What happened to one recipient in one attempt."""

    status: str  # sent | deferred | bounced
    dsn: str  # enhanced status code, e.g. 2.0.0
    text: str  # the reply or reason, e.g. "250 2.0.0 Ok: queued as X"
    relay: str = "none"  # host[ip]:port
    tls: str = ""
    remote_mta: str = ""  # the peer's host name, for the DSN
    dsn_passed: bool = False  # the peer offered DSN: NOTIFY went on, success DSNs are its job
    policy: str = ""  # the TLS policy that applied (TLSPlan.policy)

    @staticmethod
    def from_reply(reply: PeerReply, session: Session) -> "Outcome":
        status = "sent" if reply.code // 100 == 2 else "bounced" if reply.code >= 500 else "deferred"
        return Outcome(status, reply.status, f"host {session.relay} said: {reply}" if status != "sent" else str(reply),
                       session.relay, session.tls, session.host, "DSN" in session.extensions,
                       getattr(session, "policy", ""))


def _failure_outcome(err: Exception, relay: str = "none", host: str = "", policy: str = "", tls: str = "") -> Outcome:
    if isinstance(err, RouteError):
        return Outcome("bounced" if err.permanent else "deferred", err.status, f"{err.code} {err.status} {err.text}",
                       policy=policy)
    if isinstance(err, SessionError):
        status = "bounced" if err.permanent else "deferred"
        return Outcome(status, err.status, str(err), relay, tls, host, policy=policy)
    return Outcome("deferred", "4.4.1", str(err), relay, "", host, policy=policy)


@dataclass(frozen=True)
class TLSPlan:
    """How TLS is handled towards one host."""

    policy: str  # none | opportunistic | verify | mta-sts enforce | mta-sts testing | dane | requiretls
    required: bool = False  # no delivery without TLS
    verify_name: str = ""  # PKIX-verify the certificate for this name ("": no PKIX check)
    tlsa: tuple = ()  # DANE: the usable TLSA records the chain must match
    testing: bool = False  # MTA-STS testing: verification failures are reported, not enforced

    @property
    def verified(self) -> bool:
        return (bool(self.verify_name) and not self.testing) or bool(self.tlsa)


class Relay:
    def __init__(self, relay_cfg: Any, hostname: str, mx: MXResolver, reactor: Any,
                 mtasts: Any = None, resolver: Any = None) -> None:
        self.cfg = relay_cfg
        self.hostname = hostname
        self.mx = mx
        self.reactor = reactor
        self.timeouts = Timeouts(relay_cfg.connect_timeout, relay_cfg.command_timeout, relay_cfg.data_timeout)
        self._idle: dict[str, list[tuple[Session, Any]]] = {}
        self.mtasts = mtasts  # mtasts.MTASTS, or None when [relay] mta_sts is off
        self.reports: Any = None  # tlsrpt.TLSReports, or None when [relay] tls_reports is off
        self.resolver = resolver  # for TLSA lookups when [relay] dane is on
        self._trust = None
        if relay_cfg.ca_file is not None:
            pem = relay_cfg.ca_file.read_bytes()
            self._trust = ssl.trustRootFromCertificates(
                [ssl.Certificate.loadPEM(c) for c in _split_pem(pem)]
            )

    # -- the one entry point -------------------------------------------------------------

    async def deliver(self, dest: Destination, tx: Transaction) -> dict[str, Outcome]:
        """Try to deliver ``tx`` to ``dest``; an Outcome for every recipient."""
        # A REQUIRETLS message never rides a cached session: it needs a fresh check.
        session = self._take_idle(dest.key) if not tx.requiretls else None
        while session is not None:
            try:
                return await self._run(dest, session, tx)
            except SessionError as e:
                session.close()
                if session.in_data:
                    return {r: _failure_outcome(e, session.relay, session.host) for r in tx.recipients}
                # A cached connection the peer closed meanwhile, before any of the
                # message went out: try a fresh one.
                session = self._take_idle(dest.key)
        sts = await self._sts_policy(dest)
        try:
            candidates = await self.mx.candidates(dest)
        except RouteError as e:
            return {r: _failure_outcome(e, policy=sts.describe() if sts else "") for r in tx.recipients}
        if sts is not None and sts.mode in ("enforce", "testing"):
            matching = [c for c in candidates if sts.matches(c.host)]
            for c in candidates:
                if not sts.matches(c.host):
                    log.info("relay: {domain}: MX {mx} is not in the MTA-STS policy ({mode}){what}", domain=dest.host,
                             mx=c.host, mode=sts.mode, what="; skipped" if sts.mode == "enforce" else "")
            if sts.mode == "enforce":
                if not matching:
                    err = SessionError(f"MTA-STS policy of {dest.host} (enforce) names none of its MX hosts "
                                       f"({', '.join(sorted({c.host for c in candidates}))})", status="4.7.5")
                    return {r: _failure_outcome(err, policy=sts.describe()) for r in tx.recipients}
                candidates = matching
        last: Outcome | None = None
        for cand in candidates:
            plan: TLSPlan | None = None
            try:
                plan = await self._plan(dest, cand, sts, tx)
                session = await self._open(dest, cand, plan)
            except SessionError as e:
                last = _failure_outcome(e, f"{cand.host}[{cand.ip}]:{cand.port}", cand.host,
                                        plan.policy if plan is not None else "")
                log.info("relay: {relay}: {why}", relay=last.relay, why=str(e))
                self._report(dest, cand, sts, plan, False, str(e))
                continue
            self._report(dest, cand, sts, plan, True)
            if tx.requiretls:
                refusal = self._requiretls_refusal(session, plan)
                if refusal is not None:
                    session.close()
                    return {r: _failure_outcome(refusal, session.relay, session.host, plan.policy, session.tls)
                            for r in tx.recipients}
            try:
                return await self._run(dest, session, tx)
            except SessionError as e:
                session.close()
                return {r: _failure_outcome(e, session.relay, session.host) for r in tx.recipients}
        assert last is not None
        if last.status == "bounced" and len(candidates) > 1:
            # A 5xx greeting from one of several hosts does not prove the others refuse.
            last = Outcome("deferred", "4" + last.dsn[1:], last.text, last.relay, last.tls, last.remote_mta,
                           policy=last.policy)
        return {r: last for r in tx.recipients}

    # -- TLS policy ----------------------------------------------------------------------

    async def _sts_policy(self, dest: Destination) -> Any:
        if self.mtasts is None or dest.kind != "mx":
            return None
        try:
            return await self.mtasts.policy_for(dest.host)
        except Exception as e:  # noqa: BLE001 - a policy we cannot get is no policy (RFC 8461 5)
            log.info("relay: MTA-STS lookup for {domain} failed: {why}", domain=dest.host, why=str(e))
            return None

    async def _plan(self, dest: Destination, cand: Candidate, sts: Any, tx: Transaction) -> TLSPlan:
        """DANE, then MTA-STS, then the configured policy (RFC 8461 2); REQUIRETLS
        raises anything weaker to PKIX verification of the host name."""
        plan: TLSPlan | None = None
        if self.cfg.dane and self.resolver is not None and dest.kind == "mx":
            plan = await self._dane_plan(cand)
        if plan is None and sts is not None and sts.mode == "enforce":
            plan = TLSPlan("mta-sts enforce", required=True, verify_name=cand.host)
        if plan is None and sts is not None and sts.mode == "testing":
            plan = TLSPlan("mta-sts testing", verify_name=cand.host, testing=True)
        if plan is None:
            plan = {"none": TLSPlan("none"), "may": TLSPlan("opportunistic"),
                    "verify": TLSPlan("verify", required=True, verify_name=cand.host)}[dest.tls]
        if tx.requiretls and not plan.verified:
            plan = TLSPlan("requiretls", required=True, verify_name=cand.host)
        return plan

    async def _dane_plan(self, cand: Candidate) -> TLSPlan | None:
        name = f"_{cand.port}._tcp.{cand.host}"
        try:
            answer = await self.resolver.tlsa(name)
        except Exception as e:  # noqa: BLE001 - NotFound: no DANE; anything else: do not guess
            from mailsuite.dns.resolver import NotFound

            if isinstance(e, NotFound):
                return None
            # RFC 7672 2.2.2: a failed TLSA lookup means this host is not tried now.
            raise SessionError(f"DANE: TLSA lookup for {name} failed: {e}", status="4.7.5") from None
        if not answer.records or not answer.authentic:
            return None  # insecure (no AD bit) or none: DANE does not apply
        records = tuple(dane.usable(answer.records))
        if not records:
            # RFC 7672 2.2: only unusable records: TLS is still mandatory, unauthenticated.
            return TLSPlan("dane (no usable TLSA: encrypt only)", required=True)
        return TLSPlan("dane", required=True, tlsa=records)

    def _report(self, dest: Destination, cand: Candidate, sts: Any, plan: TLSPlan | None, ok: bool,
                reason: str = "") -> None:
        """Count a session under an MTA-STS or DANE policy for TLS-RPT (RFC 8460)."""
        if self.reports is None or plan is None:
            return
        if plan.policy.startswith("dane"):
            strings = [f"{r.usage} {r.selector} {r.mtype} {r.data.hex()}" for r in plan.tlsa]
            self.reports.record(dest.host, "tlsa", strings, cand.host, cand.ip, ok, reason)
        elif plan.policy.startswith("mta-sts") and sts is not None:
            strings = ["version: STSv1", f"mode: {sts.mode}"] + [f"mx: {m}" for m in sts.mx] + [f"max_age: {sts.max_age}"]
            self.reports.record(dest.host, "sts", strings, cand.host, cand.ip, ok, reason)

    def _requiretls_refusal(self, session: Session, plan: TLSPlan) -> SessionError | None:
        if not plan.verified or not session.tls:
            return SessionError(f"REQUIRETLS: no verified TLS to {session.relay} (policy {plan.policy})", status="4.7.5")
        if "REQUIRETLS" not in session.extensions:
            return SessionError(f"REQUIRETLS support required, but not offered by host {session.relay}",
                                PeerReply(550, "5.7.30 REQUIRETLS support required"), permanent=True)
        return None

    async def _run(self, dest: Destination, session: Session, tx: Transaction) -> dict[str, Outcome]:
        result = await session.send(tx)
        out = {r: Outcome.from_reply(reply, session) for r, reply in result.replies.items()}
        if session.alive and session.messages < MAX_MESSAGES_PER_SESSION:
            self._park(dest.key, session)
        else:
            self._quit(session)
        return out

    # -- connections -----------------------------------------------------------------------

    async def _open(self, dest: Destination, cand: Candidate, plan: TLSPlan | None = None) -> Session:
        plan = plan or TLSPlan("opportunistic")
        session = await self._connect(cand)
        await session.greet(self.hostname)
        peer_name = (session.greeting.lines[0].split() or [""])[0] if session.greeting else ""
        if dest.kind == "mx" and peer_name.lower() == self.hostname.lower():
            # An MX that is this server (a DNS mistake, or a domain missing from
            # server.domains) would bounce the message between us forever.
            session.close()
            raise SessionError(f"mail for {dest.host} loops back to myself", PeerReply(554, "5.4.6 mail loops back to myself"))
        if plan.policy != "none":
            session = await self._secure(session, cand, plan)
        session.policy = plan.policy  # type: ignore[attr-defined]
        if dest.auth is not None:
            if not session.tls and dest.tls != "none":
                session.close()
                raise SessionError(f"will not send a password to {session.relay} without TLS", status="4.7.0")
            await session.auth(*dest.auth)
        return session

    async def _connect(self, cand: Candidate) -> Session:
        ep_cls = endpoints.TCP6ClientEndpoint if ":" in cand.ip else endpoints.TCP4ClientEndpoint
        ep = ep_cls(self.reactor, cand.ip, cand.port, timeout=self.timeouts.connect)
        try:
            proto = await ep.connect(ClientFactory())
        except net_error.ConnectError as e:
            text = "connection timed out" if isinstance(e, net_error.TimeoutError) else str(e)
            raise SessionError(f"connect to {cand.host}[{cand.ip}]:{cand.port}: {_clean(text)}", status="4.4.1") from None
        session = Session(proto, cand.host, cand.ip, cand.port, self.timeouts)
        return session

    async def _secure(self, session: Session, cand: Candidate, plan: TLSPlan) -> Session:
        """STARTTLS as ``plan`` says; returns the session to use (a new one after a
        failed handshake that the plan lets us retry)."""
        if "STARTTLS" not in session.extensions:
            if plan.required:
                session.close()
                raise SessionError(f"TLS is required, but was not offered by host {session.relay} "
                                   f"(policy {plan.policy})", status="4.7.4")
            if plan.testing:
                log.warn("relay: {relay}: MTA-STS testing: STARTTLS not offered (would fail in enforce mode)",
                         relay=session.relay)
            return session
        try:
            ok = await session.starttls(self.hostname, self._tls_options(plan, cand))
        except SessionError as e:
            if not e.tls_failed or plan.required:
                raise SessionError(f"{e} (policy {plan.policy})", e.reply, e.tls_failed, e.status, e.permanent) from None
            if plan.testing:
                log.warn("relay: {relay}: MTA-STS testing: certificate verification failed for {host}: {why} "
                         "(would fail in enforce mode); delivering with unverified TLS",
                         relay=session.relay, host=cand.host, why=str(e))
            else:
                log.info("relay: {relay}: {why}; trying again without TLS", relay=session.relay, why=str(e))
            session = await self._connect(cand)
            await session.greet(self.hostname)
            if plan.testing and "STARTTLS" in session.extensions:
                try:
                    await session.starttls(self.hostname, ssl.CertificateOptions(verify=False))
                except SessionError as e2:
                    if not e2.tls_failed:
                        raise
                    session = await self._connect(cand)
                    await session.greet(self.hostname)
            return session
        if not ok:
            if plan.required:
                session.close()
                raise SessionError(f"TLS is required, but host {session.relay} refused to start TLS "
                                   f"(policy {plan.policy})", status="4.7.5")
            return session
        if plan.tlsa:
            try:
                chain = dane.peer_chain(session.proto.transport)
            except Exception:  # noqa: BLE001 - no chain to look at is a failed check
                chain = []
            match = dane.verify(chain, plan.tlsa, cand.host)
            if not match.ok:
                session.close()
                raise SessionError(f"DANE verification failed for host {session.relay}: {match.reason}",
                                   status="4.7.5")
            log.info("relay: {relay}: DANE: {how}", relay=session.relay, how=match.reason)
        return session

    def _tls_options(self, plan: TLSPlan, cand: Candidate) -> Any:
        if plan.verify_name:
            return ssl.optionsForClientTLS(plan.verify_name, trustRoot=self._trust or ssl.platformTrust())
        # Opportunistic (RFC 7435) and DANE (checked against TLSA after the handshake):
        # encrypt, no PKIX check; most MX certificates would fail a name check.
        return ssl.CertificateOptions(verify=False)

    @property
    def trust_root(self) -> Any:
        """The CAs for PKIX verification (``[relay] ca_file``; None: the system's)."""
        return self._trust

    def _park(self, key: str, session: Session) -> None:
        def expire() -> None:
            idle = self._idle.get(key, [])
            for i, (s, _t) in enumerate(idle):
                if s is session:
                    del idle[i]
                    break
            self._quit(session)

        timer = self.reactor.callLater(self.cfg.connection_cache_time, expire)
        self._idle.setdefault(key, []).append((session, timer))

    def _take_idle(self, key: str) -> Session | None:
        idle = self._idle.get(key)
        while idle:
            session, timer = idle.pop()
            if timer.active():
                timer.cancel()
            if session.alive:
                return session
        return None

    def _quit(self, session: Session) -> None:
        defer.ensureDeferred(session.quit())

    def close_all(self) -> defer.Deferred:
        """QUIT every cached session (at shutdown)."""
        for idle in self._idle.values():
            for session, timer in idle:
                if timer.active():
                    timer.cancel()
                session.close()
        self._idle.clear()
        return defer.succeed(None)


def _clean(text: str) -> str:
    return text.replace("\n", " ").strip()[:200]
