"""MTA-STS (RFC 8461) for outbound delivery: a domain's policy, fetched and cached.

Per recipient domain, :meth:`MTASTS.policy_for` answers the policy that applies now,
or None:

1. the ``_mta-sts.<domain>`` TXT record (exactly one ``v=STSv1`` record with an
   ``id``) says a policy exists and which version is current;
2. a cached policy with that id, not expired, is used as it is;
3. otherwise ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` is fetched with a
   verified certificate (``[relay] ca_file``, else the system's CAs), no redirects
   followed (RFC 8461 3.3), at most 64 KiB, and parsed;
4. when the TXT record is gone or the fetch fails, an unexpired cached policy still
   applies (RFC 8461 5.1: an attacker who blocks DNS or HTTPS must not turn the
   policy off).

The cache is one JSON file (``<queue_dir>/mta-sts.json``) written by
:func:`mailsuite.fsutil.atomic_write` in the worker pool, so policies survive a restart.

The host name ``mta-sts.<domain>`` is looked up through the suite's resolver and the
HTTPS connection made to that address with SNI and certificate checks for the name,
so the relay never falls back to the system resolver; ``port`` exists for tests.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer, endpoints, protocol
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from mailsuite import filelock, fsutil
from mailsuite.idn import ascii_domain

log = Logger(namespace="mailsuite.relay")

MAX_POLICY = 64 * 1024
MAX_AGE_LIMIT = 31557600  # RFC 8461 3.2: at most one year
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Policy:
    domain: str
    id: str
    mode: str  # enforce | testing | none
    mx: tuple[str, ...]
    max_age: int
    fetched: float

    def expired(self, now: float) -> bool:
        return now >= self.fetched + self.max_age

    def matches(self, host: str) -> bool:
        """RFC 8461 4.1: an MX pattern is a name, or ``*.`` and a name, where the
        wildcard stands for exactly one label."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                label, _, rest = host.partition(".")
                if label and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False

    def describe(self) -> str:
        return f"mta-sts {self.mode} (id {self.id})"


def parse_txt(records: list[bytes]) -> str | None:
    """The policy id from the _mta-sts TXT records, or None (none, several, broken)."""
    found = [r.decode("ascii", "replace") for r in records if r.startswith(b"v=STSv1")]
    if len(found) != 1:
        return None
    fields = dict(f.strip().partition("=")[::2] for f in found[0].split(";") if f.strip())
    sts_id = fields.get("id", "")
    return sts_id if _ID.match(sts_id) else None


def parse_policy(domain: str, sts_id: str, text: str, now: float) -> Policy:
    """The policy file (RFC 8461 3.2): ``key: value`` lines, CRLF or LF."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("version is not STSv1")
    mode = (fields.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"bad mode {mode!r}")
    try:
        max_age = int((fields.get("max_age") or [""])[0])
    except ValueError:
        raise PolicyError("max_age is not a number") from None
    if not 0 <= max_age <= MAX_AGE_LIMIT:
        raise PolicyError("max_age out of range")
    mx = tuple(m.lower().rstrip(".") for m in fields.get("mx", []))
    if mode != "none" and not mx:
        raise PolicyError("no mx lines")
    return Policy(domain, sts_id, mode, mx, max_age, now)


class PolicyCache:
    """Policies by domain, kept in a JSON file that survives restarts."""

    def __init__(self, path: Path, workers: Any) -> None:
        self.path = path
        self.workers = workers  # mailsuite.workers.IWorkers: where the file is saved
        self.policies: dict[str, Policy] = {}

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text("utf-8"))
            self.policies = {d: Policy(**{**p, "mx": tuple(p["mx"])}) for d, p in data.items()}
        except FileNotFoundError:
            self.policies = {}
        except (ValueError, TypeError, KeyError, OSError) as e:
            log.warn("relay: MTA-STS cache {path} unreadable ({why}); starting empty", path=str(self.path), why=str(e))
            self.policies = {}

    def save_sync(self, snapshot: dict[str, Any]) -> None:
        """Blocking: write the cache atomically and durably (run in the worker pool).
        Worker processes fetch policies too (queue/handover.py): under a lock, what the
        file holds is merged in, the later fetch of a domain winning, so that no
        process drops a policy another one cached."""
        lock = filelock.lock_wait(self.path.with_name(self.path.name + ".lock"))
        try:
            try:
                on_disk = json.loads(self.path.read_text("utf-8"))
            except (FileNotFoundError, ValueError, OSError):
                on_disk = {}
            merged = dict(on_disk) if isinstance(on_disk, dict) else {}
            for domain, pol in snapshot.items():
                old = merged.get(domain)
                if not isinstance(old, dict) or float(old.get("fetched", 0) or 0) <= pol["fetched"]:
                    merged[domain] = pol
            fsutil.atomic_write(self.path, json.dumps(merged, sort_keys=True).encode())
        finally:
            filelock.unlock(lock)

    def put(self, policy: Policy) -> defer.Deferred:
        self.policies[policy.domain] = policy
        snapshot = {d: asdict(p) for d, p in self.policies.items()}
        return self.workers.run(self.save_sync, snapshot)


class _Collect(protocol.Protocol):
    """The response body, at most MAX_POLICY bytes."""

    def __init__(self, done: defer.Deferred) -> None:
        self.done, self.buf = done, b""

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > MAX_POLICY:
            self.transport.stopProducing()

    def connectionLost(self, reason: Any = None) -> None:
        if len(self.buf) > MAX_POLICY:
            self.done.errback(PolicyError("policy larger than 64 KiB"))
        elif reason is None or reason.check(ResponseDone):
            self.done.callback(self.buf)
        else:
            self.done.errback(reason)


@implementer(IAgentEndpointFactory)
class _ToAddress:
    """Connect to an address we resolved, with TLS checks for the URL's host name."""

    def __init__(self, reactor: Any, ip: str, tls: BrowserLikePolicyForHTTPS, timeout: float) -> None:
        self.reactor, self.ip, self.tls, self.timeout = reactor, ip, tls, timeout

    def endpointForURI(self, uri: Any) -> Any:
        cls = endpoints.TCP6ClientEndpoint if ":" in self.ip else endpoints.TCP4ClientEndpoint
        tcp = cls(self.reactor, self.ip, uri.port, timeout=self.timeout)
        return endpoints.wrapClientTLS(self.tls.creatorForNetloc(uri.host, uri.port), tcp)


