"""Wires the config into one MultiService; the twistd plugin's entry point.

``twistd -n mailsuite --config PATH`` loads the config in :class:`Options` (so a bad
config stops twistd with one line per problem before anything starts), then
:func:`makeService` builds the shared parts (:class:`Suite`) and one listener service
per configured endpoint.  Listeners are bound in ``privilegedStartService`` (as root,
for ports below 1024); files and folders are created in ``startService``, after twistd
has dropped privileges, so they belong to the service user.
"""

from __future__ import annotations

import os
import dataclasses
import signal
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

from mailsuite import config as config_mod
from mailsuite import heap
from mailsuite.auth.portal import make_portal
from mailsuite.auth.throttle import AuthThrottle, MessageRate
from mailsuite.directory.backends import make_directory
from mailsuite.dns import resolver as dns_resolver
from mailsuite.mailauth.dkim_sign import KeyRing, SignPolicy, SigningSink
from mailsuite.mailauth.dnsbl import DNSBL
from mailsuite.mailauth.pool import AuthPool
from mailsuite.mailauth.srs import SRS, ArcSealSink, SenderRewriter, SRSDirectory, load_secrets
from mailsuite.mailauth.inbound import AuthChecker, CheckingSink, EnvelopeFolderFilter, InboundPolicy
from mailsuite.directory.interface import IDirectory
from mailsuite.metrics import NULL as NULL_METRICS, Metrics, clear_shared_values, process_ended
from mailsuite.delivery.dispatch import Dispatcher
from mailsuite.delivery.local import LocalDelivery
from mailsuite.delivery.quota import QuotaFilter, Quotas
from mailsuite.handoff import IMessageSink, clean_incoming
from mailsuite.queue.scheduler import QueueManager
from mailsuite.queue.service import build_queue
from mailsuite.handoff import use_process_slot
from mailsuite.process.listeners import EndpointBinder, IListenerBinder, SharingBinder
from mailsuite.process.roles import PARENT, SINGLE, ProcessRole
from mailsuite.smtp.policy import Policy
from mailsuite.frontend import ConnectionCounts
from mailsuite.smtp.server import ISMTPAvatar, SMTPFactoryConfig, SMTPServerFactory
from mailsuite.imap import service as imap_service
from mailsuite.managesieve import service as managesieve_service
from mailsuite.pop3 import service as pop3_service
from mailsuite.proxy import service as proxy_service
from mailsuite.store.mailstore import MaildirStore
from mailsuite.web import service as web_service
from mailsuite.workers import IWorkers, WorkerPool
from mailsuite.store.maildir import clean_tmp
from mailsuite.store.notify import ChangeHub
from mailsuite.store.watch import make_watcher
from mailsuite.tls import HandshakeGateFactory, ReloadableContextFactory, TLSConfigError, generate_self_signed

log = Logger(namespace="mailsuite.service")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run the mailsuite mail server (SMTP, submission, relay queue, IMAP4, POP3) "
        "from one TOML config file. Use -n to stay in the foreground."
    )
    optParameters = [
        ["config", "c", None, "Path to the TOML config file (default: $MAILSUITE_CONFIG or etc/mailsuite.toml)."],
    ]

    def postOptions(self) -> None:
        path = os.path.abspath(self["config"] or config_mod.default_path())
        self["config_path"] = path  # absolute: worker processes load it again
        try:
            cfg = config_mod.load(path)
            problems = runtime_problems(cfg)
            if problems:
                raise config_mod.ConfigError(problems)
            self["parsed"] = cfg
        except config_mod.ConfigError as e:
            # Not a UsageError: twistd would print its whole usage text above the problems.
            sys.stderr.write(f"mailsuite: invalid config {path}:\n" + "".join(f"  {p}\n" for p in e.problems))
            raise SystemExit(1) from None


