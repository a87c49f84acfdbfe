"""Checks of mail from the world: SPF, DKIM, ARC, DMARC; one Authentication-Results.

Who is checked: mail that is not our own (see :meth:`SignPolicy.is_ours`: not
authenticated, not from ``relay_networks``, not generated here).  The SMTP server
knows nothing of this: :class:`CheckingSink` wraps the hand-off (``accept(envelope,
body)``, mailsuite.handoff) and calls an :class:`IMessageChecker`; the verdict becomes

* a 550 5.7.1 (:class:`~mailsuite.handoff.PermanentFailure`) for DMARC ``p=reject``
  (``[smtp] dmarc_reject_action = "reject"``) or an SPF ``fail`` without a DKIM pass
  (``[smtp] spf_fail_action = "reject"``);
* a 451 4.7.0 (:class:`~mailsuite.handoff.TemporaryFailure`) when a DNS error leaves
  a rejecting decision open: never a 5xx on a timeout;
* delivery to the recipients' Junk folder (``envelope.folder``) for ``p=quarantine``
  and the "junk" actions;
* otherwise acceptance; every accepted message gets one ``Authentication-Results:``
  field (RFC 8601, authserv-id = our host name) on top, and any incoming one that
  claims our authserv-id is removed first (RFC 8601 5).

How one check runs (:class:`AuthChecker`): the header block is read; the DKIM and ARC
public keys and the DMARC record come from the asynchronous resolver (cache hits
answer at once); then SPF (pyspf, its DNS through the suite resolver, blocking) and
the DKIM and ARC signatures (CPU only, against the fetched keys) in one trip to the
auth pool, and DMARC is decided (:mod:`mailsuite.mailauth.dmarc`).  When the SPF
result is cached (:class:`~mailsuite.mailauth.spf_check.SPFCache`: a sender's
second message within the TTL) and the signatures cover little (an in-memory body,
at most :data:`INLINE_BYTES` of body times signatures), the signatures are checked
on the reactor thread instead: a few hundred microseconds, about what the thread
trip itself costs in the reactor, and no GIL hand-over with a pool thread.  When all
of that is known at once (keys and DMARC record cached, SPF cached, signatures small:
a known sender's next message), :meth:`AuthChecker.check_now` judges the message in
one plain call and :class:`CheckingSink` passes it on without a coroutine or a
Deferred of its own; the coroutine path is the same steps with waits between them.
"""

from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import authres
import authres.arc
import authres.dmarc
import dkim
from twisted.internet import defer
from twisted.python import failure
from twisted.logger import Logger
from zope.interface import Interface, implementer

from mailsuite.delivery.local import IDeliveryFilter
from mailsuite.dns.resolver import DNSError, NotFound
from mailsuite.handoff import (BodyFile, Envelope, IMessageSink, PermanentFailure, TemporaryFailure, discard_body,
                               read_body)
from mailsuite.mailauth import dkim_fast  # noqa: F401 - canonicalisation without per-byte regex work
from mailsuite.mailauth import dkim_openssl  # noqa: F401 - RSA through OpenSSL
from mailsuite.mailauth import dkim_verify
from mailsuite.mailauth import dmarc as dmarc_mod, spf_check
from mailsuite.mailauth.dkim_sign import SignPolicy
from mailsuite.mailauth.headers import (field_name, from_values_domain, header_block, header_map, split_fields,
                                        tags)

log = Logger()

HEAD_LIMIT = 256 * 1024
JUNK = "Junk"
# Body bytes times signatures checked on the reactor thread when SPF needs no trip:
# a 4 KB message with one signature takes about 0.25 ms (relaxed canonicalisation,
# SHA-256, RSA through OpenSSL); this bounds a check there to about 2 ms.
INLINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class InboundPolicy:
    authserv_id: str
    dmarc_reject_action: str = "reject"  # reject | junk
    spf_fail_action: str = "reject"  # reject | junk | none


@dataclass
class Verdict:
    action: str  # accept | junk | reject | tempfail
    header: bytes = b""  # the Authentication-Results field, LF-terminated
    status: str = ""
    text: str = ""
    summary: str = ""  # for the log line
    results: dict[str, Any] = field(default_factory=dict)


