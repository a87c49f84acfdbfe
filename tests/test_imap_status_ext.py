"""STATUS=SIZE (RFC 8438), LIST-STATUS (RFC 5819) and the LIST-EXTENDED (RFC 5258) it
builds on, end to end, over real sockets.

STATUS SIZE is the sum of the RFC822.SIZE of the mailbox's messages (what FETCH
reports for each).  ``LIST ... RETURN (STATUS (...))`` sends, after the ``* LIST``
line of every selectable mailbox, that mailbox's ``* STATUS`` line.  LIST-EXTENDED:
selection options (SUBSCRIBED, RECURSIVEMATCH, REMOTE, SPECIAL-USE), several patterns,
return options (SUBSCRIBED, CHILDREN, STATUS, SPECIAL-USE); anything else is BAD.
"""

from __future__ import annotations

import imaplib
import re

import imapclient
import pytest

from tests.support.imap import PASSWORD, Accounts, Raw, deliver
from tests.support.server import Server
from tests.support.waiting import wait_for

MSG_A = b"From: a@remote.test\r\nTo: u@example.test\r\nSubject: a\r\n\r\nshort\r\n"
MSG_B = b"From: b@remote.test\r\nTo: u@example.test\r\nSubject: b\r\n\r\n" + b"longer line of text\r\n" * 40


@pytest.fixture
def user(accounts: Accounts) -> str:
    return accounts.take()


def login(server: Server, user: str) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    m.login(user, PASSWORD)
    return m


def session(server: Server, user: str, *folders: str, subscribe: tuple[str, ...] = ()) -> Raw:
    """A raw session for ``user`` after creating ``folders`` and subscribing to ``subscribe``."""
    m = login(server, user)
    for name in folders:
        assert m.create(name)[0] == "OK"
    for name in subscribe:
        assert m.subscribe(name)[0] == "OK"
    m.logout()
    r = Raw(server.ports["imap"])
    r.login(user)
    return r


def ok(r: Raw, command: bytes) -> list[bytes]:
    untagged, tagged = r.cmd(command)
    assert re.match(rb"t\d+ OK", tagged), (command, tagged)
    return untagged


