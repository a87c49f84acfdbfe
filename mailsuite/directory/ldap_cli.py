"""``mailsuite ldap test LOGIN`` and ``mailsuite ldap lookup ADDRESS``: what the LDAP
directory returns for a login or an address, to debug a ``[directory.ldap]`` setup.

They use the same client code as the server, with the same filters, and print DNs,
addresses, quota and group checks, never a password: the service account's password
stays in its file and the user's is read from a prompt or ``--password-stdin``.
Exit status: 0 found/accepted, 1 unknown/refused, 2 bad config, 3 directory unavailable.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any, Callable


EXIT_REFUSED, EXIT_CONFIG, EXIT_UNAVAILABLE = 1, 2, 3


def _load(args: argparse.Namespace) -> Any:
    cfg = args.load_config(args)
    lc = cfg.directory.ldap
    problems = args.check_files(cfg) if cfg.directory.backend == "ldap" else []
    if not lc.servers or not lc.base_dn:
        problems.append("directory.ldap: set servers and base_dn first")
    if problems:
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    if cfg.directory.backend != "ldap":
        print('note: directory.backend is not "ldap"; the server does not use these settings yet', file=sys.stderr)
    return cfg


def _client(cfg: Any) -> Any:
    from mailsuite.directory.ldap import make_client

    try:
        return make_client(cfg, warn=lambda msg: print(f"warning: {msg}", file=sys.stderr))
    except OSError as e:
        print(f"error: directory.ldap.bind_password_file: {e.strerror}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _describe(cfg: Any) -> None:
    lc = cfg.directory.ldap
    tls = "StartTLS" if lc.start_tls else "as in the URL"
    print(f"servers:      {', '.join(lc.servers)} ({lc.server_strategy}; TLS {tls}; "
          f"certificates {'verified' if lc.verify_certificates else 'NOT verified'})")
    print(f"search as:    {lc.bind_dn or '(anonymous)'}")
    print(f"base:         {lc.base_dn}")


def _entry_lines(entry: Any, client: Any, login: str = "") -> list[str]:
    lines = [f"  dn:         {entry.dn}"]
    if entry.is_group:
        lines.append(f"  group with {len(entry.members)} member(s)")
    else:
        lines.append(f"  mailbox:    {entry.primary or '(none: no usable address)'}")
    if entry.addresses:
        lines.append(f"  addresses:  {', '.join(entry.addresses)}")
    if entry.quota is not None:
        lines.append(f"  quota:      {entry.quota} bytes")
    if client.cfg.required_group and not entry.is_group:
        ok = client.may_use_mail(entry, login)
        lines.append(f"  in {client.cfg.required_group}: {'yes' if ok else 'NO (may not use mail)'}")
    return lines


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass("Password: ")


def cmd_test(args: argparse.Namespace) -> int:
    from mailsuite.directory.interface import DirectoryUnavailable

    cfg = _load(args)
    client = _client(cfg)
    _describe(cfg)
    try:
        found = client.user_entries(args.login, size_limit=5)
        print(f"login {args.login!r}: {len(found)} entr{'y' if len(found) == 1 else 'ies'} found by user_filter")
        for e in found:
            print("\n".join(_entry_lines(e, client, args.login)))
        entry = client.find_user(args.login)
        if entry is None:
            print("result: this login cannot log in" + (" (several entries match)" if len(found) > 1 else ""))
            return EXIT_REFUSED
        password = _read_password(args)
        if not password:
            print("result: empty password refused (it would be an unauthenticated bind)")
            return EXIT_REFUSED
        if client.bind(entry.dn, password):
            print(f"result: password accepted; logs in as {entry.primary}")
            return 0
        print("result: password refused by the directory")
        return EXIT_REFUSED
    except DirectoryUnavailable as e:
        print(f"error: directory unavailable: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        client.close()


def cmd_lookup(args: argparse.Namespace) -> int:
    from mailsuite.directory.interface import DirectoryUnavailable, normalize_address

    cfg = _load(args)
    client = _client(cfg)
    _describe(cfg)
    address = normalize_address(args.address)
    try:
        if address.rpartition("@")[2] not in cfg.server.domains:
            print(f"{address}: not in a local domain ({', '.join(cfg.server.domains)}); the server relays or refuses it")
            return EXIT_REFUSED
        found = client.address_entries(address)
        print(f"address {address}: {len(found)} entr{'y' if len(found) == 1 else 'ies'} found by address_filter")
        for e in found:
            print("\n".join(_entry_lines(e, client)))
        res = client.resolve(address)
        if not res:
            print("result: unknown recipient (RCPT gets 550 5.1.1)")
            return EXIT_REFUSED
        for box in res.mailboxes:
            print(f"delivers to mailbox {box}")
        for fwd in res.forwards:
            print(f"forwards to {fwd}")
        return 0
    except DirectoryUnavailable as e:
        print(f"error: directory unavailable (RCPT would get 451 4.4.3): {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        client.close()


def add_commands(sub: argparse._SubParsersAction, add_config_arg: Callable[[Any], None]) -> None:
    """``add_config_arg(parser)`` (from mailsuite.cli) adds ``--config`` and sets
    ``args.load_config`` (and ``args.check_files``): this package never imports mailsuite.cli."""
    ldap = sub.add_parser(
        "ldap",
        help="check the LDAP directory settings",
        description="Show what the LDAP directory ([directory.ldap]) returns for a login or an address. "
        "Exit status: 0 found/accepted, 1 unknown/refused, 2 bad config, 3 directory unavailable.",
    )
    lsub = ldap.add_subparsers(dest="ldap_command", metavar="ACTION", required=True)
    p = lsub.add_parser(
        "test",
        help="find a login's entry and try its password (search, then bind)",
        description="Find the entry for LOGIN with user_filter, show its mailbox, addresses, quota and "
        "group membership, then bind as it with a password read from a prompt or --password-stdin.",
    )
    p.add_argument("login", metavar="LOGIN", help="what a user types as login, e.g. alice or alice@example.org")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add_config_arg(p)
    p.set_defaults(func=cmd_test)
    p = lsub.add_parser(
        "lookup",
        help="show where mail to an address goes",
        description="Find the entries for ADDRESS with address_filter and show the mailboxes and "
        "forwards it delivers to (groups expanded if expand_groups is set).",
    )
    p.add_argument("address", metavar="ADDRESS", help="a recipient address in a local domain")
    add_config_arg(p)
    p.set_defaults(func=cmd_lookup)
