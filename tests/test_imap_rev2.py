"""IMAP4rev2 (RFC 9051) next to IMAP4rev1, over real sockets.

The server advertises both; a session is rev1 until ``ENABLE IMAP4rev2``.  One test
per rule that differs in a rev2 session (RFC 9051 Appendix E lists the changes), each
naming its section; ``test_rev1_and_rev2_sessions_on_one_mailbox`` runs both kinds
side by side.  Rev1 behaviour is what every other test_imap_* file checks.
"""

from __future__ import annotations

import re

import pytest

from tests.support.imap import Accounts, Raw, deliver, message, ok, raw_session
from tests.support.server import Server


@pytest.fixture
def user(accounts: Accounts) -> str:
    return accounts.take()


def rev2_session(server: Server, user: str) -> Raw:
    r = raw_session(server, user)
    assert ok(r, b"ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2"]
    return r


def fill(server: Server, user: str, n: int = 3) -> None:
    """``n`` messages delivered over SMTP (they are \\Recent until a rev1 SELECT)."""
    for i in range(1, n + 1):
        deliver(server, user, message(i))


def starting(lines: list[bytes], prefix: bytes) -> list[bytes]:
    return [line for line in lines if line.startswith(prefix)]


def recent_lines(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if re.match(rb"\* \d+ RECENT", line)]


# -- capability and ENABLE ----------------------------------------------------------


def test_capability_lists_imap4rev1_and_imap4rev2(imap_server: Server, user: str) -> None:
    """RFC 9051 7.2.2 (CAPABILITY): a server of both versions lists both, before and
    after login; LITERAL+ (which covers rev2's LITERAL-, RFC 7888 4) stays listed."""
    r = Raw(imap_server.ports["imap"])
    assert b" IMAP4rev1 IMAP4rev2 " in r.greeting
    r.login(user)
    caps = starting(ok(r, b"CAPABILITY"), b"* CAPABILITY")[0].split()
    for cap in (b"IMAP4rev1", b"IMAP4rev2", b"ENABLE", b"LITERAL+", b"NAMESPACE", b"UNSELECT", b"UIDPLUS",
                b"ESEARCH", b"SEARCHRES", b"IDLE", b"SASL-IR", b"LIST-EXTENDED", b"LIST-STATUS", b"MOVE",
                b"BINARY", b"SPECIAL-USE", b"STATUS=SIZE"):
        assert cap in caps, cap


def test_enable_imap4rev2_is_enabled_once(imap_server: Server, user: str) -> None:
    """RFC 9051 6.3.1 (ENABLE) and 7.2.1 (ENABLED): the untagged ENABLED names what
    the command turned on; asked again, nothing new is enabled."""
    r = rev2_session(imap_server, user)
    assert ok(r, b"ENABLE IMAP4rev2") == [b"* ENABLED"]
    # UTF-8 names came with IMAP4rev2, but UTF8=ACCEPT is an extension of its own.
    assert ok(r, b"ENABLE UTF8=ACCEPT IMAP4rev2") == [b"* ENABLED UTF8=ACCEPT"]


# -- no \Recent ------------------------------------------------------------------------


def test_select_sends_no_recent_nor_unseen_and_lists_the_mailbox(imap_server: Server, user: str) -> None:
    """RFC 9051 6.3.2 (SELECT): the untagged responses are FLAGS, EXISTS, LIST and OK
    [PERMANENTFLAGS] [UIDNEXT] [UIDVALIDITY]; the RECENT response and the [UNSEEN n]
    code are gone from rev2 (Appendix E)."""
    fill(imap_server, user)
    r = rev2_session(imap_server, user)
    untagged, tagged = r.cmd(b"SELECT INBOX")
    assert b"OK [READ-WRITE]" in tagged
    assert b"* 3 EXISTS" in untagged
    assert b'* LIST () "." "INBOX"' in untagged
    assert starting(untagged, b"* FLAGS (")
    for code in (b"PERMANENTFLAGS", b"UIDNEXT", b"UIDVALIDITY"):
        assert any(b"[" + code in line for line in untagged), code
    assert recent_lines(untagged) == []
    assert not any(b"[UNSEEN" in line for line in untagged)
    # EXAMINE as well (6.3.3).
    untagged, tagged = r.cmd(b"EXAMINE INBOX")
    assert b"OK [READ-ONLY]" in tagged and recent_lines(untagged) == []


