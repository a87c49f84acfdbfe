"""TLS-RPT (RFC 8460): daily aggregate reports of our outbound TLS results.

The relay tells :meth:`TLSReports.record` the outcome of every session it opened (or
failed to open) under an MTA-STS or DANE policy: the policy domain, the policy, the
MX host, and success or the RFC 8460 result type of the failure.  Counts are kept per
UTC day and policy domain, in memory and in ``<queue_dir>/tls-rpt.json`` (written
atomically in the worker pool, at most every ``SAVE_EVERY`` seconds and at stop), so
a restart loses nothing of the day.

Once a day is over, :meth:`send_due` looks up ``_smtp._tls.<domain>`` TXT
(``v=TLSRPTv1; rua=mailto:...``) for each domain of that day and mails the report
(RFC 8460 4 JSON, gzipped, in a ``multipart/report; report-type="tlsrpt"`` message,
5.3) to each ``mailto:`` address through the queue (``https:`` rua are not posted:
logged).  Domains without a TLSRPT record get nothing.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import time
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from mailsuite import fsutil
from mailsuite.handoff import BodyFile, Envelope, new_queue_id

log = Logger(namespace="mailsuite.relay")

SAVE_EVERY = 60.0


def _day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def result_type(reason: str) -> str:
    """The RFC 8460 4.3 result type for a failure text of the relay."""
    r = reason.lower()
    if "not offered" in r or "refused to start tls" in r:
        return "starttls-not-supported"
    if "tlsa lookup" in r:
        return "tlsa-invalid"
    if "dane verification failed" in r:
        return "validation-failure"
    if "expired" in r:
        return "certificate-expired"
    if "names none of its mx hosts" in r:
        return "validation-failure"
    if "handshake" in r or "certificate" in r:
        return "certificate-not-trusted"
    return "validation-failure"


def parse_rua(records: list[bytes]) -> list[str]:
    """The rua URIs of the one ``v=TLSRPTv1`` record, or []."""
    found = [r.decode("ascii", "replace") for r in records if r.startswith(b"v=TLSRPTv1")]
    if len(found) != 1:
        return []
    for part in found[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() == "rua":
            return [u.strip() for u in value.split(",") if u.strip()]
    return []


class TLSReports:
    def __init__(self, path: Path, hostname: str, sender: str, resolver: Any, workers: Any, sink: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.workers = workers  # mailsuite.workers.IWorkers: where the file is saved
        self.hostname = hostname
        self.sender = sender  # envelope sender and From: of the reports
        self.resolver = resolver
        self.sink = sink  # an IMessageSink (the queue); set after the queue is built
        self.clock = clock
        # day -> domain -> {"policy": {...}, "ok": n, "failures": {key: detail}}
        self.days: dict[str, dict[str, dict[str, Any]]] = {}
        self._dirty = False
        self._last_save = 0.0

    # -- counting ---------------------------------------------------------------------

    def load(self) -> None:
        try:
            self.days = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            self.days = {}
        except (ValueError, OSError) as e:
            log.warn("relay: TLS-RPT data {path} unreadable ({why}); starting empty", path=str(self.path), why=str(e))
            self.days = {}

    def record(self, domain: str, policy_type: str, policy_strings: list[str], mx: str, ip: str,
               ok: bool, reason: str = "") -> None:
        day = self.days.setdefault(_day(self.clock()), {})
        entry = day.setdefault(domain, {"policy": {"policy-type": policy_type, "policy-string": policy_strings,
                                                   "policy-domain": domain, "mx-host": []},
                                        "ok": 0, "failures": {}})
        if mx and mx not in entry["policy"]["mx-host"]:
            entry["policy"]["mx-host"].append(mx)
        if ok:
            entry["ok"] += 1
        else:
            rtype = result_type(reason)
            key = f"{rtype}|{mx}|{ip}"
            detail = entry["failures"].setdefault(key, {
                "result-type": rtype, "receiving-mx-hostname": mx, "receiving-ip": ip,
                "failed-session-count": 0, "failure-reason-code": reason[:200]})
            detail["failed-session-count"] += 1
        self._dirty = True
        self.save_soon()

    def save_soon(self, force: bool = False) -> defer.Deferred:
        now = self.clock()
        if not self._dirty or (not force and now - self._last_save < SAVE_EVERY):
            return defer.succeed(None)
        self._dirty, self._last_save = False, now
        return self.workers.run(self._save_sync, json.dumps(self.days, sort_keys=True))

    def _save_sync(self, text: str) -> None:
        fsutil.atomic_write(self.path, text.encode())

    # -- reports ----------------------------------------------------------------------

    def report(self, day: str, domain: str) -> dict[str, Any]:
        """The RFC 8460 4.4 report of ``domain`` for ``day``."""
        entry = self.days[day][domain]
        return {
            "organization-name": self.hostname,
            "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
            "contact-info": self.sender,
            "report-id": f"{day}_{domain}@{self.hostname}",
            "policies": [{
                "policy": entry["policy"],
                "summary": {"total-successful-session-count": entry["ok"],
                            "total-failure-session-count": sum(f["failed-session-count"]
                                                               for f in entry["failures"].values())},
                "failure-details": list(entry["failures"].values()),
            }],
        }

    def message(self, day: str, domain: str, rua: str) -> bytes:
        """The report mail (RFC 8460 5.3), LF line ends."""
        rep = self.report(day, domain)
        data = gzip.compress(json.dumps(rep, indent=1).encode())
        boundary = f"tlsrpt.{os.urandom(6).hex()}"
        name = f"{self.hostname}!{domain}!{day}T00:00:00Z!{day}T23:59:59Z!{rep['report-id']}.json.gz"
        lines = [
            f"From: TLS reports <{self.sender}>",
            f"To: <{rua}>",
            f"Subject: Report Domain: {domain} Submitter: {self.hostname} Report-ID: <{rep['report-id']}>",
            f"Date: {formatdate(usegmt=True)}",
            f"Message-ID: {make_msgid(domain=self.hostname)}",
            f"TLS-Report-Domain: {domain}",
            f"TLS-Report-Submitter: {self.hostname}",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/report; report-type="tlsrpt";\n\tboundary="{boundary}"',
            "",
            f"--{boundary}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            f"This is an aggregate TLS report from {self.hostname} for {domain} on {day} (RFC 8460).",
            "",
            f"--{boundary}",
            "Content-Type: application/tlsrpt+gzip",
            "Content-Transfer-Encoding: base64",
            f'Content-Disposition: attachment; filename="{name}"',
            "",
        ]
        b64 = base64.encodebytes(data).decode().rstrip("\n")
        return ("\n".join(lines) + "\n" + b64 + f"\n\n--{boundary}--\n").encode()

    async def send_due(self, include_today: bool = False) -> int:
        """Mail the reports of every finished day (and today's, when asked: ``mailsuite
        queue tls-reports``); returns how many were queued."""
        today = _day(self.clock())
        sent = 0
        for day in sorted(d for d in self.days if d < today or (include_today and d == today)):
            for domain in list(self.days[day]):
                try:
                    ruas = parse_rua(await self.resolver.txt(f"_smtp._tls.{domain}"))
                except Exception as e:  # noqa: BLE001 - NotFound: no reports wanted; temporary: next round
                    from mailsuite.dns.resolver import NotFound

                    if not isinstance(e, NotFound):
                        log.info("relay: TLS-RPT record of {domain}: {why}; trying later", domain=domain, why=str(e))
                        continue
                    ruas = []
                for rua in ruas:
                    if not rua.startswith("mailto:"):
                        log.info("relay: TLS-RPT for {domain}: rua {rua} is not mailto:, not sent", domain=domain, rua=rua)
                        continue
                    address = rua[len("mailto:"):].split("?")[0]
                    if await self._queue(day, domain, address):
                        sent += 1
                del self.days[day][domain]
            if not self.days[day]:
                del self.days[day]
            self._dirty = True
        await self.save_soon(force=True)
        return sent

    async def _queue(self, day: str, domain: str, address: str) -> bool:
        if self.sink is None:
            return False
        data = self.message(day, domain, address)
        qid = new_queue_id()
        env = Envelope(queue_id=qid, sender=self.sender, recipients=(address,), forwards=(address,),
                       helo=self.hostname)
        body = BodyFile(str(self.path.parent / "incoming" / qid), len(data), data.count(b"\n"), data)
        try:
            await self.sink.accept(env, body)
        except Exception as e:  # noqa: BLE001 - the next round tries again? no: the data is per day; log it
            log.warn("relay: TLS-RPT report for {domain} to {to} not queued: {why}", domain=domain, to=address, why=str(e))
            return False
        log.info("relay: TLS-RPT report for {domain} ({day}) queued to <{to}> as {qid}", domain=domain, day=day,
                 to=address, qid=qid)
        return True
