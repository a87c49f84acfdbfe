"""Several processes over one store ([server] processes): the parent binds and runs the
queue's retries, workers serve the protocols and make first delivery attempts; workers that die are replaced, and nothing
acknowledged is lost or delivered twice when a worker or the parent is killed -9."""

from __future__ import annotations

import email
import imaplib
import os
import poplib
import re
import signal
import smtplib
import ssl
import threading
import time
from pathlib import Path

import pytest

from tests.support.relay import Peer, Script
from tests.support.server import Server, make_server
from tests.support.tls import client_context
from tests.support.waiting import wait_for

PARTNER = "partner.test"


def worker_pids(srv: Server) -> dict[int, int]:
    """Worker number -> pid of its latest start, from the parent's log."""
    out: dict[int, int] = {}
    for n, pid in re.findall(r"process: worker (\d+) started \(pid (\d+)\)", srv.log()):
        out[int(n)] = int(pid)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of a dead parent is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def start_pair(tmp_path: Path, processes: int = 2) -> tuple[Server, Server]:
    """``srv`` with ``processes`` workers, relaying partner.test to ``peer`` (one process)."""
    peer = make_server(tmp_path / "peer", users={f"bob@{PARTNER}": "bob-pw"},
                       server={"domains": [PARTNER], "hostname": "mx.partner.test"})
    peer.start()
    srv = make_server(tmp_path / "srv", server={"processes": processes},
                      relay={"transport": {PARTNER: f"127.0.0.1:{peer.ports['smtp']}"}, "tls_policy": "none",
                             "backoff_min": 1})
    srv.start()
    wait_for(lambda: len(set(re.findall(r"worker (\d+) serving", srv.log()))) == processes, timeout=60, what="workers serving", server=srv)
    return srv, peer


def subjects(msgs: list[bytes]) -> list[str]:
    return [email.message_from_bytes(m)["Subject"] for m in msgs]


def test_workers_serve_every_protocol_on_the_parents_sockets(tmp_path: Path) -> None:
    srv, peer = start_pair(tmp_path)
    try:
        def send(k: int) -> None:
            for i in range(10):
                with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=20) as c:
                    c.sendmail("x@remote.test", ["alice@example.test"], f"Subject: m{k}-{i}\r\n\r\nhi\r\n")

        threads = [threading.Thread(target=send, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(subjects(srv.messages("alice@example.test"))) == sorted(
            f"m{k}-{i}" for k in range(6) for i in range(10))
        ctx = client_context()
        m = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=ctx)
        m.login("alice@example.test", "alice-pw")
        assert m.select("INBOX") == ("OK", [b"60"])
        m.logout()
        p = poplib.POP3_SSL("127.0.0.1", srv.ports["pop3s"], context=ctx)
        p.user("alice@example.test")
        p.pass_("alice-pw")
        assert p.stat()[0] == 60
        p.quit()
        log = srv.log()
        # The log says which process did what: protocol lines carry the worker number.
        assert re.search(r"\[mailsuite\.smtp#info w[12]\]", log)
        assert "Traceback" not in log and "CRITICAL" not in log
    finally:
        srv.stop()
        peer.stop()


def test_a_worker_makes_the_first_attempt_of_what_it_spooled(tmp_path: Path) -> None:
    srv, peer = start_pair(tmp_path)
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=20) as c:
            c.sendmail("alice@example.test", [f"bob@{PARTNER}", "bob@example.test"], "Subject: out\r\n\r\nhi\r\n")
        wait_for(lambda: peer.messages(f"bob@{PARTNER}"), timeout=20, what="relayed copy")
        wait_for(lambda: srv.messages("bob@example.test"), timeout=20, what="local copy")
        assert subjects(srv.messages("bob@example.test")) == ["out"]

        def sent_lines() -> list[str]:
            return [line for line in srv.log().splitlines() if "status=sent" in line]

        # (A worker's info lines reach the log in batches of up to 50 ms.)
        wait_for(lambda: len(sent_lines()) == 2, timeout=10, what="two status=sent lines", server=srv)
        sent = sent_lines()
        # The local and the remote copy, both by the worker that took the message.
        assert len(sent) == 2 and all(re.search(r" w[12]\]", line) for line in sent)
        assert len({re.search(r" (w[12])\]", line).group(1) for line in sent}) == 1  # type: ignore[union-attr]
    finally:
        srv.stop()
        peer.stop()


