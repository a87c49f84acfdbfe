"""What the benchmark scripts share, so that bench/ needs nothing from tests/:

- :class:`BenchServer`: a throw-away mailsuite in a temporary folder, started with
  ``twistd -n mailsuite`` as an admin would, on free loopback ports, every listener it
  is not asked for turned off;
- :class:`BenchSlapd`: a throw-away OpenLDAP slapd (plain ldap:// on loopback) holding N
  users in the mail group, for the LDAP login benchmark;
- free ports, a process's CPU seconds, Maildir counting, an asyncio SMTP reply reader.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_by_process(pid: int | None) -> dict[int, float]:
    """User + system CPU seconds so far of a process and of each live descendant (the
    worker processes of [server] processes), all threads, by pid."""
    if not pid:
        return {}
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError):
                pass
    out: dict[int, float] = {}
    todo = [pid]
    tck = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            f = _stat(p)
        except OSError:
            continue
        out[p] = (int(f[11]) + int(f[12])) / tck
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int | None) -> float:
    """The sum of :func:`cpu_by_process`."""
    return sum(cpu_by_process(pid).values())


def count_maildir(d: Path) -> int:
    return sum(len(os.listdir(d / sub)) for sub in ("new", "cur") if (d / sub).is_dir())


def empty_maildir(d: Path) -> None:
    for sub in ("new", "cur"):
        if (d / sub).is_dir():
            for name in os.listdir(d / sub):
                os.unlink(d / sub / name)


def wait_listening(port: int, proc: subprocess.Popen, timeout: float, what: str, greeting: bool = False) -> None:
    """Until ``port`` accepts (and with ``greeting``, sends its first bytes: with several
    processes the parent's socket accepts before a worker serves)."""
    deadline = time.time() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), 0.5) as s:
                if not greeting or s.recv(1):
                    return
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            raise SystemExit(f"{what} did not listen on {HOST}:{port}")
        time.sleep(0.05)