def test_new_mail_is_told_by_exists_alone(imap_server: Server, user: str) -> None:
    """RFC 9051 7.4.1 (EXISTS) and Appendix E: news of arrivals is ``* n EXISTS``,
    without the ``* n RECENT`` of rev1."""
    r = rev2_session(imap_server, user)
    ok(r, b"SELECT INBOX")
    fill(imap_server, user, 2)
    untagged = ok(r, b"NOOP")
    assert b"* 2 EXISTS" in untagged
    assert recent_lines(untagged) == []


def test_enable_while_selected_drops_recent(imap_server: Server, user: str) -> None:
    """RFC 9051 6.3.1 (ENABLE) and Appendix E: a client should ENABLE before SELECT,
    but one that enables IMAP4rev2 with a mailbox selected is not shown \\Recent from
    then on, nor told RECENT."""
    fill(imap_server, user, 1)
    r = raw_session(imap_server, user)
    assert b"* 1 RECENT" in ok(r, b"SELECT INBOX")
    assert ok(r, b"FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS (\\Recent))"]
    assert ok(r, b"ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2"]
    assert ok(r, b"FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS ())"]
    deliver(imap_server, user, message(2))
    told = ok(r, b"NOOP")
    assert b"* 2 EXISTS" in told and recent_lines(told) == []


def test_fetch_flags_never_show_recent(imap_server: Server, user: str) -> None:
    """RFC 9051 2.3.2 (flags) and Appendix E: \\Recent is not a rev2 system flag, so
    FETCH FLAGS and the FLAGS response never carry it."""
    fill(imap_server, user, 2)
    r = rev2_session(imap_server, user)
    untagged = ok(r, b"SELECT INBOX")
    assert b"\\Recent" not in starting(untagged, b"* FLAGS")[0]
    untagged = ok(r, b"FETCH 1:* (FLAGS)")
    assert untagged == [b"* 1 FETCH (FLAGS ())", b"* 2 FETCH (FLAGS ())"]


# -- SEARCH answered with ESEARCH --------------------------------------------------------


def test_search_is_answered_with_esearch(imap_server: Server, user: str) -> None:
    """RFC 9051 6.4.4 (SEARCH) and 7.3.4 (ESEARCH): a SEARCH without RETURN means
    RETURN (ALL); the answer is ``* ESEARCH (TAG "t") [UID] ALL set``, never
    ``* SEARCH``, and a search that finds nothing sends no ALL."""
    fill(imap_server, user, 4)
    r = rev2_session(imap_server, user)
    ok(r, b"SELECT INBOX")
    ok(r, b"STORE 2:3 +FLAGS.SILENT (\\Flagged)")
    assert ok(r, b"SEARCH FLAGGED") == [b'* ESEARCH (TAG "t%d") ALL 2:3' % r.n]
    assert ok(r, b"UID SEARCH FLAGGED") == [b'* ESEARCH (TAG "t%d") UID ALL 2:3' % r.n]
    assert ok(r, b"UID SEARCH DRAFT") == [b'* ESEARCH (TAG "t%d") UID' % r.n]
    assert ok(r, b"SEARCH RETURN (COUNT) ALL") == [b'* ESEARCH (TAG "t%d") COUNT 4' % r.n]
    # SEARCHRES (6.4.4.1) works the same: $ is the saved result.
    assert ok(r, b"UID SEARCH RETURN (SAVE) FLAGGED") == []
    assert ok(r, b"UID FETCH $ (UID)") == [b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)"]


# -- mailbox names and LIST ----------------------------------------------------------------


def test_mailbox_names_travel_as_utf8(imap_server: Server, user: str) -> None:
    """RFC 9051 5.1 (mailbox naming): rev2 names are UTF-8, not modified UTF-7."""
    r = rev2_session(imap_server, user)
    name = "Départ ✓".encode()
    ok(r, b'CREATE "' + name + b'"')
    assert ok(r, b'LIST "" "D' + "é".encode() + b'*"') == [b'* LIST (\\HasNoChildren) "." "' + name + b'"']
    # The same folder, as a rev1 session names it.
    r1 = raw_session(imap_server, user)
    assert ok(r1, b'LIST "" "D&AOk-*"') == [b'* LIST (\\HasNoChildren) "." "D&AOk-part &JxM-"']


