"""Sieve at local delivery: the ``sieve`` delivery filter (mailsuite.delivery.local).

Every local copy (the SMTP fast path, the queue's local copies, DSNs to local
senders) passes :meth:`SieveFilter.filter_copy` before the store writes it.  Whether
an account has an active script is known without leaving the reactor thread (one
``readlink`` of ``sieve/active`` every ``[sieve] script_check_interval`` seconds), so an
account without scripts costs nothing more.  With scripts,
:class:`SieveEngine` runs in the worker pool: it parses the header once and runs the
global ``before`` script, the user's active script and the global ``after`` script.
Its outcome is applied to the copy:

* keep / one ``fileinto``: the copy's folder (the store writes it, with the other
  recipients' copies, all or nothing);
* several folders, imap4flags flags, or an editheader change: the engine writes those
  copies itself (durably, named after the queue id, so a repeated delivery after a
  crash does not make them twice) and the copy is marked delivered;
* ``discard``: the copy is discarded; ``reject``/``ereject``: the copy is refused
  permanently (5.7.1): 550 at DATA when every recipient of an SMTP message refused,
  else the queue bounces it with a DSN (RFC 5429 2.1);
* ``redirect`` and ``vacation`` messages go to the dispatcher (:attr:`sink`) like any
  message: local targets through this filter again, remote ones through the queue.

Nothing is lost to a script: one that does not compile or fails while running keeps
the message in INBOX, the error is logged, and the user gets one notice per version
of the script.  A message that already carries ``Delivered-To: <account>`` (it went
through this account's script before) is not redirected again (RFC 5228 4.2 loop
control); the SMTP server's hop count catches longer loops.
"""

from __future__ import annotations

import email.utils
import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.delivery.local import DELIVERED, DISCARDED, CopyResult, IDeliveryFilter, LocalCopy
from mailsuite.handoff import BodyFile, Envelope as HandoffEnvelope, new_queue_id
from mailsuite.sieve.interpreter import Envelope, FileInto, Interpreter, ISieveHost, Outcome, Script
from mailsuite.sieve.memory import Memory
from mailsuite.sieve.message import Message
from mailsuite.sieve.parser import SieveSyntaxError
from mailsuite.sieve.scripts import ACTIVE, SCRIPT_DIR, SUFFIX, CompileCache, UserScripts, check_name
from mailsuite.sieve.vacation import reply_for
from mailsuite.store import folders, names
from mailsuite.store.errors import StoreError
from mailsuite.store.keywords import Keywords, split_flags
from mailsuite.store.maildir import SPECIAL_FOLDERS, DeliveryError, UnsafeName, account_dir, deliver_one, ensure_account

log = Logger(namespace="mailsuite.sieve")
HEAD_LIMIT = 1024 * 1024  # bytes of a big message a script sees (headers and the body's start)


@dataclass
class Plan:
    """What the scripts decided for one copy (made in the worker pool)."""

    outcome: Outcome
    folder: str = "INBOX"  # the one folder for the store to write to ("" when none)
    targets: list[tuple[str, str | None]] = field(default_factory=list)  # (folder, Maildir flags or None)
    create: list[str] = field(default_factory=list)  # folders fileinto :create must make first
    needs_worker: bool = False  # apply() has writes to do
    written: list[str] = field(default_factory=list)  # folders the engine wrote itself
    redirects: list[tuple[str, bytes]] = field(default_factory=list)  # (address, header block)
    message: Message | None = None


