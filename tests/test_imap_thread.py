"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 4) end to end, over real sockets.

The RFC's own REFERENCES example answer, ``* THREAD (2)(3 6 (4 23)(44 7 96))`` for
``THREAD REFERENCES US-ASCII TEXT "gewp"``, is rebuilt from 96 messages whose
References make exactly that tree.  Then the edge cases the algorithm spells out:
messages without Message-ID, duplicate ids, references to messages not in the set
(dummies, pruned or kept), References that loop or point at the message itself,
malformed ids, In-Reply-To instead of References, a truncated References list, and
threads joined by base subject.  A reply chain 20,000 deep is threaded without
recursion (no server needed for that one).
"""

from __future__ import annotations

import imaplib

import imapclient
import pytest

from mailsuite.imap import thread
from mailsuite.imap.headerfacts import Facts
from mailsuite.store.index import MessageRecord
from tests.support.imap import PASSWORD, Accounts, Raw
from tests.support.server import Server


def msg(subject: str, day: int, mid: str | None = None, refs: str | None = None, irt: str | None = None,
        body: str = "text") -> bytes:
    head = ["From: a@x.test", "To: b@x.test", f"Subject: {subject}",
            f"Date: {day:d} Jan 2024 10:00:00 +0000" if day else "Date: not a date"]
    if mid is not None:
        head.append(f"Message-ID: {mid}")
    if refs is not None:
        head.append(f"References: {refs}")
    if irt is not None:
        head.append(f"In-Reply-To: {irt}")
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


@pytest.fixture
def user(accounts: Accounts) -> str:
    return accounts.take()


def session(server: Server, user: str, messages: list[bytes]) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    m.login(user, PASSWORD)
    for data in messages:
        assert m.append("INBOX", None, None, data)[0] == "OK"
    assert m.select("INBOX")[0] == "OK"
    return m


def threads(m: imaplib.IMAP4, algorithm: str = "REFERENCES", *search: str, uid: bool = False) -> bytes:
    if uid:
        typ, data = m.uid("THREAD", algorithm, "UTF-8", *(search or ("ALL",)))
    else:
        typ, data = m.thread(algorithm, "UTF-8", *(search or ("ALL",)))
    assert typ == "OK", data
    return data[0] or b""


def test_thread_algorithms_are_advertised(imap_server: Server, user: str) -> None:
    m = session(imap_server, user, [])
    caps = m.capability()[1][0].split()
    assert b"THREAD=REFERENCES" in caps and b"THREAD=ORDEREDSUBJECT" in caps
    m.logout()


def test_the_rfc_references_example(imap_server: Server, user: str) -> None:
    """RFC 5256 4: ``* THREAD (2)(3 6 (4 23)(44 7 96))``, from a mailbox of 96."""
    tree = {  # uid: (day, references), all with "gewp" in the text
        2: (1, []),
        3: (2, []),
        6: (3, [3]),
        4: (4, [3, 6]),
        23: (5, [3, 6, 4]),
        44: (6, [3, 6]),
        7: (7, [3, 6, 44]),
        96: (8, [3, 6, 44, 7]),
    }
    messages = []
    for uid in range(1, 97):
        if uid in tree:
            day, refs = tree[uid]
            subject = "lonely" if uid == 2 else ("topic" if uid == 3 else "Re: topic")
            messages.append(msg(subject, day, f"<m{uid}@x.test>", " ".join(f"<m{r}@x.test>" for r in refs) or None,
                                body="gewp"))
        else:
            messages.append(msg(f"filler {uid}", 9, f"<f{uid}@x.test>", f"<m{3}@x.test>"))
    m = session(imap_server, user, messages)
    assert threads(m, "REFERENCES", "TEXT", '"gewp"', uid=True) == b"(2)(3 6 (4 23)(44 7 96))"
    # The same set as ORDEREDSUBJECT: "lonely", then "topic" with every reply (by date)
    # a child of its first message.
    assert threads(m, "ORDEREDSUBJECT", "TEXT", '"gewp"', uid=True) == b"(2)(3 (6)(4)(23)(44)(7)(96))"
    m.logout()


def test_orderedsubject_example_shapes(imap_server: Server, user: str) -> None:
    # RFC 5256's ORDEREDSUBJECT example has "(194 195)" (one child follows its parent)
    # and "(174 (175)(176)...)" (several children, each parenthesized).
    m = session(imap_server, user, [
        msg("b", 5), msg("Re: a", 3), msg("a", 1), msg("Re: b", 6), msg("c", 2), msg("[x] A", 4)])
    assert threads(m, "ORDEREDSUBJECT") == b"(3 (2)(6))(5)(1 4)"
    m.logout()


def test_messages_without_ids_or_references_stand_alone(imap_server: Server, user: str) -> None:
    m = session(imap_server, user, [msg("one", 3), msg("two", 1), msg("three", 2)])
    assert threads(m) == b"(2)(3)(1)"
    m.logout()


def test_in_reply_to_links_when_there_are_no_references(imap_server: Server, user: str) -> None:
    m = session(imap_server, user, [msg("q", 1, "<q@x>"), msg("answer", 2, "<a@x>", irt="<q@x> (your message)")])
    assert threads(m) == b"(1 2)"
    m.logout()


def test_replies_to_a_missing_message_share_a_dummy_root(imap_server: Server, user: str) -> None:
    m = session(imap_server, user, [msg("Re: lost", 2, "<r1@x>", "<gone@x>"), msg("other", 1),
                                    msg("Re: lost", 3, "<r2@x>", "<gone@x>"), msg("Re: solo", 4, "<r3@x>", "<gone2@x>")])
    # Two children of the missing <gone@x>: the dummy stays at the top, shown as "()".
    # A dummy with one child is pruned: that child is a thread of its own.
    assert threads(m) == b"(2)((1)(3))(4)"
    m.logout()


def test_dummies_in_the_middle_are_pruned_and_children_promoted(imap_server: Server, user: str) -> None:
    m = session(imap_server, user, [msg("root", 1, "<root@x>"),
                                    msg("Re: root", 2, "<c1@x>", "<root@x> <missing@x>"),
                                    msg("Re: root", 3, "<c2@x>", "<root@x> <missing@x>")])
    assert threads(m) == b"(1 (2)(3))"
    m.logout()


def test_references_that_loop(imap_server: Server, user: str) -> None:
    # 1 says it answers 2, 2 says it answers 1: no link may make a loop.
    m = session(imap_server, user, [msg("x", 1, "<a@x>", "<b@x>"), msg("y", 2, "<b@x>", "<a@x>"),
                                    msg("z", 3, "<c@x>", "<c@x>"),  # its own parent
                                    msg("w", 4, "<d@x>", "<e@x> <d@x> <e@x>")])
    assert threads(m) == b"(2 1)(3)(4)"
    m.logout()


def test_malformed_ids_are_ignored(imap_server: Server, user: str) -> None:
    m = session(imap_server, user, [msg("p", 1, "no-brackets@x"), msg("q", 2, "<ok@x>", "garbage <broken", "<also"),
                                    msg("Re: q", 3, "<r@x>", "<ok@x"), msg("s", 4, "<s@x>", "<>  < @ >  <ok@x>")])
    # 3's References is broken: it joins 2 by subject only (a reply under the original).
    assert threads(m) == b"(1)(2 (3)(4))"
    m.logout()


def test_duplicate_message_ids_belong_to_the_first(imap_server: Server, user: str) -> None:
    m = session(imap_server, user, [msg("a", 1, "<dup@x>"), msg("b", 2, "<dup@x>"), msg("Re: a", 3, "<r@x>", "<dup@x>")])
    assert threads(m) == b"(1 3)(2)"
    m.logout()


def test_a_message_moves_from_a_parent_guessed_from_others_to_its_own_last_reference(imap_server: Server,
                                                                                      user: str) -> None:
    # 3's (truncated) References put the not-yet-seen <c@x> under 1; when 4 = <c@x>
    # arrives, its own References name 2 as its parent: step 1B breaks the first link.
    m = session(imap_server, user, [msg("s", 1, "<x@x>"), msg("t", 2, "<b@x>"),
                                    msg("Re: t", 4, "<d@x>", "<x@x> <c@x>"), msg("Re: t", 3, "<c@x>", "<b@x>")])
    assert threads(m) == b"(1)(2 4 3)"
    m.logout()


def test_threads_with_the_same_base_subject_are_joined(imap_server: Server, user: str) -> None:
    m = session(imap_server, user, [msg("hello", 1, "<h1@x>"), msg("Re: hello", 2, "<h2@x>"),
                                    msg("news", 3, "<n1@x>"), msg("news", 4, "<n2@x>"),
                                    msg("Fwd: news", 5, "<n3@x>"), msg("", 6, "<e1@x>"), msg("", 7, "<e2@x>")])
    # "Re: hello" is a reply: it goes under "hello".  Two non-reply "news" roots get a
    # dummy over both; the forward joins that dummy.  Empty subjects are never joined.
    assert threads(m) == b"(1 2)((3)(4)(5))(6)(7)"
    m.logout()


def test_uid_thread_and_search_criteria(imap_server: Server, user: str) -> None:
    m = session(imap_server, user, [msg("gone", 1), msg("a", 2, "<a@x>"), msg("Re: a", 3, "<b@x>", "<a@x>"),
                                    msg("c", 4, "<c@x>")])
    m.store("1", "+FLAGS", "\\Deleted")
    m.expunge()
    assert threads(m) == b"(1 2)(3)"
    assert threads(m, uid=True) == b"(2 3)(4)"
    assert threads(m, "REFERENCES", "NOT", "SUBJECT", "c", uid=True) == b"(2 3)"
    assert threads(m, "REFERENCES", "SUBJECT", "nothing") == b""
    m.logout()


def test_sent_date_missing_uses_the_internal_date(imap_server: Server, user: str) -> None:
    m = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    m.login(user, PASSWORD)
    m.append("INBOX", None, '"05-Jan-2024 00:00:00 +0000"', msg("x", 0))  # no usable Date
    m.append("INBOX", None, '"09-Jan-2024 00:00:00 +0000"', msg("y", 3))
    m.select("INBOX")
    assert threads(m) == b"(2)(1)"  # 3 Jan (sent) before 5 Jan (arrival)
    m.logout()


def test_bad_and_no_answers(imap_server: Server, user: str) -> None:
    session(imap_server, user, [msg("a", 1)]).logout()
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    r.cmd(b"SELECT INBOX")
    for bad in (b"THREAD JWZ UTF-8 ALL", b"THREAD REFERENCES UTF-8", b"THREAD (REFERENCES) UTF-8 ALL",
                b"UID THREAD REFERENCES UTF-8 FOO"):
        _, tagged = r.cmd(bad)
        assert b" BAD " in tagged, (bad, tagged)
    _, tagged = r.cmd(b"THREAD REFERENCES X-UNKNOWN ALL")
    assert b"NO [BADCHARSET (UTF-8 US-ASCII)]" in tagged
    untagged, tagged = r.cmd(b"THREAD REFERENCES US-ASCII ALL")
    assert untagged == [b"* THREAD (1)"] and b" OK " in tagged


def test_imapclient_thread(imap_server: Server, user: str) -> None:
    session(imap_server, user, [msg("a", 1, "<a@x>"), msg("Re: a", 2, "<b@x>", "<a@x>"),
                                msg("Re: a", 3, "<c@x>", "<a@x>"), msg("b", 4, "<d@x>")]).logout()
    with imapclient.IMAPClient("127.0.0.1", port=imap_server.ports["imap"], ssl=False) as c:
        c.login(user, PASSWORD)
        c.select_folder("INBOX")
        assert c.thread("REFERENCES") == ((1, (2,), (3,)), (4,))
        assert c.thread("ORDEREDSUBJECT") == ((1, (2,), (3,)), (4,))


# -- without a server ------------------------------------------------------------------


def _items(specs: list[tuple[str, list[str], float]]) -> list:
    out = []
    for i, (mid, refs, sent) in enumerate(specs, start=1):
        f = Facts(sent, "", "", "", "", "", f"s{i}", False, mid, refs)
        out.append((i, i, MessageRecord(i, "f", frozenset(), 1, 0.0, 1), f))
    return out


def test_a_chain_twenty_thousand_deep_needs_no_recursion() -> None:
    n = 20000
    specs = [(f"m{i}", [f"m{j}" for j in range(max(0, i - 100), i)], float(i)) for i in range(n)]
    roots = thread.references(_items(specs))
    text = thread.format_threads(roots)
    assert text == b"(" + b" ".join(b"%d" % i for i in range(1, n + 1)) + b")"


def test_a_deep_comb_formats_without_recursion() -> None:
    # Each message has two replies, one of which has two replies, ...: nesting 5000 deep.
    specs = [("r0", [], 0.0)]
    for i in range(1, 5000):
        specs.append((f"r{i}", [f"r{i - 1}"], float(i)))
        specs.append((f"l{i}", [f"r{i - 1}"], float(i) + 0.5))
    text = thread.format_threads(thread.references(_items(specs)))
    assert text.count(b"(") == text.count(b")") == 1 + 2 * 4999
