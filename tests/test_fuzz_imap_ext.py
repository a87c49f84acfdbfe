"""Fuzzing the parser pieces of SORT, THREAD (RFC 5256) and BINARY (RFC 3516) with hypothesis, without a
server: any command line either parses into what the command code expects or raises
ParseError (answered BAD), and what parses is either run or refused with Bad/No.
Nothing else may escape (it would be a CRITICAL traceback and NO [SERVERBUG]).

The same pieces are also thrown at a live server in tests/test_fuzz_frontends.py.
``FUZZ_EXAMPLES`` sets the number of cases (default 300)."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.imap import parser as P
from mailsuite.imap import sort, thread
from mailsuite.imap.errors import Bad, No
from mailsuite.imap.headerfacts import base_subject, facts, message_ids

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))

WORDS = ["SORT", "UID SORT", "THREAD", "UID THREAD", "(", ")", "((", "REVERSE", "DATE", "SUBJECT", "ARRIVAL",
         "DISPLAYFROM", "SIZE", "UTF-8", "US-ASCII", "KOI8-R", "\"UTF-8\"", "ALL", "1:*", "$", "OR", "NOT",
         "FROM", "\"x\"", "{3}", "REFERENCES", "ORDEREDSUBJECT", "HEADER", "BEFORE", "1-Jan-2024", "*", "\\"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=6)), min_size=1, max_size=12),
       st.sampled_from([" ", ""]))
def test_sort_and_thread_lines_parse_or_are_refused(words: list[str], sep: str) -> None:
    line = ("t " + " ".join(words)).encode("utf-8", "replace")
    try:
        cmd = P.parse_command([line])
    except P.ParseError:
        return
    try:
        if cmd.name.endswith("SORT"):
            sort.parse_criteria(cmd.args["criteria"])
            sort.search_key(sort.parse_charset(cmd.args["charset"]), cmd.args["tokens"])
        elif cmd.name.endswith("THREAD"):
            sort.search_key(sort.parse_charset(cmd.args["charset"]), cmd.args["tokens"])
    except (ValueError, Bad, No):
        return


FETCH_WORDS = ["BINARY", "BINARY.PEEK", "BINARY.SIZE", "[", "]", "[1]", "[1.2]", "[0]", "[1.TEXT]", "[]", "<0.5>",
               "<5>", ".", "(", ")", "FLAGS", "BODY[]", "~{3}", "1"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(FETCH_WORDS), st.text(max_size=4)), min_size=1, max_size=8),
       st.sampled_from([" ", ""]))
def test_binary_fetch_items_parse_or_are_refused(words: list[str], sep: str) -> None:
    from mailsuite.imap.fetch import FetchPlan

    line = ("t FETCH 1 " + sep.join(words)).encode("utf-8", "replace")
    try:
        cmd = P.parse_command([line])
    except P.ParseError:
        return
    try:
        FetchPlan(cmd.args["atts"], False)
    except ValueError:
        return


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"base64", b"quoted-printable", b"7bit", b"binary", b""]))
def test_decoding_never_raises(body: bytes, cte: bytes) -> None:
    from mailsuite.imap.binary import decode

    assert isinstance(decode(body, cte), bytes)


header_lines = st.sampled_from([b"Subject: ", b"From: ", b"To: ", b"Cc: ", b"Date: ", b"Message-ID: ",
                                b"References: ", b"In-Reply-To: ", b" ", b"\t", b"X: "])
values = st.one_of(st.binary(max_size=40), st.sampled_from([b"<a@b>", b"<a@b> <c@d>", b"Re: [x] Fwd: y (fwd)",
                                                            b"[fwd: z]", b"=?utf-8?q?=C3=A9?=", b"\"N\" <a@b>",
                                                            b"Mon, 1 Jan 2024 10:00:00 +0000", b"g: a@b, c@d;"]))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.tuples(header_lines, values), max_size=12))
def test_header_facts_never_raise(fields: list[tuple[bytes, bytes]]) -> None:
    header = b"".join(name + value + b"\n" for name, value in fields) + b"\n"
    f = facts(header)
    assert isinstance(f.subject, str) and isinstance(f.references, list)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=80))
def test_base_subject_is_idempotent(raw: bytes) -> None:
    text, _ = base_subject(raw)
    again, _ = base_subject(text.encode("utf-8", "surrogateescape"))
    # Extraction removes what it can in one go; re-running finds nothing more, except
    # text that decodes anew (a literal "=?...?=" produced by the first decoding).
    if "=?" not in text:
        assert again == text


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", ""]),
                          st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=4),
                          st.sampled_from(["x", "Re: x", "y", ""]), st.integers(0, 5)), max_size=12))
def test_references_threads_every_message_once(msgs: list[tuple[str, list[str], str, int]]) -> None:
    from mailsuite.imap.headerfacts import Facts
    from mailsuite.store.index import MessageRecord

    items = []
    for i, (mid, refs, subject, day) in enumerate(msgs, start=1):
        base, reply = base_subject(subject.encode())
        f = Facts(float(day), "", "", "", "", "", base, reply, f"{mid}@x" if mid else "", [f"{r}@x" for r in refs])
        items.append((i, i, MessageRecord(i, "f", frozenset(), 1, 0.0, 1), f))
    for algorithm in thread.ALGORITHMS:
        roots = thread.thread(algorithm, items)
        text = thread.format_threads(roots)
        numbers = [int(n) for n in text.replace(b"(", b" ").replace(b")", b" ").split()]
        assert sorted(numbers) == list(range(1, len(msgs) + 1)), (algorithm, text)
        assert text.count(b"(") == text.count(b")")
        assert b"()" not in text


def test_message_ids_take_only_valid_ids() -> None:
    assert message_ids(b"<a@b> junk <no-at> <c@d>(comment)<e@f>") == ["a@b", "c@d", "e@f"]
