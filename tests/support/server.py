"""Start the real mailsuite (``twistd -n mailsuite``) on free loopback ports for tests.

A test gets a :class:`Server` from the ``server`` fixture (or builds one with its own
config); the server runs in a child process exactly as an admin would start it, and
is stopped (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import argon2

from mailsuite.tls import generate_self_signed

DOMAIN = "example.test"
USERS = {"alice@example.test": "alice-pw", "bob@example.test": "bob-pw", "carol@other.test": "carol-pw"}
TWISTD = str(Path(sys.executable).with_name("twistd"))
MAILSUITE = str(Path(sys.executable).with_name("mailsuite"))

_hash_cache: dict[str, str] = {}
_CHEAP = argon2.PasswordHasher.from_parameters(argon2.profiles.CHEAPEST)


def hashed(pw: str) -> str:
    """argon2id as the server writes it, with argon2's cheapest parameters: a test
    server checks many passwords, and a timing test must not wait on the hash."""
    if pw not in _hash_cache:
        _hash_cache[pw] = _CHEAP.hash(pw)
    return _hash_cache[pw]


# Listening ports come from below Linux's ephemeral range (32768-60999), where the
# outgoing connections of every test running on the machine take their ports: a
# port from port 0 was often taken by some client between the pick and the server's
# bind ("Address already in use").
_PORTS = random.Random(os.getpid())
# Never the same port twice in one test run: a server's dozen listeners are picked
# before any is bound, so a random pick could repeat and collide with itself.
_GIVEN: set[int] = set()


def free_port() -> int:
    for _ in range(200):
        # Above the benchmark anchors' ports (10025-11444); free for UDP too, as the
        # test DNS server listens on both.
        port = _PORTS.randrange(12000, 32000)
        if port in _GIVEN:
            continue
        _GIVEN.add(port)
        try:
            with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Server:
    root: Path
    sections: dict[str, dict[str, Any]]
    ports: dict[str, int] = field(default_factory=dict)
    wait_ports: dict[str, int] = field(default_factory=dict)  # listeners this build serves
    proc: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "mailsuite.toml"

    @property
    def log_path(self) -> Path:
        return self.root / "twistd.log"

    @property
    def mail_dir(self) -> Path:
        return self.root / "data" / "mail"

    def maildir(self, account: str, folder: str = "") -> Path:
        local, _, domain = account.partition("@")
        p = self.mail_dir / domain / local
        return p / f".{folder}" if folder else p

    def messages(self, account: str, folder: str = "") -> list[bytes]:
        out = []
        base = self.maildir(account, folder)
        for sub in ("new", "cur"):
            d = base / sub
            if d.is_dir():
                for name in sorted(os.listdir(d)):
                    out.append((d / name).read_bytes())
        return out

    def log(self) -> str:
        """The whole log, oldest first: twistd rotates ``twistd.log`` at 1 MB into
        ``twistd.log.1`` (newest) ... ``.N``, which a busy multi-process test reaches in
        a few seconds (a CI run lost the "worker 1 started" line that way)."""
        rotated = sorted(self.log_path.parent.glob(self.log_path.name + ".*"),
                         key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0, reverse=True)
        parts = []
        for p in [*rotated, self.log_path]:
            try:
                parts.append(p.read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "".join(parts)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """``mailsuite ARGS... --config`` this server's config, as an admin runs it."""
        self.write_config()
        return subprocess.run([MAILSUITE, *args, "--config", str(self.config_path)],
                              input=stdin, capture_output=True, text=True, timeout=30)

    def write_config(self) -> None:
        lines = []
        for section, values in self.sections.items():
            lines.append(f"[{section}]")
            for k, v in values.items():
                lines.append(f"{k} = {toml_value(v)}")
            lines.append("")
        self.config_path.write_text("\n".join(lines))

    def start(self, timeout: float = 60.0) -> "Server":
        for attempt in range(3):
            try:
                return self._start(timeout)
            except RuntimeError as e:
                # Another program took one of our ports after we picked it: pick
                # new ones and start again (tests read srv.ports after start).
                if "Address already in use" not in str(e) or attempt == 2:
                    raise
                self._repick_ports()
        raise AssertionError("unreachable")

    def _repick_ports(self) -> None:
        moved = {old: free_port() for old in set(self.ports.values())}
        self.ports = {name: moved[p] for name, p in self.ports.items()}
        self.wait_ports = {name: moved.get(p, p) for name, p in self.wait_ports.items()}

        def fix(v: Any) -> Any:
            if isinstance(v, str):
                return re.sub(r"^(tcp6?:)(\d+)(?=:|$)", lambda m: m.group(1) + str(moved.get(int(m.group(2)),
                                                                                               int(m.group(2)))), v)
            if isinstance(v, list):
                return [fix(x) for x in v]
            return v

        for values in self.sections.values():
            for k, v in list(values.items()):
                values[k] = fix(v)

    def _start(self, timeout: float) -> "Server":
        self.write_config()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", f"--logfile={self.log_path}", "mailsuite", "--config", str(self.config_path)],
            cwd=self.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + timeout
        pending = set(self.wait_ports.values())
        while pending and time.time() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise RuntimeError(f"mailsuite exited with {self.proc.returncode}:\n{out}\n{self.log()}")
            for port in list(pending):
                try:
                    # From an address no test uses: the server counts this probe
                    # against its per-IP limit until it has read the close, which
                    # during start-up can come after the test's own first connections.
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2,
                                                  source_address=("127.0.0.254", 0)):
                        pending.discard(port)
                except OSError:
                    pass
            if pending:
                time.sleep(0.05)
        if pending:
            self.stop()
            raise RuntimeError(f"mailsuite did not listen on {pending}:\n{self.log()}")
        # Ports accept as soon as they are bound, before the services (the queue's
        # spool, the folders) have started: wait for the line logged after all of them.
        while "mailsuite started" not in self.log():
            if time.time() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"mailsuite did not finish starting:\n{self.log()}")
            time.sleep(0.02)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None


