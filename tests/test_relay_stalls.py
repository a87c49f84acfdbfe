"""Stalled peers and DNS (issue 16, faults of the machine): a next hop that accepts
and never answers, one that stops reading in the middle of DATA, and a DNS server
that drops every query.  Each ends in a timeout of RFC 5321 4.5.3.2's kind and a
deferral (never a bounce), and mail to other destinations keeps flowing meanwhile."""

from __future__ import annotations

import re
import smtplib
import socket
import threading
import time

from tests.support.relay import Script, spool_files, status_of
from tests.support.server import Server
from tests.support.waiting import wait_for

MSG = b"Subject: stall\r\n\r\nbody\r\n"


def send(srv: Server, rcpts: list[str], body: bytes = MSG) -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as c:
        c.sendmail("alice@example.test", rcpts, body)


def relay(server_factory, **relay):  # type: ignore[no-untyped-def]
    cfg = {"backoff_min": 60, "backoff_max": 120, "connect_timeout": 2, "control_poll_interval": 0.2,
           "connection_cache_time": 1}
    cfg.update(relay)
    dns = cfg.pop("dns", None)
    extra = {"dns": {"nameservers": [dns], "timeout": 1.0}} if dns else {}
    return server_factory("relay", relay=cfg, **extra).start()


def test_a_silent_peer_does_not_hold_up_other_destinations(server_factory, peers, sink) -> None:
    silent = peers(Script(stall_at="greeting"))
    srv = relay(server_factory, command_timeout=8,
                transport={"stalled.test": silent.hop, "fine.test": f"127.0.0.1:{sink.port}"})
    for i in range(3):
        send(srv, [f"a{i}@stalled.test"])
    started = time.monotonic()
    for i in range(5):
        send(srv, [f"b{i}@fine.test"])
    wait_for(lambda: sink.count() == 5, timeout=6, what="the other destination's mail")
    assert time.monotonic() - started < 6
    assert not status_of(srv, "a0@stalled.test")  # still waiting for the greeting
    wait_for(lambda: all(status_of(srv, f"a{i}@stalled.test") == ["deferred"] for i in range(3)), timeout=20,
             what="deferral after the greeting timeout", server=srv)
    assert "timed out waiting for greeting" in srv.log()
    assert "bounced" not in srv.log()
    assert len(spool_files(srv)) == 6  # three messages still queued


def test_a_peer_that_stops_reading_mid_data_times_out_and_defers(server_factory, peers) -> None:
    stuck = peers(Script(stall_at="data"))
    srv = relay(server_factory, data_timeout=3, command_timeout=3, transport={"remote.test": stuck.hop})
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 8000  # 8 MB: more than the socket buffers
    send(srv, ["a@remote.test"], big)
    wait_for(lambda: status_of(srv, "a@remote.test") == ["deferred"], timeout=30, what="deferral", server=srv)
    line = [l for l in srv.log().splitlines() if "to=<a@remote.test>" in l][-1]
    assert "status=deferred" in line and re.search(r"dsn=4\.", line), line
    assert len(spool_files(srv)) == 2


def test_a_dns_server_that_drops_queries_defers_and_never_bounces(server_factory, sink) -> None:
    black_hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    black_hole.bind(("127.0.0.1", 0))
    queries = []

    def swallow() -> None:
        black_hole.settimeout(0.5)
        while not stopped.is_set():
            try:
                queries.append(black_hole.recv(4096))
            except (TimeoutError, OSError):
                pass

    stopped = threading.Event()
    t = threading.Thread(target=swallow, daemon=True)
    t.start()
    try:
        srv = relay(server_factory, dns=f"127.0.0.1:{black_hole.getsockname()[1]}",
                    transport={"fine.test": f"127.0.0.1:{sink.port}"})
        send(srv, ["x@nowhere.test"])  # MX lookup through the black hole
        send(srv, ["y@fine.test"])  # transport map: no DNS
        wait_for(lambda: sink.count() == 1, timeout=10, what="the transport-mapped message")
        wait_for(lambda: status_of(srv, "x@nowhere.test") == ["deferred"], timeout=30, what="deferral",
                 server=srv)
        assert queries, "the relay never asked the DNS server"
        line = [l for l in srv.log().splitlines() if "to=<x@nowhere.test>" in l][-1]
        assert re.search(r"dsn=4\.", line) and "bounced" not in srv.log(), line
    finally:
        stopped.set()
        t.join(2)
        black_hole.close()
