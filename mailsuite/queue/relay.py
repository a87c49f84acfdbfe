"""Delivering one message's recipients for one destination, over SMTP.

Finds the addresses (:mod:`mailsuite.queue.mx`), connects to each in turn until one
greets, applies the destination's TLS policy, and runs the transaction.  Outcomes
are per recipient: 2xx sent, 4xx or no connection deferred, 5xx bounced.

TLS policy: ``none`` never starts TLS; ``may`` starts it when offered and, if the
handshake fails, connects again in plain (twisted#10334 has no such fallback);
``verify`` requires STARTTLS and a certificate that service-identity verifies for
the host name (the MX name, or the next hop's name).

A session that delivered cleanly stays open for ``connection_cache_time`` seconds and
carries the next message for the same destination (Postfix's connection cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, endpoints, error as net_error, ssl
from twisted.logger import Logger

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

    @staticmethod
    def from_reply(reply: PeerReply, session: Session) -> "Outcome":
        status = "sent" if reply.code // 100 == 2 else "bounced" if reply.code >= 500 else "deferred"
        return Outcome(status, reply.status, f"host {session.relay} said: {reply}" if status != "sent" else str(reply),
                       session.relay, session.tls, session.host, "DSN" in session.extensions)


def _failure_outcome(err: Exception, relay: str = "none", host: str = "") -> Outcome:
    if isinstance(err, RouteError):
        return Outcome("bounced" if err.permanent else "deferred", err.status, f"{err.code} {err.status} {err.text}")
    if isinstance(err, SessionError):
        status = "bounced" if err.permanent else "deferred"
        return Outcome(status, err.status, str(err), relay, "", host)
    return Outcome("deferred", "4.4.1", str(err), relay, "", host)


class Relay:
    def __init__(self, relay_cfg: Any, hostname: str, mx: MXResolver, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.cfg = relay_cfg
        self.hostname = hostname
        self.mx = mx
        self.reactor = reactor
        self.timeouts = Timeouts(relay_cfg.connect_timeout, relay_cfg.command_timeout, relay_cfg.data_timeout)
        self._idle: dict[str, list[tuple[Session, Any]]] = {}
        self._trust = None
        if relay_cfg.ca_file is not None:
            pem = relay_cfg.ca_file.read_bytes()
            self._trust = ssl.trustRootFromCertificates(
                [ssl.Certificate.loadPEM(c) for c in _split_pem(pem)]
            )

    # -- the one entry point -------------------------------------------------------------

    async def deliver(self, dest: Destination, tx: Transaction) -> dict[str, Outcome]:
        """Try to deliver ``tx`` to ``dest``; an Outcome for every recipient."""
        session = self._take_idle(dest.key)
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
        try:
            candidates = await self.mx.candidates(dest)
        except RouteError as e:
            return {r: _failure_outcome(e) for r in tx.recipients}
        last: Outcome | None = None
        for cand in candidates:
            try:
                session = await self._open(dest, cand)
            except SessionError as e:
                last = _failure_outcome(e, f"{cand.host}[{cand.ip}]:{cand.port}", cand.host)
                log.info("relay: {relay}: {why}", relay=last.relay, why=str(e))
                continue
            try:
                return await self._run(dest, session, tx)
            except SessionError as e:
                session.close()
                return {r: _failure_outcome(e, session.relay, session.host) for r in tx.recipients}
        assert last is not None
        if last.status == "bounced" and len(candidates) > 1:
            # A 5xx greeting from one of several hosts does not prove the others refuse.
            last = Outcome("deferred", "4" + last.dsn[1:], last.text, last.relay, last.tls, last.remote_mta)
        return {r: last for r in tx.recipients}

    async def _run(self, dest: Destination, session: Session, tx: Transaction) -> dict[str, Outcome]:
        result = await session.send(tx)
        out = {r: Outcome.from_reply(reply, session) for r, reply in result.replies.items()}
        if session.alive and session.messages < MAX_MESSAGES_PER_SESSION:
            self._park(dest.key, session)
        else:
            self._quit(session)
        return out

    # -- connections -----------------------------------------------------------------------

    async def _open(self, dest: Destination, cand: Candidate) -> Session:
        session = await self._connect(cand)
        await session.greet(self.hostname)
        peer_name = (session.greeting.lines[0].split() or [""])[0] if session.greeting else ""
        if dest.kind == "mx" and peer_name.lower() == self.hostname.lower():
            # An MX that is this server (a DNS mistake, or a domain missing from
            # server.domains) would bounce the message between us forever.
            session.close()
            raise SessionError(f"mail for {dest.host} loops back to myself", PeerReply(554, "5.4.6 mail loops back to myself"))
        if dest.tls == "none":
            pass
        elif "STARTTLS" in session.extensions:
            try:
                ok = await session.starttls(self.hostname, self._tls_options(dest, cand))
            except SessionError as e:
                if not e.tls_failed or dest.tls == "verify":
                    raise
                log.info("relay: {relay}: {why}; trying again without TLS", relay=session.relay, why=str(e))
                session = await self._connect(cand)
                await session.greet(self.hostname)
                ok = True
            if not ok and dest.tls == "verify":
                session.close()
                raise SessionError(f"TLS is required, but host {session.relay} refused to start TLS", status="4.7.5")
        elif dest.tls == "verify":
            session.close()
            raise SessionError(f"TLS is required, but was not offered by host {session.relay}", status="4.7.4")
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

    def _tls_options(self, dest: Destination, cand: Candidate) -> Any:
        if dest.tls == "verify":
            return ssl.optionsForClientTLS(cand.host, trustRoot=self._trust or ssl.platformTrust())
        # Opportunistic: encrypt, verify nothing (RFC 7435); most MX certificates would
        # fail a name check and plaintext is the alternative.
        return ssl.CertificateOptions(verify=False)

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
