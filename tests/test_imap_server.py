"""IMAP4rev1 end to end: the real server, imaplib and imapclient (RFC 3501 + extensions)."""

from __future__ import annotations

import imaplib
import os
import re
import time

import imapclient
import pytest

from tests.support.server import Server
from tests.support.imap import PASSWORD, Accounts, Raw, deliver, login
from tests.support.waiting import wait_for

SIMPLE = b"From: Ann <ann@remote.test>\r\nTo: u@example.test\r\nSubject: hello\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nline one\r\nline two\r\n"
MULTI = (
    b"From: Bob <bob@remote.test>\r\nTo: u@example.test\r\nSubject: with attachment\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
    b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nthe text part\r\n"
    b"--XX\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n"
    b"--XX--\r\n"
)


@pytest.fixture
def user(accounts: Accounts) -> str:
    return accounts.take()


def append(m: imaplib.IMAP4, msg: bytes, folder: str = "INBOX", flags: str = "") -> int:
    typ, data = m.append(folder, flags or None, None, msg)
    assert typ == "OK", data
    return int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))


def client(server: Server, user: str) -> imapclient.IMAPClient:
    c = imapclient.IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False)
    c.login(user, PASSWORD)
    return c


# -- login and capabilities ---------------------------------------------------------------


def test_capabilities_after_login_list_the_extensions(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    caps = set(m.capabilities) | set(m.capability()[1][0].split())
    for cap in (b"IMAP4rev1", b"IDLE", b"UIDPLUS", b"MOVE", b"NAMESPACE", b"ID", b"ENABLE", b"UNSELECT",
                b"LITERAL+", b"CHILDREN", b"SPECIAL-USE"):
        assert cap in caps or cap.decode() in caps
    assert any(c.startswith(b"APPENDLIMIT=") for c in m.capability()[1][0].split())
    m.logout()


def test_login_with_a_wrong_password_is_refused(imap_server: Server, user: str) -> None:
    m = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login(user, "wrong")
    m.logout()


def test_authenticate_plain(imap_server: Server, user: str) -> None:
    m = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    typ, _ = m.authenticate("PLAIN", lambda _: f"\0{user}\0{PASSWORD}".encode())
    assert typ == "OK"
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_authenticate_login_mechanism(imap_server: Server, user: str) -> None:
    answers = iter([user.encode(), PASSWORD.encode()])
    m = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    assert m.authenticate("LOGIN", lambda _: next(answers))[0] == "OK"
    m.logout()


def test_authenticate_plain_with_initial_response(imap_server: Server, user: str) -> None:
    import base64

    r = Raw(imap_server.ports["imap"])
    ir = base64.b64encode(f"\0{user}\0{PASSWORD}".encode())
    _, tagged = r.cmd(b"AUTHENTICATE PLAIN " + ir)
    assert b"OK" in tagged
    r.close()


def test_imapclient_logs_in_and_lists(imap_server: Server, user: str) -> None:
    c = client(imap_server, user)
    names = [f[2] for f in c.list_folders()]
    assert names[0] == "INBOX" and {"Sent", "Drafts", "Trash", "Junk", "Archive"} <= set(names)
    c.logout()


# -- SELECT -------------------------------------------------------------------------------


def test_select_reports_flags_uidvalidity_uidnext_unseen_exists_recent(imap_server: Server, user: str) -> None:
    deliver(imap_server, user, SIMPLE)
    deliver(imap_server, user, SIMPLE)
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    untagged, tagged = r.cmd(b"SELECT INBOX")
    text = b"\n".join(untagged)
    assert b"[READ-WRITE]" in tagged
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)" in text
    assert b"[PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]" in text
    assert b"* 2 EXISTS" in text and b"* 2 RECENT" in text
    assert b"[UNSEEN 1]" in text
    assert re.search(rb"\[UIDVALIDITY \d+\]", text) and b"[UIDNEXT 3]" in text
    r.close()


