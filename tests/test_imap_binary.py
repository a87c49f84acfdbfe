"""BINARY (RFC 3516) end to end, over real sockets.

FETCH BINARY[part] undoes base64 and quoted-printable, passes 7bit/8bit/binary
through, answers NO [UNKNOWN-CTE] for any other encoding, and sends content with a
NUL as a literal8 ``~{n}``; BINARY.PEEK leaves \\Seen alone, BINARY sets it;
``<origin.length>`` slices the decoded content; BINARY.SIZE is its length.  APPEND
takes a literal8 and stores the message as given.
"""

from __future__ import annotations

import base64
import imaplib
import re

import imapclient
import pytest

from mailsuite.imap import binary
from tests.support.imap import PASSWORD, Accounts, Raw
from tests.support.server import Server

PAYLOAD = bytes(range(256)) * 4  # every octet, NUL included
TEXT = "Grüße, naïve café: ünïcödé text that is long enough to wrap in quoted-printable encoding."


def multipart() -> bytes:
    b64 = base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n")
    qp = TEXT.encode("utf-8")
    import quopri
    qp_enc = quopri.encodestring(qp).replace(b"\n", b"\r\n")
    return (b"From: a@x.test\r\nTo: b@x.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n"
            b"--BB\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            + qp_enc +
            b"\r\n--BB\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: BASE64\r\n\r\n"
            + b64 +
            b"\r\n--BB\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\nend\r\n"
            b"--BB\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nplain \xc3\xa9 8bit\r\n"
            b"--BB\r\nContent-Type: message/rfc822\r\n\r\n"
            b"Subject: inner\r\nContent-Transfer-Encoding: base64\r\n\r\naW5uZXIgYm9keQ==\r\n"
            b"--BB--\r\n")


@pytest.fixture
def user(accounts: Accounts) -> str:
    return accounts.take()


@pytest.fixture
def raw(imap_server: Server, user: str) -> Raw:
    m = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    m.login(user, PASSWORD)
    assert m.append("INBOX", None, None, multipart())[0] == "OK"
    m.logout()
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    r.cmd(b"SELECT INBOX")
    return r


def fetch_literal(r: Raw, command: bytes) -> tuple[bytes, bytes]:
    """Send a FETCH, return (the text before the literal, the literal's bytes)."""
    r.n += 1
    tag = b"t%d" % r.n
    r.send(tag + b" " + command + b"\r\n")
    line = r.line()
    m = re.search(rb"(~?)\{(\d+)\}$", line)
    assert m, line
    data = r.read_exact(int(m.group(2)))
    rest = r.line()
    assert rest == b")", rest
    _, tagged = r.response(tag)
    assert b" OK " in tagged, tagged
    return line, data


def test_binary_is_advertised(raw: Raw) -> None:
    untagged, _ = raw.cmd(b"CAPABILITY")
    assert b" BINARY" in untagged[0]


def test_base64_part_is_decoded_and_sent_as_literal8(raw: Raw) -> None:
    line, data = fetch_literal(raw, b"FETCH 1 BINARY.PEEK[2]")
    assert line == b"* 1 FETCH (BINARY[2] ~{%d}" % len(PAYLOAD)
    assert data == PAYLOAD


def test_quoted_printable_part_is_decoded(raw: Raw) -> None:
    line, data = fetch_literal(raw, b"FETCH 1 BINARY.PEEK[1]")
    assert line.endswith(b"BINARY[1] {%d}" % len(TEXT.encode()))  # no NUL: a plain literal
    assert data.decode("utf-8") == TEXT


def test_8bit_passes_through_and_composites_are_not_decoded(raw: Raw) -> None:
    _, data = fetch_literal(raw, b"FETCH 1 BINARY.PEEK[4]")
    assert data == b"plain \xc3\xa9 8bit"
    _, data = fetch_literal(raw, b"FETCH 1 BINARY.PEEK[5]")  # message/rfc822: as it is
    assert data.startswith(b"Subject: inner\r\n")
    _, data = fetch_literal(raw, b"FETCH 1 BINARY.PEEK[5.1]")  # its body, decoded
    assert data == b"inner body"


def test_unknown_transfer_encoding_is_no_unknown_cte(raw: Raw) -> None:
    _, tagged = raw.cmd(b"FETCH 1 BINARY.PEEK[3]")
    assert re.match(rb"t\d+ NO \[UNKNOWN-CTE\]", tagged)
    _, tagged = raw.cmd(b"FETCH 1 BINARY.SIZE[3]")
    assert b"NO [UNKNOWN-CTE]" in tagged


def test_binary_size_is_the_decoded_length(raw: Raw) -> None:
    untagged, tagged = raw.cmd(b"FETCH 1 (BINARY.SIZE[2] BINARY.SIZE[1] BINARY.SIZE[4])")
    assert b" OK " in tagged
    assert untagged == [b"* 1 FETCH (BINARY.SIZE[2] %d BINARY.SIZE[1] %d BINARY.SIZE[4] 13)"
                        % (len(PAYLOAD), len(TEXT.encode()))]


