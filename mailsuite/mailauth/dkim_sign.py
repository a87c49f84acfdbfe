"""DKIM signing of mail that leaves from a local domain (RFC 6376, RFC 8463).

Who is signed: a message whose From: domain is one of ours and has a signing key,
and which came from one of our own senders: an authenticated (submission) session,
a client in ``server.relay_networks``, or the server itself (DSNs: no client IP).
Mail from the world to the MX port is never signed, even with a From: of ours.

Where: :class:`SigningSink` wraps the hand-off (``accept(envelope, body)``) that
both the SMTP server and the queue's DSN code call, so a message is signed exactly
once, when it enters the system, before it is spooled or delivered locally; the
queue never signs (a forwarded or retried message keeps its one signature).

How: dkimpy computes the signature (relaxed/relaxed; the header fields RFC 6376
5.4.1 recommends, those present signed as often as they occur, and From, To,
Subject and Date once more: "oversigning", so no second copy can be added).  It runs
in the auth thread pool (mailauth/pool.py), its RSA through OpenSSL
(mailauth/dkim_openssl.py).
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Any, Callable

import dkim
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.mailauth import dkim_fast  # noqa: F401 - canonicalisation without per-byte regex work
from mailsuite.mailauth import dkim_openssl  # noqa: F401 - RSA through OpenSSL
from mailsuite.mailauth.dkim_keys import DKIMKey, DKIMKeyError, load
from mailsuite.mailauth.headers import from_domain, header_block, header_names, header_values
from mailsuite.handoff import BodyFile, IMessageSink, prepend_headers, read_body

log = Logger()

# RFC 6376 5.4.1: fields that should be signed when present.
SIGNED_HEADERS = (
    "from", "reply-to", "subject", "date", "to", "cc", "resent-date", "resent-from", "resent-to",
    "resent-cc", "in-reply-to", "references", "list-id", "list-help", "list-unsubscribe",
    "list-subscribe", "list-post", "list-owner", "list-archive", "message-id", "mime-version",
    "content-type", "content-transfer-encoding",
)
OVERSIGNED = ("from", "to", "subject", "date")
HEADER_LIMIT = 256 * 1024  # bytes of a large on-disk message read to find the headers


# -- the signing itself (blocking: worker pool) ------------------------------------------

def include_headers(block: bytes) -> list[bytes]:
    present = header_names(block)
    out: list[bytes] = []
    for name in SIGNED_HEADERS:
        n = present.count(name) + (1 if name in OVERSIGNED else 0)
        out += [name.encode()] * n
    return out


def sign_message(message: bytes, keys: list[DKIMKey]) -> bytes:
    """The DKIM-Signature fields (LF line ends) to put on top of ``message``, one per
    key, in the order given (blocking, CPU)."""
    block = header_block(message)
    include = include_headers(block)
    out = []
    for key in keys:
        sig = dkim.sign(
            message, key.selector.encode(), key.domain.encode(), key.private,
            signature_algorithm=key.signature_algorithm,
            canonicalize=(b"relaxed", b"relaxed"), include_headers=include,
        )
        out.append(sig.replace(b"\r\n", b"\n"))
    return b"".join(out)


def already_signed(block: bytes, keys: list[DKIMKey]) -> bool:
    """The message already carries our signature (e.g. reinjected from a trusted
    network): signing again would only add weight."""
    for value in header_values(block, "dkim-signature"):
        tags = dict(t.strip().partition("=")[::2] for t in value.split(";") if "=" in t)
        for k in keys:
            if tags.get("d", "").strip().lower() == k.domain and tags.get("s", "").strip().lower() == k.selector:
                return True
    return False


# -- which keys sign which domain --------------------------------------------------------

class KeyRing:
    """The signing keys of each local domain, per ``[dkim]``, read at start."""

    def __init__(self, dkim_cfg: Any, data_dir: Any, domains: tuple[str, ...]) -> None:
        self.keys: dict[str, list[DKIMKey]] = {}
        self.problems: list[str] = []
        if not dkim_cfg.sign:
            return
        for domain in domains:
            wanted = [dkim_cfg.selectors.get(domain, dkim_cfg.selector)]
            ed = dkim_cfg.ed25519_selectors.get(domain, dkim_cfg.ed25519_selector)
            if ed:
                wanted.append(ed)
            got = []
            for sel in wanted:
                try:
                    got.append(load(data_dir, domain, sel))
                except DKIMKeyError as e:
                    self.problems.append(f"dkim: {domain} is not signed with selector {sel!r}: {e}")
            # RSA first: receivers that do not know ed25519 see it as the first signature.
            got.sort(key=lambda k: k.algorithm != "rsa")
            if got:
                self.keys[domain] = got

    def for_domain(self, domain: str | None) -> list[DKIMKey]:
        """The keys for ``domain``, else for the nearest parent domain that has some:
        mail From: a subdomain (our DSNs come From: MAILER-DAEMON@<hostname>) is
        signed by the parent, which DMARC's relaxed alignment accepts."""
        name = (domain or "").lower()
        while name:
            keys = self.keys.get(name)
            if keys:
                return keys
            name = name.partition(".")[2]
        return []