def test_recent_goes_to_one_session_only(imap_server: Server, user: str) -> None:
    deliver(imap_server, user, SIMPLE)
    a, b = Raw(imap_server.ports["imap"]), Raw(imap_server.ports["imap"])
    a.login(user)
    b.login(user)
    assert b"* 1 RECENT" in b"\n".join(a.cmd(b"SELECT INBOX")[0])
    assert b"* 0 RECENT" in b"\n".join(b.cmd(b"SELECT INBOX")[0])
    a.close()
    b.close()


def test_index_only_fetch_of_a_run_answers_as_of_scattered_numbers(imap_server: Server, user: str) -> None:
    """UID FETCH 1:* (FLAGS) on a view in sync takes the records in a row (a fast
    path); the lines must be those the general path gives: sequence numbers, UIDs,
    flags, \\Recent for this session's recent messages, keywords."""
    for _ in range(4):
        deliver(imap_server, user, SIMPLE)
    a = Raw(imap_server.ports["imap"])
    a.login(user)
    a.cmd(b"SELECT INBOX")  # claims \Recent for all four
    a.cmd(b"STORE 2 +FLAGS ($Work \\Seen)")
    deliver(imap_server, user, SIMPLE)
    a.cmd(b"NOOP")  # the fifth arrives: recent here too

    def lines(command: bytes) -> set[bytes]:
        untagged, tagged = a.cmd(command)
        assert tagged.startswith(b"OK") or b" OK " in tagged, tagged
        return {line for line in untagged if b"FETCH" in line}

    for items in (b"(FLAGS)", b"(UID FLAGS)", b"(FLAGS UID RFC822.SIZE)"):
        run = lines(b"FETCH 1:5 " + items)
        scattered = lines(b"FETCH 1,3,5 " + items) | lines(b"FETCH 2,4 " + items)
        assert run == scattered and len(run) == 5
        assert lines(b"UID FETCH 1:* " + items) == lines(b"UID FETCH 1,3,5 " + items) | lines(b"UID FETCH 2,4 " + items)
    flags_of_2 = next(line for line in lines(b"FETCH 1:5 (FLAGS)") if line.startswith(b"* 2 "))
    assert b"$Work" in flags_of_2 and b"\\Seen" in flags_of_2 and b"\\Recent" in flags_of_2
    a.close()


def test_examine_is_read_only(imap_server: Server, user: str) -> None:
    deliver(imap_server, user, SIMPLE)
    m = login(imap_server, user)
    typ, _ = m.select("INBOX", readonly=True)
    assert typ == "OK"
    typ, data = m.store("1", "+FLAGS", "(\\Seen)")
    assert typ == "NO" and b"READ-ONLY" in data[0]
    # BODY[] in EXAMINE does not set \Seen
    m.fetch("1", "(BODY[])")
    assert b"\\Seen" not in m.fetch("1", "(FLAGS)")[1][0]
    m.logout()


