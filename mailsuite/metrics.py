"""The suite's Prometheus metrics: one :class:`Metrics` object per process, passed to
the services, holding its own ``CollectorRegistry`` (never prometheus-client's global
one, so two servers in one test process do not mix).

The services call one method per event, each a line at the place it happens:

* SMTP: :meth:`message_received` after a 250 to DATA, :meth:`smtp_reply` for every
  4xx/5xx reply (counted by reply code and enhanced status: the "reason");
* the queue: :meth:`message_queued`, :meth:`recipient_done` (delivered / deferred /
  bounced, with the delay since arrival), :meth:`relay_attempt`, :meth:`watch_queue`;
* the fast path: :meth:`local_delivery`;
* logins and the auth throttle: :meth:`login`, :meth:`throttle_event`;
* LDAP: :meth:`ldap_request` (count, errors, latency from the Deferred);
* every listener: :meth:`count_connections` wraps its factory (open and total
  connections per protocol and listener, TLS versions);
* the process: reactor lag (a timer that measures how late it fires), the worker
  pool's backlog, and fsync latency (a probe: see :meth:`_probe_fsync`).

With several processes (``[server] processes``) every process keeps its values in
memory-mapped files under ``<data_dir>/metrics/`` (prometheus-client's multiprocess
mode, the library's own answer for pre-forked servers): a scrape answered by any
worker then sums every process's counters and histograms, live gauges are summed
over living processes, and the queue's gauges come from the parent that runs it.

Counters are cumulative since start, as Prometheus expects; :meth:`today` turns them
into counts since local midnight for the dashboard and ``mailsuite status``, and the
same figures are exported as ``mailsuite_today`` gauges so the CLI can read them from
``/metrics``.  :class:`NullMetrics` has the same methods and does nothing
(``[http] metrics = false``, and tests that build protocols by hand).
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from twisted.internet import defer, task
from twisted.internet.interfaces import IHandshakeListener, ISSLTransport
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger(namespace="mailsuite.metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DELAY_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 5 * 86400.0)
FSYNC_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# Seconds between refreshes of the shared "today" gauges with several processes.
TODAY_REFRESH = 15

# The counters the dashboard shows per day: name -> (metric attribute, label filter).
TODAY = ("received", "delivered", "queued", "deferred", "bounced", "rejected", "logins_failed")


def _sum(metric: Any, **match: str) -> float:
    """The sum of a labelled counter's children whose labels match ``match``."""
    total = 0.0
    for fam in metric.collect():
        for s in fam.samples:
            if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in match.items()):
                total += s.value
    return total


