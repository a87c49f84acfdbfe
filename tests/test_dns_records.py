"""``mailsuite dns-records`` and ``mailsuite dns-check``: the records a domain
publishes, printed as zone-file lines, then looked up in a real twisted.names server
(tests/support/dns_server.py) and compared."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from mailsuite import config as config_mod
from mailsuite.mailauth.records import Record, records_for
from tests.support.relay import DNS
from tests.support.server import make_server

MAILSUITE = str(Path(sys.executable).with_name("mailsuite"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MAILSUITE, *args], capture_output=True, text=True, timeout=60)


def zone_of(records: list[Record]) -> dict[str, Any]:
    zone: dict[str, Any] = {}
    for r in records:
        entry = zone.setdefault(r.name, {})
        if r.rtype == "MX":
            pref, host = r.value.split()
            entry.setdefault("MX", []).append([int(pref), host])
        elif r.rtype == "SRV":
            prio, weight, port, target = r.value.split()
            entry.setdefault("SRV", []).append([int(prio), int(weight), int(port), "" if target == "." else target])
        else:
            entry.setdefault(r.rtype, []).append(r.value)
    return zone


def test_records_then_check(tmp_path: Path) -> None:
    dns = DNS(tmp_path / "dns", {})
    try:
        srv = make_server(tmp_path / "srv", dns={"nameservers": [dns.server], "timeout": 1.0},
                          http={"mta_sts": {"mode": "enforce"}})
        srv.write_config()
        cfgarg = ("--config", str(srv.config_path))
        assert run("dkim", "keygen", *cfgarg, "example.test").returncode == 0
        out = run("dns-records", *cfgarg, "example.test")
        assert out.returncode == 0, out.stderr
        lines = [l for l in out.stdout.splitlines() if l and not l.startswith(";")]
        text = "\n".join(lines)
        assert "example.test. 3600 IN MX 10 mail.example.test." in text
        assert 'example.test. 3600 IN TXT "v=spf1 mx -all"' in text
        assert 'mail._domainkey.example.test. 3600 IN TXT ( "v=DKIM1; k=rsa; p=' in text
        assert '_dmarc.example.test. 3600 IN TXT "v=DMARC1; p=quarantine' in text
        assert '_smtp._tls.example.test. 3600 IN TXT "v=TLSRPTv1; rua=mailto:' in text
        assert '_mta-sts.example.test. 3600 IN TXT "v=STSv1; id=' in text
        assert "mta-sts.example.test. 3600 IN CNAME mail.example.test." in text
        sub = srv.ports["submission"]
        assert f"_submission._tcp.example.test. 3600 IN SRV 0 1 {sub} mail.example.test." in text
        assert f"_imaps._tcp.example.test. 3600 IN SRV 0 1 {srv.ports['imaps']} mail.example.test." in text
        assert "_pop3s._tcp.example.test." in text
        assert "autoconfig.example.test. 3600 IN CNAME mail.example.test." in text

        cfg = config_mod.load(srv.config_path)
        records = records_for(cfg, "example.test")
        # Nothing published yet: every record is missing.
        out = run("dns-check", *cfgarg, "example.test")
        assert out.returncode == 1 and out.stdout.count("\nmissing ") + out.stdout.startswith("missing ") == len(records)
        # All published: all ok.
        dns.set(zone_of(records))
        out = run("dns-check", *cfgarg, "example.test")
        assert out.returncode == 0 and "all records published" in out.stdout, out.stdout
        # A stale SPF and no DMARC (a new resolver each run: no cache in between).
        zone = zone_of(records)
        zone["example.test"]["TXT"] = ["v=spf1 a -all", "google-site-verification=xyz"]
        del zone["_dmarc.example.test"]
        dns.set(zone)
        out = run("dns-check", *cfgarg, "example.test")
        assert out.returncode == 1
        assert "differs  TXT   example.test" in out.stdout and "found: v=spf1 a -all" in out.stdout
        assert "missing  TXT   _dmarc.example.test" in out.stdout
        assert "2 record(s) missing or different" in out.stdout
    finally:
        dns.stop()
