"""Wires the relay queue into the suite: the spool behind the dispatcher, and the
queue manager (scheduler, relay, control requests) as a child service."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from mailsuite.queue.mx import MXResolver
from mailsuite.queue.relay import Relay
from mailsuite.queue.route import Router, read_auth_file
from mailsuite.queue.scheduler import QueueManager


def build_manager(suite: Any) -> QueueManager:
    cfg = suite.config
    relay_cfg = cfg.relay
    auth = read_auth_file(relay_cfg.smarthost_auth_file) if relay_cfg.smarthost_auth_file else None
    router = Router(relay_cfg, auth)
    mx = MXResolver(suite.resolver)
    relay = Relay(relay_cfg, cfg.server.hostname, mx)
    return QueueManager(cfg, suite.store, suite.directory, suite.dispatcher, relay, router)


def add_services(suite: Any, parent: service.MultiService) -> None:
    manager = build_manager(suite)
    suite.dispatcher.spool = manager
    manager.setServiceParent(parent)
