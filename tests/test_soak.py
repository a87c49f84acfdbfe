"""Soak: SMTP in (local and relayed), relay out to Postfix's smtp-sink, IMAP sessions
with IDLE, flags and expunges, POP3 retrieve-and-delete, all at once against one
server with two worker processes.  Two minutes in CI (SOAK_SECONDS to change;
``scripts/soak --minutes 30`` for the long run): no client error, nothing CRITICAL
and no traceback in the log, and resident memory flat after warm-up (under 5%)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.support.relay import Sink
from tests.support.server import make_server
from tests.support.soak import soak
from tests.support.waiting import wait_for

SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
USERS = {f"s{i}@example.test": f"s{i}-pw" for i in range(6)}


def test_mixed_load_leaves_no_error_and_flat_memory(tmp_path: Path) -> None:
    sink = Sink()
    srv = make_server(tmp_path / "srv", users=USERS, server={"processes": 2},
                      relay={"transport": {"partner.test": f"127.0.0.1:{sink.port}"}, "tls_policy": "none"},
                      imap={"idle_check_interval": 5.0})
    srv.start()
    try:
        wait_for(lambda: len(set(re.findall(r"worker (\d+) serving", srv.log()))) == 2, timeout=60,
                 what="workers serving", server=srv)
        report = soak(srv, USERS, "someone@partner.test", SECONDS)
        print(report.summary())
        (tmp_path / "soak.txt").write_text(report.summary() + "\n")
        report_file = os.environ.get("SOAK_REPORT")
        if report_file:
            Path(report_file).write_text(report.summary() + "\n" + "\n".join(report.examples) + "\n")
        assert not report.errors, (report.summary(), report.examples)
        assert min(report.ops[k] for k in ("smtp", "imap", "pop3")) > 0, report.summary()
        log = srv.log()
        assert "Traceback" not in log and "CRITICAL" not in log, [l for l in log.splitlines() if "CRITICAL" in l][:5]
        assert report.growth_after_warmup < 0.05, report.summary()
        wait_for(lambda: sink.count() > 0, timeout=30, what="relayed copies at the sink")
    finally:
        srv.stop()
        sink.stop()
