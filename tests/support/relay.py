"""Peers for relay tests, all on loopback: Postfix's smtp-sink, a scripted SMTP peer
(4xx then 2xx, 5xx, drops, stalls, broken STARTTLS), and the twisted.names DNS server
of tests/support/dns_server.py in a child process."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support.server import Server, free_port

SMTP_SINK = "/usr/sbin/smtp-sink"
HERE = Path(__file__).parent


def relay_lines(server: Server) -> list[str]:
    return [l for l in server.log().splitlines() if "relay: " in l and " to=<" in l]


def status_of(server: Server, rcpt: str) -> list[str]:
    return re.findall(rf"to=<{re.escape(rcpt)}>.*?status=(\w+)", server.log())


# ---------------------------------------------------------------------------
# smtp-sink


class Sink:
    """Postfix's smtp-sink, dumping each transaction into a file."""

    def __init__(self, port: int | None = None, extra: list[str] | None = None) -> None:
        # smtp-sink drops to user nobody, who cannot enter pytest's 0700 tmp_path.
        self.dir = Path(tempfile.mkdtemp(prefix="mailsuite-sink-"))
        os.chmod(self.dir, 0o777)
        self.port = port or free_port()
        args = [SMTP_SINK, "-u", "nobody", "-d", str(self.dir / "m."), *(extra or []), f"127.0.0.1:{self.port}", "256"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")

    def _complete(self) -> list[Path]:
        """The dump files smtp-sink has finished: it creates a file when the
        transaction starts and closes it after the final dot, so a file it still
        holds open is a message in transit (reading it gave b'' in a CI run)."""
        files = sorted(self.dir.glob("m.*"))
        try:
            fds = list(Path(f"/proc/{self.proc.pid}/fd").iterdir())
        except OSError:  # not ours to look into: a non-empty file is the best sign left
            return [p for p in files if p.stat().st_size > 0]
        held = set()
        for fd in fds:
            try:
                held.add(os.readlink(fd))
            except OSError:  # closed while we looked
                pass
        return [p for p in files if str(p) not in held]

    def messages(self) -> list[bytes]:
        return [p.read_bytes() for p in self._complete()]

    def count(self) -> int:
        return len(self._complete())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# DNS


class DNS:
    """tests/support/dns_server.py in a child process on 127.0.0.1:<free port>, or on
    ``host``:``port`` when given (port 53 of a spare loopback address for programs
    that read /etc/resolv.conf)."""

    def __init__(self, root: Path, zone: dict[str, Any], host: str = "127.0.0.1", port: int | None = None) -> None:
        self.zone_path = root / "zone.json"
        root.mkdir(parents=True, exist_ok=True)
        self.set(zone)
        self.host = host
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "dns_server.py"), str(self.port), str(self.zone_path), host],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else b""
        if b"ready" not in line:
            raise RuntimeError(f"DNS server did not start: {line!r}")

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    def set(self, zone: dict[str, Any]) -> None:
        tmp = self.zone_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(zone))
        os.replace(tmp, self.zone_path)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


# ---------------------------------------------------------------------------
# A scripted SMTP peer


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    data: bytes  # raw DATA bytes as on the wire (still dot-stuffed), without the final "."


@dataclass
class Script:
    """How the peer behaves.  Callables get the peer so they can count."""

    greeting: str = "220 peer.test ESMTP scripted"
    ehlo_lines: tuple[str, ...] = ("PIPELINING", "8BITMIME")
    rcpt: Callable[[str], str] = lambda addr: "250 2.1.5 Ok"
    data_end: Callable[["Peer"], str] = lambda peer: "250 2.0.0 Ok: queued"
    stall_at: str = ""  # "greeting" | "data" (stop reading after 354) | "data_end": never answer there
    drop_after_data_bytes: int = -1  # close the connection after this many body bytes
    starttls_garbage: bool = False  # offer STARTTLS, then answer the handshake with junk
    no_ehlo: bool = False  # an old peer: 502 to EHLO, HELO only