class IMessageChecker(Interface):
    def check(envelope: Envelope, body: BodyFile) -> "defer.Deferred[Verdict]":
        """Judge a message from the world; never fails (errors become a verdict)."""

    def check_now(envelope: Envelope, body: BodyFile) -> "Verdict | None":
        """The verdict :meth:`check` would give when it can be reached without
        waiting (no DNS lookup, no thread), else None; never raises."""


# -- blocking parts (worker pool) -------------------------------------------------------

def read_head(body: BodyFile) -> bytes:
    return header_block(read_body(body, HEAD_LIMIT))


def spf_and_signatures(resolver: Any, envelope: Envelope, body: BodyFile, n_dkim: int,
                       keys: dict[str, bytes | None], want_arc: bool,
                       spf_cache: spf_check.SPFCache | None = None) -> tuple[Any, Any, list[bool], tuple[str, str]]:
    """SPF (its lookups through the resolver's cache, blocking) and the signatures:
    one trip to a thread per message (blocking)."""
    spf_mf, spf_helo = spf_check.check(resolver, envelope.client_ip, envelope.sender, envelope.helo,
                                       cache=spf_cache)
    ok, arc = verify_signatures(body, n_dkim, keys, want_arc)
    return spf_mf, spf_helo, ok, arc


def verify_signatures(body: BodyFile, n_dkim: int, keys: dict[str, bytes | None], want_arc: bool) -> tuple[list[bool], tuple[str, str]]:
    """Verify every DKIM signature (by index) and the ARC chain against prefetched
    keys: CPU only, no DNS (blocking)."""
    message = read_body(body)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return keys.get(name.decode("ascii", "replace").lower().rstrip("."))

    try:
        parsed: dkim_verify.SignedMessage | None = dkim_verify.SignedMessage(message)
    except Exception:  # noqa: BLE001 - dkimpy's parse refuses it too; it answers below
        parsed = None
    out = []
    for i in range(n_dkim):
        good = parsed.verify(i, keys) if parsed is not None else None
        if good is None:  # not a common case: dkimpy decides
            try:
                good = bool(dkim.DKIM(message).verify(idx=i, dnsfunc=dnsfunc))
            except Exception:  # noqa: BLE001 - dkimpy raises on malformed input: a failed signature
                good = False
        out.append(good)
    arc = ("none", "")
    if want_arc:
        try:
            cv, _results, reason = dkim.arc_verify(message, dnsfunc=dnsfunc)
            arc = (cv.decode() if isinstance(cv, bytes) else str(cv), str(reason))
        except Exception as e:  # noqa: BLE001
            arc = ("fail", str(e))
    return out, arc


def rewrite_head(body: BodyFile, drop: Callable[[bytes], bool], top: bytes) -> BodyFile:
    """``body`` without the Authentication-Results fields ``drop`` selects and with
    ``top`` in front (blocking when the body is on disk: it is rewritten under the same
    name)."""
    if body.data is not None:
        block = header_block(body.data)
        # Only Authentication-Results fields are ever dropped: without one (most
        # messages) nothing is split or tested.
        fields = split_fields(block) if b"authentication-results" in block.lower() else []
        kept = [f for f in fields if not drop(f)]
        if len(kept) == len(fields):
            new = top + body.data
        else:
            new = top + b"".join(kept) + body.data[len(block):]
        return BodyFile(body.path, len(new), new.count(b"\n"), new)
    with open(body.path, "rb") as f:
        head = f.read(HEAD_LIMIT)
    block = header_block(head)
    fields = split_fields(block)
    kept = [f for f in fields if not drop(f)]
    new_head = top + b"".join(kept)
    tmp = body.path + ".ar"
    with open(body.path, "rb") as src, open(tmp, "wb") as dst:
        dst.write(new_head)
        src.seek(len(block))
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.replace(tmp, body.path)
    size = os.path.getsize(body.path)
    removed = b"".join(f for f in fields if drop(f))
    return BodyFile(body.path, size, body.lines + top.count(b"\n") - removed.count(b"\n"))


# -- the checker -----------------------------------------------------------------------

def _fold(line: str, width: int = 78) -> str:
    """Fold an Authentication-Results value at "; " boundaries (RFC 5322 2.2.3)."""
    parts = line.split("; ")
    out, cur = [], parts[0]
    for p in parts[1:]:
        if len(cur) + 2 + len(p) > width:
            out.append(cur + ";")
            cur = "\t" + p
        else:
            cur += "; " + p
    out.append(cur)
    return "\n".join(out)


