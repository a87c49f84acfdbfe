"""``mailsuite dkim keygen`` and the DNS record tools (``dns-records``, ``dns-check``;
the records come from mailsuite.mailauth.records, which the web admin page uses too)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from mailsuite.mailauth import dkim_keys


def _config(args: argparse.Namespace) -> Any:
    return args.load_config(args)


def cmd_dkim_keygen(args: argparse.Namespace) -> int:
    cfg = _config(args)
    domain = args.domain.lower().rstrip(".")
    selector = args.selector or cfg.dkim.selectors.get(domain, cfg.dkim.selector)
    if domain not in cfg.server.domains:
        print(f"warning: {domain} is not in server.domains; its mail is not signed", file=sys.stderr)
    try:
        key = dkim_keys.generate(cfg.server.data_dir, domain, selector, args.algorithm)
    except dkim_keys.DKIMKeyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {dkim_keys.key_path(cfg.server.data_dir, domain, selector)}")
    print("publish:")
    print(f'{selector}._domainkey.{domain}. 3600 IN TXT {zone_txt(key.txt_record())}')
    return 0


def zone_txt(value: str) -> str:
    """A TXT value in zone-file syntax: quoted strings of at most 255 bytes."""
    parts = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    quoted = ['"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts]
    return quoted[0] if len(quoted) == 1 else "( " + " ".join(quoted) + " )"


def cmd_dns_records(args: argparse.Namespace) -> int:
    from mailsuite.mailauth.records import records_for

    cfg = _config(args)
    domain = args.domain.lower().rstrip(".")
    if domain not in cfg.server.domains:
        print(f"warning: {domain} is not in server.domains", file=sys.stderr)
    print(f"; DNS records for {domain} (mailsuite dns-records)")
    for rec in records_for(cfg, domain):
        print(f"; {rec.purpose}")
        print(rec.zone_line())
    return 0


def cmd_dns_check(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from mailsuite.dns.resolver import from_config
    from mailsuite.mailauth.records import check, records_for

    cfg = _config(args)
    domain = args.domain.lower().rstrip(".")
    resolver = from_config(cfg.dns, reactor)
    bad = 0
    for r in check(resolver, records_for(cfg, domain)):
        line = f"{r.status:8} {r.record.rtype:5} {r.record.name}"
        if r.status != "ok":
            bad += 1
            line += f"\n         want: {r.record.value}"
            for f in r.found:
                line += f"\n         found: {f}"
        print(line)
    print(f"{bad} record(s) missing or different" if bad else "all records published")
    return 1 if bad else 0


def add_commands(sub: argparse._SubParsersAction, add_config_arg: Callable[[Any], None]) -> None:
    """``add_config_arg(parser)`` (from mailsuite.cli) adds ``--config`` and sets
    ``args.load_config`` (and ``args.check_files``): this package never imports mailsuite.cli."""
    dk = sub.add_parser("dkim", help="DKIM signing keys", description="Manage DKIM signing keys.")
    dsub = dk.add_subparsers(dest="dkim_command", metavar="ACTION", required=True)
    p = dsub.add_parser("keygen", help="make a signing key and print its DNS record",
                        description="Make <data_dir>/dkim/DOMAIN/SELECTOR.key (mode 0600) and print the TXT "
                                    "record to publish.  An existing key is never overwritten: rotate by "
                                    "making a key with a new selector, publishing it, then naming it in [dkim].")
    p.add_argument("domain", help="the signing domain, e.g. example.org")
    p.add_argument("--selector", help="selector (default: [dkim] selector, or the domain's entry in selectors)")
    p.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa", help="rsa (2048 bits, default) or ed25519")
    add_config_arg(p)
    p.set_defaults(func=cmd_dkim_keygen)

    p = sub.add_parser("dns-records", help="print the DNS records a domain should publish (zone-file lines)",
                       description="Print, in zone-file syntax, every record to publish for DOMAIN: MX, SPF, "
                                   "DKIM (each key on disk), DMARC, TLS-RPT, MTA-STS, RFC 6186 SRV records "
                                   "and the autoconfig CNAMEs.")
    p.add_argument("domain")
    add_config_arg(p)
    p.set_defaults(func=cmd_dns_records)
    p = sub.add_parser("dns-check", help="look up a domain's records and say which are missing or differ",
                       description="Look up every record dns-records prints (through [dns]) and say which "
                                   "are missing or differ.  Exit status 1 if any is.")
    p.add_argument("domain")
    add_config_arg(p)
    p.set_defaults(func=cmd_dns_check)
