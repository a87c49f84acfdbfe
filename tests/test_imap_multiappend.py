"""MULTIAPPEND (RFC 3502) end to end, over real sockets, plus the store step under it.

``APPEND mbox [flags] [date] {n} [flags] [date] {m} ...`` stores every message or
none: a bad date, flag or empty message anywhere refuses the whole command before
anything is stored, and a message over APPENDLIMIT refuses it before its bytes are
read.  The tagged OK carries ``[APPENDUID validity uid-set]`` (RFC 4315).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import pytest

from mailsuite.store.mailstore import MaildirStore
from tests.support.imap import Accounts, Raw, running_imap_server
from tests.support.server import Server
from tests.support.store import ACCOUNT, resolve

LIMIT = 200_000


def msg(n: int, size: int = 0) -> bytes:
    body = (b"x" * 70 + b"\r\n") * (size // 72) if size else b"body %d\r\n" % n
    return b"From: a@remote.test\r\nSubject: part %d\r\n\r\n" % n + body


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from running_imap_server(tmp_path_factory, "imapmulti", imap={"append_limit": LIMIT})


@pytest.fixture(scope="module")
def accounts(srv: Server) -> Accounts:
    return Accounts(srv)


@pytest.fixture
def raw(srv: Server, accounts: Accounts) -> Raw:
    r = Raw(srv.ports["imap"])
    r.login(accounts.take())
    return r


def multiappend(r: Raw, mailbox: bytes, parts: list[tuple[bytes, bytes]]) -> tuple[list[bytes], bytes]:
    """APPEND with non-synchronizing literals (LITERAL+): ``parts`` = (prefix, message)."""
    r.n += 1
    tag = b"t%d" % r.n
    line = tag + b" APPEND " + mailbox
    data = b""
    for prefix, message in parts:
        data += line + b" " + prefix + b"{%d+}\r\n" % len(message)
        data += message
        line = b""
    r.send(data + b"\r\n")
    return r.response(tag)


def messages_in(r: Raw, mailbox: bytes) -> int:
    untagged, _ = r.cmd(b"STATUS " + mailbox + b" (MESSAGES)")
    return int(re.search(rb"MESSAGES (\d+)", untagged[0]).group(1))


def test_multiappend_is_advertised(raw: Raw) -> None:
    untagged, _ = raw.cmd(b"CAPABILITY")
    assert b" MULTIAPPEND" in untagged[0]


def test_three_messages_in_one_append_get_a_uid_set(raw: Raw) -> None:
    raw.cmd(b"CREATE Multi")
    _, tagged = multiappend(raw, b"Multi", [
        (b"(\\Seen) ", msg(1)),
        (b'"01-Feb-2024 10:00:00 +0000" ', msg(2)),
        (b'(\\Flagged $Work) "02-Feb-2024 11:30:00 +0100" ', msg(3)),
    ])
    m = re.match(rb"t\d+ OK \[APPENDUID (\d+) 1:3\] APPEND completed", tagged)
    assert m, tagged
    raw.cmd(b"EXAMINE Multi")
    untagged, _ = raw.cmd(b"FETCH 1:3 (UID FLAGS INTERNALDATE BODY.PEEK[])")
    text = b"\n".join(untagged)
    assert b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent)" in text or b"* 1 FETCH (UID 1 FLAGS (\\Seen)" in text
    assert b'INTERNALDATE "01-Feb-2024 10:00:00 +0000"' in untagged[1]
    assert b"$Work" in untagged[2] and b"\\Flagged" in untagged[2]
    for i in (1, 2, 3):
        assert msg(i) in untagged[i - 1]


def test_synchronizing_literals_wait_for_each_continuation(raw: Raw) -> None:
    raw.send(b"s1 APPEND INBOX (\\Draft) {%d}\r\n" % len(msg(1)))
    assert raw.line().startswith(b"+")
    raw.send(msg(1) + b" {%d}\r\n" % len(msg(2)))
    assert raw.line().startswith(b"+")
    raw.send(msg(2) + b"\r\n")
    _, tagged = raw.response(b"s1")
    assert re.match(rb"s1 OK \[APPENDUID \d+ 1:2\]", tagged), tagged
    assert messages_in(raw, b"INBOX") == 2


@pytest.mark.parametrize("bad_part, answer", [
    ((b'"31-Feb-2024 10:00:00 +0000" ', msg(2)), b"BAD"),        # no such date
    ((b"(\\Bogus) ", msg(2)), b"BAD"),                             # no such system flag
    ((b"", b""), b"NO [CANNOT]"),                                   # empty message
])
def test_one_bad_message_stores_none(raw: Raw, bad_part: tuple[bytes, bytes], answer: bytes) -> None:
    raw.cmd(b"CREATE Atomic")
    _, tagged = multiappend(raw, b"Atomic", [(b"", msg(1)), bad_part, (b"", msg(3))])
    assert tagged.split(b" ", 1)[1].startswith(answer), tagged
    assert messages_in(raw, b"Atomic") == 0


def test_a_message_over_appendlimit_refuses_the_whole_append(raw: Raw) -> None:
    raw.cmd(b"CREATE Big")
    big = msg(2, LIMIT + 1000)
    # Synchronizing: the server answers at the big literal's announcement, unread.
    raw.send(b"b1 APPEND Big {%d}\r\n" % len(msg(1)))
    assert raw.line().startswith(b"+")
    raw.send(msg(1) + b" {%d}\r\n" % len(big))
    _, tagged = raw.response(b"b1")
    assert tagged.startswith(b"b1 NO [TOOBIG]"), tagged
    assert messages_in(raw, b"Big") == 0


def test_many_medium_messages_spool_and_all_arrive(raw: Raw, srv: Server) -> None:
    """Nine messages of ~150 KB: more than the in-memory share of one command, so the
    later ones go through spool files, which are gone afterwards."""
    raw.cmd(b"CREATE Medium")
    parts = [(b"", msg(i, 150_000)) for i in range(1, 10)]
    _, tagged = multiappend(raw, b"Medium", parts)
    assert re.match(rb"t\d+ OK \[APPENDUID \d+ 1:9\]", tagged), tagged
    assert messages_in(raw, b"Medium") == 9
    raw.cmd(b"EXAMINE Medium")
    untagged, _ = raw.cmd(b"FETCH 9 (BODY.PEEK[])")
    assert msg(9, 150_000) in untagged[0]
    spool_dirs = [p for p in srv.root.rglob("imap-spool") if p.is_dir()]
    assert spool_dirs and all(os.listdir(p) == [] for p in spool_dirs)


def test_missing_mailbox_is_trycreate_and_nothing_stored(raw: Raw) -> None:
    _, tagged = multiappend(raw, b"Nowhere", [(b"", msg(1)), (b"", msg(2))])
    assert b"NO [TRYCREATE]" in tagged


def test_single_append_still_answers_one_uid(raw: Raw) -> None:
    _, tagged = multiappend(raw, b"INBOX", [(b"", msg(1))])
    assert re.match(rb"t\d+ OK \[APPENDUID \d+ \d+\] APPEND completed", tagged), tagged


def test_garbage_after_the_last_literal_is_bad_and_stores_none(raw: Raw) -> None:
    raw.cmd(b"CREATE Trail")
    raw.n += 1
    raw.send(b"t%d APPEND Trail {%d+}\r\n%s junk\r\n" % (raw.n, len(msg(1)), msg(1)))
    _, tagged = raw.response(b"t%d" % raw.n)
    assert b" BAD " in tagged
    assert messages_in(raw, b"Trail") == 0


# -- the store step: all or none -----------------------------------------------------------


def test_store_append_many_leaves_nothing_when_one_source_fails(store: MaildirStore, tmp_path: Path) -> None:
    resolve(store.ensure_account(ACCOUNT))
    folder = resolve(store.open_folder(ACCOUNT, "INBOX"))
    with pytest.raises(OSError):
        resolve(folder.append_many([(msg(1), [], None), (tmp_path / "no-such-file", [], None), (msg(3), [], None)]))
    resolve(folder.sync())
    assert list(folder.messages()) == []
    leftovers = [p for p in store.mail_dir.rglob("*") if p.is_file() and p.parent.name in ("tmp", "cur", "new")]
    assert leftovers == []
    uids = resolve(folder.append_many([(msg(1), ["\\Seen"], None), (msg(2), [], 1_700_000_000.0)]))
    assert uids == [1, 2]
    assert [r.uid for r in folder.messages()] == [1, 2]
    assert "\\Seen" in folder.get(1).flags and int(folder.get(2).internaldate) == 1_700_000_000
    assert os.path.getsize(folder.path / "cur" / folder.get(2).filename) == len(msg(2).replace(b"\r\n", b"\n"))