def test_both_are_advertised_after_login(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    caps = m.capability()[1][0].split()
    assert b"STATUS=SIZE" in caps and b"LIST-STATUS" in caps
    m.logout()


# -- STATUS=SIZE (RFC 8438) -------------------------------------------------------------


def test_status_size_is_the_sum_of_rfc822_sizes(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    assert m.append("INBOX", None, None, MSG_A)[0] == "OK"
    assert m.append("INBOX", "(\\Seen)", None, MSG_B)[0] == "OK"
    deliver(imap_server, user, b"Subject: over smtp\r\n\r\nline\r\nline two\r\n")
    wait_for(lambda: m.status("INBOX", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 3)"))
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("1:*", "(RFC822.SIZE)")
    sizes = [int(re.search(rb"RFC822.SIZE (\d+)", d).group(1)) for d in data]
    assert len(sizes) == 3 and sizes[0] == len(MSG_A) and sizes[1] == len(MSG_B)
    typ, data = m.status("INBOX", "(SIZE MESSAGES UNSEEN)")
    assert typ == "OK"
    assert data == [b'"INBOX" (SIZE %d MESSAGES 3 UNSEEN 2)' % sum(sizes)]
    m.logout()


def test_status_size_of_an_empty_mailbox_is_zero_and_follows_expunge(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    m.create("Empty")
    assert m.status("Empty", "(SIZE)")[1] == [b'"Empty" (SIZE 0)']
    m.append("Empty", "(\\Deleted)", None, MSG_B)
    m.append("Empty", None, None, MSG_A)
    assert m.status("Empty", "(SIZE)")[1] == [b'"Empty" (SIZE %d)' % (len(MSG_A) + len(MSG_B))]
    m.select("Empty")
    m.expunge()
    assert m.status("Empty", "(SIZE)")[1] == [b'"Empty" (SIZE %d)' % len(MSG_A)]
    m.logout()


def test_imapclient_folder_status_reads_size(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    m.append("INBOX", None, None, MSG_A)
    m.logout()
    c = imapclient.IMAPClient("127.0.0.1", port=imap_server.ports["imap"], ssl=False)
    c.login(user, PASSWORD)
    assert c.folder_status("INBOX", ["SIZE", "MESSAGES"]) == {b"SIZE": len(MSG_A), b"MESSAGES": 1}
    c.logout()


# -- LIST-STATUS (RFC 5819) -------------------------------------------------------------


def test_list_return_status_follows_each_selectable_mailbox(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    m.append("INBOX", None, None, MSG_A)
    m.append("INBOX", "(\\Seen)", None, MSG_B)
    m.create("Work")
    m.append("Work", None, None, MSG_A)
    m.create("Work.Old")
    m.logout()
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    untagged = ok(r, b'LIST "" * RETURN (STATUS (MESSAGES UNSEEN SIZE))')
    # Every LIST line of a selectable mailbox is followed by its STATUS line.
    pairs = {}
    for i, line in enumerate(untagged):
        m_ = re.match(rb'\* LIST \(([^)]*)\) "\." (.+)$', line)
        if m_ and b"\\Noselect" not in m_.group(1):
            nxt = untagged[i + 1]
            assert nxt.startswith(b"* STATUS " + m_.group(2) + b" ("), (line, nxt)
            pairs[m_.group(2)] = nxt
    assert pairs[b'"INBOX"'] == b'* STATUS "INBOX" (MESSAGES 2 UNSEEN 1 SIZE %d)' % (len(MSG_A) + len(MSG_B))
    assert pairs[b'"Work"'] == b'* STATUS "Work" (MESSAGES 1 UNSEEN 1 SIZE %d)' % len(MSG_A)
    assert pairs[b'"Work.Old"'] == b'* STATUS "Work.Old" (MESSAGES 0 UNSEEN 0 SIZE 0)'
    assert len([x for x in untagged if x.startswith(b"* STATUS")]) == len(pairs)


def test_list_status_with_a_pattern_only_covers_matches(imap_server: Server, user: str) -> None:
    r = session(imap_server, user, "Alpha", "Beta")
    untagged = ok(r, b'LIST "" Alpha RETURN (STATUS (UIDNEXT MESSAGES))')
    assert untagged == [b'* LIST (\\HasNoChildren) "." "Alpha"', b'* STATUS "Alpha" (UIDNEXT 1 MESSAGES 0)']


def test_noselect_parent_gets_no_status(imap_server: Server, user: str) -> None:
    r = session(imap_server, user, "Top.Child")
    untagged = ok(r, b'LIST "" Top* RETURN (STATUS (MESSAGES))')
    lists = [x for x in untagged if x.startswith(b"* LIST")]
    statuses = [x for x in untagged if x.startswith(b"* STATUS")]
    noselect = [x for x in lists if b"\\Noselect" in x]
    assert statuses == [b'* STATUS "Top.Child" (MESSAGES 0)']
    assert len(lists) - len(noselect) == 1


def test_list_status_bad_item_is_bad(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    _, tagged = r.cmd(b'LIST "" * RETURN (STATUS (NOSUCH))')
    assert tagged.startswith(b"t2 BAD"), tagged
    _, tagged = r.cmd(b'LIST "" * RETURN (STATUS ())')
    assert tagged.startswith(b"t3 BAD"), tagged
    ok(r, b"NOOP")


def test_plain_list_has_no_status(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    untagged = ok(r, b'LIST "" *')
    assert untagged and not [x for x in untagged if x.startswith(b"* STATUS")]


# -- LIST-EXTENDED (RFC 5258), which LIST-STATUS builds on ---------------------------------


def lists(untagged: list[bytes]) -> list[bytes]:
    return [x for x in untagged if x.startswith(b"* LIST")]


def test_list_extended_is_advertised(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    assert b"LIST-EXTENDED" in m.capability()[1][0].split()
    m.logout()


def test_several_patterns_in_one_list(imap_server: Server, user: str) -> None:
    r = session(imap_server, user, "Work", "Play", "Play.Games")
    untagged = ok(r, b'LIST "" (INBOX "Play*")')
    names = sorted(x.rsplit(b" ", 1)[1] for x in lists(untagged))
    assert names == [b'"INBOX"', b'"Play"', b'"Play.Games"']


def test_subscribed_selection_shows_missing_subscriptions_as_nonexistent(imap_server: Server, user: str) -> None:
    # RFC 3501 6.3.6: a subscription may name a mailbox that does not exist ("Gone").
    r = session(imap_server, user, "Kept", "Plain", subscribe=("Kept", "Gone"))
    untagged = lists(ok(r, b'LIST (SUBSCRIBED) "" *'))
    assert b'* LIST (\\HasNoChildren \\Subscribed) "." "Kept"' in untagged
    assert b'* LIST (\\NonExistent \\Subscribed) "." "Gone"' in untagged
    assert not [x for x in untagged if x.endswith(b'"Plain"')]
    # RETURN (SUBSCRIBED) marks, without filtering.
    untagged = lists(ok(r, b'LIST "" * RETURN (SUBSCRIBED)'))
    assert b'* LIST (\\HasNoChildren) "." "Plain"' in untagged
    assert b'* LIST (\\HasNoChildren \\Subscribed) "." "Kept"' in untagged


def test_recursivematch_gives_childinfo_to_parents_of_subscribed_children(imap_server: Server, user: str) -> None:
    r = session(imap_server, user, "Fruit.Apple", "Veg.Leek", "Tofu", subscribe=("Fruit.Apple", "Tofu"))
    untagged = lists(ok(r, b'LIST (SUBSCRIBED RECURSIVEMATCH) "" %'))
    fruit = [x for x in untagged if b'"Fruit"' in x]
    assert len(fruit) == 1 and fruit[0].endswith(b'"Fruit" ("CHILDINFO" ("SUBSCRIBED"))'), untagged
    assert b"\\Subscribed" not in fruit[0]
    assert [x for x in untagged if x.endswith(b'"Tofu"')] == [b'* LIST (\\HasNoChildren \\Subscribed) "." "Tofu"']
    assert not [x for x in untagged if b'"Veg"' in x]
    # Without RECURSIVEMATCH the parent is simply not listed.
    assert not [x for x in lists(ok(r, b'LIST (SUBSCRIBED) "" %')) if b'"Fruit"' in x]


@pytest.mark.parametrize("command", [
    b'LIST (BOGUS) "" *',                       # unknown selection option
    b'LIST (RECURSIVEMATCH) "" *',              # RECURSIVEMATCH alone
    b'LIST (REMOTE RECURSIVEMATCH) "" *',       # ... or only with REMOTE
    b'LIST "" * RETURN (BOGUS)',                # unknown return option
    b'LSUB (SUBSCRIBED) "" *',                  # LSUB has no extended syntax
    b'LIST "" ()',                              # empty pattern list
])
def test_list_extended_refusals_are_bad(imap_server: Server, user: str, command: bytes) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    _, tagged = r.cmd(command)
    assert tagged.startswith(b"t2 BAD"), tagged
    ok(r, b"NOOP")


def test_remote_and_children_options_are_accepted(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    untagged = lists(ok(r, b'LIST (REMOTE) "" INBOX RETURN (CHILDREN SPECIAL-USE)'))
    assert untagged == [b'* LIST (\\HasNoChildren) "." "INBOX"']
