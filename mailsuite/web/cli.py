"""``mailsuite status``: the admin dashboard on the command line.

It reads the running server's ``/metrics`` on the first ``[http] listen`` endpoint
(plain HTTP on loopback, which ``metrics_networks`` allows by default), so the figures
are the ones the dashboard shows: today's counts, the queue, open connections,
reactor lag, uptime.  When no server answers there (stopped, or ``[http]`` off), it
says so and reads what it can from disk: the queue's spool.  Exit status: 0 when the
server answered, 1 when it did not.
"""

from __future__ import annotations

import argparse
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from mailsuite.web.dashboard import TODAY, figures


def metrics_url(cfg: Any) -> str | None:
    from twisted.internet.endpoints import _parseServer  # noqa: PLC2701 - parse only

    from mailsuite.published import endpoint_port

    for desc in cfg.http.listen:
        port = endpoint_port(desc)
        if port is None:
            continue
        try:
            _kind, _args, kwargs = _parseServer(desc, None)
        except Exception:  # noqa: BLE001 - validated by config.py; skip the odd one
            continue
        host = kwargs.get("interface") or "127.0.0.1"
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1" if host != "::" else "::1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/metrics"
    return None


def fetch(url: str, timeout: float = 5.0) -> dict[str, list[Any]]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - our own loopback URL
        text = r.read().decode("utf-8")
    return {fam.name: fam.samples for fam in text_string_to_metric_families(text)}


def _age(seconds: float) -> str:
    from mailsuite.queue.cli import _age as queue_age

    return queue_age(seconds)


def dashboard_lines(families: dict[str, list[Any]]) -> list[str]:
    """The dashboard as text, from parsed /metrics."""
    f = figures(families)
    today = ", ".join(f"{label} {f['today'][key]}" for key, label in TODAY)
    queue = f["queue_messages"]
    return [
        f"up {_age(f['uptime']) if f['uptime'] is not None else '?'}, reactor lag {f['reactor_lag'] * 1000:.0f} ms, "
        f"worker pool: {f['pool_busy']} busy, {f['pool_waiting']} waiting",
        f"today: {today}",
        f"queue: {queue} message(s)" + (f", oldest {_age(f['queue_oldest_age'])}" if queue else ""),
        "connections open: " + (", ".join(f"{p} {v}" for p, v in f["connections_open"].items()) or "none"),
    ]


def offline_lines(cfg: Any) -> list[str]:
    from mailsuite.queue import spool

    result = spool.scan(spool.SpoolPaths(cfg.queue_dir), clean=False)
    arrivals = [r.arrival for r in result.records]
    line = f"queue (from the spool): {len(arrivals)} message(s)"
    if arrivals:
        line += f", oldest {_age(time.time() - min(arrivals))}"
    if result.corrupt:
        line += f", {len(result.corrupt)} unreadable"
    return [line]


def cmd_status(args: argparse.Namespace) -> int:
    cfg = args.load_config(args)
    url = args.url or metrics_url(cfg)
    if url is None:
        print("mailsuite status: no [http] listen endpoint to ask; the server's figures are unavailable")
    else:
        try:
            families = fetch(url)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            print(f"mailsuite status: the server does not answer at {url} ({reason})")
        else:
            if "mailsuite_today" not in families:
                print(f"mailsuite status: {url} has no mailsuite figures (http.metrics = false?)")
            else:
                print(f"mailsuite status ({url})")
                for line in dashboard_lines(families):
                    print(f"  {line}")
                return 0
    for line in offline_lines(cfg):
        print(f"  {line}")
    return 1


def add_commands(sub: argparse._SubParsersAction, add_config_arg: Callable[[Any], None]) -> None:
    """``add_config_arg(parser)`` (from mailsuite.cli) adds ``--config`` and sets
    ``args.load_config`` (and ``args.check_files``): this package never imports mailsuite.cli."""
    p = sub.add_parser("status", help="print the dashboard: today's counts, queue, connections",
                       description="Print what the admin dashboard shows, read from the running server's "
                                   "/metrics (the first [http] listen endpoint); without a running server, "
                                   "what the spool says.  Exit status 1 when the server does not answer.")
    p.add_argument("--url", help="the /metrics URL to read (default: from [http] listen)")
    add_config_arg(p)
    p.set_defaults(func=cmd_status)