def test_partial_slices_the_decoded_content(raw: Raw) -> None:
    line, data = fetch_literal(raw, b"FETCH 1 BINARY.PEEK[2]<10.300>")
    assert line == b"* 1 FETCH (BINARY[2]<10> ~{300}"
    assert data == PAYLOAD[10:310]
    untagged, _ = raw.cmd(b"FETCH 1 BINARY.PEEK[2]<5000.10>")
    assert untagged == [b'* 1 FETCH (BINARY[2]<5000> "")']


def test_binary_sets_seen_and_peek_does_not(raw: Raw) -> None:
    fetch_literal(raw, b"FETCH 1 BINARY.PEEK[4]")
    untagged, _ = raw.cmd(b"FETCH 1 FLAGS")
    assert b"\\Seen" not in untagged[0]
    r = raw
    r.n += 1
    tag = b"t%d" % r.n
    r.send(tag + b" FETCH 1 BINARY[4]\r\n")
    untagged, tagged = r.response(tag)
    assert b" OK " in tagged
    assert b"\\Seen" in b"".join(untagged)


def test_malformed_binary_sections_are_bad(raw: Raw) -> None:
    for bad in (b"FETCH 1 BINARY[1.TEXT]", b"FETCH 1 BINARY[HEADER]", b"FETCH 1 BINARY[0]", b"FETCH 1 BINARY",
                b"FETCH 1 BINARY.SIZE[1]<0.5>", b"FETCH 1 BINARY[1", b"FETCH 1 BINARY[1.]"):
        _, tagged = raw.cmd(bad)
        assert b" BAD " in tagged, (bad, tagged)


def test_missing_part_is_empty(raw: Raw) -> None:
    untagged, tagged = raw.cmd(b"FETCH 1 BINARY.PEEK[9]")
    assert untagged == [b'* 1 FETCH (BINARY[9] "")'] and b" OK " in tagged


def test_append_literal8_stores_the_message_as_given(imap_server: Server, user: str) -> None:
    message = (b"From: a@x.test\r\nSubject: raw\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
               b"Content-Transfer-Encoding: binary\r\n\r\n" + bytes(range(1, 10)) + b"\x00\x00\xff\xfe" + b"\r\n")
    r = Raw(imap_server.ports["imap"])
    r.login(user)
    r.n += 1
    r.send(b"t%d APPEND INBOX ~{%d}\r\n" % (r.n, len(message)))
    assert r.line().startswith(b"+")
    r.send(message + b"\r\n")
    _, tagged = r.response(b"t%d" % r.n)
    assert b" OK [APPENDUID " in tagged, tagged
    r.n += 1
    r.send(b"t%d APPEND INBOX ~{5+}\r\nab\x00cd\r\n" % r.n)  # LITERAL+ form of a literal8
    _, tagged = r.response(b"t%d" % r.n)
    assert b" OK " in tagged, tagged
    r.cmd(b"SELECT INBOX")
    _, data = fetch_literal(r, b"FETCH 1 BINARY.PEEK[1]")
    assert data == bytes(range(1, 10)) + b"\x00\x00\xff\xfe\r\n"
    _, data = fetch_literal(r, b"FETCH 1 BINARY.PEEK[]")
    assert data == message  # the message as appended, NULs and all
    untagged, _ = r.cmd(b"FETCH 1 RFC822.SIZE")
    assert untagged == [b"* 1 FETCH (RFC822.SIZE %d)" % len(message)]
    r.n += 1
    r.send(b"t%d SEARCH TEXT ~{3+}\r\nabc\r\n" % r.n)  # a literal8 is for APPEND only
    _, tagged = r.response(b"t%d" % r.n)
    assert b" BAD " in tagged


def test_imapclient_fetches_binary(imap_server: Server, user: str) -> None:
    m = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    m.login(user, PASSWORD)
    m.append("INBOX", None, None, multipart())
    m.logout()
    with imapclient.IMAPClient("127.0.0.1", port=imap_server.ports["imap"], ssl=False) as c:
        c.login(user, PASSWORD)
        c.select_folder("INBOX", readonly=True)
        # imapclient 4 reads no literal8 (it keeps the "~"), so a part without NUL.
        got = c.fetch([1], ["BINARY.PEEK[1]", "BINARY.SIZE[2]"])[1]
        assert got[b"BINARY[1]"].decode("utf-8") == TEXT
        assert got[b"BINARY.SIZE[2]"] == len(PAYLOAD)


@pytest.mark.parametrize("body, cte, out", [
    (b"aGVsbG8=", b"base64", b"hello"),
    (b"aGVs\r\nbG8", b"base64", b"hello"),  # line breaks, missing padding
    (b"aG!!VsbG8=\r\n", b"base64", b"hello"),  # junk outside the alphabet is skipped
    (b"caf=C3=A9=\r\n ok", b"quoted-printable", "café ok".encode()),
    (b"as is", b"", b"as is"),
    (b"as is", b"binary", b"as is"),
])
def test_decode(body: bytes, cte: bytes, out: bytes) -> None:
    assert binary.decode(body, cte) == out


def test_section_parsing() -> None:
    assert binary.parse_section(b"") == ()
    assert binary.parse_section(b"1.2.30") == (1, 2, 30)
    for bad in (b"1.TEXT", b"0", b"01", b"1..2", b"MIME", b"99999999999"):
        with pytest.raises(ValueError):
            binary.parse_section(bad)
