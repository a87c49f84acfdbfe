"""The spool's on-disk format: JSON envelopes (never pickle), atomic writes, and what a
start finds after a crash (corrupt envelopes moved aside, orphan bodies removed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from mailsuite.handoff import BodyFile, Envelope
from mailsuite.queue.scheduler import record_from_envelope
from mailsuite.queue.spool import CorruptEnvelope, Record, Recipient, SpoolPaths, remove, scan, write_new, write_record


def paths(tmp_path: Path) -> SpoolPaths:
    p = SpoolPaths(tmp_path / "queue")
    p.make()
    return p


def record(qid: str = "ABC000000001") -> Record:
    return Record(qid, "alice@example.test", 1_700_000_000.5, (
        Recipient("bob@example.test", "local", "info@example.test"),
        Recipient("x@remote.test", "remote", "x@remote.test", attempts=2, next_attempt=1_700_000_600.0,
                  dsn="4.7.1", error="451 4.7.1 greylisted", relay="mx[192.0.2.1]:25"),
    ), size=12, lines=2, client_ip="192.0.2.7", helo="client.test", auth_user="alice@example.test")


def test_envelope_round_trips_through_json() -> None:
    rec = record()
    data = rec.to_json()
    assert json.loads(data)["recipients"][1]["error"] == "451 4.7.1 greylisted"
    assert Record.from_json(data) == rec


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_an_envelope_or_corrupt(data: bytes) -> None:
    try:
        Record.from_json(data)
    except CorruptEnvelope:
        pass


@pytest.mark.parametrize("change", [
    {"version": 2}, {"recipients": []}, {"id": "../etc"}, {"sender": 5},
    {"recipients": [{"address": "a@b", "kind": "elsewhere"}]},
    {"recipients": [{"address": "a@b", "kind": "remote", "state": "lost"}]},
])
def test_invalid_envelopes_are_corrupt(change: dict) -> None:
    d = json.loads(record().to_json())
    d.update(change)
    with pytest.raises(CorruptEnvelope):
        Record.from_json(json.dumps(d).encode())


def test_envelope_from_smtp_keeps_local_and_remote_recipients_apart() -> None:
    env = Envelope("Q1", "s@x.test", ("info@example.test", "r@remote.test"),
                   mailboxes={"bob@example.test": "info@example.test"}, forwards=("r@remote.test", "fwd@else.test"))
    rec = record_from_envelope(env, 10, 1)
    assert [(r.address, r.kind, r.orcpt) for r in rec.recipients] == [
        ("bob@example.test", "local", "info@example.test"),
        ("r@remote.test", "remote", "r@remote.test"),
        ("fwd@else.test", "remote", ""),
    ]


def test_new_message_from_memory_is_written_with_body_and_envelope(tmp_path: Path) -> None:
    p = paths(tmp_path)
    rec = record()
    write_new(p, rec, BodyFile(str(tmp_path / "incoming-x"), 12, 2, b"Subject: x\n\n"))
    assert p.body(rec.id).read_bytes() == b"Subject: x\n\n"
    assert scan(p).records == [rec]


def test_new_message_file_is_moved_into_the_spool(tmp_path: Path) -> None:
    p = paths(tmp_path)
    incoming = tmp_path / "incoming-file"
    incoming.write_bytes(b"Subject: y\n\n")
    write_new(p, record(), BodyFile(str(incoming), 12, 2))
    assert not incoming.exists() and p.body("ABC000000001").read_bytes() == b"Subject: y\n\n"


def test_rewrite_replaces_the_envelope_atomically(tmp_path: Path) -> None:
    p = paths(tmp_path)
    rec = record()
    write_new(p, rec, BodyFile("unused", 1, 0, b"x"))
    done = rec.with_recipient(0, state="sent")
    write_record(p, done)
    assert scan(p).records == [done]
    assert sorted(os.listdir(p.spool)) == ["ABC000000001.json", "ABC000000001.msg"]


def test_start_moves_corrupt_envelopes_aside_and_keeps_the_rest(tmp_path: Path) -> None:
    p = paths(tmp_path)
    write_new(p, record("GOOD00000001"), BodyFile("unused", 1, 0, b"x"))
    (p.spool / "BAD000000001.json").write_bytes(b"\x80\x04pickle?")
    (p.spool / "BAD000000001.msg").write_bytes(b"body")
    result = scan(p)
    assert [r.id for r in result.records] == ["GOOD00000001"]
    assert [name for name, _why in result.corrupt] == ["BAD000000001.json"]
    assert sorted(n.split(".")[1] for n in os.listdir(p.corrupt)) == ["json", "msg"]
    assert sorted(os.listdir(p.spool)) == ["GOOD00000001.json", "GOOD00000001.msg"]


def test_envelope_without_body_is_corrupt(tmp_path: Path) -> None:
    p = paths(tmp_path)
    (p.spool / "ABC000000001.json").write_bytes(record().to_json())
    result = scan(p)
    assert not result.records and "body file is missing" in result.corrupt[0][1]


def test_body_without_envelope_is_a_crash_leftover_and_removed(tmp_path: Path) -> None:
    p = paths(tmp_path)
    (p.spool / "ABC000000009.msg").write_bytes(b"never acknowledged")
    (p.spool / "ABC000000009.json.tmp").write_bytes(b"{")
    result = scan(p)
    assert result.orphans == 1 and os.listdir(p.spool) == []


def test_listing_does_not_touch_the_spool(tmp_path: Path) -> None:
    p = paths(tmp_path)
    (p.spool / "ABC000000009.msg").write_bytes(b"x")
    (p.spool / "BAD.json").write_bytes(b"{")
    scan(p, clean=False)
    assert sorted(os.listdir(p.spool)) == ["ABC000000009.msg", "BAD.json"]


def test_remove_takes_envelope_and_body(tmp_path: Path) -> None:
    p = paths(tmp_path)
    write_new(p, record(), BodyFile("unused", 1, 0, b"x"))
    remove(p, "ABC000000001", durable=True)
    assert os.listdir(p.spool) == []