def test_list_gives_child_attributes_and_nonexistent(imap_server: Server, user: str) -> None:
    """RFC 9051 6.3.9 (LIST) and 7.3.1: every listed name has \\HasChildren or
    \\HasNoChildren, a subscribed name that does not exist is \\NonExistent, and
    \\Subscribed is given with the SUBSCRIBED option."""
    r = rev2_session(imap_server, user)
    ok(r, b"CREATE Lists.Inner")
    ok(r, b"SUBSCRIBE Lists.Inner")
    ok(r, b"SUBSCRIBE Gone")
    untagged = ok(r, b'LIST (SUBSCRIBED) "" "*"')
    assert b'* LIST (\\NonExistent \\Subscribed \\HasNoChildren) "." "Gone"' in untagged
    assert b'* LIST (\\HasNoChildren \\Subscribed) "." "Lists.Inner"' in untagged
    untagged = ok(r, b'LIST "" "Lists*"')
    assert b'* LIST (\\Noselect \\HasChildren) "." "Lists"' in untagged
    assert b'* LIST (\\HasNoChildren) "." "Lists.Inner"' in untagged


def test_rename_reports_the_oldname(imap_server: Server, user: str) -> None:
    """RFC 9051 6.3.6 (RENAME) and 7.3.1 (the OLDNAME extended data item of LIST):
    the new name is listed with its old one."""
    r = rev2_session(imap_server, user)
    ok(r, b"CREATE Before")
    untagged = ok(r, 'RENAME Before "Après"'.encode())
    assert untagged == ['* LIST () "." "Après" ("OLDNAME" ("Before"))'.encode()]
    r1 = raw_session(imap_server, user)
    ok(r1, b"CREATE Plain")
    assert ok(r1, b"RENAME Plain Other") == []  # rev1: nothing untagged


def test_delete_of_a_parent_with_children_is_haschildren(imap_server: Server, user: str) -> None:
    """RFC 9051 6.3.5 (DELETE) and 7.1 (HASCHILDREN): a \\Noselect name with children
    cannot be deleted, and rev2 says why with [HASCHILDREN]."""
    r = rev2_session(imap_server, user)
    ok(r, b"CREATE Top.Leaf")
    _, tagged = r.cmd(b"DELETE Top")
    assert tagged.startswith(b"t%d NO [HASCHILDREN]" % r.n), tagged


# -- response codes, STATUS, literals, BINARY ---------------------------------------------


def test_select_while_selected_says_closed(imap_server: Server, user: str) -> None:
    """RFC 9051 6.3.2 and 7.1 (CLOSED): selecting another mailbox first closes the
    current one, told by ``* OK [CLOSED]`` before the new mailbox's responses."""
    r = rev2_session(imap_server, user)
    ok(r, b"SELECT INBOX")
    untagged = ok(r, b"EXAMINE INBOX")
    assert untagged[0].startswith(b"* OK [CLOSED]")
    r1 = raw_session(imap_server, user)
    ok(r1, b"SELECT INBOX")
    assert not any(b"[CLOSED]" in line for line in ok(r1, b"EXAMINE INBOX"))  # rev1 without QRESYNC


