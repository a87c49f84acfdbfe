"""Forwarding that keeps passing checks: SRS for the envelope sender, an ARC seal.

Mail from the world that an alias forwards to an outside address would fail SPF at
the destination (our host is not in the original sender's SPF).  So:

* :class:`SenderRewriter`: when the queue relays such a message, the MAIL FROM it
  uses is the SRS form (``SRS0=hash=tt=orig.domain=user@<srs domain>``; SRS1 when the
  sender was already an SRS address; srslib: HMAC-SHA1 keyed, time-stamped, 21 days
  valid).  The spool keeps the true sender: our own DSNs and the local copies of the
  same message see it, only the remote transaction is rewritten.
* :class:`SRSDirectory`: a bounce to an SRS address of ours resolves (after the hash
  and time stamp check) to a forward to the original sender; a forged or expired one
  is an unknown user (550 5.1.1).
* :class:`ArcSealSink`: the forwarded message gets an ARC set (RFC 8617) over our
  Authentication-Results (cv= from its arc= result), signed with the SRS domain's
  RSA DKIM key, before it is queued; so the destination can trust our checks even
  though the forwarding (a footer, a list tag) may later break DKIM.

The secret is ``<data_dir>/srs/secret`` (made at first start, 0600); older secrets
listed in ``<data_dir>/srs/old-secrets`` (one per line) are still accepted for
bounces, so the secret can be rotated.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any, Callable

import dkim
import srslib
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.fsutil import atomic_write
from mailsuite.handoff import BodyFile, Envelope, IMessageSink, prepend_headers, read_body
from mailsuite.mailauth.dkim_sign import KeyRing, SignPolicy

log = Logger()


def load_secrets(data_dir: Path) -> tuple[str, list[str]]:
    """(current secret, older ones); the current one is made on first use (blocking,
    at start)."""
    d = data_dir / "srs"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = d / "secret"
    if not path.exists():
        secret = base64.b64encode(os.urandom(24)).decode()
        atomic_write(path, secret.encode() + b"\n", mode=0o600)
    current = path.read_text().strip()
    old_path = d / "old-secrets"
    old = [l.strip() for l in old_path.read_text().splitlines() if l.strip()] if old_path.exists() else []
    return current, old


class SRS:
    def __init__(self, secret: str, old_secrets: list[str], domain: str) -> None:
        self._srs = srslib.SRS(secret, prev_secrets=old_secrets)
        self.domain = domain.lower()

    def forward(self, sender: str) -> str:
        if not sender or "@" not in sender:
            return sender
        try:
            return self._srs.forward(sender, self.domain)
        except srslib.Error:
            return sender

    def reverse(self, address: str) -> str | None:
        """The original address of one of our SRS addresses; None when it is not ours
        or its hash or time stamp do not check out."""
        local, _, domain = address.rpartition("@")
        if domain.lower() != self.domain or not self._srs.is_srs_address(address, strict=False):
            return None
        try:
            return self._srs.reverse(address)
        except srslib.Error:
            return None


class SenderRewriter:
    """The MAIL FROM the relay uses for a spooled message (queue/scheduler.py)."""

    def __init__(self, srs: SRS, ours: SignPolicy, local_domains: tuple[str, ...]) -> None:
        self.srs = srs
        self.ours = ours
        self.local_domains = frozenset(local_domains)

    def __call__(self, rec: Any) -> str:
        sender = rec.sender
        if not sender or sender.rpartition("@")[2].lower() in self.local_domains:
            return sender
        if self.ours.is_ours(rec):
            return sender  # our own users relaying: not a forward
        return self.srs.forward(sender)


class SRSDirectory:
    """The directory, plus: an SRS address of ours resolves to its original sender."""

    def __init__(self, inner: Any, srs: SRS) -> None:
        self.inner = inner
        self.srs = srs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def resolve(self, address: str) -> Any:
        original = self.srs.reverse(address)
        if original is None:
            return self.inner.resolve(address)
        from mailsuite.directory.interface import Resolution

        return defer.succeed(Resolution(forwards=(original,)))


def arc_seal(body: BodyFile, key: Any, srv_id: str) -> BodyFile:
    """``body`` with an ARC set on top (blocking: worker pool); unchanged when there is
    no Authentication-Results of ``srv_id`` to seal."""
    message = read_body(body)
    lines = dkim.arc_sign(message, key.selector.encode(), key.domain.encode(), key.private, srv_id.encode())
    if not lines:
        return body
    return prepend_headers(body, b"".join(lines).replace(b"\r\n", b"\n"))


@implementer(IMessageSink)
class ArcSealSink:
    """Seals mail from the world that is forwarded to outside addresses."""

    def __init__(self, inner: IMessageSink, keyring: KeyRing, domain: str, srv_id: str, ours: SignPolicy,
                 run: Callable[..., defer.Deferred]) -> None:
        self.inner = inner
        self.key = next((k for k in keyring.for_domain(domain) if k.algorithm == "rsa"), None)
        self.srv_id = srv_id
        self.ours = ours
        self.run = run

    def accept(self, envelope: Envelope, body: BodyFile) -> defer.Deferred:
        if self.key is None or not envelope.forwards or self.ours.is_ours(envelope):
            return self.inner.accept(envelope, body)
        d = self.run(arc_seal, body, self.key, self.srv_id)

        def failed(f: Any) -> BodyFile:
            log.failure("arc: {qid}: sealing failed; forwarded unsealed", f, qid=envelope.queue_id)
            return body

        d.addErrback(failed)
        d.addCallback(lambda sealed: self.inner.accept(envelope, sealed))
        return d
