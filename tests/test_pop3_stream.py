"""The POP3 message encoder: CRLF line ends and dot-stuffing, whatever the chunking."""

from __future__ import annotations

import io

from hypothesis import given, settings, strategies as st

from mailsuite.pop3.stream import Encoder, encode_all, iter_encoded, top_lines


def unstuff(wire: bytes) -> list[bytes]:
    """What a client reads: lines split on CRLF, one leading dot removed."""
    assert wire == b"" or wire.endswith(b"\r\n")
    lines = wire.split(b"\r\n")[:-1] if wire else []
    assert b"." not in lines, "a lone dot would end the response early"
    return [l[1:] if l.startswith(b".") else l for l in lines]


def expected_lines(data: bytes) -> list[bytes]:
    text = data.replace(b"\r\n", b"\n")
    if not text:
        return []
    lines = text.split(b"\n")
    return lines[:-1] if text.endswith(b"\n") else lines


message = st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"")) | st.lists(
    st.sampled_from([b".", b"..", b"\n", b"\r", b"\r\n", b"a", b".x", b"\n."]), max_size=60
).map(b"".join)


@given(message, st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=20))
@settings(max_examples=400)
def test_any_chunking_gives_the_same_wire_bytes(data: bytes, cuts: list[int]) -> None:
    enc = Encoder()
    out = []
    pos = 0
    i = 0
    while pos < len(data):
        n = cuts[i % len(cuts)]
        out.append(enc.feed(data[pos : pos + n]))
        pos += n
        i += 1
    out.append(enc.finish())
    assert b"".join(out) == encode_all(data)


@given(message)
@settings(max_examples=400)
def test_client_reads_back_the_message_lines(data: bytes) -> None:
    wire = encode_all(data)
    assert b"\n" not in wire.replace(b"\r\n", b"")  # no bare LF on the wire
    # Lines are the file's lines (CRLF or LF ends), bare CRs kept inside lines.
    got = unstuff(wire)
    exp = expected_lines(data)
    if data.endswith(b"\r") and not data.endswith(b"\r\n"):
        assert got[:-1] == exp[:-1] and got[-1] == exp[-1]
    else:
        assert got == exp


def test_dot_line_right_after_a_16k_chunk_boundary_is_stuffed() -> None:
    data = b"x" * 16383 + b"\n.\nmore\n"
    wire = b"".join(iter_encoded(io.BytesIO(data), 16384))
    assert b"\r\n..\r\nmore\r\n" in wire and unstuff(wire)[-2:] == [b".", b"more"]


def test_crlf_split_across_chunks_stays_one_line_end() -> None:
    data = b"a\r\n.b\r\n"
    wire = b"".join(iter_encoded(io.BytesIO(data), 2))
    assert wire == b"a\r\n..b\r\n"


def test_top_returns_header_blank_line_and_n_body_lines() -> None:
    data = b"A: 1\n.B: 2\n\none\n.two\nthree\n"
    assert top_lines(io.BytesIO(data), 2) == b"A: 1\r\n..B: 2\r\n\r\none\r\n..two\r\n"
    assert top_lines(io.BytesIO(data), 0) == b"A: 1\r\n..B: 2\r\n\r\n"
    assert top_lines(io.BytesIO(b"A: 1\nB: 2"), 5) == b"A: 1\r\nB: 2\r\n"


def test_stock_twisted_pop3_misses_a_dot_after_a_chunk_boundary() -> None:
    """Why pop3/stream.py exists: Twisted's POP3.transformChunk works per 16 KiB chunk
    of FileSender, so a '.' line at the start of a chunk goes out unstuffed (a lone '.'
    that ends the response early)."""
    from twisted.mail import pop3 as stock

    chunks = [b"x" * 16383 + b"\n", b".\nrest\n"]
    stock_wire = b"".join(stock.POP3().transformChunk(c) for c in chunks)
    assert b"\r\n.\r\n" in stock_wire  # the bug
    ours = b"".join(iter_encoded(io.BytesIO(b"".join(chunks)), 16384))
    assert b"\r\n.\r\n" not in ours and b"\r\n..\r\nrest\r\n" in ours


@given(message, st.integers(min_value=0, max_value=6), st.sampled_from([3, 7, 64, 1 << 16]))
@settings(max_examples=300)
def test_top_fast_path_agrees_with_line_by_line(data: bytes, n: int, chunk: int) -> None:
    from mailsuite.pop3 import stream

    slow = stream._top_by_lines(io.BytesIO(data), n, 1 << 16)
    old, stream.CHUNK = stream.CHUNK, chunk
    try:
        fast = top_lines(io.BytesIO(data), n)
    finally:
        stream.CHUNK = old
    assert fast == slow