def _scripted_pair(tmp_path: Path, script: Script):  # type: ignore[no-untyped-def]
    peer = Peer(script)
    srv = make_server(tmp_path / "srv", server={"processes": 2},
                      relay={"transport": {PARTNER: f"127.0.0.1:{peer.port}"}, "tls_policy": "none",
                             "backoff_min": 1})
    srv.start()
    wait_for(lambda: len(set(re.findall(r"worker (\d+) serving", srv.log()))) == 2, timeout=60,
             what="workers serving", server=srv)
    return srv, peer


def test_the_parent_makes_the_retries_of_a_message_a_worker_could_not_deliver(tmp_path: Path) -> None:
    srv, peer = _scripted_pair(tmp_path, Script(
        data_end=lambda p: "451 4.3.0 try again later" if p.data_ends == 1 else "250 2.0.0 Ok: queued"))
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=20) as c:
            c.sendmail("alice@example.test", [f"bob@{PARTNER}"], "Subject: later\r\n\r\nhi\r\n")
        wait_for(lambda: len(peer.received) == 1, timeout=30, what="delivered at the retry", server=srv)
        wait_for(lambda: "status=sent" in srv.log(), timeout=10, what="the parent's status=sent line", server=srv)
        lines = srv.log().splitlines()
        deferred = [x for x in lines if "status=deferred" in x]
        sent = [x for x in lines if "status=sent" in x]
        assert len(deferred) == 1 and re.search(r" w[12]\]", deferred[0])  # the worker's first attempt
        assert len(sent) == 1 and not re.search(r" w\d\]", sent[0])  # the parent's retry
        time.sleep(1.5)
        assert len(peer.received) == 1 and peer.data_ends == 2
        assert not any((srv.root / "data" / "queue" / "spool").iterdir())
    finally:
        srv.stop()
        peer.stop()


def test_a_worker_killed_during_its_attempt_leaves_the_message_to_the_parent(tmp_path: Path) -> None:
    """The worker holds the only attempt; killed -9 in the middle of it (the peer has
    the data and has not answered), the parent takes the message over and delivers it
    once, and the peer never saw a second attempt while the first one ran."""
    release = threading.Event()

    def data_end(p: Peer) -> str:
        if p.data_ends == 1:
            release.wait(30)  # the relay is killed meanwhile: nobody reads this answer
            return "451 4.3.0 too late"
        return "250 2.0.0 Ok: queued"

    srv, peer = _scripted_pair(tmp_path, Script(data_end=data_end))
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=20) as c:
            c.sendmail("alice@example.test", [f"bob@{PARTNER}"], "Subject: cut\r\n\r\nhi\r\n")
        wait_for(lambda: peer.data_ends == 1, timeout=20, what="the worker's attempt at the data's end")

        def accepted() -> list[str]:
            return [x for x in srv.log().splitlines() if "mailsuite.smtp#info w" in x and "to=<bob@partner.test>" in x]

        wait_for(lambda: len(accepted()) == 1, timeout=10, what="the worker's line about the message", server=srv)
        (line,) = accepted()
        victim = int(re.search(r" w(\d)\]", line).group(1))  # type: ignore[union-attr]
        time.sleep(2)  # (backoff_min is 1 s: time enough for a wrong second attempt)
        assert peer.connections == 1  # while the worker lives, its attempt is the only one
        os.kill(worker_pids(srv)[victim], signal.SIGKILL)
        wait_for(lambda: len(peer.received) == 1, timeout=30, what="delivered by the parent", server=srv)
        release.set()
        time.sleep(1.5)
        assert len(peer.received) == 1 and peer.data_ends == 2
        wait_for(lambda: "status=sent" in srv.log(), timeout=10, what="the parent's status=sent line", server=srv)
        sent = [x for x in srv.log().splitlines() if "status=sent" in x]
        assert len(sent) == 1 and not re.search(r" w\d\]", sent[0])
    finally:
        release.set()
        srv.stop()
        peer.stop()


