"""The ``mailsuite`` admin command: config checks and user accounts (more in later work).

Every subcommand takes ``--config PATH`` (default ``$MAILSUITE_CONFIG``, else
``etc/mailsuite.toml``) and ``--help``.  Passwords are read from a prompt or, with
``--password-stdin``, from standard input; never from the command line, where other
users could read them in the process list.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys
from pathlib import Path

from mailsuite import config as config_mod

from mailsuite.directory import ldap_cli
from mailsuite.mailauth import cli as mailauth_cli
from mailsuite.queue import cli as queue_cli
from mailsuite.sieve import cli as sieve_cli
from mailsuite.web import cli as web_cli


def _add_config_arg(p: argparse.ArgumentParser) -> None:
    """``--config PATH``; the subcommand's handler then calls ``args.load_config(args)``
    (and ``args.check_files(cfg)``), so the packages' command modules (queue, ldap,
    mailauth, sieve) need not import this module or the config module."""
    p.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="config file (default: $MAILSUITE_CONFIG, else etc/mailsuite.toml)",
    )
    p.set_defaults(load_config=load_config, check_files=config_mod.check_files)


def load_config(args: argparse.Namespace) -> config_mod.Config:
    path = getattr(args, "path", None) or args.config or config_mod.default_path()
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as e:
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.path or args.config or config_mod.default_path()
    try:
        cfg = config_mod.load(path)
    except config_mod.ConfigError as e:
        for line in e.problems:
            print(line)
        return 1
    from mailsuite.service import runtime_problems

    problems = runtime_problems(cfg)
    for line in problems:
        print(line)
    if problems:
        return 1

    from mailsuite.mailauth.dkim_sign import KeyRing

    # A domain without its signing key still works (its mail leaves unsigned): a note.
    for line in KeyRing(cfg.dkim, cfg.server.data_dir, cfg.server.domains).problems:
        print(f"note: {line} (mailsuite dkim keygen)")
    print("OK")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        pw = sys.stdin.readline().rstrip("\r\n")
    else:
        pw = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != pw:
            print("error: the passwords differ", file=sys.stderr)
            raise SystemExit(1)
    if not pw:
        print("error: empty password", file=sys.stderr)
        raise SystemExit(1)
    return pw


def _users_file(cfg: config_mod.Config) -> Path:
    if cfg.directory.backend != "file":
        print("error: directory.backend is not \"file\"; manage users in the directory itself", file=sys.stderr)
        raise SystemExit(1)
    return cfg.directory.users_file


def _check_address(cfg: config_mod.Config, address: str) -> str:
    from mailsuite.directory.interface import normalize_address
    from mailsuite.store.errors import UnsafeName
    from mailsuite.store.maildir import account_dir

    address = normalize_address(address)
    local, _, domain = address.rpartition("@")
    if not local or domain not in cfg.server.domains:
        print(f"error: {address}: not an address in a local domain ({', '.join(cfg.server.domains)})", file=sys.stderr)
        raise SystemExit(1)
    if ":" in address or any(c.isspace() for c in address):
        print(f"error: {address}: not a valid address", file=sys.stderr)
        raise SystemExit(1)
    try:
        account_dir(cfg.mail_dir, address)
    except UnsafeName as e:
        print(f"error: {address}: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    return address


def cmd_user_add(args: argparse.Namespace) -> int:
    from mailsuite.directory.files import UserEntry, read_users, write_users
    from mailsuite.directory.passwords import hash_password

    cfg = load_config(args)
    path = _users_file(cfg)
    address = _check_address(cfg, args.address)
    users = read_users(path)
    if address in users:
        print(f"error: {address} exists; use 'mailsuite user passwd'", file=sys.stderr)
        return 1
    users[address] = UserEntry(address, hash_password(_read_password(args)), args.quota)
    write_users(path, users)
    print(f"added {address}")
    return 0


def _existing_user(args: argparse.Namespace) -> tuple[Path, str, dict]:
    """The users file, the normalised address and the users; exit 1 if it is unknown."""
    from mailsuite.directory.files import read_users

    path = _users_file(load_config(args))
    address = args.address.strip().lower()
    users = read_users(path)
    if address not in users:
        print(f"error: {address}: no such user", file=sys.stderr)
        raise SystemExit(1)
    return path, address, users


def cmd_user_passwd(args: argparse.Namespace) -> int:
    from mailsuite.directory.files import UserEntry, write_users
    from mailsuite.directory.passwords import hash_password

    path, address, users = _existing_user(args)
    users[address] = dataclasses.replace(users[address], password_hash=hash_password(_read_password(args)))
    write_users(path, users)
    print(f"password changed for {address}")
    return 0


def cmd_user_del(args: argparse.Namespace) -> int:
    from mailsuite.directory.files import write_users

    path, address, users = _existing_user(args)
    del users[address]
    write_users(path, users)
    print(f"deleted {address} (the Maildir is kept)")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from mailsuite.directory.files import read_users

    cfg = load_config(args)
    for address, entry in sorted(read_users(_users_file(cfg)).items()):
        quota = f"  quota={entry.quota}" if entry.quota is not None else ""
        print(f"{address}{quota}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailsuite", description="Administer a mailsuite mail server.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("check-config", help="validate the config file; print OK or every problem",
                       description="Validate the config file and print OK or one line per problem.")
    p.add_argument("path", nargs="?", help="config file to check (overrides --config)")
    _add_config_arg(p)
    p.set_defaults(func=cmd_check_config)

    user = sub.add_parser("user", help="manage accounts in the users file",
                          description="Manage accounts in the users file (directory.backend = \"file\").")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    for name, func, helptext in (
        ("add", cmd_user_add, "add an account (password from a prompt or --password-stdin)"),
        ("passwd", cmd_user_passwd, "set an account's password"),
        ("del", cmd_user_del, "delete an account (its Maildir is kept)"),
    ):
        p = usub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        p.add_argument("address", help="the account's address, e.g. alice@example.org")
        if name != "del":
            p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
        if name == "add":
            p.add_argument("--quota", type=int, default=None, metavar="BYTES", help="mailbox quota in bytes")
        _add_config_arg(p)
        p.set_defaults(func=func)
    p = usub.add_parser("list", help="list accounts", description="List the accounts in the users file.")
    _add_config_arg(p)
    p.set_defaults(func=cmd_user_list)

    for add_commands in (queue_cli.add_commands, ldap_cli.add_commands, mailauth_cli.add_commands,
                         sieve_cli.add_commands, web_cli.add_commands):
        add_commands(sub, _add_config_arg)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
