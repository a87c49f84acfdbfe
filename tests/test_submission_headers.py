"""The streaming header scanner (smtp/headers.py): pass-through, where added fields
go, what is captured, and that none of it depends on how the input is chunked."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailsuite.smtp.headers import MAX_VALUE, HeaderScanner

ADDED = b"Message-ID: <x@y>\n"


def add_message_id(present: frozenset[str]) -> bytes:
    return b"" if "message-id" in present else ADDED


def run(data: bytes, cuts: list[int] = (), extra=add_message_id) -> tuple[bytes, HeaderScanner]:  # type: ignore[assignment]
    h = HeaderScanner(("from", "subject"), extra)
    out, last = [], 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)):
        out.append(h.feed(data[last:cut]))
        last = cut
    out.append(h.feed(data[last:]))
    out.append(h.finish())
    return b"".join(out), h


def test_fields_are_added_before_the_blank_line() -> None:
    out, _ = run(b"From: a@b\nSubject: s\n\nbody\n")
    assert out == b"From: a@b\nSubject: s\n" + ADDED + b"\nbody\n"


def test_present_field_is_not_added_again() -> None:
    out, _ = run(b"Message-ID: <m@c>\n\nbody\n")
    assert out == b"Message-ID: <m@c>\n\nbody\n"


def test_field_names_compare_case_insensitively() -> None:
    out, h = run(b"MESSAGE-id: <m@c>\nfRoM: a@b\n\nbody\n")
    assert ADDED not in out
    assert h.field_values("From") == ["a@b"]


def test_header_only_message_gets_the_fields_at_the_end() -> None:
    out, _ = run(b"From: a@b\n")
    assert out == b"From: a@b\n" + ADDED


def test_body_without_headers_gets_fields_and_a_blank_line() -> None:
    out, _ = run(b"just text\nmore\n")
    assert out == ADDED + b"\njust text\nmore\n"


def test_non_header_line_ends_the_header_block_with_a_blank_line() -> None:
    out, _ = run(b"From: a@b\nthis is no header\n")
    assert out == b"From: a@b\n" + ADDED + b"\nthis is no header\n"


def test_empty_message_gets_the_fields() -> None:
    assert run(b"")[0] == ADDED


def test_folded_values_are_unfolded() -> None:
    _, h = run(b"From: \"A\"\n <a@b>,\n\tc@d\n\nx\n")
    assert h.field_values("from") == ['"A" <a@b>, c@d']


def test_from_in_the_body_is_not_captured() -> None:
    _, h = run(b"Subject: s\n\nFrom: x@y\n")
    assert h.field_values("from") == []


def test_captured_values_are_capped() -> None:
    long = b"From: " + b"a" * (MAX_VALUE * 3) + b"\n" + b" " + b"b" * 100 + b"\n\n"
    _, h = run(long)
    assert len(h.values["from"][0]) <= MAX_VALUE


def test_only_the_header_block_is_inspected_so_body_bytes_pass_as_is() -> None:
    h = HeaderScanner(("from",), add_message_id)
    first = h.feed(b"From: a@b\n\n")
    assert not h.in_headers
    body = b"x" * 100000
    assert h.feed(body) is body  # no copy of the body


lines = st.one_of(
    st.sampled_from([b"From: a@b", b"Subject: s", b"Message-ID: <m@c>", b" folded", b"\tfolded", b"",
                     b"not a header", b"X-A:b", b"From x", b":bad", b"Date: now"]),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
)
messages = st.lists(lines, max_size=12).map(lambda ls: b"".join(line + b"\n" for line in ls))


@settings(max_examples=300, deadline=None)
@given(messages, st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_chunking_never_changes_the_result(data: bytes, cuts: list[int]) -> None:
    whole, h1 = run(data)
    chunked, h2 = run(data, cuts)
    assert chunked == whole
    assert h1.present == h2.present and h1.values == h2.values


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_without_extra_fields_the_bytes_pass_through_unchanged(data: bytes, cuts: list[int]) -> None:
    out, _ = run(data, cuts, extra=None)
    assert out == data


@settings(max_examples=300, deadline=None)
@given(messages)
def test_with_extra_fields_only_insertions_happen(data: bytes) -> None:
    """Removing the inserted field (and a blank line the scanner may add) gives back
    the input, and the field sits inside the header block."""
    out, _ = run(data)
    if ADDED not in out:
        assert out == data
        return
    i = out.index(ADDED)
    rest = out[i + len(ADDED):]
    assert out[:i] + rest == data or out[:i] + rest[1:] == data
    assert b"\n\n" not in out[:i] and not out[:i].startswith(b"\n")


@settings(max_examples=200, deadline=None)
@given(messages, st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_without_extra_fields_header_like_input_passes_through_unchanged(data: bytes, cuts: list[int]) -> None:
    out, _ = run(data, cuts, extra=None)
    assert out == data