def test_a_worker_that_dies_is_started_again(tmp_path: Path) -> None:
    srv, peer = start_pair(tmp_path)
    try:
        old = worker_pids(srv)
        os.kill(old[1], signal.SIGKILL)
        wait_for(lambda: worker_pids(srv).get(1) not in (None, old[1]), timeout=20, what="worker 1 restarted")
        assert "worker 1 (pid" in srv.log() and "ended (signal 9)" in srv.log()
        for _ in range(5):  # whichever process accepts, mail is taken
            with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=20) as c:
                c.sendmail("x@remote.test", ["alice@example.test"], "Subject: after\r\n\r\nhi\r\n")
        assert len(srv.messages("alice@example.test")) == 5
    finally:
        srv.stop()
        peer.stop()


def test_sighup_reaches_every_worker_and_a_clean_stop_ends_them_all(tmp_path: Path) -> None:
    srv, peer = start_pair(tmp_path)
    try:
        pids = worker_pids(srv)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: all(f"w{n}]" in "".join(line for line in srv.log().splitlines() if "reload" in line.lower())
                             for n in pids), timeout=20, what="every worker reloaded its certificates")
        srv.stop()
        wait_for(lambda: not any(alive(p) for p in pids.values()), timeout=15, what="workers gone")
    finally:
        srv.stop()
        peer.stop()


def _load(srv: Server, stop: threading.Event, acked: list[str], lock: threading.Lock, k: int) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        subj = f"c{k}-{i}"
        rcpts = ["alice@example.test"] if i % 3 else ["alice@example.test", f"bob@{PARTNER}"]
        try:
            with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as c:
                c.sendmail("x@example.test", rcpts, f"Subject: {subj}\r\n\r\nbody {subj}\r\n")
            with lock:
                acked.append(subj)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)  # the worker serving us was killed; not acknowledged


def test_kill_9_of_workers_and_parent_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    srv, peer = start_pair(tmp_path)
    try:
        stop, lock, acked = threading.Event(), threading.Lock(), []  # type: ignore[var-annotated]
        threads = [threading.Thread(target=_load, args=(srv, stop, acked, lock, k)) for k in range(6)]
        for t in threads:
            t.start()
        try:
            for victim in (1, 2, 1):
                time.sleep(1.5)
                pids = worker_pids(srv)
                os.kill(pids[victim], signal.SIGKILL)
                wait_for(lambda: worker_pids(srv).get(victim) != pids[victim], timeout=20, what="restart")
            time.sleep(1.5)
            # Then the parent: its workers stop with it (PR_SET_PDEATHSIG) ...
            pids = worker_pids(srv)
            srv.kill9()
            wait_for(lambda: not any(alive(p) for p in pids.values()), timeout=20, what="orphaned workers gone")
        finally:
            stop.set()
            for t in threads:
                t.join()
        # ... and a restart delivers what the spool still holds.
        srv.start()
        assert len(acked) > 50
        remote = {s for s in acked if int(s.split("-")[1]) % 3 == 0}

        def settled() -> bool:
            return remote <= set(subjects(peer.messages(f"bob@{PARTNER}")))

        wait_for(settled, timeout=60, what="every acknowledged remote copy relayed")
        local = subjects(srv.messages("alice@example.test"))
        assert set(acked) <= set(local), "an acknowledged message was lost"
        dup_local = {s for s in local if local.count(s) > 1}
        assert not dup_local, f"delivered twice: {sorted(dup_local)[:5]}"
        relayed = subjects(peer.messages(f"bob@{PARTNER}"))
        # A relay attempt cut by the kill may be sent again (SMTP gives at-least-once
        # across a crash); none of the acknowledged ones may be missing, and the
        # messages spooled by workers are attempted by the parent only.
        assert remote <= set(relayed)
    finally:
        srv.stop()
        peer.stop()


