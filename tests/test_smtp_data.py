"""DataReader: the DATA body parsed in chunks.  Whatever way the network splits the
input, the result is the same: LF line ends, dots unstuffed, the end marker found,
the bytes after it handed back, over-long lines and oversize messages flagged."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from mailsuite.smtp.data import DataReader
from tests.support.sockets import split_at

BIG = 10**9


def feed_all(chunks: list[bytes], max_size: int = BIG, max_line: int = 1000) -> tuple[bytes, bool, bytes, DataReader]:
    """Feed chunks until the end marker; return (body, finished, rest, reader)."""
    r = DataReader(max_size, max_line)
    body = b""
    for i, chunk in enumerate(chunks):
        fed = r.feed(chunk)
        body += fed.body
        if fed.finished:
            return body, True, fed.rest + b"".join(chunks[i + 1 :]), r
    return body, False, b"", r


def stuff(lines: list[bytes]) -> bytes:
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)


# -- examples ---------------------------------------------------------------------


def test_simple_body() -> None:
    body, done, rest, r = feed_all([b"Subject: x\r\n\r\nhello\r\n.\r\n"])
    assert (body, done, rest) == (b"Subject: x\n\nhello\n", True, b"")
    assert r.size == len(b"Subject: x\r\n\r\nhello\r\n")
    assert r.lines == 3


def test_empty_body() -> None:
    body, done, rest, r = feed_all([b".\r\n"])
    assert (body, done, rest, r.size) == (b"", True, b"", 0)


def test_dot_unstuffing() -> None:
    body, done, _, _ = feed_all([b"..leading dot\r\n...two\r\n.\r\n"])
    assert done and body == b".leading dot\n..two\n"


def test_dot_line_is_not_the_end_when_stuffed() -> None:
    body, done, _, _ = feed_all([b"a\r\n..\r\nb\r\n.\r\n"])
    assert done and body == b"a\n.\nb\n"


def test_dot_inside_a_line_is_kept() -> None:
    body, _, _, _ = feed_all([b"a.b\r\n .x\r\n.\r\n"])
    assert body == b"a.b\n .x\n"


def test_end_marker_split_across_chunks() -> None:
    data = b"line\r\n.\r\nQUIT\r\n"
    for i in range(len(data) + 1):
        body, done, rest, _ = feed_all([data[:i], data[i:]])
        assert (body, done, rest) == (b"line\n", True, b"QUIT\r\n"), i


def test_pipelined_commands_after_the_end_are_handed_back() -> None:
    _, done, rest, _ = feed_all([b"x\r\n.\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n"])
    assert done and rest == b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n"


def test_no_end_marker_yet() -> None:
    body, done, _, _ = feed_all([b"one\r\ntwo\r\n", b"thr"])
    assert (body, done) == (b"one\ntwo\n", False)


def test_dot_without_crlf_is_not_the_end() -> None:
    _, done, _, _ = feed_all([b"a\r\n.\n", b"b\r\n"])
    assert not done


def test_bare_lf_is_a_line_end() -> None:
    body, done, _, _ = feed_all([b"a\nb\r\n.\r\n"])
    assert done and body == b"a\nb\n"


def test_bare_cr_is_a_line_end_too_so_nothing_downstream_sees_one() -> None:
    """Issue 16 finding 5, Postfix's smtpd_forbid_bare_newline = normalize: only CR LF
    . CR LF ends DATA; a bare CR is stored as a line end (the relay then sends the "."
    line after it stuffed) instead of being relayed byte for byte."""
    body, done, rest, r = feed_all([b"hi\r.\rMAIL FROM:<evil@x>\r\r\n.\r\nNOOP\r\n"])
    assert done and rest == b"NOOP\r\n"
    assert body == b"hi\n.\nMAIL FROM:<evil@x>\n\n" and b"\r" not in body
    assert r.lines == 4 and not r.rejected


def test_reject_mode_flags_a_bare_cr_or_lf() -> None:
    for data in (b"a\rb\r\n.\r\n", b"a\nb\r\n.\r\n", b"a\r\r\n.\r\n"):
        r = DataReader(BIG, 1000, bare_newline="reject")
        fed = r.feed(data)
        assert fed.finished and r.bare_newline and r.rejected
    r = DataReader(BIG, 1000, bare_newline="reject")
    assert r.feed(b"clean\r\n.\r\n").finished and not r.rejected


def test_eight_bit_and_nul_bytes_pass_through() -> None:
    body, _, _, _ = feed_all([b"caf\xc3\xa9 \xff\x00\r\n.\r\n"])
    assert body == b"caf\xc3\xa9 \xff\x00\n"


def test_line_of_exactly_the_limit_is_accepted() -> None:
    line = b"x" * 998
    body, done, _, r = feed_all([line + b"\r\n.\r\n"])
    assert done and not r.line_too_long and body == line + b"\n"


def test_line_one_over_the_limit_is_flagged() -> None:
    _, done, _, r = feed_all([b"x" * 999 + b"\r\n.\r\n"])
    assert done and r.line_too_long and r.rejected


def test_overlong_line_in_small_chunks_is_flagged_without_buffering_it() -> None:
    r = DataReader(BIG, 1000)
    for _ in range(10000):
        r.feed(b"y" * 100)
        assert len(r._pending) < 1000  # never holds more than one line's worth
    fed = r.feed(b"\r\nafter\r\n.\r\nNOOP\r\n")
    assert fed.finished and fed.rest == b"NOOP\r\n"
    assert r.line_too_long and fed.body == b""


def test_end_marker_right_after_an_overlong_line_is_found() -> None:
    _, done, rest, r = feed_all([b"z" * 5000, b"\r\n.\r\nRSET\r\n"])
    assert done and r.line_too_long and rest == b"RSET\r\n"


def test_size_limit() -> None:
    _, done, _, r = feed_all([b"a" * 50 + b"\r\n", b"b" * 50 + b"\r\n.\r\n"], max_size=80)
    assert done and r.too_big and r.rejected and r.size == 104


def test_size_exactly_at_limit_is_accepted() -> None:
    _, done, _, r = feed_all([b"a" * 78 + b"\r\n.\r\n"], max_size=80)
    assert done and not r.too_big


def test_body_is_withheld_once_rejected() -> None:
    r = DataReader(10, 1000)
    assert r.feed(b"0123456789abc\r\n").body == b""


# -- properties -------------------------------------------------------------------

# Bytes that matter to the parser, heavily weighted, plus anything else.
interesting = st.lists(
    st.one_of(st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\r\n.", b".\r\n", b"\r\n.\r\n", b"x", b"\x00", b"\xff"]),
              st.binary(max_size=8)),
    max_size=60,
).map(b"".join)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)
line_text = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


def outcome(chunks: list[bytes], max_size: int, max_line: int) -> tuple:
    body, done, rest, r = feed_all(chunks, max_size, max_line)
    # Once rejected, the body is thrown away, so what was handed out before does not count.
    return None if r.rejected else body, done, rest, r.size if done else None, r.too_big, r.line_too_long


@settings(max_examples=400, deadline=None)
@given(data=interesting, cut=cuts, max_line=st.integers(min_value=4, max_value=30),
       max_size=st.integers(min_value=0, max_value=200))
def test_any_split_gives_the_same_result(data: bytes, cut: list[int], max_line: int, max_size: int) -> None:
    whole = outcome([data], max_size, max_line)
    parts = outcome(split_at(data, cut), max_size, max_line)
    if whole[1]:
        assert parts == whole
    else:
        # Unfinished: the body so far may differ only by the line not yet complete.
        assert not parts[1]
        assert parts[4:] == whole[4:] or len(data) >= max_line


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(line_text, max_size=20), rest=st.binary(max_size=30), cut=cuts)
def test_round_trip_of_a_stuffed_message(lines: list[bytes], rest: bytes, cut: list[int]) -> None:
    wire = stuff(lines) + b".\r\n" + rest
    body, done, got_rest, r = feed_all(split_at(wire, cut))
    assert done
    assert body == b"".join(ln + b"\n" for ln in lines)
    assert got_rest == rest
    assert r.size == len(stuff(lines))
    assert r.lines == len(lines)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(line_text, min_size=1, max_size=10), cut=cuts, max_line=st.integers(min_value=4, max_value=45))
def test_line_limit_matches_the_longest_line(lines: list[bytes], cut: list[int], max_line: int) -> None:
    wire = stuff(lines)
    _, done, _, r = feed_all(split_at(wire + b".\r\n", cut), BIG, max_line)
    assert done
    longest = max(len(ln) for ln in wire.split(b"\r\n"))
    assert r.line_too_long == (longest > max_line - 2)
