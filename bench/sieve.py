#!/usr/bin/env python3
"""Sieve at delivery: SMTP inbound with a 20-rule script active for the recipient,
against the same server with no script.

    bench/sieve.py [--count 2000] [--size-kb 4] [--concurrency 20] [--rounds 2]
                   [--client auto|smtp-source|python] [--script FILE] [--control]

Starts one throw-away mailsuite (bench/smtp_inbound.py's own_server), then alternates
rounds without and with ``sieve/active`` for alice@example.test (so both see the same
disk and machine load), and prints the best rate of each, the ratio, and the server
CPU per message.  The script is a typical office rule set: list, newsletter, invoice
and boss rules, address and envelope tests, size and exists, with variables, one
relational test and a final vacation-free keep; none of its rules match the benchmark
message, so every rule is evaluated and the message ends in INBOX (where the count
check looks).  Exit status 1 if a message was refused or the count is wrong.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import count_maildir, cpu_seconds, empty_maildir  # noqa: E402
from smtp_inbound import RCPT, own_server, run_python, run_smtp_source  # noqa: E402

RULES = r'''require ["fileinto", "envelope", "variables", "relational", "comparator-i;ascii-numeric",
         "imap4flags", "subaddress", "mailbox"];
# 20 rules, none of which matches the benchmark's message.
if header :contains "list-id" "<announce.lists.example.org>" { fileinto :create "Lists.announce"; stop; }
if header :matches "list-id" "*<*.lists.example.net>*" { fileinto :create "Lists.${2}"; stop; }
if exists "list-unsubscribe" { fileinto :create "Newsletters"; stop; }
if header :is "precedence" ["bulk", "junk"] { fileinto "Junk"; stop; }
if address :domain :is "from" ["spam.example", "offers.example", "deals.example"] { fileinto "Junk"; stop; }
if header :contains "subject" ["[SPAM]", "***SPAM***", "viagra"] { fileinto "Junk"; stop; }
if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "5" { fileinto "Junk"; stop; }
if address :is "from" "boss@example.test" { addflag "\\Flagged"; keep; stop; }
if header :contains "subject" "invoice" { fileinto :create "Finance.Invoices"; stop; }
if header :contains "subject" ["receipt", "order confirmation"] { fileinto :create "Finance.Receipts"; stop; }
if address :domain :is "from" "github.com" { fileinto :create "Dev.GitHub"; stop; }
if header :matches "subject" "Re: [PR #*]*" { fileinto :create "Dev.Reviews"; stop; }
if envelope :detail "to" "shop" { fileinto :create "Shopping"; stop; }
if envelope :domain :is "from" "calendar.example.org" { fileinto :create "Calendar"; stop; }
if size :over 20M { fileinto :create "Large"; stop; }
if header :contains ["to", "cc"] "all-staff@example.test" { fileinto :create "Staff"; stop; }
if allof (header :contains "from" "hr@", header :contains "subject" "payslip") { fileinto :create "HR"; stop; }
if anyof (header :contains "x-mailer" "MassMailer", header :contains "user-agent" "BulkSend") { discard; stop; }
if header :matches "subject" "*out of office*" { fileinto :create "Auto"; stop; }
if not exists ["from", "date"] { fileinto "Junk"; stop; }
keep;
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--size-kb", type=float, default=4)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of each kind, alternating")
    ap.add_argument("--client", choices=("auto", "smtp-source", "python"), default="auto")
    ap.add_argument("--processes", type=int, default=1, help="[server] processes")
    ap.add_argument("--script", type=Path, help="another script instead of the 20 rules")
    ap.add_argument("--control", action="store_true",
                    help="A/A run: the script is stored but never activated (shows the noise)")
    a = ap.parse_args()
    script = a.script.read_text() if a.script else RULES
    client = a.client
    if client == "auto":
        client = "smtp-source" if shutil.which("smtp-source") else "python"
    send = run_smtp_source if client == "smtp-source" else run_python
    own = own_server(None, a.processes).start()
    maildir = own.maildir(RCPT)
    port = own.ports["smtp"]
    sieve_dir = maildir / "sieve"
    size = int(a.size_kb * 1024)
    rates: dict[str, list[float]] = {"without": [], "with": []}
    cpus: dict[str, list[float]] = {"without": [], "with": []}
    rc = 0
    try:
        print(f"mailsuite SMTP inbound with and without a 20-rule Sieve script: {a.count} x {a.size_kb:g} KB, "
              f"C={a.concurrency}, client {client}, {a.rounds} round(s) each")
        # Warm-up (not counted): first connections, imports, the page cache.
        send("127.0.0.1", port, 200, size, 1, False)
        for r in range(a.rounds):
            # Alternate which kind goes first: the disk's state after a round (2000
            # files just unlinked) must not favour one kind.
            for kind in (("without", "with") if r % 2 == 0 else ("with", "without")):
                if kind == "with":
                    sieve_dir.mkdir(parents=True, exist_ok=True)
                    (sieve_dir / "rules.sieve").write_text(script)
                    if not (sieve_dir / "active").is_symlink() and not a.control:
                        os.symlink("rules.sieve", sieve_dir / "active")
                elif (sieve_dir / "active").is_symlink():
                    (sieve_dir / "active").unlink()
                empty_maildir(maildir)
                os.sync()
                cpu0 = cpu_seconds(own.proc.pid)
                dt, failed = send("127.0.0.1", port, a.count, size, a.concurrency, False)
                cpu = (cpu_seconds(own.proc.pid) - cpu0) * 1000 / a.count
                got = count_maildir(maildir)
                ok = got == a.count and not failed
                rc |= 0 if ok else 1
                rates[kind].append(a.count / dt)
                cpus[kind].append(cpu)
                print(f"  {kind:<7} script: {a.count / dt:8.1f} messages/s  ({dt:.2f} s)  INBOX {got}/{a.count}"
                      f"  server CPU {cpu:.2f} ms/msg{'' if ok else '  FAILED'}")
        log = (own.root / "twistd.log").read_text(errors="replace")
        if "sieve:" in log and "error" in log.split("sieve:", 1)[1][:200]:
            print("  the script reported an error; see the server log")
            rc = 1
    finally:
        own.stop()
    best_without, best_with = max(rates["without"]), max(rates["with"])
    med_without, med_with = statistics.median(rates["without"]), statistics.median(rates["with"])
    print(f"without script: {best_without:.1f} messages/s best, {med_without:.1f} median, "
          f"{statistics.median(cpus['without']):.2f} ms server CPU/msg")
    print(f"with script:    {best_with:.1f} messages/s best, {med_with:.1f} median, "
          f"{statistics.median(cpus['with']):.2f} ms server CPU/msg")
    print(f"ratio with/without: {best_with / best_without:.2f}x best, {med_with / med_without:.2f}x median "
          "(target >= 0.90x)")
    # On a loaded machine the rates swing more than the script costs; CPU per message
    # does not: its ratio is the rate a CPU-bound server keeps.
    cpu_without, cpu_with = statistics.median(cpus["without"]), statistics.median(cpus["with"])
    print(f"CPU per message without/with: {cpu_without / cpu_with:.2f}x "
          f"(+{(cpu_with - cpu_without) * 1000:.0f} us per message for the script)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