def test_pop3_maildrop_lock_holds_across_processes(tmp_path: Path) -> None:
    srv, peer = start_pair(tmp_path)
    try:
        first = poplib.POP3("127.0.0.1", srv.ports["pop3"])
        first.stls(ssl._create_unverified_context())
        first.user("alice@example.test")
        first.pass_("alice-pw")
        # Several tries: the kernel hands connections to either worker; each must
        # refuse while the first session holds the maildrop.
        for _ in range(6):
            second = poplib.POP3("127.0.0.1", srv.ports["pop3"])
            second.stls(ssl._create_unverified_context())
            second.user("alice@example.test")
            with pytest.raises(poplib.error_proto, match=r"IN-USE"):
                second.pass_("alice-pw")
            second.quit()
        first.quit()
        again = poplib.POP3("127.0.0.1", srv.ports["pop3"])
        again.stls(ssl._create_unverified_context())
        again.user("alice@example.test")
        assert again.pass_("alice-pw").startswith(b"+OK")
        again.quit()
    finally:
        srv.stop()
        peer.stop()


def test_metrics_count_every_process_whichever_worker_answers_the_scrape(tmp_path: Path) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    def received() -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{srv.ports['http']}/metrics", timeout=10).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return sum(s.value for s in families["mailsuite_messages_received"].samples if s.name.endswith("_total"))

    srv, peer = start_pair(tmp_path)
    try:
        for i in range(12):
            with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=20) as c:
                c.sendmail("x@remote.test", ["alice@example.test"], f"Subject: m{i}\r\n\r\nhi\r\n")
        assert [received() for _ in range(6)] == [12] * 6
        # A worker that dies takes no count with it: whoever answers still says 12.
        pids = worker_pids(srv)
        for n, pid in pids.items():
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: worker_pids(srv).get(n) != pid, timeout=20, what="restart")
        wait_for(lambda: len(re.findall(r"worker \d+ serving", srv.log())) >= 4, timeout=60, what="workers back")
        assert [received() for _ in range(4)] == [12] * 4
    finally:
        srv.stop()
        peer.stop()


def test_login_failures_are_limited_across_workers_as_in_one_process(tmp_path: Path) -> None:
    """Each worker allows its share of [limits]: however the kernel spreads the
    attempts, at most auth_refuse_after (+ workers - 1) are even checked."""
    peer = make_server(tmp_path / "peer", users={f"bob@{PARTNER}": "bob-pw"}, server={"domains": [PARTNER]})
    srv = make_server(tmp_path / "srv", server={"processes": 2},
                      limits={"auth_refuse_after": 4, "auth_delay_after": 100, "auth_ip_delay_after": 100,
                              "auth_ip_refuse_after": 100})
    srv.start()
    try:
        wait_for(lambda: len(set(re.findall(r"worker (\d+) serving", srv.log()))) == 2, timeout=60,
                 what="workers serving", server=srv)
        codes = []
        for _ in range(12):
            with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=20) as c:
                c.starttls(context=ssl._create_unverified_context())
                try:
                    c.login("alice@example.test", "wrong")
                except smtplib.SMTPAuthenticationError as e:
                    codes.append(e.smtp_code)
        # smtplib tries PLAIN then LOGIN: two checked attempts per login() at most.
        checked = srv.log().count("auth failure: proto=smtp")
        assert 2 <= checked <= 4 + 1, srv.log()
        assert codes[-1] in (421, 454), codes  # refused, whichever worker answers
    finally:
        srv.stop()
        peer.stop()