def make_server(root: Path, users: dict[str, str] | None = None, aliases: str = "", **overrides: dict[str, Any]) -> Server:
    """A server config in ``root`` with every listener on a free loopback port.

    ``overrides`` are per-section dicts merged over the defaults, e.g.
    ``smtp={"max_message_size": 10000}``.
    """
    root.mkdir(parents=True, exist_ok=True)
    users = USERS if users is None else users
    (root / "users").write_text("".join(f"{a}:{hashed(p)}\n" for a, p in users.items()))
    (root / "aliases").write_text(aliases)
    tls_dir = root / "tls"
    if not (tls_dir / "cert.pem").exists():
        generate_self_signed(tls_dir / "cert.pem", tls_dir / "key.pem", "mail.example.test")
    ports = {name: free_port() for name in ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http", "https",
                                            "managesieve")}

    def ep(name: str) -> list[str]:
        return [f"tcp:{ports[name]}:interface=127.0.0.1"]

    sections: dict[str, dict[str, Any]] = {
        "server": {"hostname": "mail.example.test", "data_dir": "data", "domains": [DOMAIN, "other.test"],
                   # One process unless a test is about several (tests/test_processes.py).
                   "processes": 1},
        "tls": {"certificate": "tls/cert.pem", "private_key": "tls/key.pem"},
        "directory": {"users_file": "users", "aliases_file": "aliases"},
        "smtp": {"listen": ep("smtp")},
        "submission": {"listen": ep("submission"), "listen_tls": ep("submissions")},
        "imap": {"listen": ep("imap"), "listen_tls": ep("imaps")},
        "pop3": {"listen": ep("pop3"), "listen_tls": ep("pop3s")},
        "http": {"listen": ep("http"), "listen_tls": ep("https")},
        "managesieve": {"listen": ep("managesieve"), "listen_tls": []},
        # Test traffic stays on loopback: a test that relays without its own DNS
        # server gets no answer (deferred), never a query to the real resolver.
        "dns": {"nameservers": ["127.0.0.1:1"], "timeout": 2.0},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    # Wait only for the listeners that are configured.
    active = {name: ports[name] for name in ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s",
                                             "http", "https", "managesieve")}
    for name in list(active):
        section = {"submissions": "submission", "imaps": "imap", "pop3s": "pop3", "https": "http"}.get(name, name)
        key = "listen_tls" if name in ("submissions", "imaps", "pop3s", "https") else "listen"
        if not sections.get(section, {}).get(key):
            active.pop(name)
    return Server(root, sections, ports, active)


def started(root: Path, **overrides: Any) -> Iterator[Server]:
    """A generator for module-scoped fixtures: a started server, stopped at the end."""
    srv = make_server(root, **overrides)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
