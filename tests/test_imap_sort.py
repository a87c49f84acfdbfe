"""SORT (RFC 5256 3) and SORT=DISPLAY (RFC 5957) end to end, over real sockets.

Each test appends messages whose headers make the expected order unambiguous, then
asks with imaplib (``IMAP4.sort``, ``uid("SORT", ...)``), imapclient (``sort``) or a
raw session, and compares the ``* SORT`` numbers.  The base-subject extraction of
RFC 5256 2.1 is checked line by line against the RFC's rules in
``test_base_subject_rules``.
"""

from __future__ import annotations

import imaplib
from typing import Iterator

import imapclient
import pytest

from mailsuite.imap.headerfacts import base_subject, collate
from mailsuite.imap.sort import parse_criteria
from tests.support.imap import PASSWORD, Accounts, Raw
from tests.support.server import Server


def msg(subject: str = "s", frm: str = "a@x.test", to: str = "t@x.test", cc: str | None = None,
        date: str | None = "Mon, 1 Jan 2024 10:00:00 +0000", body: str = "body") -> bytes:
    head = [f"From: {frm}", f"To: {to}", f"Subject: {subject}"]
    if cc is not None:
        head.append(f"Cc: {cc}")
    if date is not None:
        head.append(f"Date: {date}")
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


@pytest.fixture
def user(accounts: Accounts) -> str:
    return accounts.take()


def fill(server: Server, user: str, messages: list[bytes], dates: list[str] | None = None) -> imaplib.IMAP4:
    """An imaplib session with ``messages`` appended to INBOX (UIDs 1..n), INBOX selected."""
    m = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    m.login(user, PASSWORD)
    for i, data in enumerate(messages):
        date = f'"{dates[i]}"' if dates else None
        assert m.append("INBOX", None, date, data)[0] == "OK"
    assert m.select("INBOX")[0] == "OK"
    return m


def sort(m: imaplib.IMAP4, criteria: str, *search: str, charset: str = "UTF-8") -> list[int]:
    typ, data = m.sort(criteria, charset, *(search or ("ALL",)))
    assert typ == "OK", data
    return [int(n) for n in data[0].split()]


@pytest.fixture
def imap(imap_server: Server, user: str) -> Iterator[imaplib.IMAP4]:
    # 1..5 chosen so that each key gives a different order.
    messages = [
        msg("Re: banana", "Carol <carol@x.test>", "zed@x.test", "b@x.test", "Tue, 2 Jan 2024 10:00:00 +0000", "x" * 3000),
        msg("apple", "alice@x.test", "Yann <yann@x.test>", None, "Tue, 2 Jan 2024 09:00:00 +0300", "x" * 1000),
        msg("[list] Cherry", "Bob <BOB@x.test>", "amy@x.test", "a@x.test", "Mon, 1 Jan 2024 23:00:00 -0500", "x" * 5000),
        msg("Fwd: Apple (fwd)", "dave@x.test", "bea@x.test", "c@x.test", None, "x" * 2000),
        msg("banana", "eve@x.test", "Ann <ann@x.test>", "A@x.test", "garbage date", "x" * 4000),
    ]
    arrivals = ["05-Jan-2024 00:00:00 +0000", "04-Jan-2024 00:00:00 +0000", "03-Jan-2024 00:00:00 +0000",
                "01-Jan-2024 12:00:00 +0000", "06-Jan-2024 00:00:00 +0000"]
    m = fill(imap_server, user, messages, arrivals)
    yield m
    m.logout()


def test_sort_is_advertised(imap: imaplib.IMAP4) -> None:
    caps = imap.capability()[1][0].split()
    assert b"SORT" in caps and b"SORT=DISPLAY" in caps


def test_arrival_is_the_internal_date(imap: imaplib.IMAP4) -> None:
    assert sort(imap, "(ARRIVAL)") == [4, 3, 2, 1, 5]
    assert sort(imap, "(REVERSE ARRIVAL)") == [5, 1, 2, 3, 4]


def test_date_is_the_sent_date_in_utc_or_else_the_internal_date(imap: imaplib.IMAP4) -> None:
    # 2: 2 Jan 06:00 UTC; 3: 2 Jan 04:00 UTC; 1: 2 Jan 10:00 UTC; 4 has no Date and 5 an
    # unreadable one: their internal dates (1 Jan 12:00, 6 Jan) stand in (RFC 5256 2.2).
    assert sort(imap, "(DATE)") == [4, 3, 2, 1, 5]
    assert sort(imap, "(REVERSE DATE)") == [5, 1, 2, 3, 4]