@implementer(ISieveHost)
class ScriptHost:
    def __init__(self, engine: "SieveEngine", root: Path) -> None:
        self.engine = engine
        self.root = root

    def load_script(self, location: str, name: str) -> Script | None:
        try:
            check_name(name)
        except ValueError:
            return None
        if location == "global":
            if self.engine.global_dir is None:
                return None
            path = self.engine.global_dir / (name + SUFFIX)
        else:
            path = UserScripts(self.root).path(name)
        try:
            return self.engine.cache.get(path, name)
        except SieveSyntaxError as e:
            from mailsuite.sieve.interpreter import SieveRuntimeError

            raise SieveRuntimeError(f"included script {name}: {e}") from None

    def mailbox_exists(self, name: str) -> bool:
        try:
            name = folders.normalize(name)
        except (UnsafeName, StoreError):
            return False
        return name == folders.INBOX or folders.folder_exists(self.root, name)

    def duplicate_seen(self, handle: str, key: str) -> bool:
        return Memory(self.root, "duplicate").seen(handle, key)


class SieveEngine:
    """The blocking half: scripts, the interpreter and the Maildir writes it needs."""

    def __init__(self, mail_dir: Path, before: Path | None = None, after: Path | None = None,
                 global_dir: Path | None = None, hostname: str = "localhost", authserv_id: str = "",
                 cache: CompileCache | None = None, check_interval: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mail_dir = mail_dir
        self.before = before
        self.after = after
        self.global_dir = global_dir
        self.hostname = hostname
        self.authserv_id = authserv_id or hostname
        self.cache = cache or CompileCache()
        self._roots: dict[str, Path] = {}  # account -> Maildir root (pathlib joins are slow)
        # Seconds a user's "active script" answer is reused without a syscall: on a busy
        # server a readlink + stat in the reactor thread cost more than the script run.
        # ManageSieve changes in this process are seen at once (invalidate()).
        self.check_interval = check_interval
        self.clock = clock
        self._lookups: dict[str, tuple[float, Script | SieveSyntaxError | None]] = {}

    def global_script(self, path: Path | None) -> Script | None:
        if path is None:
            return None
        try:
            return self.cache.get(path, path.stem)
        except SieveSyntaxError as e:
            log.error("sieve: global script {path} does not compile, skipped: {e}", path=str(path), e=str(e))
        except OSError as e:
            log.error("sieve: global script {path} cannot be read, skipped: {e}", path=str(path), e=str(e))
        return None

    def decide(self, sender: str, account: str, rcpt: str, body: BodyFile, default: str = "INBOX",
               now: float | None = None) -> Plan | None:
        """Run the scripts for one copy; None when no script applies.  Only reads
        (a readlink, stats, a script file when it changed, the body when it is on
        disk): with the body in memory this is cheap enough for the reactor thread.
        ``default`` is where keep (implicit or not) files the message: INBOX, or the
        folder an earlier filter chose (Junk, for mail that failed DMARC)."""
        root = self._root(account)
        before, after = self.global_script(self.before), self.global_script(self.after)
        user = self.lookup(account)
        scripts = [s for s in (before, user, after) if isinstance(s, Script)]
        if not scripts and not isinstance(user, SieveSyntaxError):
            return None
        msg = Message(_read_head(body))
        msg.size_override = body.size + body.lines
        env = Envelope(sender, rcpt, account)
        if isinstance(user, SieveSyntaxError):
            outcome = Outcome(deliveries=[FileInto("INBOX")], error=f"script does not compile: {user}")
            if scripts:
                # The admin's scripts still run; only the user's broken one is left out.
                ran = self._run(msg, env, root, now, scripts)
                ran.error = ran.error or outcome.error
                outcome = ran
        else:
            outcome = self._run(msg, env, root, now, scripts)
        plan = Plan(outcome, message=msg)
        self._loop_check(msg, account, outcome)
        if outcome.redirects:
            copy = b"Delivered-To: " + account.encode() + b"\n" + msg.header_bytes() + b"\n"
            plan.redirects = [(addr, copy) for addr in outcome.redirects]
        if outcome.reject is not None:
            plan.folder = ""
            return plan
        for d in outcome.deliveries:
            if d.mailbox.upper() == "INBOX" and default != "INBOX":
                d = FileInto(default, d.flags, True)
            t = self._target(root, d, outcome, plan.create)
            if t[0] not in (x[0] for x in plan.targets):
                plan.targets.append(t)
        simple = len(plan.targets) == 1 and plan.targets[0][1] is None and not msg.edited
        plan.folder = plan.targets[0][0] if simple else ""
        plan.needs_worker = bool(outcome.error or outcome.duplicates or plan.create or not simple
                                 and plan.targets)
        return plan

    def _run(self, msg: Message, env: Envelope, root: Path, now: float | None, scripts: list[Script]) -> Outcome:
        try:
            return Interpreter(msg, env, ScriptHost(self, root), now, self.authserv_id).run(scripts)
        except Exception as e:  # noqa: BLE001 - a bug of ours must not hold the message back
            log.failure("sieve: {account}: the interpreter failed; message kept in INBOX", account=env.account)
            return Outcome(deliveries=[FileInto("INBOX")], error=f"internal error ({type(e).__name__})")

    def apply(self, plan: Plan, account: str, prefix: bytes, body: BodyFile, stable_base: str) -> None:
        """The writes a plan needs (blocking): folders to create, the error notice,
        duplicate memory, and the copies the store cannot make (several folders, flags,
        edited headers), durably and all or nothing."""
        root = account_dir(self.mail_dir, account)
        if not os.path.isdir(os.path.join(root, "new")):
            ensure_account(self.mail_dir, account)  # fileinto "Junk" on a first delivery
        outcome = plan.outcome
        if outcome.error:
            self._report_error(root, account, outcome.error)
        for name in plan.create:
            try:
                folders.create_folder(root, name)
            except StoreError:
                pass  # created meanwhile by another delivery
        if outcome.duplicates:
            mem = Memory(root, "duplicate")
            for handle, key, seconds in outcome.duplicates:
                mem.record(handle, key, seconds)
        if plan.folder or not plan.targets:
            return
        data = body if plan.message is None or not plan.message.edited else _edited_body(plan.message, body)
        made: list[Path] = []
        try:
            for folder, flags in plan.targets:
                path = root if folder == folders.INBOX else folders.folder_path(root, folder)
                name = deliver_one(path, prefix, data, stable_base, True, flags)
                made.append(path / ("new" if flags is None else "cur") / name)
                plan.written.append(folder)
        except OSError as e:
            for path in made:  # all or nothing, as the store's own writes
                try:
                    os.unlink(path)
                except OSError:
                    pass
            code = errno.errorcode.get(e.errno or 0, "error")
            raise DeliveryError(f"sieve delivery to {account} failed: {code} {e.strerror}") from e

    def lookup(self, account: str) -> Script | SieveSyntaxError | None:
        """The account's active script (compiled), None, or its compile error; asked of
        the disk at most once per ``check_interval`` seconds."""
        now = self.clock()
        hit = self._lookups.get(account)
        if hit is not None and now - hit[0] < self.check_interval:
            return hit[1]
        result = self.user_script(self._root(account), account)
        if self.check_interval > 0:
            if len(self._lookups) > 100_000:
                self._lookups.clear()
            self._lookups[account] = (now, result)
        return result

    def invalidate(self, account: str) -> None:
        """``account``'s scripts changed (ManageSieve): look again at the next message."""
        self._lookups.pop(account, None)

    def _root(self, account: str) -> Path:
        root = self._roots.get(account)
        if root is None:
            if len(self._roots) > 10_000:
                self._roots.clear()
            root = self._roots[account] = account_dir(self.mail_dir, account)
        return root

    def user_script(self, root: Path, account: str) -> Script | SieveSyntaxError | None:
        # Plain strings, not pathlib: this runs for every message of an account with
        # a script, and pathlib's joins cost more than the readlink and stat.
        directory = os.path.join(str(root), SCRIPT_DIR)
        try:
            target = os.readlink(os.path.join(directory, ACTIVE))
        except OSError:
            return None
        base = os.path.basename(target)
        if not base.endswith(SUFFIX):
            return None
        try:
            return self.cache.get(os.path.join(directory, base), base[: -len(SUFFIX)])
        except SieveSyntaxError as e:
            log.warn("sieve: {account}: active script {name} does not compile: {e}",
                     account=account, name=base[: -len(SUFFIX)], e=str(e))
            return e
        except OSError as e:
            log.warn("sieve: {account}: active script {name} cannot be read: {e}",
                     account=account, name=base, e=str(e))
            return SieveSyntaxError(f"cannot be read: {e.strerror}")

    def _loop_check(self, msg: Message, account: str, outcome: Outcome) -> None:
        if not outcome.redirects:
            return
        if any(v.strip().lower() == account.lower() for v in msg.values("delivered-to")):
            outcome.log.append(f"redirect loop: message was delivered to {account} before; kept, not redirected")
            outcome.redirects = []
            if not outcome.deliveries:
                outcome.deliveries = [FileInto("INBOX")]

    def _target(self, root: Path, d: FileInto, outcome: Outcome, create: list[str]) -> tuple[str, str | None]:
        """(folder name, Maildir info letters or None) for a delivery; a folder that does
        not exist (and may not be created) or a bad name falls back to INBOX."""
        try:
            name = folders.INBOX if d.mailbox == folders.INBOX else folders.normalize(d.mailbox)
        except (UnsafeName, StoreError):
            outcome.log.append(f"fileinto {d.mailbox!r}: invalid folder name, kept in INBOX")
            name = folders.INBOX
        if name != folders.INBOX and not folders.folder_exists(root, name) and not (
                name in SPECIAL_FOLDERS and not os.path.isdir(os.path.join(root, "new"))):
            # (A first delivery creates the account with its special folders.)
            if d.create:
                create.append(name)
            else:
                outcome.log.append(f"fileinto {name}: no such folder, kept in INBOX")
                name = folders.INBOX
        if not d.flags:
            return name, None
        letters, keywords = split_flags(list(d.flags))
        if keywords:
            path = root if name == folders.INBOX else folders.folder_path(root, name)
            kw = Keywords(path)
            kw.load()
            # IMAP gives letters to new keywords under the folder lock; a delivery uses
            # only the ones the folder already knows.
            letters += kw.known_letters(keywords)
        return name, "".join(sorted(set(letters)))

    def _report_error(self, root: Path, account: str, error: str) -> None:
        """Tell the user once per version of the active script (a notice in INBOX)."""
        log.warn("sieve: {account}: {error}; message kept in INBOX", account=account, error=error)
        active = UserScripts(root).active_path()
        try:
            st = os.stat(active) if active else None
        except OSError:
            st = None
        key = f"{active}:{st.st_mtime_ns if st else 0}"
        mem = Memory(root, "errors")
        if mem.seen("error", key):
            return
        mem.record("error", key, 365 * 86400)
        text = (
            f"From: Mail Delivery System <MAILER-DAEMON@{self.hostname}>\nTo: <{account}>\n"
            f"Subject: Your mail filter (Sieve script) failed\nDate: {email.utils.formatdate(localtime=True)}\n"
            f"Message-ID: {email.utils.make_msgid(domain=self.hostname)}\nAuto-Submitted: auto-generated\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
            f"Your active Sieve script could not be run:\n\n    {error}\n\n"
            "Messages are kept in your INBOX until the script is fixed.\n"
            "You get this notice once for each version of the script.\n"
        ).encode("utf-8")
        deliver_one(root, b"Return-Path: <>\n", BodyFile("", len(text), text.count(b"\n"), text))

    def vacation_reply(self, account: str, rcpt: str, sender: str, own: list[str], msg: Message,
                       outcome: Outcome) -> tuple[Any, str]:
        assert outcome.vacation is not None
        root = account_dir(self.mail_dir, account)
        return reply_for(msg, sender, rcpt, own + [account, rcpt], outcome.vacation, Memory(root, "vacation"),
                         self.hostname)


def _read_head(body: BodyFile) -> bytes:
    if body.data is not None:
        return body.data
    with open(body.path, "rb") as f:
        return f.read(HEAD_LIMIT)


def _read_all(body: BodyFile) -> bytes:
    if body.data is not None:
        return body.data
    with open(body.path, "rb") as f:
        return f.read()


def _edited_body(msg: Message, body: BodyFile) -> BodyFile:
    """The message with the script's header edits (editheader), in memory."""
    full = _read_all(body)
    cut = full.find(b"\n\n")
    data = msg.header_bytes() + b"\n" + (full[cut + 2:] if cut >= 0 else b"")
    return BodyFile(body.path, len(data), data.count(b"\n"), data)


@implementer(IDeliveryFilter)
class SieveFilter:
    """The reactor half (see the module docstring).  ``sink`` (the dispatcher) is set
    once it exists: it is built after local delivery, which holds this filter."""

    name = "sieve"

    def __init__(self, engine: SieveEngine, directory: Any, domains: tuple[str, ...], hostname: str,
                 incoming_dir: Path, workers: Any, hub: Any) -> None:
        """``workers`` (mailsuite.workers.IWorkers) runs the script's file work;
        ``hub`` (the store's ChangeHub) hears of the folders a script wrote to."""
        self.engine = engine
        self.workers = workers
        self.hub = hub
        self.directory = directory
        self.domains = tuple(d.lower() for d in domains)
        self.hostname = hostname
        self.incoming_dir = incoming_dir
        self.sink: Any = None

    def _has_script(self, account: str) -> bool:
        if self.engine.before is not None or self.engine.after is not None:
            return True
        try:
            return self.engine.lookup(account) is not None
        except UnsafeName:
            return False

    def filter_copy(self, envelope: HandoffEnvelope, body: BodyFile, copy: LocalCopy) -> defer.Deferred | None:
        if not self._has_script(copy.account):
            return None
        args = (envelope.sender, copy.account, copy.rcpt, body, copy.folder)
        if body.data is None:  # on disk: read it in the worker pool
            d = self.workers.run(self.engine.decide, *args)
            return d.addCallback(lambda plan: defer.ensureDeferred(self._finish(envelope, body, copy, plan)))
        # A body in memory is decided on in the reactor thread (a 20-rule script takes
        # about 0.1 ms; a trip through the worker pool and a coroutine cost more), and
        # the common outcome (keep, one fileinto, discard, reject) returns at once.
        plan = self.engine.decide(*args)
        if plan is None:
            return None
        if plan.needs_worker or plan.redirects or plan.outcome.vacation is not None:
            return defer.ensureDeferred(self._finish(envelope, body, copy, plan))
        self._apply(envelope, copy, plan)
        return None

    async def _finish(self, envelope: HandoffEnvelope, body: BodyFile, copy: LocalCopy, plan: Plan | None) -> None:
        if plan is None:
            return
        if plan.needs_worker:
            stable = names.stable_name(envelope.arrival, envelope.queue_id)
            await self.workers.run(self.engine.apply, plan, copy.account, b"".join(copy.headers), body, stable)
        self._apply(envelope, copy, plan)
        for addr, head in plan.redirects:
            await self._redirect(envelope, copy, addr, head, body)
        if plan.outcome.vacation is not None and plan.message is not None:
            await self._vacation(envelope, copy, plan)

    def _apply(self, envelope: HandoffEnvelope, copy: LocalCopy, plan: Plan) -> None:
        """The plan's outcome, on the copy the store is about to write."""
        out = plan.outcome
        for line in out.log:
            log.info("sieve: {qid}: {account}: {line}", qid=envelope.queue_id, account=copy.account, line=line)
        if out.reject is not None:
            copy.reject(" ".join(out.reject.split()) or "Rejected by the recipient's filter", "5.7.1")
        elif plan.written:
            for folder in plan.written:
                self.hub.changed(copy.account, folder)
            copy.result = CopyResult(DELIVERED, "2.0.0", f"delivered by sieve to {', '.join(plan.written)}",
                                     plan.written[0])
        elif not plan.folder:
            copy.discard("discarded by sieve")
        else:
            copy.folder = plan.folder

    async def _redirect(self, envelope: HandoffEnvelope, copy: LocalCopy, addr: str, head: bytes,
                        body: BodyFile) -> None:
        full = await self.workers.run(_read_all, body)
        cut = full.find(b"\n\n")
        data = head + (full[cut + 2:] if cut >= 0 else b"")
        ok = await self.send(envelope.sender, addr, data, f"redirect from {copy.account}")
        if not ok and copy.result is not None and copy.result.status == DISCARDED:
            # Nothing may be lost: a redirect that cannot be queued is kept instead.
            copy.result, copy.folder = None, "INBOX"

    async def _vacation(self, envelope: HandoffEnvelope, copy: LocalCopy, plan: Plan) -> None:
        own: list[str] = []
        try:
            own = list(await self.directory.sender_addresses(copy.account))
        except Exception as e:  # noqa: BLE001 - directory down: the account and RCPT still count
            log.warn("sieve: {account}: addresses unavailable for vacation ({e})", account=copy.account, e=str(e))
        try:
            reply, why = await self.workers.run(self.engine.vacation_reply, copy.account, copy.rcpt, envelope.sender,
                                           own, plan.message, plan.outcome)
        except OSError as e:
            log.error("sieve: {account}: vacation memory failed: {e}", account=copy.account, e=str(e))
            return
        log.info("sieve: {qid}: {account}: {why}", qid=envelope.queue_id, account=copy.account, why=why)
        if reply is not None:
            await self.send("", reply.recipient, reply.data, f"vacation reply of {copy.account}")

    async def send(self, sender: str, rcpt: str, data: bytes, what: str) -> bool:
        """Hand a message we made (redirect, vacation reply) to the dispatcher; True
        once it is durable."""
        qid = new_queue_id()
        received = f"Received: by {self.hostname} (mailsuite sieve) id {qid}\n\tfor <{rcpt}>; " \
                   f"{email.utils.formatdate(usegmt=True)}\n"
        data = received.encode() + data
        mailboxes: dict[str, str] = {}
        forwards: tuple[str, ...] = ()
        if rcpt.rpartition("@")[2].lower() in self.domains:
            try:
                found = await self.directory.resolve(rcpt)
            except Exception as e:  # noqa: BLE001 - DirectoryUnavailable
                log.warn("sieve: {what}: <{rcpt}> cannot be resolved now: {e}", what=what, rcpt=rcpt, e=str(e))
                return False
            if not found:
                log.warn("sieve: {what}: <{rcpt}> is not a local address; dropped", what=what, rcpt=rcpt)
                return True
            mailboxes = {box: rcpt for box in found.mailboxes}
            forwards = tuple(found.forwards)
        else:
            forwards = (rcpt,)
        env = HandoffEnvelope(queue_id=qid, sender=sender, recipients=(rcpt,), mailboxes=mailboxes,
                              forwards=forwards, helo=self.hostname)
        bf = BodyFile(str(self.incoming_dir / qid), len(data), data.count(b"\n"), data)
        try:
            result = await self.sink.accept(env, bf)
        except Exception as e:  # noqa: BLE001 - TemporaryFailure, PermanentFailure
            log.warn("sieve: {what}: could not be queued: {e}", what=what, e=str(e))
            return False
        log.info("sieve: {what}: {qid} to <{rcpt}> ({result})", what=what, qid=qid, rcpt=rcpt, result=result)
        return True
