"""The queue manager: takes messages into the spool and delivers them until done.

It is the :class:`~mailsuite.handoff.IMessageSink` the dispatcher hands every message
with a remote recipient to, and a twistd service.  Per message and attempt:

1. due local recipients go through local delivery (:mod:`mailsuite.delivery.local`,
   the same code as the dispatcher's fast path: delivery filters, then one
   all-or-nothing store call), and the result is written to the envelope (fsynced)
   before anything else happens, so a kill -9 never causes a second local copy;
2. due remote recipients are grouped by destination (:mod:`~mailsuite.queue.route`),
   each group delivered over one connection, at most ``destination_concurrency``
   deliveries per destination at a time;
3. outcomes: sent, deferred (next try after ``backoff_min`` doubling up to
   ``backoff_max``), bounced (5xx, or still deferred after ``max_lifetime``);
4. a DSN goes to the sender for new bounces, and once for a message delayed longer
   than ``delay_warning`` (never for a message from <>); it goes through a
   :class:`~mailsuite.delivery.dispatch.Dispatcher` like any message (a local sender
   gets it through local delivery at once, a remote one through this queue);
5. the envelope is rewritten, or the message removed once every recipient is final.

One log line per recipient per attempt, in Postfix's shape, e.g.::

    relay: 19A2B3C4D5E6F: to=<bob@partner.test>, relay=mx.partner.test[127.0.0.1]:2525,
    tls=TLSv1.3 TLS_AES_256_GCM_SHA384, delay=0.12, attempts=1, dsn=2.0.0,
    status=sent (250 2.0.0 Ok: queued as 19A2B3C4D5E70)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.metrics import NULL as NULL_METRICS
from mailsuite.idn import ascii_domain, canonical_domain
from mailsuite.queue import control, dsn, spool
from mailsuite.delivery.dispatch import Dispatcher
from mailsuite.delivery.local import PERMANENT, TEMPORARY, ILocalDelivery
from mailsuite.handoff import BodyFile, Envelope, IMessageSink, new_queue_id
from mailsuite.queue.relay import Outcome, Relay
from mailsuite.queue.route import Router
from mailsuite.queue.spool import Record, Recipient, SpoolPaths
from mailsuite.smtp import dsnparams
from mailsuite.smtp.outbound import Transaction
from mailsuite.workers import IWorkers

log = Logger(namespace="mailsuite.queue")

FULL_RETURN_LIMIT = 10 * 1024 * 1024  # RET=FULL: bigger messages come back as headers only
SHUTDOWN_GRACE = 5.0  # seconds stopService waits for running delivery attempts


@dataclass
class Entry:
    record: Record
    timer: Any = None
    busy: bool = False
    deleted: bool = False
    again: bool = False  # a flush or retry came while an attempt ran
    data: bytes | None = None  # the body while it is still in memory (first attempt)
    waiters: list = field(default_factory=list)  # delete requests waiting for the attempt to end


def record_from_envelope(env: Envelope, size: int, lines: int) -> Record:
    def params(rcpt: str) -> dict[str, str]:
        notify, original = env.rcpt_dsn.get(rcpt, ("", ""))
        return {"notify": notify, "original": original}

    rcpts = [Recipient(box, "local", orcpt=rcpt, **params(rcpt)) for box, rcpt in env.mailboxes.items()]
    rcpts += [Recipient(addr, "remote", orcpt=addr if addr in env.recipients else "", **params(addr))
              for addr in env.forwards]
    return Record(
        id=env.queue_id, sender=env.sender, arrival=env.arrival, recipients=tuple(rcpts), size=size,
        lines=lines, client_ip=env.client_ip, helo=env.helo, auth_user=env.auth_user, folder=env.folder,
        smtputf8=env.smtputf8, body=env.body, envid=env.envid, ret=env.ret, requiretls=env.requiretls,
    )


def _domain(address: str) -> str:
    """The domain as DNS and the routing tables know it (A-labels, lower case)."""
    domain = address.rpartition("@")[2]
    try:
        return ascii_domain(domain)
    except ValueError:
        return domain.lower()


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@implementer(IMessageSink)
class QueueManager(service.Service):
    name = "queue"
    owns_spool = True  # the one queue that knows every message (False: a worker's, handover.py)

    def __init__(
        self,
        config: Any,
        local: ILocalDelivery,
        directory: Any,
        relay: Relay,
        router: Router,
        *,
        reactor: Any,
        workers: IWorkers,
        clock: Callable[[], float] = time.time,
        wrap_dsn_sink: Callable[[Any], Any] | None = None,
        metrics: Any = None,
        sender_rewriter: Callable[[Record], str] | None = None,
        watch_metrics: bool = True,
    ) -> None:
        self.config = config
        self.workers = workers  # the spool's fsyncs and scans run there
        self.cfg = config.relay
        self.hostname = config.server.hostname
        self.local = local
        self.directory = directory
        # DSNs enter like any message: local senders' through local delivery at once,
        # remote ones into this queue.
        # (wrapped by the DKIM signer: DSNs leave signed, like our users' mail).
        self.dsn_sink = Dispatcher(local, self)
        if wrap_dsn_sink is not None:
            self.dsn_sink = wrap_dsn_sink(self.dsn_sink)
        # The MAIL FROM of remote transactions (SRS for forwarded mail); the record
        # keeps the true sender for DSNs and local copies.
        self.sender_for: Callable[[Record], str] = sender_rewriter or (lambda rec: rec.sender)
        self.relay = relay
        self.router = router
        self.reactor = reactor
        self.clock = clock
        self.paths = SpoolPaths(config.queue_dir)
        self.entries: dict[str, Entry] = {}
        if getattr(relay, "reports", None) is not None and relay.reports.sink is None:
            relay.reports.sink = self  # TLS reports go out through this queue
        # Messages found in the spool at start: a crash may have come between a local
        # copy's fsync and the record of it, so their local deliveries look first.
        self._recovered: set[str] = set()
        self._limits: dict[str, defer.DeferredSemaphore] = {}
        self._lock_fd: int | None = None
        self._ready: defer.Deferred | None = None
        self._poller: task.LoopingCall | None = None
        self._report_loop: task.LoopingCall | None = None
        self._running_attempts: set[defer.Deferred] = set()
        self._is_loaded = False
        self._removals: list[str] = []
        self._load_waiters: list[defer.Deferred] = []
        # Messages a worker process took into the spool and is making its first
        # attempt at (queue/handover.py): qid -> (worker number, when it said so).
        # This queue leaves them alone until the worker hands them back or dies.
        self._elsewhere: dict[str, tuple[int, float]] = {}
        self._delete_waiters: dict[str, list[defer.Deferred]] = {}
        self.concurrency = self.cfg.destination_concurrency
        self.metrics = metrics if metrics is not None else NULL_METRICS
        if watch_metrics:
            self.metrics.watch_queue(lambda: [e.record.arrival for e in self.entries.values()]
                                     + [t for _, t in self._elsewhere.values()])

    # -- service -------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.paths.make()
        try:
            self._lock_fd = control.try_lock(self.paths.lock)
        except control.QueueLocked:
            log.error("queue: {path} is locked by another process (a second mailsuite, or "
                      "'mailsuite queue' editing the spool); the relay queue does not run", path=str(self.paths.lock))
            raise
        self._ready = self.workers.run(spool.scan, self.paths, True)
        self._ready.addCallback(self._loaded)
        self._ready.addErrback(self._scan_failed)
        self._ready.addBoth(lambda _: self._mark_loaded())
        self._poller = task.LoopingCall(self._poll_control)
        self._poller.clock = self.reactor
        self._poller.start(self.cfg.control_poll_interval, now=False).addErrback(
            lambda f: log.failure("queue: control poller stopped", f)
        )
        reports = getattr(self.relay, "reports", None)
        if reports is not None:
            # Hourly: the reports of days that are over (RFC 8460 asks for daily ones).
            self._report_loop = task.LoopingCall(lambda: defer.ensureDeferred(reports.send_due()))
            self._report_loop.clock = self.reactor
            self._report_loop.start(3600, now=False).addErrback(
                lambda f: log.failure("queue: TLS report loop stopped", f))

    def stopService(self) -> Any:
        super().stopService()
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        if self._report_loop is not None and self._report_loop.running:
            self._report_loop.stop()
        reports = getattr(self.relay, "reports", None)
        if reports is not None:
            reports.save_soon(force=True).addErrback(lambda f: log.failure("queue: saving TLS-RPT data failed", f))
        for entry in self.entries.values():
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()

        def stopped(_: object) -> None:
            self.relay.close_all()
            if self._lock_fd is not None:
                control.unlock(self._lock_fd)
                self._lock_fd = None

        # Let running attempts record their results (a local copy made but not yet
        # written down would be made again after the restart), for a few seconds;
        # a slow remote peer is not waited for longer.
        running = defer.DeferredList(list(self._running_attempts), consumeErrors=True)
        grace = defer.Deferred()
        timer = self.reactor.callLater(SHUTDOWN_GRACE, grace.callback, None)
        running.addBoth(lambda _: timer.cancel() if timer.active() else None)
        running.addBoth(lambda _: None if grace.called else grace.callback(None))

        def last_removals(_: object) -> Any:
            # Finished messages still waiting for their batch, so a clean stop
            # does not send them again after the restart.
            qids, self._removals = self._removals, []
            return self.workers.run(spool.remove_many, self.paths, qids) if qids else None

        grace.addCallback(last_removals)
        grace.addErrback(lambda f: log.warn("queue: removal at stop failed: {why}", why=f.getErrorMessage()))
        return grace.addCallback(stopped)

    def _scan_failed(self, f: Any) -> None:
        if f.check(OSError):
            # The disk, not a bug: one line, and the spool is scanned again at the
            # next start (new messages are still taken and delivered meanwhile).
            log.error("queue: reading the spool failed: {why}", why=f.getErrorMessage())
        else:
            log.failure("queue: reading the spool failed", f)

    def when_loaded(self) -> defer.Deferred:
        """Fires once the start-up scan of the spool is done."""
        return self._when_loaded()

    def adopt(self, qid: str) -> None:
        """A worker process wrote ``qid`` to the spool (fsynced) and leaves it to this
        queue: deliver it."""
        if qid in self.entries:
            return
        d = self._when_loaded()
        d.addCallback(lambda _: self.workers.run(spool.read_record, self.paths, qid))

        def got(rec: Record) -> None:
            if qid not in self.entries and qid not in self._elsewhere and self.running:
                self.entries[qid] = Entry(rec)
                self._schedule(self.entries[qid])

        def failed(f: Any) -> None:
            if f.check(KeyError):  # finished and removed by the worker before it died
                return
            log.error("queue: {qid}: cannot read the message a worker spooled: {why}", qid=qid,
                      why=f.getErrorMessage())

        d.addCallbacks(got, failed)

    # -- first attempts made by worker processes (queue/handover.py) --------------------

    def worker_trying(self, qid: str, worker: int) -> None:
        """Worker ``worker`` spooled ``qid`` and makes its first attempt itself."""
        if qid not in self.entries:
            self._elsewhere[qid] = (worker, self.clock())

    def worker_released(self, qid: str) -> None:
        """The worker's attempt left recipients waiting: this queue takes over."""
        self._elsewhere.pop(qid, None)
        self._taken_back(qid)

    def worker_done(self, qid: str) -> None:
        """The worker's attempt finished the message (and removes its files)."""
        self._elsewhere.pop(qid, None)
        for d in self._delete_waiters.pop(qid, []):
            d.callback(False)  # nothing left to delete: it was delivered meanwhile

    def worker_ended(self, worker: int) -> None:
        """Worker ``worker`` is gone (no attempt of its can still be running): take
        over every message it had not handed back; the spool says where each stands."""
        for qid in [q for q, (w, _) in self._elsewhere.items() if w == worker]:
            del self._elsewhere[qid]
            self._taken_back(qid)

    def _taken_back(self, qid: str) -> None:
        waiters = self._delete_waiters.pop(qid, None)
        if not waiters:
            self.adopt(qid)
            return
        log.info("relay: {qid}: removed by the administrator", qid=qid)
        removed = self.workers.run(spool.remove, self.paths, qid, True)
        for d in waiters:
            removed.addBoth(lambda _, d=d: d.callback(True))

    def _when_loaded(self) -> defer.Deferred:
        if self._is_loaded:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._load_waiters.append(d)
        return d

    def _mark_loaded(self) -> None:
        self._is_loaded = True
        waiters, self._load_waiters = self._load_waiters, []
        for d in waiters:
            d.callback(None)

    def _loaded(self, result: spool.ScanResult) -> None:
        for name, why in result.corrupt:
            log.error("queue: corrupt envelope {name} moved to {dir}: {why}", name=name,
                      dir=str(self.paths.corrupt), why=why)
        if result.orphans:
            log.info("queue: removed {n} body file(s) without envelope left by a crash", n=result.orphans)
        n = 0
        for rec in result.records:
            if rec.id not in self.entries:
                self._recovered.add(rec.id)
                self.entries[rec.id] = Entry(rec)
                self._schedule(self.entries[rec.id])
                n += 1
        if n:
            log.info("queue: {n} message(s) in the spool scheduled", n=n)

    # -- IMessageSink ---------------------------------------------------------------------

    def accept(self, envelope: Envelope, body: BodyFile) -> defer.Deferred:
        """Write the message into the spool (file and folder fsynced); fires with
        "queued".  A spool that cannot be written fails with TemporaryFailure."""
        rec = record_from_envelope(envelope, body.size, body.lines)
        # Not before the start-up scan is done: it removes bodies without envelopes.
        d = self._when_loaded()
        d.addCallback(lambda _: spool.write_durably(self.paths, rec, body, self.workers))

        def written(_: object) -> str:
            entry = Entry(rec, data=body.data)
            self.entries[rec.id] = entry
            self._taken(rec.id)
            self.metrics.message_queued()
            # After the caller's 250 has gone out: callLater, not a direct call.
            entry.timer = self.reactor.callLater(0, self._start, rec.id)
            return "queued"

        return d.addCallback(written)

    def _taken(self, qid: str) -> None:
        """A new message is in the spool, its 250 not yet sent (a worker's queue
        tells the parent here)."""

    # -- admin operations ----------------------------------------------------------------

    def flush(self) -> int:
        n = 0
        for qid in list(self.entries):
            if self.retry(qid):
                n += 1
        return n

    def retry(self, qid: str) -> bool:
        if qid in self._elsewhere:
            return True  # a worker is attempting it right now
        entry = self.entries.get(qid)
        if entry is None or entry.deleted:
            return False
        entry.record = entry.record.due_now()
        if entry.busy:
            entry.again = True
        else:
            self._schedule(entry)
        return True

    def delete(self, qid: str) -> defer.Deferred:
        if qid in self._elsewhere:
            # Removed when the worker's attempt ends, if anything is left to remove.
            waiter: defer.Deferred = defer.Deferred()
            self._delete_waiters.setdefault(qid, []).append(waiter)
            return waiter
        entry = self.entries.get(qid)
        if entry is None or entry.deleted:
            return defer.succeed(False)
        entry.deleted = True
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        log.info("relay: {qid}: removed by the administrator", qid=qid)
        if entry.busy:
            # Removed when the running attempt ends; answer once it is gone.
            d: defer.Deferred = defer.Deferred()
            entry.waiters.append(d)
            return d.addCallback(lambda _: True)
        del self.entries[qid]
        self._recovered.discard(qid)
        return self.workers.run(spool.remove, self.paths, qid).addCallback(lambda _: True)

    def _poll_control(self) -> defer.Deferred:
        d = self.workers.run(control.read_requests, self.paths.control)

        def handle(requests: list) -> defer.Deferred:
            ds = []
            for stem, req in requests:
                ds.append(defer.ensureDeferred(self._handle_request(stem, req)))
            return defer.DeferredList(ds)

        return d.addCallback(handle).addErrback(lambda f: log.failure("queue: control request failed", f))

    async def _handle_request(self, stem: str, req: dict | None) -> None:
        if req is None:
            ok, msg = False, "unreadable request"
        elif req["op"] == "flush":
            n = self.flush()
            ok, msg = True, f"{n} message(s) scheduled for delivery now"
        elif req["op"] == "tls-reports":
            reports = getattr(self.relay, "reports", None)
            if reports is None:
                ok, msg = False, "TLS reports are off ([relay] tls_reports)"
            else:
                n = await reports.send_due(include_today=True)
                ok, msg = True, f"{n} TLS report(s) queued"
        elif req["op"] == "retry":
            qid = str(req.get("id", ""))
            ok = self.retry(qid)
            msg = f"{qid}: scheduled for delivery now" if ok else f"{qid}: no such message in the queue"
        else:
            qid = str(req.get("id", ""))
            ok = await self.delete(qid)
            msg = f"{qid}: deleted" if ok else f"{qid}: no such message in the queue"
        await self.workers.run(control.answer, self.paths.control, stem, ok, msg)

    # -- scheduling ------------------------------------------------------------------------

    def _due(self, rec: Record, now: float) -> float | None:
        times = [r.next_attempt for r in rec.recipients if not r.final]
        if rec.sender and any(r.state == "bounced" and not r.notified for r in rec.recipients):
            times.append(now + self.cfg.backoff_min)
        return min(times) if times else None

    def _schedule(self, entry: Entry) -> None:
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        now = self.clock()
        due = self._due(entry.record, now)
        if due is None:
            return
        entry.timer = self.reactor.callLater(max(0.0, due - now), self._start, entry.record.id)

    def _start(self, qid: str) -> None:
        entry = self.entries.get(qid)
        if entry is None or entry.busy or entry.deleted or not self.running:
            return
        entry.busy = True
        d = defer.ensureDeferred(self._attempt(entry))
        self._running_attempts.add(d)

        def finished(result: object) -> None:
            self._running_attempts.discard(d)
            entry.busy = False
            entry.data = None
            if entry.deleted:
                self.entries.pop(qid, None)
                self._recovered.discard(qid)
                removed = self.workers.run(spool.remove, self.paths, qid, True)
                waiters, entry.waiters = entry.waiters, []
                for w in waiters:
                    removed.addBoth(lambda r, w=w: w.callback(None))
                return
            if entry.record.id not in self.entries:
                self._finished(qid)  # done and removed
                return
            if entry.again:
                # A flush or retry arrived during the attempt, which worked on the
                # record as it was before: make the recipients still waiting due now.
                entry.again = False
                entry.record = entry.record.due_now()
            self._after_attempt(entry)

        def failed(f: Any) -> None:
            if f.check(OSError):  # the spool cannot be written (disk full): one line
                log.error("relay: {qid}: delivery attempt failed: {why}", qid=qid, why=f.getErrorMessage())
            else:
                log.failure("relay: {qid}: delivery attempt failed", f, qid=qid)
            # Retry later rather than spin: push every due recipient back.
            now = self.clock()
            rcpts = tuple(
                replace(r, next_attempt=now + self.cfg.backoff_min) if not r.final and r.next_attempt <= now else r
                for r in entry.record.recipients
            )
            entry.record = replace(entry.record, recipients=rcpts)

        d.addErrback(failed)
        d.addBoth(finished)
        d.addErrback(lambda f: log.failure("relay: {qid}: bookkeeping after an attempt failed", f, qid=qid))

    def _finished(self, qid: str) -> None:
        """An attempt finished the message (its files are removed or going)."""

    def _after_attempt(self, entry: Entry) -> None:
        """An attempt left recipients waiting: the next one is scheduled."""
        self._schedule(entry)

    async def _attempt(self, entry: Entry) -> None:
        rec = entry.record
        now = self.clock()
        due = [i for i, r in enumerate(rec.recipients) if not r.final and r.next_attempt <= now]
        body = BodyFile(str(self.paths.body(rec.id)), rec.size, rec.lines)
        local = [i for i in due if rec.recipients[i].kind == "local"]
        remote = [i for i in due if rec.recipients[i].kind == "remote"]
        if local:
            outcomes = await self._deliver_local(rec, local, body)
            rec = self._apply(rec, outcomes, now)
            entry.record = rec
            if not (rec.done and not self._unnotified(rec)):
                # Durable before the next step: a crash now must not deliver these again.
                await self.workers.run(spool.write_record, self.paths, rec)
        if remote:
            groups: dict[Any, list[int]] = {}
            for i in remote:
                dest = self.router.route(_domain(rec.recipients[i].address))
                groups.setdefault(dest, []).append(i)
            if len(groups) == 1:  # the common case, without the gathering machinery
                ((dest, idxs),) = groups.items()
                outcomes = await self._deliver_group(dest, rec, idxs, entry)
            else:
                results = await defer.gatherResults(
                    [defer.ensureDeferred(self._deliver_group(d, rec, ix, entry)) for d, ix in groups.items()]
                )
                outcomes = {}
                for part in results:
                    outcomes.update(part)
            rec = self._apply(rec, outcomes, now)
            entry.record = rec
        if due:
            rec = self._expire(rec)
        rec = await self._notify(rec)
        entry.record = rec
        if entry.deleted:
            return
        if rec.done and not self._unnotified(rec):
            del self.entries[rec.id]
            self._recovered.discard(rec.id)
            # A removal that undoes no local copy need not be durable: a remote-only
            # message that reappears after a crash is sent again, which SMTP
            # tolerates, and skipping the directory fsync is most of the relay's
            # throughput.  After local copies it must be durable (no second copy).
            if local:
                await self.workers.run(spool.remove, self.paths, rec.id, True)
            else:
                self._remove_soon(rec.id)
        else:
            await self.workers.run(spool.write_record, self.paths, rec)

    def _remove_soon(self, qid: str) -> None:
        """Remove a finished message's files; removals that come in the same reactor
        turn share one trip to the worker pool (one per message cost ~3% at 500/s)."""
        self._removals.append(qid)
        if len(self._removals) == 1:
            self.reactor.callLater(0, self._flush_removals)

    def _flush_removals(self) -> None:
        qids, self._removals = self._removals, []
        self.workers.run(spool.remove_many, self.paths, qids).addErrback(
            lambda f: log.warn("queue: removing {n} finished message(s) failed, they go at the next start: {why}",
                               n=len(qids), why=f.getErrorMessage()))

    def _unnotified(self, rec: Record) -> bool:
        return bool(rec.sender) and any(r.final and not r.notified for r in rec.recipients)

    async def _deliver_local(self, rec: Record, idxs: list[int], body: BodyFile) -> dict[int, Outcome]:
        env = Envelope(
            queue_id=rec.id, sender=rec.sender, recipients=tuple(rec.recipients[i].orcpt for i in idxs),
            mailboxes={rec.recipients[i].address: rec.recipients[i].orcpt for i in idxs},
            client_ip=rec.client_ip, helo=rec.helo, auth_user=rec.auth_user, arrival=rec.arrival,
            folder=rec.folder,
        )
        try:
            results = await self.local.deliver(env, body, stable=True, check_existing=rec.id in self._recovered)
        except Exception as e:  # noqa: BLE001 - TemporaryFailure, or a bug: all retried
            return {i: Outcome("deferred", "4.3.0", f"local delivery failed: {e}", "local") for i in idxs}
        status = {TEMPORARY: "deferred", PERMANENT: "bounced"}
        out = {}
        for i in idxs:
            r = results[rec.recipients[i].address]
            out[i] = Outcome(status.get(r.status, "sent"), r.dsn, r.text, "local")
        return out

    async def _deliver_group(self, dest: Any, rec: Record, idxs: list[int], entry: Entry) -> dict[int, Outcome]:
        sem = self._limits.get(dest.key)
        if sem is None:
            sem = self._limits[dest.key] = defer.DeferredSemaphore(self.concurrency)
        await sem.acquire()
        try:
            addrs = [rec.recipients[i].address for i in idxs]
            tx = Transaction(self.sender_for(rec), addrs, str(self.paths.body(rec.id)), rec.size, rec.lines, entry.data,
                             smtputf8=await self._needs_smtputf8(rec, entry), body_type=rec.body,
                             ret=rec.ret, envid=rec.envid, requiretls=rec.requiretls,
                             rcpt_dsn={rec.recipients[i].address: (rec.recipients[i].notify, rec.recipients[i].original)
                                       for i in idxs if rec.recipients[i].notify or rec.recipients[i].original})
            started = time.perf_counter()
            try:
                by_addr = await self.relay.deliver(dest, tx)
                self.metrics.relay_attempt(time.perf_counter() - started)
            except Exception as e:  # noqa: BLE001 - never lose the message to a bug: retry
                log.failure("relay: {qid}: unexpected error", qid=rec.id)
                by_addr = {a: Outcome("deferred", "4.3.0", f"internal error: {e}") for a in addrs}
        finally:
            sem.release()
            if not sem.waiting and sem.tokens == sem.limit:
                self._limits.pop(dest.key, None)
        return {i: by_addr[rec.recipients[i].address] for i in idxs}

    async def _needs_smtputf8(self, rec: Record, entry: Entry) -> bool:
        """Does this message need SMTPUTF8 at the next hop?  Only if the client used it
        and something cannot be written in ASCII: a local part of the envelope, or the
        header block (RFC 6532).  A message that merely said SMTPUTF8 but is all ASCII
        goes to any hop (as Postfix's smtputf8_autodetect)."""
        if not rec.smtputf8:
            return False
        if not rec.sender.rpartition("@")[0].isascii() or any(
                not r.address.rpartition("@")[0].isascii() for r in rec.recipients):
            return True
        if entry.data is not None:
            end = entry.data.find(b"\n\n")
            head = entry.data if end < 0 else entry.data[:end]
        else:
            try:
                head = b"".join(await self.workers.run(lambda: list(spool.iter_headers(self.paths.body(rec.id)))))
            except OSError:
                return True
        return not head.isascii()

    def _backoff(self, attempts: int) -> float:
        return float(min(self.cfg.backoff_max, self.cfg.backoff_min * (2 ** max(0, min(attempts - 1, 30)))))

    def _apply(self, rec: Record, outcomes: dict[int, Outcome], started: float) -> Record:
        now = self.clock()
        for i, o in outcomes.items():
            r = rec.recipients[i]
            attempts = r.attempts + 1
            changes: dict[str, Any] = dict(attempts=attempts, last_attempt=now, dsn=o.dsn, error=o.text, relay=o.relay,
                                           tls_policy=o.policy)
            nxt = ""
            if o.status == "sent":
                changes["state"] = "sent"
                if o.dsn_passed or not dsnparams.wants(r.notify, "SUCCESS"):
                    # Nothing to report, or the next hop reports it (RFC 3461 5.2).
                    changes["notified"] = True
            elif o.status == "bounced":
                changes["state"] = "bounced"
            else:
                changes["next_attempt"] = now + self._backoff(attempts)
                nxt = f", next={_when(changes['next_attempt'])}"
            rec = rec.with_recipient(i, **changes)
            self.metrics.recipient_done(o.status, r.kind, now - rec.arrival)
            orig = f", orig_to=<{r.orcpt}>" if r.orcpt and r.orcpt != r.address else ""
            # Formatted here, logged as one field: the logger's own formatting of a
            # dozen fields cost several percent of the reactor at 500 msg/s.
            log.info("{line}", line=(
                f"relay: {rec.id}: to=<{r.address}>{orig}, relay={o.relay}, tls={o.tls or 'none'}, "
                f"policy={o.policy or 'none'}, "
                f"delay={now - rec.arrival:.2f}, attempts={attempts}, dsn={o.dsn}, status={o.status} ({o.text}){nxt}"
            ), qid=rec.id, to=r.address, status=o.status)
        return rec

    def _expire(self, rec: Record) -> Record:
        now = self.clock()
        if now - rec.arrival < self.cfg.max_lifetime:
            return rec
        for i, r in enumerate(rec.recipients):
            if r.final:
                continue
            text = f"message expired after {int(now - rec.arrival)}s in the queue; last error: {r.error or 'none'}"
            rec = rec.with_recipient(i, state="bounced", dsn="4.4.7", error=text)
            self.metrics.recipient_done("bounced", r.kind, now - rec.arrival)
            log.info(
                "relay: {qid}: to=<{to}>, relay={relay}, delay={delay:.2f}, attempts={attempts}, dsn=4.4.7, "
                "status=bounced (message expired; last error: {error})",
                qid=rec.id, to=r.address, relay=r.relay or "none", delay=now - rec.arrival, attempts=r.attempts,
                error=r.error or "none",
            )
        return rec

    # -- DSNs ------------------------------------------------------------------------------

    async def _notify(self, rec: Record) -> Record:
        now = self.clock()
        bounced = [i for i, r in enumerate(rec.recipients) if r.state == "bounced" and not r.notified]
        if bounced and not rec.sender:
            # RFC 5321 §6.1: never a DSN for a message from <> (no bounce loops).
            for i in bounced:
                rec = rec.with_recipient(i, notified=True)
            log.info("relay: {qid}: from=<>: no bounce for a bounce", qid=rec.id)
            return rec
        if bounced:
            # RFC 3461 4.1: NOTIFY without FAILURE (or NEVER) means no failure DSN.
            silent = [i for i in bounced if not dsnparams.wants(rec.recipients[i].notify, "FAILURE")]
            for i in silent:
                rec = rec.with_recipient(i, notified=True)
                log.info("relay: {qid}: to=<{to}>: NOTIFY={notify}: no failure DSN", qid=rec.id,
                         to=rec.recipients[i].address, notify=rec.recipients[i].notify)
            loud = [i for i in bounced if i not in silent]
            if loud and await self._send_dsn(rec, [rec.recipients[i] for i in loud], "failed"):
                for i in loud:
                    rec = rec.with_recipient(i, notified=True)
        # Success DSNs (NOTIFY=SUCCESS): "delivered" for a local copy, "relayed" for a
        # next hop that does not offer DSN (RFC 3464 2.3.3).
        for action, kind in (("delivered", "local"), ("relayed", "remote")):
            done = [i for i, r in enumerate(rec.recipients) if r.state == "sent" and not r.notified and r.kind == kind]
            if done and (not rec.sender or await self._send_dsn(rec, [rec.recipients[i] for i in done], action)):
                for i in done:
                    rec = rec.with_recipient(i, notified=True)
        pending = [r for r in rec.recipients if not r.final and dsnparams.wants(r.notify, "DELAY")]
        if (
            self.cfg.delay_warning
            and rec.sender
            and pending
            and not rec.delay_warned
            and now - rec.arrival >= self.cfg.delay_warning
        ):
            if await self._send_dsn(rec, pending, "delayed"):
                rec = replace(rec, delay_warned=True)
        return rec

    async def _send_dsn(self, rec: Record, rcpts: list[Recipient], action: str) -> bool:
        """Queue or deliver a DSN to ``rec.sender``; True when it is durable (or cannot
        ever be delivered and was dropped with a log line)."""
        # RFC 3461 4.3: RET=FULL returns the whole message with a failure DSN (up to
        # FULL_RETURN_LIMIT; bigger ones get their headers, as RFC 3461 allows).
        full = action == "failed" and rec.ret == "FULL" and rec.size <= FULL_RETURN_LIMIT
        try:
            if full:
                original = await self.workers.run(self.paths.body(rec.id).read_bytes)
            else:
                original = b"".join(await self.workers.run(lambda: list(spool.iter_headers(self.paths.body(rec.id)))))
        except OSError:
            original, full = b"", False
        body = dsn.build(rec, rcpts, original, self.hostname, action,
                         retry_until=rec.arrival + self.cfg.max_lifetime, full=full)
        qid = new_queue_id()
        sender = rec.sender
        mailboxes: dict[str, str] = {}
        forwards: tuple[str, ...] = ()
        if canonical_domain(_domain(sender)) in self.config.server.domains:
            try:
                res = await self.directory.resolve(sender)
            except Exception as e:  # noqa: BLE001 - DirectoryUnavailable: try at the next attempt
                log.warn("relay: {qid}: sender <{sender}> not resolvable now ({e}); DSN postponed",
                         qid=rec.id, sender=sender, e=str(e))
                return False
            if not res:
                log.warn("relay: {qid}: sender <{sender}> is not a local address; {action} DSN dropped",
                         qid=rec.id, sender=sender, action=action)
                return True
            mailboxes = {box: sender for box in res.mailboxes}
            forwards = tuple(res.forwards)
        else:
            forwards = (sender,)
        env = Envelope(queue_id=qid, sender="", recipients=(sender,), mailboxes=mailboxes, forwards=forwards,
                       helo=self.hostname, smtputf8=rec.smtputf8)
        received = (f"Received: by {self.hostname} (mailsuite) id {qid};\n\t{formatdate(usegmt=True)}\n")
        data = received.encode() + body
        bf = BodyFile(str(self.config.queue_dir / "incoming" / qid), len(data), data.count(b"\n"), data)
        try:
            result = await self.dsn_sink.accept(env, bf)
        except Exception as e:  # noqa: BLE001 - TemporaryFailure: try at the next attempt
            log.warn("relay: {qid}: could not queue the DSN: {e}", qid=rec.id, e=str(e))
            return False
        what = {"failed": "non-delivery", "delayed": "delay"}.get(action, "delivery")
        log.info("relay: {qid}: sender {action} notification: {dsn_id} ({result})",
                 qid=rec.id, action=what, dsn_id=qid, result=result)
        return True

