"""Local delivery, written once (mailsuite/delivery/local.py), and the dispatcher's fast
path on top of it: the per-copy delivery filters (headers, folder, discard, reject,
defer), what the SMTP client is told for each mix of results, and the hand-off's body
helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import defer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mailsuite.delivery.dispatch import Dispatcher
from mailsuite.delivery.local import IDeliveryFilter, ILocalDelivery, LocalDelivery
from mailsuite.handoff import BodyFile, Envelope, IMessageSink, PermanentFailure, TemporaryFailure, prepend_headers
from tests.support.store import resolve

ALICE, BOB = "alice@example.test", "bob@example.test"
MESSAGE = b"Subject: hi\n\nhello\n"


def envelope(*accounts: str, forwards: tuple[str, ...] = ()) -> Envelope:
    return Envelope("0123456789AB", "s@remote.test", tuple(accounts) + forwards,
                    mailboxes={a: a for a in accounts}, forwards=forwards, arrival=1_700_000_000.0)


def body_on_disk(tmp_path: Path, data: bytes = MESSAGE) -> BodyFile:
    path = tmp_path / "incoming-body"
    path.write_bytes(data)
    return BodyFile(str(path), len(data), data.count(b"\n"))


def files(mail_dir: Path, account: str, folder: str = "") -> list[bytes]:
    local, _, domain = account.partition("@")
    new = mail_dir / domain / local / (f".{folder}" if folder else "") / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


@implementer(IMessageSink)
class FakeQueue:
    def __init__(self) -> None:
        self.accepted: list[tuple[Envelope, BodyFile]] = []

    def accept(self, envelope: Envelope, body: BodyFile) -> defer.Deferred:
        self.accepted.append((envelope, body))
        return defer.succeed("queued")


@implementer(IDeliveryFilter)
class Filter:
    """A delivery filter driven by a function (what Sieve, quota, A-R will be)."""

    def __init__(self, name: str, fn) -> None:  # type: ignore[no-untyped-def]
        self.name, self.fn, self.seen = name, fn, []

    def filter_copy(self, envelope, body, copy):  # type: ignore[no-untyped-def]
        self.seen.append(copy.account)
        return self.fn(copy)


def test_interfaces_are_provided(store) -> None:  # type: ignore[no-untyped-def]
    local = LocalDelivery(store)
    assert verifyObject(ILocalDelivery, local)
    assert verifyObject(IMessageSink, Dispatcher(local, FakeQueue()))
    assert verifyObject(IDeliveryFilter, Filter("x", lambda c: None))


def test_each_copy_starts_with_return_path_and_its_own_delivered_to(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    results = resolve(LocalDelivery(store).deliver(envelope(ALICE, BOB), body_on_disk(tmp_path)))
    assert {a: (r.status, r.dsn, r.folder) for a, r in results.items()} == {
        ALICE: ("delivered", "2.0.0", "INBOX"), BOB: ("delivered", "2.0.0", "INBOX")}
    assert files(store.mail_dir, ALICE) == [b"Return-Path: <s@remote.test>\nDelivered-To: alice@example.test\n" + MESSAGE]
    assert files(store.mail_dir, BOB) == [b"Return-Path: <s@remote.test>\nDelivered-To: bob@example.test\n" + MESSAGE]


def test_filters_run_in_order_and_may_add_headers_and_choose_a_new_folder(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def first(copy):  # type: ignore[no-untyped-def]
        copy.add_header(b"Authentication-Results: mx.example.test; spf=pass\n")

    def second(copy):  # type: ignore[no-untyped-def]
        if copy.account == BOB:
            copy.folder = "Lists.twisted"
        return defer.succeed(None)  # a filter may answer later

    local = LocalDelivery(store, [Filter("ar", first), Filter("sieve", second)])
    results = resolve(local.deliver(envelope(ALICE, BOB), body_on_disk(tmp_path)))
    assert results[BOB].folder == "Lists.twisted"
    assert files(store.mail_dir, BOB, "Lists.twisted") == [
        b"Return-Path: <s@remote.test>\nDelivered-To: bob@example.test\n"
        b"Authentication-Results: mx.example.test; spf=pass\n" + MESSAGE]
    assert files(store.mail_dir, BOB) == []
    assert files(store.mail_dir, ALICE)[0].startswith(b"Return-Path: <s@remote.test>\nDelivered-To: alice")
    # The created folder is a real Maildir++ folder the IMAP side lists.
    assert (store.mail_dir / "example.test" / "bob" / ".Lists.twisted" / "maildirfolder").exists()


def test_a_copy_ended_by_a_filter_is_not_written_and_later_filters_skip_it(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ending = Filter("sieve", lambda c: c.discard("discarded by sieve") if c.account == ALICE else c.reject("no thanks"))
    later = Filter("later", lambda c: None)
    results = resolve(LocalDelivery(store, [ending, later]).deliver(envelope(ALICE, BOB), body_on_disk(tmp_path)))
    assert (results[ALICE].status, results[ALICE].ok) == ("discarded", True)
    assert (results[BOB].status, results[BOB].dsn, results[BOB].text) == ("permanent", "5.7.1", "no thanks")
    assert later.seen == []
    assert files(store.mail_dir, ALICE) == files(store.mail_dir, BOB) == []


def test_a_filter_that_raises_defers_the_copy_and_is_logged(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def broken(copy):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    results = resolve(LocalDelivery(store, [Filter("broken", broken)]).deliver(envelope(ALICE), body_on_disk(tmp_path)))
    assert (results[ALICE].status, results[ALICE].dsn) == ("temporary", "4.3.0")
    assert "broken" in results[ALICE].text


def test_fast_path_delivers_and_removes_the_incoming_file(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    body, queue = body_on_disk(tmp_path), FakeQueue()
    assert resolve(Dispatcher(LocalDelivery(store), queue).accept(envelope(ALICE), body)) == "delivered"
    assert not Path(body.path).exists() and queue.accepted == []
    assert len(files(store.mail_dir, ALICE)) == 1


def test_a_remote_recipient_sends_the_whole_message_to_the_queue(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    body, queue = body_on_disk(tmp_path), FakeQueue()
    env = envelope(ALICE, forwards=("r@remote.test",))
    assert resolve(Dispatcher(LocalDelivery(store), queue).accept(env, body)) == "queued"
    assert queue.accepted == [(env, body)] and files(store.mail_dir, ALICE) == []


def test_every_copy_rejected_is_a_permanent_failure_with_the_filters_text(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    local = LocalDelivery(store, [Filter("sieve", lambda c: c.reject("not wanted here"))])
    body = body_on_disk(tmp_path)
    with pytest.raises(PermanentFailure) as e:
        resolve(Dispatcher(local, FakeQueue()).accept(envelope(ALICE, BOB), body))
    assert (e.value.status, e.value.reply) == ("5.7.1", "not wanted here")
    assert not Path(body.path).exists()


def test_any_temporary_failure_with_nothing_delivered_is_temporary(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def mixed(copy):  # type: ignore[no-untyped-def]
        copy.reject("no") if copy.account == ALICE else copy.defer("mailbox full", "4.2.2")

    with pytest.raises(TemporaryFailure) as e:
        resolve(Dispatcher(LocalDelivery(store, [Filter("quota", mixed)]), FakeQueue()).accept(
            envelope(ALICE, BOB), body_on_disk(tmp_path)))
    assert (e.value.status, e.value.reply) == ("4.2.2", "mailbox full")


def test_partly_delivered_message_is_accepted_and_the_rest_goes_to_the_queue(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    quota = Filter("quota", lambda c: c.defer("mailbox full", "4.2.2") if c.account == BOB else None)
    body, queue = body_on_disk(tmp_path), FakeQueue()
    result = resolve(Dispatcher(LocalDelivery(store, [quota]), queue).accept(envelope(ALICE, BOB), body))
    assert result == "delivered, partly queued"
    assert len(files(store.mail_dir, ALICE)) == 1 and files(store.mail_dir, BOB) == []
    [(rest, queued_body)] = queue.accepted
    assert rest.mailboxes == {BOB: BOB} and rest.queue_id == "0123456789AB" and queued_body == body
    assert Path(body.path).exists()  # the queue owns it now


def test_store_failure_is_temporary_and_leaves_no_copy(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    body = BodyFile(str(tmp_path / "missing"), 10, 1)  # the body file is gone: the write fails
    with pytest.raises(TemporaryFailure):
        resolve(Dispatcher(LocalDelivery(store), FakeQueue()).accept(envelope(ALICE, BOB), body))
    assert files(store.mail_dir, ALICE) == files(store.mail_dir, BOB) == []


def test_a_stable_delivery_repeated_after_a_crash_makes_no_second_copy(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    local, body = LocalDelivery(store), body_on_disk(tmp_path)
    resolve(local.deliver(envelope(ALICE), body, stable=True))
    resolve(local.deliver(envelope(ALICE), body, stable=True, check_existing=True))
    assert len(files(store.mail_dir, ALICE)) == 1


@pytest.mark.parametrize("in_memory", [True, False])
def test_prepend_headers_puts_lines_before_the_body_in_memory_and_on_disk(tmp_path: Path, in_memory: bool) -> None:
    body = body_on_disk(tmp_path)
    if in_memory:
        body = BodyFile(body.path, body.size, body.lines, MESSAGE)
    out = prepend_headers(body, b"X-A: 1\nX-B: 2\n")
    data = out.data if in_memory else Path(out.path).read_bytes()
    assert data == b"X-A: 1\nX-B: 2\n" + MESSAGE
    assert (out.size, out.lines, out.path) == (len(data), data.count(b"\n"), body.path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["incoming-body"]  # no temp file left
