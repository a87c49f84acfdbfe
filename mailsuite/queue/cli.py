"""``mailsuite queue list|show|flush|retry|delete``: look at and steer the relay queue.

``list`` and ``show`` read the spool files (envelopes are replaced atomically, so a
read never sees half of one).  ``flush``, ``retry`` and ``delete`` go to the running
server as request files and wait for its answer; with no server running (the queue
lock is free) they edit the spool themselves under that lock.  See
:mod:`mailsuite.queue.control` for why.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable
import sys
import time

from mailsuite.queue import control, spool
from mailsuite.queue.spool import Record, SpoolPaths


def _paths(args: argparse.Namespace) -> SpoolPaths:
    return SpoolPaths(args.load_config(args).queue_dir)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _state(r: spool.Recipient) -> str:
    if r.state == "pending":
        return "deferred" if r.attempts else "active"
    return r.state


def cmd_list(args: argparse.Namespace) -> int:
    paths = _paths(args)
    result = spool.scan(paths, clean=False)
    now = time.time()
    if not result.records:
        print("Mail queue is empty")
    for rec in result.records:
        sender = rec.sender or "MAILER-DAEMON"
        print(f"{rec.id:<14} {_age(now - rec.arrival):>5} {rec.size:>9}  <{sender}>")
        for r in rec.recipients:
            if r.final and r.state == "sent":
                continue
            line = f"    {_state(r):<8} <{r.address}>"
            if r.attempts:
                line += f"  attempts={r.attempts}"
            if r.state == "pending" and r.next_attempt > now:
                line += f"  next in {_age(r.next_attempt - now)}"
            print(line)
            if r.error:
                print(f"        ({r.error})")
    for name, why in result.corrupt:
        print(f"corrupt envelope {name}: {why}")
    n = len(result.records)
    if n:
        rcpts = sum(1 for rec in result.records for r in rec.recipients if not r.final)
        print(f"-- {n} message(s), {rcpts} recipient(s) waiting")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    paths = _paths(args)
    try:
        rec = spool.read_record(paths, args.id)
    except KeyError:
        print(f"error: {args.id}: no such message in the queue", file=sys.stderr)
        return 1
    except spool.CorruptEnvelope as e:
        print(f"error: {args.id}: corrupt envelope: {e}", file=sys.stderr)
        return 1
    print(_describe(rec))
    if args.body:
        sys.stdout.flush()
        sys.stdout.buffer.write(paths.body(rec.id).read_bytes())
    else:
        print("headers:")
        for line in spool.iter_headers(paths.body(rec.id)):
            print("    " + line.decode("utf-8", "replace").rstrip("\n"))
    return 0


def _describe(rec: Record) -> str:
    t = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(rec.arrival))
    lines = [
        f"id:       {rec.id}",
        f"arrival:  {t} ({_age(time.time() - rec.arrival)} ago)",
        f"sender:   <{rec.sender}>",
        f"size:     {rec.size}",
        f"client:   [{rec.client_ip}] helo={rec.helo or '-'}" + (f" auth={rec.auth_user}" if rec.auth_user else ""),
    ]
    extras = [w for w, on in (("SMTPUTF8", rec.smtputf8), (f"BODY={rec.body}", rec.body),
                              (f"RET={rec.ret}", rec.ret), (f"ENVID={rec.envid}", rec.envid),
                              ("REQUIRETLS", rec.requiretls)) if on]
    if extras:
        lines.append(f"params:   {' '.join(extras)}")
    lines.append("recipients:")
    for r in rec.recipients:
        lines.append(f"  <{r.address}> ({r.kind}) {_state(r)} attempts={r.attempts}"
                     + (f" orig=<{r.orcpt}>" if r.orcpt and r.orcpt != r.address else ""))
        if r.notify or r.original:
            lines.append(f"      dsn:   NOTIFY={r.notify or '-'} ORCPT={r.original or '-'}")
        if r.relay:
            lines.append(f"      relay: {r.relay}")
        if r.tls_policy:
            lines.append(f"      tls:   {r.tls_policy}")
        if r.error:
            lines.append(f"      last:  {r.dsn} {r.error}")
        if r.state == "pending" and r.next_attempt:
            lines.append("      next:  " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(r.next_attempt)))
    return "\n".join(lines)


def _offline(paths: SpoolPaths, op: str, qid: str) -> tuple[bool, str]:
    """Edit the spool with no server running (the caller holds the lock)."""
    if op == "tls-reports":
        return False, "the server is not running; TLS reports go out from the running server"
    if op == "flush":
        n = 0
        for rec in spool.scan(paths, clean=False).records:
            spool.write_record(paths, rec.due_now())
            n += 1
        return True, f"{n} message(s) marked due (no server is running; they go at its next start)"
    try:
        rec = spool.read_record(paths, qid)
    except (KeyError, spool.CorruptEnvelope):
        if op == "delete" and (paths.body(qid).exists() or paths.envelope(qid).exists()):
            spool.remove(paths, qid, durable=True)
            return True, f"{qid}: deleted"
        return False, f"{qid}: no such message in the queue"
    if op == "retry":
        spool.write_record(paths, rec.due_now())
        return True, f"{qid}: marked due (no server is running; it goes at the next start)"
    spool.remove(paths, qid, durable=True)
    return True, f"{qid}: deleted"


def _act(args: argparse.Namespace, op: str, qid: str = "") -> int:
    paths = _paths(args)
    if qid and not spool._safe_id(qid):
        print(f"error: {qid!r} is not a queue id", file=sys.stderr)
        return 1
    try:
        fd = control.try_lock(paths.lock)
    except control.QueueLocked:
        try:
            ok, message = control.request(paths.control, op, qid)
        except TimeoutError as e:
            print(f"error: {e} (is it stuck?)", file=sys.stderr)
            return 1
    else:
        try:
            paths.make()
            ok, message = _offline(paths, op, qid)
        finally:
            control.unlock(fd)
    print(message if ok else f"error: {message}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def cmd_flush(args: argparse.Namespace) -> int:
    return _act(args, "flush")


def cmd_retry(args: argparse.Namespace) -> int:
    return _act(args, "retry", args.id)


def cmd_tls_reports(args: argparse.Namespace) -> int:
    return _act(args, "tls-reports")


def cmd_delete(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            print("error: refusing to delete without confirmation; add --yes", file=sys.stderr)
            return 1
        answer = input(f"Delete {args.id} from the queue without notifying the sender? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return 1
    return _act(args, "delete", args.id)


def add_commands(subparsers: argparse._SubParsersAction, add_config_arg: Callable[[Any], None]) -> None:
    """``add_config_arg(parser)`` (from mailsuite.cli) adds ``--config`` and sets
    ``args.load_config`` (and ``args.check_files``): this package never imports mailsuite.cli."""
    queue = subparsers.add_parser(
        "queue", help="inspect and steer the relay queue",
        description="Inspect and steer the relay queue (works while the server runs).",
    )
    qsub = queue.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    specs = [
        ("list", cmd_list, "list queued messages: id, age, size, sender, recipients with state and last error", False),
        ("show", cmd_show, "show one message's envelope, per-recipient state and headers", True),
        ("flush", cmd_flush, "make every queued message due now", False),
        ("retry", cmd_retry, "make one message due now", True),
        ("delete", cmd_delete, "remove one message from the queue (no bounce is sent)", True),
        ("tls-reports", cmd_tls_reports, "send the TLS-RPT reports collected so far now (today's too)", False),
    ]
    for name, func, helptext, takes_id in specs:
        p = qsub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        if takes_id:
            p.add_argument("id", help="the queue id, as `mailsuite queue list` shows it")
        if name == "show":
            p.add_argument("--body", action="store_true", help="print the whole message instead of its headers")
        if name == "delete":
            p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
        add_config_arg(p)
        p.set_defaults(func=func)
