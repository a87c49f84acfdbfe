#!/usr/bin/env python3
"""Logins through the LDAP directory: throughput, p95 latency, and reactor stalls while
LDAP hangs.

Starts its own slapd (benchkit.BenchSlapd) with N bench users in the required group, and
mailsuite (``twistd -n mailsuite``, ``[directory] backend = "ldap"``) on free loopback
ports, then runs LOGINS logins over CONCURRENCY connections (one login per connection:
connect, greeting, login, quit) in these phases:

* cold:    a fresh server, every login a different user (search + group check + bind);
* warm:    the same logins again (answered from the auth cache);
* nocache: a server with every cache off (each login costs the full LDAP work);
* stall:   slapd stopped with SIGSTOP; 40 uncached logins wait for LDAP while a probe
           connection sends NOOP every 10 ms; the worst NOOP round trip is the longest
           the reactor was held (target: under 50 ms).

Logins are IMAP LOGIN if mailsuite's IMAP server is built, else SMTP AUTH PLAIN on the
submission port.  Plaintext on loopback (allow_plaintext_auth = true): the TLS
handshake would otherwise dominate and is not what is measured.  The login latency is
from sending LOGIN/AUTH to its answer.  With --dovecot, Dovecot (passdb ldap,
auth_bind = yes, against the same slapd) runs the same cold/warm IMAP phases as the
anchor; that needs the dovecot-ldap package.

    python3 bench/ldap_auth.py [--logins 1000] [--concurrency 20] [--dovecot]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import (MAIL_GROUP, SERVICE_DN, SERVICE_PW, SUFFIX, BenchServer, BenchSlapd, cpu_seconds, free_port,
                      smtp_reply)


def user(i: int) -> tuple[str, str]:
    return f"bench{i:04d}", f"pw-{i:04d}"


# -- protocol clients (asyncio, one login per connection) -------------------------------


async def smtp_login(host: str, port: int, login: str, password: str) -> tuple[bool, float, bytes]:
    r, w = await asyncio.open_connection(host, port)
    try:
        await smtp_reply(r)
        w.write(b"EHLO bench.test\r\n")
        await smtp_reply(r)
        token = base64.b64encode(f"\0{login}\0{password}".encode())
        t0 = time.perf_counter()
        w.write(b"AUTH PLAIN " + token + b"\r\n")
        reply = await smtp_reply(r)
        dt = time.perf_counter() - t0
        w.write(b"QUIT\r\n")
        await smtp_reply(r)
        return reply.startswith(b"235"), dt, reply.strip()
    finally:
        w.close()


async def imap_login(host: str, port: int, login: str, password: str) -> tuple[bool, float, bytes]:
    r, w = await asyncio.open_connection(host, port)
    try:
        await r.readline()
        t0 = time.perf_counter()
        w.write(f'a1 LOGIN "{login}" "{password}"\r\n'.encode())
        while True:
            line = await r.readline()
            if not line:
                raise ConnectionError("closed")
            if line.startswith(b"a1 "):
                break
        dt = time.perf_counter() - t0
        w.write(b"a2 LOGOUT\r\n")
        try:
            await asyncio.wait_for(r.read(), 2)
        except asyncio.TimeoutError:
            pass
        return line.startswith(b"a1 OK"), dt, line.strip()
    finally:
        w.close()


async def run_logins(proto: str, host: str, port: int, users: list[tuple[str, str]], concurrency: int) -> dict:
    login = imap_login if proto == "imap" else smtp_login
    queue = list(reversed(users))
    lat: list[float] = []
    failures: dict[bytes, int] = {}

    async def worker() -> None:
        while queue:
            u, p = queue.pop()
            try:
                ok, dt, reply = await login(host, port, u, p)
            except (OSError, ConnectionError) as e:
                ok, dt, reply = False, 0.0, str(e).encode()
            if ok:
                lat.append(dt)
            else:
                failures[reply[:40]] = failures.get(reply[:40], 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {
        "logins": len(users),
        "ok": len(lat),
        "failures": {k.decode(errors="replace"): v for k, v in failures.items()},
        "logins_per_s": round(len(lat) / wall, 1),
        "p50_ms": round(1000 * lat[len(lat) // 2], 2) if lat else None,
        "p95_ms": round(1000 * lat[int(len(lat) * 0.95)], 2) if lat else None,
        "max_ms": round(1000 * lat[-1], 2) if lat else None,
    }


async def stall_probe(proto: str, host: str, port: int, login_port: int, users: list[tuple[str, str]], duration: float) -> dict:
    """NOOP round trips on one open connection while ``users`` log in against a hung LDAP."""
    r, w = await asyncio.open_connection(host, port)
    if proto == "imap":
        await r.readline()
    else:
        await smtp_reply(r)
        w.write(b"EHLO probe.test\r\n")
        await smtp_reply(r)
    rtts: list[float] = []
    login = imap_login if proto == "imap" else smtp_login
    results: list = []

    async def one(u: str, p: str) -> None:
        t0 = time.perf_counter()
        try:
            ok, _dt, reply = await login(host, login_port, u, p)
        except (OSError, ConnectionError) as e:
            ok, reply = False, str(e).encode()
        results.append((ok, time.perf_counter() - t0, reply[:40]))

    tasks = [asyncio.ensure_future(one(u, p)) for u, p in users]
    end = time.perf_counter() + duration
    n = 0
    while time.perf_counter() < end:
        n += 1
        t0 = time.perf_counter()
        if proto == "imap":
            w.write(f"n{n} NOOP\r\n".encode())
            while not (await r.readline()).startswith(f"n{n} ".encode()):
                pass
        else:
            w.write(b"NOOP\r\n")
            await smtp_reply(r)
        rtts.append(time.perf_counter() - t0)
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    w.close()
    rtts.sort()
    answers: dict[str, int] = {}
    for ok, _t, reply in results:
        key = "OK" if ok else reply.decode(errors="replace")
        answers[key] = answers.get(key, 0) + 1
    return {
        "probes": len(rtts),
        "noop_max_ms": round(1000 * rtts[-1], 2),
        "noop_p99_ms": round(1000 * rtts[int(len(rtts) * 0.99)], 2),
        "logins_waiting": len(users),
        "login_answers": answers,
        "slowest_answer_s": round(max(t for _, t, _ in results), 2),
    }


# -- servers ----------------------------------------------------------------------------


POOL_SIZE: dict = {}


def mailsuite(slapd: BenchSlapd, **ldap) -> BenchServer:
    srv = BenchServer("mailsuite-ldap-bench-", ["smtp", "submission", "imap"], {},
                      {"server": {"allow_plaintext_auth": True}, "dns": {"nameservers": ["127.0.0.1:1"]},
                       **{s: {"max_connections_per_ip": 1000} for s in ("submission", "imap", "pop3", "smtp")}})
    (srv.root / "ldap-password").write_text(SERVICE_PW + "\n")
    srv.sections["directory"] = {"backend": "ldap"}
    settings = {
        "servers": [slapd.url], "base_dn": SUFFIX, "bind_dn": SERVICE_DN, "bind_password_file": "ldap-password",
        "required_group": MAIL_GROUP, "timeout": 2.0, "request_timeout": 3.0, "retry_interval": 1,
    }
    settings.update(POOL_SIZE)
    settings.update(ldap)
    srv.sections["directory.ldap"] = settings
    return srv


DOVECOT_CONF = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = dovecot-ldap-bench
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1000
auth_cache_size = {cache_size}
auth_cache_ttl = 1 hour
default_login_user = {login_user}
default_internal_user = {login_user}
passdb {{
  driver = ldap
  args = {root}/ldap.conf
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  process_min_avail = 2
}}
service auth {{
  unix_listener auth-userdb {{
    mode = 0666
  }}
}}
protocol imap {{
  mail_max_userip_connections = 2000
}}
"""