class Peer:
    def __init__(self, script: Script, host: str = "127.0.0.1", port: int = 0) -> None:
        self.script = script
        self.received: list[Received] = []
        self.connections = 0
        self.data_ends = 0
        self.commands: list[str] = []
        self.chunks: list[int] = []  # sizes of the BDAT chunks received
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        peer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with peer._lock:
                    peer.connections += 1
                    peer.active += 1
                    peer.max_active = max(peer.max_active, peer.active)
                try:
                    self._handle()
                except OSError:
                    pass  # the relay went away (killed, or it timed out)
                finally:
                    with peer._lock:
                        peer.active -= 1

            def _handle(self) -> None:  # noqa: C901 - a script is a long if-chain
                sc = peer.script
                w = self.wfile

                def say(line: str) -> None:
                    w.write(line.encode() + b"\r\n")
                    w.flush()

                if sc.stall_at == "greeting":
                    peer._stop.wait(30)
                    return
                say(sc.greeting)
                mail_from, rcpts = "", []
                while not peer._stop.is_set():
                    line = self.rfile.readline()
                    if not line:
                        return
                    cmd = line.decode(errors="replace").rstrip("\r\n")
                    peer.commands.append(cmd)
                    verb = cmd.split(" ", 1)[0].upper()
                    if verb == "EHLO" and sc.no_ehlo:
                        say("502 5.5.2 Error: command not recognized")
                    elif verb == "EHLO":
                        exts = list(sc.ehlo_lines) + (["STARTTLS"] if sc.starttls_garbage else [])
                        for e in exts:
                            say(f"250-{e}")
                        say("250 HELP")
                    elif verb == "HELO":
                        say("250 peer.test")
                    elif verb == "STARTTLS" and sc.starttls_garbage:
                        say("220 2.0.0 Ready to start TLS")
                        self.rfile.read(5)  # the ClientHello's record header
                        w.write(b"this is not TLS\r\n")
                        w.flush()
                        return
                    elif verb == "MAIL":
                        mail_from, rcpts = cmd[10:].split(">")[0].lstrip("<"), []
                        say("250 2.1.0 Ok")
                    elif verb == "RCPT":
                        addr = cmd[8:].split(">")[0].lstrip("<")
                        reply = sc.rcpt(addr)
                        if reply.startswith("2"):
                            rcpts.append(addr)
                        say(reply)
                    elif verb == "DATA":
                        if not rcpts:
                            say("554 5.5.1 Error: no valid recipients")
                            continue
                        say("354 End data with <CR><LF>.<CR><LF>")
                        if sc.stall_at == "data":  # read nothing more: the relay's writes back up
                            peer._stop.wait(30)
                            return
                        buf = b""
                        while not buf.endswith(b"\r\n.\r\n") and buf != b".\r\n":
                            chunk = self.rfile.readline()
                            if not chunk:
                                return
                            buf += chunk
                            if 0 <= sc.drop_after_data_bytes <= len(buf):
                                return
                        if sc.stall_at == "data_end":
                            peer._stop.wait(30)
                            return
                        peer.data_ends += 1
                        reply = sc.data_end(peer)
                        if reply.startswith("2"):
                            peer.received.append(Received(mail_from, rcpts, buf[:-3]))
                        say(reply)
                    elif verb == "BDAT":
                        # RFC 3030: exactly n octets follow; LAST ends the message.
                        parts = cmd.split()
                        size, last = int(parts[1]), len(parts) > 2 and parts[2].upper() == "LAST"
                        chunk = self.rfile.read(size)
                        peer.chunks.append(size)
                        bdat_buf = getattr(self, "bdat_buf", b"") + chunk
                        self.bdat_buf = bdat_buf
                        if not rcpts:
                            say("554 5.5.1 Error: no valid recipients")
                            continue
                        if not last:
                            say(f"250 2.0.0 {len(chunk)} octets received")
                            continue
                        self.bdat_buf = b""
                        peer.data_ends += 1
                        reply = sc.data_end(peer)
                        if reply.startswith("2"):
                            peer.received.append(Received(mail_from, rcpts, bdat_buf))
                        say(reply)
                    elif verb == "RSET":
                        self.bdat_buf = b""
                        mail_from, rcpts = "", []
                        say("250 2.0.0 Ok")
                    elif verb == "QUIT":
                        say("221 2.0.0 Bye")
                        return
                    elif verb == "NOOP":
                        say("250 2.0.0 Ok")
                    else:
                        say("502 5.5.2 Error: command not recognized")

        class TCPServer(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            request_queue_size = 128  # the default 5 drops connects when 20 arrive at once
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.server = TCPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def hop(self) -> str:
        host = self.server.server_address[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def sink(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Sink()
    yield s
    s.stop()


@pytest.fixture
def peers():  # type: ignore[no-untyped-def]
    started: list[Peer] = []

    def make(script: Script | None = None, host: str = "127.0.0.1", port: int = 0) -> Peer:
        p = Peer(script or Script(), host, port)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def dns_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[DNS] = []

    def make(zone: dict[str, Any]) -> DNS:
        d = DNS(tmp_path / f"dns{len(started)}", zone)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


FAST_RELAY = {
    "backoff_min": 1,
    "backoff_max": 2,
    "connect_timeout": 2,
    "command_timeout": 3,
    "data_timeout": 3,
    "control_poll_interval": 0.1,
    "connection_cache_time": 1,
}


def relay_server(server_factory: Callable[..., Server], name: str = "relay", dns_servers: Any = None,
                 dns_timeout: float = 2.0, **relay: Any) -> Server:
    """A mailsuite whose [relay] has short timers plus ``relay`` overrides;
    ``dns_servers`` become its ``[dns] nameservers``."""
    cfg = dict(FAST_RELAY)
    cfg.update(relay)
    if dns_servers is None:
        return server_factory(name, relay=cfg)
    return server_factory(name, relay=cfg, dns={"nameservers": list(dns_servers), "timeout": dns_timeout})


def spool_files(server: Server) -> list[str]:
    """Envelopes and bodies in the spool (not the passing temp file of a rewrite)."""
    d = server.root / "data" / "queue" / "spool"
    return sorted(n for n in os.listdir(d) if not n.endswith(".tmp")) if d.is_dir() else []


def rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)
