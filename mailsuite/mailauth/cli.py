"""``mailsuite dkim keygen`` and the DNS record tools (``dns-records``, ``dns-check``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mailsuite.mailauth import dkim_keys


def _config(args: argparse.Namespace) -> Any:
    from mailsuite.cli import load_config

    return load_config(args)


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


def add_commands(sub: argparse._SubParsersAction) -> None:
    from mailsuite.cli import _add_config_arg

    dk = sub.add_parser("dkim", help="DKIM signing keys", description="Manage DKIM signing keys.")
    dsub = dk.add_subparsers(dest="dkim_command", metavar="ACTION", required=True)
    p = dsub.add_parser("keygen", help="make a signing key and print its DNS record",
                        description="Make <data_dir>/dkim/DOMAIN/SELECTOR.key (mode 0600) and print the TXT "
                                    "record to publish.  An existing key is never overwritten: rotate by "
                                    "making a key with a new selector, publishing it, then naming it in [dkim].")
    p.add_argument("domain", help="the signing domain, e.g. example.org")
    p.add_argument("--selector", help="selector (default: [dkim] selector, or the domain's entry in selectors)")
    p.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa", help="rsa (2048 bits, default) or ed25519")
    _add_config_arg(p)
    p.set_defaults(func=cmd_dkim_keygen)