def test_size(imap: imaplib.IMAP4) -> None:
    assert sort(imap, "(SIZE)") == [2, 4, 1, 5, 3]


def test_from_to_cc_compare_the_first_mailbox_ascii_casemap(imap: imaplib.IMAP4) -> None:
    assert sort(imap, "(FROM)") == [2, 3, 1, 4, 5]  # alice BOB carol dave eve
    assert sort(imap, "(TO)") == [3, 5, 4, 2, 1]  # amy ann bea yann zed
    # Cc: 2 has none (the empty string sorts first); "a" and "A" are equal under
    # i;ascii-casemap, so 3 and 5 keep their sequence order.
    assert sort(imap, "(CC)") == [2, 3, 5, 1, 4]


def test_subject_is_the_base_subject(imap: imaplib.IMAP4) -> None:
    # apple(2) Apple(4, "Fwd: ... (fwd)") banana(1, "Re:") banana(5) Cherry(3, "[list]")
    assert sort(imap, "(SUBJECT)") == [2, 4, 1, 5, 3]


def test_display_keys_use_the_display_name_else_the_address(imap: imaplib.IMAP4) -> None:
    # DISPLAYFROM: alice@x.test, Bob, Carol, dave@x.test, eve@x.test
    assert sort(imap, "(DISPLAYFROM)") == [2, 3, 1, 4, 5]
    # DISPLAYTO: amy@x.test, Ann, bea@x.test, Yann, zed@x.test
    assert sort(imap, "(DISPLAYTO)") == [3, 5, 4, 2, 1]


def test_several_keys_and_reverse_apply_to_one_key_each(imap: imaplib.IMAP4) -> None:
    # SUBJECT first; within "apple" and "banana" REVERSE SIZE.
    assert sort(imap, "(SUBJECT REVERSE SIZE)") == [4, 2, 5, 1, 3]
    assert sort(imap, "(REVERSE SUBJECT SIZE)") == [3, 1, 5, 2, 4]


def test_search_criteria_narrow_the_set(imap: imaplib.IMAP4) -> None:
    assert sort(imap, "(SUBJECT)", "LARGER", "2500") == [1, 5, 3]
    assert sort(imap, "(DATE)", "OR", "FROM", "bob", "SUBJECT", "apple") == [4, 3, 2]
    assert sort(imap, "(SIZE)", "1:3") == [2, 1, 3]
    assert sort(imap, "(SIZE)", "SUBJECT", "nothing-matches") == []


def test_uid_sort_answers_uids(imap: imaplib.IMAP4) -> None:
    imap.store("1", "+FLAGS", "\\Deleted")
    imap.expunge()  # sequence numbers are now the UIDs minus one
    typ, data = imap.uid("SORT", "(SIZE)", "UTF-8", "ALL")
    assert typ == "OK"
    assert [int(n) for n in data[0].split()] == [2, 4, 5, 3]
    assert sort(imap, "(SIZE)") == [1, 3, 4, 2]


def test_charset(imap: imaplib.IMAP4) -> None:
    assert sort(imap, "(SIZE)", "ALL", charset="US-ASCII") == [2, 4, 1, 5, 3]
    typ, data = imap.sort("(SIZE)", "KOI8-R", "ALL")
    assert typ == "NO" and data[0].startswith(b"[BADCHARSET (UTF-8 US-ASCII)]")


def test_utf8_literal_search_string_and_bad_commands(imap_server: Server, user: str) -> None:
    fill(imap_server, user, [msg("=?utf-8?q?caf=C3=A9_b?="), msg("other"), msg("=?utf-8?q?caf=C3=A9_a?=")]).logout()
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    r.cmd(b"SELECT INBOX")
    r.n += 1
    r.send(b"t%d SORT (SUBJECT) UTF-8 SUBJECT {5}\r\n" % r.n)
    assert r.line().startswith(b"+")
    r.send("café\r\n".encode())
    untagged, tagged = r.response(b"t%d" % r.n)
    assert untagged == [b"* SORT 3 1"] and b" OK " in tagged
    for bad in (b"SORT () UTF-8 ALL", b"SORT (SIZE REVERSE) UTF-8 ALL", b"SORT (COLOR) UTF-8 ALL",
                b"SORT (REVERSE REVERSE SIZE) UTF-8 ALL", b"SORT (SIZE) UTF-8", b"SORT SIZE UTF-8 ALL",
                b"SORT (SIZE) UTF-8 NOSUCHKEY"):
        untagged, tagged = r.cmd(bad)
        assert b" BAD " in tagged, (bad, tagged)
    _, tagged = r.cmd(b"SORT (SIZE) ISO-2022-JP ALL")
    assert b"NO [BADCHARSET (UTF-8 US-ASCII)]" in tagged
    r.cmd(b"UNSELECT")
    _, tagged = r.cmd(b"SORT (SIZE) UTF-8 ALL")
    assert b" BAD " in tagged  # only in the selected state


