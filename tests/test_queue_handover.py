"""The parent's queue and the workers' first attempts (queue/handover.py): a message a
worker is attempting is left alone until the worker hands it back, finishes it or dies;
an administrator's delete waits for the attempt; TLS-RPT results reach the parent's
one file.  (End to end, with real worker processes: tests/test_processes.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from twisted.internet import task

from mailsuite import config as config_mod
from mailsuite.handoff import BodyFile
from mailsuite.process.supervisor import WorkerProtocol
from mailsuite.queue import spool
from mailsuite.queue.handover import ForwardedTLSResults
from mailsuite.queue.route import Router
from mailsuite.queue.scheduler import QueueManager
from mailsuite.queue.spool import Record, Recipient, SpoolPaths
from mailsuite.workers import InlineWorkers


class NoRelay:
    reports = None

    def __init__(self) -> None:
        self.attempts: list[Any] = []

    async def deliver(self, dest: Any, tx: Any) -> Any:
        self.attempts.append(tx)
        raise AssertionError("no attempt expected in these tests")

    def close_all(self) -> None:
        pass


def manager(tmp_path: Path) -> tuple[QueueManager, task.Clock]:
    cfg_path = tmp_path / "mailsuite.toml"
    cfg_path.write_text('[server]\nhostname = "mx.example.test"\ndata_dir = "data"\ndomains = ["example.test"]\n'
                        + "".join(f"[{s}]\nlisten_tls = []\n" for s in ("submission", "imap", "pop3", "http")))
    cfg = config_mod.parse(cfg_path.read_text(), cfg_path)
    clock = task.Clock()
    qm = QueueManager(cfg, None, None, NoRelay(), Router(cfg.relay, None), reactor=clock,  # type: ignore[arg-type]
                      workers=InlineWorkers(), clock=lambda: 1_000_000.0 + clock.seconds())
    qm.paths.make()
    qm.startService()
    return qm, clock


def spooled(qm: QueueManager, qid: str, next_attempt: float = 0.0) -> None:
    rec = Record(id=qid, sender="a@example.test", arrival=time.time(),
                 recipients=(Recipient("b@remote.test", "remote", next_attempt=next_attempt),), size=3, lines=1)
    spool.write_new(qm.paths, rec, BodyFile("", 3, 1, b"x\n\n"))


def test_a_message_a_worker_is_trying_is_not_taken_by_the_parent_until_handed_back(tmp_path: Path) -> None:
    qm, _ = manager(tmp_path)
    spooled(qm, "AAA000000001", next_attempt=2_000_000.0)
    qm.worker_trying("AAA000000001", 1)
    qm.adopt("AAA000000001")  # a stray adopt meanwhile changes nothing
    assert "AAA000000001" not in qm.entries
    assert qm.retry("AAA000000001")  # "being attempted now"
    qm.worker_released("AAA000000001")
    assert "AAA000000001" in qm.entries and not qm.entries["AAA000000001"].busy
    qm.stopService()


def test_when_a_worker_dies_the_parent_takes_over_what_it_had_not_handed_back(tmp_path: Path) -> None:
    qm, _ = manager(tmp_path)
    for qid, worker in (("AAA000000001", 1), ("AAA000000002", 2), ("AAA000000003", 1)):
        spooled(qm, qid, next_attempt=2_000_000.0)
        qm.worker_trying(qid, worker)
    spool.remove(qm.paths, "AAA000000003")  # finished, its 'done' line lost with the worker
    qm.worker_ended(1)
    assert set(qm.entries) == {"AAA000000001"}  # worker 2's message is still worker 2's
    qm.worker_ended(2)
    assert set(qm.entries) == {"AAA000000001", "AAA000000002"}
    qm.stopService()


def test_a_delete_waits_for_the_workers_attempt_and_removes_what_is_handed_back(tmp_path: Path) -> None:
    qm, _ = manager(tmp_path)
    paths = SpoolPaths(qm.config.queue_dir)
    for qid in ("AAA000000001", "AAA000000002"):
        spooled(qm, qid, next_attempt=2_000_000.0)
        qm.worker_trying(qid, 1)
    answers: dict[str, Any] = {}
    for qid in ("AAA000000001", "AAA000000002"):
        qm.delete(qid).addCallback(lambda ok, qid=qid: answers.__setitem__(qid, ok))
    assert answers == {}  # the attempts are still running
    qm.worker_released("AAA000000001")  # still waiting for recipients: removed now
    assert answers == {"AAA000000001": True}
    assert not paths.envelope("AAA000000001").exists() and "AAA000000001" not in qm.entries
    qm.worker_done("AAA000000002")  # delivered before the delete could act
    assert answers["AAA000000002"] is False
    qm.stopService()


def test_tls_results_of_a_worker_are_counted_by_the_parents_reports(tmp_path: Path) -> None:
    lines: list[str] = []

    class Channel:
        def tls_result(self, text: str) -> None:
            lines.append(f"tlsrpt {text}")

    ForwardedTLSResults(Channel()).record("partner.test", "sts", ["version: STSv1"], "mx.partner.test",
                                          "192.0.2.1", False, "certificate-host-mismatch")
    got: list[tuple] = []

    class Reports:
        def record(self, *args: Any) -> None:
            got.append(args)

    class Supervisor:
        queue = type("Q", (), {"relay": type("R", (), {"reports": Reports()})()})()

    WorkerProtocol(Supervisor(), 1)._control(lines[0])  # type: ignore[arg-type]
    assert got == [("partner.test", "sts", ["version: STSv1"], "mx.partner.test", "192.0.2.1", False,
                    "certificate-host-mismatch")]
    assert json.loads(lines[0].partition(" ")[2])[0] == "partner.test"


def test_mta_sts_caches_of_several_processes_merge_into_one_file(tmp_path: Path) -> None:
    """Each worker fetches policies too: a save keeps what another process cached, and
    the later fetch of a domain wins."""
    from mailsuite.queue.mtasts import Policy, PolicyCache

    path = tmp_path / "mta-sts.json"
    a, b = PolicyCache(path, InlineWorkers()), PolicyCache(path, InlineWorkers())
    a.load()
    b.load()
    a.put(Policy("one.test", "1", "enforce", ("mx.one.test",), 86400, 100.0))
    b.put(Policy("two.test", "1", "enforce", ("mx.two.test",), 86400, 100.0))
    b.put(Policy("one.test", "0", "testing", ("mx.one.test",), 86400, 50.0))  # an older fetch
    again = PolicyCache(path, InlineWorkers())
    again.load()
    assert sorted(again.policies) == ["one.test", "two.test"]
    assert again.policies["one.test"].id == "1" and again.policies["one.test"].mode == "enforce"