@dataclass(frozen=True)
class _Head:
    """What the checks need from a message's header block."""
    sigs: list[dict[str, str]]  # the DKIM-Signature fields' tags, topmost first
    arc_present: bool
    n_arc: int  # ARC-Message-Signature fields when there is an ARC-Seal
    key_names: list[str]  # every DKIM and ARC key to fetch, sorted
    fdom: str | None  # the From: domain (None: not exactly one)


def dict_keys(key_list: list[tuple[str, bytes | None, str]]) -> dict[str, bytes | None]:
    return {n: k for n, k, _e in key_list}


@implementer(IMessageChecker)
class AuthChecker:
    def __init__(self, resolver: Any, run: Callable[..., defer.Deferred], policy: InboundPolicy,
                 spf_cache: spf_check.SPFCache | None = None) -> None:
        self.resolver = resolver
        self.run = run
        self.policy = policy
        self.spf_cache = spf_cache if spf_cache is not None else spf_check.SPFCache()

    def check(self, envelope: Envelope, body: BodyFile) -> defer.Deferred[Verdict]:
        verdict = self.check_now(envelope, body)
        if verdict is not None:
            return defer.succeed(verdict)
        return defer.ensureDeferred(self._check(envelope, body)).addErrback(self._broken, envelope)

    def check_now(self, envelope: Envelope, body: BodyFile) -> Verdict | None:
        """The verdict when every DNS answer (keys, DMARC record) and the SPF result
        are cached and the signatures are few enough to check here (see
        :data:`INLINE_BYTES`): no coroutine, no Deferred, no thread.  With the bench's
        mail (one sender, cached answers) this is every message after the first few."""
        if body.data is None:
            return None
        try:
            started = time.perf_counter()
            head = self._head(header_block(body.data))
            cached = self._cached(head.key_names, head.fdom)
            if cached is None:
                return None
            spf_known = self._spf_inline(envelope, body, head)
            if spf_known is None:
                return None
            key_list, (record, dmarc_temp) = cached
            ok, (arc_cv, _arc_reason) = verify_signatures(body, len(head.sigs), dict_keys(key_list), head.arc_present)
            return self._verdict(envelope, head, key_list, record, dmarc_temp, spf_known, ok, arc_cv, started)
        except Exception:  # noqa: BLE001 - as check(): a bug must not lose or bounce mail
            return self._broken(failure.Failure(), envelope)

    @staticmethod
    def _broken(f: failure.Failure, envelope: Envelope) -> Verdict:
        # A bug here must not lose or bounce mail: try again later, with a log line.
        log.failure("mailauth: {qid}: check failed", f, qid=envelope.queue_id)
        return Verdict("tempfail", status="4.7.0", text="Temporary failure checking sender authentication, try again later",
                       summary="error")

    @staticmethod
    def _key_from(name: str, txts: list[bytes]) -> tuple[str, bytes | None, str]:
        for t in txts:
            if b"p=" in t:
                return name, t, ""
        return name, None, "permerror"

    async def _key(self, name: str) -> tuple[str, bytes | None, str]:
        """(name, key record, "" | "temperror" | "permerror")."""
        try:
            txts = await self.resolver.txt(name)
        except NotFound:
            return name, None, "permerror"
        except DNSError:
            return name, None, "temperror"
        return self._key_from(name, txts)

    async def _dmarc(self, domain: str | None) -> tuple[Any, bool]:
        if not domain:
            return None, False
        try:
            return await dmarc_mod.fetch_record(self.resolver, domain), False
        except DNSError:
            return None, True

    def _cached(self, key_names: list[str], fdom: str | None) -> tuple[list, tuple[Any, bool]] | None:
        """What :meth:`_key` and :meth:`_dmarc` would give, from the resolver's cache
        alone (no Deferred, no coroutine); None when an answer is not cached."""
        key_list = []
        for name in key_names:
            try:
                txts = self.resolver.cached(name, "TXT")
            except NotFound:
                key_list.append((name, None, "permerror"))
                continue
            if txts is None:
                return None
            key_list.append(self._key_from(name, txts))
        record = dmarc_mod.cached_record(self.resolver, fdom) if fdom else None
        if record is dmarc_mod.MISSING:
            return None
        return key_list, (record, False)

    @staticmethod
    def _head(head: bytes) -> "_Head":
        fields = header_map(head, ("dkim-signature", "arc-seal", "arc-message-signature", "from"))
        sigs = [tags(v) for v in fields["dkim-signature"]]
        arc_present = bool(fields["arc-seal"])
        n_arc = len(fields["arc-message-signature"]) if arc_present else 0
        key_names: set[str] = set()
        for t in sigs + [tags(v) for v in fields["arc-message-signature"] + fields["arc-seal"]]:
            if t.get("d") and t.get("s"):
                key_names.add(f"{t['s']}._domainkey.{t['d']}".lower().rstrip("."))
        return _Head(sigs, arc_present, n_arc, sorted(key_names), from_values_domain(fields["from"]))

    def _spf_inline(self, envelope: Envelope, body: BodyFile, head: "_Head") -> tuple[Any, Any] | None:
        """The cached SPF results when the signatures may be checked on this thread."""
        if body.data is None or body.size * max(1, len(head.sigs) + head.n_arc) > INLINE_BYTES:
            return None
        return self.spf_cache.get(envelope.client_ip, envelope.sender, envelope.helo)

    async def _check(self, envelope: Envelope, body: BodyFile) -> Verdict:
        started = time.perf_counter()
        block = header_block(body.data) if body.data is not None else await self.run(read_head, body)
        head = self._head(block)
        # The keys and the DMARC record from the cache, else asynchronously; then SPF
        # and the signatures: here when SPF is cached and the work small, else in one
        # thread trip.
        cached = self._cached(head.key_names, head.fdom)
        if cached is None:
            keys_d = defer.gatherResults([defer.ensureDeferred(self._key(n)) for n in head.key_names])
            dmarc_d = defer.ensureDeferred(self._dmarc(head.fdom))
            key_list, (record, dmarc_temp) = await defer.gatherResults([keys_d, dmarc_d])
        else:
            key_list, (record, dmarc_temp) = cached
        keys = dict_keys(key_list)
        spf_known = self._spf_inline(envelope, body, head)
        if spf_known is not None:
            ok, (arc_cv, _arc_reason) = verify_signatures(body, len(head.sigs), keys, head.arc_present)
        else:
            spf_mf, spf_helo, ok, (arc_cv, _arc_reason) = await self.run(
                spf_and_signatures, self.resolver, envelope, body, len(head.sigs), keys, head.arc_present,
                self.spf_cache)
            spf_known = (spf_mf, spf_helo)
        return self._verdict(envelope, head, key_list, record, dmarc_temp, spf_known, ok, arc_cv, started)

    def _verdict(self, envelope: Envelope, head: "_Head", key_list: list, record: Any, dmarc_temp: bool,
                 spf: tuple[Any, Any], ok: list[bool], arc_cv: str, started: float) -> Verdict:
        """DMARC, the decision, the Authentication-Results field and the summary, from
        the answers and the signatures' results."""
        spf_mf, spf_helo = spf
        fdom = head.fdom
        key_err = {n: e for n, _k, e in key_list}
        dkim_results = []
        for t, good in zip(head.sigs, ok):
            name = f"{t.get('s', '')}._domainkey.{t.get('d', '')}".lower()
            err = key_err.get(name, "permerror")
            result = "pass" if good else (err or "fail")
            dkim_results.append((result, t.get("d", "").lower(), t.get("s", ""), t.get("a", ""), t.get("b", "")[:8]))
        passes = [d for r, d, *_ in dkim_results if r == "pass"]
        dm = dmarc_mod.evaluate(fdom, record, spf_mf.result, spf_mf.domain, passes)
        if dmarc_temp:
            dm = dmarc_mod.DMARCResult("temperror", "", "none", fdom or "")

        header = self._header(envelope, spf_mf, spf_helo, dkim_results, arc_cv, dm)
        verdict = self._decide(spf_mf, dkim_results, dm, passes)
        verdict.header = header
        verdict.results = {"spf": spf_mf.result, "dkim": [r[0] for r in dkim_results], "dmarc": dm.result,
                           "arc": arc_cv, "ms": (time.perf_counter() - started) * 1000}
        verdict.summary = (f"spf={spf_mf.result} dkim={','.join(r[0] for r in dkim_results) or 'none'} "
                           f"arc={arc_cv} dmarc={dm.result}"
                           + (f" (p={dm.policy} dis={dm.disposition})" if dm.policy else "")
                           + f" -> {verdict.action}")
        return verdict

    def _decide(self, spf_mf: Any, dkim_results: list, dm: Any, passes: list[str]) -> Verdict:
        p = self.policy
        temp_dkim = any(r[0] == "temperror" for r in dkim_results)
        if dm.result == "temperror":
            return Verdict("tempfail", status="4.7.0",
                           text=f"Temporary DNS failure looking up the DMARC policy of {dm.from_domain}, try again later")
        if dm.result == "fail" and dm.disposition in ("reject", "quarantine") and (spf_mf.result == "temperror" or temp_dkim):
            # The failure may be the DNS error's: decide later, never bounce on it.
            return Verdict("tempfail", status="4.7.0",
                           text="Temporary DNS failure checking sender authentication, try again later")
        if dm.result == "fail" and dm.disposition == "reject":
            if p.dmarc_reject_action == "reject":
                return Verdict("reject", status="5.7.1",
                               text=f"Message rejected: the DMARC policy of {dm.from_domain} says reject "
                                    "(From: domain not authenticated)")
            return Verdict("junk")
        if dm.result == "fail" and dm.disposition == "quarantine":
            return Verdict("junk")
        if spf_mf.result == "fail" and not passes and dm.result != "pass":
            if p.spf_fail_action == "reject":
                return Verdict("reject", status="5.7.1",
                               text=f"Message rejected: SPF of {spf_mf.domain} does not allow this host to send for it")
            if p.spf_fail_action == "junk":
                return Verdict("junk")
        return Verdict("accept")

    def _header(self, envelope: Envelope, spf_mf: Any, spf_helo: Any, dkim_results: list, arc_cv: str, dm: Any) -> bytes:
        parts: list[str] = []
        if spf_mf.identity == "mailfrom":
            parts.append(_ar_result("spf", spf_mf.result, "smtp", "mailfrom", envelope.sender))
        if envelope.helo:
            parts.append(_ar_result("spf", spf_helo.result, "smtp", "helo", envelope.helo))
        if not dkim_results:
            parts.append("dkim=none")
        for result, d, s, a, b in dkim_results:
            text = _ar_dkim(result, d, s, a)
            if b:
                text += " " + str(authres.AuthenticationResultProperty("header", "b", b))
            parts.append(text)
        parts.append(_ar_result("arc", arc_cv if arc_cv in ("pass", "fail", "none") else "fail"))
        if dm.from_domain:
            comment = f"p={dm.policy.upper()} dis={dm.disposition.upper()}" if dm.policy else None
            parts.append(_ar_result("dmarc", dm.result, "header", "from", dm.from_domain, comment))
        else:
            parts.append("dmarc=none")
        text = "Authentication-Results: " + self.policy.authserv_id.lower() + "".join("; " + p for p in parts)
        return (_fold(text) + "\n").encode("utf-8", "replace")