def runtime_problems(cfg: config_mod.Config) -> list[str]:
    """Problems only visible with the files at hand: missing files, and a certificate or
    key that does not load.  Used by twistd's start and by ``mailsuite check-config``."""
    problems = config_mod.check_files(cfg)
    t = cfg.tls
    to_generate = t.generate_self_signed and t.certificate is not None and not t.certificate.exists()
    if not problems and not to_generate:  # checking must not generate a certificate
        try:
            load_tls(cfg)
            load_tls_overrides(cfg)
        except TLSConfigError as e:
            msg = str(e)
            problems.append(msg if msg.startswith("tls.") else f"tls.certificate: {msg}")
    return problems


@dataclass
class Suite:
    """The parts every protocol shares, built once per process by :func:`build_suite`,
    in order, each handed to the next."""

    config: config_mod.Config
    reactor: Any  # every timer, thread hop and listener of the suite
    workers: IWorkers  # the pool for blocking work (fsync, password hashing)
    hub: ChangeHub  # change notices between sessions and deliveries of this process
    directory: IDirectory
    portal: Any
    realm: Any
    store: MaildirStore
    local: LocalDelivery  # local delivery, written once (delivery/local.py)
    queue: IMessageSink  # the spool and relay queue (a child service); a worker's WorkerQueue
    dispatcher: IMessageSink  # what the front ends hand messages to (handoff.py)
    tls: ReloadableContextFactory | None
    # Auth failure counting shared by SMTP, IMAP and POP3 (auth/throttle.py).
    throttle: AuthThrottle
    message_rate: MessageRate
    on_start: list[Callable[[], Any]] = field(default_factory=list)
    on_stop: list[Callable[[], Any]] = field(default_factory=list)
    # Contexts of services with their own certificate ([tls.<service>]).
    tls_overrides: dict[str, ReloadableContextFactory] = field(default_factory=dict)
    # The one DNS resolver ([dns]): relay MX lookups, mail authentication, DNSBL.
    resolver: Any = None
    # SRS for forwarded mail ([srs], mailsuite.mailauth.srs.SRS), or None.
    srs: Any = None
    # Where listeners get their sockets, and this process's part ([server] processes).
    binder: IListenerBinder = field(default_factory=EndpointBinder)
    role: ProcessRole = SINGLE
    # The Sieve delivery filter (mailsuite.sieve.delivery), None when [sieve] is off.
    sieve: Any = None
    # Prometheus metrics (mailsuite/metrics.py); NULL when [http] metrics = false.
    metrics: Any = NULL_METRICS
    # Mailbox quotas (mailsuite.delivery.quota.Quotas): SMTP RCPT, delivery, IMAP.
    quotas: Any = None

    def tls_for(self, service_name: str) -> ReloadableContextFactory | None:
        """The TLS context factory of ``service_name`` ("smtp", "submission", "imap",
        "pop3"): its own certificate if it has one, else the shared one."""
        return self.tls_overrides.get(service_name, self.tls)

    def reload_tls(self) -> None:
        """Re-read every certificate (SIGHUP); established connections keep theirs."""
        for ctx in [self.tls, *self.tls_overrides.values()]:
            if ctx is not None:
                ctx.reload()

    def listener(
        self,
        parent: service.MultiService,
        desc: str,
        factory: Any,
        implicit_tls: bool,
        context: Any = None,
        max_handshakes_per_ip: int = 20,
    ) -> None:
        """Add a listener on endpoint string ``desc``; ``implicit_tls`` wraps it in TLS
        (``context``, default the shared certificate) behind a handshake gate: the
        protocol is connected only after the handshake, which must finish within
        ``tls.handshake_timeout`` seconds."""
        factory = self.metrics.count_connections(factory, _protocol_of(self.config, desc, implicit_tls), desc)
        if implicit_tls:
            ctx = context if context is not None else self.tls
            if ctx is None:
                raise TLSConfigError("implicit TLS listener without a certificate")
            gate = HandshakeGateFactory(factory, self.config.tls.handshake_timeout, max_handshakes_per_ip,
                                        clock=self.reactor)
            factory = TLSMemoryBIOFactory(ctx, False, gate)
        self.binder.bind(parent, desc, factory)


