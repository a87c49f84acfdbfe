"""The IMAP command parser and sequence sets (pure code; hypothesis property tests)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from mailsuite.imap.parser import (
    FetchAtt,
    ParseError,
    SeqSet,
    literal_announcement,
    parse_command,
    parse_seqset,
    peek_tag_and_name,
)

numbers = st.integers(min_value=1, max_value=2**32 - 1)
seq_numbers = st.one_of(numbers, st.none())
ranges = st.tuples(seq_numbers, seq_numbers)
seqsets = st.lists(ranges, min_size=1, max_size=8).map(lambda r: SeqSet(tuple(r)))


@given(seqsets)
def test_sequence_set_round_trips_through_its_text(s: SeqSet) -> None:
    assert parse_seqset(str(s)) == s


@given(seqsets, st.integers(min_value=1, max_value=10**6))
def test_resolved_ranges_are_ordered_and_star_is_the_largest(s: SeqSet, largest: int) -> None:
    for (lo, hi), (a, b) in zip(s.ranges, s.resolve(largest)):
        assert a <= b
        assert {a, b} == {largest if lo is None else lo, largest if hi is None else hi}


@pytest.mark.parametrize("bad", ["", "0", "1:0", "01", "1,", ",1", "1::2", "a", "4294967296", "1:*:3", "-1"])
def test_malformed_sequence_sets_are_refused(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_seqset(bad)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_either_parse_or_raise_parse_error(line: bytes) -> None:
    line = line.replace(b"\n", b"").replace(b"\r", b"")
    try:
        parse_command([line])
    except ParseError:
        pass


_astring_atoms = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_@", min_size=1, max_size=20)
_any_text = st.binary(min_size=0, max_size=50)


def _encode_string(value: bytes, how: str) -> tuple[list[bytes], list[bytes]]:
    """(segments-after-this, literals) for ``value`` sent as quoted, literal or literal+."""
    if how == "quoted":
        return [b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'], []
    plus = b"+" if how == "literal+" else b""
    return [b"{%d%s}" % (len(value), plus), b""], [value]


@given(
    st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b and b"\x00" not in b),
    st.binary(max_size=40),
    st.sampled_from(["quoted", "literal", "literal+"]),
    st.sampled_from(["literal", "literal+"]),
)
def test_login_arguments_survive_any_string_form(user: bytes, password: bytes, how_user: str, how_pw: str) -> None:
    segs_u, lits_u = _encode_string(user, how_user)
    segs_p, lits_p = _encode_string(password, how_pw)
    # join: "a1 LOGIN " + user + " " + password
    segs = [b"a1 LOGIN " + segs_u[0]] + segs_u[1:]
    segs[-1] += b" " + segs_p[0]
    segs += segs_p[1:]
    cmd = parse_command(segs, lits_u + lits_p)
    assert cmd.args == {"user": user, "password": password}


def test_literal_announcements_are_recognised() -> None:
    assert literal_announcement(b"a APPEND INBOX {310}") == (310, False)
    assert literal_announcement(b"a APPEND INBOX {310+}") == (310, True)
    assert literal_announcement(b"a LOGIN {x}") is None
    assert literal_announcement(b"a NOOP") is None


def test_tag_and_name_are_read_before_the_command_is_complete() -> None:
    assert peek_tag_and_name(b"x1 uid fetch 1:* {5}") == (b"x1", "UID FETCH")
    assert peek_tag_and_name(b"+bad") == (b"", "")


def test_fetch_section_forms_and_partial() -> None:
    cmd = parse_command([b"a FETCH 1:3 (UID BODY.PEEK[1.2.HEADER.FIELDS.NOT (From \"To\")]<10.20> BODY[])"])
    assert cmd.args["atts"] == [
        FetchAtt("UID"),
        FetchAtt("BODY[]", b'1.2.HEADER.FIELDS.NOT (From "To")', True, (10, 20)),
        FetchAtt("BODY[]", b"", False, None),
    ]


def test_fetch_macros_expand() -> None:
    cmd = parse_command([b"a FETCH 1 FAST"])
    assert [a.name for a in cmd.args["atts"]] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]


@pytest.mark.parametrize(
    "line",
    [
        b"a FETCH 1 (FLAGS",
        b"a FETCH 1 BODY[",
        b"a FETCH 1 (FOO)",
        b"a FETCH 1 BODY[]<1>",
        b"a FETCH x FLAGS",
        b"a STORE 1 FLAGS",
        b"a STORE 1 +FLAGS (\\*)",
        b"a SELECT",
        b"a LOGIN one",
        b"a FOO",
        b"a UID FOO 1",
        b"a EXPUNGE 1",
        b"a NOOP extra",
        b"a SEARCH (FROM x",
        b"a LOGIN \"unterminated",
    ],
)
def test_malformed_commands_raise_parse_error_with_the_tag(line: bytes) -> None:
    with pytest.raises(ParseError) as e:
        parse_command([line])
    assert e.value.tag == b"a"


def test_search_tokens_keep_strings_and_lists_apart() -> None:
    cmd = parse_command([b"t UID SEARCH CHARSET UTF-8 OR (FROM \"a b\") TEXT {4}", b" 1:* UNSEEN"], [b"\xc3\xa4ab"])
    assert cmd.name == "UID SEARCH"
    assert cmd.args["tokens"] == ["CHARSET", "UTF-8", "OR", ["FROM", b"a b"], "TEXT", b"\xc3\xa4ab", "1:*", "UNSEEN"]


def test_append_with_flags_date_and_literal() -> None:
    cmd = parse_command([b'a APPEND Sent (\\Seen $Work) "  1-Jan-2024 10:00:00 +0100" {5+}', b""], [b"hello"])
    assert cmd.args == {"mailbox": b"Sent", "flags": ["\\Seen", "$Work"], "date": b"  1-Jan-2024 10:00:00 +0100",
                        "message": b"hello",
                        "messages": [(["\\Seen", "$Work"], b"  1-Jan-2024 10:00:00 +0100", b"hello")]}


def test_multiappend_lists_each_message_with_its_own_flags_and_date() -> None:
    cmd = parse_command([b"a APPEND INBOX (\\Seen) {2+}", b' "01-Feb-2024 10:00:00 +0000" {3}', b" (\\Draft) {1}", b""],
                        [b"hi", b"two", b"3"])
    assert cmd.args["messages"] == [(["\\Seen"], None, b"hi"), ([], b"01-Feb-2024 10:00:00 +0000", b"two"),
                                    (["\\Draft"], None, b"3")]


def test_append_without_flags_or_date() -> None:
    cmd = parse_command([b"a APPEND INBOX {2}", b""], [b"hi"])
    assert cmd.args["flags"] == [] and cmd.args["date"] is None


@settings(max_examples=50)
@given(st.lists(st.sampled_from(["\\Seen", "\\Deleted", "\\Answered", "$Label1", "Junk"]), unique=True))
def test_store_flag_lists_parse_back(flags: list[str]) -> None:
    cmd = parse_command([b"a STORE 1:* -FLAGS.SILENT (" + " ".join(flags).encode() + b")"])
    assert cmd.args == {"set": SeqSet(((1, None),)), "mode": "-", "silent": True, "flags": flags, "modifiers": []}