# The result clauses of Authentication-Results as authres writes them (its quoting
# rules), remembered: most repeat from message to message, and authres spends tens
# of microseconds on each (regex quoting).  tests/test_mailauth_header.py compares
# them with authres's whole-header output.

@functools.lru_cache(maxsize=4096)
def _ar_result(method: str, result: str, ptype: str = "", prop: str = "", value: str = "",
               comment: str | None = None) -> str:
    r = authres.AuthenticationResult(method=method, result=result, result_comment=comment)
    if ptype:
        r.properties.append(authres.AuthenticationResultProperty(ptype, prop, value))
    return str(r)


@functools.lru_cache(maxsize=4096)
def _ar_dkim(result: str, d: str, s: str, a: str) -> str:
    return str(authres.DKIMAuthenticationResult(result=result, header_d=d or None, header_s=s or None,
                                                header_a=a or None))


# -- the hand-off wrapper ---------------------------------------------------------------

def _claims(authserv_id: str) -> Callable[[bytes], bool]:
    """Selects Authentication-Results fields naming ``authserv_id`` (forgeries of ours)."""
    want = authserv_id.lower()

    def drop(f: bytes) -> bool:
        if field_name(f) != "authentication-results":
            return False
        value = f.partition(b":")[2].decode("utf-8", "replace")
        # Comments may precede the id: "Authentication-Results: (x) mx.example.org; ..."
        value = re.sub(r"\([^)]*\)", " ", value)
        ident = value.split(";", 1)[0].split()
        return bool(ident) and ident[0].lower() == want

    return drop