def _protocol_of(cfg: config_mod.Config, desc: str, implicit_tls: bool) -> str:
    """The config section that lists listener ``desc`` (the metrics' protocol label)."""
    key = "listen_tls" if implicit_tls else "listen"
    for f in dataclasses.fields(cfg):
        if desc in getattr(getattr(cfg, f.name), key, ()):
            return f.name
    return "other"


def load_tls(cfg: config_mod.Config) -> ReloadableContextFactory | None:
    t = cfg.tls
    if t.certificate is None or t.private_key is None:
        return None
    if t.generate_self_signed and not (t.certificate.exists() and t.private_key.exists()):
        generate_self_signed(t.certificate, t.private_key, cfg.server.hostname)
        log.warn(
            "tls: generated a SELF-SIGNED certificate at {path}; clients will warn. "
            "Use a real certificate in production.",
            path=str(t.certificate),
        )
    return ReloadableContextFactory(t.certificate, t.private_key, t.min_version, t.ciphers)


def load_tls_overrides(cfg: config_mod.Config) -> dict[str, ReloadableContextFactory]:
    """Contexts for services that name their own certificate in ``[tls.<service>]``."""
    t = cfg.tls
    out = {}
    for name in ("smtp", "submission", "imap", "pop3", "http", "managesieve"):
        o = getattr(t, name)
        if o.certificate is not None and o.private_key is not None:
            try:
                out[name] = ReloadableContextFactory(o.certificate, o.private_key, t.min_version, t.ciphers)
            except TLSConfigError as e:
                raise TLSConfigError(f"tls.{name}.certificate: {e}") from None
    return out


def make_sieve_filter(cfg: config_mod.Config, directory: IDirectory, workers: IWorkers, hub: ChangeHub) -> Any:
    """The Sieve delivery filter ([sieve]), or None when it is turned off."""
    if not cfg.sieve.enabled:
        return None
    from mailsuite.sieve.delivery import SieveEngine, SieveFilter

    engine = SieveEngine(cfg.mail_dir, cfg.sieve.before, cfg.sieve.after, cfg.sieve.global_dir,
                         hostname=cfg.server.hostname, check_interval=cfg.sieve.script_check_interval)
    return SieveFilter(engine, directory, cfg.server.domains, cfg.server.hostname, cfg.queue_dir / "incoming",
                       workers, hub)


