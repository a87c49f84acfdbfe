"""The parent of several processes: starts the workers on the shared listening
sockets, restarts one that dies, passes SIGHUP on, stops them all on shutdown, and
relays what they say.

Each worker gets, besides the listening sockets (from descriptor 5 on):

- descriptor 3, its log: Twisted's JSON log events, which the parent publishes into
  its own log with the worker's number in the system field
  (``[mailsuite.smtp#info w2]``), so one log file says which process did what;
- descriptor 4, its hand-overs: a line per message it spooled (``trying``), finished
  (``done``) or handed back for retries (``released``), and per TLS-RPT result
  (``tlsrpt``), which the parent's queue acts on (queue/handover.py).  When a worker
  ends, the queue takes over every message that worker had not handed back.

A worker that dies is started again after a pause that doubles while workers keep
dying within ``STABLE_AFTER`` seconds of their start (1 s up to 30 s), so a worker
that cannot start does not spin.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher

from mailsuite.process.listeners import SharingBinder

log = Logger(namespace="mailsuite.process")

LOG_FD = 3
CONTROL_FD = 4
FIRST_SOCKET_FD = 5
STABLE_AFTER = 10.0
MAX_RESTART_DELAY = 30.0
STOP_TIMEOUT = 15.0


class WorkerProtocol(protocol.ProcessProtocol):
    def __init__(self, supervisor: "WorkerSupervisor", index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = time.monotonic()
        self.pid: int | None = None
        self.ended: defer.Deferred = defer.Deferred()
        self._log_buf = b""
        self._control_buf = b""

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == LOG_FD:
            # jsonFileLogObserver writes "\x1e<json>\n"; JSON text holds no raw
            # newline, so a record is complete at its newline.
            self._log_buf += data
            *records, self._log_buf = self._log_buf.split(b"\n")
            for rec in records:
                self._publish(rec.lstrip(b"\x1e"))
        elif childFD == CONTROL_FD:
            self._control_buf += data
            *lines, self._control_buf = self._control_buf.split(b"\n")
            for line in lines:
                self._control(line.decode("ascii", "replace").strip())
        else:  # stray output on stdout/stderr (an import warning, a crash)
            for line in data.decode("utf-8", "replace").splitlines():
                if line.strip():
                    log.warn("worker {n}: {line}", n=self.index, line=line)

    def _publish(self, rec: bytes) -> None:
        text = rec.strip()
        if not text:
            return
        try:
            event = eventFromJSON(text.decode("utf-8", "replace"))
        except ValueError:
            log.warn("worker {n}: unreadable log record", n=self.index)
            return
        level = event.get("log_level")
        event["log_system"] = f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')} w{self.index}"
        event["mailsuite_worker"] = self.index
        globalLogPublisher(event)

    def _control(self, line: str) -> None:
        op, _, arg = line.partition(" ")
        queue = self.supervisor.queue
        if not arg:
            if line:
                log.warn("worker {n}: unknown request {line!r}", n=self.index, line=line[:80])
        elif op == "trying":
            queue.worker_trying(arg, self.index)
        elif op == "done":
            queue.worker_done(arg)
        elif op == "released":
            queue.worker_released(arg)
        elif op == "tlsrpt":
            reports = getattr(queue.relay, "reports", None)
            try:
                args = json.loads(arg)
            except ValueError:
                args = None
            if reports is not None and isinstance(args, list):
                reports.record(*args)
        else:
            log.warn("worker {n}: unknown request {line!r}", n=self.index, line=line[:80])

    def processEnded(self, reason: Any) -> None:
        self.supervisor._ended(self, reason)
        self.ended.callback(None)


class WorkerSupervisor(service.Service):
    name = "workers"

    def __init__(
        self,
        reactor: Any,
        count: int,
        config_path: Path,
        binder: SharingBinder,
        queue: Any,
        ready: Callable[[], defer.Deferred] | None = None,
        python: str = sys.executable,
        on_ended: Callable[[int], None] | None = None,
    ) -> None:
        self.on_ended = on_ended  # pid of a worker that ended (its live metrics go)
        self.reactor = reactor
        self.count = count
        self.config_path = config_path
        self.binder = binder
        self.queue = queue  # the parent's QueueManager: hand-overs go there
        self.ready = ready
        self.python = python
        self.workers: dict[int, WorkerProtocol] = {}
        self._delay: dict[int, float] = {}
        self._pending: dict[int, Any] = {}
        self._prev_hup: Any = None

    def startService(self) -> None:
        super().startService()
        d = self.ready() if self.ready is not None else defer.succeed(None)
        d.addCallback(lambda _: [self._spawn(k) for k in range(1, self.count + 1)])
        d.addErrback(lambda f: log.failure("process: starting the workers failed", f))
        try:
            self._prev_hup = signal.getsignal(signal.SIGHUP)
            signal.signal(signal.SIGHUP, self._on_hup)
        except ValueError:  # not the main thread (tests)
            self._prev_hup = None

    def _on_hup(self, signum: int, frame: Any) -> None:
        if callable(self._prev_hup):
            self._prev_hup(signum, frame)
        self.reactor.callFromThread(self.signal_all, "HUP")

    def signal_all(self, sig: str) -> None:
        for w in list(self.workers.values()):
            try:
                w.transport.signalProcess(sig)
            except Exception:  # already gone
                pass

    def _spawn(self, index: int) -> None:
        self._pending.pop(index, None)
        if not self.running:
            return
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r", LOG_FD: "r", CONTROL_FD: "r"}
        args = [self.python, "-m", "mailsuite.process.worker", "--config", str(self.config_path),
                "--index", str(index), "--count", str(self.count), "--parent", str(os.getpid())]
        for i, s in enumerate(self.binder.sockets):
            fd = FIRST_SOCKET_FD + i
            child_fds[fd] = s.fd
            args += ["--listener", json.dumps([fd, s.family, s.desc])]
        proto = WorkerProtocol(self, index)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        proc = self.reactor.spawnProcess(proto, self.python, args, env=env, childFDs=child_fds)
        proto.pid = proc.pid
        self.workers[index] = proto
        log.info("process: worker {n} started (pid {pid})", n=index, pid=proto.pid)

    def _ended(self, proto: WorkerProtocol, reason: Any) -> None:
        if self.workers.get(proto.index) is proto:
            del self.workers[proto.index]
        # Every line it wrote has been read (processEnded comes after its pipes close).
        try:
            self.queue.worker_ended(proto.index)
        except Exception:
            log.failure("process: taking over worker {n}'s messages failed", n=proto.index)
        if self.on_ended is not None and proto.pid is not None:
            try:
                self.on_ended(proto.pid)
            except Exception:
                log.failure("process: cleaning up after worker {n} failed", n=proto.index)
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        how = f"signal {sig}" if sig else f"exit status {code}"
        if not self.running:
            log.info("process: worker {n} (pid {pid}) stopped ({how})", n=proto.index, pid=proto.pid, how=how)
            return
        lived = time.monotonic() - proto.started
        delay = 0.0 if lived >= STABLE_AFTER else min(MAX_RESTART_DELAY, max(1.0, 2 * self._delay.get(proto.index, 0.5)))
        self._delay[proto.index] = delay
        log.error("process: worker {n} (pid {pid}) ended ({how}); starting it again in {delay:.0f} s",
                  n=proto.index, pid=proto.pid, how=how, delay=delay)
        self._pending[proto.index] = self.reactor.callLater(delay, self._spawn, proto.index)

    def stopService(self) -> Any:
        super().stopService()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        if self._prev_hup is not None:
            try:
                signal.signal(signal.SIGHUP, self._prev_hup)
            except ValueError:
                pass
        running = list(self.workers.values())
        if not running:
            return None
        # SIGTERM: each worker stops accepting and closes its services; the parent
        # waits, then kills what is left.
        self.signal_all("TERM")
        done = defer.DeferredList([w.ended for w in running])
        timer = self.reactor.callLater(STOP_TIMEOUT, self.signal_all, "KILL")
        done.addBoth(lambda _: timer.cancel() if timer.active() else None)
        return done
