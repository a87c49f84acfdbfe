"""The DNS records a local domain publishes, and how the published ones compare.

:func:`records_for` returns structured records (one source for ``mailsuite
dns-records``, ``mailsuite dns-check`` and the web admin's DNS page):

* MX → our public host name; SPF ``v=spf1 mx -all``;
* DKIM: every key on disk (``<data_dir>/dkim/<domain>/*.key``), so a new selector can
  be published before it signs;
* DMARC ``p=quarantine`` with aggregate reports to the postmaster; TLS-RPT (RFC 8460);
* MTA-STS (RFC 8461): ``_mta-sts`` TXT with the served policy's id, and the
  ``mta-sts.<domain>`` host (when ``[http.mta_sts] mode`` is not "none");
* RFC 6186 SRV for _submission, _submissions, _imap, _imaps, _pop3s (``0 0 0 .``
  for a service not offered, as 6186 says), from the configured listeners;
* ``autoconfig`` / ``autodiscover`` CNAMEs for the client autoconfiguration.

:func:`check` looks each record up through the suite resolver and says ``ok``,
``missing``, ``differs`` (with what was found) or ``unknown`` (DNS error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailsuite.dns.resolver import DNSError, NotFound
from mailsuite.mailauth import dkim_keys


@dataclass(frozen=True)
class Record:
    name: str  # fully qualified, no final dot
    rtype: str  # MX TXT SRV CNAME
    value: str  # presentation form without quotes (TXT) or "10 mx.example.org" (MX)
    purpose: str  # what it is for, one line
    ttl: int = 3600

    def zone_line(self) -> str:
        if self.rtype == "TXT":
            data = _quoted(self.value)
        elif self.rtype in ("MX", "SRV", "CNAME"):
            data = self.value if self.value.endswith(".") or self.value == "." else self.value + "."
        else:
            data = self.value
        return f"{self.name}. {self.ttl} IN {self.rtype} {data}"


def _quoted(value: str) -> str:
    parts = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    q = ['"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts]
    return q[0] if len(q) == 1 else "( " + " ".join(q) + " )"


def _port(listeners: tuple[str, ...]) -> int | None:
    from mailsuite.published import endpoint_port

    for desc in listeners:
        p = endpoint_port(desc)
        if p is not None:
            return p
    return None


def records_for(cfg: Any, domain: str) -> list[Record]:
    from mailsuite.published import public_hostname

    domain = domain.lower().rstrip(".")
    host = public_hostname(cfg).rstrip(".")
    postmaster = cfg.server.postmaster or f"postmaster@{domain}"
    out = [
        Record(domain, "MX", f"10 {host}", "mail for the domain goes to this server"),
        Record(domain, "TXT", "v=spf1 mx -all", "SPF: only the MX hosts send for the domain"),
    ]
    for key in dkim_keys.keys_on_disk(cfg.server.data_dir, domain):
        out.append(Record(f"{key.selector}._domainkey.{domain}", "TXT", key.txt_record(),
                          f"DKIM public key, selector {key.selector} ({key.algorithm})"))
    out.append(Record(f"_dmarc.{domain}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:{postmaster}",
                      "DMARC: unauthenticated mail claiming the domain goes to spam"))
    out.append(Record(f"_smtp._tls.{domain}", "TXT", f"v=TLSRPTv1; rua=mailto:{postmaster}",
                      "TLS-RPT: where senders report TLS problems (RFC 8460)"))
    if cfg.http.mta_sts.mode != "none":
        from mailsuite.published import policy_id

        out.append(Record(f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={policy_id(cfg)}",
                          "MTA-STS: a policy is published; the id changes with it"))
        out.append(Record(f"mta-sts.{domain}", "CNAME", host, "MTA-STS: the host serving the policy over HTTPS"))
    for service, section, key in (("_submission", "submission", "listen"), ("_submissions", "submission", "listen_tls"),
                                  ("_imap", "imap", "listen"), ("_imaps", "imap", "listen_tls"),
                                  ("_pop3s", "pop3", "listen_tls")):
        port = _port(getattr(getattr(cfg, section), key))
        value = f"0 1 {port} {host}" if port else "0 0 0 ."
        out.append(Record(f"{service}._tcp.{domain}", "SRV", value, f"RFC 6186: {service[1:]} for mail clients"))
    out.append(Record(f"autoconfig.{domain}", "CNAME", host, "Thunderbird autoconfiguration"))
    out.append(Record(f"autodiscover.{domain}", "CNAME", host, "Outlook autodiscover"))
    return out


@dataclass(frozen=True)
class CheckResult:
    record: Record
    status: str  # ok missing differs unknown
    found: tuple[str, ...] = ()


def _txt_kind(value: str) -> str:
    v = value.replace(" ", "").lower()
    for prefix in ("v=spf1", "v=dmarc1", "v=dkim1", "v=stsv1", "v=tlsrptv1"):
        if v.startswith(prefix):
            return prefix
    return v[:8]


def _norm(rtype: str, value: str) -> str:
    v = " ".join(value.lower().split()).rstrip(".")
    if rtype == "TXT":
        v = v.replace("; ", ";").rstrip(";")
    return v


def check(resolver: Any, records: list[Record]) -> list[CheckResult]:
    """Look every record up (blocking: for the CLI, or a worker thread)."""
    out = []
    for rec in records:
        try:
            found = _lookup(resolver, rec)
        except NotFound:
            found = []
        except DNSError as e:
            out.append(CheckResult(rec, "unknown", (e.reason,)))
            continue
        if rec.rtype == "TXT":
            found = [f for f in found if _txt_kind(f) == _txt_kind(rec.value)]
        if not found:
            out.append(CheckResult(rec, "missing"))
        elif _norm(rec.rtype, rec.value) in {_norm(rec.rtype, f) for f in found}:
            out.append(CheckResult(rec, "ok", tuple(found)))
        else:
            out.append(CheckResult(rec, "differs", tuple(found)))
    return out


def _lookup(resolver: Any, rec: Record) -> list[str]:
    values = resolver.lookup_sync(rec.name, rec.rtype)
    if rec.rtype == "TXT":
        return [v.decode("utf-8", "replace") for v in values]
    if rec.rtype == "MX":
        return [f"{m.preference} {m.exchange}" for m in values]
    return [str(v) for v in values]