@implementer(IMessageSink)
class CheckingSink:
    """Runs the checker on mail from the world, acts on the verdict, passes it on.
    Its result (the text the SMTP front end logs) is the inner sink's followed by
    ``(mailauth: <summary>)``; a refusal's detail ends the same way."""

    def __init__(self, inner: IMessageSink, checker: IMessageChecker, exempt: SignPolicy,
                 run: Callable[..., defer.Deferred], authserv_id: str) -> None:
        self.inner = inner
        self.checker = checker
        self.exempt = exempt
        self.run = run
        self.drop = _claims(authserv_id)

    def accept(self, envelope: Envelope, body: BodyFile) -> defer.Deferred:
        if self.exempt.is_ours(envelope):
            return self.inner.accept(envelope, body)
        verdict = self.checker.check_now(envelope, body)
        if verdict is not None and body.data is not None:
            # Everything was known: judged and passed on here, without a coroutine.
            try:
                envelope = self._judged(envelope, body, verdict)
                new_body = rewrite_head(body, self.drop, verdict.header)
            except (PermanentFailure, TemporaryFailure):
                return defer.fail()
            return self._noted(self.inner.accept(envelope, new_body), envelope, verdict)
        return defer.ensureDeferred(self._accept(envelope, body))

    async def _accept(self, envelope: Envelope, body: BodyFile) -> Any:
        verdict = await self.checker.check(envelope, body)
        envelope = self._judged(envelope, body, verdict)
        try:
            if body.data is not None:  # in memory: cheap, no thread trip
                new_body = rewrite_head(body, self.drop, verdict.header)
            else:
                new_body = await self.run(rewrite_head, body, self.drop, verdict.header)
        except OSError as e:
            discard_body(body)
            raise TemporaryFailure(f"adding Authentication-Results failed: {e}") from None
        return await self._noted(self.inner.accept(envelope, new_body), envelope, verdict)

    @staticmethod
    def _judged(envelope: Envelope, body: BodyFile, verdict: Verdict) -> Envelope:
        """Raises the verdict's refusal (the body discarded; its detail, which the
        front end logs, ends with the summary), else gives the envelope to pass on (to
        the Junk folder for "junk")."""
        if verdict.action == "reject":
            discard_body(body)
            raise PermanentFailure(f"{verdict.text} (mailauth: {verdict.summary})", verdict.status, verdict.text)
        if verdict.action == "tempfail":
            discard_body(body)
            raise TemporaryFailure(f"{verdict.text} (mailauth: {verdict.summary})", verdict.status, verdict.text)
        if verdict.action == "junk":
            return replace(envelope, folder=JUNK)
        return envelope

    @staticmethod
    def _noted(d: defer.Deferred, envelope: Envelope, verdict: Verdict) -> defer.Deferred:
        """The summary goes into the front end's line about the message, at the end of
        the result text ("delivered (mailauth: spf=pass ... -> accept)"), not into a
        line of its own: a log event took 40-65 us per message here (Twisted's text
        observer: the time, the system and the format, then the write), a quarter of
        the whole check.  When the message is not taken after all, the summary gets its
        own line."""
        def noted(result: Any) -> str:
            return f"{result} (mailauth: {verdict.summary})"

        def failed(f: failure.Failure) -> failure.Failure:
            log.info("mailauth: {qid}: {summary}", qid=envelope.queue_id, summary=verdict.summary)
            return f

        return d.addCallbacks(noted, failed)


@implementer(IDeliveryFilter)
class EnvelopeFolderFilter:
    """Delivery filter: a copy goes to ``envelope.folder`` (the Junk folder chosen by
    the checks) unless a filter before it chose another folder."""

    name = "junk"

    def filter_copy(self, envelope: Envelope, body: BodyFile, copy: Any) -> None:
        folder = getattr(envelope, "folder", "")
        if folder and copy.folder == "INBOX":
            copy.folder = folder