def test_imapclient_sort(imap_server: Server, user: str) -> None:
    fill(imap_server, user, [msg("b", date="Wed, 3 Jan 2024 10:00:00 +0000"),
                             msg("a", date="Mon, 1 Jan 2024 10:00:00 +0000"),
                             msg("c", date="Tue, 2 Jan 2024 10:00:00 +0000")]).logout()
    with imapclient.IMAPClient("127.0.0.1", port=imap_server.ports["imap"], ssl=False) as c:
        c.login(user, PASSWORD)
        c.select_folder("INBOX")
        assert c.sort(["DATE"]) == [2, 3, 1]  # imapclient sorts with UID SORT
        assert c.sort(["REVERSE", "SUBJECT"]) == [3, 1, 2]
        assert c.sort("SUBJECT", ["NOT", "SUBJECT", "b"]) == [2, 3]


def test_sort_of_300_messages(imap_server: Server, user: str) -> None:
    m = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    m.login(user, PASSWORD)
    m.create("Big")
    for i in range(300):
        m.append("Big", None, None, msg(f"s{(i * 7919) % 300:04d}", date=f"Mon, 1 Jan 2024 10:{i // 60:02d}:{i % 60:02d} +0000"))
    m.select("Big")
    got = sort(m, "(SUBJECT)")
    assert [f"s{(i - 1) * 7919 % 300:04d}" for i in got] == sorted(f"s{i:04d}" for i in range(300))
    assert sort(m, "(REVERSE DATE)") == list(range(300, 0, -1))
    m.logout()


# -- the rules, without a server -----------------------------------------------------


@pytest.mark.parametrize("raw, base, reply", [
    (b"hello", "hello", False),
    (b"Re: hello", "hello", True),
    (b"RE: Re: re:hello", "hello", True),
    (b"Fw: hello", "hello", True),
    (b"FWD: hello", "hello", True),
    (b"Re[2]: hello", "hello", True),  # subj-refwd may hold a subj-blob
    (b"[list] Re: hello", "hello", True),  # subj-blob before subj-refwd
    (b"[list] hello", "hello", False),  # a leading subj-blob goes if text remains (step 4)
    (b"[list]", "[list]", False),  # ... and stays when nothing would remain
    (b"hello (fwd)", "hello", True),  # subj-trailer
    (b"hello (fwd) (FWD)  ", "hello", True),
    (b"[fwd: hello]", "hello", True),  # step 6
    (b"[Fwd: Re: [list] hello (fwd)]", "hello", True),
    (b"Re: [fwd: [fwd: hello]]", "hello", True),
    (b"  spaced\t\r\n  out  ", "spaced out", False),  # step 1: white space runs are one space
    (b"=?iso-8859-1?q?R=E9sum=E9?=", "R\u00e9sum\u00e9", False),  # step 1: RFC 2047
    (b"=?utf-8?b?UmU6IGNhZsOp?=", "caf\u00e9", True),
    (b"Re:", "", True),  # the base subject may be empty
    (b"Rex: hello", "Rex: hello", False),
])
def test_base_subject_rules(raw: bytes, base: str, reply: bool) -> None:
    assert base_subject(raw) == (base, reply)


def test_collation_is_ascii_casemap() -> None:
    assert collate("Hello") == collate("hELLO")
    assert collate("\u00e9") != collate("\u00c9")  # only a-z fold
    assert sorted(["b", "A", "a", "B"], key=collate) == ["A", "a", "b", "B"]


def test_criteria_parsing() -> None:
    assert parse_criteria(["reverse", "Date", "SUBJECT"]) == [("DATE", True), ("SUBJECT", False)]
    for bad in ([], ["REVERSE"], ["DATE", "REVERSE"], ["REVERSE", "REVERSE", "DATE"], ["COLOR"]):
        with pytest.raises(ValueError):
            parse_criteria(bad)