class Metrics:
    """All metrics of one process; see the module docstring."""

    enabled = True

    def __init__(self, registry: CollectorRegistry | None = None, clock: Any = None,
                 probe_dir: Path | None = None, pool_stats: Callable[[], Any] | None = None,
                 shared_dir: Path | None = None, workers: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self.clock = clock
        self.workers = workers  # mailsuite.workers.IWorkers: where the fsync probe runs (with probe_dir)
        # Several processes: values in shared files (see the module docstring).
        self.shared_dir = shared_dir
        if shared_dir is not None:
            use_shared_values(shared_dir)
        mode = _gauge_modes(shared_dir is not None)
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.probe_dir = probe_dir
        r = self.registry
        p = "mailsuite_"
        self.received = Counter(p + "messages_received", "Messages accepted (250 to DATA)", ["service"], registry=r)
        self.rejected = Counter(p + "smtp_rejected", "SMTP 4xx/5xx replies, by reply code and enhanced status",
                                ["service", "code", "status"], registry=r)
        self.queued = Counter(p + "messages_queued", "Messages written to the relay queue", registry=r)
        self.outcomes = Counter(p + "recipients", "Recipient delivery outcomes in the queue (delivered, deferred, bounced)",
                                ["outcome", "kind"], registry=r)
        self.delivered_fast = Counter(p + "fast_path_deliveries", "Messages delivered to local mailboxes before the 250",
                                      registry=r)
        self.delivery_delay = Histogram(p + "delivery_delay_seconds", "Arrival to final delivery of a recipient",
                                        ["kind"], buckets=DELAY_BUCKETS, registry=r)
        self.local_delivery_seconds = Histogram(p + "local_delivery_seconds",
                                                "Writing a message into local mailboxes (fsync included)",
                                                buckets=LATENCY_BUCKETS, registry=r)
        self.relay_seconds = Histogram(p + "relay_attempt_seconds", "One SMTP transaction to a remote host",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_size = Gauge(p + "queue_messages", "Messages in the relay queue", registry=r, **mode("max"))
        self.queue_oldest = Gauge(p + "queue_oldest_age_seconds", "Age of the oldest message in the queue", registry=r,
                                  **mode("max"))
        self.conn_open = Gauge(p + "connections_open", "Open connections", ["protocol", "listener"], registry=r,
                               **mode("livesum"))
        self.conn_total = Counter(p + "connections", "Connections accepted", ["protocol", "listener"], registry=r)
        self.tls = Counter(p + "tls_connections", "TLS sessions by protocol version", ["protocol", "version"], registry=r)
        self.logins = Counter(p + "logins", "Password logins", ["protocol", "result"], registry=r)
        self.throttle = Counter(p + "auth_throttle_events", "Auth throttle actions (delayed, refused)", ["action"],
                                registry=r)
        self.ldap_requests = Counter(p + "ldap_requests", "LDAP directory requests", ["operation"], registry=r)
        self.ldap_errors = Counter(p + "ldap_errors", "LDAP directory requests that failed", ["operation"], registry=r)
        self.ldap_seconds = Histogram(p + "ldap_request_seconds", "LDAP request latency (cache misses)",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.fsync_seconds = Histogram(p + "fsync_seconds", "fsync latency of a 4 KiB file in data_dir (probe)",
                                       buckets=FSYNC_BUCKETS, registry=r)
        self.reactor_lag = Gauge(p + "reactor_lag_seconds", "How late the last 1-second reactor timer fired", registry=r,
                                 **mode("livemax"))
        self.reactor_lag_hist = Histogram(p + "reactor_lag_seconds_distribution", "Reactor timer lateness",
                                          buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0), registry=r)
        self.pool_backlog = Gauge(p + "worker_pool_queue_length", "Jobs waiting for a worker thread", registry=r,
                                  **mode("livesum"))
        self.pool_busy = Gauge(p + "worker_pool_busy_threads", "Worker threads running a job", registry=r,
                               **mode("livesum"))
        self.today_gauge = Gauge(p + "today", "Counts since local midnight (for the dashboard)", ["what"], registry=r,
                                 **mode("max"))
        self.start_time = Gauge(p + "start_time_seconds", "When this process started (Unix time)", registry=r,
                                **mode("min"))
        self.start_time.set(time.time())
        self._children: dict[tuple, Any] = {}
        self._queue_arrivals: Callable[[], Iterable[float]] | None = None
        self._pool_stats = pool_stats
        if shared_dir is None:
            # One process: computed at the scrape.  Shared files cannot hold a
            # function, so several processes set them each second (_refresh).
            self.queue_size.set_function(self._queue_count)
            self.queue_oldest.set_function(self._queue_oldest)
            if pool_stats is not None:
                self.pool_backlog.set_function(lambda: pool_stats().backloggedWorkCount)
                self.pool_busy.set_function(lambda: pool_stats().busyWorkerCount)
            for what in TODAY:
                self.today_gauge.labels(what).set_function(lambda what=what: self.today()[what])
        self._baseline: dict[str, float] = {w: 0.0 for w in TODAY}
        self._day = datetime.date.today()
        self._lag_timer: task.LoopingCall | None = None
        self._refreshes = 0
        self._probe_timer: task.LoopingCall | None = None
        self._lag_expected = 0.0

    # -- label children, cached (labels() takes a lock and builds a tuple each call) --

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    # -- hooks --------------------------------------------------------------------------

    def message_received(self, service: str) -> None:
        self._child(self.received, service).inc()

    def smtp_reply(self, service: str, code: int, status: str) -> None:
        if code >= 400:
            self._child(self.rejected, service, str(code), status or "").inc()

    def message_queued(self) -> None:
        self.queued.inc()

    def local_delivery(self, seconds: float) -> None:
        self.delivered_fast.inc()
        self.local_delivery_seconds.observe(seconds)

    def recipient_done(self, outcome: str, kind: str, delay: float) -> None:
        """``outcome``: "sent", "deferred" or "bounced"; ``kind``: "local" or "remote"."""
        outcome = "delivered" if outcome == "sent" else outcome
        self._child(self.outcomes, outcome, kind).inc()
        if outcome == "delivered":
            self._child(self.delivery_delay, kind).observe(max(0.0, delay))

    def relay_attempt(self, seconds: float) -> None:
        self.relay_seconds.observe(seconds)

    def watch_queue(self, arrivals: Callable[[], Iterable[float]]) -> None:
        """``arrivals()`` gives the arrival time of each queued message (read at scrape)."""
        self._queue_arrivals = arrivals

    def login(self, protocol: str, ok: bool) -> None:
        self._child(self.logins, protocol, "ok" if ok else "failed").inc()

    def throttle_event(self, action: str) -> None:
        self._child(self.throttle, action).inc()

    def ldap_request(self, operation: str, d: defer.Deferred) -> defer.Deferred:
        """Count ``d``, an LDAP request just started, and time it until it fires."""
        self._child(self.ldap_requests, operation).inc()
        started = time.perf_counter()

        def done(result: Any) -> Any:
            self.ldap_seconds.observe(time.perf_counter() - started)
            if isinstance(result, Failure):
                self._child(self.ldap_errors, operation).inc()
            return result

        return d.addBoth(done)

    def count_connections(self, factory: Any, protocol: str, listener: str) -> Any:
        return _CountingFactory(factory, self, protocol, listener)

    # -- derived ------------------------------------------------------------------------

    def _queue_count(self) -> float:
        return float(len(list(self._queue_arrivals()))) if self._queue_arrivals else 0.0

    def _queue_oldest(self) -> float:
        if self._queue_arrivals is None:
            return 0.0
        oldest = min(self._queue_arrivals(), default=None)
        return max(0.0, time.time() - oldest) if oldest is not None else 0.0

    def scrape_registry(self) -> CollectorRegistry:
        """What /metrics encodes: this process's registry, or with several processes
        every process's values merged from the shared files."""
        if self.shared_dir is None:
            return self.registry
        from prometheus_client import multiprocess

        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg, path=str(self.shared_dir))
        return reg

    def totals(self) -> dict[str, float]:
        """The dashboard counters, cumulative since start (of every process)."""
        if self.shared_dir is not None:
            samples = [s for fam in self.scrape_registry().collect() for s in fam.samples]

            def total(name: str, **match: str) -> float:
                return sum(s.value for s in samples if s.name == name + "_total"
                           and all(s.labels.get(k) == v for k, v in match.items()))

            p = "mailsuite_"
            return {
                "received": total(p + "messages_received"),
                "delivered": total(p + "recipients", outcome="delivered") + total(p + "fast_path_deliveries"),
                "queued": total(p + "messages_queued"),
                "deferred": total(p + "recipients", outcome="deferred"),
                "bounced": total(p + "recipients", outcome="bounced"),
                "rejected": total(p + "smtp_rejected"),
                "logins_failed": total(p + "logins", result="failed"),
            }
        outcome = self.outcomes
        return {
            "received": _sum(self.received),
            "delivered": _sum(outcome, outcome="delivered") + _sum(self.delivered_fast),
            "queued": _sum(self.queued),
            "deferred": _sum(outcome, outcome="deferred"),
            "bounced": _sum(outcome, outcome="bounced"),
            "rejected": _sum(self.rejected),
            "logins_failed": _sum(self.logins, result="failed"),
        }

    def today(self) -> dict[str, float]:
        """The dashboard counters since local midnight (or since start, if later)."""
        now = self.totals()
        today = datetime.date.today()
        if today != self._day:
            self._day, self._baseline = today, now
        return {k: now[k] - self._baseline.get(k, 0.0) for k in now}

    # -- timers ---------------------------------------------------------------------------

    def start(self) -> None:
        self._lag_expected = self.clock.seconds() + 1.0
        self._lag_timer = task.LoopingCall(self._measure_lag)
        self._lag_timer.clock = self.clock
        self._lag_timer.start(1.0, now=False)
        if self.probe_dir is not None:
            self._probe_timer = task.LoopingCall(self._probe_fsync)
            self._probe_timer.clock = self.clock
            self._probe_timer.start(30.0, now=True)

    def stop(self) -> None:
        for t in (self._lag_timer, self._probe_timer):
            if t is not None and t.running:
                t.stop()

    def _measure_lag(self) -> None:
        now = self.clock.seconds()
        lag = max(0.0, now - self._lag_expected)
        self._lag_expected = now + 1.0
        self.reactor_lag.set(lag)
        self.reactor_lag_hist.observe(lag)
        if self.shared_dir is not None:
            self._refresh()

    def _refresh(self) -> None:
        """Several processes: put the computed gauges into the shared files."""
        if self._queue_arrivals is not None:  # the process that runs the queue
            self.queue_size.set(self._queue_count())
            self.queue_oldest.set(self._queue_oldest())
            # Today's counts need every process's files read and merged: tens of ms,
            # which once a second cost ~20% of the CPU per message of inbound SMTP at
            # C=20 (bench/metrics.py, processes = 2).  Every TODAY_REFRESH seconds, as
            # often as Prometheus usually scrapes, it is ~3%.
            self._refreshes += 1
            today = self.today() if self._refreshes % TODAY_REFRESH == 1 else None
            for what in (TODAY if today is not None else ()):
                self.today_gauge.labels(what).set(today[what])
        if self._pool_stats is not None:
            stats = self._pool_stats()
            self.pool_backlog.set(stats.backloggedWorkCount)
            self.pool_busy.set(stats.busyWorkerCount)

    def _probe_fsync(self) -> Any:
        """Time the fsync of a small file in data_dir, in the worker pool.

        The production fsyncs all go through mailsuite.fsutil, in worker threads that
        have no metrics object at hand; timing them there would need a process-wide
        hook.  A probe on the same filesystem every 30 s measures the latency they
        see instead."""
        d = self.workers.run(_timed_fsync, self.probe_dir)
        d.addCallbacks(self.fsync_seconds.observe,
                       lambda f: log.warn("metrics: fsync probe failed: {why}", why=f.getErrorMessage()))
        return d


def use_shared_values(path: Path) -> None:
    """Switch prometheus-client to its multiprocess values in ``path``, before the
    first metric is made.  The library reads PROMETHEUS_MULTIPROC_DIR when it is
    imported; metrics look up ``values.ValueClass`` when they are built, so setting
    both here works after the import too."""
    from prometheus_client import values

    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    if values.ValueClass is values.MutexValue:
        values.ValueClass = values.MultiProcessValue(process_identifier=_this_pid)


# prometheus-client asks for the pid at every metric update, to notice a fork; an
# os.getpid() each time (a system call: glibc stopped caching it) was 1.8% of a
# worker's reactor thread at C=20.  The pid changes only in a forked child, which
# register_at_fork tells us about.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def _this_pid() -> int:
    return _pid


def clear_shared_values(path: Path) -> None:
    """The parent, before it or any worker makes a metric: last run's files go."""
    if path.is_dir():
        for f in path.glob("*.db"):
            f.unlink()


def process_ended(path: Path, pid: int) -> None:
    """A worker died: its live gauges no longer count (its counters still do)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(path))


def _gauge_modes(shared: bool) -> Callable[[str], dict[str, str]]:
    return (lambda m: {"multiprocess_mode": m}) if shared else (lambda m: {})


def _timed_fsync(folder: Path) -> float:
    from mailsuite import fsutil

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"\0" * 4096)
        started = time.perf_counter()
        fsutil.fsync_fd(fd)  # the one module that calls fsync
        return time.perf_counter() - started
    finally:
        os.close(fd)


class NullMetrics:
    """Metrics switched off: every hook does nothing."""

    enabled = False
    registry = None

    def __getattr__(self, name: str) -> Any:
        return _nothing

    def count_connections(self, factory: Any, protocol: str, listener: str) -> Any:
        return factory

    def ldap_request(self, operation: str, d: defer.Deferred) -> defer.Deferred:
        return d

    def today(self) -> dict[str, float]:
        return {w: 0.0 for w in TODAY}


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


NULL = NullMetrics()


# -- connection counting ------------------------------------------------------------------


@implementer(IHandshakeListener)
class _Counted(ProtocolWrapper):
    """Counts one connection open while it lives, and its TLS version once known."""

    _labels: tuple[str, str]

    def makeConnection(self, transport: Any) -> None:
        f = self.factory
        f.open_gauge.inc()
        f.total.inc()
        self._tls_seen = False
        super().makeConnection(transport)
        if ISSLTransport.providedBy(transport):  # implicit TLS: the handshake is done
            self._note_tls()

    def handshakeCompleted(self) -> None:  # STARTTLS
        self._note_tls()
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def _note_tls(self) -> None:
        if self._tls_seen:
            return
        from mailsuite.tls import tls_description

        self._tls_seen = True
        version = tls_description(self.transport).partition(" ")[0] or "unknown"
        self.factory.metrics._child(self.factory.metrics.tls, self.factory.protocol_name, version).inc()

    def connectionLost(self, reason: Any) -> None:
        self.factory.open_gauge.dec()
        super().connectionLost(reason)


class _CountingFactory(Factory):
    """Wraps a listener's factory; keeps no per-connection registry (unlike
    WrappingFactory), so a connection costs two counter updates."""

    noisy = False

    def __init__(self, wrapped: Any, metrics: Metrics, protocol: str, listener: str) -> None:
        self.wrappedFactory = wrapped
        self.metrics = metrics
        self.protocol_name = protocol
        self.open_gauge = metrics.conn_open.labels(protocol, listener)
        self.total = metrics.conn_total.labels(protocol, listener)

    def logPrefix(self) -> str:
        # "SMTPServerFactory starting on 25" in the log, not this wrapper's name.
        inner = getattr(self.wrappedFactory, "logPrefix", None)
        return inner() if inner is not None else type(self.wrappedFactory).__name__

    def doStart(self) -> None:
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        self.wrappedFactory.doStop()

    # ProtocolWrapper reports each connection; nothing is kept per connection here.
    def registerProtocol(self, p: Any) -> None:
        pass

    def unregisterProtocol(self, p: Any) -> None:
        pass

    def buildProtocol(self, addr: Any) -> Any:
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return _Counted(self, inner)
