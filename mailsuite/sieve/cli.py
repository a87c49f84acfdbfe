"""``mailsuite sieve check FILE``, ``mailsuite sieve test ADDRESS MESSAGE.eml`` and
``mailsuite sieve import HOME ACCOUNT`` (a Dovecot user's scripts).

``check`` compiles a script as PUTSCRIPT would and prints OK or the error with its
line.  ``test`` shows what delivery would do with a message for an address (the
global before/after scripts and the account's active script, or ``--script FILE``
instead of the active one), without delivering, replying, redirecting or recording
anything.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable
import sys
from pathlib import Path

from mailsuite.sieve.grammar import compile_script
from mailsuite.sieve.parser import SieveSyntaxError


def cmd_check(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        src = path.read_bytes()
    except OSError as e:
        print(f"error: {path}: {e.strerror}", file=sys.stderr)
        return 2
    try:
        _, required = compile_script(src)
    except SieveSyntaxError as e:
        print(f"{path}:{e.line}:{e.column}: {e.message}", file=sys.stderr)
        return 1
    used = sorted(r for r in required if not r.startswith("comparator-i;ascii-casemap") and r != "comparator-i;octet")
    print(f"OK: {path}" + (f" (requires {', '.join(used)})" if used else ""))
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from mailsuite.directory.backends import make_directory
    from mailsuite.sieve.delivery import SieveEngine, ScriptHost
    from mailsuite.sieve.interpreter import Envelope, Interpreter, Script
    from mailsuite.sieve.memory import Memory
    from mailsuite.sieve.message import Message
    from mailsuite.sieve.vacation import why_not
    from mailsuite.store.maildir import UnsafeName, account_dir
    from mailsuite.workers import InlineWorkers

    cfg = args.load_config(args)
    address = args.address.strip().lower()
    account = args.account
    if account is None:
        directory = make_directory(cfg, InlineWorkers())
        resolve_now = getattr(directory, "resolve_now", None)
        if resolve_now is None:
            print("error: this directory backend needs --account ACCOUNT", file=sys.stderr)
            return 2
        res = resolve_now(address)
        if not res or not res.mailboxes:
            print(f"error: {address} is not a local mailbox", file=sys.stderr)
            return 2
        account = res.mailboxes[0]
    try:
        raw = Path(args.message).read_bytes().replace(b"\r\n", b"\n")
    except OSError as e:
        print(f"error: {args.message}: {e.strerror}", file=sys.stderr)
        return 2
    engine = SieveEngine(cfg.mail_dir, cfg.sieve.before, cfg.sieve.after, cfg.sieve.global_dir,
                         hostname=cfg.server.hostname)
    try:
        root = account_dir(cfg.mail_dir, account)
    except UnsafeName as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    scripts: list[Script] = []
    try:
        if args.script:
            commands, required = compile_script(Path(args.script).read_bytes())
            user: object = Script(Path(args.script).stem, commands, required)
        else:
            user = engine.user_script(root, account)
    except SieveSyntaxError as e:
        print(f"error: {args.script}:{e.line}:{e.column}: {e.message}", file=sys.stderr)
        return 1
    if isinstance(user, SieveSyntaxError):
        print(f"the active script does not compile: {user}; delivery keeps everything in INBOX")
        user = None
    for s in (engine.global_script(engine.before), user, engine.global_script(engine.after)):
        if isinstance(s, Script):
            scripts.append(s)
    print(f"account: {account}")
    print("scripts: " + (", ".join(s.name for s in scripts) or "none (everything goes to INBOX)"))
    msg = Message(raw)
    env = Envelope(args.sender, address, account)
    outcome = Interpreter(msg, env, ScriptHost(engine, root), authserv_id=cfg.server.hostname).run(scripts)
    for line in outcome.describe():
        print(f"  {line}")
    for line in outcome.log:
        print(f"  note: {line}")
    if outcome.vacation is not None:
        why = why_not(msg, args.sender, [account, address], outcome.vacation)
        if why is None and Memory(root, "vacation").seen(outcome.vacation.handle, args.sender):
            why = f"already answered <{args.sender}> within the period"
        print(f"  vacation: {'would reply to <' + args.sender + '>' if why is None else 'no reply: ' + why}")
    if msg.edited:
        print("  headers edited (editheader): the stored copy would start with:")
        for line in msg.header_bytes().decode("utf-8", "replace").splitlines()[:10]:
            print(f"    {line}")
    return 1 if outcome.error else 0


def cmd_import(args: argparse.Namespace) -> int:
    """Bring a Dovecot/Pigeonhole user's scripts (``~/sieve/*.sieve`` and the
    ``~/.dovecot.sieve`` link or file) into an account's ``sieve/`` directory."""
    from mailsuite.sieve.scripts import SUFFIX, BadScriptName, UserScripts, check_name
    from mailsuite.store.maildir import UnsafeName, account_dir

    cfg = args.load_config(args)
    home = Path(args.home)
    try:
        scripts = UserScripts(account_dir(cfg.mail_dir, args.account.strip().lower()))
    except UnsafeName as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    found: dict[str, bytes] = {}
    sieve_dir = home / "sieve"
    for p in sorted(sieve_dir.glob("*" + SUFFIX)) if sieve_dir.is_dir() else []:
        found[p.name[: -len(SUFFIX)]] = p.read_bytes()
    active: str | None = None
    link = home / ".dovecot.sieve"
    if link.is_symlink():
        target = Path(os.readlink(link)).name
        if target.endswith(SUFFIX) and target[: -len(SUFFIX)] in found:
            active = target[: -len(SUFFIX)]
    elif link.is_file():  # a plain file: the active script without a name
        found.setdefault("dovecot", link.read_bytes())
        active = "dovecot"
    if not found:
        print(f"error: no scripts in {sieve_dir} or {link}", file=sys.stderr)
        return 2
    rc = 0
    for name, data in found.items():
        try:
            check_name(name)
        except BadScriptName:
            print(f"skipped {name!r}: not a valid script name", file=sys.stderr)
            rc = 1
            continue
        try:
            compile_script(data)
            note = ""
        except SieveSyntaxError as e:
            note = f" (does not compile here: {e})"
            rc = 1
        scripts.write(name, data)
        print(f"imported {name}{note}")
    if active is not None:
        scripts.set_active(active)
        print(f"active: {active}")
    return rc