def test_fetch_of_messages_expunged_meanwhile_says_expungeissued(imap_server: Server, user: str) -> None:
    """RFC 9051 7.1 (EXPUNGEISSUED) and 7.5.1: another session expunged a message this
    one still shows; FETCH may not report the expunge (sequence numbers would shift),
    so it answers what is left and says [EXPUNGEISSUED]; NOOP then tells the EXPUNGE."""
    fill(imap_server, user, 2)
    r = rev2_session(imap_server, user)
    ok(r, b"SELECT INBOX")
    other = raw_session(imap_server, user)
    ok(other, b"SELECT INBOX")
    ok(other, b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    ok(other, b"EXPUNGE")
    untagged, tagged = r.cmd(b"FETCH 1:* (UID)")
    assert untagged == [b"* 2 FETCH (UID 2)"]
    assert tagged.startswith(b"t%d OK [EXPUNGEISSUED]" % r.n), tagged
    assert b"* 1 EXPUNGE" in ok(r, b"NOOP")


def test_status_deleted_and_size(imap_server: Server, user: str) -> None:
    """RFC 9051 6.3.11 (STATUS): DELETED (messages with \\Deleted) and SIZE (the
    RFC822.SIZEs added up) are rev2 status items."""
    fill(imap_server, user, 2)
    r = rev2_session(imap_server, user)
    ok(r, b"SELECT INBOX")
    sizes = [int(m.group(1)) for line in ok(r, b"FETCH 1:* (RFC822.SIZE)")
             for m in [re.search(rb"RFC822.SIZE (\d+)", line)] if m]
    ok(r, b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    untagged = ok(r, b"STATUS INBOX (MESSAGES DELETED SIZE)")
    assert untagged == [b'* STATUS "INBOX" (MESSAGES 2 DELETED 1 SIZE %d)' % sum(sizes)]


def test_non_synchronizing_literal_of_4096_octets(imap_server: Server, user: str) -> None:
    """RFC 9051 4.3 (string) and RFC 7888 (LITERAL-): rev2 clients may send
    ``{n+}`` literals up to 4096 octets without waiting for a continuation."""
    r = rev2_session(imap_server, user)
    body = b"Subject: big\r\n\r\n" + b"x" * (4096 - 16)
    _, tagged = r.cmd(b"APPEND INBOX {4096+}\r\n" + body)
    assert b"OK [APPENDUID" in tagged, tagged


def test_binary_fetch(imap_server: Server, user: str) -> None:
    """RFC 9051 6.4.5 (FETCH BINARY[]): the part decoded from its transfer encoding."""
    mime = (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
            b"aGVsbG8gcmV2Mg==\r\n")
    r = rev2_session(imap_server, user)
    _, tagged = r.cmd(b"APPEND INBOX {%d+}\r\n" % len(mime) + mime)
    assert b" OK " in tagged
    ok(r, b"SELECT INBOX")
    untagged = ok(r, b"FETCH 1 (BINARY.PEEK[1])")
    assert untagged == [b"* 1 FETCH (BINARY[1] {10}\r\nhello rev2)"]


def test_unselect_move_and_uidplus(imap_server: Server, user: str) -> None:
    """RFC 9051 6.4.2 (UNSELECT), 6.4.8 (MOVE, with [COPYUID] from 7.1) and 6.4.9
    (UID EXPUNGE), all part of rev2."""
    fill(imap_server, user, 2)
    r = rev2_session(imap_server, user)
    ok(r, b"CREATE Kept")
    ok(r, b"SELECT INBOX")
    untagged = ok(r, b"UID MOVE 1 Kept")
    assert untagged[0].startswith(b"* OK [COPYUID ") and b"* 1 EXPUNGE" in untagged
    ok(r, b"UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert ok(r, b"UID EXPUNGE 2") == [b"* 1 EXPUNGE"]
    ok(r, b"UNSELECT")
    assert b'NAMESPACE (("" "."))' in ok(r, b"NAMESPACE")[0]


# -- both versions on one mailbox ---------------------------------------------------------------


def test_rev1_and_rev2_sessions_on_one_mailbox(imap_server: Server, user: str) -> None:
    """RFC 9051 Appendix E and RFC 3501 2.3.2: a rev2 session selecting first takes no
    \\Recent, so the rev1 session that selects next still gets it; new mail is told
    to rev1 with RECENT and to rev2 without; SEARCH answers ``* SEARCH`` to rev1 and
    ``* ESEARCH`` to rev2."""
    fill(imap_server, user, 2)
    r2 = rev2_session(imap_server, user)
    assert recent_lines(ok(r2, b"SELECT INBOX")) == []
    r1 = raw_session(imap_server, user)
    untagged = ok(r1, b"SELECT INBOX")
    assert b"* 2 RECENT" in untagged and b"* OK [UNSEEN 1] First unseen" in untagged
    assert ok(r1, b"FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS (\\Recent))"]
    assert ok(r2, b"FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS ())"]

    deliver(imap_server, user, message(3))
    told1 = ok(r1, b"NOOP")
    assert b"* 3 EXISTS" in told1 and b"* 3 RECENT" in told1
    told2 = ok(r2, b"NOOP")
    assert b"* 3 EXISTS" in told2 and recent_lines(told2) == []

    ok(r1, b"STORE 3 +FLAGS.SILENT (\\Flagged)")
    assert ok(r1, b"SEARCH FLAGGED") == [b"* SEARCH 3"]
    untagged = ok(r2, b"SEARCH FLAGGED")
    assert b'* ESEARCH (TAG "t%d") ALL 3' % r2.n in untagged
    assert not starting(untagged, b"* SEARCH")
    # The flag change reached the rev2 session as news, without \Recent.
    assert b"* 3 FETCH (UID 3 FLAGS (\\Flagged))" in untagged