DOVECOT_LDAP = """\
uris = {uri}
dn = {dn}
dnpass = {dnpass}
auth_bind = yes
base = {base}
pass_filter = (&(objectClass=inetOrgPerson)(uid=%u)(memberOf=*))
"""


MAIL_UID = 5000  # as in the anchor Dovecot; Dovecot refuses to run mail as root


def start_dovecot(root: Path, slapd: BenchSlapd, cache: bool) -> tuple[subprocess.Popen, int]:
    import pwd

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    pw = pwd.getpwnam("dovenull") if _has_user("dovenull") else pwd.getpwnam("nobody")
    for d in ("run", "state", "mail"):
        (root / d).mkdir(exist_ok=True)
    os.chmod(root, 0o755)
    (root / "ldap.conf").write_text(DOVECOT_LDAP.format(uri=slapd.url, dn=SERVICE_DN, dnpass=SERVICE_PW, base=SUFFIX)
                                    .replace("(memberOf=*)", ""))
    (root / "dovecot.conf").write_text(DOVECOT_CONF.format(
        root=root, port=port, cache_size="10M" if cache else "0", login_user=pw.pw_name,
        uid=MAIL_UID, gid=MAIL_UID))
    os.chown(root / "mail", MAIL_UID, MAIL_UID)
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(root / "dovecot.conf")], stdout=subprocess.DEVNULL,
                            stderr=open(root / "stderr.log", "ab"))
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            import socket

            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"dovecot did not start: {(root / 'stderr.log').read_text()} {(root / 'dovecot.log').read_text() if (root / 'dovecot.log').exists() else ''}")


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def stop_proc(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- main -------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logins", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--protocol", choices=("auto", "imap", "smtp"), default="auto")
    ap.add_argument("--pool-size", type=int, default=None, help="directory.ldap.pool_size (default: the server's)")
    ap.add_argument("--stall-seconds", type=float, default=4.0)
    ap.add_argument("--dovecot", action="store_true", help="also run the Dovecot (passdb ldap) anchor")
    ap.add_argument("--json", metavar="FILE", help="append the results as one JSON line")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    proto = args.protocol
    if args.pool_size:
        POOL_SIZE["pool_size"] = args.pool_size
    if proto == "auto":
        proto = "imap" if importlib.util.find_spec("mailsuite.imap.service") else "smtp"
    tmp = Path(tempfile.mkdtemp(prefix="ldap-bench-"))
    os.chmod(tmp, 0o755)
    slapd = BenchSlapd(tmp / "slapd", dict(user(i) for i in range(args.logins + 100)))
    users = [user(i) for i in range(args.logins)]
    results: dict = {"protocol": proto, "logins": args.logins, "concurrency": args.concurrency}
    servers: list[BenchServer] = []
    try:
        def port_of(srv: BenchServer) -> int:
            return srv.ports["imap" if proto == "imap" else "submission"]

        srv = mailsuite(slapd)
        servers.append(srv)
        srv.start()
        assert srv.proc is not None
        cpu0 = cpu_seconds(srv.proc.pid)
        results["cold"] = asyncio.run(run_logins(proto, "127.0.0.1", port_of(srv), users, args.concurrency))
        cpu1 = cpu_seconds(srv.proc.pid)
        results["cold"]["server_cpu_ms_per_login"] = round(1000 * (cpu1 - cpu0) / args.logins, 2)
        results["warm"] = asyncio.run(run_logins(proto, "127.0.0.1", port_of(srv), users, args.concurrency))
        results["warm"]["server_cpu_ms_per_login"] = round(1000 * (cpu_seconds(srv.proc.pid) - cpu1) / args.logins, 2)
        srv.stop()

        srv = mailsuite(slapd, cache_ttl=0, negative_cache_ttl=0, auth_cache_ttl=0)
        servers.append(srv)
        srv.start()
        results["nocache"] = asyncio.run(run_logins(proto, "127.0.0.1", port_of(srv), users, args.concurrency))
        # Stall: LDAP hangs (SIGSTOP) while 40 uncached logins wait on it.
        waiting = [user(i) for i in range(args.logins, args.logins + 40)]
        probe_port = srv.ports["imap" if proto == "imap" else "smtp"]
        slapd.pause()
        try:
            results["stall"] = asyncio.run(stall_probe(proto, "127.0.0.1", probe_port, port_of(srv), waiting, args.stall_seconds))
        finally:
            slapd.resume()
        srv.stop()

        if args.dovecot:
            if not shutil.which("dovecot") or not Path("/usr/lib/dovecot/modules/auth/libauthdb_ldap.so").exists():
                results["dovecot"] = "skipped: needs dovecot-core, dovecot-imapd and dovecot-ldap"
            else:
                proc, port = start_dovecot(tmp / "dovecot", slapd, cache=True)
                try:
                    results["dovecot_cold"] = asyncio.run(run_logins("imap", "127.0.0.1", port, users, args.concurrency))
                    results["dovecot_warm"] = asyncio.run(run_logins("imap", "127.0.0.1", port, users, args.concurrency))
                finally:
                    stop_proc(proc)
    finally:
        for s in servers:
            s.stop()
        slapd.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"LDAP logins: {args.logins} over {args.concurrency} connections, {proto.upper()} "
          f"({'LOGIN' if proto == 'imap' else 'AUTH PLAIN on submission'}), slapd on loopback")
    print(f"{'phase':<14}{'ok':>6}{'logins/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'cpu ms/login':>14}")
    for phase in ("cold", "warm", "nocache", "dovecot_cold", "dovecot_warm"):
        r = results.get(phase)
        if not isinstance(r, dict):
            continue
        cpu = r.get("server_cpu_ms_per_login", "")
        print(f"{phase:<14}{r['ok']:>6}{r['logins_per_s']:>10}{r['p50_ms']!s:>9}{r['p95_ms']!s:>9}{r['max_ms']!s:>9}{cpu!s:>14}")
        if r["failures"]:
            print(f"{'':14}failures: {r['failures']}")
    s = results["stall"]
    print(f"stall (slapd SIGSTOPped, {s['logins_waiting']} logins waiting): NOOP max {s['noop_max_ms']} ms, "
          f"p99 {s['noop_p99_ms']} ms over {s['probes']} probes; login answers {s['login_answers']} "
          f"(slowest after {s['slowest_answer_s']} s)")
    if isinstance(results.get("dovecot"), str):
        print(f"dovecot: {results['dovecot']}")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