def add_commands(subparsers: argparse._SubParsersAction, add_config_arg: Callable[[Any], None]) -> None:
    """``add_config_arg(parser)`` (from mailsuite.cli) adds ``--config`` and sets
    ``args.load_config`` (and ``args.check_files``): this package never imports mailsuite.cli."""
    sieve = subparsers.add_parser("sieve", help="check Sieve scripts and try them on a message",
                                  description="Check Sieve scripts and try them on a message.")
    ssub = sieve.add_subparsers(dest="sieve_command", metavar="ACTION", required=True)
    p = ssub.add_parser("check", help="compile a script; print OK or the error with its line",
                        description="Compile a Sieve script as ManageSieve's PUTSCRIPT would.")
    p.add_argument("file", metavar="FILE")
    add_config_arg(p)
    p.set_defaults(func=cmd_check)
    p = ssub.add_parser("test", help="show what delivery would do with a message (delivers nothing)",
                        description="Run the scripts that apply to ADDRESS (global before/after and the "
                                    "account's active one) on MESSAGE and print the actions, without "
                                    "delivering, replying or redirecting.")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("message", metavar="MESSAGE.eml")
    p.add_argument("--sender", default="sender@example.org", help="envelope sender (default %(default)s)")
    p.add_argument("--script", metavar="FILE", help="try this script instead of the active one")
    p.add_argument("--account", help="the local account (needed with the LDAP directory)")
    add_config_arg(p)
    p.set_defaults(func=cmd_test)
    p = ssub.add_parser("import", help="bring a Dovecot user's Sieve scripts into an account",
                        description="Copy HOME/sieve/*.sieve into ACCOUNT's sieve/ directory and make the "
                                    "script HOME/.dovecot.sieve points to the active one (Pigeonhole's layout). "
                                    "A script that does not compile is imported anyway and reported.")
    p.add_argument("home", metavar="HOME", help="the Dovecot user's home (holding sieve/ and .dovecot.sieve)")
    p.add_argument("account", metavar="ACCOUNT")
    add_config_arg(p)
    p.set_defaults(func=cmd_import)
