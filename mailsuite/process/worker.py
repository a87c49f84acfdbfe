"""A worker process: ``python -m mailsuite.process.worker`` (started by the parent's
:class:`~mailsuite.process.supervisor.WorkerSupervisor`, never by hand).

It loads the same config file, builds the same suite as a single process would, but
serves SMTP, submission, IMAP and POP3 on the listening sockets inherited from the
parent, makes the first delivery attempt of the messages it spools and hands the rest
to the parent's queue (queue/handover.py), and logs to the parent (in batches:
process/logbatch.py).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys

from mailsuite.process.listeners import SharedSocket
from mailsuite.process.logbatch import BatchedLogPipe
from mailsuite.process.roles import WorkerRole
from mailsuite.process.supervisor import CONTROL_FD, LOG_FD


def _die_with_parent() -> None:
    """A worker whose parent was killed (-9) stops too, at once: the relay queue's
    retries run in the parent, a new parent's start-up scan must not race a worker's
    attempt, and systemd restarts the whole.  SIGKILL, not SIGTERM: a graceful
    stop under load took over 10 s, and nothing a worker acknowledged depends on it
    (every 250 follows an fsync)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ParentChannel:
    """The hand-over line to the parent (queue/handover.py): one line per message
    this worker spooled, attempted, finished or handed back, and per TLS result."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _say(self, line: str) -> None:
        try:
            os.write(self.fd, line.encode("utf-8") + b"\n")
        except OSError:
            pass  # the parent is gone (and this worker with it); its next start scans the spool

    def trying(self, queue_id: str) -> None:
        self._say(f"trying {queue_id}")

    def done(self, queue_id: str) -> None:
        self._say(f"done {queue_id}")

    def released(self, queue_id: str) -> None:
        self._say(f"released {queue_id}")

    def tls_result(self, args_json: str) -> None:
        self._say(f"tlsrpt {args_json}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mailsuite-worker")
    p.add_argument("--config", required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--listener", action="append", default=[])
    p.add_argument("--parent", type=int, default=0, help="the supervisor's pid")
    # Until the suite has its own handler: a SIGHUP (certificate reload) that comes
    # while this worker is still starting must not kill it; it reads the files anew
    # as it starts anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = p.parse_args(argv)
    _die_with_parent()
    # The parent may have died before the line above ran (a start takes seconds
    # under load): then no signal will come, and the worker must not stay.
    if args.parent and os.getppid() != args.parent:
        return 1

    from twisted.internet import reactor
    from twisted.logger import Logger, globalLogBeginner

    from mailsuite import config as config_mod
    from mailsuite import service as service_mod
    from mailsuite.process.listeners import AdoptingBinder

    log_pipe = BatchedLogPipe(LOG_FD, reactor)
    globalLogBeginner.beginLoggingTo([log_pipe], redirectStandardIO=False)
    reactor.addSystemEventTrigger("after", "shutdown", log_pipe.flush)
    inherited = []
    for spec in args.listener:
        fd, family, desc = json.loads(spec)
        inherited.append(SharedSocket(desc, int(fd), int(family)))
    cfg = config_mod.load(args.config)
    role = WorkerRole(index=args.index, count=args.count, channel=ParentChannel(CONTROL_FD))
    top, _suite = service_mod.build_service(cfg, reactor, binder=AdoptingBinder(reactor, inherited), role=role)
    top.privilegedStartService()
    top.startService()
    Logger(namespace="mailsuite.process").info("process: worker {n} serving (pid {pid})", n=args.index, pid=os.getpid())
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()
    log_pipe.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
