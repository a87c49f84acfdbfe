"""A worker process: ``python -m mailsuite.process.worker`` (started by the parent's
:class:`~mailsuite.process.supervisor.WorkerSupervisor`, never by hand).

It loads the same config file, builds the same suite as a single process would, but
serves SMTP, submission, IMAP and POP3 on the listening sockets inherited from the
parent, hands spooled messages to the parent's queue, and logs to the parent (in
batches: process/logbatch.py).
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
    """A worker whose parent was killed (-9) stops too, at once: the relay queue runs
    in the parent, and systemd restarts the whole.  SIGKILL, not SIGTERM: a graceful
    stop under load took over 10 s, and nothing a worker acknowledged depends on it
    (every 250 follows an fsync)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ParentChannel:
    """The hand-over line to the parent: one ``queued <id>`` per spooled message."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def queued(self, queue_id: str) -> None:
        try:
            os.write(self.fd, f"queued {queue_id}\n".encode("ascii"))
        except OSError:
            pass  # the parent is gone; the spool is scanned at its next start


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
