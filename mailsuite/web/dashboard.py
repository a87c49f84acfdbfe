"""The dashboard's figures, computed once from Prometheus samples: the admin page
reads them from the process's scrape registry (every process's values when there are
several), ``mailsuite status`` from the text of ``/metrics``; both show the same."""

from __future__ import annotations

import time
from typing import Any

# (key in mailsuite_today{what=...}, label)
TODAY = (("received", "received"), ("delivered", "delivered"), ("queued", "queued"), ("deferred", "deferred"),
         ("bounced", "bounced"), ("rejected", "rejected"), ("logins_failed", "failed logins"))


def families_of(registry: Any) -> dict[str, list[Any]]:
    return {fam.name: fam.samples for fam in registry.collect()}


def value(families: dict[str, list[Any]], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for samples in families.values():
        for s in samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def figures(families: dict[str, list[Any]]) -> dict[str, Any]:
    conns: dict[str, float] = {}
    for s in families.get("mailsuite_connections_open", []):
        conns[s.labels["protocol"]] = conns.get(s.labels["protocol"], 0) + s.value
    started = value(families, "mailsuite_start_time_seconds")
    return {
        "today": {key: int(value(families, "mailsuite_today", what=key)) for key, _label in TODAY},
        "queue_messages": int(value(families, "mailsuite_queue_messages")),
        "queue_oldest_age": value(families, "mailsuite_queue_oldest_age_seconds"),
        "connections_open": {p: int(v) for p, v in sorted(conns.items())},
        "reactor_lag": value(families, "mailsuite_reactor_lag_seconds"),
        "uptime": time.time() - started if started else None,
        "pool_busy": int(value(families, "mailsuite_worker_pool_busy_threads")),
        "pool_waiting": int(value(families, "mailsuite_worker_pool_queue_length")),
    }