class MTASTS:
    def __init__(self, resolver: Any, cache: PolicyCache, reactor: Any, trust_root: Any = None,
                 port: int = 443, timeout: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.resolver = resolver
        self.cache = cache
        self.reactor = reactor
        self.tls = BrowserLikePolicyForHTTPS(trustRoot=trust_root)
        self.port = port
        self.timeout = timeout
        self.clock = clock
        self._inflight: dict[str, defer.Deferred] = {}

    async def policy_for(self, domain: str) -> Policy | None:
        """The policy that applies to mail for ``domain`` now (mode "none" included),
        or None when the domain has none."""
        domain = ascii_domain(domain)
        now = self.clock()
        cached = self.cache.policies.get(domain)
        if cached is not None and cached.expired(now):
            cached = None
        try:
            sts_id = parse_txt(await self.resolver.txt(f"_mta-sts.{domain}"))
        except Exception as e:  # noqa: BLE001 - NotFound or a temporary DNS error: the cache decides
            log.debug("relay: MTA-STS TXT for {domain}: {why}", domain=domain, why=str(e))
            return cached
        if sts_id is None:
            return cached
        if cached is not None and cached.id == sts_id:
            return cached
        try:
            policy = await self._fetch(domain, sts_id)
        except Exception as e:  # noqa: BLE001 - every fetch failure means "no new policy"
            log.info("relay: MTA-STS policy of {domain} not fetched: {why}", domain=domain, why=str(e))
            return cached
        await self.cache.put(policy)
        log.info("relay: MTA-STS policy of {domain}: mode={mode} mx={mx} max_age={age} id={id}", domain=domain,
                 mode=policy.mode, mx=",".join(policy.mx), age=policy.max_age, id=policy.id)
        return policy

    async def _fetch(self, domain: str, sts_id: str) -> Policy:
        host = f"mta-sts.{domain}"
        ips = list(await self.resolver.aaaa(host)) + list(await self.resolver.a(host))
        if not ips:
            raise PolicyError(f"{host} has no address")
        agent = Agent.usingEndpointFactory(self.reactor, _ToAddress(self.reactor, ips[0], self.tls, self.timeout))
        url = f"https://{host}:{self.port}/.well-known/mta-sts.txt" if self.port != 443 else \
            f"https://{host}/.well-known/mta-sts.txt"
        d = agent.request(b"GET", url.encode(), Headers({b"User-Agent": [b"mailsuite"]}))
        timer = self.reactor.callLater(self.timeout, d.cancel)
        try:
            response = await d
            if response.code != 200:
                # Redirects included: RFC 8461 3.3 says they must not be followed.
                raise PolicyError(f"HTTP {response.code}")
            ctype = (response.headers.getRawHeaders(b"content-type") or [b""])[0].split(b";")[0].strip().lower()
            if ctype != b"text/plain":
                raise PolicyError(f"content type {ctype.decode(errors='replace')!r}, not text/plain")
            done: defer.Deferred = defer.Deferred()
            response.deliverBody(_Collect(done))
            body = await done
        finally:
            if timer.active():
                timer.cancel()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError("policy is not UTF-8") from None
        return parse_policy(domain, sts_id, text, self.clock())
