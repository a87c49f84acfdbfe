"""ESEARCH (RFC 4731) and SEARCHRES (RFC 5182) end to end, over real sockets.

ESEARCH: ``SEARCH RETURN (MIN MAX COUNT ALL)`` answers one ``* ESEARCH (TAG "t")``
line instead of ``* SEARCH``.  SEARCHRES: ``RETURN (SAVE)`` keeps the result for
the session, and ``$`` then stands for it wherever a sequence set may go.
"""

from __future__ import annotations

import imaplib
import re

import pytest

from tests.support.imap import PASSWORD, Accounts, Raw
from tests.support.server import Server


def message(n: int) -> bytes:
    return (f"From: a{n}@remote.test\r\nTo: u@example.test\r\nSubject: note {n}\r\n"
            f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nbody {n}\r\n").encode()


@pytest.fixture
def user(accounts: Accounts) -> str:
    return accounts.take()


@pytest.fixture
def raw(imap_server: Server, user: str) -> Raw:
    """A session with 6 messages in INBOX (UIDs 1..6); 2, 3 and 5 are \\Flagged."""
    m = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    m.login(user, PASSWORD)
    for n in range(1, 7):
        flags = "(\\Flagged)" if n in (2, 3, 5) else None
        assert m.append("INBOX", flags, None, message(n))[0] == "OK"
    m.logout()
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    _, tagged = r.cmd(b"SELECT INBOX")
    assert b" OK " in tagged
    return r


def ok(r: Raw, command: bytes) -> list[bytes]:
    untagged, tagged = r.cmd(command)
    assert re.match(rb"t\d+ OK", tagged), (command, tagged)
    return untagged


def esearch(untagged: list[bytes]) -> list[bytes]:
    return [line for line in untagged if line.startswith(b"* ESEARCH")]


# -- capabilities ---------------------------------------------------------------------


def test_esearch_and_searchres_are_advertised_after_login(imap_server: Server, user: str) -> None:
    m = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    m.login(user, PASSWORD)
    caps = m.capability()[1][0].split()
    assert b"ESEARCH" in caps and b"SEARCHRES" in caps
    m.logout()


# -- ESEARCH (RFC 4731) ----------------------------------------------------------------


def test_return_min_max_count_all(raw: Raw) -> None:
    untagged = ok(raw, b"SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED")
    n = raw.n
    assert untagged == [b'* ESEARCH (TAG "t%d") MIN 2 MAX 5 COUNT 3 ALL 2:3,5' % n]


def test_uid_search_return_says_uid(raw: Raw) -> None:
    ok(raw, b"STORE 1 +FLAGS (\\Deleted)")
    ok(raw, b"EXPUNGE")  # now sequence numbers and UIDs differ by one
    untagged = ok(raw, b"UID SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED")
    assert esearch(untagged) == [b'* ESEARCH (TAG "t%d") UID MIN 2 MAX 5 COUNT 3 ALL 2:3,5' % raw.n]
    untagged = ok(raw, b"SEARCH RETURN (ALL) FLAGGED")
    assert esearch(untagged) == [b'* ESEARCH (TAG "t%d") ALL 1:2,4' % raw.n]


def test_each_option_alone(raw: Raw) -> None:
    assert ok(raw, b"SEARCH RETURN (MIN) FLAGGED") == [b'* ESEARCH (TAG "t%d") MIN 2' % raw.n]
    assert ok(raw, b"SEARCH RETURN (MAX) FLAGGED") == [b'* ESEARCH (TAG "t%d") MAX 5' % raw.n]
    assert ok(raw, b"SEARCH RETURN (COUNT) ALL") == [b'* ESEARCH (TAG "t%d") COUNT 6' % raw.n]


def test_empty_return_list_means_all(raw: Raw) -> None:
    assert ok(raw, b"SEARCH RETURN () UNFLAGGED") == [b'* ESEARCH (TAG "t%d") ALL 1,4,6' % raw.n]


def test_no_match_leaves_out_min_max_all_but_counts_zero(raw: Raw) -> None:
    untagged = ok(raw, b"SEARCH RETURN (MIN MAX COUNT ALL) KEYWORD nothere")
    assert untagged == [b'* ESEARCH (TAG "t%d") COUNT 0' % raw.n]
    assert ok(raw, b"SEARCH RETURN (MIN ALL) KEYWORD nothere") == [b'* ESEARCH (TAG "t%d")' % raw.n]


def test_charset_may_follow_the_return_options(raw: Raw) -> None:
    untagged = ok(raw, b"SEARCH RETURN (COUNT) CHARSET UTF-8 SUBJECT \"note 4\"")
    assert untagged == [b'* ESEARCH (TAG "t%d") COUNT 1' % raw.n]


def test_text_search_through_message_files_answers_esearch(raw: Raw) -> None:
    untagged = ok(raw, b"UID SEARCH RETURN (ALL) BODY \"body 3\"")
    assert untagged == [b'* ESEARCH (TAG "t%d") UID ALL 3' % raw.n]


def test_plain_search_still_answers_search(raw: Raw) -> None:
    assert ok(raw, b"SEARCH FLAGGED") == [b"* SEARCH 2 3 5"]


@pytest.mark.parametrize("command", [b"SEARCH RETURN (FIRST) ALL", b"SEARCH RETURN ALL", b"SEARCH RETURN",
                                     b"SEARCH RETURN (MIN)", b"UID SEARCH RETURN ((MIN)) ALL"])
def test_bad_return_options_are_bad(raw: Raw, command: bytes) -> None:
    _, tagged = raw.cmd(command)
    assert tagged.startswith(b"t%d BAD" % raw.n), tagged
    ok(raw, b"NOOP")  # the session goes on


def test_imaplib_client_gets_the_esearch_line(imap_server: Server, raw: Raw, user: str) -> None:
    m = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    m.login(user, PASSWORD)
    m.select("INBOX")
    typ, _ = m.uid("SEARCH", "RETURN", "(COUNT MAX)", "FLAGGED")
    assert typ == "OK"
    typ, data = m.response("ESEARCH")
    assert len(data) == 1 and re.fullmatch(rb'\(TAG "\w+"\) UID MAX 5 COUNT 3', data[0]), data
    m.logout()


# -- SEARCHRES (RFC 5182) ----------------------------------------------------------------


def test_save_alone_answers_no_esearch_and_dollar_fetches_the_result(raw: Raw) -> None:
    assert ok(raw, b"SEARCH RETURN (SAVE) FLAGGED") == []
    untagged = ok(raw, b"FETCH $ (UID)")
    assert untagged == [b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)", b"* 5 FETCH (UID 5)"]
    untagged = ok(raw, b"UID FETCH $ (FLAGS)")
    assert [re.match(rb"\* (\d+) FETCH", x).group(1) for x in untagged] == [b"2", b"3", b"5"]


def test_save_with_other_options_answers_them(raw: Raw) -> None:
    untagged = ok(raw, b"UID SEARCH RETURN (SAVE COUNT) FLAGGED")
    assert untagged == [b'* ESEARCH (TAG "t%d") UID COUNT 3' % raw.n]
    assert len(ok(raw, b"FETCH $ (FLAGS)")) == 3


def test_save_with_min_max_keeps_only_those(raw: Raw) -> None:
    untagged = ok(raw, b"SEARCH RETURN (SAVE MIN MAX) FLAGGED")
    assert untagged == [b'* ESEARCH (TAG "t%d") MIN 2 MAX 5' % raw.n]
    assert ok(raw, b"SEARCH $") == [b"* SEARCH 2 5"]
    ok(raw, b"SEARCH RETURN (SAVE MIN) FLAGGED")
    assert ok(raw, b"SEARCH $") == [b"* SEARCH 2"]


def test_dollar_before_any_save_is_empty(raw: Raw) -> None:
    assert ok(raw, b"FETCH $ (FLAGS)") == []
    assert ok(raw, b"SEARCH $") == [b"* SEARCH"]
    assert ok(raw, b"UID STORE $ +FLAGS.SILENT (\\Seen)") == []
    ok(raw, b"COPY $ INBOX")


def test_dollar_in_store_copy_move_and_search(imap_server: Server, raw: Raw, user: str) -> None:
    ok(raw, b"CREATE Keep")
    ok(raw, b"UID SEARCH RETURN (SAVE) FLAGGED")
    untagged = ok(raw, b"STORE $ +FLAGS (\\Seen)")
    assert untagged == [b"* %d FETCH (FLAGS (\\Flagged \\Seen \\Recent))" % n for n in (2, 3, 5)]
    assert ok(raw, b"SEARCH SEEN") == [b"* SEARCH 2 3 5"]
    assert ok(raw, b"SEARCH OR $ 1") == [b"* SEARCH 1 2 3 5"]
    assert ok(raw, b"UID SEARCH UID $") == [b"* SEARCH 2 3 5"]
    _, tagged = raw.cmd(b"COPY $ Keep")
    assert b"[COPYUID " in tagged and tagged.rstrip().endswith(b"COPY completed")
    assert re.search(rb"COPYUID \d+ 2:3,5 1:3\]", tagged), tagged
    untagged = ok(raw, b"UID MOVE $ Keep")
    assert len([x for x in untagged if x.endswith(b" EXPUNGE")]) == 3
    # The moved messages are gone from INBOX: $ no longer names anything here.
    assert ok(raw, b"FETCH $ (UID)") == []
    assert ok(raw, b"STATUS Keep (MESSAGES)") == [b"* STATUS \"Keep\" (MESSAGES 6)"]


def test_expunged_messages_drop_out_of_dollar(raw: Raw) -> None:
    ok(raw, b"SEARCH RETURN (SAVE) FLAGGED")
    ok(raw, b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    ok(raw, b"EXPUNGE")
    # UIDs 3 and 5 are left, now at sequence numbers 2 and 4.
    assert ok(raw, b"FETCH $ (UID)") == [b"* 2 FETCH (UID 3)", b"* 4 FETCH (UID 5)"]


@pytest.mark.parametrize("reset", [b"SELECT INBOX", b"EXAMINE INBOX", b"CLOSE", b"UNSELECT"])
def test_select_examine_close_unselect_reset_dollar(raw: Raw, reset: bytes) -> None:
    ok(raw, b"SEARCH RETURN (SAVE) FLAGGED")
    assert len(ok(raw, b"FETCH $ (UID)")) == 3
    ok(raw, reset)
    if reset in (b"CLOSE", b"UNSELECT"):
        ok(raw, b"SELECT INBOX")
    assert ok(raw, b"FETCH $ (UID)") == []


def test_bad_search_keeps_dollar_and_no_search_empties_it(raw: Raw) -> None:
    ok(raw, b"SEARCH RETURN (SAVE) FLAGGED")
    _, tagged = raw.cmd(b"SEARCH RETURN (SAVE) NOSUCHKEY")
    assert b" BAD " in tagged
    assert ok(raw, b"SEARCH $") == [b"* SEARCH 2 3 5"]
    _, tagged = raw.cmd(b"SEARCH RETURN (SAVE) CHARSET KOI8-R SUBJECT x")
    assert b" NO [BADCHARSET" in tagged
    assert ok(raw, b"SEARCH $") == [b"* SEARCH"]


def test_pipelined_save_then_fetch(raw: Raw) -> None:
    """The point of SEARCHRES: the client sends both without waiting."""
    raw.send(b"p1 UID SEARCH RETURN (SAVE) FLAGGED\r\np2 UID FETCH $ (UID)\r\n")
    untagged1, tagged1 = raw.response(b"p1")
    untagged2, tagged2 = raw.response(b"p2")
    assert untagged1 == [] and b"p1 OK" in tagged1
    assert untagged2 == [b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)", b"* 5 FETCH (UID 5)"] and b"p2 OK" in tagged2


def test_dollar_outside_a_selected_mailbox_is_refused(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    _, tagged = r.cmd(b"FETCH $ (UID)")
    assert tagged.startswith(b"t2 BAD") or tagged.startswith(b"t2 NO")


def test_dollar_parses_as_the_saved_key_alone_or_after_uid() -> None:
    from mailsuite.imap import search as S
    from mailsuite.imap.parser import parse_command

    assert S.parse(["$"]) == S.Saved()
    assert S.parse(["UID", "$", "SEEN"]) == S.And((S.Saved(), S.Flag("\\Seen")))
    assert parse_command([b"a UID FETCH $ (UID)"]).args["set"].saved
    assert str(parse_command([b"a COPY $ Trash"]).args["set"]) == "$"


def test_uid_expunge_dollar_removes_only_saved_deleted_messages(raw: Raw) -> None:
    ok(raw, b"STORE 1:6 +FLAGS.SILENT (\\Deleted)")
    ok(raw, b"UID SEARCH RETURN (SAVE) FLAGGED")
    untagged = ok(raw, b"UID EXPUNGE $")
    assert sorted(untagged) == [b"* 2 EXPUNGE", b"* 3 EXPUNGE", b"* 5 EXPUNGE"], untagged
    assert ok(raw, b"UID SEARCH ALL") == [b"* SEARCH 1 4 6"]
    assert ok(raw, b"SEARCH NOT $") == [b"* SEARCH 1 2 3"]