def test_select_of_a_missing_folder_is_no_and_leaves_auth_state(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    assert b"NO [NONEXISTENT]" in r.cmd(b"SELECT Nope")[1]
    assert b"BAD" in r.cmd(b"FETCH 1 FLAGS")[1]
    r.close()


# -- FETCH --------------------------------------------------------------------------------


def test_body_is_byte_exact_and_rfc822_size_matches(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    uid = append(m, MULTI)
    m.select("INBOX")
    typ, data = m.uid("FETCH", str(uid), "(RFC822.SIZE BODY.PEEK[])")
    assert data[0][1] == MULTI
    assert int(re.search(rb"RFC822.SIZE (\d+)", data[0][0]).group(1)) == len(MULTI)
    # on disk with LF line ends
    (path,) = [p for p in (imap_server.maildir(user) / "cur").iterdir()]
    assert path.read_bytes() == MULTI.replace(b"\r\n", b"\n")
    m.logout()


def test_partial_fetch_returns_the_slice_and_echoes_the_origin(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    append(m, SIMPLE)
    m.select("INBOX")
    typ, data = m.fetch("1", "(BODY.PEEK[]<6.10>)")
    assert data[0][0].endswith(b"BODY[]<6> {10}")
    assert data[0][1] == SIMPLE[6:16]
    typ, data = m.fetch("1", "(BODY.PEEK[]<100000.10>)")
    assert b'BODY[]<100000> ""' in data[0]
    m.logout()


def test_fetch_section_forms(imap_server: Server, user: str) -> None:
    c = client(imap_server, user)
    c.append("INBOX", MULTI)
    c.select_folder("INBOX")
    r = c.fetch("1", ["BODY.PEEK[HEADER.FIELDS (Subject)]", "BODY.PEEK[1]", "BODY.PEEK[2.MIME]", "BODY.PEEK[TEXT]",
                      "BODY.PEEK[HEADER.FIELDS.NOT (From To Subject MIME-Version Content-Type)]", "BODY.PEEK[HEADER]"])[1]
    assert r[b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: with attachment\r\n\r\n"
    assert r[b"BODY[1]"] == b"the text part"
    assert r[b"BODY[2.MIME]"].startswith(b"Content-Type: application/octet-stream")
    assert r[b"BODY[TEXT]"].startswith(b"preamble\r\n--XX")
    assert r[b"BODY[HEADER.FIELDS.NOT (FROM TO SUBJECT MIME-VERSION CONTENT-TYPE)]"] == b"\r\n"
    assert r[b"BODY[HEADER]"].endswith(b"boundary=\"XX\"\r\n\r\n")
    c.logout()


def test_fetch_envelope_bodystructure_internaldate_flags_uid(imap_server: Server, user: str) -> None:
    c = client(imap_server, user)
    c.append("INBOX", MULTI, flags=["\\Flagged"], msg_time=None)
    c.select_folder("INBOX")
    r = c.fetch("1", ["ENVELOPE", "BODYSTRUCTURE", "BODY", "INTERNALDATE", "FLAGS", "UID", "RFC822.SIZE"])[1]
    assert r[b"ENVELOPE"].subject == b"with attachment"
    assert r[b"ENVELOPE"].from_[0].mailbox == b"bob"
    bs = r[b"BODYSTRUCTURE"]
    assert bs.is_multipart and bs[1] == b"mixed"
    assert b"\\Flagged" in r[b"FLAGS"]
    assert r[b"RFC822.SIZE"] == len(MULTI)
    assert abs(r[b"INTERNALDATE"].timestamp() - time.time()) < 120
    c.logout()


def test_fetch_macros_all_fast_full(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    append(m, SIMPLE)
    m.select("INBOX")
    for macro, item in (("ALL", b"ENVELOPE"), ("FAST", b"RFC822.SIZE"), ("FULL", b"BODY (")):
        typ, data = m.fetch("1", macro)
        assert typ == "OK" and item in data[0]
    m.logout()


def test_body_fetch_sets_seen_but_peek_does_not(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    append(m, SIMPLE)
    append(m, SIMPLE)
    m.select("INBOX")
    m.fetch("1", "(BODY.PEEK[])")
    assert b"\\Seen" not in m.fetch("1", "(FLAGS)")[1][0]
    typ, data = m.fetch("2", "(BODY[TEXT])")
    assert b"\\Seen" in b"".join(x if isinstance(x, bytes) else x[0] for x in data)
    assert b"\\Seen" in m.fetch("2", "(FLAGS)")[1][0]
    # and the flag is in the file name for other Maildir tools
    assert any(p.name.endswith(":2,S") for p in (imap_server.maildir(user) / "cur").iterdir())
    m.logout()


def test_rfc822_items(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    append(m, SIMPLE)
    m.select("INBOX")
    typ, data = m.fetch("1", "(RFC822.HEADER)")
    assert data[0][1].endswith(b"\r\n\r\n") and b"Subject: hello" in data[0][1]
    typ, data = m.fetch("1", "(RFC822.TEXT)")
    assert data[0][1] == b"line one\r\nline two\r\n"
    typ, data = m.fetch("1", "(RFC822)")
    assert data[0][1] == SIMPLE
    m.logout()


def test_malformed_mime_still_gets_a_bodystructure(imap_server: Server, user: str) -> None:
    bad = b"Content-Type: multipart/mixed; boundary=\r\nSubject: broken\r\n\r\nno boundary here\r\n--\r\n"
    c = client(imap_server, user)
    c.append("INBOX", bad)
    c.select_folder("INBOX")
    r = c.fetch("1", ["BODYSTRUCTURE", "BODY.PEEK[1]", "BODY.PEEK[]"])[1]
    assert r[b"BODY[]"] == bad
    assert r[b"BODYSTRUCTURE"] is not None
    c.logout()


# -- STORE --------------------------------------------------------------------------------


def test_store_add_remove_replace_and_silent(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    append(m, SIMPLE)
    m.select("INBOX")
    typ, data = m.store("1", "+FLAGS", "(\\Flagged $Work)")
    assert b"\\Flagged" in data[0] and b"$Work" in data[0]
    typ, data = m.store("1", "-FLAGS", "(\\Flagged)")
    assert b"\\Flagged" not in data[0]
    typ, data = m.store("1", "FLAGS", "(\\Answered)")
    assert b"(\\Answered)" in data[0] or b"\\Answered" in data[0] and b"$Work" not in data[0]
    typ, data = m.store("1", "+FLAGS.SILENT", "(\\Draft)")
    assert typ == "OK" and data == [None]
    assert b"\\Draft" in m.fetch("1", "(FLAGS)")[1][0]
    m.logout()


def test_keywords_persist_across_sessions(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    append(m, SIMPLE)
    m.select("INBOX")
    m.store("1", "+FLAGS", "($Label1 Important)")
    m.logout()
    m = login(imap_server, user)
    typ, _ = m.select("INBOX")
    flags = m.untagged_responses.get("FLAGS", [b""])[0]
    assert b"$Label1" in flags and b"Important" in flags
    assert b"$Label1" in m.fetch("1", "(FLAGS)")[1][0]
    m.logout()


def test_uid_store_and_uid_fetch(imap_server: Server, user: str) -> None:
    c = client(imap_server, user)
    for _ in range(3):
        c.append("INBOX", SIMPLE)
    c.select_folder("INBOX")
    c.add_flags([2], ["\\Seen"])  # imapclient uses UID commands
    r = c.fetch([1, 2, 3], ["FLAGS"])
    assert b"\\Seen" in r[2][b"FLAGS"] and b"\\Seen" not in r[1][b"FLAGS"]
    assert c.search(["UID", "2:*"]) == [2, 3]
    c.logout()


# -- SEARCH -------------------------------------------------------------------------------


def test_search_on_flags_headers_body_and_uid(imap_server: Server, user: str) -> None:
    c = client(imap_server, user)
    c.append("INBOX", SIMPLE)
    c.append("INBOX", MULTI, flags=["\\Seen"])
    c.append("INBOX", b"Subject: Gr\xc3\xbc\xc3\x9fe\r\nFrom: x@y.test\r\n\r\nk\xc3\xa4se\r\n")
    c.select_folder("INBOX")
    assert c.search(["UNSEEN"]) == [1, 3]
    assert c.search(["FROM", "bob"]) == [2]
    assert c.search(["SUBJECT", "hello"]) == [1]
    assert c.search(["BODY", "text part"]) == [2]
    assert c.search(["OR", "SEEN", "SUBJECT", "hello"]) == [1, 2]
    assert c.search(["NOT", "SEEN", "LARGER", "100"]) == [1]
    assert c.search(["UID", "2:*"]) == [2, 3]
    assert c.search(["SUBJECT", "Grüße"], charset="UTF-8") == [3]
    assert c.search(["TEXT", "käse"], charset="UTF-8") == [3]
    c.logout()


def test_search_with_a_literal_argument(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    append(m, SIMPLE)
    m.select("INBOX")
    m.literal = "hello".encode()
    typ, data = m.search("UTF-8", "SUBJECT")
    assert typ == "OK" and data == [b"1"]
    m.logout()


def test_search_with_unknown_charset_is_badcharset(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    r.cmd(b"SELECT INBOX")
    assert b"NO [BADCHARSET" in r.cmd(b"SEARCH CHARSET KOI8-R ALL")[1]
    r.close()


# -- COPY / MOVE / EXPUNGE / APPEND ---------------------------------------------------------


def test_copy_answers_copyuid_and_keeps_flags(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    append(m, SIMPLE, flags="(\\Flagged)")
    m.select("INBOX")
    typ, data = m.copy("1", "Archive")
    assert re.match(rb"\[COPYUID \d+ 1 1\]", data[0])
    m.select("Archive")
    assert b"\\Flagged" in m.fetch("1", "(FLAGS)")[1][0]
    m.logout()


def test_copy_to_a_missing_folder_says_trycreate(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    append(m, SIMPLE)
    m.select("INBOX")
    typ, data = m.copy("1", "Nowhere")
    assert typ == "NO" and b"TRYCREATE" in data[0]
    m.logout()


def test_move_expunges_the_source_and_reports_copyuid(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    for _ in range(3):
        r.cmd(b"APPEND INBOX {%d+}\r\n" % len(SIMPLE) + SIMPLE)
    r.cmd(b"SELECT INBOX")
    untagged, tagged = r.cmd(b"MOVE 2 Trash")
    assert b"OK" in tagged
    assert re.match(rb"\* OK \[COPYUID \d+ 2 1\]", untagged[0])
    assert untagged[1] == b"* 2 EXPUNGE"
    untagged, _ = r.cmd(b"UID MOVE 3 Trash")
    assert untagged[-1] == b"* 2 EXPUNGE"
    untagged, _ = r.cmd(b"UID FETCH 1:* (UID)")
    assert untagged == [b"* 1 FETCH (UID 1)"]
    r.close()


def test_expunge_and_uid_expunge(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    for _ in range(4):
        r.cmd(b"APPEND INBOX (\\Deleted) {%d+}\r\n" % len(SIMPLE) + SIMPLE)
    r.cmd(b"SELECT INBOX")
    untagged, _ = r.cmd(b"UID EXPUNGE 2:3")
    assert untagged == [b"* 3 EXPUNGE", b"* 2 EXPUNGE"]
    untagged, _ = r.cmd(b"EXPUNGE")
    assert untagged == [b"* 2 EXPUNGE", b"* 1 EXPUNGE"]
    assert os.listdir(imap_server.maildir(r_user := user) / "cur") == []
    del r_user
    r.close()


def test_close_expunges_deleted_and_unselect_does_not(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    append(m, SIMPLE, flags="(\\Deleted)")
    append(m, SIMPLE)
    m.select("INBOX")
    m.unselect()
    m.select("INBOX")
    assert m.select("INBOX")[1] == [b"2"]
    m.close()
    assert m.select("INBOX")[1] == [b"1"]
    m.logout()


def test_append_with_flags_and_date(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    date = imaplib.Time2Internaldate(time.mktime((2020, 5, 17, 12, 30, 0, 0, 0, -1)))
    typ, data = m.append("Drafts", "(\\Draft \\Seen)", date, SIMPLE)
    assert typ == "OK" and re.match(rb"\[APPENDUID \d+ 1\]", data[0])
    m.select("Drafts")
    typ, data = m.fetch("1", "(FLAGS INTERNALDATE)")
    assert b"\\Draft" in data[0] and b"\\Seen" in data[0] and b"17-May-2020 12:30:00" in data[0]
    m.logout()


def test_append_to_a_missing_folder_says_trycreate(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    r.send(b"a1 APPEND Nope {5}\r\n")
    assert r.line().startswith(b"+")
    r.send(b"hello\r\n")
    _, tagged = r.response(b"a1")
    assert tagged.startswith(b"a1 NO [TRYCREATE]")
    r.close()


def test_append_with_literal_plus_and_without_flags(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    _, tagged = r.cmd(b"APPEND INBOX {%d+}\r\n" % len(SIMPLE) + SIMPLE)
    assert b"OK [APPENDUID" in tagged
    r.close()


# -- folders --------------------------------------------------------------------------------


def test_create_rename_delete_across_a_hierarchy(imap_server: Server, user: str) -> None:
    c = client(imap_server, user)
    c.create_folder("Projects.2024.Q1")
    c.create_folder("Projects.2024")
    names = {f[2] for f in c.list_folders()}
    assert {"Projects", "Projects.2024", "Projects.2024.Q1"} <= names
    flags = {f[2]: f[0] for f in c.list_folders()}
    assert b"\\Noselect" in flags["Projects"] and b"\\HasChildren" in flags["Projects"]
    assert b"\\HasNoChildren" in flags["Projects.2024.Q1"]
    c.rename_folder("Projects.2024", "Old")
    names = {f[2] for f in c.list_folders()}
    assert {"Old", "Old.Q1"} <= names and "Projects.2024" not in names
    c.delete_folder("Old")
    names = {f[2] for f in c.list_folders()}
    assert "Old.Q1" in names  # children stay (RFC 3501 6.3.4)
    assert b"\\Noselect" in {f[2]: f[0] for f in c.list_folders()}["Old"]
    c.logout()


def test_create_an_existing_folder_is_no_alreadyexists(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    typ, data = m.create("Sent")
    assert typ == "NO" and b"ALREADYEXISTS" in data[0]
    m.logout()


def test_delete_inbox_is_refused(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    assert m.delete("inbox")[0] == "NO"
    m.logout()


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "a..b", "x\\y", "Sent.", "&Jjo-/x"])
def test_unsafe_folder_names_are_refused(imap_server: Server, user: str, name: str) -> None:
    m = login(imap_server, user)
    typ, _ = m.create('"' + name.replace("\\", "\\\\") + '"')
    if name == "Sent.":
        assert typ == "NO"  # exists already (trailing delimiter only declares a parent)
    else:
        assert typ == "NO"
    assert not any("evil" in p for p in os.listdir(imap_server.maildir(user).parent))
    m.logout()


def test_international_folder_names_round_trip_in_modified_utf7(imap_server: Server, user: str) -> None:
    c = client(imap_server, user)
    c.create_folder("Entwürfe")
    assert "Entwürfe" in [f[2] for f in c.list_folders()]
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    untagged, _ = r.cmd(b'LIST "" "Entw*"')
    assert untagged == [b'* LIST (\\HasNoChildren) "." "Entw&APw-rfe"']
    assert b"OK" in r.cmd(b'SELECT "Entw&APw-rfe"')[1]
    assert (imap_server.maildir(user) / ".Entw&APw-rfe").is_dir()
    r.close()
    c.logout()


def test_inbox_is_case_insensitive(imap_server: Server, user: str) -> None:
    m = login(imap_server, user)
    assert m.select("iNbOx")[0] == "OK"
    m.logout()


def test_list_wildcards_percent_and_star(imap_server: Server, user: str) -> None:
    c = client(imap_server, user)
    c.create_folder("A.B.C")
    assert {f[2] for f in c.list_folders(pattern="%")} >= {"INBOX", "A", "Sent"}
    assert "A.B" not in {f[2] for f in c.list_folders(pattern="%")}
    assert {f[2] for f in c.list_folders(pattern="A.%")} == {"A.B"}
    assert {f[2] for f in c.list_folders(pattern="A*")} == {"A", "A.B", "A.B.C", "Archive"}
    assert {f[2] for f in c.list_folders("A.", "*")} == {"A.B", "A.B.C"}
    c.logout()


def test_list_empty_pattern_gives_the_delimiter(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    assert r.cmd(b'LIST "" ""')[0] == [b'* LIST (\\Noselect) "." ""']
    r.close()


def test_special_use_attributes(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    untagged, _ = r.cmd(b'LIST (SPECIAL-USE) "" "*"')
    assert sorted(untagged) == sorted([
        b'* LIST (\\HasNoChildren \\Archive) "." "Archive"', b'* LIST (\\HasNoChildren \\Drafts) "." "Drafts"',
        b'* LIST (\\HasNoChildren \\Junk) "." "Junk"', b'* LIST (\\HasNoChildren \\Sent) "." "Sent"',
        b'* LIST (\\HasNoChildren \\Trash) "." "Trash"'])
    r.close()


def test_subscribe_unsubscribe_lsub(imap_server: Server, user: str) -> None:
    c = client(imap_server, user)
    c.create_folder("News.Tech")
    c.subscribe_folder("News.Tech")
    c.subscribe_folder("Sent")
    assert {f[2] for f in c.list_sub_folders()} == {"News.Tech", "Sent"}
    assert {f[2]: f[0] for f in c.list_sub_folders(pattern="%")}["News"] == (b"\\Noselect",)
    c.unsubscribe_folder("Sent")
    assert {f[2] for f in c.list_sub_folders()} == {"News.Tech"}
    c.logout()


def test_status(imap_server: Server, user: str) -> None:
    c = client(imap_server, user)
    c.append("Archive", SIMPLE, flags=["\\Seen"])
    c.append("Archive", SIMPLE)
    st = c.folder_status("Archive", ["MESSAGES", "UNSEEN", "UIDNEXT", "UIDVALIDITY", "RECENT"])
    assert st[b"MESSAGES"] == 2 and st[b"UNSEEN"] == 1 and st[b"UIDNEXT"] == 3 and st[b"UIDVALIDITY"] > 0
    c.logout()


def test_namespace_id_enable_check_noop(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    assert r.cmd(b"NAMESPACE")[0] == [b'* NAMESPACE (("" ".")) NIL NIL']
    assert r.cmd(b'ID ("name" "pytest")')[0][0].startswith(b"* ID (")
    assert r.cmd(b"ID NIL")[1].endswith(b"ID completed")
    assert r.cmd(b"ENABLE CONDSTORE")[0] == [b"* ENABLED CONDSTORE"]
    r.cmd(b"SELECT INBOX")
    assert b"OK" in r.cmd(b"CHECK")[1]
    assert b"OK" in r.cmd(b"NOOP")[1]
    r.close()


def test_logout_says_bye(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    untagged, tagged = r.cmd(b"LOGOUT")
    assert untagged[0].startswith(b"* BYE") and b"OK" in tagged
    assert r.closed_by_server()


def test_big_append_streams_through_a_spool_file_and_round_trips(imap_server: Server, user: str) -> None:
    big = b"Subject: big\r\n\r\n" + b"".join(b"line %07d of a big message\r\n" % i for i in range(80000))
    assert len(big) > 2 * 1024 * 1024
    m = login(imap_server, user)
    uid = append(m, big)
    m.select("INBOX")
    typ, data = m.uid("FETCH", str(uid), "(RFC822.SIZE BODY.PEEK[])")
    assert data[0][1] == big
    assert os.listdir(imap_server.root / "data" / "imap-spool") == []
    m.logout()


def test_fetch_of_many_big_messages_to_a_slow_reader(imap_server: Server, user: str) -> None:
    body = b"".join(b"%06d some text to make the message big\r\n" % i for i in range(5000))
    msgs = [b"Subject: m%d\r\n\r\n" % i + body for i in range(30)]
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    for m in msgs:
        r.cmd(b"APPEND INBOX {%d+}\r\n" % len(m) + m)
    r.cmd(b"SELECT INBOX")
    r.send(b"f1 FETCH 1:* (BODY.PEEK[])\r\n")
    time.sleep(0.5)  # let the server's output back up against an unread socket
    untagged, tagged = r.response(b"f1")
    assert tagged == b"f1 OK FETCH completed"
    assert [u.partition(b"\r\n")[2][:-1] for u in untagged] == msgs
    r.close()


def test_client_vanishing_mid_big_append_leaves_no_spool_file(imap_server: Server, user: str) -> None:
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    r.send(b"a1 APPEND INBOX {3000000}\r\n")
    assert r.line().startswith(b"+")
    r.send(b"Subject: big\r\n\r\n" + b"z" * 1_500_000)
    spool = imap_server.root / "data" / "imap-spool"
    assert wait_for(lambda: len(os.listdir(spool)) == 1)  # it is being written to a file
    r.close()
    assert wait_for(lambda: os.listdir(spool) == [])
    for sub in ("new", "cur", "tmp"):
        assert os.listdir(imap_server.maildir(user) / sub) == []


def test_header_search_finds_encoded_words_and_folded_lines(imap_server: Server, user: str) -> None:
    c = client(imap_server, user)
    c.append("INBOX", b"Subject: =?utf-8?b?c2VjcmV0?= plan\r\nFrom: a@b.test\r\n\r\nx\r\n")
    c.append("INBOX", b"Subject: one\r\n two\r\nFrom: Carol\r\n <carol@c.test>\r\n\r\nx\r\n")
    c.select_folder("INBOX")
    assert c.search(["SUBJECT", "secret"]) == [1]
    assert c.search(["SUBJECT", "SECRET PLAN"]) == [1]
    assert c.search(["SUBJECT", "one two"]) == [2]
    assert c.search(["FROM", "carol@c.test"]) == [2]
    assert c.search(["FROM", "nobody"]) == []
    # a second time, from the cached fields
    assert c.search(["FROM", "carol@c.test"]) == [2]
    c.logout()


@pytest.mark.parametrize("port", ["imap", "imaps"])
def test_append_from_a_client_without_nodelay_does_not_wait_for_a_delayed_ack(
        imap_server: Server, user: str, port: str) -> None:
    """imaplib sends a literal and the CRLF that ends APPEND in two writes, without
    TCP_NODELAY: Nagle holds the CRLF until the literal is ACKed, and an ACK the
    server delays (it has nothing to answer yet) cost 40 ms per APPEND.  The server
    ACKs a literal at once when the command's end is still to come."""
    import ssl

    if port == "imap":
        m = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    else:
        m = imaplib.IMAP4_SSL("127.0.0.1", imap_server.ports["imaps"], ssl_context=ssl._create_unverified_context())
    m.login(user, PASSWORD)
    m.create(f"Nagle{port}")
    started = time.monotonic()
    for i in range(50):
        assert m.append(f"Nagle{port}", None, None, b"Subject: %d\r\n\r\nx\r\n" % i)[0] == "OK"
    took = time.monotonic() - started
    m.logout()
    assert took < 1.5, f"50 APPENDs took {took:.2f} s (40 ms each would be 2 s)"


def test_index_only_fetch_of_thousands_of_messages_comes_whole_and_in_order(imap_server: Server, user: str) -> None:
    """UID FETCH 1:* (FLAGS) sends its lines 2,000 at a time (each piece leaves
    before the next is made); every line must come, once, in order, before the OK."""
    cur = imap_server.maildir(user) / "cur"
    cur.mkdir(parents=True, exist_ok=True)
    for i in range(4321):
        (cur / f"1700000000.M{i}P1.test:2,{'S' if i % 3 == 0 else ''}").write_bytes(b"Subject: x\n\nbody\n")
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    untagged, tagged = r.cmd(b"SELECT INBOX")
    assert b"* 4321 EXISTS" in untagged
    for command in (b"UID FETCH 1:* (FLAGS)", b"FETCH 1:* (FLAGS)", b"FETCH 1:* (UID RFC822.SIZE)"):
        untagged, tagged = r.cmd(command)
        assert b" OK " in tagged or tagged.startswith(b"OK"), tagged
        fetches = [line for line in untagged if b" FETCH " in line]
        assert [int(line.split()[1]) for line in fetches] == list(range(1, 4322))
        if b"FLAGS" in command:
            assert sum(b"\\Seen" in line for line in fetches) == len(range(0, 4321, 3))
    r.close()