# -- the hand-off wrapper ----------------------------------------------------------------

@dataclass(frozen=True)
class SignPolicy:
    relay_networks: tuple[Any, ...]

    def is_ours(self, envelope: Any) -> bool:
        """Sent by our own users or by the server itself."""
        if getattr(envelope, "auth_user", ""):
            return True
        ip = getattr(envelope, "client_ip", "")
        if not ip:
            return True  # generated here (DSNs)
        return _in_networks(ip, tuple(self.relay_networks))


@functools.lru_cache(maxsize=4096)
def _in_networks(ip: str, networks: tuple[Any, ...]) -> bool:
    """``ip`` is in one of ``networks``; remembered, as clients come back (parsing
    the address took 10 us of every inbound message's reactor time)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in networks)


def sign_body(body: BodyFile, keyring: KeyRing) -> tuple[BodyFile, str]:
    """Sign ``body`` if its From: domain has keys (blocking; worker pool).  Returns the
    body (signed or as it was) and a word for the log."""
    head = header_block(read_body(body, HEADER_LIMIT))
    keys = keyring.for_domain(from_domain(head))
    if not keys:
        return body, "unsigned"
    if already_signed(head, keys):
        return body, "already signed"
    try:
        fields = sign_message(read_body(body), keys)
    except dkim.DKIMException as e:
        return body, f"not signed ({e})"
    return prepend_headers(body, fields), "signed " + ",".join(f"{k.domain}/{k.selector}" for k in keys)


@implementer(IMessageSink)
class SigningSink:
    """Wraps the hand-off: DKIM-signs our own senders' mail, then passes it on.

    ``run`` is the worker-pool runner (mailsuite.workers.run); ``inner`` the sink
    (dispatcher) the signed message goes to.  A failure to sign never loses or delays
    a message: it goes on unsigned, with a log line.
    """

    def __init__(self, inner: Any, keyring: KeyRing, policy: SignPolicy, run: Callable[..., defer.Deferred]) -> None:
        self.inner = inner
        self.keyring = keyring
        self.policy = policy
        self.run = run

    def accept(self, envelope: Any, body: BodyFile) -> defer.Deferred:
        if not self.keyring.keys or not self.policy.is_ours(envelope):
            return self.inner.accept(envelope, body)
        d = self.run(sign_body, body, self.keyring)

        def signed(result: tuple[BodyFile, str]) -> Any:
            new_body, what = result
            if what.startswith("signed") or what.startswith("not signed"):
                log.info("dkim: {qid}: {what}", qid=envelope.queue_id, what=what)
            return self.inner.accept(envelope, new_body)

        def failed(f: Any) -> Any:
            log.failure("dkim: {qid}: signing failed; sent unsigned", f, qid=envelope.queue_id)
            return self.inner.accept(envelope, body)

        d.addCallbacks(signed, failed)
        return d