def per_process_limits(limits: config_mod.LimitsConfig, role: ProcessRole) -> config_mod.LimitsConfig:
    """A worker's share of the counted limits.  The login throttle and the hourly
    message count live in each process's memory; the kernel spreads a client's
    connections over the workers, so each worker allows 1/N of every threshold
    (rounded up): all workers together then allow at most the configured count (plus
    N-1).  Per-IP connection limits are not divided (one client's connections may all
    land on one worker); docs/scaling.md says so."""
    n = role.count if role.kind == "worker" else 1
    if n <= 1:
        return limits

    def share(v: int) -> int:
        return max(1, -(-v // n)) if v > 0 else v

    return replace(limits, auth_delay_after=share(limits.auth_delay_after),
                   auth_refuse_after=share(limits.auth_refuse_after),
                   auth_ip_delay_after=share(limits.auth_ip_delay_after),
                   auth_ip_refuse_after=share(limits.auth_ip_refuse_after),
                   messages_per_user=share(limits.messages_per_user))


def build_suite(cfg: config_mod.Config, reactor: Any, binder: IListenerBinder | None = None,
                role: ProcessRole = SINGLE) -> Suite:
    """The shared parts, built in order and each handed to the next: worker pool and
    change hub, metrics, directory and portal, store, local delivery (with its
    filters), queue, dispatcher (wrapped by the mail-authentication sinks)."""
    workers = WorkerPool(reactor, cfg.server.thread_pool_size)
    hub = ChangeHub()
    if role.kind != "single":
        use_process_slot(role.index, role.count)
    # Several processes share their values through files (mailsuite/metrics.py).
    shared = metrics_dir(cfg) if role.kind != "single" else None
    metrics = (Metrics(clock=reactor, probe_dir=cfg.server.data_dir, pool_stats=workers.statistics,
                       shared_dir=shared, workers=workers)
               if cfg.http.metrics else NULL_METRICS)
    directory = make_directory(cfg, workers, metrics)
    portal, realm = make_portal(directory)
    realm.register(ISMTPAvatar, lambda account: account)
    # Built in order, each part handed to the next (nothing patched in afterwards):
    # store -> local delivery -> queue -> dispatcher -> the SMTP listeners.
    resolver = dns_resolver.from_config(cfg.dns, reactor)
    store = MaildirStore(cfg.mail_dir, workers, hub, reactor,
                         watcher=make_watcher(reactor, cfg.imap.change_poll_interval))
    sieve = make_sieve_filter(cfg, directory, workers, hub)
    quotas = Quotas(directory, cfg.mail_dir, workers)
    # Quota last: a copy Sieve discards or redirects takes no room.
    local = LocalDelivery(store, filters=[EnvelopeFolderFilter()] + ([sieve] if sieve is not None else [])
                          + [QuotaFilter(quotas)])
    # DKIM: our own users' mail and our DSNs are signed once, as they enter.
    keyring = KeyRing(cfg.dkim, cfg.server.data_dir, cfg.server.domains)
    for line in keyring.problems:
        log.warn("{line}", line=line)

    auth_pool = AuthPool(reactor)  # DKIM/SPF/ARC CPU work, apart from the fsyncs

    def signing(inner: IMessageSink) -> IMessageSink:
        return SigningSink(inner, keyring, SignPolicy(cfg.server.relay_networks), auth_pool.run)

    ours = SignPolicy(cfg.server.relay_networks)
    srs = None
    if cfg.srs.enabled and cfg.server.domains:
        srs = SRS(*load_secrets(cfg.server.data_dir), cfg.srs.domain or cfg.server.domains[0])
    rewriter = SenderRewriter(srs, ours, cfg.server.domains) if srs is not None else None
    # With several processes a worker makes a message's first attempt and hands the
    # rest to the parent's queue (queue/handover.py).
    queue: IMessageSink = build_queue(cfg, local, directory, resolver, reactor, workers, wrap_dsn_sink=signing,
                                      metrics=metrics, sender_rewriter=rewriter,
                                      worker_channel=role.channel if role.kind == "worker" else None,
                                      worker_count=role.count)
    dispatcher = signing(Dispatcher(local, queue, metrics=metrics))
    if sieve is not None:
        # Redirects and vacation replies enter like our own users' mail: signed, not checked.
        sieve.sink = dispatcher
    if srs is not None:
        # Mail from the world forwarded outside: an ARC seal over our checks' results.
        dispatcher = ArcSealSink(dispatcher, keyring, srs.domain, cfg.server.hostname, ours, auth_pool.run)
    if cfg.smtp.check_authentication:
        # Mail from the world is checked (SPF, DKIM, ARC, DMARC) before it is signed or
        # delivered; our own senders pass through both wrappers' exemptions.
        checker = AuthChecker(resolver, auth_pool.run, InboundPolicy(
            cfg.server.hostname, cfg.smtp.dmarc_reject_action, cfg.smtp.spf_fail_action))
        dispatcher = CheckingSink(dispatcher, checker, SignPolicy(cfg.server.relay_networks), auth_pool.run,
                                  cfg.server.hostname)
    suite = Suite(
        config=cfg, reactor=reactor, workers=workers, hub=hub, directory=directory, portal=portal, realm=realm,
        store=store, local=local, queue=queue, dispatcher=dispatcher, tls=load_tls(cfg),
        throttle=AuthThrottle(per_process_limits(cfg.limits, role), reactor, metrics=metrics,
                              default_domain=cfg.server.domains[0] if cfg.server.domains else None),
        message_rate=MessageRate(per_process_limits(cfg.limits, role), reactor),
        tls_overrides=load_tls_overrides(cfg),
        resolver=resolver, binder=binder or EndpointBinder(), role=role, sieve=sieve, srs=srs,
        metrics=metrics, quotas=quotas,
    )
    suite.on_start.append(metrics.start)
    suite.on_stop.append(metrics.stop)
    return suite


def _smtp_listeners(suite: Suite, parent: service.MultiService) -> None:
    cfg = suite.config
    for role, svc_cfg, submission in (("smtp", cfg.smtp, False), ("submission", cfg.submission, True)):
        policy = Policy(
            # The MX resolves our SRS addresses (bounces of forwarded mail) too.
            SRSDirectory(suite.directory, suite.srs) if suite.srs is not None and not submission else suite.directory,
            cfg.server.domains,
            cfg.server.relay_networks,
            enforce_sender=submission and cfg.submission.enforce_sender,
            any_sender_users=frozenset(u.lower() for u in cfg.submission.any_sender_users),
            message_rate=suite.message_rate if submission else None,
            quotas=suite.quotas,
        )
        # One count of connections per client IP for all listeners of a role (587 and
        # 465 together), taken once the TLS handshake of an implicit-TLS one is done.
        connections = ConnectionCounts()
        client_check = None
        if not submission and cfg.smtp.dnsbl:
            client_check = DNSBL(suite.resolver, cfg.smtp.dnsbl, cfg.smtp.dnswl)
        for desc, implicit in [(d, False) for d in svc_cfg.listen] + [(d, True) for d in svc_cfg.listen_tls]:
            conf = SMTPFactoryConfig(
                hostname=cfg.server.hostname,
                service=svc_cfg,
                policy=policy,
                dispatcher=suite.dispatcher,
                incoming_dir=cfg.queue_dir / "incoming",
                portal=suite.portal,
                tls_context=suite.tls_for(role),
                implicit_tls=implicit,
                submission=submission,
                allow_plaintext_auth=cfg.server.allow_plaintext_auth,
                # The MX role offers no AUTH by default: users submit on 587/465.
                offer_auth=submission or cfg.smtp.offer_auth,
                throttle=suite.throttle,
                handshake_timeout=cfg.tls.handshake_timeout,
                add_missing_headers=submission and cfg.submission.add_missing_headers,
                client_check=client_check,
                client_check_at=cfg.smtp.dnsbl_check_at,
                metrics=suite.metrics,
            )
            suite.listener(
                parent, desc, SMTPServerFactory(conf, connections), implicit,
                context=suite.tls_for(role), max_handshakes_per_ip=cfg.tls.max_handshakes_per_ip,
            )


class _Lifecycle(service.Service):
    """Creates folders and cleans leftovers after privileges are dropped; runs the
    suite's start and stop hooks; reloads TLS on SIGHUP."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite

    def startService(self) -> None:
        super().startService()
        cfg = self.suite.config
        cfg.mail_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        owns_state = self.suite.role.owns_state
        n = clean_incoming(cfg.queue_dir / "incoming") if owns_state else 0
        if n:
            log.info("queue: removed {n} incomplete incoming file(s) left by a crash", n=n)
        if self.suite.tls is not None or self.suite.tls_overrides:
            try:
                signal.signal(signal.SIGHUP, lambda *_: self.suite.reactor.callFromThread(self.suite.reload_tls))
            except ValueError:  # not the main thread (tests)
                pass
        for hook in self.suite.on_start:
            hook()
        if owns_state:
            self._tmp_cleaner = task.LoopingCall(self._clean_tmp)
            self._tmp_cleaner.clock = self.suite.reactor
            self._tmp_cleaner.start(6 * 3600, now=True)

    def _clean_tmp(self) -> None:
        def report(n: int) -> None:
            if n:
                log.info("store: removed {n} abandoned file(s) from Maildir tmp/ folders", n=n)

        d = self.suite.workers.run(clean_tmp, self.suite.config.mail_dir)
        d.addCallbacks(report, lambda f: log.failure("store: tmp/ cleanup failed", f))

    def stopService(self) -> Any:
        super().stopService()
        if getattr(self, "_tmp_cleaner", None) is not None and self._tmp_cleaner.running:
            self._tmp_cleaner.stop()
        for hook in self.suite.on_stop:
            hook()


class _Started(service.Service):
    """The last child: its log line says every service before it has started (the
    listeners accept connections earlier, from privilegedStartService on; the queue's
    spool exists only from its startService)."""

    def __init__(self, domains: tuple[str, ...]) -> None:
        self.domains = domains

    def startService(self) -> None:
        super().startService()
        log.info("mailsuite started for domains {domains}", domains=", ".join(self.domains))


def build_service(
    cfg: config_mod.Config, reactor: Any, binder: IListenerBinder | None = None, role: ProcessRole = SINGLE
) -> tuple[service.MultiService, Suite]:
    """The whole application: the suite's parts, the queue, then every listener."""
    heap.limit_arenas()  # before the thread pools start (mailsuite/heap.py)
    heap.tune_gc()
    suite = build_suite(cfg, reactor, binder, role)
    top = service.MultiService()
    _Lifecycle(suite).setServiceParent(top)
    heap.HeapTrimmer(reactor).setServiceParent(top)
    if isinstance(suite.queue, QueueManager):
        suite.queue.setServiceParent(top)  # started before, stopped after the listeners
    _smtp_listeners(suite, top)
    imap_service.add_services(suite, top)
    pop3_service.add_services(suite, top)
    web_service.add_services(suite, top)
    managesieve_service.add_services(suite, top)
    proxy_service.add_services(suite, top)
    if role.kind != "worker":
        _Started(cfg.server.domains).setServiceParent(top)
    return top, suite


def metrics_dir(cfg: config_mod.Config) -> Path:
    return cfg.server.data_dir / "metrics"


def process_count(cfg: config_mod.Config) -> int:
    """``[server] processes``: 0 means one worker per core."""
    return cfg.server.processes or os.cpu_count() or 1


def makeService(options: Options) -> service.IService:
    top = _make_top(options)
    if options["parsed"].log.format == "json":
        from mailsuite.logjson import JSONLogSetup, json_observer

        observer = json_observer(getattr(options, "parent", None))
        if observer is not None:
            outer = JSONLogSetup(observer)
            top.setServiceParent(outer)
            return outer
    return top


def _make_top(options: Options) -> service.IService:
    # The one place that names the global reactor: twistd has installed it by now.
    from twisted.internet import reactor

    cfg = options["parsed"]
    n = process_count(cfg)
    if n == 1:
        top, _suite = build_service(cfg, reactor)
        return top
    # Several processes: this one binds every listener (as root, before twistd drops
    # privileges), runs the relay queue (the retries: workers make first attempts), and
    # starts n workers that serve the protocols.
    from mailsuite.process.supervisor import WorkerSupervisor

    binder = SharingBinder(reactor)
    clear_shared_values(metrics_dir(cfg))
    top, suite = build_service(cfg, reactor, binder, PARENT)
    manager = suite.queue
    WorkerSupervisor(
        reactor, n, options["config_path"], binder, queue=manager, ready=manager.when_loaded,
        on_ended=(lambda pid: process_ended(metrics_dir(cfg), pid)) if cfg.http.metrics else None,
    ).setServiceParent(top)
    return top