async def smtp_reply(reader: asyncio.StreamReader) -> bytes:
    """The last line of the next SMTP reply (``line[:3]`` is its code)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return line


async def smtp_code(reader: asyncio.StreamReader) -> int:
    return int((await smtp_reply(reader))[:3])


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml(str(k))} = {_toml(x)}" for k, x in v.items()) + "}"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


# Listener name -> (section, key).  Every listener of the suite is here, so that one not
# asked for is turned off (the defaults bind the standard ports).
LISTENERS = {
    "smtp": ("smtp", "listen"),
    "submission": ("submission", "listen"), "submissions": ("submission", "listen_tls"),
    "imap": ("imap", "listen"), "imaps": ("imap", "listen_tls"),
    "pop3": ("pop3", "listen"), "pop3s": ("pop3", "listen_tls"),
    "http": ("http", "listen"), "https": ("http", "listen_tls"),
    "managesieve": ("managesieve", "listen"), "managesieves": ("managesieve", "listen_tls"),
}


class BenchServer:
    """A throw-away mailsuite: ``listeners`` (names of :data:`LISTENERS`) on free loopback
    ports, ``sections`` merged over a minimal config for example.test, and ``users``
    (address -> password; stored as ``{PLAIN}`` with ``plain_passwords``, so that a login
    costs what the anchors' logins cost, else hashed by ``mailsuite user add``)."""

    def __init__(self, prefix: str, listeners: Iterable[str], users: dict[str, str],
                 sections: dict[str, dict[str, Any]] | None = None, plain_passwords: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.ports = {name: free_port() for name in listeners}
        cfg: dict[str, dict[str, Any]] = {
            "server": {"hostname": "mail.example.test", "data_dir": "data", "domains": ["example.test"]},
            "directory": {"users_file": "users", "aliases_file": "aliases"},
        }
        for section, key in LISTENERS.values():
            cfg.setdefault(section, {})[key] = []
        for name, port in self.ports.items():
            section, key = LISTENERS[name]
            cfg[section][key] = [f"tcp:{port}:interface={HOST}"]
        if any(LISTENERS[n][1] == "listen_tls" for n in self.ports):
            cfg["tls"] = {"certificate": "tls/cert.pem", "private_key": "tls/key.pem", "generate_self_signed": True}
        if plain_passwords:
            cfg["directory"]["allow_plaintext_passwords"] = True
        for section, values in (sections or {}).items():
            cfg.setdefault(section, {}).update(values)
        self.sections = cfg  # may be changed until start(), which writes the config again
        self.config = self.root / "mailsuite.toml"
        self.write_config()
        (self.root / "aliases").write_text("")
        bindir = Path(sys.executable).parent
        self.twistd = shutil.which("twistd", path=str(bindir)) or shutil.which("twistd") or "twistd"
        if plain_passwords:
            (self.root / "users").write_text("".join(f"{u}:{{PLAIN}}{pw}\n" for u, pw in users.items()))
        else:
            mailsuite = shutil.which("mailsuite", path=str(bindir)) or shutil.which("mailsuite") or "mailsuite"
            for user, pw in users.items():
                subprocess.run([mailsuite, "user", "add", user, "--password-stdin", "--config", str(self.config)],
                               input=f"{pw}\n".encode(), check=True, stdout=subprocess.DEVNULL)
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> None:
        self.config.write_text("".join(
            f"[{s}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in vals.items()) for s, vals in self.sections.items()))

    def maildir(self, account: str) -> Path:
        local, _, domain = account.partition("@")
        return self.root / "data" / "mail" / domain / local

    def start(self) -> "BenchServer":
        self.write_config()
        self.proc = subprocess.Popen(
            [self.twistd, "-n", "--pidfile=", f"--logfile={self.root / 'twistd.log'}", "mailsuite",
             "--config", str(self.config)], cwd=self.root)
        try:
            for name, port in self.ports.items():
                # The plain mail listeners greet first; TLS ones wait for the ClientHello.
                greets = LISTENERS[name][1] == "listen" and name not in ("http",)
                wait_listening(port, self.proc, 20, f"mailsuite (log: {self.root / 'twistd.log'})", greets)
        except SystemExit:
            self.stop(keep=True)
            raise
        return self

    def stop(self, keep: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


# -- LDAP -----------------------------------------------------------------------------

SUFFIX = "dc=example,dc=test"
SERVICE_DN = f"cn=mailsuite,ou=services,{SUFFIX}"
SERVICE_PW = "service-secret"
MAIL_GROUP = f"cn=mailusers,ou=groups,{SUFFIX}"


def _ssha(password: str) -> str:
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


class BenchSlapd:
    """OpenLDAP's slapd in ``root`` on a free loopback port (ldap:// only), loaded with
    ``users`` (uid -> password, mail ``uid@example.test``) as inetOrgPerson entries in
    :data:`MAIL_GROUP`, and the service account :data:`SERVICE_DN`.  ``pause`` stops it
    with SIGSTOP (connections are accepted by the kernel, nothing answers)."""

    def __init__(self, root: Path, users: dict[str, str]) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"ldap://{HOST}:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        (root / "db").mkdir(exist_ok=True)
        conf = root / "slapd.conf"
        conf.write_text(
            "".join(f"include /etc/ldap/schema/{s}.schema\n" for s in ("core", "cosine", "inetorgperson"))
            + f"modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {root}/slapd.pid\n"
            f'database mdb\nmaxsize 268435456\nsuffix "{SUFFIX}"\nrootdn "cn=admin,{SUFFIX}"\n'
            f"directory {root}/db\nindex objectClass,uid,mail,member eq\n"
            "access to attrs=userPassword by self write by anonymous auth by * none\naccess to * by * read\n")
        entries = [
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
            *(f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n" for ou in ("people", "groups", "services")),
            f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: mailsuite\n"
            f"userPassword: {_ssha(SERVICE_PW)}\n",
            *(f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
              f"mail: {uid}@example.test\nuserPassword: {_ssha(pw)}\n" for uid, pw in users.items()),
            f"dn: {MAIL_GROUP}\nobjectClass: groupOfNames\ncn: mailusers\n"
            + "".join(f"member: uid={uid},ou=people,{SUFFIX}\n" for uid in users),
        ]
        (root / "base.ldif").write_text("\n".join(entries))
        subprocess.run(["/usr/sbin/slapadd", "-q", "-f", str(conf), "-l", str(root / "base.ldif")],
                       check=True, capture_output=True)
        self.proc = subprocess.Popen(["/usr/sbin/slapd", "-f", str(conf), "-h", f"{self.url}/", "-d", "0"],
                                     stdout=subprocess.DEVNULL, stderr=open(root / "slapd.log", "ab"))
        wait_listening(self.port, self.proc, 15, "slapd")

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
