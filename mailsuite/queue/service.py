"""Builds the queue manager (scheduler, relay, control requests) from the config (in
a worker process, the worker's first-attempt queue: queue/handover.py);
``mailsuite.service`` adds it to the suite as a child service and hands it to the
dispatcher as the sink for messages with remote recipients."""

from __future__ import annotations

from typing import Any

from mailsuite.delivery.local import ILocalDelivery
from mailsuite.queue.mtasts import MTASTS, PolicyCache
from mailsuite.queue.handover import ForwardedTLSResults, WorkerQueue
from mailsuite.queue.mx import MXResolver
from mailsuite.queue.tlsrpt import TLSReports
from mailsuite.queue.relay import Relay
from mailsuite.queue.route import Router, read_auth_file
from mailsuite.queue.scheduler import QueueManager


def build_queue(cfg: Any, local: ILocalDelivery, directory: Any, resolver: Any, reactor: Any, workers: Any,
                wrap_dsn_sink: Any = None, metrics: Any = None, sender_rewriter: Any = None,
                worker_channel: Any = None, worker_count: int = 1) -> QueueManager:
    """``resolver``: the suite's one DNS resolver (mailsuite.dns) for MX lookups;
    ``workers``: the pool for the spool's fsyncs (mailsuite.workers.IWorkers);
    ``wrap_dsn_sink``: wraps the sink DSNs enter by (DKIM signing);
    ``worker_channel``: in a worker process, its line to the parent: the queue is
    then a :class:`~mailsuite.queue.handover.WorkerQueue` (first attempts only)."""
    relay_cfg = cfg.relay
    auth = read_auth_file(relay_cfg.smarthost_auth_file) if relay_cfg.smarthost_auth_file else None
    router = Router(relay_cfg, auth)
    mx = MXResolver(resolver)
    relay = Relay(relay_cfg, cfg.server.hostname, mx, reactor=reactor, resolver=resolver)
    if relay_cfg.mta_sts:
        cache = PolicyCache(cfg.queue_dir / "mta-sts.json", workers)
        cache.load()  # at start, before the reactor runs: a small file
        relay.mtasts = MTASTS(resolver, cache, reactor, trust_root=relay.trust_root, port=relay_cfg.mta_sts_port,
                              timeout=relay_cfg.connect_timeout)
    if relay_cfg.tls_reports and worker_channel is not None:
        relay.reports = ForwardedTLSResults(worker_channel)  # counted in the parent's one file
    elif relay_cfg.tls_reports:
        domain = cfg.server.domains[0] if cfg.server.domains else cfg.server.hostname
        relay.reports = TLSReports(cfg.queue_dir / "tls-rpt.json", cfg.server.hostname, f"postmaster@{domain}", resolver,
                                   workers)
        relay.reports.load()
    if worker_channel is not None:
        return WorkerQueue(cfg, local, directory, relay, router, reactor=reactor, workers=workers,
                           wrap_dsn_sink=wrap_dsn_sink, metrics=metrics, sender_rewriter=sender_rewriter,
                           channel=worker_channel, worker_count=worker_count)
    return QueueManager(cfg, local, directory, relay, router, reactor=reactor, workers=workers,
                        wrap_dsn_sink=wrap_dsn_sink,
                        metrics=metrics, sender_rewriter=sender_rewriter)
